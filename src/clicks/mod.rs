//! Click counting off the redirect path.
//!
//! A redirect only bumps an in-memory counter in its thread's own shard (a map behind a lock no
//! other redirect takes, on cache lines of its own), so worker threads never contend over clicks,
//! even on one hot link. A code keeps its slot across flushes while it is being clicked, so a hot
//! link never allocates on the redirect path; a slot idle for a whole interval is freed. A
//! background task drains the shards every flush interval, adds up each code's clicks from every
//! thread, and writes the aggregated deltas to the store in one call. A delta the store did not
//! take is kept exactly as it was, with its idempotency token, and sent again with the next flush:
//! a write that timed out but did land is then recognised by the store instead of counted twice.
//! While flushes fail, the flusher backs off: the wait doubles (with jitter) up to
//! `clicks.max_backoff_ms`, and each flush sends fewer deltas (half as many after each failure,
//! down to one), so a struggling store is not handed the same work at the same rate; once it takes
//! a flush, the next one sends everything again. Kept deltas are bounded; beyond the bound the
//! oldest are dropped and counted. So are clicks: at most `clicks.max_pending_clicks` are held
//! in memory (recorded, not yet written); a click beyond that is dropped and counted. Shards take
//! their share of that budget in chunks from one pool, so a redirect touches the shared pool
//! once per chunk, not per click. Shutdown flushes what is left. Worst case on a crash (kill -9):
//! what was pending, one interval of clicks while the store answers, and during a store outage
//! the whole backlog, never more than `clicks.max_pending_clicks`.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::analytics::aggregate::{Aggregator, rollup_for};
use crate::analytics::uniques::{self, DayKey};
use crate::analytics::{self, Headers, Rollup, Visits};
use crate::clock;
use crate::config::Backend;
use crate::store::{ClickDelta, FlushError, LinkStore};

pub mod events;
#[cfg(feature = "dynamodb")]
pub mod stream;

/// Where the flusher writes its deltas: the store itself, or the click stream
/// ([`stream::StreamSink`]).
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Takes `deltas`, each wholly or not at all; on failure, says which were not taken (sent
    /// again with the next flush, unchanged). An error with none of them left out means all
    /// were taken but not all sent on yet: the flusher backs off as after any failure.
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError>;

    /// At shutdown, after the last flush: sends on what the sink still keeps, if anything.
    async fn close(&self) {}
}

/// The store as the flusher's sink: each instance writes its own deltas.
pub struct StoreSink(pub Arc<dyn LinkStore>);

#[async_trait::async_trait]
impl Sink for StoreSink {
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        self.0.add_clicks(deltas).await
    }
}

/// What the embedded store writes at once, for the flusher's pacing: sixteen of its click
/// transactions.
const EMBEDDED_MAX_BATCH: usize = 32_768;
use crate::telemetry::trace::{Attribute, Kind};
use crate::telemetry::{self, Metrics, Tracer};

#[derive(Default)]
struct Pending {
    count: u64,
    last_click_ms: i64,
    /// (UTC hour, clicks counted without details); one entry except across an hour's end.
    /// Clicks with details are in their shard's [`Visits`] instead.
    hours: Vec<(u32, u64)>,
}

impl Pending {
    fn add(&mut self, now_ms: i64, with_details: bool) {
        self.count += 1;
        self.last_click_ms = self.last_click_ms.max(now_ms);
        if !with_details {
            add_hour(&mut self.hours, analytics::hour_of(now_ms), 1);
        }
    }

    /// Moves this slot's clicks into `into`, leaving the slot empty but allocated.
    fn move_into(&mut self, into: &mut Pending) {
        into.count += self.count;
        into.last_click_ms = into.last_click_ms.max(self.last_click_ms);
        for &(hour, n) in &self.hours {
            add_hour(&mut into.hours, hour, n);
        }
        self.count = 0;
        self.hours.clear();
    }
}

fn add_hour(hours: &mut Vec<(u32, u64)>, hour: u32, n: u64) {
    match hours.iter_mut().find(|(h, _)| *h == hour) {
        Some((_, count)) => *count += n,
        None => hours.push((hour, n)),
    }
}

/// Most room an emptied visit buffer keeps for the next drain (one per shard at most): several
/// times an interval's visits at the ceiling's rate, while the room a burst grew is freed.
const MAX_SPARE_VISIT_BYTES: usize = 4 << 20;

/// FxHash (as in rustc): a few instructions per word. Not resistant to chosen keys, which is
/// fine here: only codes of existing links are ever recorded.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// One thread's pending clicks, alone on its cache lines. Only the flusher's drain takes the
/// lock besides the thread itself.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<ShardState>);

