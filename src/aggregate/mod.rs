//! `kurz aggregate`: the click stream's consumer. It reads the stream's shards, folds each
//! link's events over a window (`aggregate.window_ms`, at least 10 s) and writes each link's
//! folded clicks to the store once per window: a link clicked on forty instances costs one
//! write per window, not forty per second.
//!
//! Shards are shared out by leases in DynamoDB ([`leases`]): each consumer takes its share
//! (the open shards over the consumers alive), free or expired leases first, then one at a
//! time from a consumer holding more than its share. A closed shard's children (after a
//! reshard) start once every record of their parents is applied, so no link's clicks are
//! applied out of order across the reshard.
//!
//! Exactly once, across crashes and lease moves: before a window's writes start, its end (the
//! last sequence number in it) is written to the lease; each link's write carries a token made
//! of the shard, that end and the code, which the store applies once (as it does a flush's
//! delta sent again). A consumer that takes the lease over with a window begun reads exactly
//! that window again, folds it the same way, and its writes find their tokens applied; then
//! the checkpoint moves, on the condition that it still holds the lease. A record the stream
//! holds twice (a producer's put that timed out but landed, sent again with the same id) is
//! counted once: the ids of the records applied within the producers' resend window are kept
//! with the checkpoint.

pub mod leases;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use self::leases::{Lease, Leases, Recent};
use crate::clicks::events::{self, RecordId};
use crate::clicks::stream::{self, ShardInfo, describe};
use crate::clock;
use crate::config::Settings;
use crate::store::{ClickDelta, LinkStore};
use crate::telemetry::Metrics;

/// The Kinesis operations `kurz aggregate` makes: what its IAM role must allow on the stream,
/// and no more. (A test holds the calls reachable from `kurz aggregate` and the Terraform
/// consumer role to this list and the next.)
pub const KINESIS_OPERATIONS: &[&str] = &["GetRecords", "GetShardIterator", "ListShards"];

/// The DynamoDB operations `kurz aggregate` makes on the table: its leases and checkpoints
/// ([`leases`]), the store's click writes and its start-up check of the table.
pub const DYNAMODB_OPERATIONS: &[&str] = &[
    "BatchWriteItem",
    "DescribeTable",
    "GetItem",
    "PutItem",
    "Query",
    "TransactWriteItems",
    "UpdateItem",
];

/// Most record ids kept with a checkpoint (24 bytes each: 240 KB of DynamoDB's 400 KB item).
const MAX_RECENT: usize = 10_000;
/// Records per `GetRecords`.
const RECORDS_PER_READ: i32 = 10_000;

/// One record read from a shard.
#[derive(Debug, Clone)]
pub struct Read {
    pub sequence: String,
    pub arrival_ms: i64,
    pub data: Vec<u8>,
}

/// What folding a window found, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    pub records: u64,
    pub duplicates: u64,
    pub bad: u64,
    pub events: u64,
}

