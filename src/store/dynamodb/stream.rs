//! A region's replica's stream (a deployment in several regions): the links whose item changed
//! in this region's table, whichever region wrote them, so that the region's caches let go of a
//! link deleted, disabled or edited in another region once the change has replicated here.
//!
//! Each shard is read by one instance of the region (DynamoDB Streams serves at most two readers
//! per shard), which tells the region's instances through Redis, as a delete made here would.
//! The region's instances say they are alive in the region's own partition of the table
//! (`#leases#region-stream-{id}`: only this region writes it, a heartbeat each, renewed every
//! third of [`LEASE`]), and every instance gives each shard to the same one of them, by
//! rendezvous hashing over the live ones: a table of many shards is read by many instances,
//! and an instance that comes or goes moves only its share. Without Redis every instance reads
//! the whole stream for its own cache: fine for one or two instances a region, throttled beyond
//! that. A shard is read from its newest record when an instance starts reading it: a change
//! made while no instance read that shard (its reader gone and not yet seen gone, about
//! [`LEASE`]) is seen by the caches only when their entries expire. The shards are listed
//! ([`list_every`]) far less often than they are read: a year-5 table lists in 686 calls, and
//! `DescribeStream` allows 10 a second.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Shard, ShardIteratorType};
use futures_util::StreamExt;

use super::item::LINK_SK;
use crate::aggregate::leases::Leases;
use crate::config::StoreSettings;
use crate::store::StoreError;
use crate::telemetry::Metrics;

/// How often the stream is read: each shard at most this often.
pub const POLL: Duration = Duration::from_millis(250);
/// The most `GetRecords` calls a second one instance makes: an instance given more shards than
/// that allows at [`POLL`] reads each less often ([`read_every`]).
pub const READS_PER_SECOND: f64 = 1_000.0;
/// `GetRecords` calls one instance has in flight at once.
const READS_IN_FLIGHT: usize = 16;
/// The `DescribeStream` calls a second the region's instances make between them, at most: half
/// of what DynamoDB Streams allows (10 a second), each call listing 100 shards.
pub const DESCRIBES_PER_SECOND: f64 = 5.0;
/// The shortest time between two listings of the stream's shards by one instance.
pub const LIST_AT_LEAST_EVERY: Duration = Duration::from_secs(10);

/// How often one of `readers` instances lists a stream whose listing took `pages`
/// `DescribeStream` calls: every [`LIST_AT_LEAST_EVERY`], or as often as the region's share of
/// [`DESCRIBES_PER_SECOND`] allows (34 minutes for the 686 pages of the design's year-5 table
/// over 15 instances). A shard a split makes is read, from its first record, once a listing
/// has seen it; a reader that comes or goes moves shards at once, from the last listing.
pub fn list_every(pages: usize, readers: usize) -> Duration {
    #[allow(clippy::cast_precision_loss)] // page and reader counts are far below 2^52
    LIST_AT_LEAST_EVERY.max(Duration::from_secs_f64(
        (pages * readers.max(1)) as f64 / DESCRIBES_PER_SECOND,
    ))
}

/// How often each of `shards` shards is read by the instance reading them: [`POLL`], or as
/// often as [`READS_PER_SECOND`] allows (4.6 s for the 4,600 shards an instance reads of the
/// design's year-5 table, infra/CAPACITY.md section 10).
pub fn read_every(shards: usize) -> Duration {
    #[allow(clippy::cast_precision_loss)] // shard counts are far below 2^52
    POLL.max(Duration::from_secs_f64(shards as f64 / READS_PER_SECOND))
}
/// How long an instance's heartbeat lasts unrenewed (it is renewed every third of it): after
/// that, the others read its shards.
pub const LEASE: Duration = Duration::from_secs(10);

