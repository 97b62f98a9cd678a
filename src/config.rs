//! Typed settings, loaded once at start-up and passed down explicitly: each part of kurz gets
//! only its own section (`store::open(&settings.store)`).
//!
//! Layers, later wins: built-in defaults (the `Default` impls below, the only place a default
//! lives) < an optional TOML file (`--config PATH`) < environment variables named
//! `KURZ__SECTION__KEY` (e.g. `KURZ__SERVER__BIND`). Values are parsed into real types at load
//! (`SocketAddr`, `BaseUrl`, `Duration`, non-zero counts), so nothing downstream checks them
//! again. Unknown keys and malformed values stop start-up with a message naming the setting, so
//! a typo never silently falls back to a default.
//!
//! Durations keep their unit in the setting's name (`timeout_ms`, `shutdown_timeout_s`): the
//! name is the contract, the field is a `Duration`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::base_url::BaseUrl;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub cache: CacheSettings,
    pub ids: IdSettings,
    pub clicks: ClickSettings,
    pub aggregate: AggregateSettings,
    pub analytics: AnalyticsSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub abuse: AbuseSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub region: RegionSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Base of every `short_url`, e.g. `https://kurz.example`. Defaults to the bound address.
    pub public_base_url: Option<BaseUrl>,
    /// Worker threads; defaults to the number of CPU cores.
    pub workers: Option<NonZeroUsize>,
    /// How long a graceful stop waits for in-flight requests.
    #[serde(rename = "shutdown_timeout_s", deserialize_with = "seconds")]
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are still served normally,
    /// so the load balancer stops routing here before the listener closes. Set it above the
    /// balancer's health-check window (interval x unhealthy threshold); 0 on a laptop.
    #[serde(rename = "drain_delay_ms", deserialize_with = "millis")]
    pub drain_delay: Duration,
    /// A second listener for `/metrics` only (e.g. `127.0.0.1:9090`); set, the public
    /// listener no longer serves `/metrics`.
    pub admin_bind: Option<SocketAddr>,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` and `X-Request-Id` are believed. From
    /// anyone else the client is the socket peer and request ids are kurz's own.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<Network>,
    /// More host names of this service: long URLs pointing at them are refused (loops).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub own_hosts: Vec<String>,
    /// Most open connections per worker thread.
    pub max_connections: NonZeroUsize,
    /// Most connections being set up at once per worker thread.
    pub max_connection_rate: NonZeroUsize,
    /// Longest a client may take to send a request body; slower gets 408.
    #[serde(rename = "body_timeout_ms", deserialize_with = "millis")]
    pub body_timeout: Duration,
    /// How far this instance's wall clock may be from the reference (DynamoDB's `Date`, else
    /// Redis's `TIME`) before it logs a warning and `/readyz` answers 503: expiry is decided
    /// by the wall clock. 0 never takes the instance out of rotation (the skew is still
    /// measured and exported).
    #[serde(rename = "max_clock_skew_ms", deserialize_with = "millis")]
    pub max_clock_skew: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            workers: None,
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            admin_bind: None,
            trusted_proxies: Vec::new(),
            own_hosts: Vec::new(),
            max_connections: NonZeroUsize::new(25_000).unwrap_or(NonZeroUsize::MIN),
            max_connection_rate: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            body_timeout: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(5),
        }
    }
}

/// Declares [`Backend`]: one line per store backend, `Variant => "name", "what it is";`. The
/// setting's value, the list in its error and the name in logs come from here only.
macro_rules! backends {
    ($( $variant:ident => $name:literal, $doc:literal; )*) => {
        /// Where links are stored (`store.backend`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub enum Backend { $( #[doc = $doc] $variant, )* }

        impl Backend {
            pub const NAMES: &[&str] = &[$($name,)*];

            pub fn name(self) -> &'static str {
                match self { $(Backend::$variant => $name,)* }
            }
        }

        impl TryFrom<String> for Backend {
            type Error = String;

            fn try_from(name: String) -> Result<Self, Self::Error> {
                match name.to_ascii_lowercase().as_str() {
                    $($name => Ok(Backend::$variant),)*
                    _ => Err(format!(
                        "unknown store backend '{name}'; expected one of: {}",
                        Backend::NAMES.join(", ")
                    )),
                }
            }
        }
    };
}

backends! {
    Embedded => "embedded", "A redb file on local disk: nothing else to install.";
    Dynamodb => "dynamodb", "Amazon DynamoDB: the production store shared by many instances.";
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    pub backend: Backend,
    /// The embedded store's file.
    pub path: PathBuf,
    /// Upper bound on one store call, retries included; a slower call fails as "unavailable".
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// The embedded store's page cache, in bytes: what of the file it keeps in its own memory.
    pub cache_bytes: usize,
    /// Below this many free bytes on the embedded store's file system the log warns, once (0:
    /// never); `kurz_store_free_bytes` has the figure for alerts.
    pub free_space_warning_bytes: u64,
    /// How long after its expiry a link is purged with its statistics, leaving the lists, its
    /// code free for an alias again (0: never). Until then it answers 410. On DynamoDB this is
    /// when the item's TTL falls due.
    #[serde(rename = "purge_expired_after_s", deserialize_with = "seconds")]
    pub purge_expired_after: Duration,
    /// How often the embedded store's background purge runs: expired links as above, and
    /// idempotency records past their 24 h window (DynamoDB's TTL removes those itself).
    #[serde(rename = "purge_interval_s", deserialize_with = "seconds")]
    pub purge_interval: Duration,
    /// Rows of each kind the embedded store's purge removes in one write transaction, so that
    /// the creates queued behind it wait for no more than that.
    pub purge_batch: usize,
    pub dynamodb: DynamoSettings,
    /// `ids.permutation_key`, when the settings give one: the embedded store keeps generated
    /// links in the order of the ids their codes were made of, which it finds with this key.
    /// Not a setting of its own (filled in by `load`).
    #[serde(skip)]
    pub code_layout_key: Option<Secret>,
    /// `region.id`: the counter this deployment's region leases ids from, and the range of ids
    /// they stand for (`None`: a single-region deployment). Filled in by `load`.
    #[serde(skip)]
    pub region_id: Option<u8>,
}

/// The largest record Kinesis takes: 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Shortest `aggregate.window_ms`.
pub const MIN_AGGREGATE_WINDOW: Duration = Duration::from_secs(10);

/// Longest `store.purge_expired_after_s`: ten years.
pub const MAX_PURGE_EXPIRED_AFTER: Duration = Duration::from_secs(3650 * 86_400);
/// Longest `store.purge_interval_s`: a day.
pub const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(86_400);
/// Most rows `store.purge_batch` may name.
pub const MAX_PURGE_BATCH: usize = 10_000;

/// 8 MiB: the B-tree's upper levels and the hottest leaves; the rest of the file is read
/// through the OS's page cache, which the process does not pay for in resident memory. Creates
/// and uncached reads measured as fast as with 32 MiB or 1 GiB (benches/README.md).
pub const DEFAULT_STORE_CACHE_BYTES: usize = 8 * 1024 * 1024;

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            path: PathBuf::from("./data/kurz.redb"),
            timeout: Duration::from_secs(3),
            cache_bytes: DEFAULT_STORE_CACHE_BYTES,
            free_space_warning_bytes: 1024 * 1024 * 1024,
            purge_expired_after: Duration::from_secs(30 * 86_400),
            purge_interval: Duration::from_secs(300),
            purge_batch: 500,
            dynamodb: DynamoSettings::default(),
            code_layout_key: None,
            region_id: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoSettings {
    /// The table (`kurz init` creates it).
    pub table: String,
    /// AWS region; unset, the standard chain decides (AWS_REGION, profile).
    pub region: Option<String>,
    /// Endpoint override, for DynamoDB Local. Unset in production.
    pub endpoint_url: Option<String>,
    /// Upper bound on one HTTP attempt; kurz retries within `store.timeout_ms`.
    #[serde(rename = "attempt_timeout_ms", deserialize_with = "millis")]
    pub attempt_timeout: Duration,
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// Attempts per call: transient failures are retried with exponential backoff and
    /// jitter, within `store.timeout_ms` and only while the retry budget allows.
    pub max_attempts: NonZeroU32,
    /// Retries allowed per hundred calls: a failing table sees at most this share of extra
    /// calls (plus a reserve of ten), however many calls fail.
    pub retry_budget_percent: u32,
    /// How many calls kurz lets wait on the table at once (see [`AdmissionSettings`]).
    pub admission: AdmissionSettings,
    /// Concurrent writes when flushing click counts.
    pub flush_concurrency: NonZeroUsize,
    /// Static credentials, for DynamoDB Local and tests. Unset, the standard provider chain is
    /// used (environment, profile, container or instance role).
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
}

impl Default for DynamoSettings {
    fn default() -> Self {
        Self {
            table: "kurz".into(),
            region: None,
            endpoint_url: None,
            attempt_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_attempts: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            retry_budget_percent: 10,
            admission: AdmissionSettings::default(),
            flush_concurrency: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// Admission control toward DynamoDB: an adaptive limit on calls in flight. While calls come
/// back faster than `latency_target_ms` and the limit is in use, it grows by one per round of
/// calls; a slower call or a failure to answer cuts it by a tenth (at most once per
/// `latency_target_ms`). A call that finds no room waits at most `queue_timeout_ms`, then
/// fails at once (503 with `Retry-After`). Lower priorities may fill less of the limit:
/// lookups all of it, writes 90%, statistics 70%, click flushes 50%.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSettings {
    pub initial_limit: NonZeroU32,
    pub min_limit: NonZeroU32,
    pub max_limit: NonZeroU32,
    #[serde(rename = "latency_target_ms", deserialize_with = "millis")]
    pub latency_target: Duration,
    #[serde(rename = "queue_timeout_ms", deserialize_with = "millis")]
    pub queue_timeout: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        let n = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            initial_limit: n(64),
            min_limit: n(4),
            max_limit: n(1024),
            latency_target: Duration::from_millis(250),
            queue_timeout: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub local: LocalCacheSettings,
    pub redis: RedisSettings,
    /// How long browsers may keep a permanent (301/308) redirect, never past the link's
    /// expiry. While they keep it, their clicks do not reach kurz (not counted), and a delete
    /// or disable does not reach them. Temporary redirects are never cached.
    #[serde(rename = "browser_max_age_s", deserialize_with = "seconds")]
    pub browser_max_age: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            local: LocalCacheSettings::default(),
            redis: RedisSettings::default(),
            browser_max_age: Duration::from_secs(3600),
        }
    }
}

/// The shared L2 cache. Off unless `url` is set; Redis is never needed for a redirect.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; unset, there is no L2.
    pub url: Option<Secret>,
    pub pool_size: NonZeroUsize,
    /// Upper bound on one Redis call, connection included. A redirect never waits longer
    /// than this because of Redis.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// Prefix of every key and of the invalidation channel, so instances of different
    /// deployments can share one Redis.
    pub key_prefix: String,
    /// How long a link stays in Redis (never past the link's expiry).
    #[serde(rename = "ttl_ms", deserialize_with = "millis")]
    pub ttl: Duration,
    /// How long "no such code" stays in Redis.
    #[serde(rename = "negative_ttl_ms", deserialize_with = "millis")]
    pub negative_ttl: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: NonZeroU32,
    /// How long the breaker stays open before one call probes Redis again.
    #[serde(rename = "breaker_cool_off_ms", deserialize_with = "millis")]
    pub breaker_cool_off: Duration,
    /// How long a delete or edit keeps loads from writing the code to Redis: a load that read
    /// the store before it cannot put the old link back. Loads slower than this (less one
    /// Redis timeout) do not write to Redis at all.
    #[serde(rename = "tombstone_ttl_ms", deserialize_with = "millis")]
    pub tombstone_ttl: Duration,
    /// Invalidations that could not reach Redis, kept and sent again until they land; beyond
    /// this many, Redis is cleared of every cached link (and every L1 with it) once it answers.
    pub max_pending_invalidations: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            timeout: Duration::from_millis(50),
            key_prefix: "kurz:".into(),
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            breaker_threshold: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            breaker_cool_off: Duration::from_secs(1),
            tombstone_ttl: Duration::from_secs(10),
            max_pending_invalidations: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCacheSettings {
    /// Memory budget of the in-process cache, in bytes (estimated per entry); 0 turns it off.
    pub max_bytes: u64,
    /// How long a found link stays cached.
    #[serde(rename = "ttl_ms", deserialize_with = "millis")]
    pub ttl: Duration,
    /// How long "no such code" stays cached, so scanners cannot hammer the store.
    #[serde(rename = "negative_ttl_ms", deserialize_with = "millis")]
    pub negative_ttl: Duration,
    /// How long past its TTL a found link may still answer a redirect, while neither Redis
    /// nor the store can be read (0: never; such a redirect answers 503).
    #[serde(rename = "stale_if_error_ms", deserialize_with = "millis")]
    pub stale_if_error: Duration,
}

impl Default for LocalCacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(3600),
        }
    }
}

/// A deployment in several regions, each with its own replica of the DynamoDB table (a global
/// table). Unset (no name), kurz is a single-region deployment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionSettings {
    /// This region's name: its AWS region (`KURZ__REGION__NAME`).
    pub name: Option<String>,
    /// This region's number, 0 to 7 (`KURZ__REGION__ID`): which range of ids it mints codes
    /// from. A single-region deployment that adds regions becomes region 0, whose first range
    /// is the ids it has minted so far.
    pub id: Option<u8>,
    /// The other regions, `name=id`, or `name=id@endpoint` where the table is not at AWS's
    /// endpoint for the region (DynamoDB Local): comma-separated in the environment
    /// (`KURZ__REGION__PEERS`). Claims (aliases, idempotency keys, secrets), edits and
    /// deletes are decided in the home region of their code or name, and a lookup this
    /// region's replica misses is asked of the code's home region.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub peers: Vec<PeerRegion>,
    /// Where this region's DynamoDB Streams API is reached (`KURZ__REGION__STREAM_ENDPOINT_URL`):
    /// from a VPC without an internet route, the endpoint-specific name of its interface
    /// endpoint (the streams API has no private DNS name). Unset: `store.dynamodb.endpoint_url`
    /// when that is set (DynamoDB Local serves both), else AWS's endpoint for the region.
    pub stream_endpoint_url: Option<String>,
}

/// Another region of the deployment (see [`RegionSettings::peers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRegion {
    pub name: String,
    pub id: u8,
    pub endpoint_url: Option<String>,
}

