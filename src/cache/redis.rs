//! The shared L2 cache on Redis, built so that a Redis hit costs one round trip and Redis
//! failing is invisible to browsers:
//! - connections are multiplexed and pooled (`cache.redis.pool_size`); checking one out makes
//!   no network call (a PING there would double the cost of every call). A connection a call
//!   found broken is not handed out again; when Redis drops one, every connection opened
//!   before it goes too and the call goes again on a new one, so a Redis restart fails no
//!   call;
//! - every call, connection included, is bounded by `cache.redis.timeout_ms`;
//! - consecutive failures open a circuit breaker, and while it is open the read path skips
//!   Redis entirely; after a cool-off one call probes, and success closes it;
//! - a lookup that must also take from the per-IP rate limit sends the limit's script and the
//!   `GET` in one pipeline ([`RedisCache::gcra`] with a code to fetch);
//! - writes to Redis after a store read happen in the background, off the request;
//! - deletes publish the code on a channel; every instance evicts it from its L1. The listener
//!   reconnects by itself, and clears L1 after reconnecting (it may have missed messages);
//! - takedowns cannot silently fail: a delete (or edit) leaves a tombstone in Redis for
//!   `cache.redis.tombstone_ttl_ms`, and a load writes what it read from the store only where
//!   there is none (one script), and only if it started within that window, so a load that
//!   read the store before the delete cannot put the link back. An invalidation that does not
//!   reach Redis is kept (at most `cache.redis.max_pending_invalidations`) and sent again until
//!   it lands; meanwhile this instance does not read those codes from Redis. Once it lands, its
//!   message evicts the code from every instance's L1, so a link removed while Redis was away
//!   stops redirecting everywhere within one retry of Redis answering again (and, while Redis
//!   stays away, within the L1 TTL, as other instances then reload from the store).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, RecycleError, RecycleResult};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncCommands, ErrorKind, RedisError, ServerErrorKind};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Cached, LocalCache};
use crate::clock;
use crate::config::RedisSettings;
use crate::telemetry::Metrics;
use crate::telemetry::trace::{self, Attribute};

/// GCRA in one script: the key holds the bucket's theoretical arrival time (ms, Redis time).
/// `ARGV[3]` 1 takes one when allowed, 0 only says whether it would be. The same arithmetic
/// decides without Redis (`limits::gcra`).
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
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
end
return {1, math.floor((now - allow_at) / interval), new_tat - now}
"#;

/// A load's write: the entry (KEYS[1]) is set only while the code has no tombstone (KEYS[2]),
/// so a delete that overtook the load wins. 1 if written.
const PUT_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// The invalidation message that means "forget every code" (no code looks like it).
const FORGET_ALL: &str = "*";
/// How often invalidations that did not reach Redis are sent again.
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// Pending invalidations sent in one pipeline.
const RETRY_BATCH: usize = 512;

/// The L2 cache. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    pool: managed::Pool<Manager>,
    client: redis::Client,
    prefix: String,
    channel: String,
    timeout: Duration,
    ttl: Duration,
    negative_ttl: Duration,
    tombstone_ttl: Duration,
    breaker: Breaker,
    metrics: Arc<Metrics>,
    pending: Pending,
}

/// Invalidations that did not reach Redis, kept until they do. Bounded: past `max` codes the
/// list is given up for one "forget everything" (every key of ours deleted from Redis, every
/// instance's L1 cleared) once Redis answers.
struct Pending {
    codes: Mutex<PendingCodes>,
    /// Codes kept, plus one while everything is to be forgotten: read without the lock by every
    /// Redis read, which skips Redis for a pending code.
    count: AtomicUsize,
    max: usize,
}

#[derive(Default)]
struct PendingCodes {
    codes: HashSet<String>,
    /// More than `max` piled up: every code is suspect until Redis is cleared.
    everything: bool,
}

