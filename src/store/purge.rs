//! The background purge: idempotency records past their window and links expired for longer
//! than `store.purge_expired_after_s` leave the store, in rounds of at most `store.purge_batch`
//! rows of each kind, one write each, so the writes queued behind a round wait for no more.
//! Decided by the app's [`Clock`]. On DynamoDB, whose TTL removes both, a round does nothing.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{IDEMPOTENCY_WINDOW_MS, LinkStore};
use crate::clock::Clock;
use crate::config::StoreSettings;
use crate::telemetry::Metrics;

/// Purges every `store.purge_interval_s` (the first time at once), until aborted.
pub fn start_purging(
    store: Arc<dyn LinkStore>,
    clock: Clock,
    settings: &StoreSettings,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    let interval = settings.purge_interval;
    let batch = settings.purge_batch;
    let after_ms = i64::try_from(settings.purge_expired_after.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            purge_all(&*store, &clock, after_ms, batch, &metrics).await;
        }
    })
}

/// Rounds until one finds less than a batch of either kind (or the store fails: the next tick
/// tries again).
async fn purge_all(
    store: &dyn LinkStore,
    clock: &Clock,
    after_ms: i64,
    batch: usize,
    metrics: &Metrics,
) {
    loop {
        let now = clock.now_ms();
        let links_before = (after_ms > 0).then(|| now.saturating_sub(after_ms));
        let purged = store
            .purge(now - IDEMPOTENCY_WINDOW_MS, links_before, batch)
            .await;
        match purged {
            Ok(purged) => {
                metrics
                    .idempotency_pruned
                    .add(purged.idempotency_records as u64);
                metrics.links_purged.add(purged.links as u64);
                if purged.links > 0 {
                    tracing::info!(links = purged.links, "purged links expired long ago");
                }
                if purged.idempotency_records < batch && purged.links < batch {
                    return;
                }
                // Others' writes get in between rounds.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging expired data failed; trying again later");
                return;
            }
        }
    }
}
