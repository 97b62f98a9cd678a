//! A fixed set of Prometheus metrics kept in atomics: recording is a few relaxed atomic adds,
//! with no allocation or lock on the request path. Counters are striped across cache lines by
//! thread, so worker threads on different cores never fight over one line. Rendered as
//! Prometheus text on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const STRIPES: usize = 8;

#[derive(Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

/// A counter (or an up-and-down gauge) striped across cache lines: each thread adds to its
/// own stripe; reading sums them.
#[derive(Default)]
pub struct Counter([Stripe; STRIPES]);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    /// Takes `n` off a gauge (stripes may go "negative"; their wrapping sum is right).
    pub fn sub(&self, n: u64) {
        self.0[stripe()].0.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// This thread's stripe, assigned round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

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

    /// The route of a resource name from the HTTP route table.
    pub fn from_name(name: &str) -> Route {
        match name {
            "redirect" => Route::Redirect,
            "create_link" => Route::CreateLink,
            "link" => Route::GetLink,
            "link_stats" => Route::LinkStats,
            "healthz" => Route::Healthz,
            "readyz" => Route::Readyz,
            "metrics" => Route::Metrics,
            _ => Route::Unmatched,
        }
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
    by_class: [Counter; 5],
    buckets: [Counter; BUCKETS_US.len()],
    count: Counter,
    sum_us: Counter,
}

#[derive(Default)]
pub struct Metrics {
    routes: [RouteMetrics; Route::ALL.len()],
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub redis_hits: Counter,
    pub redis_misses: Counter,
    pub redis_errors: Counter,
    /// 1 while the Redis circuit breaker is open.
    pub redis_breaker_open: AtomicU64,
    pub redis_invalidations: Counter,
    pub links_created: Counter,
    pub code_collisions: Counter,
    pub hash_fallbacks: Counter,
    pub id_leases: Counter,
    pub store_errors: Counter,
    pub clicks_recorded: Counter,
    pub clicks_pending: Counter,
    pub clicks_flushed: Counter,
    pub clicks_dropped: Counter,
    pub click_flush_failures: Counter,
}

impl Metrics {
    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        let m = &self.routes[route as usize];
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        m.by_class[class].inc();
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            m.buckets[i].inc();
        }
        m.count.inc();
        m.sum_us.add(us);
    }

    /// Prometheus text exposition (format 0.0.4). `cache_entries` is read at render time.
    pub fn render(&self, cache_entries: u64) -> String {
        let mut out = String::with_capacity(8192);
        let get = Counter::get;

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
                self.redis_breaker_open.load(Ordering::Relaxed),
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