#[derive(Default)]
struct ShardState {
    codes: HashMap<Box<str>, Pending, FxBuild>,
    /// Clicks this shard may still take, out of the recorder's budget.
    allowance: u64,
    /// Visits (clicks with details) this shard may still take, out of the visits' budget.
    visit_allowance: u64,
    /// Clicks with details waiting in this shard, in one buffer for all its codes (taken
    /// whole by a drain, which leaves an emptied one from an earlier drain in its place).
    visits: Visits,
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, ShardState> {
        // A poisoned shard only means another thread panicked mid-update of plain counters.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Clicks a shard takes from the budget at once (fewer when the budget is small).
const ALLOWANCE_CHUNK: u64 = 1_024;

/// A budget the shards take from in chunks, so that a redirect touches the shared counter
/// once per chunk, not per click: what shards hold plus what is left never exceeds the bound.
struct Budget {
    left: AtomicU64,
    chunk: u64,
}

impl Budget {
    fn unbounded() -> Self {
        Self {
            left: AtomicU64::new(u64::MAX),
            chunk: ALLOWANCE_CHUNK,
        }
    }

    fn of(max: u64) -> Self {
        Self {
            left: AtomicU64::new(max),
            // Small budgets in small chunks, so the shards' unused allowances stay a small part.
            chunk: (max / (4 * telemetry::STRIPES as u64)).clamp(1, ALLOWANCE_CHUNK),
        }
    }

    /// Takes up to one chunk; 0 when the budget is spent.
    fn take(&self) -> u64 {
        let chunk = self.chunk;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left - left.min(chunk))
            })
            .map_or(0, |left| left.min(chunk))
    }

    /// Gives back `n` that left memory.
    fn give_back(&self, n: u64) {
        let _ = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left.saturating_add(n))
            });
    }
}

/// Counts clicks in memory; cheap to call from every redirect.
pub struct ClickRecorder {
    shards: Box<[Shard]>,
    metrics: Arc<Metrics>,
    /// Clicks held in memory: pending, plus shards' allowances, plus what this has left,
    /// never exceed `clicks.max_pending_clicks`.
    budget: Budget,
    /// Likewise for visits waiting for the flusher (`analytics.max_pending_visits`).
    visit_budget: Budget,
    /// Delta tokens: a random per-process prefix and a counter.
    token_prefix: u64,
    next_token: AtomicU64,
}

impl ClickRecorder {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..telemetry::STRIPES).map(|_| Shard::default()).collect(),
            metrics,
            token_prefix: getrandom::u64()
                .unwrap_or_else(|_| clock::system_now_ms().unsigned_abs()),
            next_token: AtomicU64::new(0),
            budget: Budget::unbounded(),
            visit_budget: Budget::unbounded(),
        }
    }

    /// Holds at most `max` visits (clicks with details) in memory between flushes
    /// (`analytics.max_pending_visits`); past that, clicks are counted without details.
    pub fn with_max_pending_visits(mut self, max: usize) -> Self {
        self.visit_budget = Budget::of(max as u64);
        self
    }

    /// Holds at most `max` clicks in memory (`clicks.max_pending_clicks`); without this, no
    /// bound.
    pub fn with_max_pending_clicks(mut self, max: u64) -> Self {
        self.budget = Budget::of(max);
        self
    }

    /// Gives back the budget of `clicks` that left memory (written or dropped).
    fn release(&self, clicks: u64) {
        self.budget.give_back(clicks);
    }

    fn new_token(&self) -> String {
        use std::fmt::Write;
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        // Sized up front: one allocation a delta, where `format!` grows it twice.
        let mut token = String::with_capacity(32);
        let _ = write!(token, "{:016x}{n:016x}", self.token_prefix);
        token
    }

    /// Counts a click on `code` at `now_ms`, with the details of `visit` when there are any
    /// (analytics on for the link, no `Sec-GPC: 1`).
    pub fn record(&self, code: &str, now_ms: i64, visit: Option<Headers>) {
        let mut shard = self.shards[telemetry::stripe()].lock();
        if shard.allowance == 0 {
            shard.allowance = self.budget.take();
            if shard.allowance == 0 {
                drop(shard);
                self.metrics.clicks_recorded.inc();
                self.metrics.clicks_dropped.inc();
                return;
            }
        }
        shard.allowance -= 1;
        let visit = visit.filter(|_| {
            if shard.visit_allowance == 0 {
                shard.visit_allowance = self.visit_budget.take();
            }
            if shard.visit_allowance == 0 {
                self.metrics.analytics_visits_dropped.inc();
                return false;
            }
            shard.visit_allowance -= 1;
            true
        });
        let with_details = visit.is_some();
        if let Some(headers) = visit {
            shard.visits.push(code, now_ms, &headers);
        }
        let map = &mut shard.codes;
        match map.get_mut(code) {
            Some(pending) => pending.add(now_ms, with_details),
            None => {
                let mut pending = Pending::default();
                pending.add(now_ms, with_details);
                map.insert(code.into(), pending);
            }
        }
        drop(shard);
        self.metrics.clicks_recorded.inc();
        self.metrics.clicks_pending.inc();
    }

    /// Moves every pending click into `into`, adding up each code's clicks from every thread,
    /// and each shard's visits into `visits`, leaving in their place emptied buffers taken from
    /// `spare` (which the caller fills with the ones it is done with). Slots clicked since the
    /// last drain stay (empty) for the next interval; slots that were not are freed.
    fn drain_into<S: BuildHasher>(
        &self,
        into: &mut HashMap<Box<str>, Pending, S>,
        visits: &mut Vec<Visits>,
        spare: &mut Vec<Visits>,
    ) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            if !shard.visits.is_empty() {
                let emptied = spare.pop().unwrap_or_default();
                let full = std::mem::replace(&mut shard.visits, emptied);
                self.visit_budget.give_back(full.len() as u64);
                visits.push(full);
            }
            shard.codes.retain(|code, pending| {
                if pending.count == 0 {
                    return false;
                }
                pending.move_into(into.entry(code.clone()).or_default());
                true
            });
        }
    }

    #[cfg(test)]
    fn slots(&self) -> usize {
        self.shards.iter().map(|s| s.lock().codes.len()).sum()
    }
}