/// The token of `code`'s write for the window of `shard` ending at `end`: the same whoever
/// applies the window, and 32 characters (DynamoDB's request tokens take 36).
pub fn window_token(shard: &str, end: &str, code: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [shard, end, code] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Folds a window's records into one delta per link (codes in order), skipping records whose
/// id `recent` holds and adding the others' ids to it (then keeping only the last
/// `horizon_ms` of arrivals). The same records and `recent` always give the same deltas.
pub fn fold(
    records: &[Read],
    recent: &mut Recent,
    shard: &str,
    end: &str,
    cap: usize,
    horizon_ms: i64,
) -> (Vec<ClickDelta>, Folded) {
    let mut folded = Folded::default();
    let mut links: BTreeMap<String, ClickDelta> = BTreeMap::new();
    let mut seen: HashSet<RecordId> = recent.0.iter().map(|(_, id)| *id).collect();
    for record in records {
        folded.records += 1;
        let (id, events) = match events::unpack(&record.data) {
            Ok(unpacked) => unpacked,
            Err(e) => {
                folded.bad += 1;
                tracing::warn!(error = %e, shard, sequence = %record.sequence, "skipping a record that is not kurz's click events");
                continue;
            }
        };
        if !seen.insert(id) {
            folded.duplicates += 1;
            continue;
        }
        recent.0.push((record.arrival_ms, id));
        for event in events {
            folded.events += 1;
            let delta = links
                .entry(event.code)
                .or_insert_with_key(|code| ClickDelta {
                    token: window_token(shard, end, code),
                    code: code.clone(),
                    ..ClickDelta::default()
                });
            delta.count += event.count;
            delta.last_click_ms = delta.last_click_ms.max(event.last_click_ms);
            for (hour, rollup) in event.hours {
                match delta.hours.binary_search_by_key(&hour, |(h, _)| *h) {
                    Ok(i) => delta.hours[i].1.merge(&rollup, cap),
                    Err(i) => delta.hours.insert(i, (hour, rollup)),
                }
            }
        }
    }
    recent.prune(horizon_ms, MAX_RECENT);
    (links.into_values().collect(), folded)
}

/// Whether sequence number `a` comes after `b` (decimal, no leading zeros).
fn after(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// The consumer's parts every shard's task shares.
struct Context {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    leases: Leases,
    store: Arc<dyn LinkStore>,
    metrics: Arc<Metrics>,
    me: String,
    window: Duration,
    cap: usize,
    /// How long a record id is kept: the producers' resend window, their put timeout and a
    /// margin for the stream's arrival times.
    horizon_ms: i64,
}

struct Owned {
    task: JoinHandle<()>,
    /// Cleared when the lease is lost (or at shutdown): the task stops before its next write.
    held: Arc<AtomicBool>,
}

/// Whose leases a consumer shares: the stream's; in a deployment of several regions, the
/// region's stream's (each region has a stream of that name, with the same shard ids, and only
/// the region's consumers may write its leases: the table replicates, last writer wins).
fn lease_partition(stream: &str, region: Option<u8>) -> String {
    match region {
        None => stream.to_owned(),
        Some(region) => format!("{stream}@{region}"),
    }
}

/// Runs the consumer until `stop` resolves, then gives its leases up.
pub async fn run(
    settings: &Settings,
    store: Arc<dyn LinkStore>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let kinesis = stream::client(settings).await?;
    let dynamo = crate::aws::store_config(&settings.store).await?;
    let stream_name = settings.clicks.kinesis.stream.clone();
    let me = settings
        .aggregate
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("{:016x}", getrandom::u64().unwrap_or(0)));
    let margin = Duration::from_secs(30);
    let horizon = settings.clicks.kinesis.resend_window + settings.clicks.kinesis.timeout + margin;
    let context = Arc::new(Context {
        kinesis,
        leases: Leases::new(
            aws_sdk_dynamodb::Client::new(&dynamo),
            &settings.store.dynamodb.table,
            &lease_partition(&stream_name, settings.region.id),
        ),
        stream: stream_name,
        store,
        metrics,
        me,
        window: settings.aggregate.window,
        cap: settings.analytics.max_values_per_dimension,
        horizon_ms: i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX),
    });
    tracing::info!(worker = %context.me, stream = %context.stream, window_ms = settings.aggregate.window.as_millis() as u64, "kurz aggregate started");
    let lease_ms = i64::try_from(settings.aggregate.lease.as_millis()).unwrap_or(i64::MAX);
    let mut owned: HashMap<String, Owned> = HashMap::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        if let Err(e) = balance(&context, &mut owned, lease_ms).await {
            context.metrics.aggregate_errors.inc();
            tracing::warn!(error = %e, "lease round failed; trying again");
        }
        context.metrics.aggregate_leases.set(owned.len() as u64);
        tokio::select! {
            () = tokio::time::sleep(settings.aggregate.lease / 3) => {}
            () = &mut stop => break,
        }
    }
    for (shard, lease) in owned {
        lease.held.store(false, Ordering::SeqCst);
        let _ = lease.task.await;
        if let Err(e) = context.leases.release(&shard, &context.me).await {
            tracing::warn!(error = %e, shard, "cannot give the lease up; it expires");
        }
    }
    tracing::info!(worker = %context.me, "kurz aggregate stopped");
    Ok(())
}

