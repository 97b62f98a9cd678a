//! The embedded backend: one redb file, nothing else to install.
//!
//! Writes go through a single writer thread that drains everything queued and applies it in one
//! write transaction with one durable commit (group commit): under load, many creates share one
//! fsync instead of waiting for one each. Callers hear back only after the commit, so a reply
//! of "inserted" means the link is on disk. Reads use redb's MVCC read transactions on the
//! blocking pool and never wait for the writer.
//!
//! A full disk (or a spent quota) fails a commit; redb then fails every later call until the
//! file is reopened. The writer reopens it at once, so reads go on, and from then on writes are
//! refused before they are queued ([`StoreError::Full`]) while the writer probes with one small
//! commit, at growing intervals up to [`MAX_PROBE_INTERVAL`]; the first that succeeds takes
//! writes again. Nothing acknowledged is lost: a refused write was never committed.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::{
    Analytics, ClickDelta, ClickLimits, DiskState, FlushError, IDEMPOTENCY_WINDOW_MS,
    IdempotencyRecord, ImportOutcome, InsertOutcome, Link, LinkStats, LinkStore, ListPosition,
    ListScope, Purged, ReplaceOutcome, StoreError, StoredKey,
};

mod clicks;
mod links;

use clicks::{CLICK_DAYS, CLICK_HOURS, CLICK_LOG, CLICK_TOTALS, Merge};
use links::{LINKS, LINKS_BY_ID, Layout, Place};

const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// name -> secret bytes (generated keys the settings do not set)
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// API key id -> the key as JSON (a [`StoredKey`]: digests, never secrets)
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// (created ms, code): every link in creation order, for the admin's list.
const BY_CREATED: TableDefinition<(i64, &str), ()> = TableDefinition::new("links_by_created");
/// (owner, created ms, code): each owner's links in creation order (owner "" for none).
const BY_OWNER: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("links_by_owner");
/// (expires ms, code): the links that expire, soonest first, for the purge.
const BY_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("links_by_expiry");
/// (created ms, key): idempotency records, oldest first, for the purge.
const IDEMPOTENCY_BY_CREATED: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("idempotency_by_created");

