//! The real app in this process, on port 0, with a store of its own (a temporary redb file, or
//! a fresh table on the shared DynamoDB Local) and a manual clock the test moves.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kurz::clock::Clock;
use kurz::config::{Secret, Settings};
use kurz::startup::Application;
use serde_json::{Value, json};

use super::servers::DynamoLocal;
use super::{ADMIN_TOKEN, client, unique_name};

/// Settings for a test instance: port 0, a fresh data file, fast click flushes.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".parse().expect("address");
    s.server.workers = std::num::NonZeroUsize::new(2);
    s.store.path = data_dir.join("kurz.redb");
    s.auth.admin_token = Some(Secret::new(ADMIN_TOKEN));
    s.clicks.flush_interval = Duration::from_millis(100);
    s.log.level = "warn".into();
    // The suite is one trusted client making many requests; tests of the limits set them.
    s.limits.rate = kurz::config::RateSettings {
        creates_per_minute_per_ip: 0,
        creates_per_minute_per_key: 0,
        misses_per_minute_per_ip: 0,
        auth_failures_per_minute_per_ip: 0,
        ..kurz::config::RateSettings::default()
    };
    s
}

/// Production's store timeouts and admission control, instead of the lenient ones the
/// harness gives DynamoDB Local (see [`TestStore::settings`]): for tests and benchmarks of
/// overload.
pub fn production_store_timeouts(s: &mut Settings) {
    let defaults = Settings::default();
    s.store.timeout = defaults.store.timeout;
    s.store.dynamodb.attempt_timeout = defaults.store.dynamodb.attempt_timeout;
    s.store.dynamodb.connect_timeout = defaults.store.dynamodb.connect_timeout;
    s.store.dynamodb.admission = defaults.store.dynamodb.admission;
}

/// The store backends the behavioural suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Dynamodb,
}

/// A store of its own for a test: a temporary redb file, or a fresh table on the shared
/// DynamoDB Local (created with `kurz::store::init`, as `kurz init` would).
pub struct TestStore {
    pub backend: Backend,
    dir: tempfile::TempDir,
    pub table: String,
    pub endpoint: String,
}

impl TestStore {
    pub async fn new(backend: Backend) -> Self {
        let endpoint = match backend {
            Backend::Embedded => String::new(),
            Backend::Dynamodb => DynamoLocal::shared().endpoint.clone(),
        };
        Self::with_endpoint(backend, endpoint).await
    }

    /// A fresh table on the DynamoDB Local at `endpoint`.
    pub async fn with_endpoint(backend: Backend, endpoint: String) -> Self {
        let store = Self {
            backend,
            dir: tempfile::tempdir().expect("tempdir"),
            table: unique_name("kurz_test"),
            endpoint,
        };
        if backend == Backend::Dynamodb {
            kurz::store::init(&store.settings().store)
                .await
                .expect("kurz init creates the test table");
        }
        store
    }

    /// The same table on the DynamoDB Local at `endpoint`: another region's replica of a
    /// global table (same name), empty, for a deployment in two regions.
    pub async fn replica_at(&self, endpoint: String) -> Self {
        let store = Self {
            backend: Backend::Dynamodb,
            dir: tempfile::tempdir().expect("tempdir"),
            table: self.table.clone(),
            endpoint,
        };
        kurz::store::init(&store.settings().store)
            .await
            .expect("kurz init creates the replica's table");
        store
    }

    /// The `KURZ__` variables that point a `kurz` command at this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let settings = self.settings();
        let mut env = vec![
            (
                "KURZ__STORE__PATH",
                settings.store.path.display().to_string(),
            ),
            ("KURZ__SERVER__BIND", "127.0.0.1:0".to_owned()),
            ("KURZ__AUTH__ADMIN_TOKEN", super::ADMIN_TOKEN.to_owned()),
            ("KURZ__LOG__LEVEL", "warn".to_owned()),
        ];
        if self.backend == Backend::Dynamodb {
            env.extend(dynamo_env(&self.table, &self.endpoint));
        }
        env
    }

    /// Settings for an instance on this store.
    ///
    /// On DynamoDB Local the store timeouts are far above production's: the emulator runs on
    /// the same two cores as the whole suite, a cold JVM answers in seconds, and a test about
    /// codes or clicks must not fail because the emulator was slow. Tests about timeouts set
    /// their own.
    pub fn settings(&self) -> Settings {
        let mut s = test_settings(self.dir.path());
        if self.backend == Backend::Dynamodb {
            s.store.backend = kurz::config::Backend::Dynamodb;
            s.store.timeout = Duration::from_secs(30);
            let d = &mut s.store.dynamodb;
            d.attempt_timeout = Duration::from_secs(15);
            d.connect_timeout = Duration::from_secs(5);
            // For the same reason admission control does not shed here: a slow emulator is
            // not an overloaded table. The overload tests set production's values.
            d.admission.latency_target = Duration::from_secs(10);
            d.admission.queue_timeout = Duration::from_secs(10);
            d.admission.initial_limit = d.admission.max_limit;
            d.table.clone_from(&self.table);
            d.endpoint_url = Some(self.endpoint.clone());
            d.region = Some("us-east-1".into());
            d.access_key_id = Some(Secret::new("local"));
            d.secret_access_key = Some(Secret::new("local"));
        }
        s
    }
}

