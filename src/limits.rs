//! Rate limits: GCRA buckets per client (anonymous creates, lookups of codes that exist
//! nowhere) and per API key (creates). A limit of N per minute lets a client spend N at once
//! and refills one every 60/N seconds. A client is an IPv4 address or an IPv6 prefix
//! (`limits.rate.ipv6_prefix_len`; the HTTP layer names the client).
//!
//! With Redis, one atomic script per decision makes a bucket fleet-wide; when Redis cannot
//! answer (or its breaker is open) the decision falls back to this instance's own buckets, so
//! the limiter never fails a request because of itself.
//!
//! Lookups are limited to stop scanning for codes, never to refuse a link that exists: an
//! uncached lookup only *peeks* at its client's bucket, in the round trip that reads its
//! code's Redis entry ([`RateLimits::peek_lookup`]), and takes from it only once the code
//! turns out to exist nowhere. A client whose bucket is empty still gets what the caches
//! hold; a store read for it comes out of one small budget per instance
//! ([`RateLimits::take_over_budget_read`]), so a scanner's cost to the store stays bounded.
//!
//! The local buckets hold one entry per client seen recently: refilled ones are pruned once
//! a minute, and past [`MAX_LOCAL_KEYS`] clients per limit the map is pruned at once, and
//! cleared if that does not free a quarter of it, so address rotation cannot grow it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cache::{Fetched, RedisCache};
use crate::clock::Clock;
use crate::config::RateSettings;
use crate::telemetry::Metrics;

/// Most clients one local limit keeps a bucket for.
pub const MAX_LOCAL_KEYS: usize = 100_000;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Creates without an API key, per client.
    CreatesPerIp,
    /// Creates per API key.
    CreatesPerKey,
    /// Lookups of codes that exist nowhere (and every anonymous store read of a link), per
    /// client.
    MissesPerIp,
    /// Failed authentications (a wrong API key or admin token), per client IP.
    AuthFailuresPerIp,
}

impl Bucket {
    /// The policy's name in the `RateLimit-Policy` and `RateLimit` headers.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::CreatesPerIp => "creates-per-ip",
            Bucket::CreatesPerKey => "creates-per-key",
            Bucket::MissesPerIp => "misses-per-ip",
            Bucket::AuthFailuresPerIp => "auth-failures-per-ip",
        }
    }
}

/// One decision, with what the `RateLimit` headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub bucket: Bucket,
    pub allowed: bool,
    /// The allowance per window.
    pub quota: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the allowance is whole again.
    pub reset_s: u64,
    /// Seconds until the next request is allowed (0 when allowed).
    pub retry_after_s: u64,
}

impl Verdict {
    /// `RateLimit-Policy: "name";q=N;w=60`
    pub fn policy_header(&self) -> String {
        format!("\"{}\";q={};w=60", self.bucket.name(), self.quota)
    }

    /// `RateLimit: "name";r=N;t=S`
    pub fn limit_header(&self) -> String {
        format!(
            "\"{}\";r={};t={}",
            self.bucket.name(),
            self.remaining,
            self.reset_s
        )
    }

    /// From a GCRA answer `[allowed (0/1), remaining or ms until allowed, ms until full]`,
    /// made by [`gcra`] here or by the same arithmetic in Redis.
    fn of(bucket: Bucket, quota: u32, [allowed, value, reset_ms]: [i64; 3]) -> Self {
        let seconds = |ms: i64| u64::try_from(ms).unwrap_or(0).div_ceil(1000);
        let allowed = allowed == 1;
        Verdict {
            bucket,
            allowed,
            quota,
            remaining: if allowed {
                u32::try_from(value).unwrap_or(0)
            } else {
                0
            },
            reset_s: seconds(reset_ms),
            retry_after_s: if allowed { 0 } else { seconds(value).max(1) },
        }
    }
}

/// GCRA, as the Redis script does it: `tat` is the bucket's theoretical arrival time (ms),
/// `None` for a full bucket. The answer as [`Verdict::of`] reads it, and the new `tat` when
/// `take` takes one.
fn gcra(
    tat: Option<i64>,
    now: i64,
    interval: i64,
    burst: i64,
    take: bool,
) -> ([i64; 3], Option<i64>) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let allow_at = new_tat - burst * interval;
    if allow_at > now {
        return ([0, allow_at - now, tat - now], None);
    }
    let answer = [1, (now - allow_at) / interval, new_tat - now];
    (answer, take.then_some(new_tat))
}

