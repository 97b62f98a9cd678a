//! Shared test harness: the real app on port 0 with its own temporary data file, in-process
//! (`spawn_app`) or as the real binary (`KurzProcess`), and an HTTP client that does not
//! follow redirects.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kurz::config::{Secret, Settings};
use kurz::startup::Application;
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
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
    s
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = test_settings(dir.path());
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
        _dir: Some(dir),
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
