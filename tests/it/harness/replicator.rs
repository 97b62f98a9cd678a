//! A stand-in for DynamoDB global tables between two regions' DynamoDB Locals (which have no
//! global tables): reads each table's stream and applies its writes to the other table, last
//! writer wins, after a lag the test sets, and not at all while paused (a partition). For tests
//! only; kurz never ships it.
//!
//! Last writer wins the way global tables do it: of the versions of an item written in either
//! table, the newest (by its stream record's time, then by the order the replicator read them)
//! ends up in both. A write that loses (older than the version already seen from the other
//! table) is overwritten in its own table by the winner. The replicator's own writes come back
//! on the destination's stream; it recognises them and passes them over.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, ShardIteratorType,
};

type Item = HashMap<String, AttributeValue>;

/// One table's side: where it is, and what the replicator wrote to it that its stream will
/// show again.
struct Side {
    dynamo: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    /// Writes the replicator made to this table, by key: (new image, or `None` for a delete),
    /// not yet seen on its stream.
    echoes: Mutex<HashMap<String, VecDeque<Option<Item>>>>,
}

/// A write read from one side's stream, waiting for the lag.
struct Change {
    from: usize,
    read_at: Instant,
    key: Item,
    image: Option<Item>,
    /// The stream record's time, seconds.
    at: i64,
}

/// The newest version of an item seen from either side.
struct Version {
    at: i64,
    order: u64,
    image: Option<Item>,
}

struct Shared {
    table: String,
    sides: [Side; 2],
    lag: Duration,
    paused: AtomicBool,
    /// Held by the reader for each round of both streams, so that `pause` can wait out the
    /// round under way.
    reading: tokio::sync::Mutex<()>,
    stopped: AtomicBool,
    /// Changes read, in the order read, not yet applied.
    queue: Mutex<VecDeque<Change>>,
    /// Changes read and not yet applied (queued, or being written).
    unapplied: AtomicU64,
    versions: Mutex<HashMap<String, Version>>,
    order: AtomicU64,
    applied: AtomicU64,
    /// Poll rounds of both streams completed (a round reads every shard to its current end).
    rounds: AtomicU64,
}

pub struct Replicator {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Replicator {
    /// Replicates `table` between the DynamoDB Locals at `a` and `b` (each table's stream of
    /// new and old images must be on, as `kurz init` makes it for a region), every write
    /// `lag` after it was read.
    pub async fn start(table: &str, a: &str, b: &str, lag: Duration) -> Self {
        let side = |endpoint: &str| Side {
            dynamo: super::sdk_client(endpoint),
            streams: streams_client(endpoint),
            echoes: Mutex::new(HashMap::new()),
        };
        let shared = Arc::new(Shared {
            table: table.to_owned(),
            sides: [side(a), side(b)],
            lag,
            paused: AtomicBool::new(false),
            reading: tokio::sync::Mutex::new(()),
            stopped: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            unapplied: AtomicU64::new(0),
            versions: Mutex::new(HashMap::new()),
            order: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
        });
        let reader = tokio::spawn(read_streams(Arc::clone(&shared)));
        let writer = tokio::spawn(apply_changes(Arc::clone(&shared)));
        Self {
            shared,
            tasks: vec![reader, writer],
        }
    }