/// This instance's own buckets for one limit: client -> theoretical arrival time. Only
/// lookups the cache cannot answer and creates come here, so one lock is no contention.
struct LocalBuckets {
    tats: Mutex<HashMap<String, i64>>,
    max_keys: usize,
}

impl LocalBuckets {
    fn new(max_keys: usize) -> Self {
        Self {
            tats: Mutex::new(HashMap::new()),
            max_keys,
        }
    }

    fn tats(&self) -> MutexGuard<'_, HashMap<String, i64>> {
        self.tats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One decision; `true` as the second value when the map had to be cleared to stay
    /// within its cap.
    fn decide(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        burst: i64,
        take: bool,
    ) -> ([i64; 3], bool) {
        let mut tats = self.tats();
        let (answer, new_tat) = gcra(tats.get(key).copied(), now, interval, burst, take);
        let mut cleared = false;
        if let Some(new_tat) = new_tat {
            if tats.len() >= self.max_keys && !tats.contains_key(key) {
                // A refilled bucket is as good as none; if most are live, start afresh.
                tats.retain(|_, tat| *tat > now);
                if tats.len() > self.max_keys - self.max_keys / 4 {
                    tats.clear();
                    cleared = true;
                }
            }
            tats.insert(key.to_owned(), new_tat);
        }
        (answer, cleared)
    }

    fn prune(&self, now: i64) {
        let mut tats = self.tats();
        tats.retain(|_, tat| *tat > now);
        tats.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats().len()
    }
}

struct Limit {
    per_minute: NonZeroU32,
    local: LocalBuckets,
}

impl Limit {
    fn new(per_minute: u32, max_keys: usize) -> Option<Self> {
        Some(Limit {
            per_minute: NonZeroU32::new(per_minute)?,
            local: LocalBuckets::new(max_keys),
        })
    }

    fn interval_ms(&self) -> i64 {
        (60_000 / i64::from(self.per_minute.get())).max(1)
    }
}

pub struct RateLimits {
    creates_per_ip: Option<Limit>,
    creates_per_key: Option<Limit>,
    misses_per_ip: Option<Limit>,
    /// Store reads for clients whose misses budget is spent: as many per minute as one
    /// client's budget, for this whole instance (this instance's own, never Redis's).
    over_budget_reads: Option<Limit>,
    auth_failures_per_ip: Option<Limit>,
    redis: Option<RedisCache>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    pub fn new(
        settings: &RateSettings,
        redis: Option<RedisCache>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::with_max_keys(settings, redis, clock, metrics, MAX_LOCAL_KEYS)
    }

    fn with_max_keys(
        settings: &RateSettings,
        redis: Option<RedisCache>,
        clock: Clock,
        metrics: Arc<Metrics>,
        max_keys: usize,
    ) -> Self {
        Self {
            creates_per_ip: Limit::new(settings.creates_per_minute_per_ip, max_keys),
            creates_per_key: Limit::new(settings.creates_per_minute_per_key, max_keys),
            misses_per_ip: Limit::new(settings.misses_per_minute_per_ip, max_keys),
            over_budget_reads: Limit::new(settings.misses_per_minute_per_ip, 1),
            auth_failures_per_ip: Limit::new(settings.auth_failures_per_minute_per_ip, max_keys),
            redis,
            clock,
            metrics,
        }
    }

    fn limit(&self, bucket: Bucket) -> Option<&Limit> {
        match bucket {
            Bucket::CreatesPerIp => self.creates_per_ip.as_ref(),
            Bucket::CreatesPerKey => self.creates_per_key.as_ref(),
            Bucket::MissesPerIp => self.misses_per_ip.as_ref(),
            Bucket::AuthFailuresPerIp => self.auth_failures_per_ip.as_ref(),
        }
    }

