//! Rate limits: GCRA buckets per client IP (anonymous creates, lookups the cache cannot
//! answer) and per API key (creates). A limit of N per minute lets a client spend N at once
//! and refills one every 60/N seconds.
//!
//! With Redis, one atomic script per decision makes a bucket fleet-wide; when Redis cannot
//! answer (or its breaker is open) the decision falls back to this instance's own buckets, so
//! the limiter never fails a request because of itself. Cached redirects never reach here; an
//! uncached one reads its code's Redis entry in the decision's round trip
//! ([`RateLimits::check_lookup`]), so it still costs one.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::cache::{Fetched, RedisCache};
use crate::config::RateSettings;
use crate::telemetry::Metrics;

type Local =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Creates without an API key, per client IP.
    CreatesPerIp,
    /// Creates per API key.
    CreatesPerKey,
    /// Lookups the in-process cache cannot answer, per client IP.
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
}

struct Limit {
    per_minute: NonZeroU32,
    local: Local,
}

pub struct RateLimits {
    creates_per_ip: Option<Limit>,
    creates_per_key: Option<Limit>,
    misses_per_ip: Option<Limit>,
    auth_failures_per_ip: Option<Limit>,
    redis: Option<RedisCache>,
    clock: DefaultClock,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    pub fn new(settings: &RateSettings, redis: Option<RedisCache>, metrics: Arc<Metrics>) -> Self {
        let limit = |per_minute: u32| {
            let per_minute = NonZeroU32::new(per_minute)?;
            Some(Limit {
                per_minute,
                local: RateLimiter::keyed(Quota::per_minute(per_minute))
                    .with_middleware::<StateInformationMiddleware>(),
            })
        };
        Self {
            creates_per_ip: limit(settings.creates_per_minute_per_ip),
            creates_per_key: limit(settings.creates_per_minute_per_key),
            misses_per_ip: limit(settings.misses_per_minute_per_ip),
            auth_failures_per_ip: limit(settings.auth_failures_per_minute_per_ip),
            redis,
            clock: DefaultClock::default(),
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

    /// Takes one request from `key`'s bucket; `None` when this limit is off.
    pub async fn check(&self, bucket: Bucket, key: &str) -> Option<Verdict> {
        self.decide(bucket, key, None)
            .await
            .map(|(verdict, _)| verdict)
    }

    /// Takes one request from `key`'s `MissesPerIp` bucket before a lookup of `code`. When
    /// Redis decides, `code`'s Redis entry comes back from the same round trip, for
    /// [`LinkService::resolve_uncached`](crate::links::LinkService::resolve_uncached); only
    /// for an allowed lookup, so a refused one never uses it.
    pub async fn check_lookup(&self, key: &str, code: &str) -> (Option<Verdict>, Option<Fetched>) {
        match self.decide(Bucket::MissesPerIp, key, Some(code)).await {
            Some((verdict, fetched)) if verdict.allowed => (Some(verdict), fetched),
            Some((verdict, _)) => (Some(verdict), None),
            None => (None, None),
        }
    }

    /// The decision, with `fetch`'s Redis entry when Redis made it.
    async fn decide(
        &self,
        bucket: Bucket,
        key: &str,
        fetch: Option<&str>,
    ) -> Option<(Verdict, Option<Fetched>)> {
        let limit = self.limit(bucket)?;
        let quota = limit.per_minute.get();
        let (verdict, fetched) = match self.check_redis(bucket, limit, key, fetch).await {
            Some(decided) => decided,
            None => (self.check_local(bucket, limit, key), None),
        };
        if !verdict.allowed {
            match bucket {
                Bucket::MissesPerIp => self.metrics.rate_limited_misses.inc(),
                Bucket::AuthFailuresPerIp => self.metrics.rate_limited_auth_failures.inc(),
                _ => self.metrics.rate_limited_creates.inc(),
            }
        }
        debug_assert_eq!(verdict.quota, quota);
        Some((verdict, fetched))
    }

    async fn check_redis(
        &self,
        bucket: Bucket,
        limit: &Limit,
        key: &str,
        fetch: Option<&str>,
    ) -> Option<(Verdict, Option<Fetched>)> {
        let redis = self.redis.as_ref()?;
        let interval_ms = 60_000 / u64::from(limit.per_minute.get());
        let key = format!("{}:{key}", bucket.name());
        let Some(([allowed, value, reset_ms], fetched)) = redis
            .gcra(
                &key,
                interval_ms.max(1),
                u64::from(limit.per_minute.get()),
                fetch,
            )
            .await
        else {
            self.metrics.rate_limit_local_fallbacks.inc();
            return None;
        };
        let seconds = |ms: i64| u64::try_from(ms).unwrap_or(0).div_ceil(1000);
        let verdict = Verdict {
            bucket,
            allowed: allowed == 1,
            quota: limit.per_minute.get(),
            remaining: if allowed == 1 {
                u32::try_from(value).unwrap_or(0)
            } else {
                0
            },
            reset_s: seconds(reset_ms),
            retry_after_s: if allowed == 1 {
                0
            } else {
                seconds(value).max(1)
            },
        };
        Some((verdict, fetched))
    }

    fn check_local(&self, bucket: Bucket, limit: &Limit, key: &str) -> Verdict {
        let quota = limit.per_minute.get();
        let interval = Duration::from_secs(60) / quota;
        match limit.local.check_key(&key.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Verdict {
                    bucket,
                    allowed: true,
                    quota,
                    remaining,
                    reset_s: (interval * (quota - remaining)).as_secs().max(1),
                    retry_after_s: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Verdict {
                    bucket,
                    allowed: false,
                    quota,
                    remaining: 0,
                    reset_s: (interval * quota).as_secs(),
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }

    /// Forgets local buckets that have refilled (they would allow a whole burst anyway).
    pub fn prune(&self) {
        for limit in [
            &self.creates_per_ip,
            &self.creates_per_key,
            &self.misses_per_ip,
            &self.auth_failures_per_ip,
        ]
        .into_iter()
        .flatten()
        {
            limit.local.retain_recent();
            limit.local.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(creates_per_ip: u32) -> RateLimits {
        RateLimits::new(
            &RateSettings {
                creates_per_minute_per_ip: creates_per_ip,
                creates_per_minute_per_key: 0,
                misses_per_minute_per_ip: 600,
                auth_failures_per_minute_per_ip: 0,
            },
            None,
            Arc::new(Metrics::default()),
        )
    }

    #[tokio::test]
    async fn a_burst_of_n_then_limited_per_key_and_off_at_zero() {
        let limits = limits(3);
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
        assert!((1..=20).contains(&limited.retry_after_s), "{limited:?}");
        assert_eq!(limited.policy_header(), "\"creates-per-ip\";q=3;w=60");
        // Another client has its own bucket; a limit of 0 is off.
        let other = limits.check(Bucket::CreatesPerIp, "198.51.100.2").await;
        assert!(other.expect("on").allowed);
        assert_eq!(limits.check(Bucket::CreatesPerKey, "k").await, None);
        assert_eq!(limits.metrics.rate_limited_creates.get(), 1);
    }
}
