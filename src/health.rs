//! What `/readyz` reports: whether this instance takes traffic, and how the dependencies it
//! shares with the rest of the fleet are doing.
//!
//! A load balancer routes on `/readyz`, so it turns 503 only for what is this instance's own:
//! draining after SIGTERM. A shared dependency being down (DynamoDB, Redis) is the same for
//! every instance; failing readiness for it would take the whole fleet out of rotation, and
//! cached links would stop redirecting. So dependency health is reported in the body and in
//! `/metrics` (`kurz_store_up`), probed in the background once a second: a request to
//! `/readyz` never costs a store call.
//!
//! The one exception to "shared dependencies do not fail readiness" is the reverse case: this
//! instance's own clock being off the fleet's reference (DynamoDB's, or Redis's), see [`skew`].

mod skew;

pub use crate::clock::TimeReference;
pub use skew::{CHECK_INTERVAL as CLOCK_CHECK_INTERVAL, ClockSkew, ClockState};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::store::LinkStore;
use crate::telemetry::Metrics;

/// How often the store is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The last probe's verdict on a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unknown,
    Ok,
    Unavailable,
    /// Answers reads, refuses writes: the embedded store's disk is full.
    ReadOnly,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Ok => "ok",
            Status::Unavailable => "unavailable",
            Status::ReadOnly => "read-only",
        }
    }
}

/// Shared by the handlers and the probe task.
pub struct Health {
    draining: AtomicBool,
    store: AtomicU8,
    metrics: Arc<Metrics>,
    /// Below this many free bytes on the store's disk, the log warns (0: never).
    free_space_warning: u64,
    /// Whether the last probe found free space below `free_space_warning`.
    low_on_space: AtomicBool,
    clock: ClockSkew,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            store: AtomicU8::new(Status::Unknown as u8),
            metrics,
            free_space_warning: 0,
            low_on_space: AtomicBool::new(false),
            clock: ClockSkew::new(Duration::ZERO),
        }
    }

    /// Past this skew from the reference clock, `/readyz` answers 503 (0: never).
    pub fn with_max_clock_skew(mut self, max: Duration) -> Self {
        self.clock = ClockSkew::new(max);
        self
    }

    /// What the last comparison of this instance's clock with the reference found.
    pub fn clock(&self) -> ClockState {
        self.clock.state()
    }

    /// Compares `clock` with `reference` once (see [`ClockSkew::measure`]).
    pub async fn measure_clock(&self, clock: &Clock, reference: &dyn TimeReference) -> Option<i64> {
        self.clock.measure(clock, reference, &self.metrics).await
    }

    /// Compares `clock` with `reference` every [`CLOCK_CHECK_INTERVAL`] until the handle is
    /// aborted (the first comparison after one interval: start-up makes one before serving).
    pub fn start_clock_checks(
        self: &Arc<Self>,
        clock: Clock,
        reference: Arc<dyn TimeReference>,
    ) -> JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CLOCK_CHECK_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                health.measure_clock(&clock, &*reference).await;
            }
        })
    }

    /// Warns (once, and once when it is over) while the store's disk has fewer free bytes.
    pub fn with_free_space_warning(mut self, bytes: u64) -> Self {
        self.free_space_warning = bytes;
        self
    }

    /// From now on `/readyz` answers 503, so the load balancer stops sending new requests.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.draining.set(1);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> Status {
        match self.store.load(Ordering::Relaxed) {
            x if x == Status::Ok as u8 => Status::Ok,
            x if x == Status::Unavailable as u8 => Status::Unavailable,
            x if x == Status::ReadOnly as u8 => Status::ReadOnly,
            _ => Status::Unknown,
        }
    }

    fn set_store(&self, status: Status) {
        let was = self.store.swap(status as u8, Ordering::Relaxed);
        self.metrics.store_up.set(u64::from(status == Status::Ok));
        // A full disk is logged by the store itself, when it starts and when it ends.
        let read_only = |s: u8| s == Status::ReadOnly as u8;
        if was != status as u8 && was != Status::Unknown as u8 && !read_only(was) {
            match status {
                Status::Ok => tracing::info!("the store answers again"),
                Status::ReadOnly => {}
                _ => tracing::warn!("the store does not answer; cached links keep redirecting"),
            }
        }
    }

    /// One probe of the store, as the background task makes it.
    pub async fn probe(&self, store: &dyn LinkStore) {
        let disk = store.disk();
        let status = match store.ping().await {
            Ok(()) if disk.is_some_and(|d| !d.writable) => Status::ReadOnly,
            Ok(()) => Status::Ok,
            Err(_) if disk.is_some_and(|d| !d.writable) => Status::ReadOnly,
            Err(_) => Status::Unavailable,
        };
        self.set_store(status);
        self.metrics
            .store_writable
            .set(u64::from(disk.is_none_or(|d| d.writable)));
        if let Some(disk) = disk {
            // Counts the store keeps since it opened, carried into counters that only grow.
            let catch_up = |counter: &crate::telemetry::Counter, now: u64| {
                counter.add(now.saturating_sub(counter.get()));
            };
            catch_up(&self.metrics.store_commits, disk.commits);
            catch_up(&self.metrics.store_committed_writes, disk.committed_writes);
        }
        if let Some(free) = disk.and_then(|d| d.free_bytes) {
            self.metrics.store_free_bytes.set(free);
            self.warn_on_low_space(free);
        }
    }

    fn warn_on_low_space(&self, free: u64) {
        if self.free_space_warning == 0 {
            return;
        }
        let low = free < self.free_space_warning;
        if self.low_on_space.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    threshold = self.free_space_warning,
                    "the store's disk is nearly full (store.free_space_warning_bytes); at full, creates answer 507"
                );
            } else {
                tracing::info!(free_bytes = free, "the store's disk has room again");
            }
        }
    }

    /// Probes the store once a second until the handle is aborted.
    pub fn start_probing(self: &Arc<Self>, store: Arc<dyn LinkStore>) -> JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PROBE_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                health.probe(&*store).await;
            }
        })
    }
}