/// The instance of `readers` (ids) that reads `shard`: the one whose hash with it is highest,
/// so that every instance names the same one, and a reader that comes or goes moves only the
/// shards it wins or held. `None` without readers.
pub fn reader_of<'a>(shard: &str, readers: &'a [String]) -> Option<&'a str> {
    let candidates = readers.iter().map(|r| (r.as_str(), r.as_bytes()));
    crate::store::rendezvous::pick(b"kurz-stream-shard\0", shard.as_bytes(), candidates)
}

/// Reads the stream of the table's links: where each shard is read up to.
pub struct ChangedLinks {
    client: Client,
    table: String,
    arn: Option<String>,
    /// Shard id -> the next iterator (`None`: a closed shard read to its end).
    iterators: HashMap<String, Option<String>>,
    /// Shard id -> when it is read next.
    due: HashMap<String, tokio::time::Instant>,
    /// False until the first read: shards open then are read from their newest record, shards
    /// seen later (a split's children) from their first.
    started: bool,
    /// Every shard seen in the stream so far.
    seen: HashSet<String>,
    /// `Some`: this instance's id and the region's live readers, and only the shards given to
    /// it are read. `None`: every shard.
    readers: Option<(String, Vec<String>)>,
    /// The stream's shards as last listed, and when it is listed next (`None`: at the next
    /// poll).
    shards: Vec<Shard>,
    list_at: Option<tokio::time::Instant>,
    /// False when the listing or the readers changed since this instance last took its share.
    assigned: bool,
}

impl ChangedLinks {
    fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            arn: None,
            iterators: HashMap::new(),
            due: HashMap::new(),
            started: false,
            seen: HashSet::new(),
            readers: None,
            shards: Vec::new(),
            list_at: None,
            assigned: false,
        }
    }

    /// Reads from now on only the shards [`reader_of`] gives `me` among `readers`.
    fn share(&mut self, me: &str, mut readers: Vec<String>) {
        if !readers.iter().any(|r| r == me) {
            readers.push(me.to_owned());
        }
        readers.sort();
        if self
            .readers
            .as_ref()
            .is_none_or(|(_, known)| *known != readers)
        {
            self.assigned = false;
        }
        self.readers = Some((me.to_owned(), readers));
    }

    fn mine(&self, shard: &str) -> bool {
        match &self.readers {
            None => true,
            Some((me, readers)) => reader_of(shard, readers) == Some(me.as_str()),
        }
    }

    /// How many of the stream's shards this instance reads now (closed ones read to their end
    /// excepted).
    fn reading(&self) -> usize {
        self.iterators.values().filter(|i| i.is_some()).count()
    }

    /// Starts again from the stream's newest record (after a pause in reading).
    fn restart(&mut self) {
        self.arn = None;
        self.iterators.clear();
        self.due.clear();
        self.started = false;
        self.list_at = None;
        self.assigned = false;
        self.seen.clear();
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
        if self
            .list_at
            .is_none_or(|at| tokio::time::Instant::now() >= at)
        {
            self.list_shards(&arn).await?;
        }
        if !self.assigned {
            self.take_share(&arn).await?;
        }
        let now = tokio::time::Instant::now();
        let every = read_every(self.reading());
        let due: Vec<(String, String)> = self
            .iterators
            .iter()
            .filter(|(shard, _)| self.due.get(*shard).is_none_or(|at| *at <= now))
            .filter_map(|(shard, iterator)| Some((shard.clone(), iterator.clone()?)))
            .collect();
        let client = &self.client;
        let reads: Vec<_> = futures_util::stream::iter(due)
            .map(|(shard, iterator)| async move {
                let out = client.get_records().shard_iterator(iterator).send().await;
                (shard, out)
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .collect()
            .await;
        let mut codes = Vec::new();
        for (shard, out) in reads {
            self.due.insert(shard.clone(), now + every);
            match out {
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
                    self.assigned = false;
                }
            }
        }
        self.started = true;
        Ok(codes)
    }

    /// Lists the stream's shards, and when to list them again.
    async fn list_shards(&mut self, arn: &str) -> Result<(), String> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
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
        let readers = self
            .readers
            .as_ref()
            .map_or(1, |(_, readers)| readers.len());
        self.list_at = Some(tokio::time::Instant::now() + list_every(pages, readers));
        self.shards = shards;
        self.assigned = false;
        Ok(())
    }

    /// Reads from now on the listed shards given to this instance, new ones from where the
    /// listing says, and forgets the others.
    async fn take_share(&mut self, arn: &str) -> Result<(), String> {
        // Shards gone from the stream, or given to another reader, are let go.
        let mine: HashSet<String> = self
            .shards
            .iter()
            .filter_map(|s| s.shard_id())
            .filter(|id| self.mine(id))
            .map(str::to_owned)
            .collect();
        self.iterators.retain(|id, _| mine.contains(id));
        self.due.retain(|id, _| mine.contains(id));
        for shard in &self.shards {
            let Some(id) = shard.shard_id() else { continue };
            let new = self.seen.insert(id.to_owned());
            if self.iterators.contains_key(id) || !mine.contains(id) {
                continue;
            }
            let closed = shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some());
            let from = if self.started && new {
                // A shard that appeared since this reader started (a split's child): all of it
                // is news.
                ShardIteratorType::TrimHorizon
            } else if closed {
                // Closed before this reader started: nothing in it is news.
                self.iterators.insert(id.to_owned(), None);
                continue;
            } else {
                // Open, and known before: given to this reader now (another one left), from
                // now on.
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
        self.assigned = true;
        Ok(())
    }
}

