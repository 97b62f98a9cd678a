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
mod purge;
pub mod regions;
pub mod rendezvous;
mod traced;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
pub use embedded::EmbeddedStore;
pub use purge::start_purging;
pub use traced::TracedStore;

use crate::analytics::Rollup;
use crate::config::{Backend, StoreSettings};
use crate::telemetry::Metrics;

/// A stored short link: the one declaration of a link's fields. Every other form of a link is
/// derived from this one through serde (the embedded store's record, the DynamoDB item, the
/// idempotency fingerprint, the export line), and tests hold the hand-written ones (the API view,
/// the cache's `Target`) to it. A field added here with `#[serde(default)]` reads from records
/// written before it existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub code: String,
    pub url: String,
    pub created_at_ms: i64,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    pub redirect_status: u16,
    /// A label for people (bounded by the API).
    #[serde(default)]
    pub title: Option<String>,
    /// Normalised labels (lowercase, at most [`MAX_TAGS`]).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether a redirect appends the request's query string to the destination. On for new
    /// links; links stored before the setting existed read as off (they never forwarded).
    #[serde(default)]
    pub forward_query: bool,
    /// Fingerprint of the API key that created it (never the key itself).
    #[serde(default)]
    pub owner: Option<String>,
    /// Set while an admin has disabled the link: it answers 410 and keeps its statistics.
    #[serde(default)]
    pub disabled: Option<Disabled>,
    /// Bumped by every edit: what an `ETag` names, and what a conditional edit compares.
    #[serde(default)]
    pub revision: u64,
    /// Whether its clicks record referrer, country, device, browser, OS and visitors (with
    /// `analytics.enabled`); off, they are only counted. On for links stored before it existed.
    #[serde(default = "analytics_on")]
    pub analytics: bool,
}

fn analytics_on() -> bool {
    true
}

/// Most tags one link carries.
pub const MAX_TAGS: usize = 16;

/// Why and when a link was disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub at_ms: i64,
    /// Disabled by the admin (a takedown), which the link's owner cannot undo. Links disabled
    /// before owners could disable their own were all disabled by the admin.
    #[serde(default = "by_admin_before_owners_could")]
    pub by_admin: bool,
}

fn by_admin_before_owners_could() -> bool {
    true
}

impl Default for Link {
    /// A plain 302 link that forwards queries, with nothing else set: struct literals start
    /// from it (`Link { code, url, ..Link::default() }`) so a new field touches none of them.
    fn default() -> Self {
        Self {
            code: String::new(),
            url: String::new(),
            created_at_ms: 0,
            expires_at_ms: None,
            redirect_status: 302,
            title: None,
            tags: Vec::new(),
            forward_query: true,
            owner: None,
            disabled: None,
            revision: 0,
            analytics: true,
        }
    }
}

impl Link {
    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Where this link sits in the newest-first order lists use.
    pub fn position(&self) -> ListPosition {
        ListPosition {
            created_at_ms: self.created_at_ms,
            code: self.code.clone(),
        }
    }
}

/// Sorts `links` newest first, the order every list answers in.
pub fn sort_newest_first(links: &mut [Link]) {
    links.sort_unstable_by(|a, b| (b.created_at_ms, &b.code).cmp(&(a.created_at_ms, &a.code)));
}

/// A place in the newest-first order of links: by creation time, then by code (descending),
/// so two links made in the same millisecond still have a strict order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListPosition {
    pub created_at_ms: i64,
    pub code: String,
}

/// Whose links a list reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    /// Links whose owner is exactly this (`None`: links nobody owns).
    Owner(Option<String>),
    /// Every link (the admin).
    All,
}

/// What importing a link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored, with its statistics.
    Imported,
    /// This very link (same code, creation time and URL) is there already: imported before.
    /// Its statistics were set again to the imported ones.
    AlreadyThere,
    /// Another link has this code; nothing was written.
    CodeTaken,
}