/// One round: says this consumer is alive, renews its leases (dropping the lost), and takes
/// leases up to its share.
async fn balance(
    context: &Arc<Context>,
    owned: &mut HashMap<String, Owned>,
    lease_ms: i64,
) -> Result<(), String> {
    let now = clock::system_now_ms();
    let until = now + lease_ms;
    context.leases.heartbeat(&context.me, until).await?;
    // Tasks that are done (a shard read to its end) give their lease back to the table as
    // ended; a task that found its lease gone says so too.
    owned.retain(|_, lease| !lease.task.is_finished());
    let mut lost = Vec::new();
    for (shard, lease) in owned.iter() {
        if !context.leases.renew(shard, &context.me, until).await? {
            lease.held.store(false, Ordering::SeqCst);
            lost.push(shard.clone());
        }
    }
    for shard in lost {
        owned.remove(&shard);
        context.metrics.aggregate_leases_lost.inc();
        tracing::info!(shard, "lease lost to another consumer");
    }
    let shards = stream::list_shards(&context.kinesis, &context.stream).await?;
    let (leases, workers) = context.leases.list().await?;
    let by_shard: HashMap<&str, &Lease> = leases.iter().map(|l| (l.shard.as_str(), l)).collect();
    let known: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let done = |id: &str| by_shard.get(id).is_some_and(|l| l.ended);
    // A shard is ready once every parent still in the stream has been read to its end.
    let ready: Vec<&ShardInfo> = shards
        .iter()
        .filter(|s| !done(&s.id))
        .filter(|s| {
            s.parents
                .iter()
                .all(|p| !known.contains(p.as_str()) || done(p))
        })
        .collect();
    let alive = workers
        .iter()
        .filter(|(id, expires)| *expires > now || *id == context.me)
        .count()
        .max(1);
    let share = ready.len().div_ceil(alive);
    let held_by = |shard: &str| {
        by_shard
            .get(shard)
            .and_then(|l| l.owner.clone().filter(|_| l.expires_ms >= now))
    };
    let free: Vec<&ShardInfo> = ready
        .iter()
        .copied()
        .filter(|s| {
            !owned.contains_key(&s.id) && held_by(&s.id).is_none_or(|owner| owner == context.me)
        })
        .collect();
    for shard in free {
        if owned.len() >= share {
            break;
        }
        if let Some(lease) = context
            .leases
            .take(&shard.id, &context.me, now, until, None)
            .await?
        {
            start(context, owned, lease, "free");
        }
    }
    if owned.len() < share {
        // One lease a round from whoever holds the most, when that is more than the share.
        let mut counts: HashMap<String, Vec<&Lease>> = HashMap::new();
        for shard in &ready {
            if let Some(lease) = by_shard.get(shard.id.as_str())
                && let Some(owner) = held_by(&shard.id)
                && owner != context.me
            {
                counts.entry(owner).or_default().push(lease);
            }
        }
        if let Some((owner, theirs)) = counts.into_iter().max_by_key(|(_, l)| l.len())
            && theirs.len() > share
            && let Some(lease) = theirs.first()
            && let Some(taken) = context
                .leases
                .take(
                    &lease.shard,
                    &context.me,
                    now,
                    until,
                    Some((&owner, lease.expires_ms)),
                )
                .await?
        {
            start(
                context,
                owned,
                taken,
                "moved from a consumer holding more than its share",
            );
        }
    }
    Ok(())
}

fn start(context: &Arc<Context>, owned: &mut HashMap<String, Owned>, lease: Lease, how: &str) {
    context.metrics.aggregate_leases_taken.inc();
    tracing::info!(shard = %lease.shard, checkpoint = ?lease.checkpoint, window_begun = ?lease.window_end, "lease taken: {how}");
    let held = Arc::new(AtomicBool::new(true));
    let shard = lease.shard.clone();
    let task = tokio::spawn(consume(Arc::clone(context), lease, Arc::clone(&held)));
    owned.insert(shard, Owned { task, held });
}

/// Reads one shard in order, after a checkpoint.
struct Reader {
    shard: String,
    iterator: Option<String>,
    /// The last sequence number read (where a new iterator starts after).
    last: Option<String>,
    buffered: VecDeque<Read>,
    /// The shard is closed and every record of it has been read.
    closed: bool,
}