impl FromStr for PeerRegion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = || format!("expected name=id or name=id@endpoint, got '{s}'");
        let (name, rest) = s.split_once('=').ok_or_else(expected)?;
        let (id, endpoint_url) = match rest.split_once('@') {
            Some((id, endpoint)) => (id, Some(endpoint.trim().to_owned())),
            None => (rest, None),
        };
        let name = name.trim();
        if name.is_empty() || endpoint_url.as_deref() == Some("") {
            return Err(expected());
        }
        let id = id.trim().parse().map_err(|_| expected())?;
        Ok(Self {
            name: name.to_owned(),
            id,
            endpoint_url,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdSettings {
    /// Ids leased from the store's counter in one call (1 to 1,000,000).
    pub block_size: u64,
    /// Key of the id -> code permutation. Unset, a random key is made at first start and kept
    /// in the store (shared by the fleet). Changing it on a live deployment changes which codes
    /// future ids map to (existing links keep their codes; collisions are still caught).
    pub permutation_key: Option<Secret>,
}

impl Default for IdSettings {
    fn default() -> Self {
        Self {
            block_size: 1_000,
            permutation_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickSettings {
    /// How often click deltas are written to the store.
    #[serde(rename = "flush_interval_ms", deserialize_with = "millis")]
    pub flush_interval: Duration,
    /// Most click deltas (one per code per flush interval) kept while the store fails; beyond
    /// that the oldest are dropped and counted in `kurz_clicks_dropped_total`.
    pub max_pending_codes: usize,
    /// Most clicks held in memory, recorded and not yet written (what a kill -9 can lose):
    /// beyond it, clicks are dropped and counted in `kurz_clicks_dropped_total`.
    pub max_pending_clicks: u64,
    /// Longest wait between flushes while they fail: the wait doubles (with jitter) from
    /// `flush_interval_ms` after each failed flush, up to this (never below the interval).
    #[serde(rename = "max_backoff_ms", deserialize_with = "millis")]
    pub max_backoff: Duration,
    /// Where flushed clicks go: `store`, written to the store by each instance, or `kinesis`,
    /// sent as events to a Kinesis stream that `kurz aggregate` writes to the store.
    pub sink: ClickSink,
    pub kinesis: KinesisSettings,
}

impl Default for ClickSettings {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            max_pending_codes: 1_000_000,
            max_pending_clicks: 1_000_000,
            max_backoff: Duration::from_secs(30),
            sink: ClickSink::Store,
            kinesis: KinesisSettings::default(),
        }
    }
}

/// Where flushed clicks go (`clicks.sink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ClickSink {
    /// Each instance writes its deltas to the store.
    Store,
    /// Each instance sends its deltas to `clicks.kinesis.stream`; `kurz aggregate` writes them.
    Kinesis,
}

impl TryFrom<String> for ClickSink {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.to_ascii_lowercase().as_str() {
            "store" => Ok(Self::Store),
            "kinesis" => Ok(Self::Kinesis),
            _ => Err(format!(
                "unknown click sink '{name}'; expected one of: store, kinesis"
            )),
        }
    }
}

/// The click stream (`clicks.sink = "kinesis"`): what instances send to and `kurz aggregate`
/// reads. The region and static credentials are `store.dynamodb`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisSettings {
    /// The stream's name (`kurz init` creates it).
    pub stream: String,
    /// Endpoint override, for a Kinesis emulator. Unset in production.
    pub endpoint_url: Option<String>,
    /// Shards `kurz init` creates the stream with (provisioned mode; see infra/CAPACITY.md).
    pub shards: u32,
    /// Most bytes of events an instance keeps while the stream does not take them; beyond it
    /// the oldest are dropped and their clicks counted in `kurz_click_stream_dropped_total`.
    pub max_queued_bytes: usize,
    /// How long after its first attempt a record the stream did not take is sent again; after
    /// that it is dropped and its clicks counted. `kurz aggregate` recognises a record sent
    /// twice within this (a put that timed out but landed), so it counts once.
    #[serde(rename = "resend_window_ms", deserialize_with = "millis")]
    pub resend_window: Duration,
    /// Upper bound on one call to the stream.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
}