/// What a conditional replace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceOutcome {
    Replaced,
    /// No link with this code (or it was deleted and made again since it was read).
    Missing,
    /// The link was changed since it was read: its revision is no longer the expected one.
    Conflict,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Create,
    Read,
    Edit,
    Delete,
    /// Statistics of the key's own links.
    Stats,
}

impl Scope {
    pub const ALL: &[Scope] = &[
        Scope::Create,
        Scope::Read,
        Scope::Edit,
        Scope::Delete,
        Scope::Stats,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Create => "create",
            Scope::Read => "read",
            Scope::Edit => "edit",
            Scope::Delete => "delete",
            Scope::Stats => "stats",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

/// An API key as the store keeps it: never its secret, only the secret's SHA-256. Every form
/// of a stored key (the embedded record, the DynamoDB item, the export) is this through serde.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// What the links the key makes remember as their owner.
    pub id: String,
    /// A label for people.
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at_ms: i64,
    /// SHA-256 of the secret, hex.
    pub digest: String,
    /// SHA-256 of the secret a rotation replaced, hex: valid until `previous_valid_until_ms`.
    #[serde(default)]
    pub previous_digest: Option<String>,
    #[serde(default)]
    pub previous_valid_until_ms: Option<i64>,
    /// Set once the key is revoked; a revoked key stays revoked.
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
    /// Another owner its links may carry: for a key from `auth.api_keys`, the unkeyed
    /// fingerprint of links made before fingerprints were keyed.
    #[serde(default)]
    pub legacy_owner: Option<String>,
    /// Bumped by every change: what a conditional replace compares.
    #[serde(default)]
    pub revision: u64,
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

/// What one round of [`LinkStore::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub idempotency_records: usize,
    pub links: usize,
}

/// Clicks on one code since the last flush.
#[derive(Debug, Clone, Default)]
pub struct ClickDelta {
    /// Unique per delta and kept when the delta is retried, so that a write which timed out
    /// but did land is not applied twice (DynamoDB's `ClientRequestToken` for 10 minutes, then
    /// the token item the delta's transaction wrote, for 7 days).
    pub token: String,
    pub code: String,
    pub count: u64,
    pub last_click_ms: i64,
    /// (UTC hour number, the clicks of that hour), ascending by hour; their `clicks` add up
    /// to `count`.
    pub hours: Vec<(u32, Rollup)>,
}

impl ClickDelta {
    /// A delta of `count` clicks at `at_ms`, with no details.
    pub fn count_only(code: &str, count: u64, at_ms: i64) -> Self {
        Self {
            code: code.to_owned(),
            count,
            last_click_ms: at_ms,
            hours: vec![(crate::analytics::hour_of(at_ms), Rollup::count_only(count))],
            ..Self::default()
        }
    }

    /// (UTC day number, the day's rollup): the hours of each day merged, at most `cap` values
    /// per dimension.
    pub fn day_rollups(&self, cap: usize) -> Vec<(u32, Rollup)> {
        crate::analytics::day_rollups(&self.hours, cap)
    }
}

/// What the rollups are held to.
#[derive(Debug, Clone, Copy)]
pub struct ClickLimits {
    /// Values kept per dimension per rollup (`analytics.max_values_per_dimension`).
    pub max_values: usize,
    /// Hours hourly rollups are kept (`analytics.hourly_retention_days` x 24).
    pub retention_hours: u32,
}

impl Default for ClickLimits {
    fn default() -> Self {
        Self {
            max_values: 50,
            retention_hours: 30 * 24,
        }
    }
}

impl ClickLimits {
    pub fn of(settings: &crate::config::AnalyticsSettings) -> Self {
        Self {
            max_values: settings.max_values_per_dimension,
            retention_hours: settings.hourly_retention_days.saturating_mul(24),
        }
    }
}

/// A link's rollups over a period, as stored (see [`LinkStore::analytics`]).
#[derive(Debug, Clone, Default)]
pub struct Analytics {
    /// (UTC hour number, rollup), ascending; only hours with clicks, only within the hourly
    /// retention.
    pub hourly: Vec<(u32, Rollup)>,
    /// (UTC day number, rollup), ascending; only days with clicks.
    pub daily: Vec<(u32, Rollup)>,
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
    /// Another region, the home of what was asked for, did not answer or refused for now
    /// (a deployment in several regions: [`regions`]).
    #[error("home region {region} unavailable: {reason}")]
    Region { region: String, reason: String },
    /// Admission control refused the call at once: the store is answering all the calls it
    /// can. Nothing was sent.
    #[error(
        "store busy: no room for another {class} call (limit {limit} in flight); retry shortly"
    )]
    Overloaded { class: &'static str, limit: u32 },
    /// The disk holding the store is full: writes fail until space is freed; reads go on.
    #[error("the store cannot write: {reason}")]
    Full { reason: String },
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
            Self::Unavailable { .. }
                | Self::Timeout(_)
                | Self::Region { .. }
                | Self::Overloaded { .. }
                | Self::Full { .. }
        )
    }
}

