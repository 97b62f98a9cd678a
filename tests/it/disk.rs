//! A full disk under the embedded store, on a real file system the test owns (a 3 MiB tmpfs,
//! mounted here: the test needs root, as the chaos tests do): creates answer 507 with
//! `Retry-After`, reads and redirects go on, `/readyz` and `/metrics` say the store is
//! read-only, and once the file system grows kurz takes writes again by itself, clicks made
//! meanwhile included, without a restart and without losing an acknowledged link. And a log
//! that cannot be written never costs a request.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{KurzProcess, admin_stats, client, eventually, metric};
use serde_json::{Value, json};

/// A tmpfs of its own, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (run the suite as root, as scripts/test.sh's chaos tests do)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "remounting the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn create(http: &reqwest::Client, base: &str, i: usize) -> reqwest::Response {
    // Long URLs fill the disk sooner.
    let url = format!("https://example.com/{i}/{}", "x".repeat(1500));
    http.post(format!("{base}/api/v1/links"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("create")
}

async fn text(http: &reqwest::Client, url: String) -> String {
    http.get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_kurz_takes_them_again_once_there_is_room() {
    let disk = Tmpfs::mount("3m");
    let data: PathBuf = disk.path().join("kurz.redb");
    let logs_dir = tempfile::tempdir().expect("tempdir");
    let log_path = logs_dir.path().join("kurz.log");
    let env = [
        // Every redirect reads the store: reads are what must go on.
        ("KURZ__CACHE__LOCAL__MAX_BYTES", "0"),
        ("KURZ__STORE__CACHE_BYTES", "1048576"),
        ("KURZ__STORE__FREE_SPACE_WARNING_BYTES", "1048576"),
        ("KURZ__CLICKS__FLUSH_INTERVAL_MS", "200"),
        ("KURZ__LOG__LEVEL", "info"),
    ];
    let kurz = KurzProcess::start_with_logs(
        &data,
        &env,
        Stdio::from(std::fs::File::create(&log_path).expect("log file")),
    );
    let http = client();
    let base = kurz.base.clone();

    let mut acknowledged = Vec::new();
    let refused = loop {
        let response = create(&http, &base, acknowledged.len()).await;
        if response.status() != 201 {
            break response;
        }
        let body: Value = response.json().await.expect("json");
        acknowledged.push(body["code"].as_str().expect("code").to_owned());
        assert!(acknowledged.len() < 20_000, "a 3 MiB disk never filled");
    };
    assert_eq!(refused.status(), 507, "a full disk is a 507");
    assert_eq!(refused.headers()["retry-after"], "30");
    let problem: Value = refused.json().await.expect("problem json");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("no room left"), "{detail}");
    assert!(
        acknowledged.len() > 50,
        "only {} links fitted",
        acknowledged.len()
    );
    // More refusals, each at once and alike.
    for i in 0..20 {
        assert_eq!(create(&http, &base, 100_000 + i).await.status(), 507);
    }

    // Reads go on: every acknowledged link redirects (from the store), clicks are counted in
    // memory meanwhile.
    for code in &acknowledged {
        let redirect = http
            .get(format!("{base}/{code}"))
            .send()
            .await
            .expect("redirect");
        assert_eq!(redirect.status(), 302, "{code}");
    }
    let clicked = acknowledged[0].clone();
    eventually(
        "/readyz says the store is read-only",
        Duration::from_secs(5),
        || async {
            let ready: Value =
                serde_json::from_str(&text(&http, format!("{base}/readyz")).await).expect("json");
            ready["checks"]["store"] == "read-only"
        },
    )
    .await;
    let metrics = text(&http, format!("{base}/metrics")).await;
    assert_eq!(metric(&metrics, "kurz_store_writable"), 0.0);
    assert!(metric(&metrics, "kurz_store_free_bytes") < 1_048_576.0);

    // The operator frees space: kurz finds out by itself.
    disk.resize("20m");
    eventually(
        "a create succeeds again",
        Duration::from_secs(30),
        || async { create(&http, &base, 200_000).await.status() == 201 },
    )
    .await;
    eventually(
        "/readyz says the store is ok",
        Duration::from_secs(5),
        || async {
            let ready: Value =
                serde_json::from_str(&text(&http, format!("{base}/readyz")).await).expect("json");
            ready["checks"]["store"] == "ok"
        },
    )
    .await;
    // The clicks made while the disk was full reach the store now.
    eventually(
        "the clicks made while full are written",
        Duration::from_secs(20),
        || async { admin_stats(&http, &base, &clicked).await["total_clicks"] == 1 },
    )
    .await;
    assert!(kurz.stop(), "kurz exits cleanly");

    let log = std::fs::read_to_string(&log_path).expect("log");
    assert_eq!(
        log.matches("the store's disk is full").count(),
        1,
        "said once when it starts"
    );
    assert_eq!(
        log.matches("writes are taken again").count(),
        1,
        "and once when it ends"
    );
    assert!(
        log.contains("nearly full"),
        "the free-space warning came first"
    );

    // Nothing acknowledged was lost.
    let kurz = KurzProcess::start(&data, &env);
    for code in &acknowledged {
        let redirect = http
            .get(format!("{}/{code}", kurz.base))
            .send()
            .await
            .expect("redirect");
        assert_eq!(redirect.status(), 302, "{code} after the restart");
    }
    assert!(kurz.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_costs_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let kurz = KurzProcess::start_with_logs(
        &dir.path().join("kurz.redb"),
        &[("KURZ__LOG__LEVEL", "debug")],
        Stdio::from(full),
    );
    let http = client();
    for i in 0..50 {
        let response = create(&http, &kurz.base, i).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        let code = body["code"].as_str().expect("code");
        let redirect = http
            .get(format!("{}/{code}", kurz.base))
            .send()
            .await
            .expect("redirect");
        assert_eq!(redirect.status(), 302);
        let missing = http
            .get(format!("{}/NoSuch{i}", kurz.base))
            .send()
            .await
            .expect("404");
        assert_eq!(missing.status(), 404);
    }
    assert!(
        kurz.stop(),
        "kurz exits cleanly with its log on a full device"
    );
}