impl Reader {
    fn new(shard: &str, checkpoint: Option<String>) -> Self {
        Self {
            shard: shard.to_owned(),
            iterator: None,
            last: checkpoint,
            buffered: VecDeque::new(),
            closed: false,
        }
    }

    async fn iterator(&mut self, context: &Context) -> Result<String, String> {
        if let Some(iterator) = &self.iterator {
            return Ok(iterator.clone());
        }
        let request = context
            .kinesis
            .get_shard_iterator()
            .stream_name(&context.stream)
            .shard_id(&self.shard);
        let request = match &self.last {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request.send().await.map_err(|e| describe(&e))?;
        let iterator = out
            .shard_iterator()
            .ok_or("the stream gave no shard iterator")?
            .to_owned();
        self.iterator = Some(iterator.clone());
        Ok(iterator)
    }

    /// One `GetRecords`: what it read goes to the buffer. `Ok(n)`: records read.
    async fn fill(&mut self, context: &Context) -> Result<usize, String> {
        if self.closed {
            return Ok(0);
        }
        let iterator = self.iterator(context).await?;
        let out = match context
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(RECORDS_PER_READ)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if e.as_service_error()
                    .is_some_and(|e| e.is_expired_iterator_exception())
                {
                    self.iterator = None;
                }
                return Err(describe(&e));
            }
        };
        if let Some(behind) = out.millis_behind_latest() {
            context
                .metrics
                .aggregate_behind_ms
                .set(u64::try_from(behind).unwrap_or(0));
        }
        let mut read = 0;
        for record in out.records() {
            read += 1;
            self.last = Some(record.sequence_number().to_owned());
            self.buffered.push_back(Read {
                sequence: record.sequence_number().to_owned(),
                arrival_ms: record
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
                data: record.data().as_ref().to_vec(),
            });
        }
        match out.next_shard_iterator() {
            Some(next) => self.iterator = Some(next.to_owned()),
            None => {
                self.iterator = None;
                self.closed = true;
            }
        }
        Ok(read)
    }
}

/// Waits `wait`, or less when the lease is lost; `false` once it is.
async fn pause(held: &AtomicBool, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if !held.load(Ordering::SeqCst) {
            return false;
        }
        let step = Duration::from_millis(100).min(deadline - tokio::time::Instant::now());
        tokio::time::sleep(step).await;
    }
    held.load(Ordering::SeqCst)
}