/// How the disk under a store is doing (the embedded store's; DynamoDB has none to report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskState {
    /// False while writes fail for want of space.
    pub writable: bool,
    /// Free bytes on the store's file system (as an unprivileged process may use them).
    pub free_bytes: Option<u64>,
    /// Durable commits of the writer's batches since the store opened.
    pub commits: u64,
    /// Writes those commits carried: over `commits`, how many share one fsync.
    pub committed_writes: u64,
}

#[async_trait]
pub trait LinkStore: Send + Sync + 'static {
    /// Backend name for logs and readiness.
    fn backend(&self) -> &'static str;

    /// The disk under the store, for a store on local disk.
    fn disk(&self) -> Option<DiskState> {
        None
    }

    /// The store's clock, where it tells its time, for [`crate::health::ClockSkew`] when there
    /// is no Redis (DynamoDB: the `Date` of its answers; the embedded store is this machine's).
    fn time_reference(&self) -> Option<std::sync::Arc<dyn crate::clock::TimeReference>> {
        None
    }

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError>;

    /// As [`get`](Self::get), from where the link's writes are made: in a deployment of
    /// several regions, its home region's replica (this region's when the home cannot be
    /// reached), for the API's reads and the reads an edit is made from.
    async fn get_latest(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.get(code).await
    }

    /// Stores `link` unless its code exists (and records `idempotency`, unless its key was used
    /// within the window), atomically. `Ok(Inserted)` means durable.
    async fn insert(
        &self,
        link: &Link,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError>;

    /// Deletes a link and its statistics; the link deleted, `None` when there was none.
    async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError>;

    /// Replaces the stored link `link.code` with `link` (whose revision is the stored one's plus
    /// one), only if the stored one is still `revision - 1` of the link created at
    /// `link.created_at_ms`. Click statistics are kept.
    async fn replace(&self, link: &Link) -> Result<ReplaceOutcome, StoreError>;

    /// At most `limit` links in `scope`, newest first, strictly after `after` in that order
    /// (from the newest when `None`).
    async fn list(
        &self,
        scope: &ListScope,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError>;

    /// The secret stored under `name`, storing `candidate` first when there is none. Put-if-
    /// absent: every instance of a fleet ends up with the first one written.
    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// The secret stored under `name`, if any, storing nothing (a region whose secrets are
    /// decided in another one falls back on its replica's). Only DynamoDB keeps secrets a
    /// region would read this way; other stores answer that they cannot.
    async fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = name;
        Err(StoreError::internal(format!(
            "the {} store cannot read a secret without storing one",
            self.backend()
        )))
    }

    /// Deletes the secret `name` (nothing when there is none): the day's visitor key, once
    /// the day is over, is forgotten this way.
    async fn delete_secret(&self, name: &str) -> Result<(), StoreError>;

    /// Stores `secret` under `name`, replacing any there (`kurz import` carrying a store's
    /// keys to a new one that has no links yet).
    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError>;

    /// Every API key, revoked ones included, as stored now (a strongly consistent read).
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Stores `key` unless a key with its id exists; `false` (nothing written) when one does.
    async fn insert_key(&self, key: &StoredKey) -> Result<bool, StoreError>;

    /// Replaces the stored key `key.id` with `key`, only if the stored one is still revision
    /// `key.revision - 1`.
    async fn replace_key(&self, key: &StoredKey) -> Result<ReplaceOutcome, StoreError>;

    /// Stores a link exactly as given (code, owner, times, revision) with its statistics,
    /// unless another link has its code; the same link again sets its statistics to these
    /// (absolute values: importing twice counts nothing twice).
    async fn import(&self, link: &Link, stats: &LinkStats) -> Result<ImportOutcome, StoreError>;

    /// Atomically advances the id counter by `count` and returns the leased ids.
    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError>;

    /// Records here that region `region` has leased its counter up to `counter_end` (a
    /// deployment in several regions: a region tells the others of each lease, so that after it
    /// is lost and comes back it moves its counter past ids it handed out before its last
    /// writes replicated). Never lowers what is recorded. Stores that are never one region of
    /// several record nothing.
    async fn note_lease(&self, region: u8, counter_end: u64) -> Result<(), StoreError> {
        let _ = (region, counter_end);
        Ok(())
    }

    /// What [`note_lease`](Self::note_lease) recorded for `region`, if anything.
    async fn noted_lease(&self, region: u8) -> Result<Option<u64>, StoreError> {
        let _ = region;
        Ok(None)
    }

    /// Adds click deltas. Deltas for codes that no longer exist are discarded. Each delta is
    /// applied wholly or not at all; on failure the error says which were not.
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError>;

    /// Removes, in one write, at most `limit` idempotency records made before
    /// `records_before_ms` and at most `limit` links (with their statistics and list entries)
    /// that expired before `links_expired_before_ms` (`None`: none). A backend whose store
    /// removes these itself (DynamoDB's TTL) does nothing here.
    async fn purge(
        &self,
        records_before_ms: i64,
        links_expired_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        let _ = (records_before_ms, links_expired_before_ms, limit);
        Ok(Purged::default())
    }

    /// Removes click counts left under `link.code` by an earlier link (from days before `link`
    /// was made), after `link` was inserted under a code of its choosing. Only DynamoDB has
    /// any: its TTL removes an expired link's day items with the same due time as its item,
    /// but each in its own time, so some may still be there. Elsewhere nothing.
    async fn forget_earlier_stats(&self, link: &Link) -> Result<(), StoreError> {
        let _ = link;
        Ok(())
    }

    /// Statistics of an existing link, `None` when there is no such link.
    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError>;

    /// An existing link's rollups for the hours `from_hour..=to_hour` (those still kept) and
    /// the days they fall on; `None` when there is no such link.
    async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<Analytics>, StoreError>;

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
    open_with(settings, ClickLimits::default(), metrics).await
}