/// The `KURZ__` variables that point a `kurz` command at `table` on the DynamoDB Local at
/// `endpoint`, with the lenient timeouts of [`TestStore::settings`] (the emulator shares two
/// cores with the whole suite).
pub fn dynamo_env(table: &str, endpoint: &str) -> Vec<(&'static str, String)> {
    [
        ("KURZ__STORE__BACKEND", "dynamodb"),
        ("KURZ__STORE__DYNAMODB__TABLE", table),
        ("KURZ__STORE__DYNAMODB__ENDPOINT_URL", endpoint),
        ("KURZ__STORE__DYNAMODB__REGION", "us-east-1"),
        ("KURZ__STORE__DYNAMODB__ACCESS_KEY_ID", "local"),
        ("KURZ__STORE__DYNAMODB__SECRET_ACCESS_KEY", "local"),
        ("KURZ__STORE__TIMEOUT_MS", "30000"),
        ("KURZ__STORE__DYNAMODB__ATTEMPT_TIMEOUT_MS", "15000"),
        ("KURZ__STORE__DYNAMODB__CONNECT_TIMEOUT_MS", "5000"),
        (
            "KURZ__STORE__DYNAMODB__ADMISSION__LATENCY_TARGET_MS",
            "10000",
        ),
        (
            "KURZ__STORE__DYNAMODB__ADMISSION__QUEUE_TIMEOUT_MS",
            "10000",
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
    /// The clock the app decides expiry by: it stands still until the test advances it.
    pub clock: Clock,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _store: Option<Arc<TestStore>>,
}

/// The app on the embedded store.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_backend(Backend::Embedded, adjust).await
}

/// The app on a store of its own on `backend`.
pub async fn spawn_app_on_backend(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let store = Arc::new(TestStore::new(backend).await);
    let mut app = spawn_app_on(&store, adjust).await;
    app._store = Some(store);
    app
}

/// Puts back the default `server.max_clock_skew_ms` (5 s), which the harness turns off.
pub fn with_clock_skew_bound(settings: &mut Settings) {
    settings.server.max_clock_skew = Settings::default().server.max_clock_skew;
}

/// An app on an existing test store (several can share a DynamoDB table).
pub async fn spawn_app_on(store: &TestStore, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_at(store, adjust, kurz::clock::system_now_ms()).await
}

/// As [`spawn_app_on`], with the app's clock standing at `now_ms` (one that is off the
/// machine's, as a host with a wrong clock).
pub async fn spawn_app_at(
    store: &TestStore,
    adjust: impl FnOnce(&mut Settings),
    now_ms: i64,
) -> TestApp {
    let mut settings = store.settings();
    // The app's clock stands still while Redis's and DynamoDB's go on, so it drifts a second
    // a second from them: readiness would turn 503 once past the bound. Tests of the clock
    // comparison set the bound back (`with_clock_skew_bound`).
    settings.server.max_clock_skew = Duration::ZERO;
    adjust(&mut settings);
    let clock = Clock::manual(now_ms);
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: client(),
        handle,
        clock,
        task,
        _store: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/links"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Creates a link for `url` and returns its code.
    pub async fn create_code(&self, url: &str) -> String {
        code_of(self.create(json!({ "url": url })).await).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.client
            .head(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// The first hundred links of the admin's list, newest first.
    pub async fn admin_links(&self) -> Vec<Value> {
        let page: Value = self
            .admin_get("/api/v1/links?limit=100")
            .await
            .json()
            .await
            .expect("json");
        page["links"].as_array().cloned().unwrap_or_default()
    }

    /// `DELETE /api/v1/links/{code}` with the admin token.
    pub async fn admin_delete(&self, code: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/v1/links/{code}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// `PATCH /api/v1/links/{code}` with `body`, with the admin token.
    pub async fn admin_patch(&self, code: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/api/v1/links/{code}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Stats of `code` once `total_clicks` reaches `expected` (clicks are flushed
    /// asynchronously); gives up after 20 s and returns what it saw last.
    pub async fn stats_when(&self, code: &str, expected: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = self.admin_get(&format!("/api/v1/links/{code}/stats")).await;
            let stats: Value = response.json().await.expect("json");
            if stats["total_clicks"] == expected || Instant::now() > deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The metrics page as text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.task.await.expect("join").expect("server ran");
    }
}

/// The code of a 201 create response.
pub async fn code_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    body["code"].as_str().expect("code").to_owned()
}
