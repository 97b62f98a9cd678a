//! The click stream's producer (`clicks.sink = "kinesis"`): each flush's deltas, packed many per
//! record ([`super::events`]), sent to a Kinesis stream with batched `PutRecords`; `kurz
//! aggregate` folds them and writes each link once per window.
//!
//! Partitioning: a link's events go to the shard whose hash-key range holds the link's hash
//! (SHA-256 of the code, its first 128 bits), sent with that shard's starting hash key, so one
//! consumer folds all of a link's events. A viral link is one small event per instance per
//! flush, never a hot shard. The shard map is read with `ListShards` every minute; after a
//! reshard, records sent by a stale map still land on a live shard and count the same.
//!
//! The redirect path never waits for the stream: the flusher hands its deltas over and they
//! wait in a queue of records, at most `clicks.kinesis.max_queued_bytes` (beyond that the oldest
//! are dropped and their clicks counted in `kurz_click_stream_dropped_total`). A record the
//! stream did not take (refused, or the put failed) stays queued with its id and is sent again
//! with the next flush, while the flusher backs off, for at most
//! `clicks.kinesis.resend_window_ms` after its first attempt; then it is dropped and counted.
//! A put that timed out may have landed: the record sent again carries the same id, and the
//! consumer counts a record it has seen within that window once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::Sink;
use super::events::{self, RecordId};
use crate::config::{KinesisSettings, Settings};
use crate::store::{ClickDelta, FlushError, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::trace::{self, Attribute};

/// The Kinesis operations `kurz serve` makes as the stream's producer: what its IAM role must
/// allow on the stream, and no more. (A test holds the calls reachable from [`StreamSink`] and
/// the Terraform task role to this list.)
pub const SERVE_OPERATIONS: &[&str] = &["ListShards", "PutRecords"];

/// The Kinesis operations only `kurz init` makes ([`ensure_stream`]; an operator's
/// credentials, not a service's role).
pub const INIT_OPERATIONS: &[&str] = &["CreateStream", "DescribeStreamSummary"];

/// Records per `PutRecords` (Kinesis's limit: 500).
const RECORDS_PER_PUT: usize = 500;
/// Bytes per `PutRecords` (Kinesis's limit: 5 MiB with the partition keys).
const BYTES_PER_PUT: usize = 4 << 20;
/// How often the shard map is read again.
const SHARD_MAP_AGE: Duration = Duration::from_secs(60);

/// The Kinesis client for `settings` (the region and credentials of `store.dynamodb`).
pub async fn client(settings: &Settings) -> Result<Client, String> {
    let kinesis = &settings.clicks.kinesis;
    let timeouts = crate::aws::Timeouts {
        operation: kinesis.timeout,
        attempt: kinesis.timeout,
        connect: settings.store.dynamodb.connect_timeout,
    };
    let config = crate::aws::sdk_config(
        &settings.store.dynamodb,
        kinesis.endpoint_url.as_deref(),
        timeouts,
    )
    .await?;
    Ok(crate::aws::kinesis_client(&config))
}

/// A link's place in the stream's hash-key space: the first 128 bits of SHA-256 of its code.
pub fn hash_key(code: &str) -> u128 {
    let digest = Sha256::digest(code.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The open shards' hash-key ranges, ascending: (starting, ending) hash key.
#[derive(Debug, Default, Clone)]
pub struct ShardMap(Vec<(u128, u128)>);

impl ShardMap {
    /// Built from `(starting, ending)` hash keys as `ListShards` gives them (decimal text).
    pub fn of<'a>(ranges: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut ranges: Vec<(u128, u128)> = ranges
            .into_iter()
            .filter_map(|(start, end)| Some((start.parse().ok()?, end.parse().ok()?)))
            .collect();
        ranges.sort_unstable();
        Self(ranges)
    }

    /// The starting hash key of the shard holding `hash` (the hash itself without a map).
    pub fn target(&self, hash: u128) -> u128 {
        let i = self.0.partition_point(|&(start, _)| start <= hash);
        match i.checked_sub(1).map(|i| self.0[i]) {
            Some((start, end)) if hash <= end => start,
            _ => hash,
        }
    }
}

struct Queued {
    id: RecordId,
    data: Vec<u8>,
    /// The explicit hash key (decimal), which picks the shard.
    hash_key: String,
    clicks: u64,
    events: u64,
    /// When it was first sent, if it was.
    first_sent: Option<Instant>,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<Queued>,
    bytes: usize,
    clicks: u64,
    shards: ShardMap,
    shards_read: Option<Instant>,
}

/// The producer: a [`Sink`] that queues records and sends them to the stream.
pub struct StreamSink {
    client: Client,
    stream: String,
    settings: KinesisSettings,
    producer: u64,
    serial: AtomicU64,
    queue: Mutex<Queue>,
    metrics: Arc<Metrics>,
}

impl StreamSink {
    pub fn new(client: Client, settings: &KinesisSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            stream: settings.stream.clone(),
            settings: settings.clone(),
            producer: getrandom::u64().unwrap_or(0),
            serial: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
            metrics,
        }
    }

    async fn refresh_shards(&self, queue: &mut Queue) {
        if queue
            .shards_read
            .is_some_and(|at| at.elapsed() < SHARD_MAP_AGE)
        {
            return;
        }
        match list_open_shards(&self.client, &self.stream).await {
            Ok(map) => queue.shards = map,
            Err(e) => {
                self.metrics.click_stream_put_failures.inc();
                tracing::warn!(error = %e, stream = %self.stream, "cannot read the click stream's shards; sending by the map read before");
            }
        }
        queue.shards_read = Some(Instant::now());
    }

    /// Packs `deltas` into records queued behind those waiting, a record per shard's group.
    fn enqueue(&self, queue: &mut Queue, deltas: &[ClickDelta]) {
        let mut groups: Vec<(u128, Vec<&ClickDelta>)> = Vec::new();
        for delta in deltas {
            let target = queue.shards.target(hash_key(&delta.code));
            match groups.iter_mut().find(|(t, _)| *t == target) {
                Some((_, group)) => group.push(delta),
                None => groups.push((target, vec![delta])),
            }
        }
        for (target, group) in groups {
            for record in events::pack(&group, || RecordId {
                producer: self.producer,
                serial: self.serial.fetch_add(1, Ordering::Relaxed),
            }) {
                queue.bytes += record.data.len();
                queue.clicks += record.clicks;
                queue.records.push_back(Queued {
                    id: record.id,
                    data: record.data,
                    hash_key: target.to_string(),
                    clicks: record.clicks,
                    events: record.events,
                    first_sent: None,
                });
            }
        }
        while queue.bytes > self.settings.max_queued_bytes {
            let Some(oldest) = queue.records.pop_front() else {
                break;
            };
            self.drop_record(queue, &oldest, "the queue for the click stream is full");
        }
        self.publish(queue);
    }

    fn drop_record(&self, queue: &mut Queue, record: &Queued, why: &str) {
        queue.bytes -= record.data.len();
        queue.clicks -= record.clicks;
        self.metrics.click_stream_dropped.add(record.clicks);
        self.metrics.clicks_dropped.add(record.clicks);
        tracing::error!(clicks = record.clicks, record = %record.id.hex(), "dropped clicks: {why}");
    }

    fn publish(&self, queue: &Queue) {
        self.metrics
            .click_stream_queued_bytes
            .set(queue.bytes as u64);
        self.metrics.click_stream_queued_clicks.set(queue.clicks);
    }

    /// Sends what is queued, oldest first, a put at a time, until the queue is empty or a put
    /// fails whole (the stream is not answering: the rest waits for the next flush). `Ok`
    /// once nothing is left.
    async fn send(&self, queue: &mut Queue) -> Result<(), String> {
        let window = self.settings.resend_window;
        while let Some(front) = queue.records.front() {
            if front.first_sent.is_some_and(|at| at.elapsed() > window) {
                if let Some(stale) = queue.records.pop_front() {
                    self.drop_record(queue, &stale, "the click stream did not take them in time");
                }
                continue;
            }
            let mut count = 0;
            let mut bytes = 0;
            for record in &queue.records {
                let size = record.data.len() + record.hash_key.len() + 32;
                if count == RECORDS_PER_PUT || (count > 0 && bytes + size > BYTES_PER_PUT) {
                    break;
                }
                count += 1;
                bytes += size;
            }
            let now = Instant::now();
            let mut entries = Vec::with_capacity(count);
            for record in queue.records.iter_mut().take(count) {
                record.first_sent.get_or_insert(now);
                let entry = PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.data.clone()))
                    .partition_key(record.id.hex())
                    .explicit_hash_key(&record.hash_key)
                    .build()
                    .map_err(|e| e.to_string())?;
                entries.push(entry);
            }
            let put = self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send();
            let result = trace::child(
                "kinesis.PutRecords",
                || {
                    vec![
                        Attribute::str("rpc.system", "aws-api"),
                        Attribute::str("rpc.service", "Kinesis"),
                        Attribute::str("rpc.method", "PutRecords"),
                        Attribute::str("aws.kinesis.stream_name", self.stream.clone()),
                        Attribute::int("kurz.records", count as i64),
                    ]
                },
                put,
            )
            .await;
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    self.metrics.click_stream_put_failures.inc();
                    self.publish(queue);
                    return Err(describe(&e));
                }
            };
            // Answers are in the order sent: keep the refused, in their order, at the front.
            let mut refused = VecDeque::new();
            for (record, answer) in queue.records.drain(..count).zip(out.records()) {
                if answer.error_code().is_some() {
                    refused.push_back(record);
                    continue;
                }
                queue.bytes -= record.data.len();
                queue.clicks -= record.clicks;
                self.metrics.click_stream_records.inc();
                self.metrics.click_stream_events.add(record.events);
            }
            let refused_count = refused.len();
            while let Some(record) = refused.pop_back() {
                queue.records.push_front(record);
            }
            self.publish(queue);
            if refused_count > 0 {
                self.metrics
                    .click_stream_put_failures
                    .add(refused_count as u64);
                return Err(format!(
                    "the click stream refused {refused_count} of {count} records (throttled or failing)"
                ));
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for StreamSink {
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        let mut queue = self.queue.lock().await;
        self.refresh_shards(&mut queue).await;
        self.enqueue(&mut queue, deltas);
        self.send(&mut queue).await.map_err(|reason| {
            tracing::warn!(error = %reason, queued_clicks = queue.clicks, stream = %self.stream, "click stream put failed; records stay queued");
            FlushError {
                error: StoreError::unavailable(reason),
                unapplied: Vec::new(),
            }
        })
    }

    async fn close(&self) {
        let mut queue = self.queue.lock().await;
        for _ in 0..3 {
            if queue.records.is_empty() || self.send(&mut queue).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::error!(
            clicks = queue.clicks,
            "clicks not sent to the click stream at shutdown"
        );
    }
}

/// The stream's open shards (those a put can land on).
pub async fn list_open_shards(client: &Client, stream: &str) -> Result<ShardMap, String> {
    let shards = list_shards(client, stream).await?;
    Ok(ShardMap::of(shards.iter().filter_map(|s| {
        if s.ending_sequence.is_some() {
            return None;
        }
        Some((s.starting_hash_key.as_str(), s.ending_hash_key.as_str()))
    })))
}

/// One shard as `ListShards` describes it.
#[derive(Debug, Clone)]
pub struct ShardInfo {
    pub id: String,
    pub parents: Vec<String>,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
    /// Set once the shard is closed (after a reshard): it takes no more records.
    pub ending_sequence: Option<String>,
}

/// Every shard of the stream still readable, open or closed.
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<ShardInfo>, String> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let request = match &next {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let out = request.send().await.map_err(|e| describe(&e))?;
        for shard in out.shards() {
            let range = shard.hash_key_range();
            shards.push(ShardInfo {
                id: shard.shard_id().to_owned(),
                parents: shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
                starting_hash_key: range.map_or("0", |r| r.starting_hash_key()).to_owned(),
                ending_hash_key: range.map_or("0", |r| r.ending_hash_key()).to_owned(),
                ending_sequence: shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .map(str::to_owned),
            });
        }
        match out.next_token() {
            Some(token) => next = Some(token.to_owned()),
            None => return Ok(shards),
        }
    }
}

