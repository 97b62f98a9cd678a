//! What `/readyz` reports: whether this instance takes traffic, and how the dependencies it
//! shares with the rest of the fleet are doing.
//!
//! A load balancer routes on `/readyz`, so it turns 503 only for what is this instance's own:
//! draining after SIGTERM. A shared dependency being down (DynamoDB, Redis) is the same for
//! every instance; failing readiness for it would take the whole fleet out of rotation, and
//! cached links would stop redirecting. So dependency health is reported in the body and in
//! `/metrics` (`kurz_store_up`), probed in the background once a second: a request to
//! `/readyz` never costs a store call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

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
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Ok => "ok",
            Status::Unavailable => "unavailable",
        }
    }
}

/// Shared by the handlers and the probe task.
pub struct Health {
    draining: AtomicBool,
    store: AtomicU8,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            store: AtomicU8::new(Status::Unknown as u8),
            metrics,
        }
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
            _ => Status::Unknown,
        }
    }

    fn set_store(&self, status: Status) {
        let was = self.store.swap(status as u8, Ordering::Relaxed);
        self.metrics.store_up.set(u64::from(status == Status::Ok));
        if was != status as u8 && was != Status::Unknown as u8 {
            match status {
                Status::Ok => tracing::info!("the store answers again"),
                _ => tracing::warn!("the store does not answer; cached links keep redirecting"),
            }
        }
    }

    /// One probe of the store, as the background task makes it.
    pub async fn probe(&self, store: &dyn LinkStore) {
        let status = match store.ping().await {
            Ok(()) => Status::Ok,
            Err(_) => Status::Unavailable,
        };
        self.set_store(status);
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