/// Consumes one shard while the lease is held: windows folded, applied and checkpointed.
async fn consume(context: Arc<Context>, lease: Lease, held: Arc<AtomicBool>) {
    let shard = lease.shard.clone();
    let mut recent = lease.recent.clone();
    let mut reader = Reader::new(&shard, lease.checkpoint.clone());
    if let Some(end) = lease.window_end.clone() {
        // A window begun by the lease's last holder: exactly its records, again.
        let Some(records) = read_until(&context, &mut reader, &end, &held).await else {
            return;
        };
        if !apply(&context, &shard, &records, &end, &mut recent, &held).await {
            return;
        }
    }
    loop {
        let Some(records) = read_window(&context, &mut reader, &held).await else {
            return;
        };
        let ended = reader.closed && reader.buffered.is_empty();
        let Some(end) = records.last().map(|r| r.sequence.clone()) else {
            if ended {
                finish(&context, &shard, None, &recent, &held).await;
                return;
            }
            continue;
        };
        match context.leases.begin(&shard, &context.me, &end).await {
            Ok(true) => {}
            Ok(false) => {
                held.store(false, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                // Not begun: the window is read again from the checkpoint.
                context.metrics.aggregate_errors.inc();
                tracing::warn!(error = %e, shard, "cannot begin a window; reading it again");
                reader = Reader::new(&shard, committed(&context, &shard).await);
                if !pause(&held, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        }
        if !apply(&context, &shard, &records, &end, &mut recent, &held).await {
            return;
        }
        if ended {
            finish(&context, &shard, None, &recent, &held).await;
            return;
        }
    }
}

/// The checkpoint as stored (after a failed write left it unknown whether a window began).
async fn committed(context: &Context, shard: &str) -> Option<String> {
    let (leases, _) = context.leases.list().await.ok()?;
    leases
        .into_iter()
        .find(|l| l.shard == shard)
        .and_then(|l| l.checkpoint)
}

/// Marks a closed shard read to its end.
async fn finish(
    context: &Context,
    shard: &str,
    end: Option<&str>,
    recent: &Recent,
    held: &AtomicBool,
) {
    while held.load(Ordering::SeqCst) {
        match context
            .leases
            .commit(shard, &context.me, end, recent, true)
            .await
        {
            Ok(_) => {
                tracing::info!(shard, "shard read to its end (closed by a reshard)");
                return;
            }
            Err(e) => {
                context.metrics.aggregate_errors.inc();
                tracing::warn!(error = %e, shard, "cannot mark the shard ended; trying again");
                pause(held, Duration::from_secs(1)).await;
            }
        }
    }
}

/// The records of one window: read for `aggregate.window_ms` (less at the shard's end).
/// `None` once the lease is lost.
async fn read_window(
    context: &Context,
    reader: &mut Reader,
    held: &AtomicBool,
) -> Option<Vec<Read>> {
    let deadline = tokio::time::Instant::now() + context.window;
    loop {
        let got = match reader.fill(context).await {
            Ok(n) => n,
            Err(e) => {
                context.metrics.aggregate_errors.inc();
                tracing::warn!(error = %e, shard = %reader.shard, "cannot read the shard; trying again");
                0
            }
        };
        if reader.closed || tokio::time::Instant::now() >= deadline {
            return Some(reader.buffered.drain(..).collect());
        }
        // Kinesis allows five reads a second per shard.
        let wait = if got > 0 { 250 } else { 1_000 };
        let wait = Duration::from_millis(wait).min(deadline - tokio::time::Instant::now());
        if !pause(held, wait).await {
            return None;
        }
    }
}

/// The records up to and including `end` (a window begun before). `None` once the lease is
/// lost.
async fn read_until(
    context: &Context,
    reader: &mut Reader,
    end: &str,
    held: &AtomicBool,
) -> Option<Vec<Read>> {
    let mut records = Vec::new();
    loop {
        while let Some(record) = reader.buffered.pop_front() {
            if after(&record.sequence, end) {
                reader.buffered.push_front(record);
                return Some(records);
            }
            let last = record.sequence == end;
            records.push(record);
            if last {
                return Some(records);
            }
        }
        if reader.closed {
            return Some(records);
        }
        let got = match reader.fill(context).await {
            Ok(n) => n,
            Err(e) => {
                context.metrics.aggregate_errors.inc();
                tracing::warn!(error = %e, shard = %reader.shard, "cannot read the shard; trying again");
                0
            }
        };
        if got == 0 && !pause(held, Duration::from_millis(250)).await {
            return None;
        }
    }
}

/// Folds a window and writes it until the store has taken every link's delta, then moves the
/// checkpoint. `false` once the lease is lost.
async fn apply(
    context: &Context,
    shard: &str,
    records: &[Read],
    end: &str,
    recent: &mut Recent,
    held: &AtomicBool,
) -> bool {
    let mut next_recent = recent.clone();
    let (mut deltas, folded) = fold(
        records,
        &mut next_recent,
        shard,
        end,
        context.cap,
        context.horizon_ms,
    );
    let metrics = &context.metrics;
    metrics.aggregate_records.add(folded.records);
    metrics.aggregate_duplicate_records.add(folded.duplicates);
    metrics.aggregate_bad_records.add(folded.bad);
    metrics.aggregate_events.add(folded.events);
    let mut backoff = Duration::from_millis(200);
    while !deltas.is_empty() {
        if !held.load(Ordering::SeqCst) {
            return false;
        }
        match context.store.add_clicks(&deltas).await {
            Ok(()) => {
                metrics.aggregate_link_writes.add(deltas.len() as u64);
                metrics
                    .aggregate_clicks
                    .add(deltas.iter().map(|d| d.count).sum());
                break;
            }
            Err(e) => {
                metrics.aggregate_write_failures.inc();
                let unapplied: HashSet<usize> = e.unapplied.iter().copied().collect();
                let mut i = 0;
                let mut written = Vec::new();
                deltas.retain(|d| {
                    let keep = unapplied.contains(&i);
                    i += 1;
                    if !keep {
                        written.push(d.count);
                    }
                    keep
                });
                metrics.aggregate_link_writes.add(written.len() as u64);
                metrics.aggregate_clicks.add(written.iter().sum());
                tracing::warn!(error = %e.error, shard, left = deltas.len(), "the store did not take the whole window; sending the rest again");
                if !pause(held, backoff).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    loop {
        match context
            .leases
            .commit(shard, &context.me, Some(end), &next_recent, false)
            .await
        {
            Ok(true) => {
                *recent = next_recent;
                metrics.aggregate_windows.inc();
                return true;
            }
            Ok(false) => {
                held.store(false, Ordering::SeqCst);
                return false;
            }
            Err(e) => {
                metrics.aggregate_errors.inc();
                tracing::warn!(error = %e, shard, "cannot move the checkpoint; trying again");
                if !pause(held, Duration::from_secs(1)).await {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Rollup;

    fn delta(code: &str, count: u64, hour: u32) -> ClickDelta {
        ClickDelta {
            token: String::new(),
            code: code.into(),
            count,
            last_click_ms: i64::from(hour) * 3_600_000,
            hours: vec![(hour, Rollup::count_only(count))],
        }
    }

    fn record(producer: u64, serial: u64, arrival_ms: i64, deltas: &[ClickDelta]) -> Read {
        let refs: Vec<&ClickDelta> = deltas.iter().collect();
        let packed = events::pack(&refs, || RecordId { producer, serial }).remove(0);
        Read {
            sequence: format!("{:056}", serial + 1),
            arrival_ms,
            data: packed.data,
        }
    }

    #[test]
    fn a_window_folds_each_links_events_into_one_write_and_counts_a_resent_record_once() {
        let a = record(1, 1, 1_000, &[delta("viral", 3, 10), delta("quiet", 1, 10)]);
        let b = record(2, 1, 1_500, &[delta("viral", 5, 11)]);
        let again = Read {
            sequence: format!("{:056}", 9),
            ..a.clone()
        };
        let junk = Read {
            sequence: format!("{:056}", 10),
            arrival_ms: 2_000,
            data: vec![42, 1, 2],
        };
        let mut recent = Recent::default();
        let records = [a, b, again, junk];
        let (deltas, folded) = fold(&records, &mut recent, "shard-0", "10", 50, 60_000);
        assert_eq!(
            folded,
            Folded {
                records: 4,
                duplicates: 1,
                bad: 1,
                events: 3
            }
        );
        let summary: Vec<_> = deltas
            .iter()
            .map(|d| {
                let hours: Vec<_> = d.hours.iter().map(|(h, r)| (*h, r.clicks)).collect();
                (d.code.as_str(), d.count, hours)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("quiet", 1, vec![(10, 1)]),
                ("viral", 8, vec![(10, 3), (11, 5)])
            ]
        );
        assert_eq!(recent.0.len(), 2);
        // Folded again from the same checkpoint (another consumer taking the window over):
        // the same writes with the same tokens.
        let (again, _) = fold(
            &records,
            &mut Recent::default(),
            "shard-0",
            "10",
            50,
            60_000,
        );
        let tokens = |d: &[ClickDelta]| d.iter().map(|d| d.token.clone()).collect::<Vec<_>>();
        assert_eq!(tokens(&again), tokens(&deltas));
        assert_eq!(deltas[0].token, window_token("shard-0", "10", "quiet"));
        assert_ne!(deltas[0].token, window_token("shard-0", "11", "quiet"));
        assert_eq!(deltas[0].token.len(), 32);
        // A later window sees the records of this one as already applied.
        let (later, folded) = fold(&records[..1], &mut recent, "shard-0", "20", 50, 60_000);
        assert!(later.is_empty());
        assert_eq!(folded.duplicates, 1);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(after("100", "99"));
        assert!(!after("99", "100"));
        assert!(after(
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588897"
        ));
        assert!(!after("5", "5"));
    }
}
