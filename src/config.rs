//! Typed settings, loaded once at start-up and passed down explicitly.
//!
//! Layers, later wins: built-in defaults (the `Default` impls below, the only place a default
//! lives) < an optional TOML file (`--config PATH`) < environment variables named
//! `KURZ__SECTION__KEY` (e.g. `KURZ__SERVER__BIND`). Unknown keys and malformed values stop
//! start-up with a message naming the setting, so a typo never silently falls back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    pub bind: String,
    /// Base of every `short_url`, e.g. `https://kurz.example`. Defaults to the bound address.
    pub public_base_url: Option<String>,
    /// Worker threads; defaults to the number of CPU cores.
    pub workers: Option<usize>,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout_s: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            public_base_url: None,
            workers: None,
            shutdown_timeout_s: 10,
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
    pub timeout_ms: u64,
    pub dynamodb: DynamoSettings,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            path: PathBuf::from("./data/kurz.redb"),
            timeout_ms: 3_000,
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
    pub attempt_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Attempts per call (standard retry mode, exponential backoff with jitter).
    pub max_attempts: u32,
    /// Concurrent writes when flushing click counts.
    pub flush_concurrency: usize,
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
            attempt_timeout_ms: 1_000,
            connect_timeout_ms: 1_000,
            max_attempts: 3,
            flush_concurrency: 16,
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
    pub pool_size: usize,
    /// Upper bound on one Redis call, connection included. A redirect never waits longer
    /// than this because of Redis.
    pub timeout_ms: u64,
    /// Prefix of every key and of the invalidation channel, so instances of different
    /// deployments can share one Redis.
    pub key_prefix: String,
    /// How long a link stays in Redis (never past the link's expiry).
    pub ttl_ms: u64,
    /// How long "no such code" stays in Redis.
    pub negative_ttl_ms: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one call probes Redis again.
    pub breaker_cool_off_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 32,
            timeout_ms: 50,
            key_prefix: "kurz:".into(),
            ttl_ms: 3_600_000,
            negative_ttl_ms: 5_000,
            breaker_threshold: 5,
            breaker_cool_off_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCacheSettings {
    /// Memory budget of the in-process cache, in bytes (estimated per entry); 0 turns it off.
    pub max_bytes: u64,
    /// How long a found link stays cached.
    pub ttl_ms: u64,
    /// How long "no such code" stays cached, so scanners cannot hammer the store.
    pub negative_ttl_ms: u64,
}

impl Default for LocalCacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            ttl_ms: 60_000,
            negative_ttl_ms: 5_000,
        }
    }
}

/// The built-in permutation key: fine for a laptop, predictable for a public deployment.
pub const DEFAULT_PERMUTATION_KEY: &str = "kurz-default-permutation-key";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdSettings {
    /// Ids leased from the store's counter in one call.
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
    pub flush_interval_ms: u64,
    /// Most distinct codes whose unflushed clicks are kept while the store fails; beyond that
    /// clicks are dropped and counted in `kurz_clicks_dropped_total`.
    pub max_pending_codes: usize,
}

impl Default for ClickSettings {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1_000,
            max_pending_codes: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Token for delete and stats; generated and printed at start-up when unset.
    pub admin_token: Option<Secret>,
    /// Keys allowed to create links (`Authorization: Bearer KEY`). Empty: creation is open.
    /// In the environment: comma-separated.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub api_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest accepted long URL.
    pub max_url_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            max_url_bytes: 8 * 1024,
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

/// A secret string (token, key). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
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
        .map(Secret)
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
    /// Defaults, then the TOML file if given, then `KURZ__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
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
                    .separator("__"),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; `load` calls it, and so does start-up.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: &str| {
            Err(SettingsError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return invalid(
                "server.bind",
                "expected IP:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
            );
        }
        if let Some(base) = &self.server.public_base_url
            && crate::links::BaseUrl::parse(base).is_none()
        {
            return invalid(
                "server.public_base_url",
                "expected an absolute http(s) URL such as https://kurz.example",
            );
        }
        if self.server.workers == Some(0) {
            return invalid("server.workers", "must be at least 1");
        }
        if self.ids.block_size == 0 || self.ids.block_size > 1_000_000 {
            return invalid("ids.block_size", "must be between 1 and 1000000");
        }
        if self.ids.permutation_key.expose().is_empty() {
            return invalid("ids.permutation_key", "must not be empty");
        }
        if self.clicks.flush_interval_ms == 0 {
            return invalid("clicks.flush_interval_ms", "must be at least 1");
        }
        if self.store.timeout_ms == 0 {
            return invalid("store.timeout_ms", "must be at least 1");
        }
        let dynamo = &self.store.dynamodb;
        if dynamo.table.is_empty() {
            return invalid("store.dynamodb.table", "must not be empty");
        }
        if dynamo.max_attempts == 0 || dynamo.flush_concurrency == 0 {
            return invalid(
                "store.dynamodb",
                "max_attempts and flush_concurrency must be at least 1",
            );
        }
        if dynamo.access_key_id.is_some() != dynamo.secret_access_key.is_some() {
            return invalid(
                "store.dynamodb.access_key_id",
                "set both access_key_id and secret_access_key, or neither",
            );
        }
        if self.limits.max_url_bytes == 0 || self.limits.max_body_bytes < 1024 {
            return invalid(
                "limits",
                "max_url_bytes must be positive and max_body_bytes at least 1024",
            );
        }
        let redis = &self.cache.redis;
        if let Some(url) = &redis.url
            && !url.expose().starts_with("redis://")
            && !url.expose().starts_with("rediss://")
            && !url.expose().starts_with("unix://")
        {
            return invalid(
                "cache.redis.url",
                "expected redis://host:port (or rediss://, unix://)",
            );
        }
        if redis.pool_size == 0 || redis.timeout_ms == 0 || redis.breaker_threshold == 0 {
            return invalid(
                "cache.redis",
                "pool_size, timeout_ms and breaker_threshold must be at least 1",
            );
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

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn defaults_are_valid() {
        Settings::default().validate().expect("defaults validate");
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
        let s = Settings::load(Some(&path)).expect("loads");
        assert_eq!(s.server.bind, "127.0.0.1:9999");
        assert_eq!(s.auth.api_keys.len(), 2);

        std::fs::write(&path, "[server]\nbnid = \"127.0.0.1:9999\"\n").expect("write");
        let err = Settings::load(Some(&path)).expect_err("typo rejected");
        assert!(err.to_string().contains("bnid"), "{err}");
    }
}