/// A link's Redis entry, fetched in the round trip of a rate-limit decision, for
/// [`RedisCache::get`] to answer from instead of asking Redis again.
#[derive(Debug)]
pub struct Fetched(Option<String>);

impl Fetched {
    /// What the entry says: `Some(true)` a link, `Some(false)` no such code (the negative
    /// cache), `None` nothing Redis knows.
    pub fn holds_link(&self) -> Option<bool> {
        self.0
            .as_deref()
            .and_then(Cached::decode)
            .map(|cached| matches!(cached, Cached::Found(_)))
    }
}

impl RedisCache {
    /// Builds the pool; no connection is made until the first call.
    pub fn new(settings: &RedisSettings, url: &str, metrics: Arc<Metrics>) -> Result<Self, String> {
        let timeout = settings.timeout;
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let pool = managed::Pool::builder(Manager {
            client: client.clone(),
            generation: AtomicU64::new(0),
        })
        .max_size(settings.pool_size.get())
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                client,
                prefix: settings.key_prefix.clone(),
                channel: format!("{}invalidate", settings.key_prefix),
                timeout,
                ttl: settings.ttl,
                negative_ttl: settings.negative_ttl,
                tombstone_ttl: settings.tombstone_ttl,
                breaker: Breaker::new(
                    settings.breaker_threshold.get(),
                    settings.breaker_cool_off,
                    clock::Clock::system(),
                ),
                metrics,
                pending: Pending {
                    codes: Mutex::default(),
                    count: AtomicUsize::new(0),
                    max: settings.max_pending_invalidations,
                },
            }),
        })
    }

    /// One rate-limit decision for `key` (GCRA: one request every `interval_ms`, bursts of
    /// `burst`), atomically in Redis by Redis's clock, so every instance shares the bucket
    /// and their clocks do not matter: `[allowed (0/1), remaining or ms until allowed, ms
    /// until the bucket is full again]`; it takes one only when `take`. With `fetch`, that
    /// code's entry is read in the same round trip and handed back with the decision. `None`
    /// when Redis cannot answer.
    pub async fn gcra(
        &self,
        key: &str,
        interval_ms: i64,
        burst: i64,
        take: bool,
        fetch: Option<&str>,
    ) -> Option<([i64; 3], Option<Fetched>)> {
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));
        let mut invocation = SCRIPT.key(format!("{}rl:{key}", self.inner.prefix));
        invocation.arg(interval_ms).arg(burst).arg(u8::from(take));
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        if let Some(code) = fetch {
            pipe.get(self.key(code));
        }
        let (pipe, invocation) = (&pipe, &invocation);
        let operation = if fetch.is_some() {
            "redis.rate_limit_and_GET"
        } else {
            "redis.rate_limit"
        };
        self.call(operation, |mut conn| async move {
            let mut answer = pipe.query_async::<Vec<redis::Value>>(&mut conn).await;
            if answer
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
            {
                // Redis lost its scripts (a restart): load ours once, then ask again.
                invocation.load_async(&mut conn).await?;
                answer = pipe.query_async(&mut conn).await;
            }
            let mut values = answer?.into_iter();
            let verdict = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
            let fetched = values.next().map(redis::from_redis_value).transpose()?;
            Ok((verdict, fetched.map(Fetched)))
        })
        .await
    }

    /// Redis's clock (`TIME`), in Unix milliseconds; `None` when Redis cannot answer. The
    /// fleet's reference clock (see [`crate::health::ClockSkew`]).
    pub async fn time_ms(&self) -> Option<i64> {
        let (seconds, micros): (i64, i64) = self
            .call("redis.TIME", |mut conn| async move {
                redis::cmd("TIME").query_async(&mut conn).await
            })
            .await?;
        Some(seconds * 1000 + micros / 1000)
    }

    /// Whether the circuit breaker is open (Redis is being skipped).
    pub fn is_skipped(&self) -> bool {
        self.inner.breaker.is_open()
    }

    fn key(&self, code: &str) -> String {
        format!("{}l:{code}", self.inner.prefix)
    }

    /// The key that marks `code` as just deleted or edited.
    fn tombstone(&self, code: &str) -> String {
        format!("{}t:{code}", self.inner.prefix)
    }

    /// Runs one Redis call within the timeout, unless the breaker is open; `None` on any
    /// failure (which the breaker counts).
    /// Within a traced request the call is the span `redis.{operation}`.
    async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Option<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = &*self.inner;
        if !inner.breaker.allow() {
            return None;
        }
        let attempt = async {
            match tokio::time::timeout(inner.timeout, self.attempt(&f)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("timed out after {:?}", inner.timeout)),
            }
        };
        let outcome = trace::child(
            operation,
            || {
                vec![
                    Attribute::str("db.system.name", "redis"),
                    Attribute::str("db.operation.name", operation.trim_start_matches("redis.")),
                ]
            },
            attempt,
        )
        .await;
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

    /// `f` on a pooled connection. A connection whose call timed out (or was cut off by the
    /// timeout), or left it unusable, is not handed out again. One Redis dropped is retired
    /// with every connection opened before it (a restarted Redis dropped them all), and `f`
    /// runs once more on a new one, so a restart costs no call: the command either never
    /// left or is safe to repeat (reads, `SET`, a delete and its `PUBLISH`; a rate-limit
    /// decision may take a second token).
    async fn attempt<T, F, Fut>(&self, f: &F) -> Result<T, String>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let pool = &self.inner.pool;
        let mut retried = false;
        loop {
            let mut pooled = pool.get().await.map_err(|e| e.to_string())?;
            let conn: &mut Conn = &mut pooled;
            // Marked until the call returns, so a call the timeout cuts off leaves it marked.
            // `f` gets a clone: a handle on the same connection.
            conn.broken = true;
            let error = match f(conn.connection.clone()).await {
                Ok(value) => {
                    conn.broken = false;
                    return Ok(value);
                }
                Err(e) => e,
            };
            if error.is_timeout() {
                // It may never answer again: stays marked.
            } else if error.is_io_error() || error.is_connection_dropped() {
                pool.manager().retire_up_to(conn);
                if !retried {
                    retried = true;
                    continue;
                }
            } else if !error.is_unrecoverable_error() {
                // The command failed, not the connection.
                conn.broken = false;
            }
            return Err(error.to_string());
        }
    }

    /// The cached answer for `code`: `fetched` if its entry already came with a rate-limit
    /// decision, else Redis's; `None` on a miss, a failure or an open breaker.
    /// A code whose invalidation has not reached Redis yet is a miss: its entry may predate
    /// the delete.
    pub async fn get(&self, code: &str, fetched: Option<Fetched>) -> Option<Cached> {
        if self.is_pending(code) {
            self.inner.metrics.redis_misses.inc();
            return None;
        }
        let value = match fetched {
            Some(Fetched(value)) => value,
            None => {
                let key = &self.key(code);
                self.call("redis.GET", |mut conn| async move { conn.get(key).await })
                    .await
                    .flatten()
            }
        };
        let cached = value.as_deref().and_then(Cached::decode);
        match cached {
            Some(_) => self.inner.metrics.redis_hits.inc(),
            None => self.inner.metrics.redis_misses.inc(),
        }
        cached
    }

    /// Stores `value`, which a store read that began at `read_at` returned, in the background,
    /// with TTL = min(Redis TTL, time from `now_ms` to the link's expiry). Not written where a
    /// delete or edit left a tombstone, nor once the tombstone of a delete that came after the
    /// read could have expired (`cache.redis.tombstone_ttl_ms` after `read_at`, less one Redis
    /// timeout for the write's own trip).
    pub fn put_in_background(&self, code: &str, value: Cached, now_ms: i64, read_at: Instant) {
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
        if ttl_ms == 0 || self.is_pending(code) {
            return;
        }
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(PUT_SCRIPT));
        let (this, key, tombstone, encoded) = (
            self.clone(),
            self.key(code),
            self.tombstone(code),
            value.encode(),
        );
        // The write outlives the request; within a traced one it is still its child.
        tokio::spawn(trace::carried(async move {
            let inner = &*this.inner;
            if read_at.elapsed() + inner.timeout >= inner.tombstone_ttl {
                inner.metrics.redis_writes_refused.inc();
                return;
            }
            let mut invocation = SCRIPT.key(&key);
            invocation.key(&tombstone).arg(&encoded).arg(ttl_ms);
            let invocation = &invocation;
            let written: Option<i64> = this
                .call("redis.put", |mut conn| async move {
                    invocation.invoke_async(&mut conn).await
                })
                .await;
            if written == Some(0) {
                inner.metrics.redis_writes_refused.inc();
            }
        }));
    }

    /// Removes `code` from Redis, leaves its tombstone, and tells every instance to evict it
    /// from its L1. When Redis cannot be told, the invalidation is kept and sent again until it
    /// lands (see [`start_invalidation_listener`]).
    pub async fn invalidate(&self, code: &str) {
        let pipe = &self.invalidations(&[code]);
        let done = self
            .call("redis.invalidate", |mut conn| async move {
                pipe.query_async::<()>(&mut conn).await
            })
            .await;
        if done.is_none() {
            self.defer(code);
            tracing::warn!(
                code,
                "could not reach Redis to invalidate a link; kept, and sent again until Redis \
                 takes it (this instance does not read the code from Redis meanwhile)"
            );
        }
    }

    /// One pipeline that deletes each code's entry, leaves its tombstone and publishes it.
    fn invalidations(&self, codes: &[&str]) -> redis::Pipeline {
        let tombstone_ms = u64::try_from(self.inner.tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        for code in codes {
            pipe.cmd("SET")
                .arg(self.tombstone(code))
                .arg(1)
                .arg("PX")
                .arg(tombstone_ms)
                .ignore()
                .del(self.key(code))
                .ignore()
                .publish(&self.inner.channel, *code)
                .ignore();
        }
        pipe
    }

    fn pending(&self) -> MutexGuard<'_, PendingCodes> {
        self.inner
            .pending
            .codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `code` has an invalidation that has not reached Redis.
    fn is_pending(&self, code: &str) -> bool {
        self.inner.pending.count.load(Ordering::Acquire) != 0 && {
            let pending = self.pending();
            pending.everything || pending.codes.contains(code)
        }
    }

    /// Keeps the invalidation of `code` for [`retry_pending`](Self::retry_pending).
    fn defer(&self, code: &str) {
        let mut pending = self.pending();
        if pending.everything || pending.codes.contains(code) {
            return;
        }
        if pending.codes.len() >= self.inner.pending.max {
            pending.codes = HashSet::new();
            pending.everything = true;
            tracing::error!(
                max = self.inner.pending.max,
                "too many invalidations could not reach Redis; once it answers, every cached \
                 link is deleted from it and every instance clears its cache"
            );
        } else {
            pending.codes.insert(code.to_owned());
        }
        self.count_pending(&pending);
    }

    fn count_pending(&self, pending: &PendingCodes) {
        let count = pending.codes.len() + usize::from(pending.everything);
        self.inner.pending.count.store(count, Ordering::Release);
        self.inner
            .metrics
            .redis_pending_invalidations
            .set(count as u64);
    }

    /// Sends kept invalidations again (a batch of them); the ones Redis took are done.
    async fn retry_pending(&self) {
        if self.inner.pending.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let (everything, batch): (bool, Vec<String>) = {
            let pending = self.pending();
            let batch = pending.codes.iter().take(RETRY_BATCH).cloned().collect();
            (pending.everything, batch)
        };
        if everything {
            if self.forget_everything().await {
                let mut pending = self.pending();
                pending.everything = false;
                self.count_pending(&pending);
                tracing::info!("Redis cleared of cached links after lost invalidations");
            }
            return;
        }
        let codes: Vec<&str> = batch.iter().map(String::as_str).collect();
        let pipe = &self.invalidations(&codes);
        let done = self
            .call("redis.invalidate", |mut conn| async move {
                pipe.query_async::<()>(&mut conn).await
            })
            .await;
        if done.is_some() {
            let mut pending = self.pending();
            for code in &batch {
                pending.codes.remove(code);
            }
            self.count_pending(&pending);
            tracing::info!(codes = batch.len(), "kept invalidations reached Redis");
        }
    }

    /// Deletes every cached link of ours from Redis and tells every instance to clear its L1;
    /// `true` once done.
    async fn forget_everything(&self) -> bool {
        let (pattern, channel) = (&format!("{}l:*", self.inner.prefix), &self.inner.channel);
        let mut cursor: u64 = 0;
        loop {
            let step: Option<(u64, Vec<String>)> = self
                .call("redis.SCAN", |mut conn| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                })
                .await;
            let Some((next, keys)) = step else {
                return false;
            };
            if !keys.is_empty() {
                let keys = &keys;
                let deleted = self
                    .call("redis.UNLINK", |mut conn| async move {
                        redis::cmd("UNLINK")
                            .arg(keys)
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await;
                if deleted.is_none() {
                    return false;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.call("redis.PUBLISH", |mut conn| async move {
            conn.publish::<_, _, ()>(channel, FORGET_ALL).await
        })
        .await
        .is_some()
    }

    /// Warns unless Redis evicts by LRU or LFU, which the cache sizing depends on.
    pub async fn check_eviction_policy(&self) {
        let policy: Option<Vec<String>> = self
            .call("redis.CONFIG", |mut conn| async move {
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

#[async_trait::async_trait]
impl crate::clock::TimeReference for RedisCache {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn now_ms(&self) -> Option<i64> {
        self.time_ms().await
    }
}

/// Opens multiplexed connections and hands them out again without a network call. A
/// connection is known bad only once a call on it fails, so calls mark what they break (see
/// [`RedisCache::attempt`]).
struct Manager {
    client: redis::Client,
    /// Connections opened in an earlier generation than this are retired: bumped when Redis
    /// drops a connection, which it does to all of them at once when it restarts.
    generation: AtomicU64,
}

/// A pooled connection and what calls found out about it.
struct Conn {
    connection: MultiplexedConnection,
    generation: u64,
    /// A call on it timed out (it may never answer again) or left it unusable.
    broken: bool,
}

impl Manager {
    /// Retires `conn` and every connection opened before it, at their next checkout.
    fn retire_up_to(&self, conn: &Conn) {
        self.generation
            .fetch_max(conn.generation + 1, Ordering::Relaxed);
    }
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let generation = self.generation.load(Ordering::Relaxed);
        Ok(Conn {
            connection: self.client.get_multiplexed_async_connection().await?,
            generation,
            broken: false,
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &managed::Metrics) -> RecycleResult<RedisError> {
        if conn.broken || conn.generation < self.generation.load(Ordering::Relaxed) {
            return Err(RecycleError::message("a call found it broken"));
        }
        Ok(())
    }
}

/// Listens for invalidations from every instance and evicts those codes from `local`,
/// reconnecting after Redis restarts; and sends this instance's kept invalidations again until
/// Redis takes them. Both end when the returned tasks are aborted.
pub fn start_invalidation_listener(
    redis: RedisCache,
    local: Arc<LocalCache>,
) -> [JoinHandle<()>; 2] {
    let retrier = redis.clone();
    let retry = tokio::spawn(async move {
        let mut every = tokio::time::interval(RETRY_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            retrier.retry_pending().await;
        }
    });
    [listen(redis, local), retry]
}

fn listen(redis: RedisCache, local: Arc<LocalCache>) -> JoinHandle<()> {
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
                            if code == FORGET_ALL {
                                local.invalidate_all();
                            } else {
                                local.invalidate(&code);
                            }
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
    /// The system clock; one the test moves in the breaker's own tests.
    clock: clock::Clock,
    failures: AtomicU32,
    /// 0 when closed; else when the next probe may go.
    open_until_ms: AtomicI64,
    last_log_ms: AtomicI64,
}

impl Breaker {
    fn new(threshold: u32, cool_off: Duration, clock: clock::Clock) -> Self {
        Self {
            threshold,
            cool_off_ms: i64::try_from(cool_off.as_millis()).unwrap_or(i64::MAX),
            clock,
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
        let now = self.clock.now_ms();
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
            .swap(self.clock.now_ms() + self.cool_off_ms, Ordering::AcqRel);
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
        let now = self.clock.now_ms();
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
        let clock = clock::Clock::manual(1_000_000);
        let breaker = Breaker::new(3, Duration::from_secs(1), clock.clone());
        assert!(breaker.allow());
        assert!(!breaker.on_failure());
        assert!(!breaker.on_failure());
        assert!(breaker.allow(), "closed below the threshold");
        assert!(breaker.on_failure(), "third failure opens it");
        assert!(breaker.is_open());
        // Open: every call skips Redis for the cool-off.
        clock.advance(Duration::from_millis(999));
        assert!(!breaker.allow());
        // Past it: one caller probes, the others still skip.
        clock.advance(Duration::from_millis(1));
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "only one probe");
        assert!(!breaker.allow(), "only one probe");
        // The probe failed: still open (not opened anew), the next probe a cool-off later.
        assert!(!breaker.on_failure(), "already open");
        clock.advance(Duration::from_millis(999));
        assert!(!breaker.allow());
        clock.advance(Duration::from_millis(1));
        assert!(breaker.allow(), "the next probe");
        assert!(!breaker.allow());
        // The probe succeeded: closed, every caller goes to Redis again.
        assert!(breaker.on_success(), "a success closes it");
        assert!(!breaker.is_open());
        for _ in 0..3 {
            assert!(breaker.allow());
        }
        // And it counts failures from nothing again.
        assert!(!breaker.on_failure());
        assert!(!breaker.on_failure());
        assert!(breaker.on_failure());
    }

    #[tokio::test]
    async fn kept_invalidations_are_bounded_and_past_the_bound_every_code_is_suspect() {
        let settings = RedisSettings {
            max_pending_invalidations: 2,
            ..RedisSettings::default()
        };
        let metrics = Arc::new(Metrics::default());
        // Nothing listens there; no call is made here anyway.
        let redis = RedisCache::new(&settings, "redis://127.0.0.1:1", Arc::clone(&metrics))
            .expect("a pool");
        assert!(!redis.is_pending("a"));
        redis.defer("a");
        redis.defer("b");
        redis.defer("a");
        assert!(redis.is_pending("a") && redis.is_pending("b") && !redis.is_pending("c"));
        assert_eq!(metrics.redis_pending_invalidations.get(), 2);
        // Past the bound: the list goes, and no code is read from (or written to) Redis until
        // Redis has been cleared.
        redis.defer("c");
        assert!(redis.is_pending("c") && redis.is_pending("never-deleted"));
        assert!(redis.pending().codes.is_empty());
        assert_eq!(metrics.redis_pending_invalidations.get(), 1);
        assert_eq!(redis.get("never-deleted", None).await, None);
    }

    #[test]
    fn an_open_breaker_skips_calls_during_the_cool_off() {
        let breaker = Breaker::new(1, Duration::from_secs(60), clock::Clock::system());
        assert!(breaker.on_failure());
        assert!(!breaker.allow());
        assert!(!breaker.allow());
    }
}