impl Default for KinesisSettings {
    fn default() -> Self {
        Self {
            stream: "kurz-clicks".into(),
            endpoint_url: None,
            shards: 4,
            max_queued_bytes: 64 << 20,
            resend_window: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

/// `kurz aggregate`: reads the click stream, folds each link's events over a window and
/// writes them to the store once per window.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateSettings {
    /// How long events are folded before each link's are written (at least 10 s): a link
    /// clicked on every instance costs one write per window.
    #[serde(rename = "window_ms", deserialize_with = "millis")]
    pub window: Duration,
    /// How long a shard's lease lasts unrenewed: after a consumer dies, another takes its
    /// shards within about this. Renewed three times per lease.
    #[serde(rename = "lease_ms", deserialize_with = "millis")]
    pub lease: Duration,
    /// This consumer's name in the lease table; unset, one is made at start.
    pub worker_id: Option<String>,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            lease: Duration::from_secs(15),
            worker_id: None,
        }
    }
}

/// What a click records beyond its count (see `src/analytics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Off: clicks are counted (total, per hour and day) and nothing else is recorded.
    pub enabled: bool,
    /// A header naming the client's country (ISO 3166-1 alpha-2), set by a proxy in
    /// `server.trusted_proxies`, e.g. `CloudFront-Viewer-Country` or `CF-IPCountry`; believed
    /// from those proxies only.
    pub country_header: Option<String>,
    /// A MaxMind-format country database (GeoLite2-Country or GeoIP2-Country `.mmdb`), read at
    /// start-up and again on SIGHUP; used when the header says nothing.
    pub country_database: Option<PathBuf>,
    /// Most distinct values one link keeps per dimension per hour and per day; the rest are
    /// counted as `other`.
    pub max_values_per_dimension: usize,
    /// How long hourly rollups are kept; daily ones stay for the life of the link.
    pub hourly_retention_days: u32,
    /// Most clicks whose details (user agent, referrer, ...) wait in memory for the next
    /// flush; beyond it a click is counted without them (`kurz_analytics_visits_dropped_total`).
    pub max_pending_visits: usize,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            country_header: None,
            country_database: None,
            max_values_per_dimension: 50,
            hourly_retention_days: 30,
            max_pending_visits: 500_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Token for delete and stats (at least 16 characters); generated and printed at start-up
    /// when unset.
    pub admin_token: Option<Secret>,
    /// Keys allowed to create links (`Authorization: Bearer KEY`), at least 32 characters
    /// each. Empty: creation is open (see `open_creation`). In the environment:
    /// comma-separated.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub api_keys: Vec<Secret>,
    /// Allow creation without a key on an address other than loopback. Without it, kurz
    /// refuses to start there with no API keys.
    pub open_creation: bool,
    /// How often each instance reads the API keys from the store again (1-3600 s): the bound
    /// on how long a key created, revoked or rotated on another instance takes to apply here.
    #[serde(rename = "keys_refresh_s", deserialize_with = "seconds")]
    pub keys_refresh: Duration,
}