/// What the reader does with a changed link's code: evict it from the region's caches.
pub type OnChange = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Reads region `region`'s replica's stream (at `endpoint`, else where the table is) from now
/// on and calls `on_change` with each link code changed there; with `shared` (the region's
/// instances share Redis), only the shards given to this instance among the region's live ones.
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
    let readers = shared.then(|| {
        Leases::new(
            crate::aws::dynamodb_client(&config),
            &dynamo.table,
            &format!("region-stream-{region}"),
        )
    });
    let me = format!("{:016x}", getrandom::u64().unwrap_or(0));
    Ok(tokio::spawn(async move {
        let mut renew_at = tokio::time::Instant::now();
        // Shared: nothing is read until this instance knows the region's readers.
        let mut alive = !shared;
        let mut was_reading = 0;
        loop {
            if let Some(readers) = &readers
                && tokio::time::Instant::now() >= renew_at
            {
                match live_readers(readers, &me).await {
                    Ok(live) => {
                        changed.share(&me, live);
                        alive = true;
                    }
                    Err(e) => {
                        // Not seen alive by the others (or not seeing them): their shards are
                        // theirs to read, and this instance's go to them once its heartbeat
                        // ends.
                        metrics.region_stream_errors.inc();
                        tracing::warn!(error = %e, "cannot renew this instance's stream reader heartbeat");
                        alive = false;
                        changed.restart();
                    }
                }
                renew_at = tokio::time::Instant::now() + LEASE / 3;
            }
            if alive {
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
            let reading = if alive { changed.reading() } else { 0 };
            if reading != was_reading {
                tracing::info!(
                    shards = reading,
                    "reading this many of this region's table stream's shards for its caches"
                );
                was_reading = reading;
            }
            metrics.region_stream_reading.set(reading as u64);
            tokio::time::sleep(POLL).await;
        }
    }))
}

