//! The link service the HTTP handlers call: create (choosing a code and handling collisions in
//! one place), resolve through the cache, delete, statistics and click recording.

mod denylist;
mod ids;
mod labels;
mod list;
mod long_url;
pub mod transfer;

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use denylist::Denylist;
pub use ids::CodeSource;
pub use labels::{MAX_TAG_LEN, MAX_TITLE_LEN, normalise_tag, normalise_tags, normalise_title};
pub use list::{Cursor, LinkState, ListQuery, Page, TagCount, TagCounts};
pub use long_url::{CheckedUrl, UrlError, UrlPolicy, interface_addresses};

use crate::cache::{Cached, Fetched, LocalCache, RedisCache, Target};
use crate::clicks::ClickRecorder;
use crate::clock::Clock;
use crate::store::{
    Disabled, IdempotencyRecord, InsertOutcome, Link, LinkStats, LinkStore, ReplaceOutcome,
    StoreError,
};
use crate::telemetry::Metrics;

/// Generated-code attempts before a create gives up (each one a taken code).
const MAX_ATTEMPTS: u32 = 32;
/// Hash-code tries at 7 characters before growing to 8.
const HASH_NONCES_AT_7: u32 = 4;
/// Counter codes found taken in a row before a create switches to hash codes.
const COUNTER_COLLISIONS_IN_A_ROW: u32 = 8;

/// Length of the hash code at try `nonce`: 7 characters for the first few tries, then one more
/// every 4 tries (8, 9, …), so a run of taken codes cannot outlast the code space.
fn hash_len(nonce: u32) -> u32 {
    if nonce < HASH_NONCES_AT_7 {
        7
    } else {
        (8 + (nonce - HASH_NONCES_AT_7) / 4).min(crate::code::MAX_CODE_LEN as u32)
    }
}

/// A fresh random salt for a hash code, from the first try: nobody can compute the code a
/// create will get (and take it first), and two creates of one URL do not meet.
fn hash_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    if getrandom::fill(&mut salt).is_err() {
        // No system randomness (never seen on Linux): the time still varies per try.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        salt = nanos.to_be_bytes();
    }
    salt
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// The link as asked for, every field checked: `code` is the alias, or empty for a
    /// generated code; `created_at_ms` and `revision` are set by the create. Its URL is
    /// normalised (see [`UrlPolicy`]) and `owner` is the fingerprint of the key that asks.
    pub link: Link,
    /// The URL's host, for the denylist.
    pub host: String,
    /// The client's `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
}

impl NewLink {
    fn alias(&self) -> Option<&str> {
        Some(self.link.code.as_str()).filter(|code| !code.is_empty())
    }
}