/// A fresh visitor key. Without the OS's randomness (never seen), the time: still a key no
/// other instance holds, which is all the fallback needs.
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        key[..8].copy_from_slice(&clock::system_now_ms().to_le_bytes());
    }
    key
}

/// How the flusher paces itself: every `interval` while flushes succeed; while they fail, a
/// wait that doubles (with jitter) up to `max_backoff`, and at most `max_batch` deltas per
/// flush, halved after each failure down to one.
#[derive(Debug, Clone, Copy)]
pub struct FlushPacing {
    pub interval: Duration,
    pub max_backoff: Duration,
    pub max_pending_codes: usize,
    /// What the store writes at once (the DynamoDB flush concurrency; for the embedded store,
    /// sixteen of its click transactions): while flushes fail, each sends at most this,
    /// halved once per failure.
    pub max_batch: usize,
}

impl FlushPacing {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            interval: settings.clicks.flush_interval,
            max_backoff: settings.clicks.max_backoff,
            max_pending_codes: settings.clicks.max_pending_codes,
            max_batch: match settings.store.backend {
                Backend::Dynamodb => settings.store.dynamodb.flush_concurrency.get(),
                Backend::Embedded => EMBEDDED_MAX_BATCH,
            },
        }
    }

    /// The wait after `failures` failed flushes in a row: the interval while they succeed,
    /// then `interval * 2^failures` capped at `max_backoff`, drawn from its upper half.
    fn wait(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        let ceiling = self
            .interval
            .saturating_mul(1 << failures.min(16))
            .min(self.max_backoff);
        let half = ceiling / 2;
        let jitter_ms = half.as_millis() as u64;
        let random = getrandom::u64().unwrap_or(0) % (jitter_ms + 1);
        (half + Duration::from_millis(random)).max(self.interval)
    }

    /// Most deltas sent in one flush after `failures` failed flushes in a row; `None` while
    /// they succeed (everything pending is sent).
    fn batch(&self, failures: u32) -> Option<usize> {
        (failures > 0).then(|| (self.max_batch >> failures.min(16)).max(1))
    }
}

/// Owns the flushing task; [`ClickFlusher::shutdown`] stops it after a final flush.
pub struct ClickFlusher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ClickFlusher {
    /// Flushes to `store` itself.
    pub fn start(
        recorder: Arc<ClickRecorder>,
        store: Arc<dyn LinkStore>,
        pacing: FlushPacing,
        aggregator: Aggregator,
    ) -> Self {
        let sink = Arc::new(StoreSink(Arc::clone(&store)));
        Self::start_with_sink(recorder, store, sink, pacing, aggregator, None)
    }