    /// Takes one request from `key`'s bucket; `None` when this limit is off. A refusal is
    /// counted in the metrics.
    pub async fn check(&self, bucket: Bucket, key: &str) -> Option<Verdict> {
        let (verdict, _) = self.decide(bucket, key, true, None).await?;
        if !verdict.allowed {
            self.count_refusal(bucket);
        }
        Some(verdict)
    }

    /// Whether `key`'s misses bucket has one left, without taking it, before a lookup of
    /// `code` the in-process cache could not answer. When Redis decides, `code`'s Redis entry
    /// comes back from the same round trip, for
    /// [`LinkService::resolve_uncached`](crate::links::LinkService::resolve_uncached).
    pub async fn peek_lookup(&self, key: &str, code: &str) -> (Option<Verdict>, Option<Fetched>) {
        match self
            .decide(Bucket::MissesPerIp, key, false, Some(code))
            .await
        {
            Some((verdict, fetched)) => (Some(verdict), fetched),
            None => (None, None),
        }
    }

    /// One store read for a lookup by a client whose misses budget is spent, from this
    /// instance's budget for them all; `true` when it may go.
    pub fn take_over_budget_read(&self) -> bool {
        let Some(limit) = &self.over_budget_reads else {
            return true;
        };
        let burst = i64::from(limit.per_minute.get());
        let now = self.clock.now_ms();
        let ([allowed, ..], _) = limit
            .local
            .decide("", now, limit.interval_ms(), burst, true);
        allowed == 1
    }

    /// Counts a request refused with 429 by `bucket`.
    pub fn count_refusal(&self, bucket: Bucket) {
        match bucket {
            Bucket::MissesPerIp => self.metrics.rate_limited_misses.inc(),
            Bucket::AuthFailuresPerIp => self.metrics.rate_limited_auth_failures.inc(),
            _ => self.metrics.rate_limited_creates.inc(),
        }
    }

    /// The decision (taking one when `take`), with `fetch`'s Redis entry when Redis made it.
    async fn decide(
        &self,
        bucket: Bucket,
        key: &str,
        take: bool,
        fetch: Option<&str>,
    ) -> Option<(Verdict, Option<Fetched>)> {
        let limit = self.limit(bucket)?;
        let quota = limit.per_minute.get();
        let burst = i64::from(quota);
        if let Some(redis) = &self.redis {
            let key = format!("{}:{key}", bucket.name());
            match redis
                .gcra(&key, limit.interval_ms(), burst, take, fetch)
                .await
            {
                Some((answer, fetched)) => {
                    return Some((Verdict::of(bucket, quota, answer), fetched));
                }
                None => self.metrics.rate_limit_local_fallbacks.inc(),
            }
        }
        let now = self.clock.now_ms();
        let (answer, cleared) = limit
            .local
            .decide(key, now, limit.interval_ms(), burst, take);
        if cleared {
            self.metrics.rate_limit_local_resets.inc();
            tracing::warn!(
                bucket = bucket.name(),
                max = MAX_LOCAL_KEYS,
                "more clients than the local rate limiter keeps buckets for: all forgotten"
            );
        }
        Some((Verdict::of(bucket, quota, answer), None))
    }