const LINK_ID_COUNTER: &str = "link_ids";
/// Set (in `COUNTERS`) once the purge's indexes hold everything stored before they existed.
const PURGE_INDEXED: &str = "purge_indexed";
/// What the writer's probe of a full disk writes: the time of the probe.
const DISK_PROBE: &str = "disk_probe";
/// The first probe of a full disk, and the longest wait between two.
const FIRST_PROBE_INTERVAL: Duration = Duration::from_millis(250);
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Most operations applied in one transaction; bounds commit latency under a flood.
const MAX_BATCH: usize = 1024;
/// Click deltas appended to the click log in one transaction.
const CLICK_CHUNK: usize = 16_384;
const QUEUE_DEPTH: usize = 8192;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteOp {
    /// `position` (by `layout`) and `encoded` are worked out by the caller, off the writer
    /// thread.
    Insert {
        link: Link,
        layout: Arc<Layout>,
        position: Option<u64>,
        encoded: Vec<u8>,
        idempotency: Option<IdempotencyRecord>,
        reply: Reply<InsertOutcome>,
    },
    Delete {
        code: String,
        reply: Reply<Option<Link>>,
    },
    Replace {
        link: Link,
        reply: Reply<ReplaceOutcome>,
    },
    Secret {
        name: String,
        candidate: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    PutSecret {
        name: String,
        secret: Vec<u8>,
        reply: Reply<()>,
    },
    DeleteSecret {
        name: String,
        reply: Reply<()>,
    },
    /// Inserts a key if absent (`Replaced`: inserted, `Conflict`: one with its id exists), or
    /// replaces it conditionally on its revision.
    Key {
        key: StoredKey,
        insert: bool,
        reply: Reply<ReplaceOutcome>,
    },
    Import {
        link: Link,
        stats: LinkStats,
        reply: Reply<ImportOutcome>,
    },
    Lease {
        count: u64,
        reply: Reply<Range<u64>>,
    },
    /// Appends to the click log under `seq`, deltas in ascending code order.
    Clicks {
        seq: u64,
        rows: Vec<(String, Vec<u8>)>,
        reply: Reply<()>,
    },
    Purge {
        records_before_ms: i64,
        links_expired_before_ms: Option<i64>,
        limit: usize,
        reply: Reply<Purged>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// Tests: the writer stops inside its transaction until `release` says go (or is dropped),
    /// as a commit stalled on a slow disk would, telling `held` once it has stopped.
    #[cfg(test)]
    Hold {
        held: oneshot::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    },
}

pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteOp>,
    writer: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
}

/// What the store's handle and its writer thread share.
struct Shared {
    /// `None` once closed (closing drops the database, which releases the file's lock even
    /// while something still holds the store), and for a moment while the writer reopens it.
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    cache_bytes: usize,
    /// False while writes fail for want of space.
    writable: AtomicBool,
    /// True while the writer reopens the file: a read then waits for the new handle.
    reopening: AtomicBool,
    timeout: Duration,
    /// The next click-log sequence number (one per flush).
    next_seq: AtomicU64,
    clicks: ClickLimits,
    /// Where each code's link is kept (see [`links`]).
    layout: RwLock<Arc<Layout>>,
    /// Batches committed, and the writes in them.
    commits: AtomicU64,
    committed_writes: AtomicU64,
}

impl Shared {
    fn layout(&self) -> Arc<Layout> {
        // Never poisoned: nothing panics while holding it.
        match self.layout.read() {
            Ok(layout) => Arc::clone(&layout),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn current(&self) -> Option<Arc<Database>> {
        self.db.read().ok().and_then(|db| db.clone())
    }

    /// The database, waiting (a little) for the writer to finish reopening it.
    async fn current_or_reopened(&self) -> Option<Arc<Database>> {
        let deadline = tokio::time::Instant::now() + self.timeout.min(Duration::from_secs(2));
        loop {
            if let Some(db) = self.current() {
                return Some(db);
            }
            if !self.reopening.load(Ordering::Acquire) || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Free bytes on the file system holding the file.
    fn free_bytes(&self) -> Option<u64> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        rustix::fs::statvfs(dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Closes the file and opens it again (after a failed commit redb answers every call with
    /// an error until then). Reads see "unavailable" for the moment it takes; `false` when the
    /// file could not be opened again (the next probe tries again).
    fn reopen(&self) -> bool {
        self.reopening.store(true, Ordering::Release);
        let reopened = self.reopen_now();
        self.reopening.store(false, Ordering::Release);
        reopened
    }

    fn reopen_now(&self) -> bool {
        let old = self.db.write().ok().and_then(|mut db| db.take());
        if let Some(old) = old {
            release(old, self.timeout);
        }
        // The layout's key is stored by now: nothing configured is needed to read it back.
        match open_database(&self.path, self.cache_bytes, None) {
            Ok((db, _)) => {
                if let Ok(mut slot) = self.db.write() {
                    *slot = Some(Arc::new(db));
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "reopening the store failed; trying again later");
                false
            }
        }
    }
}

/// The database, with the layout its links are kept in (fixed by `layout_key` on the first
/// open, when the settings give one).
fn open_database(
    path: &Path,
    cache_bytes: usize,
    layout_key: Option<&[u8]>,
) -> Result<(Database, Layout), redb::Error> {
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)?;
    let layout = create_tables(&db, layout_key)?;
    Ok((db, layout))
}

/// Whether `e` says the disk has no room (or the quota is spent), or is redb's answer after
/// such a failure until the file is reopened.
fn is_out_of_space(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(io) => {
            matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
                // ENOSPC, EDQUOT
                || matches!(io.raw_os_error(), Some(28 | 122))
        }
        redb::Error::PreviousIo => true,
        _ => false,
    }
}

fn disk_full() -> StoreError {
    StoreError::Full {
        reason: "the disk holding the embedded store has no room left; writes resume once space is freed"
            .into(),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, creating its directory if needed, with the
    /// default page cache.
    pub fn open(path: &Path, timeout: Duration) -> Result<Self, StoreError> {
        Self::open_with_cache(
            path,
            timeout,
            crate::config::DEFAULT_STORE_CACHE_BYTES,
            ClickLimits::default(),
            None,
        )
    }

    /// The store `settings` describe: their file, timeout and page cache.
    pub fn from_settings(
        settings: &crate::config::StoreSettings,
        clicks: ClickLimits,
    ) -> Result<Self, StoreError> {
        Self::open_with_cache(
            &settings.path,
            settings.timeout,
            settings.cache_bytes,
            clicks,
            settings
                .code_layout_key
                .as_ref()
                .map(|key| key.expose().as_bytes()),
        )
    }

    /// As [`open`](Self::open), with at most `cache_bytes` of pages cached in memory (reads
    /// beyond it go to the file, which the OS keeps in its page cache), and the configured
    /// permutation key if there is one (see [`links`]).
    fn open_with_cache(
        path: &Path,
        timeout: Duration,
        cache_bytes: usize,
        clicks: ClickLimits,
        layout_key: Option<&[u8]>,
    ) -> Result<Self, StoreError> {
        let unavailable =
            |e: &dyn std::fmt::Display| StoreError::unavailable(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(&e))?;
        }
        let (db, layout) = open_database(path, cache_bytes, layout_key).map_err(|e| match e {
            e if is_out_of_space(&e) => disk_full(),
            e => unavailable(&e),
        })?;
        let next_seq = |db: &Database| -> Result<u64, redb::Error> {
            let txn = db.begin_read()?;
            clicks::next_seq(&txn.open_table(CLICK_LOG)?)
        };
        let shared = Arc::new(Shared {
            next_seq: AtomicU64::new(next_seq(&db).map_err(|e| unavailable(&e))?),
            db: RwLock::new(Some(Arc::new(db))),
            path: path.to_owned(),
            cache_bytes,
            writable: AtomicBool::new(true),
            reopening: AtomicBool::new(false),
            timeout,
            clicks,
            layout: RwLock::new(Arc::new(layout)),
            commits: AtomicU64::new(0),
            committed_writes: AtomicU64::new(0),
        });
        let (writes, queue) = mpsc::channel(QUEUE_DEPTH);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("kurz-store-writer".into())
            .spawn(move || run_writer(&writer_shared, queue))
            .map_err(|e| unavailable(&e))?;
        Ok(Self {
            shared,
            writes,
            writer: Mutex::new(Some(writer)),
            timeout,
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self
            .shared
            .current_or_reopened()
            .await
            .ok_or_else(|| StoreError::unavailable("the store is closed"))?;
        let task = tokio::task::spawn_blocking(move || f(&db));
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(join)) => Err(StoreError::internal(format!("read task failed: {join}"))),
            Ok(Ok(result)) => result,
        }
    }

    async fn write<T>(&self, op: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, self.write_and_wait(op))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }

    /// A write, waiting for the writer's answer however long the commit takes: its caller
    /// learns for certain whether it was committed.
    async fn write_and_wait<T>(
        &self,
        op: impl FnOnce(Reply<T>) -> WriteOp,
    ) -> Result<T, StoreError> {
        // Refused at once while the disk is full: the writer's probe finds out when it is not.
        if !self.shared.writable.load(Ordering::Acquire) {
            return Err(disk_full());
        }
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(op(reply))
            .await
            .map_err(|_| StoreError::unavailable("the store is closed"))?;
        answer.await.map_err(|_| {
            if self.shared.writable.load(Ordering::Acquire) {
                StoreError::internal("write transaction failed; nothing was committed")
            } else {
                disk_full()
            }
        })?
    }
}

#[cfg(test)]
impl EmbeddedStore {
    /// Stalls the writer: every write queued from now on commits only once the returned
    /// sender sends (or is dropped), however long its caller waits. Returns once the writer
    /// has stopped, so that nothing queued after joins the stalled batch.
    pub(crate) async fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (go, release) = std::sync::mpsc::channel();
        let (held, stopped) = oneshot::channel();
        self.writes
            .send(WriteOp::Hold { held, release })
            .await
            .expect("the writer is running");
        stopped.await.expect("the writer holds");
        go
    }
}

fn create_tables(db: &Database, layout_key: Option<&[u8]>) -> Result<Layout, redb::Error> {
    // Made before the transaction: it is stored only for a new store with no key configured.
    let fresh =
        crate::secrets::random_key().map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
    let txn = db.begin_write()?;
    txn.open_table(LINKS)?;
    txn.open_table(LINKS_BY_ID)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(CLICK_TOTALS)?;
    txn.open_table(CLICK_LOG)?;
    txn.open_table(CLICK_DAYS)?;
    txn.open_table(CLICK_HOURS)?;
    clicks::migrate_daily_counts(&txn)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(SECRETS)?;
    txn.open_table(API_KEYS)?;
    let layout = Layout::new(&links::layout_key(&txn, layout_key, &fresh)?);
    index_existing_links(&txn)?;
    index_for_purge(&txn)?;
    txn.commit()?;
    links::split(db, &layout)?;
    Ok(layout)
}

/// Stores written before the list indexes existed get them on first open, in the same
/// transaction that creates them.
fn index_existing_links(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut by_created = txn.open_table(BY_CREATED)?;
    if !by_created.is_empty()? {
        return Ok(());
    }
    let mut by_owner = txn.open_table(BY_OWNER)?;
    let mut count = 0u64;
    links::all(txn, |bytes| {
        let Ok(link) = serde_json::from_slice::<Link>(bytes) else {
            return Ok(()); // unreadable: `get` reports it; a list cannot show it either
        };
        let code = link.code.as_str();
        by_created.insert((link.created_at_ms, code), ())?;
        by_owner.insert((owner_key(&link), link.created_at_ms, code), ())?;
        count += 1;
        Ok(())
    })?;
    if count == 0 {
        return Ok(());
    }
    tracing::info!(links = count, "indexed the stored links for listing");
    Ok(())
}

/// Stores written before the purge's indexes existed get them on first open, in the same
/// transaction that creates them.
fn index_for_purge(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut counters = txn.open_table(COUNTERS)?;
    if counters.get(PURGE_INDEXED)?.is_some() {
        return Ok(());
    }
    let mut by_expiry = txn.open_table(BY_EXPIRY)?;
    links::all(txn, |bytes| {
        if let Ok(Link {
            code,
            expires_at_ms: Some(at),
            ..
        }) = serde_json::from_slice::<Link>(bytes)
        {
            by_expiry.insert((at, code.as_str()), ())?;
        }
        Ok(())
    })?;
    let mut by_created = txn.open_table(IDEMPOTENCY_BY_CREATED)?;
    for entry in txn.open_table(IDEMPOTENCY)?.iter()? {
        let (key, bytes) = entry?;
        if let Ok(record) = serde_json::from_slice::<IdempotencyRecord>(bytes.value()) {
            by_created.insert((record.created_at_ms, key.value()), ())?;
        }
    }
    counters.insert(PURGE_INDEXED, 1)?;
    Ok(())
}

fn owner_key(link: &Link) -> &str {
    link.owner.as_deref().unwrap_or("")
}

fn internal(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    StoreError::Internal {
        reason: e.to_string(),
        source: Some(Arc::new(e)),
    }
}

fn decode_link(code: &str, bytes: &[u8]) -> Result<Link, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        code: code.to_owned(),
        reason: e.to_string(),
    })
}

