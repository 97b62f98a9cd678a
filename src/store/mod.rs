//! Durable storage of links, the id counter and click statistics, behind one small trait.
//!
//! Every insert is put-if-absent: the store is the single place where uniqueness of codes is
//! decided, and nothing ever overwrites an existing link. An `Ok` from `insert` means the link
//! is durable. Backends: `embedded` (a redb file, the default) and `dynamodb` (production).

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
mod embedded;
#[cfg(test)]
pub(crate) mod faulty;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
pub use embedded::EmbeddedStore;

use crate::config::{Backend, StoreSettings};
use crate::telemetry::Metrics;

/// A stored short link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub code: String,
    pub url: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub redirect_status: u16,
    /// Fingerprint of the API key that created it (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Set while an admin has disabled the link: it answers 410 and keeps its statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

/// Why and when a link was disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub at_ms: i64,
}

impl Link {
    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// Remembers which link a create with an `Idempotency-Key` made, so a retry gets it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The client's key, scoped by who sent it.
    pub key: String,
    /// SHA-256 of the request, to tell a retry from a different request reusing the key.
    pub fingerprint: String,
    pub code: String,
    pub created_at_ms: i64,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// A link with this code exists; nothing was written.
    CodeTaken,
    /// The idempotency key was used before (within the window); nothing was written.
    Replay(IdempotencyRecord),
}

/// Clicks on one code since the last flush.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClickDelta {
    /// Unique per delta and kept when the delta is retried, so that a write which timed out
    /// but did land is not applied twice (DynamoDB's `ClientRequestToken`, valid 10 minutes).
    pub token: String,
    pub code: String,
    pub count: u64,
    pub last_click_ms: i64,
    /// (UTC day number, clicks) pairs.
    pub days: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkStats {
    pub total_clicks: u64,
    pub last_click_ms: Option<i64>,
    /// (UTC day number, clicks), ascending by day.
    pub daily: Vec<(u32, u64)>,
}

/// The cause of a store failure as the backend's library reported it, kept typed for the logs.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused for now; worth retrying later.
    #[error("store unavailable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: Option<ErrorSource>,
    },
    #[error("store call timed out after {0:?}")]
    Timeout(Duration),
    /// Admission control refused the call at once: the store is answering all the calls it
    /// can. Nothing was sent.
    #[error(
        "store busy: no room for another {class} call (limit {limit} in flight); retry shortly"
    )]
    Overloaded { class: &'static str, limit: u32 },
    #[error("stored record for '{code}' is unreadable: {reason}")]
    Corrupt { code: String, reason: String },
    #[error("store failure: {reason}")]
    Internal {
        reason: String,
        #[source]
        source: Option<ErrorSource>,
    },
}

/// A click flush that did not fully apply: `unapplied` indexes the deltas to retry (those
/// before and after them are written and must not be written again).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} ({} click deltas not written)", unapplied.len())]
pub struct FlushError {
    pub error: StoreError,
    pub unapplied: Vec<usize>,
}

impl StoreError {
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn internal(reason: impl Into<String>) -> Self {
        Self::Internal {
            reason: reason.into(),
            source: None,
        }
    }

    /// Whether a client should retry (503) rather than see an internal error (500).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout(_) | Self::Overloaded { .. }
        )
    }
}

#[async_trait]
pub trait LinkStore: Send + Sync + 'static {
    /// Backend name for logs and readiness.
    fn backend(&self) -> &'static str;

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError>;

    /// Stores `link` unless its code exists (and records `idempotency`, unless its key was used
    /// within the window), atomically. `Ok(Inserted)` means durable.
    async fn insert(
        &self,
        link: &Link,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError>;

    /// Deletes a link and its statistics; `false` when there was none.
    async fn delete(&self, code: &str) -> Result<bool, StoreError>;

    /// Disables (`Some`) or re-enables (`None`) a link, keeping everything else; the updated
    /// link, or `None` when there is no such link.
    async fn set_disabled(
        &self,
        code: &str,
        disabled: Option<Disabled>,
    ) -> Result<Option<Link>, StoreError>;

    /// The secret stored under `name`, storing `candidate` first when there is none. Put-if-
    /// absent: every instance of a fleet ends up with the first one written.
    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Atomically advances the id counter by `count` and returns the leased ids.
    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError>;

    /// Adds click deltas. Deltas for codes that no longer exist are discarded. Each delta is
    /// applied wholly or not at all; on failure the error says which were not.
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError>;

    /// Statistics of an existing link, `None` when there is no such link.
    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError>;

    /// A cheap round trip proving the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finishes pending writes and releases the store. Later calls fail.
    async fn close(&self);
}

/// Opens the backend the settings name, checking that its schema exists. The store reports
/// its calls (admission, retries) in `metrics`.
#[cfg_attr(not(feature = "dynamodb"), allow(unused_variables))]
pub async fn open(
    settings: &StoreSettings,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn LinkStore>, StoreError> {
    match settings.backend {
        Backend::Embedded => {
            let store = EmbeddedStore::from_settings(settings)?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "dynamodb")]
        Backend::Dynamodb => {
            let store = DynamoStore::connect(settings, metrics).await?;
            store.verify_table().await?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "dynamodb"))]
        Backend::Dynamodb => Err(not_built()),
    }
}

/// Creates or updates what the configured backend needs (`kurz init`); safe to run again.
/// Returns what it did, one line each.
pub async fn init(settings: &StoreSettings) -> Result<Vec<String>, StoreError> {
    match settings.backend {
        Backend::Embedded => {
            let store = EmbeddedStore::from_settings(settings)?;
            store.close().await;
            Ok(vec![format!(
                "embedded store ready at {}",
                settings.path.display()
            )])
        }
        #[cfg(feature = "dynamodb")]
        Backend::Dynamodb => {
            let store = DynamoStore::connect(settings, Arc::new(Metrics::default())).await?;
            store.init().await
        }
        #[cfg(not(feature = "dynamodb"))]
        Backend::Dynamodb => Err(not_built()),
    }
}

#[cfg(not(feature = "dynamodb"))]
fn not_built() -> StoreError {
    StoreError::unavailable("this kurz was built without the `dynamodb` feature")
}