/// A validated edit: each `Some` replaces that field.
#[derive(Debug, Clone, Default)]
pub struct LinkEdit {
    /// A checked destination and its host.
    pub url: Option<CheckedUrl>,
    /// `Some(None)` clears the expiry.
    pub expires_at_ms: Option<Option<i64>>,
    pub redirect_status: Option<u16>,
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub forward_query: Option<bool>,
    /// Whether its clicks record their details (see [`Link::analytics`]).
    pub analytics: Option<bool>,
    /// `Some(Some(reason))` disables, `Some(None)` enables.
    pub disabled: Option<Option<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("no such link")]
    Missing,
    /// `If-Match` named another version than the stored one.
    #[error("the link has changed since that version")]
    PreconditionFailed,
    #[error("this link was disabled by the admin; only the admin can enable it")]
    AdminDisabled,
    #[error("links to {domain} are not accepted here (policy: domain denylist)")]
    Denied { domain: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `ETag` of a link's current version: its creation time and revision (so a link deleted
/// and made again under the same alias never matches an old tag).
pub fn etag(link: &Link) -> String {
    format!("\"{}.{}\"", link.created_at_ms, link.revision)
}

/// Edits retried on a concurrent change before the edit gives up (without `If-Match`).
const EDIT_ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub struct Created {
    pub link: Link,
    /// True when an `Idempotency-Key` retry got the original link back.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("alias '{0}' is already taken")]
    AliasTaken(String),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error(
        "the link created under this Idempotency-Key has since been deleted; send the request \
         with a new key to create it again"
    )]
    IdempotentLinkGone,
    #[error("no free code found after {MAX_ATTEMPTS} attempts")]
    NoFreeCode,
    #[error("links to {domain} are not accepted here (policy: domain denylist)")]
    Denied { domain: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a redirect finds for a code.
#[derive(Debug, Clone)]
pub enum Resolved {
    Found(Target),
    Expired(Target),
    /// Disabled by an admin.
    Disabled,
    /// Its destination is under a denylisted domain.
    Blocked(Arc<str>),
    Missing,
}

impl Resolved {
    fn of(cached: Cached, now_ms: i64) -> Self {
        match cached {
            Cached::Found(t) if t.disabled => Resolved::Disabled,
            Cached::Found(t) => match &t.blocked_by {
                Some(domain) => Resolved::Blocked(Arc::clone(domain)),
                None if t.is_expired_at(now_ms) => Resolved::Expired(t),
                None => Resolved::Found(t),
            },
            Cached::Missing => Resolved::Missing,
        }
    }
}

pub struct LinkService {
    store: Arc<dyn LinkStore>,
    cache: Arc<LocalCache>,
    redis: Option<RedisCache>,
    codes: CodeSource,
    clicks: Arc<ClickRecorder>,
    metrics: Arc<Metrics>,
    clock: Clock,
    denylist: Arc<Denylist>,
}

impl LinkService {
    pub fn new(
        store: Arc<dyn LinkStore>,
        cache: Arc<LocalCache>,
        redis: Option<RedisCache>,
        codes: CodeSource,
        clicks: Arc<ClickRecorder>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            cache,
            redis,
            codes,
            clicks,
            metrics,
            clock,
            denylist: Arc::new(Denylist::empty()),
        }
    }

    /// Refuses and stops redirecting links to the domains `denylist` lists.
    pub fn with_denylist(mut self, denylist: Arc<Denylist>) -> Self {
        self.denylist = denylist;
        self
    }

    /// Reads the denylist file again and forgets every cached verdict (the next lookup of
    /// each link decides by the new list); the number of domains listed.
    pub fn reload_denylist(&self) -> Result<usize, String> {
        let count = self.denylist.reload()?;
        self.cache.invalidate_all();
        Ok(count)
    }

    /// The clock expiry and creation times are decided by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn store(&self) -> &dyn LinkStore {
        &*self.store
    }

    pub fn cache(&self) -> &LocalCache {
        &self.cache
    }

    /// Whether Redis is in use right now: `None` without Redis, `Some(false)` while the
    /// circuit breaker skips it.
    pub fn redis_in_use(&self) -> Option<bool> {
        self.redis.as_ref().map(|r| !r.is_skipped())
    }

    /// Creates a link. Every insert is put-if-absent: a taken alias is a conflict, a taken
    /// counter code takes the next id, a taken hash code the next nonce.
    #[tracing::instrument(skip_all, fields(alias = new.alias()))]
    pub async fn create(&self, new: NewLink) -> Result<Created, CreateError> {
        if let Some(domain) = self.denylist.covering(&new.host) {
            return Err(CreateError::Denied { domain });
        }
        let now = self.clock.now_ms();
        let mut idempotency = new.idempotency_key.as_ref().map(|key| IdempotencyRecord {
            key: format!("{}:{key}", new.link.owner.as_deref().unwrap_or("-")),
            fingerprint: fingerprint(&new.link),
            code: String::new(),
            created_at_ms: now,
        });
        let alias = new.alias().map(str::to_owned);
        let legacy = legacy_fingerprint(&new.link);
        let mut link = new.link;
        link.created_at_ms = now;
        link.revision = 0;
        link.disabled = None;

        if let Some(alias) = &alias {
            return match self.try_insert(&link, idempotency.as_mut()).await? {
                InsertOutcome::Inserted => {
                    // Someone may have looked the alias up before it existed: forget that
                    // "no such code" here and, with Redis, on every instance.
                    self.invalidate(alias).await;
                    // A link purged from under this alias may have left click counts.
                    if let Err(e) = self.store.forget_earlier_stats(&link).await {
                        tracing::warn!(error = %e, code = %alias, "the counts of an earlier link under this alias stay");
                    }
                    Ok(self.created(link))
                }
                InsertOutcome::CodeTaken => Err(CreateError::AliasTaken(alias.clone())),
                InsertOutcome::Replay(previous) => {
                    self.replay(previous, idempotency, &legacy, &link).await
                }
            };
        }

        let mut hash_nonce: Option<u32> = None;
        let mut counter_collisions = 0;
        for _ in 0..MAX_ATTEMPTS {
            link.code = match hash_nonce {
                None => match self.codes.next_code(&*self.store).await {
                    Ok(Some(code)) => code,
                    Ok(None) => continue, // a reserved word: take the next id
                    // A stalled or saturated store would fail the insert too: answer 503 now.
                    // (A timed-out lease wrote no link: plainly unavailable, no unknown outcome.)
                    Err(e @ StoreError::Timeout(_)) => {
                        return Err(StoreError::unavailable(format!("{e} leasing ids")).into());
                    }
                    Err(e @ (StoreError::Overloaded { .. } | StoreError::Full { .. })) => {
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot lease ids; using hash codes for this link");
                        self.metrics.hash_fallbacks.inc();
                        hash_nonce = Some(0);
                        match self.codes.hash_code(&link.url, &hash_salt(), 7) {
                            Some(code) => code,
                            None => continue, // a reserved word: the next salt
                        }
                    }
                },
                Some(nonce) => match self
                    .codes
                    .hash_code(&link.url, &hash_salt(), hash_len(nonce))
                {
                    Some(code) => code,
                    None => continue,
                },
            };
            match self.try_insert(&link, idempotency.as_mut()).await? {
                InsertOutcome::Inserted => return Ok(self.created(link)),
                InsertOutcome::Replay(previous) => {
                    return self.replay(previous, idempotency, &legacy, &link).await;
                }
                InsertOutcome::CodeTaken => {
                    self.metrics.code_collisions.inc();
                    tracing::debug!(code = %link.code, "generated code taken; trying another");
                    match &mut hash_nonce {
                        Some(nonce) => *nonce += 1,
                        None => {
                            counter_collisions += 1;
                            // Codes taken one after another (aliases squatting the counter's
                            // next codes): leave the counter for this link.
                            if counter_collisions >= COUNTER_COLLISIONS_IN_A_ROW {
                                self.metrics.hash_fallbacks.inc();
                                hash_nonce = Some(HASH_NONCES_AT_7);
                            }
                        }
                    }
                }
            }
        }
        Err(CreateError::NoFreeCode)
    }

    async fn try_insert(
        &self,
        link: &Link,
        idempotency: Option<&mut IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        let record = idempotency.map(|r| {
            r.code.clone_from(&link.code);
            &*r
        });
        let outcome = self.store.insert(link, record).await;
        if outcome.is_err() {
            self.metrics.store_errors.inc();
        }
        outcome
    }

    fn created(&self, link: Link) -> Created {
        self.metrics.links_created.inc();
        tracing::info!(code = %link.code, "link created");
        Created {
            link,
            replayed: false,
        }
    }

    /// The link the create `previous` recorded made, for a retry (`ours`, asking as `asked`'s
    /// owner) of that same request. Only that very link: the code may since have been deleted
    /// and taken again (by another key's alias, say), and then the earlier link is gone.
    async fn replay(
        &self,
        previous: IdempotencyRecord,
        ours: Option<IdempotencyRecord>,
        legacy: &str,
        asked: &Link,
    ) -> Result<Created, CreateError> {
        let same = ours.is_some_and(|o| {
            o.fingerprint == previous.fingerprint || previous.fingerprint == legacy
        });
        if !same {
            return Err(CreateError::IdempotencyMismatch);
        }
        match self.store.get(&previous.code).await? {
            Some(link)
                if link.created_at_ms == previous.created_at_ms && link.owner == asked.owner =>
            {
                Ok(Created {
                    link,
                    replayed: true,
                })
            }
            _ => Err(CreateError::IdempotentLinkGone),
        }
    }

    /// What the in-process cache knows of `code`, if anything: the hot path, no I/O.
    /// `now_ms` decides expiry (one clock read serves the whole redirect).
    pub fn resolve_cached(&self, code: &str, now_ms: i64) -> Option<Resolved> {
        match self.cache.get(code, now_ms) {
            Some(hit) => {
                self.metrics.cache_hits.inc();
                Some(Resolved::of(hit, now_ms))
            }
            None => {
                self.metrics.cache_misses.inc();
                None
            }
        }
    }

    /// Resolves a code the in-process cache could not answer: Redis (when configured, and
    /// not asked already: `fetched` is its entry when it came with the rate-limit decision),
    /// then the store. One load runs per code however many ask at once; a store answer is
    /// copied to Redis in the background.
    pub async fn resolve_uncached(
        &self,
        code: &str,
        now_ms: i64,
        fetched: Option<Fetched>,
    ) -> Result<Resolved, StoreError> {
        // Boxed: the miss path's state (Redis, store, coalescing) is large, and a redirect
        // answered from L1 should not carry it around.
        let loaded = Box::pin(
            self.cache
                .get_or_load(code, now_ms, self.load(code, fetched)),
        )
        .await;
        let cached = match loaded {
            Ok(cached) => cached,
            // Neither Redis nor the store answered: a link this instance knew (and was told of
            // no change to) still redirects, for `cache.local.stale_if_error_ms` past its TTL.
            Err(e) if e.is_transient() => match self.cache.get_stale(code, now_ms) {
                Some(target) => {
                    self.metrics.cache_stale_answers.inc();
                    Cached::Found(target)
                }
                None => return Err((*e).clone()),
            },
            Err(e) => return Err((*e).clone()),
        };
        Ok(Resolved::of(cached, now_ms))
    }

    /// Resolves a code: the in-process cache, else [`resolve_uncached`](Self::resolve_uncached).
    pub async fn resolve(&self, code: &str, now_ms: i64) -> Result<Resolved, StoreError> {
        match self.resolve_cached(code, now_ms) {
            Some(resolved) => Ok(resolved),
            None => self.resolve_uncached(code, now_ms, None).await,
        }
    }

    async fn load(&self, code: &str, fetched: Option<Fetched>) -> Result<Cached, StoreError> {
        let cached = self.load_shared(code, fetched).await?;
        // The denylist is this instance's own: applied after the shared tiers.
        Ok(match cached {
            Cached::Found(target) => match self.denylist.covering(target.host()) {
                Some(domain) => {
                    let mut blocked = target;
                    blocked.blocked_by = Some(domain.into());
                    Cached::Found(blocked)
                }
                None => Cached::Found(target),
            },
            missing => missing,
        })
    }

    /// What Redis or the store say about `code`.
    async fn load_shared(
        &self,
        code: &str,
        fetched: Option<Fetched>,
    ) -> Result<Cached, StoreError> {
        if let Some(redis) = &self.redis
            && let Some(hit) = redis.get(code, fetched).await
        {
            return Ok(hit);
        }
        let read_at = tokio::time::Instant::now();
        let cached = match self.store.get(code).await {
            Ok(Some(link)) => match Target::of(&link) {
                Some(target) => Cached::Found(target),
                None => {
                    return Err(StoreError::Corrupt {
                        code: link.code,
                        reason: "the stored URL is not a valid Location header".into(),
                    });
                }
            },
            Ok(None) => Cached::Missing,
            Err(e) => {
                self.metrics.store_errors.inc();
                return Err(e);
            }
        };
        if let Some(redis) = &self.redis {
            redis.put_in_background(code, cached.clone(), self.clock.now_ms(), read_at);
        }
        Ok(cached)
    }

    /// Counts a click; the redirect path's only write, and it stays in memory.
    pub fn record_click(&self, code: &str, now_ms: i64, visit: Option<crate::analytics::Headers>) {
        self.clicks.record(code, now_ms, visit);
    }

    /// The stored link, read from the store (not the cache) so the API is never stale.
    pub async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.store.get_latest(code).await
    }

    /// Deletes a link and its statistics, evicts it from this instance's cache at once, and
    /// (with Redis) from Redis and every other instance's cache.
    /// The link deleted, `None` when there was none.
    pub async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError> {
        let deleted = self.store.delete(code).await?;
        self.invalidate(code).await;
        if deleted.is_some() {
            tracing::info!(code, "link deleted");
        }
        Ok(deleted)
    }

    /// Applies `edit` to the link `code` if `may_edit` allows the caller to (else it is
    /// missing to them) and, with `if_match`, only while the link is still that version. Like
    /// a delete, the new version reaches every instance's cache at once (with Redis).
    pub async fn edit(
        &self,
        code: &str,
        if_match: Option<&str>,
        by_admin: bool,
        may_edit: impl Fn(&Link) -> bool,
        edit: &LinkEdit,
    ) -> Result<Link, EditError> {
        if let Some(url) = &edit.url
            && let Some(domain) = self.denylist.covering(&url.host)
        {
            return Err(EditError::Denied { domain });
        }
        for _ in 0..EDIT_ATTEMPTS {
            let current = self
                .store
                .get_latest(code)
                .await?
                .filter(|link| may_edit(link))
                .ok_or(EditError::Missing)?;
            if if_match.is_some_and(|tag| !etag_matches(tag, &current)) {
                return Err(EditError::PreconditionFailed);
            }
            let next = self.edited(current, edit, by_admin)?;
            match self.store.replace(&next).await? {
                ReplaceOutcome::Replaced => {
                    self.invalidate(code).await;
                    return Ok(next);
                }
                ReplaceOutcome::Missing => return Err(EditError::Missing),
                ReplaceOutcome::Conflict if if_match.is_some() => {
                    return Err(EditError::PreconditionFailed);
                }
                // Changed between the read and the write: apply the edit to the new version.
                ReplaceOutcome::Conflict => continue,
            }
        }
        Err(EditError::Store(StoreError::unavailable(
            "the link kept changing while it was edited; try again",
        )))
    }

    /// `current` with `edit` applied, one revision on.
    fn edited(&self, current: Link, edit: &LinkEdit, by_admin: bool) -> Result<Link, EditError> {
        let mut link = current;
        if let Some(url) = &edit.url {
            link.url.clone_from(&url.url);
        }
        if let Some(expires) = edit.expires_at_ms {
            link.expires_at_ms = expires;
        }
        if let Some(status) = edit.redirect_status {
            link.redirect_status = status;
        }
        if let Some(title) = &edit.title {
            link.title.clone_from(title);
        }
        if let Some(tags) = &edit.tags {
            link.tags.clone_from(tags);
        }
        if let Some(forward) = edit.forward_query {
            link.forward_query = forward;
        }
        if let Some(analytics) = edit.analytics {
            link.analytics = analytics;
        }
        if let Some(disabled) = &edit.disabled {
            if link.disabled.as_ref().is_some_and(|d| d.by_admin) && !by_admin {
                return Err(EditError::AdminDisabled);
            }
            link.disabled = disabled.as_ref().map(|reason| Disabled {
                reason: reason.clone(),
                at_ms: self.clock.now_ms(),
                by_admin,
            });
        }
        link.revision += 1;
        Ok(link)
    }

    /// Evicts `code` from this instance's cache and, with Redis, from Redis and every other
    /// instance's cache (also when its region's table stream shows it changed there).
    pub async fn invalidate(&self, code: &str) {
        self.cache.invalidate(code);
        if let Some(redis) = &self.redis {
            redis.invalidate(code).await;
        }
    }

    pub async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        self.store.stats(code).await
    }

    /// A link's rollups for the hours `from_hour..=to_hour` and the days they fall on; `None`
    /// when there is no such link.
    pub async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<crate::store::Analytics>, StoreError> {
        self.store.analytics(code, from_hour, to_hour).await
    }
}

