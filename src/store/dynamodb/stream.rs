//! A region's replica's stream (a deployment in several regions): the links whose item changed
//! in this region's table, whichever region wrote them, so that the region's caches let go of a
//! link deleted, disabled or edited in another region once the change has replicated here.
//!
//! One instance per region reads it (DynamoDB Streams serves at most two readers per shard),
//! chosen by a lease in the region's own partition of the table (`#leases#region-stream-{id}`:
//! only this region writes it), and tells the region's instances through Redis, as a delete
//! made here would. Without Redis every instance reads the stream for its own cache: fine for
//! one or two instances a region, throttled beyond that. The reader starts at the stream's
//! newest record: a change made while no instance read (the reader's lease moving, about
//! [`LEASE`]) is seen by the caches only when their entries expire.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};

use super::item::LINK_SK;
use crate::aggregate::leases::Leases;
use crate::config::StoreSettings;
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// How often the stream is read.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the reader's lease lasts unrenewed (it is renewed every third of it).
pub const LEASE: Duration = Duration::from_secs(10);

/// Reads the stream of the table's links: where each shard is read up to.
pub struct ChangedLinks {
    client: Client,
    table: String,
    arn: Option<String>,
    /// Shard id -> the next iterator (`None`: a closed shard read to its end).
    iterators: HashMap<String, Option<String>>,
    /// False until the first read: shards open then are read from their newest record, shards
    /// seen later (a split's children) from their first.
    started: bool,
}

impl ChangedLinks {
    fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            arn: None,
            iterators: HashMap::new(),
            started: false,
        }
    }

    /// Starts again from the stream's newest record (after a pause in reading).
    fn restart(&mut self) {
        self.arn = None;
        self.iterators.clear();
        self.started = false;
    }

    /// The codes of the link items changed since the last call (created, changed or
    /// removed), in the order the stream has them, repeats included.
    async fn poll(&mut self) -> Result<Vec<String>, String> {
        let arn = match &self.arn {
            Some(arn) => arn.clone(),
            None => {
                let out = self
                    .client
                    .list_streams()
                    .table_name(&self.table)
                    .send()
                    .await
                    .map_err(|e| format!("listing the table's streams: {e}"))?;
                let arn = out
                    .streams()
                    .first()
                    .and_then(|s| s.stream_arn())
                    .ok_or_else(|| {
                        format!(
                            "table '{}' has no stream: run `kurz init` in this region",
                            self.table
                        )
                    })?
                    .to_owned();
                self.arn = Some(arn.clone());
                arn
            }
        };
        self.find_shards(&arn).await?;
        let mut codes = Vec::new();
        let shards: Vec<String> = self.iterators.keys().cloned().collect();
        for shard in shards {
            let Some(Some(iterator)) = self.iterators.get(&shard).cloned() else {
                continue;
            };
            match self
                .client
                .get_records()
                .shard_iterator(iterator)
                .send()
                .await
            {
                Ok(out) => {
                    for record in out.records() {
                        let keys = record.dynamodb().and_then(|r| r.keys());
                        let text = |name: &str| match keys.and_then(|k| k.get(name)) {
                            Some(AttributeValue::S(s)) => Some(s.as_str()),
                            _ => None,
                        };
                        if text("sk") == Some(LINK_SK)
                            && let Some(code) = text("pk")
                        {
                            codes.push(code.to_owned());
                        }
                    }
                    self.iterators
                        .insert(shard, out.next_shard_iterator().map(str::to_owned));
                }
                // An iterator unused too long, or records past the stream's 24 h: from the
                // shard's newest record again.
                Err(e) => {
                    tracing::warn!(shard, error = %e, "reading the table's stream again from its newest record");
                    self.iterators.remove(&shard);
                }
            }
        }
        self.started = true;
        Ok(codes)
    }

    /// Adds the stream's shards not known yet, and forgets those it no longer has.
    async fn find_shards(&mut self, arn: &str) -> Result<(), String> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(after.take())
                .send()
                .await
                .map_err(|e| format!("describing the table's stream: {e}"))?;
            let Some(description) = out.stream_description() else {
                break;
            };
            shards.extend(description.shards().iter().cloned());
            match description.last_evaluated_shard_id() {
                Some(last) => after = Some(last.to_owned()),
                None => break,
            }
        }
        self.iterators
            .retain(|id, _| shards.iter().any(|s| s.shard_id() == Some(id.as_str())));
        for shard in shards {
            let Some(id) = shard.shard_id() else { continue };
            if self.iterators.contains_key(id) {
                continue;
            }
            let closed = shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some());
            let from = if self.started {
                ShardIteratorType::TrimHorizon
            } else if closed {
                // Closed before this reader started: nothing in it is news.
                self.iterators.insert(id.to_owned(), None);
                continue;
            } else {
                ShardIteratorType::Latest
            };
            let out = self
                .client
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(id)
                .shard_iterator_type(from)
                .send()
                .await
                .map_err(|e| format!("starting to read shard {id}: {e}"))?;
            self.iterators
                .insert(id.to_owned(), out.shard_iterator().map(str::to_owned));
        }
        Ok(())
    }
}