/// Secrets the docs show as samples, and kurz therefore refuses: anyone can read them.
const SAMPLE_SECRETS: &[&str] = &[
    "change-me-to-a-long-random-string",
    "key-for-service-a",
    "key-for-service-b",
];
const SAMPLE_REFUSED: &str = "is a sample or a placeholder from the docs: use random characters (e.g. `openssl rand -hex 24`)";

/// A value copied from the docs rather than made: a known sample, a `<placeholder>`, or one
/// that says to change it.
fn is_sample_secret(secret: &Secret) -> bool {
    let value = secret.expose().trim();
    let lower = value.to_ascii_lowercase();
    SAMPLE_SECRETS.contains(&value)
        || (value.starts_with('<') && value.ends_with('>'))
        || lower.contains("change-me")
        || lower.contains("changeme")
}

/// Longest `auth.keys_refresh_s`: a revoke should not take longer than this to reach a fleet.
pub const MAX_KEYS_REFRESH: Duration = Duration::from_secs(3600);

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_token: None,
            api_keys: Vec::new(),
            open_creation: false,
            keys_refresh: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest accepted request body (at least 1024).
    pub max_body_bytes: usize,
    /// Largest accepted bulk create body (`POST /api/v1/links/bulk`, up to 1,000 links).
    pub max_bulk_body_bytes: usize,
    /// Longest accepted long URL.
    pub max_url_bytes: NonZeroUsize,
    pub rate: RateSettings,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            // 1,000 links of about 1 KiB each; longer URLs need a larger setting.
            max_bulk_body_bytes: 1024 * 1024,
            max_url_bytes: NonZeroUsize::new(8 * 1024).unwrap_or(NonZeroUsize::MIN),
            rate: RateSettings::default(),
        }
    }
}

