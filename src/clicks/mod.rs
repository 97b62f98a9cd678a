//! Click counting off the redirect path.
//!
//! A redirect only bumps an in-memory counter in one of several lock shards (a short critical
//! section, no allocation once the code has been seen in this interval). A background task
//! drains the shards every flush interval and writes the aggregated deltas to the store in one
//! call. When the store fails, the deltas are kept for the next flush, up to a bound; beyond it
//! they are dropped and counted. Shutdown flushes what is left. Worst case on a crash: one
//! interval of clicks.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock;
use crate::store::{ClickDelta, LinkStore};
use crate::telemetry::Metrics;

const SHARDS: usize = 32;

#[derive(Default)]
struct Pending {
    count: u64,
    last_click_ms: i64,
    /// (UTC day, clicks); one entry except across midnight.
    days: Vec<(u32, u64)>,
}

impl Pending {
    fn add(&mut self, count: u64, last_click_ms: i64, day: u32) {
        self.count += count;
        self.last_click_ms = self.last_click_ms.max(last_click_ms);
        match self.days.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => *n += count,
            None => self.days.push((day, count)),
        }
    }

    fn merge(&mut self, other: Pending) {
        for (day, n) in other.days {
            self.add(n, other.last_click_ms, day);
        }
    }
}

type Shard = Mutex<HashMap<Box<str>, Pending>>;

/// Counts clicks in memory; cheap to call from every redirect.
pub struct ClickRecorder {
    shards: Box<[Shard]>,
    metrics: Arc<Metrics>,
}

impl ClickRecorder {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            metrics,
        }
    }

    pub fn record(&self, code: &str, now_ms: i64) {
        let mut hasher = DefaultHasher::new();
        code.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % SHARDS];
        let day = clock::day_of(now_ms);
        // A poisoned shard only means another thread panicked mid-update of plain counters.
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(code) {
            Some(pending) => pending.add(1, now_ms, day),
            None => {
                let mut pending = Pending::default();
                pending.add(1, now_ms, day);
                map.insert(code.into(), pending);
            }
        }
        drop(map);
        self.metrics.clicks_recorded.fetch_add(1, Ordering::Relaxed);
        self.metrics.clicks_pending.fetch_add(1, Ordering::Relaxed);
    }

    fn drain_into(&self, into: &mut HashMap<Box<str>, Pending>) {
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for (code, pending) in taken {
                into.entry(code).or_default().merge(pending);
            }
        }
    }
}

/// Owns the flushing task; [`ClickFlusher::shutdown`] stops it after a final flush.
pub struct ClickFlusher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ClickFlusher {
    pub fn start(
        recorder: Arc<ClickRecorder>,
        store: Arc<dyn LinkStore>,
        interval: Duration,
        max_pending_codes: usize,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let flusher = Flusher {
            recorder,
            store,
            max_pending_codes,
            carry: HashMap::new(),
        };
        let task = tokio::spawn(flusher.run(interval, stopped));
        Self { stop, task }
    }

    /// Flushes what is pending and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Flusher {
    recorder: Arc<ClickRecorder>,
    store: Arc<dyn LinkStore>,
    max_pending_codes: usize,
    /// Deltas drained but not yet written (kept across failed flushes).
    carry: HashMap<Box<str>, Pending>,
}

impl Flusher {
    async fn run(mut self, interval: Duration, mut stopped: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => { self.flush().await; }
                _ = stopped.changed() => break,
            }
        }
        for attempt in 1..=3 {
            if self.flush().await {
                return;
            }
            tracing::warn!(attempt, "final click flush failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let lost: u64 = self.carry.values().map(|p| p.count).sum();
        tracing::error!(clicks = lost, "clicks not written at shutdown");
    }

    /// One flush; `true` when nothing is left pending.
    async fn flush(&mut self) -> bool {
        self.recorder.drain_into(&mut self.carry);
        if self.carry.is_empty() {
            return true;
        }
        let deltas: Vec<ClickDelta> = self
            .carry
            .iter()
            .map(|(code, p)| ClickDelta {
                code: code.to_string(),
                count: p.count,
                last_click_ms: p.last_click_ms,
                days: p.days.clone(),
            })
            .collect();
        let clicks: u64 = deltas.iter().map(|d| d.count).sum();
        let metrics = &self.recorder.metrics;
        match self.store.add_clicks(&deltas).await {
            Ok(()) => {
                self.carry.clear();
                metrics.clicks_flushed.fetch_add(clicks, Ordering::Relaxed);
                metrics.clicks_pending.fetch_sub(clicks, Ordering::Relaxed);
                true
            }
            Err(e) => {
                metrics.click_flush_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, codes = deltas.len(), clicks, "click flush failed; keeping deltas for the next one");
                self.enforce_bound();
                false
            }
        }
    }

    fn enforce_bound(&mut self) {
        let excess = self.carry.len().saturating_sub(self.max_pending_codes);
        if excess == 0 {
            return;
        }
        let victims: Vec<Box<str>> = self.carry.keys().take(excess).cloned().collect();
        let mut dropped = 0;
        for code in victims {
            if let Some(p) = self.carry.remove(&code) {
                dropped += p.count;
            }
        }
        let metrics = &self.recorder.metrics;
        metrics.clicks_dropped.fetch_add(dropped, Ordering::Relaxed);
        metrics.clicks_pending.fetch_sub(dropped, Ordering::Relaxed);
        tracing::error!(
            clicks = dropped,
            "dropped unflushed clicks: the store has failed for too long"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_aggregates_per_code_and_day() {
        let recorder = ClickRecorder::new(Arc::new(Metrics::default()));
        let day_ms = 86_400_000;
        recorder.record("abc", 10 * day_ms + 5);
        recorder.record("abc", 10 * day_ms + 9);
        recorder.record("abc", 11 * day_ms + 1);
        recorder.record("xyz", 10 * day_ms);
        let mut drained = HashMap::new();
        recorder.drain_into(&mut drained);
        let abc = &drained["abc"];
        assert_eq!(abc.count, 3);
        assert_eq!(abc.last_click_ms, 11 * day_ms + 1);
        assert_eq!(abc.days, vec![(10, 2), (11, 1)]);
        assert_eq!(drained["xyz"].count, 1);
        let mut again = HashMap::new();
        recorder.drain_into(&mut again);
        assert!(again.is_empty());
    }
}
