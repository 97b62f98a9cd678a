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
use std::time::Duration;

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
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
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
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            workers: None,
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Backend {
    /// A redb file on local disk: nothing else to install.
    Embedded,
    /// Amazon DynamoDB: the production store shared by many instances.
    Dynamodb,
}

impl Backend {
    pub const NAMES: &[&str] = &["embedded", "dynamodb"];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Dynamodb => "dynamodb",
        }
    }
}

impl TryFrom<String> for Backend {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.to_ascii_lowercase().as_str() {
            "embedded" => Ok(Backend::Embedded),
            "dynamodb" => Ok(Backend::Dynamodb),
            _ => Err(format!(
                "unknown store backend '{name}'; expected one of: {}",
                Backend::NAMES.join(", ")
            )),
        }
    }
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
    pub dynamodb: DynamoSettings,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            path: PathBuf::from("./data/kurz.redb"),
            timeout: Duration::from_secs(3),
            dynamodb: DynamoSettings::default(),
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
    /// Upper bound on one HTTP attempt; the SDK retries within `store.timeout_ms`.
    #[serde(rename = "attempt_timeout_ms", deserialize_with = "millis")]
    pub attempt_timeout: Duration,
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// Attempts per call (standard retry mode, exponential backoff with jitter).
    pub max_attempts: NonZeroU32,
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
            flush_concurrency: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    pub local: LocalCacheSettings,
    pub redis: RedisSettings,
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
}

impl Default for LocalCacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
        }
    }
}

/// The built-in permutation key: fine for a laptop, predictable for a public deployment.
pub const DEFAULT_PERMUTATION_KEY: &str = "kurz-default-permutation-key";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdSettings {
    /// Ids leased from the store's counter in one call (1 to 1,000,000).
    pub block_size: u64,
    /// Key of the id -> code permutation. Changing it on a live deployment changes which codes
    /// future ids map to (existing links keep their codes; collisions are still caught).
    pub permutation_key: Secret,
}

impl Default for IdSettings {
    fn default() -> Self {
        Self {
            block_size: 1_000,
            permutation_key: Secret::new(DEFAULT_PERMUTATION_KEY),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickSettings {
    /// How often click deltas are written to the store.
    #[serde(rename = "flush_interval_ms", deserialize_with = "millis")]
    pub flush_interval: Duration,
    /// Most distinct codes whose unflushed clicks are kept while the store fails; beyond that
    /// clicks are dropped and counted in `kurz_clicks_dropped_total`.
    pub max_pending_codes: usize,
}

impl Default for ClickSettings {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            max_pending_codes: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Token for delete and stats (at least 16 characters); generated and printed at start-up
    /// when unset.
    pub admin_token: Option<Secret>,
    /// Keys allowed to create links (`Authorization: Bearer KEY`). Empty: creation is open.
    /// In the environment: comma-separated.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub api_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest accepted request body (at least 1024).
    pub max_body_bytes: usize,
    /// Longest accepted long URL.
    pub max_url_bytes: NonZeroUsize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            max_url_bytes: NonZeroUsize::new(8 * 1024).unwrap_or(NonZeroUsize::MIN),
        }
    }
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

fn list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
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
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(Secret::new)
        .collect())
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
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("KURZ")
                    .prefix_separator("__")
                    .separator("__")
                    .source(env),
            )
            .build()?
            .try_deserialize()?;
        settings.check()?;
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
        if self.ids.permutation_key.expose().is_empty() {
            return invalid("ids.permutation_key", "must not be empty");
        }
        if self.clicks.flush_interval.is_zero() {
            return invalid("clicks.flush_interval_ms", "must be at least 1");
        }
        if self.store.timeout.is_zero() {
            return invalid("store.timeout_ms", "must be at least 1");
        }
        let dynamo = &self.store.dynamodb;
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
        if let Some(token) = &self.auth.admin_token
            && token.expose().len() < 16
        {
            return invalid("auth.admin_token", "must be at least 16 characters long");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &e.to_string());
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

    #[test]
    fn secrets_never_show_in_debug() {
        let mut settings = Settings::default();
        settings.auth.admin_token = Some(Secret::new("super-secret-admin-token"));
        settings.auth.api_keys = vec![Secret::new("key-one-secret")];
        let text = format!("{settings:?}");
        assert!(!text.contains("super-secret"), "{text}");
        assert!(!text.contains("key-one"), "{text}");
        assert!(!text.contains("kurz-default-permutation-key"), "{text}");
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
                ("KURZ__AUTH__API_KEYS", "one, two ,"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.server.bind.port(), 9000);
        let base = s.server.public_base_url.expect("base url");
        assert_eq!(base.as_str(), "https://kurz.example");
        assert_eq!(s.server.shutdown_timeout, Duration::from_secs(7));
        assert_eq!(s.store.timeout, Duration::from_millis(1500));
        let keys: Vec<&str> = s.auth.api_keys.iter().map(Secret::expose).collect();
        assert_eq!(keys, ["one", "two"]);
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
            "[server]\nbind = \"127.0.0.1:9999\"\n[auth]\napi_keys = [\"a\", \"b\"]\n",
        )
        .expect("write");
        let s = Settings::load_from(Some(&path), env(&[])).expect("loads");
        assert_eq!(s.server.bind.port(), 9999);
        assert_eq!(s.auth.api_keys.len(), 2);

        std::fs::write(&path, "[server]\nbnid = \"127.0.0.1:9999\"\n").expect("write");
        let err = Settings::load_from(Some(&path), env(&[])).expect_err("typo rejected");
        assert!(err.to_string().contains("bnid"), "{err}");
    }
}