/// Whether `tag` (an `If-Match` value: `*`, or a list of entity tags) names `link`'s version.
fn etag_matches(tag: &str, link: &Link) -> bool {
    let ours = etag(link);
    tag.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == ours || t.strip_prefix("W/") == Some(ours.as_str()))
}

/// What makes two create requests "the same" for `Idempotency-Key`: every field of the link
/// asked for (its serde form, so a new field counts with nothing written here), hashed.
fn fingerprint(asked: &Link) -> String {
    let mut h = Sha256::new();
    // Serialising a struct of plain fields to JSON cannot fail.
    let form = serde_json::to_vec(asked).unwrap_or_default();
    // `analytics`, the last field, joined the form later: left out while on (its default), so
    // a create retried across that upgrade still matches its record.
    const ANALYTICS_ON: &[u8] = b",\"analytics\":true}";
    match form.strip_suffix(ANALYTICS_ON) {
        Some(before) => {
            h.update(before);
            h.update(b"}");
        }
        None => h.update(&form),
    }
    format!("2:{}", hex::encode(h.finalize()))
}

/// The first form of [`fingerprint`], of records written before it (remembered for
/// [`IDEMPOTENCY_WINDOW_MS`](crate::store::IDEMPOTENCY_WINDOW_MS); this can go a day after
/// every instance runs the new form).
fn legacy_fingerprint(asked: &Link) -> String {
    let mut h = Sha256::new();
    h.update(asked.url.as_bytes());
    h.update([0]);
    h.update(asked.code.as_bytes());
    h.update([0]);
    h.update(asked.expires_at_ms.unwrap_or(i64::MIN).to_be_bytes());
    h.update(asked.redirect_status.to_be_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn a_link_with_analytics_on_has_the_fingerprint_of_its_form_before_the_switch() {
        let link = Link {
            code: "abc".into(),
            url: "https://example.com/".into(),
            ..Link::default()
        };
        let form: serde_json::Value = serde_json::to_value(&link).expect("json");
        assert_eq!(form["analytics"], true);
        let before = fingerprint(&link);
        // The form as it was: the struct's fields in order, without the switch.
        let old = serde_json::to_vec(&link).expect("json");
        let old = &old[..old.len() - b",\"analytics\":true}".len()];
        let mut h = Sha256::new();
        h.update(old);
        h.update(b"}");
        assert_eq!(before, format!("2:{}", hex::encode(h.finalize())));
        let off = Link {
            analytics: false,
            ..link
        };
        assert_ne!(fingerprint(&off), before, "off is part of what was asked");
    }
}
