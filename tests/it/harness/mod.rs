//! The test harness, by what it starts: [`app`] the real app in this process (port 0, a store
//! of its own, a clock the test sets), [`process`] the real `kurz` binary as a child process,
//! [`servers`] the external servers kurz talks to (DynamoDB Local, redis-server), each on a
//! free port and owned by the test so it can pause or kill them, [`proxy`] a chaos proxy to
//! put between kurz and one of them, [`otlp`] a trace receiver, [`powercut`] a file
//! system whose power can be cut, and [`replicator`] a stand-in for replication between two
//! regions' tables.
//! The benches use the same harness (`#[path]`), so there is one way to start each thing.
#![allow(dead_code, unused_imports)] // each bench uses a different part of the harness

pub mod app;
pub mod otlp;
pub mod powercut;
pub mod process;
pub mod proxy;
pub mod qr;
pub mod replicator;
pub mod servers;

pub use app::*;
pub use otlp::*;
pub use powercut::*;
pub use process::*;
pub use proxy::*;
pub use replicator::*;
pub use servers::*;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// An HTTP client that does not follow redirects.
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

/// A name no other test of this run uses (tables, key prefixes).
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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

/// The value of an unlabelled metric line `name value` in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    metric_if(text, name).unwrap_or_else(|| panic!("{name} missing from metrics"))
}

/// As [`metric`], `None` when `text` has no such metric (a build from before it).
pub fn metric_if(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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

/// Polls `check` every 200 ms until it holds; fails naming `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET {base}/api/v1/links/{code}/stats` with the admin token.
pub async fn admin_stats(client: &reqwest::Client, base: &str, code: &str) -> serde_json::Value {
    client
        .get(format!("{base}/api/v1/links/{code}/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

/// Runs each behavioural test once per backend, as `embedded::name` and `dynamodb::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Embedded).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Dynamodb).await
                }
            )*
        }
    };
}