/// Creates the stream with `settings.shards` shards unless it exists, and waits until it is
/// active. Says what it did.
pub async fn ensure_stream(client: &Client, settings: &KinesisSettings) -> Result<String, String> {
    let created = match client
        .create_stream()
        .stream_name(&settings.stream)
        .shard_count(i32::try_from(settings.shards).unwrap_or(i32::MAX))
        .send()
        .await
    {
        Ok(_) => true,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            false
        }
        Err(e) => return Err(describe(&e)),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = client
            .describe_stream_summary()
            .stream_name(&settings.stream)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = out
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "stream {} not active after 120 s ({status:?})",
                settings.stream
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(if created {
        format!(
            "created click stream {} ({} shards)",
            settings.stream, settings.shards
        )
    } else {
        format!("click stream {} exists", settings.stream)
    })
}

pub use crate::aws::describe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_goes_to_the_shard_whose_range_holds_its_hash() {
        let max = u128::MAX.to_string();
        let half = (u128::MAX / 2).to_string();
        let upper = (u128::MAX / 2 + 1).to_string();
        let map = ShardMap::of([(upper.as_str(), max.as_str()), ("0", half.as_str())]);
        assert_eq!(map.target(5), 0);
        assert_eq!(map.target(u128::MAX / 2), 0);
        assert_eq!(map.target(u128::MAX / 2 + 1), u128::MAX / 2 + 1);
        assert_eq!(map.target(u128::MAX), u128::MAX / 2 + 1);
        // No map (the stream could not be listed): the link's own hash, a shard all the same.
        assert_eq!(ShardMap::default().target(42), 42);
        // Every code of one link lands in the same place; different links spread.
        assert_eq!(hash_key("abc"), hash_key("abc"));
        let upper_half = (0..1_000)
            .filter(|i| hash_key(&format!("c{i}")) > u128::MAX / 2)
            .count();
        assert!((400..600).contains(&upper_half), "{upper_half}");
    }
}