    /// Forgets local buckets that have refilled (they would allow a whole burst anyway).
    pub fn prune(&self) {
        let now = self.clock.now_ms();
        for limit in [
            &self.creates_per_ip,
            &self.creates_per_key,
            &self.misses_per_ip,
            &self.over_budget_reads,
            &self.auth_failures_per_ip,
        ]
        .into_iter()
        .flatten()
        {
            limit.local.prune(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(creates_per_ip: u32, misses_per_ip: u32) -> RateSettings {
        RateSettings {
            creates_per_minute_per_ip: creates_per_ip,
            creates_per_minute_per_key: 0,
            misses_per_minute_per_ip: misses_per_ip,
            ..RateSettings::default()
        }
    }

    fn limits(settings: &RateSettings, max_keys: usize) -> (RateLimits, Clock) {
        let clock = Clock::manual(1_000_000);
        let metrics = Arc::new(Metrics::default());
        let limits = RateLimits::with_max_keys(settings, None, clock.clone(), metrics, max_keys);
        (limits, clock)
    }

    async fn allowed(limits: &RateLimits, bucket: Bucket, key: &str) -> bool {
        limits.check(bucket, key).await.expect("on").allowed
    }

    #[tokio::test]
    async fn a_burst_of_n_then_limited_per_key_and_off_at_zero() {
        let (limits, clock) = limits(&settings(3, 600), MAX_LOCAL_KEYS);
        for left in [2, 1, 0] {
            let v = limits
                .check(Bucket::CreatesPerIp, "198.51.100.1")
                .await
                .expect("on");
            assert!(v.allowed);
            assert_eq!(v.remaining, left);
        }
        let limited = limits
            .check(Bucket::CreatesPerIp, "198.51.100.1")
            .await
            .expect("on");
        assert!(!limited.allowed);
        // One refills every 20 s.
        assert_eq!(limited.retry_after_s, 20, "{limited:?}");
        assert_eq!(limited.policy_header(), "\"creates-per-ip\";q=3;w=60");
        // Another client has its own bucket; a limit of 0 is off.
        assert!(allowed(&limits, Bucket::CreatesPerIp, "198.51.100.2").await);
        assert_eq!(limits.check(Bucket::CreatesPerKey, "k").await, None);
        assert_eq!(limits.metrics.rate_limited_creates.get(), 1);
        // 20 s later one more.
        clock.advance(Duration::from_secs(20));
        assert!(allowed(&limits, Bucket::CreatesPerIp, "198.51.100.1").await);
    }

    #[tokio::test]
    async fn a_peek_takes_nothing_and_over_budget_reads_share_one_budget() {
        let (limits, clock) = limits(&settings(0, 2), MAX_LOCAL_KEYS);
        for _ in 0..10 {
            let (peeked, fetched) = limits.peek_lookup("192.0.2.1", "abc").await;
            assert!(peeked.expect("on").allowed);
            assert!(fetched.is_none(), "nothing fetched without Redis");
        }
        for _ in 0..2 {
            assert!(allowed(&limits, Bucket::MissesPerIp, "192.0.2.1").await);
        }
        let (peeked, _) = limits.peek_lookup("192.0.2.1", "abc").await;
        assert!(!peeked.expect("on").allowed, "the budget is spent");
        assert_eq!(
            limits.metrics.rate_limited_misses.get(),
            0,
            "a peek is no refusal"
        );
        // The instance's reads for over-budget clients: one client's budget, for all of them.
        assert!(limits.take_over_budget_read());
        assert!(limits.take_over_budget_read());
        assert!(!limits.take_over_budget_read());
        clock.advance(Duration::from_secs(30));
        assert!(limits.take_over_budget_read());
    }

    #[tokio::test]
    async fn a_million_clients_never_grow_the_local_buckets_past_the_cap() {
        const CAP: usize = 1_000;
        let (limits, clock) = limits(&settings(30, 0), CAP);
        let local = &limits.creates_per_ip.as_ref().expect("on").local;
        for i in 0..1_000_000u32 {
            assert!(allowed(&limits, Bucket::CreatesPerIp, &i.to_string()).await);
            assert!(local.len() <= CAP, "{} keys after {i}", local.len());
            if i % 100_000 == 0 {
                clock.advance(Duration::from_millis(500));
            }
        }
        assert!(limits.metrics.rate_limit_local_resets.get() >= 1);
        // Refilled buckets go at the minute's prune.
        clock.advance(Duration::from_secs(2));
        limits.prune();
        assert_eq!(local.len(), 0);
    }

    #[test]
    fn local_gcra_is_the_redis_script_s_arithmetic() {
        // A burst of 2, one every 30 s: the answers the script gives.
        let (first, tat) = gcra(None, 0, 30_000, 2, true);
        assert_eq!((first, tat), ([1, 1, 30_000], Some(30_000)));
        let (second, tat) = gcra(tat, 0, 30_000, 2, true);
        assert_eq!((second, tat), ([1, 0, 60_000], Some(60_000)));
        let (refused, none) = gcra(tat, 0, 30_000, 2, true);
        assert_eq!((refused, none), ([0, 30_000, 60_000], None));
        let (peeked, none) = gcra(None, 0, 30_000, 2, false);
        assert_eq!((peeked, none), ([1, 1, 30_000], None));
    }
}
