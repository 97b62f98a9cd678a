//! The link service the HTTP handlers call: create (choosing a code and handling collisions in
//! one place), resolve through the cache, delete, statistics and click recording.

mod ids;
mod url;

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use ids::CodeSource;
pub use url::{UrlError, validate_url};

use crate::cache::{Cached, LocalCache, RedisCache, Target};
use crate::clicks::ClickRecorder;
use crate::clock::Clock;
use crate::code::hash_code;
use crate::store::{IdempotencyRecord, InsertOutcome, Link, LinkStats, LinkStore, StoreError};
use crate::telemetry::Metrics;

/// Generated-code attempts before a create gives up (each one a taken code).
const MAX_ATTEMPTS: u32 = 32;
/// Hash-code nonces tried at 7 characters before growing to 8.
const HASH_NONCES_AT_7: u32 = 4;

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub url: String,
    pub alias: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub redirect_status: u16,
    /// Fingerprint of the API key that asks, if any.
    pub owner: Option<String>,
    /// The client's `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
}

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
    #[error("the link created under this Idempotency-Key has since been deleted")]
    IdempotentLinkGone,
    #[error("no free code found after {MAX_ATTEMPTS} attempts")]
    NoFreeCode,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a redirect finds for a code.
#[derive(Debug, Clone)]
pub enum Resolved {
    Found(Arc<Target>),
    Expired(Arc<Target>),
    Missing,
}

pub struct LinkService {
    store: Arc<dyn LinkStore>,
    cache: Arc<LocalCache>,
    redis: Option<RedisCache>,
    codes: CodeSource,
    clicks: Arc<ClickRecorder>,
    metrics: Arc<Metrics>,
    clock: Clock,
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
        }
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
    #[tracing::instrument(skip_all, fields(alias = new.alias.as_deref()))]
    pub async fn create(&self, new: NewLink) -> Result<Created, CreateError> {
        let now = self.clock.now_ms();
        let mut idempotency = new.idempotency_key.as_ref().map(|key| IdempotencyRecord {
            key: format!("{}:{key}", new.owner.as_deref().unwrap_or("-")),
            fingerprint: fingerprint(&new),
            code: String::new(),
            created_at_ms: now,
        });
        let mut link = Link {
            code: String::new(),
            url: new.url.clone(),
            created_at_ms: now,
            expires_at_ms: new.expires_at_ms,
            redirect_status: new.redirect_status,
            owner: new.owner.clone(),
        };

        if let Some(alias) = &new.alias {
            link.code.clone_from(alias);
            return match self.try_insert(&link, idempotency.as_mut()).await? {
                InsertOutcome::Inserted => Ok(self.created(link)),
                InsertOutcome::CodeTaken => Err(CreateError::AliasTaken(alias.clone())),
                InsertOutcome::Replay(previous) => self.replay(previous, idempotency).await,
            };
        }

        let mut hash_nonce: Option<u32> = None;
        for _ in 0..MAX_ATTEMPTS {
            link.code = match hash_nonce {
                None => match self.codes.next_code(&*self.store).await {
                    Ok(Some(code)) => code,
                    Ok(None) => continue, // a reserved word: take the next id
                    // A stalled store would stall the insert too: answer 503 now, not later.
                    Err(e @ StoreError::Timeout(_)) => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot lease ids; using hash codes for this link");
                        self.metrics.hash_fallbacks.inc();
                        hash_nonce = Some(0);
                        hash_code(&link.url, 0, 7)
                    }
                },
                Some(nonce) => {
                    let len = if nonce < HASH_NONCES_AT_7 { 7 } else { 8 };
                    hash_code(&link.url, nonce, len)
                }
            };
            match self.try_insert(&link, idempotency.as_mut()).await? {
                InsertOutcome::Inserted => return Ok(self.created(link)),
                InsertOutcome::Replay(previous) => return self.replay(previous, idempotency).await,
                InsertOutcome::CodeTaken => {
                    self.metrics.code_collisions.inc();
                    tracing::debug!(code = %link.code, "generated code taken; trying another");
                    hash_nonce = hash_nonce.map(|n| n + 1);
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

    async fn replay(
        &self,
        previous: IdempotencyRecord,
        ours: Option<IdempotencyRecord>,
    ) -> Result<Created, CreateError> {
        if ours.is_none_or(|o| o.fingerprint != previous.fingerprint) {
            return Err(CreateError::IdempotencyMismatch);
        }
        match self.store.get(&previous.code).await? {
            Some(link) => Ok(Created {
                link,
                replayed: true,
            }),
            None => Err(CreateError::IdempotentLinkGone),
        }
    }

    /// Resolves a code for a redirect: L1, then Redis (when configured), then the store. One
    /// load runs per code however many ask at once; a store answer is copied to Redis in the
    /// background.
    /// `now_ms` decides expiry (one clock read serves the whole redirect).
    pub async fn resolve(&self, code: &str, now_ms: i64) -> Result<Resolved, StoreError> {
        let cached = match self.cache.get(code) {
            Some(hit) => {
                self.metrics.cache_hits.inc();
                hit
            }
            None => {
                self.metrics.cache_misses.inc();
                // Boxed: the miss path's state (Redis, store, coalescing) is large, and a
                // redirect answered from L1 should not carry it around.
                Box::pin(self.cache.get_or_load(code, self.load(code)))
                    .await
                    .map_err(|e| (*e).clone())?
            }
        };
        Ok(match cached {
            Cached::Found(t) if t.is_expired_at(now_ms) => Resolved::Expired(t),
            Cached::Found(t) => Resolved::Found(t),
            Cached::Missing => Resolved::Missing,
        })
    }

    async fn load(&self, code: &str) -> Result<Cached, StoreError> {
        if let Some(redis) = &self.redis
            && let Some(hit) = redis.get(code).await
        {
            return Ok(hit);
        }
        let cached = match self.store.get(code).await {
            Ok(Some(link)) => match Target::of(&link) {
                Some(target) => Cached::Found(Arc::new(target)),
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
            redis.put_in_background(code, cached.clone(), self.clock.now_ms());
        }
        Ok(cached)
    }

    /// Counts a click; the redirect path's only write, and it stays in memory.
    pub fn record_click(&self, code: &str, now_ms: i64) {
        self.clicks.record(code, now_ms);
    }

    /// The stored link, read from the store (not the cache) so the API is never stale.
    pub async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.store.get(code).await
    }

    /// Deletes a link and its statistics, evicts it from this instance's cache at once, and
    /// (with Redis) from Redis and every other instance's cache.
    pub async fn delete(&self, code: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete(code).await?;
        self.cache.invalidate(code);
        if let Some(redis) = &self.redis {
            redis.invalidate(code).await;
        }
        if existed {
            tracing::info!(code, "link deleted");
        }
        Ok(existed)
    }

    pub async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        self.store.stats(code).await
    }
}

/// What makes two create requests "the same" for `Idempotency-Key`.
fn fingerprint(new: &NewLink) -> String {
    let mut h = Sha256::new();
    h.update(new.url.as_bytes());
    h.update([0]);
    h.update(new.alias.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(new.expires_at_ms.unwrap_or(i64::MIN).to_be_bytes());
    h.update(new.redirect_status.to_be_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests;