/// Says this instance reads the region's stream for a while longer, and answers the ids of
/// the region's instances that do (their heartbeats not yet ended).
async fn live_readers(readers: &Leases, me: &str) -> Result<Vec<String>, String> {
    let now = crate::clock::system_now_ms();
    let until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    readers.heartbeat(me, until).await?;
    let (_, heartbeats) = readers.list().await?;
    Ok(heartbeats
        .into_iter()
        .filter(|(_, expires)| *expires > now)
        .map(|(id, _)| id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that is never polled: its client goes nowhere.
    fn unconnected() -> ChangedLinks {
        let config = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .build();
        ChangedLinks::new(Client::from_conf(config), "kurz")
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:016x}")).collect()
    }

    fn shards(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shardId-{i:020}")).collect()
    }

    #[test]
    fn an_instance_reads_its_shards_every_poll_until_that_passes_its_call_budget() {
        assert_eq!(read_every(0), POLL);
        assert_eq!(read_every(1), POLL);
        assert_eq!(read_every(250), POLL);
        assert_eq!(read_every(500), Duration::from_millis(500));
        assert_eq!(read_every(4_600), Duration::from_millis(4_600));
    }

    #[test]
    fn the_region_lists_its_stream_within_its_share_of_the_describe_budget() {
        assert_eq!(list_every(1, 1), LIST_AT_LEAST_EVERY);
        assert_eq!(list_every(1, 3), LIST_AT_LEAST_EVERY);
        assert_eq!(list_every(25, 2), LIST_AT_LEAST_EVERY);
        assert_eq!(list_every(100, 1), Duration::from_secs(20));
        // The design's year-5 table: 686 pages of 100 shards, 15 instances in the region.
        assert_eq!(list_every(686, 15), Duration::from_secs(2_058));
        assert_eq!(list_every(686, 0), list_every(686, 1));
    }

    #[test]
    fn every_shard_has_one_reader_and_the_readers_share_them() {
        let readers = names(4);
        let mut counts = HashMap::new();
        for shard in shards(1000) {
            let reader = reader_of(&shard, &readers).expect("a reader");
            *counts.entry(reader.to_owned()).or_insert(0) += 1;
            // Every instance names the same one, in whatever order it lists them.
            let mut reversed = readers.clone();
            reversed.reverse();
            assert_eq!(reader_of(&shard, &reversed), Some(reader));
        }
        assert_eq!(counts.len(), 4, "{counts:?}");
        assert!(
            counts.values().all(|n| (150..=350).contains(n)),
            "{counts:?}"
        );
        assert_eq!(reader_of("shardId-1", &[]), None);
    }

    #[test]
    fn a_reader_that_comes_or_goes_moves_only_its_own_shards() {
        let before = names(3);
        let mut after = before.clone();
        after.push("newcomer".to_owned());
        for shard in shards(500) {
            let (was, is) = (
                reader_of(&shard, &before).expect("a reader"),
                reader_of(&shard, &after).expect("a reader"),
            );
            assert!(was == is || is == "newcomer", "{shard}: {was} -> {is}");
        }
        let gone = &before[1];
        let left: Vec<String> = before.iter().filter(|r| *r != gone).cloned().collect();
        for shard in shards(500) {
            let was = reader_of(&shard, &before).expect("a reader");
            let is = reader_of(&shard, &left).expect("a reader");
            assert!(was == is || was == gone, "{shard}: {was} -> {is}");
        }
    }

    #[test]
    fn a_change_of_readers_and_only_that_makes_an_instance_take_its_share_again() {
        let mut changed = unconnected();
        let readers = names(3);
        changed.share(&readers[0], readers[1..].to_vec());
        assert!(!changed.assigned);
        changed.assigned = true;
        // The heartbeat's list again, in another order: nothing moves.
        changed.share(&readers[0], vec![readers[2].clone(), readers[1].clone()]);
        assert!(changed.assigned);
        changed.share(&readers[0], vec![readers[1].clone()]);
        assert!(
            !changed.assigned,
            "a reader gone: its shards are shared out again"
        );
    }

    #[test]
    fn an_instance_reads_only_the_shards_given_to_it() {
        let mut changed = unconnected();
        assert!(changed.mine("any"), "unshared, every shard is read");
        let readers = names(3);
        changed.share(&readers[0], readers[1..].to_vec());
        for shard in shards(100) {
            assert_eq!(
                changed.mine(&shard),
                reader_of(&shard, &readers) == Some(readers[0].as_str()),
                "{shard}"
            );
        }
    }
}