/// Rate limits, per minute: a client may spend the whole minute's allowance at once, and it
/// refills evenly over the minute. 0 turns a limit off. With Redis they hold for the fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateSettings {
    /// Creates by a caller without an API key, per client IP.
    pub creates_per_minute_per_ip: u32,
    /// Creates per API key.
    pub creates_per_minute_per_key: u32,
    /// Lookups of codes that exist nowhere (the redirect, `/{code}+`, the QR code and the
    /// anonymous link API), per client; the preview and the anonymous link API count every
    /// store read they make. A link that exists always redirects: once a client's budget is
    /// spent, its unknown codes answer 429 and its store reads share one such budget per
    /// instance.
    pub misses_per_minute_per_ip: u32,
    /// IPv6 clients are limited per prefix of this many bits (32 to 128): one host holds a
    /// whole /64 and could otherwise rotate addresses. IPv4 clients are limited per address.
    pub ipv6_prefix_len: u8,
    /// Failed authentications (a wrong API key or admin token), per client IP: past it, the
    /// client's requests with a token answer 429 before the token is checked.
    pub auth_failures_per_minute_per_ip: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            creates_per_minute_per_ip: 30,
            creates_per_minute_per_key: 6_000,
            misses_per_minute_per_ip: 600,
            ipv6_prefix_len: 64,
            auth_failures_per_minute_per_ip: 10,
        }
    }
}

/// Abuse controls.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AbuseSettings {
    /// A file of domains, one a line (`#` comments), subdomains included: refused at create
    /// (422) and answered 410 at redirect. Reloaded on SIGHUP.
    pub denylist_path: Option<PathBuf>,
    /// Hosts of other URL shorteners: long URLs pointing at them are refused (chains of
    /// shorteners hide the destination). Subdomains included.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub shortener_hosts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `kurz=debug,actix_web=info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OpenTelemetry receiver speaking OTLP/HTTP (a collector beside kurz, e.g.
    /// `http://127.0.0.1:4318`): spans are posted as JSON to `{it}/v1/traces`. Unset, nothing is
    /// traced.
    pub otlp_endpoint: Option<String>,
    /// Share of the traces started here that are recorded, 0 to 1 (decided by the trace id, so
    /// every instance decides alike). A trusted proxy's `traceparent` (or `X-Amzn-Trace-Id`
    /// with `Sampled=`) decides for the traces it names.
    pub sample_ratio: f64,
    /// `service.name` of every span.
    pub service_name: String,
    /// How often recorded spans are sent.
    #[serde(rename = "export_interval_ms", deserialize_with = "millis")]
    pub export_interval: Duration,
    /// Spans kept while the receiver does not take them; beyond it new ones are dropped and
    /// counted.
    pub max_queued_spans: usize,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 0.01,
            service_name: "kurz".into(),
            export_interval: Duration::from_secs(1),
            max_queued_spans: 20_000,
        }
    }
}