/// The link stored under `code`, read in `txn`.
fn read_link(
    txn: &redb::ReadTransaction,
    layout: &Layout,
    code: &str,
) -> Result<Option<Link>, StoreError> {
    layout
        .place(code)
        .read(txn, |bytes| decode_link(code, bytes))
        .map_err(internal)?
        .transpose()
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The writer thread: batch, apply, commit once, then answer everyone in the batch. While the
/// disk is full it applies nothing and probes instead (see the module's doc).
fn run_writer(shared: &Shared, mut queue: mpsc::Receiver<WriteOp>) {
    let mut merging = Merging::new(shared);
    let mut closing = None;
    let mut probing: Option<(std::time::Instant, Duration)> = None;
    loop {
        if let Some((next, interval)) = probing {
            match queue.try_recv() {
                Ok(WriteOp::Close { reply }) => {
                    closing = Some(reply);
                    break;
                }
                // Queued just before writes were refused: dropped, its caller hears why.
                Ok(_) => continue,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            if std::time::Instant::now() < next {
                std::thread::sleep(Duration::from_millis(20));
            } else if probe_write(shared) {
                probing = None;
                shared.writable.store(true, Ordering::Release);
                tracing::warn!("the store's disk has room again: writes are taken again");
            } else {
                let interval = (interval * 2).min(MAX_PROBE_INTERVAL);
                probing = Some((std::time::Instant::now() + interval, interval));
            }
            continue;
        }
        // A merge that is due goes one chunk at a time while nothing else waits: writes go
        // first, and one that arrives meanwhile waits for one chunk at most. Only a log that
        // has grown past twice its bound gets a chunk between every two batches, so that a
        // writer never idle still merges.
        if merging.due() && merging.behind() {
            merging.step(shared);
        }
        let first = if merging.due() {
            match queue.try_recv() {
                Ok(op) => op,
                Err(TryRecvError::Empty) => {
                    if !merging.behind() {
                        merging.step(shared);
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            let Some(op) = queue.blocking_recv() else {
                break;
            };
            op
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let (ops, close): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|op| !matches!(op, WriteOp::Close { .. }));
        if !ops.is_empty() {
            let size = ops.len();
            // Dropping the replies tells every waiting caller that nothing was committed.
            match shared.current() {
                None => drop(ops),
                Some(db) => match apply_batch(&db, ops, shared) {
                    Ok((answers, appended)) => {
                        shared.commits.fetch_add(1, Ordering::Relaxed);
                        shared
                            .committed_writes
                            .fetch_add(size as u64, Ordering::Relaxed);
                        answers.into_iter().for_each(Answer::send);
                        if appended {
                            merging.appended();
                        }
                    }
                    Err(e) if is_out_of_space(&e) => {
                        tracing::error!(
                            error = %e,
                            ops = size,
                            "the store's disk is full: writes are refused (507) until space is \
                             freed; reads and cached redirects go on, clicks wait in memory"
                        );
                        drop(db);
                        shared.reopen();
                        probing = Some((
                            std::time::Instant::now() + FIRST_PROBE_INTERVAL,
                            FIRST_PROBE_INTERVAL,
                        ));
                    }
                    Err(e) => tracing::error!(error = %e, ops = size, "store write batch failed"),
                },
            }
        }
        if let Some(WriteOp::Close { reply }) = close.into_iter().next() {
            closing = Some(reply);
            break;
        }
    }
    queue.close();
    // Anything still queued after Close was never applied; its callers see the error.
    while queue.try_recv().is_ok() {}
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// When the writer merges the click log (see [`clicks`]).
struct Merging {
    /// When the oldest flush not yet being merged was appended.
    waiting_since: Option<std::time::Instant>,
    /// Flushes appended since the last merge started.
    waiting: u64,
    current: Option<Merge>,
}

impl Merging {
    /// A log left by the last run is merged at once.
    fn new(shared: &Shared) -> Self {
        let left = shared.next_seq.load(Ordering::Relaxed) > 0;
        Self {
            waiting_since: left.then(|| std::time::Instant::now() - clicks::MERGE_AFTER),
            waiting: 0,
            current: None,
        }
    }

    fn appended(&mut self) {
        self.waiting_since
            .get_or_insert_with(std::time::Instant::now);
        self.waiting += 1;
    }

    /// Whether the log holds more than twice the flushes a merge waits for.
    fn behind(&self) -> bool {
        self.waiting >= 2 * clicks::MERGE_AFTER_SEQS
    }

    fn due(&self) -> bool {
        self.current.is_some()
            || self.waiting >= clicks::MERGE_AFTER_SEQS
            || self
                .waiting_since
                .is_some_and(|at| at.elapsed() >= clicks::MERGE_AFTER)
    }

    /// Merges one chunk, starting a merge of everything appended so far when none is going.
    fn step(&mut self, shared: &Shared) {
        let merge = self.current.get_or_insert_with(|| {
            self.waiting_since = None;
            self.waiting = 0;
            Merge::below(shared.next_seq.load(Ordering::Acquire))
        });
        let Some(db) = shared.current() else {
            return;
        };
        let merged = (|| -> Result<bool, redb::Error> {
            let mut txn = db.begin_write()?;
            // Not synced on its own: the next write's commit makes it durable. A crash before
            // that loses the whole chunk, its rollups with the removal of its log rows, so
            // every click is still in one of the two.
            txn.set_durability(redb::Durability::None)?;
            let now = crate::clock::system_now_ms();
            let layout = shared.layout();
            let done = clicks::merge_chunk(&txn, merge, &layout, shared.clicks, now)?;
            txn.commit()?;
            Ok(done)
        })();
        match merged {
            Ok(false) => {}
            Ok(true) => self.current = None,
            Err(e) => {
                // Nothing of the failed chunk was committed; the merge starts over later.
                tracing::warn!(error = %e, "merging the click log failed; trying again later");
                self.current = None;
                self.waiting_since = Some(std::time::Instant::now());
                if is_out_of_space(&e) {
                    shared.writable.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// Free bytes below which the writer does not even try a commit: a failed commit fails reads
/// too until the file is reopened, so it is tried only once space has visibly come back.
const PROBE_MIN_FREE_BYTES: u64 = 256 * 1024;

/// One small commit, to learn whether the disk takes writes again (once the file system shows
/// room, when it can tell); after a failure the file is reopened, so that reads go on.
fn probe_write(shared: &Shared) -> bool {
    // A reopen that failed (a read held the old handle too long) is tried again first, full
    // disk or not: reads need the handle.
    if shared.current().is_none() && !shared.reopen() {
        return false;
    }
    if shared
        .free_bytes()
        .is_some_and(|free| free < PROBE_MIN_FREE_BYTES)
    {
        return false;
    }
    let Some(db) = shared.current() else {
        return false;
    };
    let written = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(COUNTERS)?.insert(
            DISK_PROBE,
            u64::try_from(crate::clock::system_now_ms()).unwrap_or(0),
        )?;
        txn.commit()?;
        Ok(())
    })();
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "the store's disk is still full");
            drop(db);
            shared.reopen();
            false
        }
    }
}

/// Drops the database once the reads still in flight let go of it, so that the file can be
/// opened again (by the next process, or a restart in the same one) as soon as `close` returns.
fn release(mut db: Arc<Database>, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return drop(db),
            Err(shared) if std::time::Instant::now() < deadline => {
                db = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => {
                tracing::warn!(
                    "a store read outlived the shutdown; the database file stays locked until it ends"
                );
                return;
            }
        }
    }
}

/// A computed result, sent only once the batch has committed.
enum Answer {
    Insert(Reply<InsertOutcome>, InsertOutcome),
    Delete(Reply<Option<Link>>, Option<Link>),
    Replace(Reply<ReplaceOutcome>, ReplaceOutcome),
    Import(Reply<ImportOutcome>, ImportOutcome),
    Bytes(Reply<Vec<u8>>, Vec<u8>),
    Lease(Reply<Range<u64>>, Range<u64>),
    Purge(Reply<Purged>, Purged),
    /// A write with nothing to answer but that it committed.
    Done(Reply<()>),
}

impl Answer {
    fn send(self) {
        // A caller that timed out has gone away; its answer has nowhere to go.
        match self {
            Self::Insert(r, v) => drop(r.send(Ok(v))),
            Self::Delete(r, v) => drop(r.send(Ok(v))),
            Self::Replace(r, v) => drop(r.send(Ok(v))),
            Self::Import(r, v) => drop(r.send(Ok(v))),
            Self::Bytes(r, v) => drop(r.send(Ok(v))),
            Self::Lease(r, v) => drop(r.send(Ok(v))),
            Self::Purge(r, v) => drop(r.send(Ok(v))),
            Self::Done(r) => drop(r.send(Ok(()))),
        }
    }
}

/// Applies `ops` in one transaction. A failure for want of space marks the store unwritable
/// before the replies are dropped, so that their callers hear why.
/// The answers, and whether the batch appended to the click log.
fn apply_batch(
    db: &Database,
    ops: Vec<WriteOp>,
    shared: &Shared,
) -> Result<(Vec<Answer>, bool), redb::Error> {
    let mut ops = ops.into_iter();
    let mut answers = Vec::with_capacity(ops.len());
    let mut layout = shared.layout();
    let applied = apply(db, &mut ops, &mut answers, shared.clicks, &mut layout);
    if applied.is_ok()
        && !Arc::ptr_eq(&layout, &shared.layout())
        && let Ok(mut current) = shared.layout.write()
    {
        // Committed: from now on everyone places codes by it (before anyone hears back).
        *current = layout;
    }
    if let Err(e) = &applied
        && is_out_of_space(e)
    {
        shared.writable.store(false, Ordering::Release);
    }
    applied.map(|appended| (answers, appended))
}

/// `layout` is the one the batch starts with, replaced if an op of the batch changes it.
fn apply(
    db: &Database,
    ops: &mut std::vec::IntoIter<WriteOp>,
    answers: &mut Vec<Answer>,
    limits: ClickLimits,
    layout: &mut Arc<Layout>,
) -> Result<bool, redb::Error> {
    let txn = db.begin_write()?;
    let mut appended = false;
    for op in ops {
        answers.push(match op {
            WriteOp::Insert {
                link,
                layout: placed_by,
                position,
                encoded,
                idempotency,
                reply,
            } => {
                let place = if Arc::ptr_eq(&placed_by, layout) {
                    Place::at(position, &link.code)
                } else {
                    layout.place(&link.code) // the layout changed since
                };
                let inserted = insert(&txn, place, &link, &encoded, idempotency.as_ref())?;
                Answer::Insert(reply, inserted)
            }
            WriteOp::Delete { code, reply } => {
                Answer::Delete(reply, delete(&txn, layout.place(&code), &code)?)
            }
            WriteOp::Replace { link, reply } => {
                Answer::Replace(reply, replace(&txn, layout.place(&link.code), &link)?)
            }
            WriteOp::Secret {
                name,
                candidate,
                reply,
            } => Answer::Bytes(reply, secret(&txn, &name, candidate)?),
            WriteOp::Lease { count, reply } => Answer::Lease(reply, lease(&txn, count)?),
            WriteOp::PutSecret {
                name,
                secret,
                reply,
            } => {
                if name == crate::secrets::PERMUTATION_KEY
                    && let Some(adopted) = links::adopt(&txn, layout, &secret)?
                {
                    *layout = Arc::new(adopted);
                }
                txn.open_table(SECRETS)?
                    .insert(name.as_str(), secret.as_slice())?;
                Answer::Done(reply)
            }
            WriteOp::DeleteSecret { name, reply } => {
                txn.open_table(SECRETS)?.remove(name.as_str())?;
                Answer::Done(reply)
            }
            WriteOp::Import { link, stats, reply } => {
                Answer::Import(reply, import(&txn, layout, &link, &stats)?)
            }
            WriteOp::Key { key, insert, reply } => {
                Answer::Replace(reply, put_key(&txn, &key, insert)?)
            }
            WriteOp::Clicks { seq, rows, reply } => {
                clicks::append(&txn, seq, &rows, limits.max_values)?;
                appended = true;
                Answer::Done(reply)
            }
            WriteOp::Purge {
                records_before_ms,
                links_expired_before_ms,
                limit,
                reply,
            } => Answer::Purge(
                reply,
                purge(
                    &txn,
                    layout,
                    records_before_ms,
                    links_expired_before_ms,
                    limit,
                )?,
            ),
            WriteOp::Close { .. } => continue,
            #[cfg(test)]
            WriteOp::Hold { held, release } => {
                let _ = held.send(());
                let _ = release.recv();
                continue;
            }
        });
    }
    txn.commit()?;
    Ok(appended)
}

/// Inserts `link` (as `encoded`) at `place`, its code's place, unless a link is there.
fn insert(
    txn: &WriteTransaction,
    place: Place<'_>,
    link: &Link,
    encoded: &[u8],
    idempotency: Option<&IdempotencyRecord>,
) -> Result<InsertOutcome, redb::Error> {
    let mut keys = txn.open_table(IDEMPOTENCY)?;
    let previous = match idempotency {
        Some(record) => keys
            .get(record.key.as_str())?
            .and_then(|bytes| serde_json::from_slice::<IdempotencyRecord>(bytes.value()).ok()),
        None => None,
    };
    if let (Some(record), Some(previous)) = (idempotency, &previous)
        && record.created_at_ms - previous.created_at_ms < IDEMPOTENCY_WINDOW_MS
    {
        return Ok(InsertOutcome::Replay(previous.clone()));
    }
    if !place.insert_new(txn, encoded)? {
        return Ok(InsertOutcome::CodeTaken);
    }
    let code = link.code.as_str();
    txn.open_table(BY_CREATED)?
        .insert((link.created_at_ms, code), ())?;
    txn.open_table(BY_OWNER)?
        .insert((owner_key(link), link.created_at_ms, code), ())?;
    if let Some(at) = link.expires_at_ms {
        txn.open_table(BY_EXPIRY)?.insert((at, code), ())?;
    }
    if let Some(record) = idempotency {
        let key = record.key.as_str();
        let mut by_created = txn.open_table(IDEMPOTENCY_BY_CREATED)?;
        // A record past its window is replaced, and leaves the purge's index.
        if let Some(previous) = &previous {
            by_created.remove((previous.created_at_ms, key))?;
        }
        keys.insert(key, encode(record).as_slice())?;
        by_created.insert((record.created_at_ms, key), ())?;
    }
    Ok(InsertOutcome::Inserted)
}

/// Deletes the link of `code` (kept at `place`) with its index entries and statistics.
fn delete(
    txn: &WriteTransaction,
    place: Place<'_>,
    code: &str,
) -> Result<Option<Link>, redb::Error> {
    let removed = place
        .remove(txn)?
        .map(|bytes| serde_json::from_slice::<Link>(&bytes));
    let deleted = match removed {
        None => None,
        Some(Ok(link)) => {
            txn.open_table(BY_CREATED)?
                .remove((link.created_at_ms, code))?;
            txn.open_table(BY_OWNER)?
                .remove((owner_key(&link), link.created_at_ms, code))?;
            if let Some(at) = link.expires_at_ms {
                txn.open_table(BY_EXPIRY)?.remove((at, code))?;
            }
            Some(link)
        }
        // A link that no longer decodes did exist; only its fields are unknown.
        Some(Err(_)) => Some(Link {
            code: code.to_owned(),
            ..Link::default()
        }),
    };
    if let Some(link) = &deleted {
        clicks::remove(txn, code, link.created_at_ms, crate::clock::system_now_ms())?;
    }
    Ok(deleted)
}

fn replace(
    txn: &WriteTransaction,
    place: Place<'_>,
    link: &Link,
) -> Result<ReplaceOutcome, redb::Error> {
    let code = link.code.as_str();
    let Some(current) = place
        .get(txn, |bytes| serde_json::from_slice::<Link>(bytes).ok())?
        .flatten()
    else {
        return Ok(ReplaceOutcome::Missing);
    };
    if current.created_at_ms != link.created_at_ms {
        return Ok(ReplaceOutcome::Missing);
    }
    if current.revision.checked_add(1) != Some(link.revision) {
        return Ok(ReplaceOutcome::Conflict);
    }
    place.put(txn, &encode(link))?;
    if current.owner != link.owner {
        let mut by_owner = txn.open_table(BY_OWNER)?;
        by_owner.remove((owner_key(&current), current.created_at_ms, code))?;
        by_owner.insert((owner_key(link), link.created_at_ms, code), ())?;
    }
    if current.expires_at_ms != link.expires_at_ms {
        let mut by_expiry = txn.open_table(BY_EXPIRY)?;
        if let Some(at) = current.expires_at_ms {
            by_expiry.remove((at, code))?;
        }
        if let Some(at) = link.expires_at_ms {
            by_expiry.insert((at, code), ())?;
        }
    }
    Ok(ReplaceOutcome::Replaced)
}

/// Up to `limit` codes before `after` (newest first) in `scope`'s index.
fn list_codes(
    db: &Database,
    layout: &Layout,
    scope: &ListScope,
    after: Option<&ListPosition>,
    limit: usize,
) -> Result<Vec<Link>, redb::Error> {
    let txn = db.begin_read()?;
    let mut codes: Vec<String> = Vec::with_capacity(limit.min(1024));
    match scope {
        ListScope::All => {
            let index = txn.open_table(BY_CREATED)?;
            let range = match after {
                Some(p) => index.range(..(p.created_at_ms, p.code.as_str()))?,
                None => index.range::<(i64, &str)>(..)?,
            };
            for entry in range.rev().take(limit) {
                codes.push(entry?.0.value().1.to_owned());
            }
        }
        ListScope::Owner(owner) => {
            let owner = owner.as_deref().unwrap_or("");
            let index = txn.open_table(BY_OWNER)?;
            let end = after.map_or((owner, i64::MAX, "\u{10FFFF}"), |p| {
                (owner, p.created_at_ms, p.code.as_str())
            });
            let range = index.range((owner, i64::MIN, "")..end)?;
            for entry in range.rev().take(limit) {
                codes.push(entry?.0.value().2.to_owned());
            }
        }
    }
    let mut found = Vec::with_capacity(codes.len());
    for code in codes {
        let link = layout
            .place(&code)
            .read(&txn, |bytes| serde_json::from_slice::<Link>(bytes).ok())?;
        found.extend(link.flatten());
    }
    Ok(found)
}

fn import(
    txn: &WriteTransaction,
    layout: &Layout,
    link: &Link,
    stats: &LinkStats,
) -> Result<ImportOutcome, redb::Error> {
    let code = link.code.as_str();
    let place = layout.place(code);
    let existing = place.get(txn, |bytes| serde_json::from_slice::<Link>(bytes))?;
    let outcome = match existing {
        None => match insert(txn, place, link, &encode(link), None)? {
            InsertOutcome::Inserted => ImportOutcome::Imported,
            _ => ImportOutcome::CodeTaken,
        },
        Some(Ok(there)) if there.created_at_ms == link.created_at_ms && there.url == link.url => {
            ImportOutcome::AlreadyThere
        }
        Some(_) => return Ok(ImportOutcome::CodeTaken),
    };
    clicks::import(txn, code, stats)?;
    Ok(outcome)
}

fn put_key(
    txn: &WriteTransaction,
    key: &StoredKey,
    insert: bool,
) -> Result<ReplaceOutcome, redb::Error> {
    let mut keys = txn.open_table(API_KEYS)?;
    let current = keys
        .get(key.id.as_str())?
        .and_then(|bytes| serde_json::from_slice::<StoredKey>(bytes.value()).ok());
    let outcome = match (insert, current) {
        (true, Some(_)) => ReplaceOutcome::Conflict,
        (true, None) => ReplaceOutcome::Replaced,
        (false, None) => ReplaceOutcome::Missing,
        (false, Some(current)) if current.revision.checked_add(1) != Some(key.revision) => {
            ReplaceOutcome::Conflict
        }
        (false, Some(_)) => ReplaceOutcome::Replaced,
    };
    if outcome == ReplaceOutcome::Replaced {
        keys.insert(key.id.as_str(), encode(key).as_slice())?;
    }
    Ok(outcome)
}

/// Up to `limit` idempotency records made before `records_before_ms` and up to `limit` links
/// expired before `links_expired_before_ms`, removed (links as a delete removes them).
fn purge(
    txn: &WriteTransaction,
    layout: &Layout,
    records_before_ms: i64,
    links_expired_before_ms: Option<i64>,
    limit: usize,
) -> Result<Purged, redb::Error> {
    let mut purged = Purged::default();
    let mut by_created = txn.open_table(IDEMPOTENCY_BY_CREATED)?;
    let stale: Vec<(i64, String)> = by_created
        .range(..(records_before_ms, ""))?
        .take(limit)
        .map(|entry| entry.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    let mut keys = txn.open_table(IDEMPOTENCY)?;
    for (created_at_ms, key) in stale {
        by_created.remove((created_at_ms, key.as_str()))?;
        keys.remove(key.as_str())?;
        purged.idempotency_records += 1;
    }
    let Some(before) = links_expired_before_ms else {
        return Ok(purged);
    };
    let expired: Vec<(i64, String)> = txn
        .open_table(BY_EXPIRY)?
        .range(..(before, ""))?
        .take(limit)
        .map(|entry| entry.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    for (at, code) in expired {
        // The index entry of the link stored now (anything else is a stale entry, dropped).
        let place = layout.place(&code);
        let current = place
            .get(txn, |bytes| serde_json::from_slice::<Link>(bytes).ok())?
            .flatten();
        if current.is_some_and(|link| link.expires_at_ms == Some(at)) {
            delete(txn, place, &code)?;
            purged.links += 1;
        } else {
            txn.open_table(BY_EXPIRY)?.remove((at, code.as_str()))?;
        }
    }
    Ok(purged)
}

fn secret(txn: &WriteTransaction, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, redb::Error> {
    let mut secrets = txn.open_table(SECRETS)?;
    if let Some(existing) = secrets.get(name)? {
        return Ok(existing.value().to_vec());
    }
    secrets.insert(name, candidate.as_slice())?;
    Ok(candidate)
}

fn lease(txn: &WriteTransaction, count: u64) -> Result<Range<u64>, redb::Error> {
    let mut counters = txn.open_table(COUNTERS)?;
    let start = counters
        .get(LINK_ID_COUNTER)?
        .map(|v| v.value())
        .unwrap_or(0);
    let end = start.saturating_add(count);
    counters.insert(LINK_ID_COUNTER, end)?;
    Ok(start..end)
}

#[async_trait]
impl LinkStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn disk(&self) -> Option<DiskState> {
        Some(DiskState {
            writable: self.shared.writable.load(Ordering::Acquire),
            free_bytes: self.shared.free_bytes(),
            commits: self.shared.commits.load(Ordering::Relaxed),
            committed_writes: self.shared.committed_writes.load(Ordering::Relaxed),
        })
    }

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        let code = code.to_owned();
        let layout = self.shared.layout();
        self.read(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            read_link(&txn, &layout, &code)
        })
        .await
    }

    async fn insert(
        &self,
        link: &Link,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        // Worked out here, while the writer commits the batch before.
        let layout = self.shared.layout();
        let position = layout.position(&link.code);
        let encoded = encode(link);
        self.write(|reply| WriteOp::Insert {
            link: link.clone(),
            layout,
            position,
            encoded,
            idempotency: idempotency.cloned(),
            reply,
        })
        .await
    }

    async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.write(|reply| WriteOp::Delete {
            code: code.to_owned(),
            reply,
        })
        .await
    }

    async fn replace(&self, link: &Link) -> Result<ReplaceOutcome, StoreError> {
        self.write(|reply| WriteOp::Replace {
            link: link.clone(),
            reply,
        })
        .await
    }

    async fn list(
        &self,
        scope: &ListScope,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        let (scope, after) = (scope.clone(), after.cloned());
        let layout = self.shared.layout();
        self.read(move |db| {
            list_codes(db, &layout, &scope, after.as_ref(), limit).map_err(internal)
        })
        .await
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.write(|reply| WriteOp::Secret {
            name: name.to_owned(),
            candidate: candidate.to_vec(),
            reply,
        })
        .await
    }

    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError> {
        self.write(|reply| WriteOp::PutSecret {
            name: name.to_owned(),
            secret: secret.to_vec(),
            reply,
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(API_KEYS).map_err(internal)?;
            let mut keys = Vec::new();
            for entry in table.iter().map_err(internal)? {
                let (id, bytes) = entry.map_err(internal)?;
                keys.push(serde_json::from_slice(bytes.value()).map_err(|e| {
                    StoreError::Corrupt {
                        code: format!("API key {}", id.value()),
                        reason: e.to_string(),
                    }
                })?);
            }
            Ok(keys)
        })
        .await
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let outcome = self
            .write(|reply| WriteOp::Key {
                key: key.clone(),
                insert: true,
                reply,
            })
            .await?;
        Ok(outcome == ReplaceOutcome::Replaced)
    }

    async fn replace_key(&self, key: &StoredKey) -> Result<ReplaceOutcome, StoreError> {
        self.write(|reply| WriteOp::Key {
            key: key.clone(),
            insert: false,
            reply,
        })
        .await
    }

    async fn import(&self, link: &Link, stats: &LinkStats) -> Result<ImportOutcome, StoreError> {
        self.write(|reply| WriteOp::Import {
            link: link.clone(),
            stats: stats.clone(),
            reply,
        })
        .await
    }

    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        self.write(|reply| WriteOp::Lease { count, reply }).await
    }

    /// In transactions of at most [`CLICK_CHUNK`] deltas, one after another, so that a large
    /// flush never makes one long commit that creates wait behind. Each waits for its commit
    /// without the store timeout: a write whose caller gave up could still commit, and the
    /// flusher, keeping its deltas, would count them twice. Once the store timeout has passed,
    /// no further chunk starts: what is left is unapplied (the store is behind; the flusher
    /// backs off), as is everything from a chunk that fails.
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // In ascending code order, under one sequence number: every key appended is greater
        // than every key before it (see `clicks`).
        let mut order: Vec<usize> = (0..deltas.len()).collect();
        order.sort_by(|&a, &b| deltas[a].code.cmp(&deltas[b].code));
        let seq = self.shared.next_seq.fetch_add(1, Ordering::AcqRel);
        let unapplied = |from: usize| {
            let mut rest = order[from..].to_vec();
            rest.sort_unstable();
            rest
        };
        for (n, chunk) in order.chunks(CLICK_CHUNK).enumerate() {
            if n > 0 && tokio::time::Instant::now() >= deadline {
                return Err(FlushError {
                    error: StoreError::Timeout(self.timeout),
                    unapplied: unapplied(n * CLICK_CHUNK),
                });
            }
            let written = self
                .write_and_wait(|reply| WriteOp::Clicks {
                    seq,
                    rows: chunk.iter().map(|&i| clicks::log_row(&deltas[i])).collect(),
                    reply,
                })
                .await;
            if let Err(error) = written {
                return Err(FlushError {
                    error,
                    unapplied: unapplied(n * CLICK_CHUNK),
                });
            }
        }
        Ok(())
    }

    async fn purge(
        &self,
        records_before_ms: i64,
        links_expired_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        self.write(|reply| WriteOp::Purge {
            records_before_ms,
            links_expired_before_ms,
            limit,
            reply,
        })
        .await
    }

    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        let code = code.to_owned();
        let cap = self.shared.clicks.max_values;
        let layout = self.shared.layout();
        self.read(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let Some(link) = read_link(&txn, &layout, &code)? else {
                return Ok(None);
            };
            clicks::stats(&txn, &code, link.created_at_ms, cap)
                .map(Some)
                .map_err(internal)
        })
        .await
    }

    async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<Analytics>, StoreError> {
        let code = code.to_owned();
        let cap = self.shared.clicks.max_values;
        let layout = self.shared.layout();
        self.read(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let Some(link) = read_link(&txn, &layout, &code)? else {
                return Ok(None);
            };
            clicks::read(&txn, &code, link.created_at_ms, from_hour, to_hour, cap)
                .map(Some)
                .map_err(internal)
        })
        .await
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        self.write(|reply| WriteOp::DeleteSecret {
            name: name.to_owned(),
            reply,
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.writes.is_closed() {
            return Err(StoreError::unavailable("the store is closed"));
        }
        self.read(|db| {
            let txn = db.begin_read().map_err(internal)?;
            txn.open_table(COUNTERS).map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.writes.send(WriteOp::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        let db = self.shared.db.write().ok().and_then(|mut db| db.take());
        if let Some(db) = db {
            let limit = self.timeout;
            let _ = tokio::task::spawn_blocking(move || release(db, limit)).await;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    use crate::store::faulty::link;

    async fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            EmbeddedStore::open(&dir.path().join("k.redb"), Duration::from_secs(5)).expect("open");
        (dir, store)
    }

    #[tokio::test]
    async fn insert_is_put_if_absent() {
        let (_dir, store) = store().await;
        assert_eq!(
            store.insert(&link("abc"), None).await.expect("insert"),
            InsertOutcome::Inserted
        );
        let mut other = link("abc");
        other.url = "https://other.example/".into();
        assert_eq!(
            store.insert(&other, None).await.expect("insert"),
            InsertOutcome::CodeTaken
        );
        let stored = store.get("abc").await.expect("get").expect("exists");
        assert_eq!(stored.url, "https://example.com/abc");
    }

    #[tokio::test]
    async fn leases_do_not_overlap_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        let a = store.lease_ids(1000).await.expect("lease");
        let b = store.lease_ids(1000).await.expect("lease");
        assert_eq!(a, 0..1000);
        assert_eq!(b, 1000..2000);
        store.close().await;
        drop(store);
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("reopen");
        assert_eq!(store.lease_ids(10).await.expect("lease"), 2000..2010);
    }

    #[tokio::test]
    async fn close_releases_the_file_even_while_the_store_is_still_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        store.insert(&link("abc"), None).await.expect("insert");
        store.close().await;
        // `store` is still alive, as a shut-down app's state can be for a moment.
        let reopened = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("reopen");
        assert!(reopened.get("abc").await.expect("get").is_some());
        assert!(matches!(
            store.get("abc").await,
            Err(StoreError::Unavailable { .. })
        ));
        assert!(store.ping().await.is_err());
    }

    #[tokio::test]
    async fn clicks_accumulate_and_go_with_the_link() {
        let (_dir, store) = store().await;
        store.insert(&link("abc"), None).await.expect("insert");
        let delta = |count, day| ClickDelta::count_only("abc", count, i64::from(day) * 86_400_000);
        store
            .add_clicks(&[delta(2, 10), delta(3, 11)])
            .await
            .expect("clicks");
        store.add_clicks(&[delta(1, 11)]).await.expect("clicks");
        let stats = store.stats("abc").await.expect("stats").expect("exists");
        assert_eq!(stats.total_clicks, 6);
        assert_eq!(stats.daily, vec![(10, 2), (11, 4)]);
        assert_eq!(stats.last_click_ms, Some(11 * 86_400_000));

        assert!(store.delete("abc").await.expect("delete").is_some());
        assert_eq!(store.stats("abc").await.expect("stats"), None);
        // A click on the old link, flushed after the delete, and a new link under its code
        // made in the same hour: the click is not the new link's.
        store.add_clicks(&[delta(1, 12)]).await.expect("clicks");
        let again = Link {
            created_at_ms: 12 * 86_400_000 + 1_000,
            ..link("abc")
        };
        store.insert(&again, None).await.expect("insert");
        let fresh = store.stats("abc").await.expect("stats").expect("exists");
        assert_eq!(fresh, LinkStats::default());
    }

    #[tokio::test]
    async fn a_click_write_slower_than_the_store_timeout_is_waited_for_and_counted_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let open = |timeout| EmbeddedStore::open(&path, timeout).expect("open");
        let store = open(Duration::from_secs(5));
        store.insert(&link("abc"), None).await.expect("insert");
        store.close().await;
        // More deltas than one transaction takes, so the write goes in several.
        let deltas: Vec<ClickDelta> = (0..CLICK_CHUNK * 2 + 1)
            .map(|i| ClickDelta {
                token: format!("t{i}"),
                ..ClickDelta::count_only("abc", 1, 86_400_000 + i as i64)
            })
            .collect();
        // A timeout no commit can meet: the first transaction is waited for (a write that
        // gave up could still commit, and would then be sent again), no later one starts.
        let store = open(Duration::from_nanos(1));
        let behind = store
            .add_clicks(&deltas)
            .await
            .expect_err("the store is behind");
        assert_eq!(
            behind.unapplied,
            (CLICK_CHUNK..deltas.len()).collect::<Vec<_>>()
        );
        store.close().await;
        let store = open(Duration::from_secs(5));
        let stats = store.stats("abc").await.expect("stats").expect("exists");
        assert_eq!(stats.total_clicks, CLICK_CHUNK as u64);
        // What was left, sent again, is counted once too.
        let rest: Vec<ClickDelta> = behind
            .unapplied
            .iter()
            .map(|&i| deltas[i].clone())
            .collect();
        store.add_clicks(&rest).await.expect("written");
        let stats = store.stats("abc").await.expect("stats").expect("exists");
        assert_eq!(stats.total_clicks, deltas.len() as u64);
        assert_eq!(stats.daily, vec![(1, deltas.len() as u64)]);
    }

    #[tokio::test]
    async fn idempotency_key_replays_within_the_window() {
        let (_dir, store) = store().await;
        let record = IdempotencyRecord {
            key: "k1".into(),
            fingerprint: "f".into(),
            code: "abc".into(),
            created_at_ms: 1,
        };
        store
            .insert(&link("abc"), Some(&record))
            .await
            .expect("insert");
        let retry = IdempotencyRecord {
            code: "xyz".into(),
            ..record.clone()
        };
        assert_eq!(
            store
                .insert(&link("xyz"), Some(&retry))
                .await
                .expect("insert"),
            InsertOutcome::Replay(record.clone())
        );
        assert_eq!(store.get("xyz").await.expect("get"), None);

        // The last millisecond of the window still replays; from the window's end on, the key
        // makes a link again, and that link is what the key replays from then on.
        let last = IdempotencyRecord {
            created_at_ms: record.created_at_ms + IDEMPOTENCY_WINDOW_MS - 1,
            ..retry.clone()
        };
        assert_eq!(
            store
                .insert(&link("xyz"), Some(&last))
                .await
                .expect("insert"),
            InsertOutcome::Replay(record.clone())
        );
        assert_eq!(store.get("xyz").await.expect("get"), None);
        let past = IdempotencyRecord {
            created_at_ms: record.created_at_ms + IDEMPOTENCY_WINDOW_MS,
            ..retry
        };
        assert_eq!(
            store
                .insert(&link("xyz"), Some(&past))
                .await
                .expect("insert"),
            InsertOutcome::Inserted
        );
        assert_eq!(
            store.get("xyz").await.expect("get").map(|l| l.code),
            Some("xyz".into())
        );
        let again = IdempotencyRecord {
            code: "new".into(),
            created_at_ms: past.created_at_ms + 1,
            ..record
        };
        assert_eq!(
            store
                .insert(&link("new"), Some(&again))
                .await
                .expect("insert"),
            InsertOutcome::Replay(past)
        );
    }

    #[tokio::test]
    async fn a_store_from_before_the_list_indexes_gets_them_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        for (i, code) in ["old1", "old2", "old3"].into_iter().enumerate() {
            let link = Link {
                created_at_ms: i as i64,
                owner: (i != 1).then(|| "key-a".into()),
                ..link(code)
            };
            store.insert(&link, None).await.expect("insert");
        }
        store.close().await;
        // As a store written before the indexes: without them.
        {
            let db = Database::create(&path).expect("reopen");
            let txn = db.begin_write().expect("write");
            txn.delete_table(BY_CREATED).expect("drop");
            txn.delete_table(BY_OWNER).expect("drop");
            txn.commit().expect("commit");
        }
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        let codes = |links: Vec<Link>| links.into_iter().map(|l| l.code).collect::<Vec<_>>();
        let all = store.list(&ListScope::All, None, 10).await.expect("list");
        assert_eq!(codes(all), ["old3", "old2", "old1"]);
        let owned = ListScope::Owner(Some("key-a".into()));
        let page = store.list(&owned, None, 1).await.expect("list");
        assert_eq!(codes(page.clone()), ["old3"]);
        let rest = store
            .list(&owned, Some(&page[0].position()), 10)
            .await
            .expect("list");
        assert_eq!(codes(rest), ["old1"]);
        let nobody = store
            .list(&ListScope::Owner(None), None, 10)
            .await
            .expect("list");
        assert_eq!(codes(nobody), ["old2"]);
        // Deleting takes a link out of the indexes too.
        assert!(store.delete("old3").await.expect("delete").is_some());
        let all = store.list(&ListScope::All, None, 10).await.expect("list");
        assert_eq!(codes(all), ["old2", "old1"]);
    }

    #[tokio::test]
    async fn a_replace_applies_only_to_the_revision_it_was_made_from() {
        let (_dir, store) = store().await;
        store.insert(&link("abc"), None).await.expect("insert");
        let next = Link {
            url: "https://example.com/new".into(),
            revision: 1,
            ..link("abc")
        };
        assert_eq!(
            store.replace(&next).await.expect("replace"),
            ReplaceOutcome::Replaced
        );
        assert_eq!(store.get("abc").await.expect("get"), Some(next.clone()));
        // Made from revision 0 again: someone else's edit came first.
        assert_eq!(
            store.replace(&next).await.expect("replace"),
            ReplaceOutcome::Conflict
        );
        let recreated = Link {
            created_at_ms: 99,
            revision: 2,
            ..next.clone()
        };
        assert_eq!(
            store.replace(&recreated).await.expect("replace"),
            ReplaceOutcome::Missing,
            "another link under the same code"
        );
        assert_eq!(
            store.replace(&link_at("nope", 1)).await.expect("replace"),
            ReplaceOutcome::Missing
        );
    }

    fn expiring(code: &str, at: i64) -> Link {
        Link {
            expires_at_ms: Some(at),
            owner: Some("key-a".into()),
            ..link(code)
        }
    }

    fn record(key: &str, code: &str, created_at_ms: i64) -> IdempotencyRecord {
        IdempotencyRecord {
            key: key.into(),
            fingerprint: "f".into(),
            code: code.into(),
            created_at_ms,
        }
    }

    pub(super) fn rows<K: redb::Key + 'static, V: redb::Value + 'static>(
        store: &EmbeddedStore,
        table: TableDefinition<K, V>,
    ) -> u64 {
        let db = store.shared.current().expect("open");
        let txn = db.begin_read().expect("read");
        txn.open_table(table).expect("table").len().expect("len")
    }

    #[tokio::test]
    async fn a_purge_removes_links_expired_before_the_cutoff_in_bounded_rounds() {
        let (_dir, store) = store().await;
        for (i, code) in ["exp1", "exp2", "exp3"].into_iter().enumerate() {
            store
                .insert(&expiring(code, 100 + i as i64), None)
                .await
                .expect("insert");
        }
        store
            .insert(&expiring("later", 10_000), None)
            .await
            .expect("insert");
        store.insert(&link("forever"), None).await.expect("insert");
        // Made to expire early, then given more time: the purge goes by the stored expiry.
        store
            .insert(&expiring("moved", 50), None)
            .await
            .expect("insert");
        let moved = Link {
            expires_at_ms: Some(20_000),
            revision: 1,
            ..expiring("moved", 50)
        };
        assert_eq!(
            store.replace(&moved).await.expect("replace"),
            ReplaceOutcome::Replaced
        );
        let delta = ClickDelta::count_only("exp1", 3, 90);
        store.add_clicks(&[delta]).await.expect("clicks");

        let first = store.purge(0, Some(1_000), 2).await.expect("purge");
        assert_eq!(
            first,
            Purged {
                idempotency_records: 0,
                links: 2
            }
        );
        let second = store.purge(0, Some(1_000), 2).await.expect("purge");
        assert_eq!(
            second,
            Purged {
                idempotency_records: 0,
                links: 1
            }
        );
        assert_eq!(
            store.purge(0, Some(1_000), 2).await.expect("purge"),
            Purged::default()
        );

        let codes = |links: Vec<Link>| links.into_iter().map(|l| l.code).collect::<Vec<_>>();
        let mut all = codes(store.list(&ListScope::All, None, 10).await.expect("list"));
        all.sort();
        assert_eq!(all, ["forever", "later", "moved"]);
        let owned = ListScope::Owner(Some("key-a".into()));
        let mut mine = codes(store.list(&owned, None, 10).await.expect("list"));
        mine.sort();
        assert_eq!(mine, ["later", "moved"]);
        assert_eq!(store.stats("exp1").await.expect("stats"), None);
        assert_eq!(rows(&store, CLICK_TOTALS), 0);
        assert_eq!(rows(&store, CLICK_DAYS), 0);
        assert_eq!(rows(&store, BY_EXPIRY), 2, "later and moved");
        // Purged, the code is free again.
        assert_eq!(
            store.insert(&link("exp1"), None).await.expect("insert"),
            InsertOutcome::Inserted
        );
        // `None` purges no link however long expired.
        assert_eq!(
            store.purge(0, None, 10).await.expect("purge"),
            Purged::default()
        );
        assert!(store.get("later").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn a_purge_removes_idempotency_records_made_before_the_cutoff() {
        let (_dir, store) = store().await;
        for (i, key) in ["k1", "k2", "k3"].into_iter().enumerate() {
            let code = format!("c{i}");
            let made = record(key, &code, i as i64 * 10);
            store
                .insert(&link(&code), Some(&made))
                .await
                .expect("insert");
        }
        // k1 again past its window: the new record replaces the old one, in the index too.
        let again = record("k1", "c9", IDEMPOTENCY_WINDOW_MS + 5);
        assert_eq!(
            store
                .insert(&link("c9"), Some(&again))
                .await
                .expect("insert"),
            InsertOutcome::Inserted
        );
        let pruned = store.purge(15, None, 10).await.expect("purge");
        assert_eq!(
            pruned,
            Purged {
                idempotency_records: 1,
                links: 0
            },
            "k2 only"
        );
        assert_eq!(rows(&store, IDEMPOTENCY), 2);
        assert_eq!(rows(&store, IDEMPOTENCY_BY_CREATED), 2);
        let retry = record("k1", "cx", IDEMPOTENCY_WINDOW_MS + 6);
        assert_eq!(
            store
                .insert(&link("cx"), Some(&retry))
                .await
                .expect("insert"),
            InsertOutcome::Replay(again),
            "the newer record is kept"
        );
        assert_eq!(
            store.get("c1").await.expect("get").map(|l| l.code),
            Some("c1".into())
        );
    }

    #[tokio::test]
    async fn a_store_from_before_the_purge_indexes_gets_them_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        store
            .insert(&expiring("old", 5), Some(&record("k", "old", 1)))
            .await
            .expect("insert");
        store.close().await;
        {
            let db = Database::create(&path).expect("reopen");
            let txn = db.begin_write().expect("write");
            txn.delete_table(BY_EXPIRY).expect("drop");
            txn.delete_table(IDEMPOTENCY_BY_CREATED).expect("drop");
            txn.open_table(COUNTERS)
                .expect("counters")
                .remove(PURGE_INDEXED)
                .expect("unmark");
            txn.commit().expect("commit");
        }
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        let purged = store.purge(10, Some(10), 10).await.expect("purge");
        assert_eq!(
            purged,
            Purged {
                idempotency_records: 1,
                links: 1
            }
        );
        assert_eq!(store.get("old").await.expect("get"), None);
    }

    fn link_at(code: &str, revision: u64) -> Link {
        Link {
            revision,
            ..link(code)
        }
    }

    /// Waits until `n` writes wait in the writer's queue (behind a held writer).
    async fn queued(store: &EmbeddedStore, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while QUEUE_DEPTH - store.writes.capacity() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} writes never queued behind the held writer"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The keys of `LINKS_BY_ID` and of `LINKS`, in the order each table holds them.
    fn places(store: &EmbeddedStore) -> (Vec<u64>, Vec<String>) {
        let db = store.shared.current().expect("open");
        let txn = db.begin_read().expect("read");
        let by_id = txn.open_table(LINKS_BY_ID).expect("table");
        let by_code = txn.open_table(LINKS).expect("table");
        let ids = by_id
            .iter()
            .expect("iter")
            .map(|e| e.expect("row").0.value());
        let codes = by_code.iter().expect("iter");
        (
            ids.collect(),
            codes
                .map(|e| e.expect("row").0.value().to_owned())
                .collect(),
        )
    }

    #[tokio::test]
    async fn generated_links_are_kept_in_id_order_and_every_code_in_one_place() {
        let (_dir, store) = store().await;
        // A new store made the permutation key the id generator then uses.
        let key = store
            .secret(crate::secrets::PERMUTATION_KEY, b"not this one")
            .await
            .expect("key");
        assert_ne!(key, b"not this one");
        let generator = crate::code::CodeGenerator::new(&key);
        // Creates in id order, from two blocks leased out of order.
        let ids: Vec<u64> = (1_000..1_040).chain(0..40).collect();
        let mut codes = Vec::new();
        for &id in &ids {
            let Some(code) = generator.code_for(id) else {
                continue;
            };
            assert_eq!(
                store.insert(&link(&code), None).await.expect("insert"),
                InsertOutcome::Inserted
            );
            codes.push((id, code));
        }
        store.insert(&link("my-alias"), None).await.expect("insert");
        // One at a time: a commit each, each carrying its one write (the secret's too).
        let disk = store.disk().expect("embedded");
        assert_eq!(disk.commits, codes.len() as u64 + 2);
        assert_eq!(disk.committed_writes, disk.commits);
        let (by_id, by_code) = places(&store);
        let mut sorted: Vec<u64> = codes.iter().map(|(id, _)| *id).collect();
        sorted.sort_unstable();
        assert_eq!(by_id, sorted, "generated links are kept under their ids");
        assert_eq!(by_code, ["my-alias"]);
        for (_, code) in &codes {
            let found = store.get(code).await.expect("get").expect("stored");
            assert_eq!(found.url, link(code).url);
        }
        assert!(store.get("my-alias").await.expect("get").is_some());
        assert_eq!(
            store
                .list(&ListScope::All, None, 1_000)
                .await
                .expect("list")
                .len(),
            codes.len() + 1
        );
        // One place per code, whoever takes it first: an alias of a code the counter will
        // give, then the counter's create of it, and the other way round.
        let ahead = generator.code_for(5_000).expect("not reserved");
        store.insert(&link(&ahead), None).await.expect("alias");
        assert_eq!(
            store.insert(&link(&ahead), None).await.expect("insert"),
            InsertOutcome::CodeTaken
        );
        let (first, _) = &codes[0];
        let taken = generator.code_for(*first).expect("not reserved");
        assert_eq!(
            store.insert(&link(&taken), None).await.expect("insert"),
            InsertOutcome::CodeTaken
        );
        // Edits, deletes and clicks find a link where it is kept.
        let edited = Link {
            revision: 1,
            title: Some("edited".into()),
            ..link(&taken)
        };
        assert_eq!(
            store.replace(&edited).await.expect("replace"),
            ReplaceOutcome::Replaced
        );
        let found = store.get(&taken).await.expect("get").expect("stored");
        assert_eq!(found.title.as_deref(), Some("edited"));
        assert!(store.delete(&taken).await.expect("delete").is_some());
        assert_eq!(store.get(&taken).await.expect("get"), None);
        assert!(!places(&store).0.contains(first));
    }

    #[tokio::test]
    async fn creates_queued_behind_a_commit_share_the_next_one() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let go = store.hold_writer().await;
        let creates: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.insert(&link(&format!("c{i}")), None).await })
            })
            .collect();
        queued(&store, 64).await;
        go.send(()).expect("held");
        for create in creates {
            let outcome = create.await.expect("task").expect("insert");
            assert_eq!(outcome, InsertOutcome::Inserted);
        }
        // The hold's own commit, then one for all 64.
        let disk = store.disk().expect("embedded");
        assert_eq!((disk.commits, disk.committed_writes), (2, 65));
    }

    #[tokio::test]
    async fn a_store_from_before_the_split_moves_its_generated_links_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let key = b"the permutation key it was made with".to_vec();
        let generator = crate::code::CodeGenerator::new(&key);
        let generated: Vec<String> = (0..30).filter_map(|id| generator.code_for(id)).collect();
        // As a store of before: every link in `LINKS` by its code, no layout key, and the
        // permutation key the generator used stored beside them; and as an open of it cut
        // short, its first chunk already moved (the first 7 ids).
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("write");
            {
                let mut links = txn.open_table(LINKS).expect("table");
                let mut by_id = txn.open_table(LINKS_BY_ID).expect("table");
                let codes = generated.iter().map(String::as_str);
                for code in codes.chain(["alias-1", "zz"]) {
                    let bytes = encode(&link(code));
                    match generator.position(code) {
                        Some(id) if id < 7 => by_id.insert(id, bytes.as_slice()).map(drop),
                        _ => links.insert(code, bytes.as_slice()).map(drop),
                    }
                    .expect("row");
                }
                txn.open_table(SECRETS)
                    .expect("table")
                    .insert(crate::secrets::PERMUTATION_KEY, key.as_slice())
                    .expect("row");
            }
            txn.commit().expect("commit");
        }
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        let (by_id, by_code) = places(&store);
        assert_eq!(
            by_id,
            (0..30).collect::<Vec<u64>>(),
            "moved under their ids"
        );
        assert_eq!(by_code, ["alias-1", "zz"]);
        for code in generated
            .iter()
            .map(String::as_str)
            .chain(["alias-1", "zz"])
        {
            assert!(store.get(code).await.expect("get").is_some(), "{code}");
            assert_eq!(
                store.insert(&link(code), None).await.expect("insert"),
                InsertOutcome::CodeTaken,
                "{code}"
            );
        }
        let listed = store.list(&ListScope::All, None, 100).await.expect("list");
        assert_eq!(listed.len(), generated.len() + 2, "indexed on open too");
        store.close().await;
        drop(store);
        // Opened again: nothing moves twice, nothing is lost.
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        assert_eq!(places(&store).0.len(), generated.len());
    }

    #[tokio::test]
    async fn a_new_store_given_another_permutation_key_lays_its_links_out_by_it() {
        // As `kurz import` carries the source's key into a new store: in the same batch as a
        // create placed by the store's first key, and before any link.
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let source = crate::code::CodeGenerator::new(b"the source store's key");
        let go = store.hold_writer().await;
        let carried = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let key = b"the source store's key";
                store.put_secret(crate::secrets::PERMUTATION_KEY, key).await
            })
        };
        queued(&store, 1).await;
        let first = source.code_for(0).expect("not reserved");
        let create = {
            let (store, code) = (Arc::clone(&store), first.clone());
            tokio::spawn(async move { store.insert(&link(&code), None).await })
        };
        queued(&store, 2).await;
        go.send(()).expect("held");
        carried.await.expect("task").expect("put");
        create.await.expect("task").expect("insert");
        for id in 1..20 {
            if let Some(code) = source.code_for(id) {
                store.insert(&link(&code), None).await.expect("insert");
            }
        }
        let (by_id, _) = places(&store);
        assert_eq!(
            by_id,
            (0..20).collect::<Vec<u64>>(),
            "in the source's id order"
        );
        assert!(store.get(&first).await.expect("get").is_some());
        // With links stored, another key no longer moves the layout: they stay found.
        store
            .put_secret(crate::secrets::PERMUTATION_KEY, b"yet another key")
            .await
            .expect("put");
        assert!(store.get(&first).await.expect("get").is_some());
        let later = crate::code::CodeGenerator::new(b"yet another key");
        let code = later.code_for(0).expect("not reserved");
        store.insert(&link(&code), None).await.expect("insert");
        assert!(store.get(&code).await.expect("get").is_some());
        assert_eq!(places(&store).0[..20], (0..20).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn the_layout_key_is_fixed_on_first_open_and_a_later_key_only_loses_the_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let open = |key: &[u8]| {
            EmbeddedStore::open_with_cache(
                &path,
                Duration::from_secs(5),
                1 << 20,
                ClickLimits::default(),
                Some(key),
            )
            .expect("open")
        };
        let first = crate::code::CodeGenerator::new(b"configured key one");
        let store = open(b"configured key one");
        let one: Vec<String> = (0..20).filter_map(|id| first.code_for(id)).collect();
        for code in &one {
            store.insert(&link(code), None).await.expect("insert");
        }
        assert_eq!(places(&store).0, (0..20).collect::<Vec<u64>>());
        store.close().await;
        drop(store);
        // The operator sets another key: codes from it are found and kept unique, in places
        // of the first key's.
        let store = open(b"configured key two");
        let second = crate::code::CodeGenerator::new(b"configured key two");
        let two: Vec<String> = (0..20).filter_map(|id| second.code_for(id)).collect();
        for code in &two {
            store.insert(&link(code), None).await.expect("insert");
            assert_eq!(
                store.insert(&link(code), None).await.expect("insert"),
                InsertOutcome::CodeTaken
            );
        }
        for code in one.iter().chain(&two) {
            assert!(store.get(code).await.expect("get").is_some(), "{code}");
        }
        let (by_id, _) = places(&store);
        assert_eq!(by_id.len(), one.len() + two.len());
        assert_eq!(by_id[..20], (0..20).collect::<Vec<u64>>());
    }
}