/// What the reader does with a changed link's code: evict it from the region's caches.
pub type OnChange = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Reads region `region`'s replica's stream (at `endpoint`, else where the table is) from now
/// on and calls `on_change` with each link code changed there; with `shared` (the region's instances share Redis), only while this
/// instance holds the region's reader lease.
pub async fn follow(
    settings: &StoreSettings,
    endpoint: Option<&str>,
    region: u8,
    shared: bool,
    metrics: Arc<Metrics>,
    on_change: OnChange,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    let dynamo = &settings.dynamodb;
    let config = crate::aws::store_config(settings)
        .await
        .map_err(StoreError::unavailable)?;
    let mut streams = aws_sdk_dynamodbstreams::config::Builder::from(&config);
    if let Some(endpoint) = endpoint {
        streams = streams.endpoint_url(endpoint);
    }
    let mut changed = ChangedLinks::new(Client::from_conf(streams.build()), &dynamo.table);
    let leases = shared.then(|| {
        Leases::new(
            crate::aws::dynamodb_client(&config),
            &dynamo.table,
            &format!("region-stream-{region}"),
        )
    });
    let me = format!("{:016x}", getrandom::u64().unwrap_or(0));
    Ok(tokio::spawn(async move {
        let mut renew_at = tokio::time::Instant::now();
        let mut reading = !shared;
        metrics.region_stream_reading.set(u64::from(reading));
        loop {
            if let Some(leases) = &leases
                && tokio::time::Instant::now() >= renew_at
            {
                let now = crate::clock::system_now_ms();
                let until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
                let held = match leases.take("reader", &me, now, until, None).await {
                    Ok(lease) => lease.is_some(),
                    Err(e) => {
                        metrics.region_stream_errors.inc();
                        tracing::warn!(error = %e, "cannot renew this region's stream reader lease");
                        false
                    }
                };
                if held && !reading {
                    tracing::info!("reading this region's table stream for its caches");
                } else if !held && reading {
                    tracing::info!("another instance reads this region's table stream now");
                    changed.restart();
                }
                reading = held;
                metrics.region_stream_reading.set(u64::from(held));
                renew_at = tokio::time::Instant::now() + LEASE / 3;
            }
            if reading {
                match changed.poll().await {
                    Ok(codes) => {
                        for code in codes {
                            metrics.region_stream_invalidations.inc();
                            on_change(code).await;
                        }
                    }
                    Err(e) => {
                        metrics.region_stream_errors.inc();
                        tracing::warn!(error = %e, "cannot read this region's table stream; trying again in {:?}", LEASE / 3);
                        changed.restart();
                        tokio::time::sleep(LEASE / 3).await;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }))
}