/// As [`open`], holding click rollups to `clicks` (from the `analytics` settings).
pub async fn open_with(
    settings: &StoreSettings,
    clicks: ClickLimits,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn LinkStore>, StoreError> {
    match settings.backend {
        Backend::Embedded => {
            let store = EmbeddedStore::from_settings(settings, clicks)?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "dynamodb")]
        Backend::Dynamodb => {
            let store = DynamoStore::connect(settings, clicks, metrics).await?;
            store.verify_table().await?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "dynamodb"))]
        Backend::Dynamodb => {
            let _ = metrics;
            Err(not_built())
        }
    }
}

/// Creates or updates what the configured backend needs (`kurz init`); safe to run again.
/// Returns what it did, one line each.
pub async fn init(settings: &StoreSettings) -> Result<Vec<String>, StoreError> {
    match settings.backend {
        Backend::Embedded => {
            let store = EmbeddedStore::from_settings(settings, ClickLimits::default())?;
            store.close().await;
            Ok(vec![format!(
                "embedded store ready at {}",
                settings.path.display()
            )])
        }
        #[cfg(feature = "dynamodb")]
        Backend::Dynamodb => {
            let store = DynamoStore::connect(
                settings,
                ClickLimits::default(),
                Arc::new(Metrics::default()),
            )
            .await?;
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