/// A secret string (token, key): `Debug` never shows it, and its memory is wiped on drop.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// An IP network (`10.0.0.0/8`), or a single address (`192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(Network)
            .map_err(|_| format!("'{s}' is neither an IP address nor a CIDR network"))
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A list, given as a TOML array or (as environment variables must) comma-separated.
fn list_or_comma_separated<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Settings {
    /// Defaults, then the TOML file if given, then `KURZ__*` environment variables; checked.
    /// Refuses a listener on a public address where anyone could create links: one with no
    /// API key, neither in the settings nor in the store (`keys_issued`; known only once the
    /// store is open), unless `auth.open_creation` says that is wanted.
    pub fn check_open_creation(&self, keys_issued: bool) -> Result<(), SettingsError> {
        if keys_issued
            || !self.auth.api_keys.is_empty()
            || self.auth.open_creation
            || self.server.bind.ip().is_loopback()
        {
            return Ok(());
        }
        Err(SettingsError::Invalid {
            key: "auth.open_creation",
            reason: format!(
                "kurz would listen on {} with no API keys, so anyone who can reach it could \
                 create links: set auth.api_keys (KURZ__AUTH__API_KEYS) or make a key with \
                 POST /api/v1/keys, or set auth.open_creation = true \
                 (KURZ__AUTH__OPEN_CREATION=true) to allow it",
                self.server.bind
            ),
        })
    }

    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, None)
    }

    /// As [`load`](Self::load), with `env` (names as in the environment, `KURZ__…`) standing in
    /// for the process environment when given: for tools and tests that check settings
    /// without touching the real environment.
    pub fn load_from(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let mut settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("KURZ")
                    .prefix_separator("__")
                    .separator("__")
                    .source(env),
            )
            .build()?
            .try_deserialize()?;
        settings.check()?;
        settings
            .store
            .code_layout_key
            .clone_from(&settings.ids.permutation_key);
        settings.store.region_id = settings.region.id;
        Ok(settings)
    }

    /// What the types alone cannot say; run once, by `load`.
    fn check(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: &str| {
            Err(SettingsError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if !(1..=1_000_000).contains(&self.ids.block_size) {
            return invalid("ids.block_size", "must be between 1 and 1000000");
        }
        if self
            .ids
            .permutation_key
            .as_ref()
            .is_some_and(|k| k.expose().len() < 16)
        {
            return invalid("ids.permutation_key", "must be at least 16 characters long");
        }
        if self.clicks.flush_interval.is_zero() {
            return invalid("clicks.flush_interval_ms", "must be at least 1");
        }
        if self.clicks.max_pending_clicks == 0 {
            return invalid("clicks.max_pending_clicks", "must be at least 1");
        }
        if self.clicks.sink == ClickSink::Kinesis && self.store.backend != Backend::Dynamodb {
            return invalid(
                "clicks.sink",
                "'kinesis' needs store.backend = 'dynamodb' (kurz aggregate keeps its leases there)",
            );
        }
        if self.clicks.kinesis.stream.is_empty() {
            return invalid("clicks.kinesis.stream", "must not be empty");
        }
        if !(1..=10_000).contains(&self.clicks.kinesis.shards) {
            return invalid("clicks.kinesis.shards", "must be between 1 and 10000");
        }
        if self.clicks.kinesis.max_queued_bytes < MAX_RECORD_BYTES {
            return invalid(
                "clicks.kinesis.max_queued_bytes",
                "must be at least 1048576 (one record)",
            );
        }
        if self.clicks.kinesis.timeout.is_zero() {
            return invalid("clicks.kinesis.timeout_ms", "must be at least 1");
        }
        if self.aggregate.window < MIN_AGGREGATE_WINDOW {
            return invalid("aggregate.window_ms", "must be at least 10000");
        }
        if self.aggregate.lease < Duration::from_secs(3) {
            return invalid("aggregate.lease_ms", "must be at least 3000");
        }
        if !(1..=10_000).contains(&self.analytics.max_values_per_dimension) {
            return invalid(
                "analytics.max_values_per_dimension",
                "must be between 1 and 10000",
            );
        }
        if !(1..=3_660).contains(&self.analytics.hourly_retention_days) {
            return invalid(
                "analytics.hourly_retention_days",
                "must be between 1 and 3660",
            );
        }
        if self.store.timeout.is_zero() {
            return invalid("store.timeout_ms", "must be at least 1");
        }
        if self.store.purge_expired_after > MAX_PURGE_EXPIRED_AFTER {
            return invalid(
                "store.purge_expired_after_s",
                "must be at most 315360000 (ten years); 0 never purges",
            );
        }
        if self.store.purge_interval.is_zero() || self.store.purge_interval > MAX_PURGE_INTERVAL {
            return invalid("store.purge_interval_s", "must be between 1 and 86400");
        }
        if !(1..=MAX_PURGE_BATCH).contains(&self.store.purge_batch) {
            return invalid("store.purge_batch", "must be between 1 and 10000");
        }
        let dynamo = &self.store.dynamodb;
        let admission = &dynamo.admission;
        if !(admission.min_limit..=admission.max_limit).contains(&admission.initial_limit) {
            return invalid(
                "store.dynamodb.admission.initial_limit",
                "must lie between min_limit and max_limit",
            );
        }
        if admission.latency_target.is_zero() || admission.latency_target >= self.store.timeout {
            return invalid(
                "store.dynamodb.admission.latency_target_ms",
                "must be at least 1 and below store.timeout_ms",
            );
        }
        if dynamo.retry_budget_percent > 100 {
            return invalid(
                "store.dynamodb.retry_budget_percent",
                "must be between 0 and 100",
            );
        }
        if dynamo.table.is_empty() {
            return invalid("store.dynamodb.table", "must not be empty");
        }
        if dynamo.access_key_id.is_some() != dynamo.secret_access_key.is_some() {
            return invalid(
                "store.dynamodb.access_key_id",
                "set both access_key_id and secret_access_key, or neither",
            );
        }
        if self.limits.max_body_bytes < 1024 {
            return invalid("limits.max_body_bytes", "must be at least 1024");
        }
        if self.limits.max_bulk_body_bytes < self.limits.max_body_bytes {
            return invalid(
                "limits.max_bulk_body_bytes",
                "must be at least limits.max_body_bytes",
            );
        }
        if !(32..=128).contains(&self.limits.rate.ipv6_prefix_len) {
            return invalid(
                "limits.rate.ipv6_prefix_len",
                "must be between 32 and 128 (bits of an IPv6 address that name one client)",
            );
        }
        let redis = &self.cache.redis;
        if let Some(url) = &redis.url
            && !["redis://", "rediss://", "unix://"]
                .iter()
                .any(|scheme| url.expose().starts_with(scheme))
        {
            return invalid(
                "cache.redis.url",
                "expected redis://host:port (or rediss://, unix://)",
            );
        }
        if redis.timeout.is_zero() {
            return invalid("cache.redis.timeout_ms", "must be at least 1");
        }
        if redis.tombstone_ttl <= redis.timeout {
            return invalid(
                "cache.redis.tombstone_ttl_ms",
                "must be above cache.redis.timeout_ms (loads write to Redis only within it)",
            );
        }
        if let Some(token) = &self.auth.admin_token
            && token.expose().len() < 16
        {
            return invalid("auth.admin_token", "must be at least 16 characters long");
        }
        if self.auth.admin_token.iter().any(is_sample_secret) {
            return invalid("auth.admin_token", SAMPLE_REFUSED);
        }
        if self.auth.api_keys.iter().any(is_sample_secret) {
            return invalid("auth.api_keys", SAMPLE_REFUSED);
        }
        if self.auth.keys_refresh.is_zero() || self.auth.keys_refresh > MAX_KEYS_REFRESH {
            return invalid(
                "auth.keys_refresh_s",
                "must be from 1 to 3600 seconds: it bounds how long a revoked API key keeps \
                 working on other instances",
            );
        }
        if self.auth.api_keys.iter().any(|k| k.expose().len() < 32) {
            return invalid(
                "auth.api_keys",
                "every API key must be at least 32 characters long (e.g. `openssl rand -hex 24`)",
            );
        }
        self.check_regions()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &e.to_string());
        }
        let telemetry = &self.telemetry;
        if let Some(endpoint) = &telemetry.otlp_endpoint
            && let Err(reason) = crate::telemetry::OtlpEndpoint::parse(endpoint)
        {
            return invalid("telemetry.otlp_endpoint", &reason);
        }
        if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
            return invalid("telemetry.sample_ratio", "must be between 0 and 1");
        }
        if telemetry.service_name.is_empty() {
            return invalid("telemetry.service_name", "must not be empty");
        }
        if telemetry.export_interval.is_zero() {
            return invalid("telemetry.export_interval_ms", "must be at least 1");
        }
        if telemetry.max_queued_spans == 0 {
            return invalid("telemetry.max_queued_spans", "must be at least 1");
        }
        Ok(())
    }
}