    /// Flushes to `sink`; `store` keeps the daily visitor keys. With a `tracer`, the flushes
    /// it samples are traces of their own (`clicks.flush`), the sink's calls their children.
    pub fn start_with_sink(
        recorder: Arc<ClickRecorder>,
        store: Arc<dyn LinkStore>,
        sink: Arc<dyn Sink>,
        pacing: FlushPacing,
        aggregator: Aggregator,
        tracer: Option<Arc<Tracer>>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let flusher = Flusher {
            recorder,
            store,
            sink,
            pacing,
            failures: 0,
            retry: Vec::new(),
            spare_visits: Vec::new(),
            fresh: HashMap::default(),
            aggregator,
            forgotten_before: None,
            collected_at_ms: 0,
            tracer,
        };
        let task = tokio::spawn(flusher.run(stopped));
        Self { stop, task }
    }

    /// Flushes what is pending and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// One code's clicks collected since its last delta was made.
#[derive(Default)]
struct Fresh {
    count: u64,
    last_click_ms: i64,
    hours: Vec<(u32, Rollup)>,
}

struct Flusher {
    recorder: Arc<ClickRecorder>,
    store: Arc<dyn LinkStore>,
    sink: Arc<dyn Sink>,
    pacing: FlushPacing,
    /// Flushes that failed in a row.
    failures: u32,
    /// Deltas not yet written, unchanged (same token), oldest first.
    retry: Vec<ClickDelta>,
    /// Clicks collected (and their visits classified) but not yet in a delta: while flushes
    /// back off, collection goes on every interval, so visits never pile up raw.
    fresh: HashMap<Box<str>, Fresh, FxBuild>,
    aggregator: Aggregator,
    /// Emptied visit buffers for the next drain to leave in the shards, so that recording
    /// visits allocates nothing once they have grown to an interval's worth.
    spare_visits: Vec<Visits>,
    /// The day before which visitor keys have been deleted from the store.
    forgotten_before: Option<u32>,
    /// When the last collection began (Unix ms): every click counted before it is in
    /// `fresh` or `retry`, or flushed.
    collected_at_ms: i64,
    tracer: Option<Arc<Tracer>>,
}

impl Flusher {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::Instant::now() + self.pacing.interval;
        let mut write_at = tick;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(tick) => {
                    self.collect().await;
                    let now = tokio::time::Instant::now();
                    if now >= write_at {
                        let answered = self.flush().await;
                        self.failures = if answered { 0 } else { self.failures.saturating_add(1) };
                        let wait = self.pacing.wait(self.failures);
                        let metrics = &self.recorder.metrics;
                        metrics.click_flush_failing.set(u64::from(self.failures));
                        let backoff = if self.failures == 0 { Duration::ZERO } else { wait };
                        metrics.click_flush_backoff_ms.set(backoff.as_millis() as u64);
                        write_at = tokio::time::Instant::now() + wait;
                    }
                    // At a steady rate: a slow round is followed by the next at once.
                    tick = (tick + self.pacing.interval).max(tokio::time::Instant::now());
                }
                _ = stopped.changed() => break,
            }
        }
        // At shutdown everything goes, however the last flushes went.
        self.collect().await;
        self.failures = 0;
        for attempt in 1..=3 {
            if self.flush().await && self.retry.is_empty() {
                break;
            }
            tracing::warn!(attempt, "final click flush failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let lost: u64 = self.retry.iter().map(|d| d.count).sum();
        if lost > 0 {
            tracing::error!(clicks = lost, "clicks not written at shutdown");
        }
        self.sink.close().await;
    }

    /// Drains the recorder's shards and folds their clicks into `fresh`: counts per hour, and
    /// each visit classified and added to its hour's rollup.
    async fn collect(&mut self) {
        let started = std::time::Instant::now();
        self.collected_at_ms = clock::system_now_ms();
        let mut drained: HashMap<_, _, FxBuild> = HashMap::default();
        let mut visits = Vec::new();
        self.recorder
            .drain_into(&mut drained, &mut visits, &mut self.spare_visits);
        let days: std::collections::BTreeSet<u32> = visits
            .iter()
            .flat_map(|v| v.iter().map(|(_, at, _)| clock::day_of(at)))
            .collect();
        for day in days {
            self.ensure_key(day).await;
        }
        for (code, pending) in drained {
            let fresh = self.fresh.entry(code).or_default();
            fresh.count += pending.count;
            fresh.last_click_ms = fresh.last_click_ms.max(pending.last_click_ms);
            for (hour, n) in pending.hours {
                rollup_for(&mut fresh.hours, hour).clicks += n;
            }
        }
        let mut bots = 0;
        for mut shard_visits in visits {
            for (code, at, visit) in shard_visits.iter() {
                // Drained with its count just above, so always there.
                if let Some(fresh) = self.fresh.get_mut(code) {
                    bots += u64::from(self.aggregator.add(&mut fresh.hours, at, &visit));
                }
            }
            shard_visits.clear();
            // An interval's worth is kept for the next drain; a burst's buffers are freed.
            if shard_visits.capacity_bytes() <= MAX_SPARE_VISIT_BYTES
                && self.spare_visits.len() < telemetry::STRIPES
            {
                self.spare_visits.push(shard_visits);
            }
        }
        let metrics = &self.recorder.metrics;
        metrics.analytics_bot_clicks.add(bots);
        metrics
            .click_collect_us
            .add(started.elapsed().as_micros() as u64);
    }

    /// Makes sure visits of `day` are hashed with the fleet's key for it (read from the store,
    /// made there by whichever instance asks first); while the store cannot say, with a key
    /// of this instance's own. Keys of days before yesterday are forgotten, here and in the
    /// store.
    async fn ensure_key(&mut self, day: u32) {
        if !self.aggregator.needs_key(day) {
            return;
        }
        let candidate = random_key();
        match self.store.secret(&uniques::key_name(day), &candidate).await {
            Ok(key) => self.aggregator.set_key(DayKey::new(day, &key), true),
            Err(e) if !self.aggregator.has_key(day) => {
                tracing::warn!(error = %e, day = %clock::format_day(day), "cannot read the day's visitor key; hashing visitors with this instance's own key until it can");
                self.recorder.metrics.analytics_local_keys.inc();
                self.aggregator.set_key(DayKey::new(day, &candidate), false);
            }
            Err(_) => {}
        }
        // Yesterday's key stays for clicks made just before midnight; older ones go.
        let keep_from = day.saturating_sub(1);
        self.aggregator.forget_before(keep_from);
        if self.forgotten_before.is_none_or(|f| f < keep_from) {
            let mut all_gone = true;
            for old in keep_from.saturating_sub(3)..keep_from {
                if let Err(e) = self.store.delete_secret(&uniques::key_name(old)).await {
                    tracing::warn!(error = %e, "cannot delete an old visitor key; trying again later");
                    all_gone = false;
                }
            }
            if all_gone {
                self.forgotten_before = Some(keep_from);
            }
        }
    }

    /// One flush; `true` when the store took what was sent (while backing off, that may be
    /// only part of what is pending; the rest waits, unchanged, for the next flush).
    async fn flush(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.retry);
        let fresh = std::mem::take(&mut self.fresh);
        batch.extend(fresh.into_iter().map(|(code, f)| ClickDelta {
            token: self.recorder.new_token(),
            code: code.into(),
            count: f.count,
            last_click_ms: f.last_click_ms,
            hours: f.hours,
        }));
        if batch.is_empty() {
            self.flushed_through();
            return true;
        }
        let send = self
            .pacing
            .batch(self.failures)
            .map_or(batch.len(), |n| n.min(batch.len()));
        let sending = self.sink.add_clicks(&batch[..send]);
        let result = match self.tracer.as_ref().and_then(|t| t.start(None, None)) {
            Some(trace) => {
                let result = trace.run(sending).await;
                let attributes = vec![Attribute::int("kurz.click_deltas", send as i64)];
                let error = result.as_ref().err().map(ToString::to_string);
                trace.finish("clicks.flush", Kind::Internal, attributes, error);
                result
            }
            None => sending.await,
        };
        let unapplied = match &result {
            Ok(()) => Vec::new(),
            Err(e) => e.unapplied.clone(),
        };
        let sent: u64 = batch[..send].iter().map(|d| d.count).sum();
        let failed: u64 = unapplied.iter().map(|&i| batch[i].count).sum();
        let metrics = &self.recorder.metrics;
        metrics.clicks_flushed.add(sent - failed);
        metrics.clicks_pending.sub(sent - failed);
        self.recorder.release(sent - failed);
        // Kept: what was sent and not written, then what was not sent; oldest first.
        let mut unapplied = unapplied.into_iter().peekable();
        self.retry = batch
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i >= send || unapplied.next_if_eq(i).is_some())
            .map(|(_, delta)| delta)
            .collect();
        match result {
            Ok(()) => {
                if self.retry.is_empty() {
                    self.flushed_through();
                }
                true
            }
            Err(e) => {
                let kept: u64 = self.retry.iter().map(|d| d.count).sum();
                metrics.click_flush_failures.inc();
                tracing::warn!(error = %e.error, deltas = self.retry.len(), clicks = kept, "click flush failed; keeping deltas for the next one");
                self.enforce_bound();
                false
            }
        }
    }

    /// Nothing is kept: every click counted before the last collection is flushed.
    fn flushed_through(&self) {
        let metrics = &self.recorder.metrics;
        metrics
            .clicks_flushed_through
            .set(self.collected_at_ms as f64 / 1000.0);
    }

    /// Drops the oldest kept deltas beyond the bound.
    fn enforce_bound(&mut self) {
        let excess = self
            .retry
            .len()
            .saturating_sub(self.pacing.max_pending_codes);
        if excess == 0 {
            return;
        }
        let dropped: u64 = self.retry.drain(..excess).map(|d| d.count).sum();
        let metrics = &self.recorder.metrics;
        metrics.clicks_dropped.add(dropped);
        metrics.clicks_pending.sub(dropped);
        self.recorder.release(dropped);
        tracing::error!(
            clicks = dropped,
            "dropped unflushed clicks: the store has failed for too long"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::faulty::{FaultyStore, link};

    /// Polls `done` every 5 ms until it holds; fails naming `what` (and what `seen` reports)
    /// after 30 s, far past what the flusher's 10-80 ms pacing needs.
    async fn until(what: &str, mut done: impl FnMut() -> bool, seen: impl Fn() -> String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 30 s ({})",
                seen()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn aggregator() -> Aggregator {
        use crate::analytics::classify::{Classifier, Countries};
        let countries = Countries::open(None).expect("no database");
        Aggregator::new(Classifier::new(Arc::new(countries)), 50)
    }

    fn pacing() -> FlushPacing {
        FlushPacing {
            interval: Duration::from_millis(10),
            max_backoff: Duration::from_millis(80),
            max_pending_codes: 1_000,
            max_batch: 16,
        }
    }

    #[test]
    fn waits_double_with_jitter_up_to_the_cap_and_batches_halve() {
        let pacing = pacing();
        assert_eq!(pacing.wait(0), pacing.interval);
        assert_eq!(pacing.batch(0), None);
        for (failures, ceiling) in [(1, 20), (2, 40), (3, 80), (4, 80), (30, 80)] {
            for _ in 0..50 {
                let wait = pacing.wait(failures).as_millis();
                assert!(
                    (ceiling / 2..=ceiling).contains(&wait),
                    "{failures}: {wait}"
                );
            }
        }
        let batches: Vec<_> = (1..7).filter_map(|f| pacing.batch(f)).collect();
        assert_eq!(batches, [8, 4, 2, 1, 1, 1]);
    }

    #[tokio::test]
    async fn a_failing_store_gets_smaller_flushes_and_every_click_lands_once_it_answers() {
        let (_dir, store) = FaultyStore::temporary();
        let codes: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        for code in &codes {
            store.insert(&link(code), None).await.expect("insert");
        }
        let metrics = Arc::new(Metrics::default());
        let recorder = Arc::new(ClickRecorder::new(Arc::clone(&metrics)));
        for code in &codes {
            recorder.record(code, 1_000, None);
            recorder.record(code, 2_000, None);
        }
        let counted = clock::system_now_ms() as f64 / 1000.0;
        store.fail_clicks.store(true, Ordering::SeqCst);
        let flusher = ClickFlusher::start(
            Arc::clone(&recorder),
            Arc::clone(&store) as Arc<dyn LinkStore>,
            pacing(),
            aggregator(),
        );
        // Wait for six failed flushes: the first sends all 40 deltas, then 8, 4, 2, 1, 1.
        let writes = || store.click_writes.lock().expect("lock").clone();
        until(
            "six failed flushes",
            || writes().len() >= 6,
            || format!("writes {:?}", writes()),
        )
        .await;
        assert!(metrics.click_flush_failing.get() >= 5);
        assert!(metrics.click_flush_backoff_ms.get() > 0);
        // Nothing written yet: no moment before which every click is flushed.
        assert_eq!(metrics.clicks_flushed_through.get(), 0.0);
        store.fail_clicks.store(false, Ordering::SeqCst);
        until(
            "all 80 clicks flushed once the store answers",
            || metrics.clicks_flushed.get() >= 80,
            || {
                format!(
                    "{} flushed, writes {:?}",
                    metrics.clicks_flushed.get(),
                    writes()
                )
            },
        )
        .await;
        // Every click is written: flushed through a collection after the last was counted.
        let through = metrics.clicks_flushed_through.get();
        assert!(through >= counted, "{through} < {counted}");
        let writes = writes();
        assert_eq!(writes[..6], [40, 8, 4, 2, 1, 1], "{writes:?}");
        // The store answered a probe: the next flush sends everything left.
        assert_eq!(*writes.last().expect("writes"), 39, "{writes:?}");
        flusher.shutdown().await;
        assert_eq!(metrics.click_flush_failing.get(), 0);
        assert_eq!(metrics.click_flush_backoff_ms.get(), 0);
        assert_eq!(metrics.clicks_pending.get(), 0);
        for code in &codes {
            let stats = store.stats(code).await.expect("stats").expect("link");
            assert_eq!(stats.total_clicks, 2, "{code}");
        }
    }

    #[tokio::test]
    async fn while_the_store_fails_clicks_held_in_memory_never_pass_the_bound() {
        let (_dir, store) = FaultyStore::temporary();
        store.insert(&link("hot"), None).await.expect("insert");
        store.fail_clicks.store(true, Ordering::SeqCst);
        let metrics = Arc::new(Metrics::default());
        let recorder =
            Arc::new(ClickRecorder::new(Arc::clone(&metrics)).with_max_pending_clicks(1_000));
        let flusher = ClickFlusher::start(
            Arc::clone(&recorder),
            Arc::clone(&store) as Arc<dyn LinkStore>,
            pacing(),
            aggregator(),
        );
        // One code (one delta per flush, far below max_pending_codes), many clicks, from
        // several threads, across several failed flushes.
        for round in 0..5 {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let recorder = Arc::clone(&recorder);
                    std::thread::spawn(move || {
                        for i in 0..1_000 {
                            recorder.record("hot", round * 10_000 + i, None);
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().expect("thread");
            }
            let writes = || store.click_writes.lock().expect("lock").len();
            let failed = writes();
            until(
                "another failed flush",
                || writes() > failed,
                || format!("round {round}: {failed} writes"),
            )
            .await;
            // What a kill -9 would lose right now.
            assert!(
                metrics.clicks_pending.get() <= 1_000,
                "{}",
                metrics.clicks_pending.get()
            );
        }
        assert_eq!(metrics.clicks_recorded.get(), 20_000);
        assert_eq!(
            metrics.clicks_pending.get() + metrics.clicks_dropped.get(),
            20_000
        );
        // Once the store answers, the backlog lands and there is room again.
        store.fail_clicks.store(false, Ordering::SeqCst);
        let pending = metrics.clicks_pending.get();
        until(
            "the backlog flushed once the store answers",
            || metrics.clicks_flushed.get() >= pending,
            || format!("{} of {pending} flushed", metrics.clicks_flushed.get()),
        )
        .await;
        recorder.record("hot", 99_000, None);
        assert_eq!(metrics.clicks_pending.get(), 1);
        flusher.shutdown().await;
        let stats = store.stats("hot").await.expect("stats").expect("link");
        assert_eq!(stats.total_clicks, pending + 1);
    }

    /// What a drain takes: each code's counts, and the shards' visits.
    fn drain(recorder: &ClickRecorder) -> (HashMap<Box<str>, Pending>, Vec<Visits>) {
        let (mut counts, mut visits) = (HashMap::new(), Vec::new());
        recorder.drain_into(&mut counts, &mut visits, &mut Vec::new());
        (counts, visits)
    }

    #[test]
    fn record_aggregates_per_code_and_hour() {
        let recorder = ClickRecorder::new(Arc::new(Metrics::default()));
        let day_ms = 86_400_000;
        recorder.record("abc", 10 * day_ms + 5, None);
        recorder.record("abc", 10 * day_ms + 9, None);
        recorder.record("abc", 11 * day_ms + 1, None);
        recorder.record("xyz", 10 * day_ms, None);
        let (drained, _) = drain(&recorder);
        let abc = &drained["abc"];
        assert_eq!(abc.count, 3);
        assert_eq!(abc.last_click_ms, 11 * day_ms + 1);
        assert_eq!(abc.hours, vec![(240, 2), (264, 1)]);
        assert_eq!(drained["xyz"].count, 1);
        let (again, _) = drain(&recorder);
        assert!(again.is_empty());
        // Clicked codes kept their slots for one more interval; idle ones are freed now.
        assert_eq!(recorder.slots(), 0);
        recorder.record("abc", 12 * day_ms, None);
        let (third, _) = drain(&recorder);
        assert_eq!(third["abc"].hours, vec![(288, 1)]);
        assert_eq!(recorder.slots(), 1, "a clicked code keeps its slot");
    }

    #[test]
    fn a_drain_takes_a_shards_visits_whole_and_leaves_an_emptied_buffer_in_their_place() {
        let recorder = ClickRecorder::new(Arc::new(Metrics::default()));
        let headers = Headers {
            user_agent: b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            referer: b"https://a.example/",
            country: b"DE",
            client_ip: std::net::IpAddr::from([192, 0, 2, 1]),
        };
        recorder.record("abc", 5, Some(headers));
        recorder.record("xyz", 6, Some(headers));
        let mut emptied = Visits::default();
        (0..100).for_each(|_| emptied.push("old", 0, &headers));
        emptied.clear();
        let room = emptied.capacity_bytes();
        let (mut counts, mut visits, mut spare) = (HashMap::new(), Vec::new(), vec![emptied]);
        recorder.drain_into(&mut counts, &mut visits, &mut spare);
        assert!(spare.is_empty(), "the emptied buffer went to the shard");
        let taken: Vec<_> = visits.iter().flat_map(|v| v.iter()).collect();
        let codes: Vec<_> = taken.iter().map(|(code, at, _)| (*code, *at)).collect();
        assert_eq!(codes, [("abc", 5), ("xyz", 6)]);
        assert_eq!(taken[0].2.referer(), "https://a.example/");
        assert_eq!((counts["abc"].count, counts["abc"].hours.len()), (1, 0));
        let shard = recorder.shards[telemetry::stripe()].lock();
        assert!(shard.visits.is_empty());
        assert_eq!(shard.visits.capacity_bytes(), room);
    }

    #[test]
    fn visits_past_their_bound_are_counted_without_details_until_a_drain_frees_room() {
        let metrics = Arc::new(Metrics::default());
        let recorder = ClickRecorder::new(Arc::clone(&metrics)).with_max_pending_visits(100);
        let day_ms = 86_400_000;
        // A flood of distinct user agents and referrers from one client.
        let flood = |from: u32| {
            for i in from..from + 1_000 {
                let agent = format!("Mozilla/5.0 (flood {i})");
                let referer = format!("https://site{i}.example/{}", "x".repeat(8_192));
                let headers = Headers {
                    user_agent: agent.as_bytes(),
                    referer: referer.as_bytes(),
                    country: b"DE",
                    client_ip: std::net::IpAddr::from([192, 0, 2, 1]),
                };
                recorder.record("abc", 10 * day_ms, Some(headers));
            }
        };
        flood(0);
        let (drained, visits) = drain(&recorder);
        let abc = &drained["abc"];
        assert_eq!(abc.count, 1_000, "every click is counted");
        let kept: Vec<_> = visits.iter().flat_map(|v| v.iter()).collect();
        assert_eq!(kept.len(), 100, "details for the bound's worth");
        assert!(
            kept.iter()
                .all(|(code, at, _)| (*code, *at) == ("abc", 10 * day_ms))
        );
        assert_eq!(abc.hours, vec![(240, 900)], "the rest counted without them");
        assert_eq!(metrics.analytics_visits_dropped.get(), 900);
        assert!(
            kept.iter()
                .all(|(_, _, v)| v.referer().len() <= analytics::Visit::MAX_HEADER),
            "an 8 KiB referrer is kept cut"
        );
        // The drained visits gave their room back.
        flood(1_000);
        let (again, visits) = drain(&recorder);
        assert_eq!(again["abc"].count, 1_000);
        assert_eq!(visits.iter().map(Visits::len).sum::<usize>(), 100);
        assert_eq!(metrics.analytics_visits_dropped.get(), 1_800);
    }

    #[test]
    fn each_thread_counts_in_its_own_shard_and_the_drain_adds_them_up() {
        let recorder = Arc::new(ClickRecorder::new(Arc::new(Metrics::default())));
        let day_ms = 86_400_000;
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let recorder = Arc::clone(&recorder);
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        recorder.record("hot", 10 * day_ms + i, None);
                    }
                    recorder.record(&format!("own{n}"), 10 * day_ms, None);
                    telemetry::stripe()
                })
            })
            .collect();
        let stripes: std::collections::HashSet<usize> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        // One slot for the hot code per thread's shard, and each thread's own code.
        assert_eq!(recorder.slots(), stripes.len() + 4);
        let (drained, _) = drain(&recorder);
        assert_eq!(drained["hot"].count, 40_000);
        assert_eq!(drained["hot"].hours, vec![(240, 40_000)]);
        assert_eq!(drained["hot"].last_click_ms, 10 * day_ms + 9_999);
        for n in 0..4 {
            assert_eq!(drained[format!("own{n}").as_str()].count, 1);
        }
    }
}
