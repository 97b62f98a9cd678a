//! A fixed set of Prometheus metrics kept in atomics: recording is a few relaxed atomic adds,
//! with no allocation or lock on the request path. Rendered as Prometheus text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The routes kurz serves, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Redirect,
    CreateLink,
    GetLink,
    DeleteLink,
    LinkStats,
    Healthz,
    Readyz,
    Metrics,
    Unmatched,
}

impl Route {
    pub const ALL: [Route; 9] = [
        Route::Redirect,
        Route::CreateLink,
        Route::GetLink,
        Route::DeleteLink,
        Route::LinkStats,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Unmatched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Redirect => "redirect",
            Route::CreateLink => "create_link",
            Route::GetLink => "get_link",
            Route::DeleteLink => "delete_link",
            Route::LinkStats => "link_stats",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Unmatched => "unmatched",
        }
    }

    pub fn from_name(name: &str) -> Route {
        Route::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .unwrap_or(Route::Unmatched)
    }
}

/// Latency bucket bounds in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

#[derive(Default)]
struct RouteMetrics {
    /// Responses by status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    routes: [RouteMetrics; Route::ALL.len()],
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub redis_hits: AtomicU64,
    pub redis_misses: AtomicU64,
    pub redis_errors: AtomicU64,
    /// 1 while the Redis circuit breaker is open.
    pub redis_breaker_open: AtomicU64,
    pub redis_invalidations: AtomicU64,
    pub links_created: AtomicU64,
    pub code_collisions: AtomicU64,
    pub hash_fallbacks: AtomicU64,
    pub id_leases: AtomicU64,
    pub store_errors: AtomicU64,
    pub clicks_recorded: AtomicU64,
    pub clicks_pending: AtomicU64,
    pub clicks_flushed: AtomicU64,
    pub clicks_dropped: AtomicU64,
    pub click_flush_failures: AtomicU64,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        let m = &self.routes[route as usize];
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        m.by_class[class].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            m.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        m.count.fetch_add(1, Ordering::Relaxed);
        m.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Prometheus text exposition (format 0.0.4). `cache_entries` is read at render time.
    pub fn render(&self, cache_entries: u64) -> String {
        let mut out = String::with_capacity(8192);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);

        out.push_str("# HELP kurz_http_requests_total HTTP responses by route and status class.\n# TYPE kurz_http_requests_total counter\n");
        for route in Route::ALL {
            let m = &self.routes[route as usize];
            for (i, c) in m.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kurz_http_requests_total{{route=\"{}\",status=\"{}xx\"}} {}",
                    route.as_str(),
                    i + 1,
                    get(c)
                );
            }
        }
        out.push_str("# HELP kurz_http_request_duration_seconds Time from request to response, by route.\n# TYPE kurz_http_request_duration_seconds histogram\n");
        for route in Route::ALL {
            let m = &self.routes[route as usize];
            let name = route.as_str();
            let mut cumulative = 0;
            for (bound, c) in BUCKETS_US.iter().zip(&m.buckets) {
                cumulative += get(c);
                let _ = writeln!(
                    out,
                    "kurz_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let count = get(&m.count);
            let _ = writeln!(
                out,
                "kurz_http_request_duration_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {count}\nkurz_http_request_duration_seconds_sum{{route=\"{name}\"}} {}\nkurz_http_request_duration_seconds_count{{route=\"{name}\"}} {count}",
                get(&m.sum_us) as f64 / 1e6
            );
        }
        let scalars: [(&str, &str, &str, u64); 18] = [
            (
                "kurz_cache_hits_total",
                "counter",
                "Redirect lookups answered by the in-process cache.",
                get(&self.cache_hits),
            ),
            (
                "kurz_cache_misses_total",
                "counter",
                "Redirect lookups the in-process cache could not answer.",
                get(&self.cache_misses),
            ),
            (
                "kurz_redis_hits_total",
                "counter",
                "Lookups answered by Redis.",
                get(&self.redis_hits),
            ),
            (
                "kurz_redis_misses_total",
                "counter",
                "Lookups Redis could not answer (miss, failure or open breaker).",
                get(&self.redis_misses),
            ),
            (
                "kurz_redis_errors_total",
                "counter",
                "Redis calls that failed or timed out.",
                get(&self.redis_errors),
            ),
            (
                "kurz_redis_breaker_open",
                "gauge",
                "1 while the Redis circuit breaker is open and Redis is skipped.",
                get(&self.redis_breaker_open),
            ),
            (
                "kurz_redis_invalidations_total",
                "counter",
                "Invalidations received from other instances.",
                get(&self.redis_invalidations),
            ),
            (
                "kurz_cache_entries",
                "gauge",
                "Entries in the in-process cache.",
                cache_entries,
            ),
            (
                "kurz_links_created_total",
                "counter",
                "Links created.",
                get(&self.links_created),
            ),
            (
                "kurz_code_collisions_total",
                "counter",
                "Generated codes that were taken and retried.",
                get(&self.code_collisions),
            ),
            (
                "kurz_hash_fallbacks_total",
                "counter",
                "Codes made by the hash fallback because the counter could not be leased.",
                get(&self.hash_fallbacks),
            ),
            (
                "kurz_id_leases_total",
                "counter",
                "Id blocks leased from the store's counter.",
                get(&self.id_leases),
            ),
            (
                "kurz_store_errors_total",
                "counter",
                "Store calls that failed.",
                get(&self.store_errors),
            ),
            (
                "kurz_clicks_recorded_total",
                "counter",
                "Clicks counted by redirects.",
                get(&self.clicks_recorded),
            ),
            (
                "kurz_clicks_pending",
                "gauge",
                "Clicks counted but not yet written to the store.",
                get(&self.clicks_pending),
            ),
            (
                "kurz_clicks_flushed_total",
                "counter",
                "Clicks written to the store.",
                get(&self.clicks_flushed),
            ),
            (
                "kurz_clicks_dropped_total",
                "counter",
                "Clicks dropped because the store failed for too long.",
                get(&self.clicks_dropped),
            ),
            (
                "kurz_click_flush_failures_total",
                "counter",
                "Click flushes the store refused (kept for the next flush).",
                get(&self.click_flush_failures),
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}
