//! A fixed set of Prometheus metrics kept in atomics: recording is a few relaxed atomic adds,
//! with no allocation or lock on the request path. Counters are striped across cache lines by
//! thread, so worker threads on different cores never fight over one line. Rendered as
//! Prometheus text on `/metrics`.
//!
//! Each metric is declared once, in the `metrics!` table at the end: its field, its kind, its
//! Prometheus name, and its HELP text (the doc comment). Per-route HTTP metrics are labelled
//! by the route table the HTTP layer hands in.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub const STRIPES: usize = 8;

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

/// This thread's stripe (below [`STRIPES`]), assigned round-robin on first use.
pub fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
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

/// A gauge that is set, not added to (e.g. a breaker's state).
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge holding a signed fractional value (e.g. seconds off).
#[derive(Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Labels of the store's priority classes, highest first; admission counters are indexed by
/// a class's position here.
pub const STORE_CLASSES: [&str; 4] = ["read", "write", "stats", "clicks"];

/// Declares [`Metrics`]: one line per metric, `/// HELP` then `kind field: Type = "name";`.
macro_rules! metrics {
    ($( $(#[doc = $help:literal])+ $kind:ident $field:ident: $ty:ty = $name:literal; )*) => {
        /// Every metric kurz exports (see `metrics!` for how one is declared).
        pub struct Metrics {
            /// HTTP metrics, one entry per route label, in the order of `route_labels`.
            routes: Box<[RouteMetrics]>,
            route_labels: &'static [&'static str],
            /// Store calls admitted and shed, by priority class (see [`STORE_CLASSES`]).
            pub store_admitted: [Counter; STORE_CLASSES.len()],
            pub store_shed: [Counter; STORE_CLASSES.len()],
            $( $(#[doc = $help])+ pub $field: $ty, )*
        }

        impl Metrics {
            /// Metrics with one series of HTTP metrics per label (the route table's labels).
            pub fn with_routes(route_labels: &'static [&'static str]) -> Self {
                Self {
                    routes: route_labels.iter().map(|_| RouteMetrics::default()).collect(),
                    route_labels,
                    store_admitted: Default::default(),
                    store_shed: Default::default(),
                    $( $field: <$ty>::default(), )*
                }
            }

            fn render_scalars(&self, out: &mut String) {
                $(
                    let _ = writeln!(
                        out,
                        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}",
                        name = $name,
                        help = concat!($($help),+).trim(),
                        kind = stringify!($kind),
                        value = self.$field.get(),
                    );
                )*
            }
        }
    };
}

metrics! {
    /// Redirect lookups answered by the in-process cache.
    counter cache_hits: Counter = "kurz_cache_hits_total";
    /// Redirect lookups the in-process cache could not answer.
    counter cache_misses: Counter = "kurz_cache_misses_total";
    /// Redirects answered from an in-process entry past its TTL because neither Redis nor
    /// the store could be read (`cache.local.stale_if_error_ms`).
    counter cache_stale_answers: Counter = "kurz_cache_stale_answers_total";
    /// Lookups answered by Redis.
    counter redis_hits: Counter = "kurz_redis_hits_total";
    /// Lookups Redis could not answer (miss, failure or open breaker).
    counter redis_misses: Counter = "kurz_redis_misses_total";
    /// Redis calls that failed or timed out.
    counter redis_errors: Counter = "kurz_redis_errors_total";
    /// 1 while the Redis circuit breaker is open and Redis is skipped.
    gauge redis_breaker_open: Gauge = "kurz_redis_breaker_open";
    /// Invalidations received from other instances.
    counter redis_invalidations: Counter = "kurz_redis_invalidations_total";
    /// Invalidations (deletes, edits) that have not reached Redis yet and are being sent again
    /// (one more while Redis is to be cleared of every link after too many of them).
    gauge redis_pending_invalidations: Gauge = "kurz_redis_pending_invalidations";
    /// Store reads not written to Redis because a delete or edit overtook them.
    counter redis_writes_refused: Counter = "kurz_redis_writes_refused_total";
    /// Calls this region made to another region's table: claims, edits and deletes decided in
    /// their home region, and lookups this region's replica missed (a deployment in regions).
    counter region_remote_calls: Counter = "kurz_region_remote_calls_total";
    /// Of those, calls the other region did not answer (claims refused with 503, lookups
    /// answered from this region's replica alone).
    counter region_remote_failures: Counter = "kurz_region_remote_failures_total";
    /// Calls to another region not made because it failed several calls in a row just before
    /// (answered as its failures are, at once).
    counter region_remote_skipped: Counter = "kurz_region_remote_skipped_total";
    /// Lookups this region's replica missed that the code's home region found: links not yet
    /// replicated here.
    counter region_remote_found: Counter = "kurz_region_remote_lookups_found_total";
    /// How many shards of its region's table stream this instance reads for the region's
    /// caches (with Redis each shard is read by one instance of the region; without, every
    /// instance reads them all).
    gauge region_stream_reading: Gauge = "kurz_region_stream_reading";
    /// Links changed in this region's table (by any region) that were evicted from the
    /// region's caches because its stream showed them.
    counter region_stream_invalidations: Counter = "kurz_region_stream_invalidations_total";
    /// Reads of the region's table stream, or of the heartbeats that share it out, that
    /// failed.
    counter region_stream_errors: Counter = "kurz_region_stream_errors_total";
    /// Links created.
    counter links_created: Counter = "kurz_links_created_total";
    /// Generated codes that were taken and retried.
    counter code_collisions: Counter = "kurz_code_collisions_total";
    /// Codes made by the hash fallback because the counter could not be leased.
    counter hash_fallbacks: Counter = "kurz_hash_fallbacks_total";
    /// Id blocks leased from the store's counter.
    counter id_leases: Counter = "kurz_id_leases_total";
    /// Store calls that failed.
    counter store_errors: Counter = "kurz_store_errors_total";
    /// Clicks counted by redirects.
    counter clicks_recorded: Counter = "kurz_clicks_recorded_total";
    /// Clicks counted but not yet written to the store.
    gauge clicks_pending: Counter = "kurz_clicks_pending";
    /// Clicks written to the store.
    counter clicks_flushed: Counter = "kurz_clicks_flushed_total";
    /// Every click this instance counted before this Unix time (seconds) is flushed: written to
    /// the store, or taken by the click stream. `time() -` it is how many seconds of clicks a
    /// crash would lose now (about two flush intervals while flushes keep up). 0 until the
    /// first flush.
    gauge clicks_flushed_through: FloatGauge = "kurz_clicks_flushed_through_timestamp_seconds";
    /// Clicks dropped because the store failed for too long (past `clicks.max_pending_codes`
    /// deltas or `clicks.max_pending_clicks` clicks held in memory).
    counter clicks_dropped: Counter = "kurz_clicks_dropped_total";
    /// Records of click events the click stream took (`clicks.sink = "kinesis"`).
    counter click_stream_records: Counter = "kurz_click_stream_records_total";
    /// Click events (one link's clicks of one flush) the click stream took.
    counter click_stream_events: Counter = "kurz_click_stream_events_total";
    /// Puts to the click stream that failed whole, and records in a put it refused (kept and
    /// sent again within `clicks.kinesis.resend_window_ms`).
    counter click_stream_put_failures: Counter = "kurz_click_stream_put_failures_total";
    /// Clicks dropped on the way to the click stream: past `clicks.kinesis.max_queued_bytes`,
    /// or not taken within `clicks.kinesis.resend_window_ms` (also in kurz_clicks_dropped_total;
    /// a put that timed out may still have landed, and then its clicks count after all, once).
    counter click_stream_dropped: Counter = "kurz_click_stream_dropped_total";
    /// Bytes of click events waiting for the click stream.
    gauge click_stream_queued_bytes: Gauge = "kurz_click_stream_queued_bytes";
    /// Clicks waiting for the click stream (flushed from kurz_clicks_pending into this).
    gauge click_stream_queued_clicks: Gauge = "kurz_click_stream_queued_clicks";
    /// Records `kurz aggregate` read from the click stream.
    counter aggregate_records: Counter = "kurz_aggregate_records_total";
    /// Records read a second time (a put that timed out but landed, sent again): not counted.
    counter aggregate_duplicate_records: Counter = "kurz_aggregate_duplicate_records_total";
    /// Records that did not parse (another format, damaged): skipped and logged.
    counter aggregate_bad_records: Counter = "kurz_aggregate_bad_records_total";
    /// Click events `kurz aggregate` folded.
    counter aggregate_events: Counter = "kurz_aggregate_events_total";
    /// Clicks `kurz aggregate` wrote to the store.
    counter aggregate_clicks: Counter = "kurz_aggregate_clicks_total";
    /// Writes of one link's folded clicks (one per link per window per shard).
    counter aggregate_link_writes: Counter = "kurz_aggregate_link_writes_total";
    /// Windows folded and checkpointed.
    counter aggregate_windows: Counter = "kurz_aggregate_windows_total";
    /// Writes of a window the store refused (sent again until taken).
    counter aggregate_write_failures: Counter = "kurz_aggregate_write_failures_total";
    /// Calls to the stream or the lease table that failed.
    counter aggregate_errors: Counter = "kurz_aggregate_errors_total";
    /// Shard leases taken (free, expired, or moved from a consumer holding more than its share).
    counter aggregate_leases_taken: Counter = "kurz_aggregate_leases_taken_total";
    /// Shard leases lost to another consumer.
    counter aggregate_leases_lost: Counter = "kurz_aggregate_leases_lost_total";
    /// Shard leases this consumer holds.
    gauge aggregate_leases: Gauge = "kurz_aggregate_leases_held";
    /// How far behind the stream's newest record this consumer's shards are (the largest),
    /// milliseconds: the iterator age.
    gauge aggregate_behind_ms: Gauge = "kurz_aggregate_millis_behind_latest";
    /// Click flushes the store refused (kept for the next flush).
    counter click_flush_failures: Counter = "kurz_click_flush_failures_total";
    /// Clicks counted without their details (referrer, country, device, ...) because
    /// `analytics.max_pending_visits` were already waiting for the next flush.
    counter analytics_visits_dropped: Counter = "kurz_analytics_visits_dropped_total";
    /// Time the click flusher spent classifying visits and adding clicks up (microseconds).
    counter click_collect_us: Counter = "kurz_click_collect_microseconds_total";
    /// Clicks the flusher classified as coming from bots (crawlers, link previews, monitors).
    counter analytics_bot_clicks: Counter = "kurz_analytics_bot_clicks_total";
    /// Days whose visitor key could not be read from the store, so this instance hashed
    /// visitors with a key of its own for a while (they may count twice across instances).
    counter analytics_local_keys: Counter = "kurz_analytics_local_keys_total";
    /// Creates refused with 429 by a rate limit.
    counter rate_limited_creates: Counter = "kurz_rate_limited_creates_total";
    /// Lookups refused with 429 by the per-client misses limit.
    counter rate_limited_misses: Counter = "kurz_rate_limited_misses_total";
    /// Refreshes of the API keys from the store that failed (the last good set stays in force).
    counter key_refresh_failures: Counter = "kurz_key_refresh_failures_total";
    /// When this instance last read its API keys from the store (Unix seconds).
    gauge keys_loaded_at: Gauge = "kurz_keys_loaded_at_seconds";
    /// Requests answered 429 because their client failed authentication too often.
    counter rate_limited_auth_failures: Counter = "kurz_rate_limited_auth_failures_total";
    /// Rate-limit decisions made by this instance alone because Redis could not answer.
    counter rate_limit_local_fallbacks: Counter = "kurz_rate_limit_local_fallbacks_total";
    /// Times a local rate limiter forgot every client's bucket: it tracked more clients than
    /// it keeps buckets for (address rotation, or a very large audience on one instance).
    counter rate_limit_local_resets: Counter = "kurz_rate_limit_local_resets_total";
    /// How many store calls may be in flight now (adaptive; DynamoDB only).
    gauge store_limit: Gauge = "kurz_store_concurrency_limit";
    /// Store calls in flight now (DynamoDB only).
    gauge store_in_flight: Gauge = "kurz_store_calls_in_flight";
    /// Calls made to the store (DynamoDB only; retries are counted apart).
    counter store_calls: Counter = "kurz_store_calls_total";
    /// Store calls retried after a transient failure.
    counter store_retries: Counter = "kurz_store_retries_total";
    /// Retries not made because the retry budget was spent.
    counter store_retries_refused: Counter = "kurz_store_retries_refused_total";
    /// Click flushes that failed in a row (0 while flushes succeed).
    gauge click_flush_failing: Gauge = "kurz_click_flush_consecutive_failures";
    /// The wait before the next click flush while backing off (0 while flushes succeed).
    gauge click_flush_backoff_ms: Gauge = "kurz_click_flush_backoff_milliseconds";
    /// 1 while the last background probe of the store succeeded.
    gauge store_up: Gauge = "kurz_store_up";
    /// 1 once this instance is draining (after SIGTERM): /readyz answers 503.
    gauge draining: Gauge = "kurz_draining";
    /// This instance's wall clock minus the reference's (Redis's TIME, else DynamoDB's Date), in
    /// seconds, at the middle of the round trip; measured every 10 s. 0 until measured, and
    /// without a reference.
    gauge clock_skew: FloatGauge = "kurz_clock_skew_seconds";
    /// 1 while the clock skew is past server.max_clock_skew_ms: /readyz answers 503.
    gauge clock_skewed: Gauge = "kurz_clock_skewed";
    /// 1 while the embedded store takes writes; 0 while its disk is full and writes are
    /// refused with 507 (reads go on).
    gauge store_writable: Gauge = "kurz_store_writable";
    /// Free bytes on the embedded store's file system, from the last probe (0 elsewhere).
    gauge store_free_bytes: Gauge = "kurz_store_free_bytes";
    /// The embedded store's durable commits (group commits: one fsync each).
    counter store_commits: Counter = "kurz_store_commits_total";
    /// Writes the embedded store's commits carried; over `kurz_store_commits_total`, the
    /// writes that share one fsync.
    counter store_committed_writes: Counter = "kurz_store_committed_writes_total";
    /// Idempotency records past their window removed by the embedded store's purge.
    counter idempotency_pruned: Counter = "kurz_store_idempotency_records_pruned_total";
    /// Links expired longer than `store.purge_expired_after_s` removed by the embedded
    /// store's purge, with their statistics.
    counter links_purged: Counter = "kurz_store_expired_links_purged_total";
    /// Spans sent to the trace receiver (telemetry.otlp_endpoint).
    counter trace_spans_exported: Counter = "kurz_trace_spans_exported_total";
    /// Spans not sent: the queue was full (telemetry.max_queued_spans) or the receiver did not
    /// take them.
    counter trace_spans_dropped: Counter = "kurz_trace_spans_dropped_total";
    /// Export requests to the trace receiver that failed (no connection, no answer, not 2xx).
    counter trace_export_failures: Counter = "kurz_trace_export_failures_total";
}

impl Default for Metrics {
    /// Metrics with no HTTP routes, for parts used without the HTTP layer.
    fn default() -> Self {
        Self::with_routes(&[])
    }
}

impl Metrics {
    /// Records one response on the route at `route` (an index into the route labels).
    pub fn observe(&self, route: usize, status: u16, elapsed: Duration) {
        let Some(m) = self.routes.get(route) else {
            return;
        };
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
        let routes = || self.route_labels.iter().zip(self.routes.iter());

        out.push_str("# HELP kurz_http_requests_total HTTP responses by route and status class.\n# TYPE kurz_http_requests_total counter\n");
        for (label, m) in routes() {
            for (i, c) in m.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "kurz_http_requests_total{{route=\"{label}\",status=\"{}xx\"}} {}",
                    i + 1,
                    get(c)
                );
            }
        }
        out.push_str("# HELP kurz_http_request_duration_seconds Time from request to response, by route.\n# TYPE kurz_http_request_duration_seconds histogram\n");
        for (label, m) in routes() {
            let mut cumulative = 0;
            for (bound, c) in BUCKETS_US.iter().zip(&m.buckets) {
                cumulative += get(c);
                let _ = writeln!(
                    out,
                    "kurz_http_request_duration_seconds_bucket{{route=\"{label}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let count = get(&m.count);
            let _ = writeln!(
                out,
                "kurz_http_request_duration_seconds_bucket{{route=\"{label}\",le=\"+Inf\"}} {count}\nkurz_http_request_duration_seconds_sum{{route=\"{label}\"}} {}\nkurz_http_request_duration_seconds_count{{route=\"{label}\"}} {count}",
                get(&m.sum_us) as f64 / 1e6
            );
        }
        for (name, help, counters) in [
            (
                "kurz_store_calls_admitted_total",
                "Store calls let through admission control, by priority class.",
                &self.store_admitted,
            ),
            (
                "kurz_store_calls_shed_total",
                "Store calls refused at once by admission control (503), by priority class.",
                &self.store_shed,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (class, c) in STORE_CLASSES.iter().zip(counters) {
                let _ = writeln!(out, "{name}{{class=\"{class}\"}} {}", get(c));
            }
        }
        self.render_scalars(&mut out);
        let _ = writeln!(
            out,
            "# HELP kurz_cache_entries Entries in the in-process cache.\n# TYPE kurz_cache_entries gauge\nkurz_cache_entries {cache_entries}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_once_with_help_and_type() {
        let metrics = Metrics::with_routes(&["redirect", "unmatched"]);
        metrics.links_created.add(3);
        metrics.redis_breaker_open.set(1);
        metrics.clock_skew.set(-300.25);
        metrics.observe(0, 302, Duration::from_micros(70));
        metrics.observe(7, 200, Duration::from_micros(70)); // no such route: ignored
        let text = metrics.render(5);
        assert!(text.contains("# HELP kurz_links_created_total Links created.\n# TYPE kurz_links_created_total counter\nkurz_links_created_total 3\n"), "{text}");
        assert!(text.contains("# TYPE kurz_redis_breaker_open gauge\nkurz_redis_breaker_open 1"));
        assert!(text.contains("kurz_http_requests_total{route=\"redirect\",status=\"3xx\"} 1"));
        assert!(text.contains(
            "kurz_http_request_duration_seconds_bucket{route=\"redirect\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains("kurz_cache_entries 5"));
        assert!(
            text.contains(
                "# TYPE kurz_clock_skew_seconds gauge\nkurz_clock_skew_seconds -300.25\n"
            )
        );
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a metric declared twice");
    }
}