    /// Stops replicating (a partition between the regions): writes made once this returns
    /// stay in their own table's stream, and are lost with it if its region is lost first.
    /// It waits for a read round under way to end, so that round cannot pick up (and queue
    /// for after `resume`) a write made after the partition began.
    pub async fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        drop(self.shared.reading.lock().await);
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Writes applied to the other table so far.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::SeqCst)
    }

    /// Waits until every write made before this call has been read from both streams and
    /// applied (not while paused); panics after `within`.
    pub async fn settle(&self, within: Duration) {
        assert!(
            self.settled(within).await,
            "replication did not settle within {within:?}"
        );
    }

    /// [`settle`](Self::settle), answering whether it did within `within`.
    pub async fn settled(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        // A round that starts after this call reads everything written before it.
        let start = self.shared.rounds.load(Ordering::SeqCst);
        loop {
            let read = self.shared.rounds.load(Ordering::SeqCst) >= start + 2;
            let drained = self.shared.unapplied.load(Ordering::SeqCst) == 0;
            if read && drained && !self.shared.paused.load(Ordering::SeqCst) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Copies every item of side `from`'s table to the other's (a replica added again after
    /// its region was lost: global tables fill a new replica from the others).
    pub async fn backfill(&self, from: usize) {
        if let Err(e) = self.try_backfill(from).await {
            panic!("backfill from side {from}: {e}");
        }
    }

    /// [`backfill`](Self::backfill), answering the first failed call; the number of items
    /// copied when it succeeds.
    pub async fn try_backfill(&self, from: usize) -> Result<u64, String> {
        let mut copied = 0;
        let (source, target) = (&self.shared.sides[from], &self.shared.sides[1 - from]);
        let mut start: Option<Item> = None;
        loop {
            let page = source
                .dynamo
                .scan()
                .table_name(&self.shared.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| format!("scan the table to backfill from: {e:?}"))?;
            for item in page.items() {
                let key = item_key(item);
                target.expect_echo(&key, Some(item.clone()));
                target
                    .dynamo
                    .put_item()
                    .table_name(&self.shared.table)
                    .set_item(Some(item.clone()))
                    .send()
                    .await
                    .map_err(|e| format!("write to the replica: {e:?}"))?;
                copied += 1;
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(copied),
            }
        }
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Side {
    fn expect_echo(&self, key: &str, image: Option<Item>) {
        let mut echoes = self.echoes.lock().expect("echoes");
        echoes.entry(key.to_owned()).or_default().push_back(image);
    }

    /// Whether this stream record is a write the replicator made (then it is forgotten).
    fn is_echo(&self, key: &str, image: &Option<Item>) -> bool {
        let mut echoes = self.echoes.lock().expect("echoes");
        let Some(pending) = echoes.get_mut(key) else {
            return false;
        };
        let Some(i) = pending.iter().position(|written| written == image) else {
            return false;
        };
        pending.remove(i);
        if pending.is_empty() {
            echoes.remove(key);
        }
        true
    }
}

fn streams_client(endpoint: &str) -> aws_sdk_dynamodbstreams::Client {
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .http_client(super::sdk_http_client())
        .build();
    aws_sdk_dynamodbstreams::Client::from_conf(config)
}

/// Where the reader is in one side's stream: the stream (a table made again, a region back
/// from a loss, has a new one) and, per shard, the next iterator and the last record read.
#[derive(Default)]
struct Position {
    stream: Option<String>,
    shards: HashMap<String, Cursor>,
}

#[derive(Default)]
struct Cursor {
    /// `None`: to be asked for, after `last` (or from the shard's start).
    iterator: Option<String>,
    last: Option<String>,
    /// The shard is closed and read to its end.
    done: bool,
}

/// Reads both streams, every shard, from their start, forever (a side that does not answer,
/// a region lost, is tried again each round). A failed call costs nothing but time: the next
/// round goes on after the last record read, so no record is read twice or passed over
/// (unless the stream trimmed it meanwhile, as DynamoDB Streams does after 24 hours).
async fn read_streams(shared: Arc<Shared>) {
    let mut positions = [Position::default(), Position::default()];
    while !shared.stopped.load(Ordering::SeqCst) {
        let round = shared.reading.lock().await;
        if shared.paused.load(Ordering::SeqCst) {
            drop(round);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for (from, side) in shared.sides.iter().enumerate() {
            if let Err(e) = read_side(&shared, from, side, &mut positions[from]).await {
                // A lost region's stream: what was not read is not replicated.
                tracing::debug!(from, error = %e, "replicator: stream not readable");
            }
        }
        shared.rounds.fetch_add(1, Ordering::SeqCst);
        drop(round);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_side(
    shared: &Shared,
    from: usize,
    side: &Side,
    position: &mut Position,
) -> Result<(), String> {
    let streams = side
        .streams
        .list_streams()
        .table_name(&shared.table)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let Some(arn) = streams.streams().first().and_then(|s| s.stream_arn()) else {
        return Err(format!("no stream on table {}", shared.table));
    };
    if position.stream.as_deref() != Some(arn) {
        *position = Position {
            stream: Some(arn.to_owned()),
            shards: HashMap::new(),
        };
    }
    let described = side
        .streams
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let shards = described
        .stream_description()
        .map(|d| d.shards().to_vec())
        .unwrap_or_default();
    for shard in shards {
        let Some(id) = shard.shard_id() else { continue };
        let cursor = position.shards.entry(id.to_owned()).or_default();
        if cursor.done {
            continue;
        }
        if cursor.iterator.is_none() {
            let ask = side
                .streams
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(id);
            let ask = match &cursor.last {
                Some(last) => ask
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(last),
                None => ask.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let iterator = ask.send().await.map_err(|e| format!("{e:?}"))?;
            match iterator.shard_iterator() {
                Some(iterator) => cursor.iterator = Some(iterator.to_owned()),
                None => {
                    cursor.done = true;
                    continue;
                }
            }
        }
        // Read the shard to its current end.
        while let Some(iterator) = cursor.iterator.clone() {
            let out = match side
                .streams
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    // Asked for again next round, after the last record read.
                    cursor.iterator = None;
                    return Err(format!("{e:?}"));
                }
            };
            let records = out.records();
            for record in records {
                let Some(change) = record.dynamodb() else {
                    continue;
                };
                cursor.last = change.sequence_number().map(str::to_owned);
                let key = convert_item(change.keys().cloned().unwrap_or_default());
                let image = match record.event_name() {
                    Some(OperationType::Remove) => None,
                    _ => Some(convert_item(
                        change.new_image().cloned().unwrap_or_default(),
                    )),
                };
                if side.is_echo(&item_key(&key), &image) {
                    continue;
                }
                let at = change
                    .approximate_creation_date_time()
                    .map_or(0, |t| t.secs());
                shared.unapplied.fetch_add(1, Ordering::SeqCst);
                shared.queue.lock().expect("queue").push_back(Change {
                    from,
                    read_at: Instant::now(),
                    key,
                    image,
                    at,
                });
            }
            let next = out.next_shard_iterator().map(str::to_owned);
            let empty = records.is_empty();
            cursor.done = next.is_none();
            cursor.iterator = next;
            if empty || cursor.done {
                break;
            }
        }
    }
    Ok(())
}

/// Applies each change once it is `lag` old, while not paused: last writer wins.
async fn apply_changes(shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        let due = {
            let mut queue = shared.queue.lock().expect("queue");
            let ready = !shared.paused.load(Ordering::SeqCst)
                && queue
                    .front()
                    .is_some_and(|change| change.read_at.elapsed() >= shared.lag);
            if ready { queue.pop_front() } else { None }
        };
        let Some(change) = due else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let key_text = item_key(&change.key);
        let order = shared.order.fetch_add(1, Ordering::SeqCst);
        // The winner, and the side that must get it.
        let (target, image) = {
            let mut versions = shared.versions.lock().expect("versions");
            match versions.get(&key_text) {
                Some(newer) if (newer.at, newer.order) > (change.at, order) => {
                    // This write lost: its own table gets the newer version back.
                    (change.from, newer.image.clone())
                }
                _ => {
                    versions.insert(
                        key_text.clone(),
                        Version {
                            at: change.at,
                            order,
                            image: change.image.clone(),
                        },
                    );
                    (1 - change.from, change.image)
                }
            }
        };
        let side = &shared.sides[target];
        side.expect_echo(&key_text, image.clone());
        let echo = image.clone();
        let written = match image {
            Some(item) => side
                .dynamo
                .put_item()
                .table_name(&shared.table)
                .set_item(Some(item))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
            None => side
                .dynamo
                .delete_item()
                .table_name(&shared.table)
                .set_key(Some(change.key.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
        };
        shared.unapplied.fetch_sub(1, Ordering::SeqCst);
        match written {
            Ok(()) => {
                shared.applied.fetch_add(1, Ordering::SeqCst);
            }
            // The target region is gone: this write never reaches it (its replica is
            // backfilled when it returns).
            Err(e) => {
                side.is_echo(&key_text, &echo);
                tracing::debug!(target, error = %e, "replicator: write not applied");
            }
        }
    }
}

/// An item's key as text (partition and sort key), to match writes by.
fn item_key(item: &Item) -> String {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    format!("{}\u{0}{}", text("pk"), text("sk"))
}

fn convert_item(item: HashMap<String, StreamValue>) -> Item {
    item.into_iter().map(|(k, v)| (k, convert(v))).collect()
}

fn convert(value: StreamValue) -> AttributeValue {
    match value {
        StreamValue::B(b) => {
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(b.into_inner()))
        }
        StreamValue::Bool(b) => AttributeValue::Bool(b),
        StreamValue::Bs(bs) => AttributeValue::Bs(
            bs.into_iter()
                .map(|b| aws_sdk_dynamodb::primitives::Blob::new(b.into_inner()))
                .collect(),
        ),
        StreamValue::L(l) => AttributeValue::L(l.into_iter().map(convert).collect()),
        StreamValue::M(m) => AttributeValue::M(convert_item(m)),
        StreamValue::N(n) => AttributeValue::N(n),
        StreamValue::Ns(ns) => AttributeValue::Ns(ns),
        StreamValue::Null(b) => AttributeValue::Null(b),
        StreamValue::S(s) => AttributeValue::S(s),
        StreamValue::Ss(ss) => AttributeValue::Ss(ss),
        other => panic!("an attribute value the replicator does not know: {other:?}"),
    }
}
