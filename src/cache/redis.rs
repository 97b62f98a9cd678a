//! The shared L2 cache on Redis (through a deadpool-redis pool), built so that Redis failing
//! is invisible to browsers:
//! - every call, connection included, is bounded by `cache.redis.timeout_ms`;
//! - consecutive failures open a circuit breaker, and while it is open the read path skips
//!   Redis entirely; after a cool-off one call probes, and success closes it;
//! - writes to Redis after a store read happen in the background, off the request;
//! - deletes publish the code on a channel; every instance evicts it from its L1. The listener
//!   reconnects by itself, and clears L1 after reconnecting (it may have missed messages).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use deadpool_redis::{Pool, Runtime};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::{Cached, LocalCache};
use crate::clock;
use crate::config::RedisSettings;
use crate::telemetry::Metrics;

/// GCRA in one script: the key holds the bucket's theoretical arrival time (ms, Redis time).
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((now - allow_at) / interval), new_tat - now}
"#;

/// The L2 cache. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    client: redis::Client,
    prefix: String,
    channel: String,
    timeout: Duration,
    ttl: Duration,
    negative_ttl: Duration,
    breaker: Breaker,
    metrics: Arc<Metrics>,
}

impl RedisCache {
    /// Builds the pool; no connection is made until the first call.
    pub fn new(settings: &RedisSettings, url: &str, metrics: Arc<Metrics>) -> Result<Self, String> {
        let timeout = settings.timeout;
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|e| e.to_string())?
            .max_size(settings.pool_size.get())
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| e.to_string())?;
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                client,
                prefix: settings.key_prefix.clone(),
                channel: format!("{}invalidate", settings.key_prefix),
                timeout,
                ttl: settings.ttl,
                negative_ttl: settings.negative_ttl,
                breaker: Breaker::new(settings.breaker_threshold.get(), settings.breaker_cool_off),
                metrics,
            }),
        })
    }

    /// One rate-limit decision for `key` (GCRA: one request every `interval_ms`, bursts of
    /// `burst`), atomically in Redis by Redis's clock, so every instance shares the bucket
    /// and their clocks do not matter. `[allowed (0/1), remaining or ms until allowed, ms
    /// until the bucket is full again]`; `None` when Redis cannot answer.
    pub async fn gcra(&self, key: &str, interval_ms: u64, burst: u64) -> Option<[i64; 3]> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));
        let key = format!("{}rl:{key}", self.inner.prefix);
        self.call(|mut conn| async move {
            SCRIPT
                .key(key)
                .arg(interval_ms)
                .arg(burst)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    /// Whether the circuit breaker is open (Redis is being skipped).
    pub fn is_skipped(&self) -> bool {
        self.inner.breaker.is_open()
    }

    fn key(&self, code: &str) -> String {
        format!("{}l:{code}", self.inner.prefix)
    }

    /// Runs one Redis call within the timeout, unless the breaker is open; `None` on any
    /// failure (which the breaker counts).
    async fn call<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = &*self.inner;
        if !inner.breaker.allow() {
            return None;
        }
        let attempt = async {
            let conn = inner.pool.get().await.map_err(|e| e.to_string())?;
            f(conn).await.map_err(|e| e.to_string())
        };
        let outcome = match tokio::time::timeout(inner.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("timed out after {:?}", inner.timeout)),
        };
        match outcome {
            Ok(value) => {
                if inner.breaker.on_success() {
                    tracing::info!("Redis answers again; circuit breaker closed");
                    inner.metrics.redis_breaker_open.set(0);
                }
                Some(value)
            }
            Err(e) => {
                inner.metrics.redis_errors.inc();
                if inner.breaker.on_failure() {
                    inner.metrics.redis_breaker_open.set(1);
                }
                if inner.breaker.should_log() {
                    tracing::warn!(error = %e, "Redis call failed; serving from the next tier");
                }
                None
            }
        }
    }

    /// The cached answer for `code`; `None` on a miss, a failure or an open breaker.
    pub async fn get(&self, code: &str) -> Option<Cached> {
        let key = self.key(code);
        let value: Option<String> = self
            .call(|mut conn| async move { conn.get(key).await })
            .await
            .flatten();
        let cached = value.as_deref().and_then(Cached::decode);
        match cached {
            Some(_) => self.inner.metrics.redis_hits.inc(),
            None => self.inner.metrics.redis_misses.inc(),
        }
        cached
    }

    /// Stores `value` in the background, with TTL = min(Redis TTL, time from `now_ms` to the
    /// link's expiry).
    pub fn put_in_background(&self, code: &str, value: Cached, now_ms: i64) {
        let ttl = match &value {
            Cached::Missing => self.inner.negative_ttl,
            Cached::Found(target) => match target.expires_at_ms {
                None => self.inner.ttl,
                Some(at) => {
                    let left = u64::try_from(at - now_ms).unwrap_or(0);
                    self.inner.ttl.min(Duration::from_millis(left))
                }
            },
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return;
        }
        let (this, key, encoded) = (self.clone(), self.key(code), value.encode());
        tokio::spawn(async move {
            this.call(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(encoded)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        });
    }

    /// Removes `code` from Redis and tells every instance to evict it from its L1.
    pub async fn invalidate(&self, code: &str) {
        let (key, channel, code) = (self.key(code), self.inner.channel.clone(), code.to_owned());
        let done = self
            .call(|mut conn| async move {
                redis::pipe()
                    .del(key)
                    .ignore()
                    .publish(channel, code)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if done.is_none() {
            tracing::warn!(
                "could not tell other instances about a delete through Redis; their caches \
                 forget the link within their TTL"
            );
        }
    }

    /// Warns unless Redis evicts by LRU or LFU, which the cache sizing depends on.
    pub async fn check_eviction_policy(&self) {
        let policy: Option<Vec<String>> = self
            .call(|mut conn| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match policy.as_deref() {
            Some([_, policy]) if policy.contains("lru") || policy.contains("lfu") => {
                tracing::info!(policy = %policy, "Redis eviction policy is fine");
            }
            Some([_, policy]) => tracing::warn!(
                policy = %policy,
                "Redis maxmemory-policy is not an LRU/LFU policy: when Redis fills up it will \
                 refuse writes or evict at random instead of dropping cold links; set \
                 maxmemory-policy allkeys-lru"
            ),
            _ => tracing::warn!(
                "could not read Redis's maxmemory-policy (CONFIG GET); make sure it is allkeys-lru"
            ),
        }
    }
}

/// Listens for invalidations from every instance and evicts those codes from `local`,
/// reconnecting after Redis restarts. Ends when the returned task is aborted.
pub fn start_invalidation_listener(redis: RedisCache, local: Arc<LocalCache>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let inner = &redis.inner;
        let mut backoff = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let subscribed = tokio::time::timeout(Duration::from_secs(2), async {
                let mut pubsub = inner.client.get_async_pubsub().await?;
                pubsub.subscribe(&inner.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match subscribed {
                Ok(Ok(pubsub)) => {
                    if connected_before {
                        // Deletes published while we were away were missed: start afresh.
                        local.invalidate_all();
                        tracing::info!("invalidation listener reconnected; local cache cleared");
                    }
                    connected_before = true;
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        if let Ok(code) = message.get_payload::<String>() {
                            inner.metrics.redis_invalidations.inc();
                            local.invalidate(&code);
                        }
                    }
                    tracing::warn!("invalidation listener lost Redis; reconnecting");
                }
                Ok(Err(e)) if inner.breaker.should_log() => {
                    tracing::warn!(error = %e, "invalidation listener cannot subscribe; retrying");
                }
                _ => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    })
}

/// Closed (all calls go through), open (calls skip Redis until the cool-off ends), then one
/// probe at a time until a call succeeds.
struct Breaker {
    threshold: u32,
    cool_off_ms: i64,
    failures: AtomicU32,
    /// 0 when closed; else when the next probe may go.
    open_until_ms: AtomicI64,
    last_log_ms: AtomicI64,
}

impl Breaker {
    fn new(threshold: u32, cool_off: Duration) -> Self {
        Self {
            threshold,
            cool_off_ms: i64::try_from(cool_off.as_millis()).unwrap_or(i64::MAX),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicI64::new(0),
            last_log_ms: AtomicI64::new(0),
        }
    }

    fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = clock::system_now_ms();
        // Past the cool-off: the caller that moves the deadline gets to probe; others skip.
        now >= until
            && self
                .open_until_ms
                .compare_exchange(
                    until,
                    now + self.cool_off_ms,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Records a success; `true` if this closed an open breaker.
    fn on_success(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until_ms.swap(0, Ordering::AcqRel) != 0
    }

    /// Records a failure; `true` if this opened the breaker.
    fn on_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.threshold {
            return false;
        }
        let was = self
            .open_until_ms
            .swap(clock::system_now_ms() + self.cool_off_ms, Ordering::AcqRel);
        if was == 0 {
            tracing::warn!(
                failures,
                "Redis keeps failing; circuit breaker open, redirects skip Redis"
            );
        }
        was == 0
    }

    /// At most one log line every 10 s about Redis failures.
    fn should_log(&self) -> bool {
        let now = clock::system_now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        now - last >= 10_000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_lets_one_probe_through() {
        let breaker = Breaker::new(3, Duration::from_millis(0));
        assert!(breaker.allow());
        assert!(!breaker.on_failure());
        assert!(!breaker.on_failure());
        assert!(breaker.on_failure(), "third failure opens it");
        // With no cool-off, the next caller probes at once.
        assert!(breaker.allow());
        assert!(!breaker.on_failure(), "already open");
        assert!(breaker.on_success(), "a success closes it");
        assert!(breaker.allow());
    }

    #[test]
    fn an_open_breaker_skips_calls_during_the_cool_off() {
        let breaker = Breaker::new(1, Duration::from_secs(60));
        assert!(breaker.on_failure());
        assert!(!breaker.allow());
        assert!(!breaker.allow());
    }
}