impl Settings {
    /// `region.*`: a name and a number together, a number with room in the id space, peers of
    /// distinct numbers, and a store the regions can share.
    fn check_regions(&self) -> Result<(), SettingsError> {
        let region = &self.region;
        let invalid = |key, reason: String| Err(SettingsError::Invalid { key, reason });
        let max = crate::code::region::MAX_REGIONS;
        match (&region.name, region.id) {
            (None, None) if region.peers.is_empty() => return Ok(()),
            (None, None) => {
                return invalid(
                    "region.peers",
                    "other regions need region.name and region.id for this one".into(),
                );
            }
            (Some(name), Some(id)) if !name.trim().is_empty() && id < max => {}
            (Some(_), Some(id)) if id >= max => {
                return invalid("region.id", format!("must be between 0 and {}", max - 1));
            }
            _ => {
                return invalid(
                    "region.name",
                    "set both region.name and region.id (KURZ__REGION__NAME and KURZ__REGION__ID), or neither"
                        .into(),
                );
            }
        }
        if self.store.backend != Backend::Dynamodb {
            return invalid(
                "region.name",
                "regions share a DynamoDB global table: set store.backend = 'dynamodb'".into(),
            );
        }
        let mut ids = vec![region.id.unwrap_or_default()];
        for peer in &region.peers {
            if peer.id >= max {
                return invalid(
                    "region.peers",
                    format!("{}: a region's id is 0 to {}", peer.name, max - 1),
                );
            }
            if ids.contains(&peer.id) {
                return invalid(
                    "region.peers",
                    format!("{}: region id {} is given twice", peer.name, peer.id),
                );
            }
            ids.push(peer.id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The quoted values of every `admin_token = …` and `api_keys = […]` line in the docs
    /// people copy settings from.
    fn documented_sample_secrets() -> Vec<(&'static str, String)> {
        let mut samples = Vec::new();
        for page in [
            include_str!("../README.md"),
            include_str!("../infra/README.md"),
        ] {
            for line in page.lines() {
                let line = line.trim();
                let setting = if line.starts_with("admin_token =") {
                    "auth.admin_token"
                } else if line.starts_with("api_keys =") {
                    "auth.api_keys"
                } else {
                    continue;
                };
                for (i, quoted) in line.split('"').enumerate() {
                    if i % 2 == 1 {
                        samples.push((setting, quoted.to_owned()));
                    }
                }
            }
        }
        samples
    }

    #[test]
    fn the_sample_secrets_in_the_docs_are_refused_at_start_up() {
        let samples = documented_sample_secrets();
        assert!(samples.len() >= 2, "{samples:?}");
        for (setting, value) in samples {
            let mut settings = Settings::default();
            match setting {
                "auth.admin_token" => settings.auth.admin_token = Some(Secret::new(&value)),
                _ => settings.auth.api_keys = vec![Secret::new(&value)],
            }
            match settings.check() {
                Err(SettingsError::Invalid { key, .. }) if key == setting => {}
                other => panic!("the sample {setting} '{value}' is not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn regions_come_from_the_environment_and_are_checked() {
        let dynamo = [
            ("KURZ__STORE__BACKEND", "dynamodb"),
            ("KURZ__REGION__NAME", "eu-west-1"),
            ("KURZ__REGION__ID", "1"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let pairs: Vec<_> = dynamo.iter().chain(extra).copied().collect();
            Settings::load_from(None, env(&pairs))
        };
        let s = with(&[(
            "KURZ__REGION__PEERS",
            "us-east-1=0, ap-south-1=2@http://10.0.2.1:8000",
        )])
        .expect("valid regions");
        assert_eq!(s.region.name.as_deref(), Some("eu-west-1"));
        assert_eq!((s.region.id, s.store.region_id), (Some(1), Some(1)));
        assert_eq!(
            s.region.peers,
            vec![
                PeerRegion {
                    name: "us-east-1".into(),
                    id: 0,
                    endpoint_url: None
                },
                PeerRegion {
                    name: "ap-south-1".into(),
                    id: 2,
                    endpoint_url: Some("http://10.0.2.1:8000".into())
                },
            ]
        );
        // Unset: one region, as ever.
        let single = Settings::load_from(None, env(&[])).expect("defaults");
        assert_eq!((single.region.name, single.store.region_id), (None, None));

        let refused = [
            ("KURZ__REGION__PEERS", "us-east-1=1", "region.peers"),
            ("KURZ__REGION__PEERS", "us-east-1", "region.peers"),
            ("KURZ__REGION__PEERS", "us-east-1=9", "region.peers"),
            ("KURZ__REGION__ID", "8", "region.id"),
            ("KURZ__STORE__BACKEND", "embedded", "region.name"),
        ];
        for (name, value, setting) in refused {
            let mut pairs: Vec<_> = dynamo.iter().filter(|(n, _)| *n != name).copied().collect();
            pairs.push((name, value));
            match Settings::load_from(None, env(&pairs)) {
                Err(SettingsError::Invalid { key, .. }) if key == setting => {}
                // A peer that does not parse is refused by the parser, naming the value.
                Err(SettingsError::Load(e)) if setting == "region.peers" => {
                    assert!(e.to_string().contains("name=id"), "{e}");
                }
                other => panic!("{name}={value}: {other:?}"),
            }
        }
        let no_id = Settings::load_from(None, env(&[("KURZ__REGION__NAME", "eu-west-1")]));
        assert!(matches!(
            no_id,
            Err(SettingsError::Invalid {
                key: "region.name",
                ..
            })
        ));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let mut settings = Settings::default();
        settings.auth.admin_token = Some(Secret::new("super-secret-admin-token"));
        settings.auth.api_keys = vec![Secret::new("key-one-secret")];
        let text = format!("{settings:?}");
        assert!(!text.contains("super-secret"), "{text}");
        assert!(!text.contains("key-one"), "{text}");
        settings.ids.permutation_key = Some(Secret::new("permutation-key-secret"));
        assert!(!format!("{settings:?}").contains("permutation-key-secret"));
    }

    #[test]
    fn defaults_load_and_pass_the_checks() {
        let s = Settings::load_from(None, env(&[])).expect("defaults load");
        assert_eq!(s.server.bind, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(s.store.timeout, Duration::from_secs(3));
    }

    #[test]
    fn values_are_parsed_into_their_types_at_load() {
        let s = Settings::load_from(
            None,
            env(&[
                ("KURZ__SERVER__BIND", "0.0.0.0:9000"),
                ("KURZ__SERVER__PUBLIC_BASE_URL", "https://kurz.example/"),
                ("KURZ__SERVER__SHUTDOWN_TIMEOUT_S", "7"),
                ("KURZ__STORE__TIMEOUT_MS", "1500"),
                (
                    "KURZ__AUTH__API_KEYS",
                    "key-one-0123456789abcdef0123456789, key-two-0123456789abcdef0123456789 ,",
                ),
                ("KURZ__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7"),
                ("KURZ__TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("KURZ__TELEMETRY__SAMPLE_RATIO", "0.25"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            s.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert!((s.telemetry.sample_ratio - 0.25).abs() < f64::EPSILON);
        assert_eq!(s.server.bind.port(), 9000);
        let base = s.server.public_base_url.expect("base url");
        assert_eq!(base.as_str(), "https://kurz.example");
        assert_eq!(s.server.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(s.store.timeout, Duration::from_millis(1500));
        let keys: Vec<&str> = s.auth.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(
            keys,
            [
                "key-one-0123456789abcdef0123456789",
                "key-two-0123456789abcdef0123456789"
            ]
        );
        assert_eq!(s.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (key, value, named) in [
            ("KURZ__SERVER__BIND", "localhost", "server.bind"),
            ("KURZ__SERVER__WORKERS", "0", "server.workers"),
            ("KURZ__IDS__BLOCK_SIZE", "0", "ids.block_size"),
            (
                "KURZ__LIMITS__MAX_BODY_BYTES",
                "10",
                "limits.max_body_bytes",
            ),
            ("KURZ__CACHE__REDIS__URL", "http://x", "cache.redis.url"),
            ("KURZ__LOG__LEVEL", "kurz=loud", "log.level"),
            ("KURZ__AUTH__API_KEYS", "short-key", "auth.api_keys"),
            ("KURZ__AUTH__KEYS_REFRESH_S", "0", "auth.keys_refresh_s"),
            ("KURZ__AUTH__KEYS_REFRESH_S", "86400", "auth.keys_refresh_s"),
            (
                "KURZ__LIMITS__RATE__IPV6_PREFIX_LEN",
                "16",
                "limits.rate.ipv6_prefix_len",
            ),
            (
                "KURZ__LIMITS__RATE__IPV6_PREFIX_LEN",
                "129",
                "limits.rate.ipv6_prefix_len",
            ),
            (
                "KURZ__SERVER__TRUSTED_PROXIES",
                "10.0.0.0/33",
                "server.trusted_proxies",
            ),
            (
                "KURZ__STORE__DYNAMODB__ADMISSION__MAX_LIMIT",
                "8",
                "store.dynamodb.admission.initial_limit",
            ),
            (
                "KURZ__STORE__DYNAMODB__ADMISSION__LATENCY_TARGET_MS",
                "3000",
                "store.dynamodb.admission.latency_target_ms",
            ),
            (
                "KURZ__STORE__DYNAMODB__RETRY_BUDGET_PERCENT",
                "150",
                "store.dynamodb.retry_budget_percent",
            ),
            (
                "KURZ__STORE__PURGE_EXPIRED_AFTER_S",
                "315360001",
                "store.purge_expired_after_s",
            ),
            (
                "KURZ__STORE__PURGE_INTERVAL_S",
                "0",
                "store.purge_interval_s",
            ),
            ("KURZ__STORE__PURGE_BATCH", "0", "store.purge_batch"),
            (
                "KURZ__TELEMETRY__OTLP_ENDPOINT",
                "https://collector.example",
                "telemetry.otlp_endpoint",
            ),
            (
                "KURZ__TELEMETRY__OTLP_ENDPOINT",
                "collector:4318",
                "telemetry.otlp_endpoint",
            ),
            (
                "KURZ__TELEMETRY__SAMPLE_RATIO",
                "1.5",
                "telemetry.sample_ratio",
            ),
            (
                "KURZ__TELEMETRY__SAMPLE_RATIO",
                "NaN",
                "telemetry.sample_ratio",
            ),
        ] {
            let err = Settings::load_from(None, env(&[(key, value)])).expect_err(key);
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn toml_file_sets_values_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kurz.toml");
        std::fs::write(
            &path,
            "[server]\nbind = \"127.0.0.1:9999\"\n[auth]\napi_keys = [\"a0123456789abcdef0123456789abcdef\", \"b0123456789abcdef0123456789abcdef\"]\n",
        )
        .expect("write");
        let s = Settings::load_from(Some(&path), env(&[])).expect("loads");
        assert_eq!(s.server.bind.port(), 9999);
        assert_eq!(s.auth.api_keys.len(), 2);

        std::fs::write(&path, "[server]\nbnid = \"127.0.0.1:9999\"\n").expect("write");
        let err = Settings::load_from(Some(&path), env(&[])).expect_err("typo rejected");
        assert!(err.to_string().contains("bnid"), "{err}");
    }

    #[test]
    fn a_public_listener_needs_a_key_in_the_settings_or_the_store_or_open_creation() {
        let mut s = Settings::default();
        s.server.bind = "0.0.0.0:8080".parse().expect("addr");
        let Err(SettingsError::Invalid { key, .. }) = s.check_open_creation(false) else {
            panic!("no key anywhere on a public address is refused");
        };
        assert_eq!(key, "auth.open_creation");
        assert!(
            s.check_open_creation(true).is_ok(),
            "a key made with the API"
        );
        s.auth.api_keys = vec![Secret::new("k0123456789abcdef0123456789abcdef")];
        assert!(s.check_open_creation(false).is_ok(), "a settings key");
        s.auth.api_keys.clear();
        s.auth.open_creation = true;
        assert!(s.check_open_creation(false).is_ok(), "asked for");
        s.auth.open_creation = false;
        s.server.bind = "127.0.0.1:8080".parse().expect("addr");
        assert!(s.check_open_creation(false).is_ok(), "loopback");
    }
}
