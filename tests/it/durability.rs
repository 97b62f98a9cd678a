//! The real `kurz` binary as a process: restarts keep links and clicks, SIGKILL loses no
//! acknowledged link, nor does a power cut (which, unlike SIGKILL, also loses what the OS had
//! not yet written to disk), and bad settings stop start-up with a message naming the setting.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{ADMIN_TOKEN, KurzProcess, PowerCutFs, admin_stats, client, data_file};
use serde_json::{Value, json};
use tokio::sync::Mutex;

async fn create(client: &reqwest::Client, base: &str, url: &str) -> Option<String> {
    let response = client
        .post(format!("{base}/api/v1/links"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    Some(body["code"].as_str()?.to_owned())
}

async fn location(client: &reqwest::Client, base: &str, code: &str) -> Option<String> {
    let response = client.get(format!("{base}/{code}")).send().await.ok()?;
    Some(
        response
            .headers()
            .get("location")?
            .to_str()
            .ok()?
            .to_owned(),
    )
}

#[tokio::test]
async fn graceful_restart_keeps_links_and_flushes_clicks() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A flush interval far beyond the test: only the shutdown flush can write the clicks.
    let env = [("KURZ__CLICKS__FLUSH_INTERVAL_MS", "3600000")];
    let kurz = KurzProcess::start(&data_file(&dir), &env);
    let client = client();
    let mut links = Vec::new();
    for i in 0..20 {
        let url = format!("https://example.com/restart/{i}");
        let code = create(&client, &kurz.base, &url).await.expect("created");
        links.push((code, url));
    }
    let (clicked, _) = &links[0];
    for _ in 0..5 {
        assert!(location(&client, &kurz.base, clicked).await.is_some());
    }
    kurz.sigterm();
    assert!(kurz.wait(), "kurz exits cleanly on SIGTERM");

    let kurz = KurzProcess::start(&data_file(&dir), &env);
    for (code, url) in &links {
        assert_eq!(
            location(&client, &kurz.base, code).await.as_deref(),
            Some(url.as_str())
        );
    }
    let stats = admin_stats(&client, &kurz.base, clicked).await;
    assert_eq!(stats["total_clicks"], 5);
    // New links after the restart never reuse a code.
    let fresh = create(&client, &kurz.base, "https://example.com/after")
        .await
        .expect("created");
    assert!(links.iter().all(|(code, _)| *code != fresh));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_concurrent_creates_loses_no_acknowledged_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kurz = KurzProcess::start(&data_file(&dir), &[]);
    let client = client();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..32 {
        let (client, base) = (client.clone(), kurz.base.clone());
        let (acknowledged, count, stop) = (acknowledged.clone(), count.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 10_000 {
                let url = format!("https://example.com/kill/{w}/{i}");
                i += 1;
                match create(&client, &base, &url).await {
                    Some(code) => {
                        acknowledged.lock().await.push((code, url));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    None => break, // the server is gone
                }
            }
        }));
    }
    // Kill while creates are in flight, once a good number have been acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < 500 {
        assert!(Instant::now() < deadline, "creates too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kurz.child.kill().expect("SIGKILL");
    kurz.child.wait().expect("reaped");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(acknowledged.len() >= 500);

    let kurz = KurzProcess::start(&data_file(&dir), &[]);
    for (code, url) in &acknowledged {
        assert_eq!(
            location(&client, &kurz.base, code).await.as_deref(),
            Some(url.as_str()),
            "acknowledged link {code} lost"
        );
    }
}

/// A file's contents as text (missing: none).
fn contents(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[test]
fn the_power_cut_file_system_keeps_what_was_synced_and_loses_the_rest() {
    let mut fs = PowerCutFs::mount();
    let (synced, synced_on_disk) = fs.file("synced");
    let (unsynced, unsynced_on_disk) = fs.file("unsynced");
    let mut file = std::fs::File::create(&synced).expect("create");
    file.write_all(b"kept").expect("write");
    file.sync_data().expect("fdatasync");
    file.write_all(b", then more").expect("write");
    file.set_len(2).expect("truncate"); // a truncation is not synced either
    file.write_all(b"!").expect("write"); // at offset 15: the gap reads as zeros
    drop(file);
    std::fs::write(&unsynced, b"lost").expect("write");
    // Until the cut, readers see every write, as from the OS's page cache.
    assert_eq!(contents(&synced), format!("ke{}!", "\0".repeat(13)));
    assert_eq!(contents(&unsynced), "lost");

    fs.cut();
    assert_eq!(contents(&synced_on_disk), "kept");
    // Created (metadata passes through at once), but its data never reached the disk.
    assert!(unsynced_on_disk.exists());
    assert_eq!(contents(&unsynced_on_disk), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_concurrent_creates_and_deletes_loses_no_acknowledged_one() {
    const WINDOW: Duration = Duration::from_secs(4);
    const AT_LEAST: usize = 200;
    let mut fs = PowerCutFs::mount();
    let (data, on_disk) = fs.file("kurz.redb");
    let mut kurz = KurzProcess::start(&data, &[]);
    let client = client();
    let created = Arc::new(Mutex::new(Vec::new()));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..32 {
        let (client, base) = (client.clone(), kurz.base.clone());
        let (created, deleted, count) = (created.clone(), deleted.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let url = format!("https://example.com/power-cut/{w}/{i}");
                let request = client.post(format!("{base}/api/v1/links"));
                let Ok(response) = request.json(&json!({ "url": url })).send().await else {
                    return; // the server is gone
                };
                if response.status() != 201 {
                    continue; // not acknowledged: nothing is owed
                }
                let Ok(body) = response.json::<Value>().await else {
                    return; // cut while the answer was on its way: not acknowledged
                };
                let code = body["code"].as_str().expect("code").to_owned();
                // Every tenth link is deleted again: a 204 must hold as well.
                if i % 10 != 9 {
                    created.lock().await.push((code, url));
                    count.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let request = client.delete(format!("{base}/api/v1/links/{code}"));
                match request.bearer_auth(ADMIN_TOKEN).send().await {
                    Ok(r) if r.status() == 204 => deleted.lock().await.push(code),
                    Ok(_) => {} // neither acknowledged as created nor as deleted
                    Err(_) => return,
                }
            }
        }));
    }
    // The cut comes while creates and deletes are in flight, after a window long enough for
    // many group commits (and at least AT_LEAST acknowledged creates).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    while started.elapsed() < WINDOW || count.load(Ordering::Relaxed) < AT_LEAST {
        assert!(
            Instant::now() < deadline,
            "creates too slow on the file system"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kurz.child.kill().expect("SIGKILL kurz");
    kurz.child.wait().expect("reaped");
    fs.cut();
    for writer in writers {
        writer.await.expect("writer");
    }
    let created = created.lock().await.clone();
    let deleted = deleted.lock().await.clone();
    assert!(created.len() >= AT_LEAST);
    assert!(!deleted.is_empty());

    // What the disk holds after the cut, opened without the file system in between.
    let kurz = KurzProcess::start(&on_disk, &[]);
    let mut lost = Vec::new();
    for (code, url) in &created {
        if location(&client, &kurz.base, code).await.as_deref() != Some(url.as_str()) {
            lost.push(code);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates lost by the power cut, e.g. {:?}",
        lost.len(),
        created.len(),
        &lost[..lost.len().min(5)]
    );
    let mut back = Vec::new();
    for code in &deleted {
        let status = client
            .get(format!("{}/{code}", kurz.base))
            .send()
            .await
            .expect("redirect")
            .status();
        if status != 404 {
            back.push((code, status));
        }
    }
    assert!(
        back.is_empty(),
        "{} of {} acknowledged deletes undone by the power cut, e.g. {:?}",
        back.len(),
        deleted.len(),
        &back[..back.len().min(5)]
    );
    // And the store takes writes as before.
    let fresh = create(&client, &kurz.base, "https://example.com/after-the-cut")
        .await
        .expect("a create after the cut");
    assert!(created.iter().all(|(code, _)| *code != fresh));
}

fn start_error(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kurz"));
    command
        .env("KURZ__STORE__PATH", data_file(&dir))
        .env("KURZ__SERVER__BIND", "127.0.0.1:0");
    for (k, v) in env {
        command.env(k, v);
    }
    // Bad settings must stop start-up, so the process exits on its own; one that is still
    // running after the deadline started with them (and is stopped here, not waited on).
    let stderr = dir.path().join("stderr");
    command.stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let mut child = command.spawn().expect("runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            child.wait().expect("wait");
            panic!("kurz started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "kurz started with {env:?}");
    String::from_utf8_lossy(&std::fs::read(&stderr).expect("stderr")).into_owned()
}

#[test]
fn bad_settings_stop_start_up_naming_the_setting() {
    let cases = [
        ("KURZ__STORE__BACKEND", "cassandra", "store.backend"),
        ("KURZ__SERVER__BIND", "localhost", "server.bind"),
        (
            "KURZ__CLICKS__FLUSH_INTERVAL_MS",
            "soon",
            "clicks.flush_interval_ms",
        ),
        (
            "KURZ__SERVER__PUBLIC_BASE_URL",
            "kurz.example",
            "server.public_base_url",
        ),
        ("KURZ__AUTH__ADMIN_TOKEN", "short", "auth.admin_token"),
        ("KURZ__AUTH__API_KEYS", "a-key-too-short", "auth.api_keys"),
        ("KURZ__SERVER__BNID", "127.0.0.1:1", "bnid"),
    ];
    for (key, value, named) in cases {
        let stderr = start_error(&[(key, value)]);
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
}

#[test]
fn a_missing_or_malformed_country_database_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("country.mmdb");
    std::fs::write(&garbage, b"not a MaxMind database").expect("write");
    let missing = dir.path().join("absent.mmdb");
    for (path, wrong) in [(&garbage, "no MaxMind DB file"), (&missing, "cannot read")] {
        let path = path.to_str().expect("a UTF-8 path");
        let stderr = start_error(&[("KURZ__ANALYTICS__COUNTRY_DATABASE", path)]);
        assert!(
            stderr.contains("analytics.country_database") && stderr.contains(wrong),
            "{path}: {stderr}"
        );
    }
}

#[test]
fn a_store_file_in_use_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _running = KurzProcess::start(&data_file(&dir), &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_kurz"))
        .env("KURZ__STORE__PATH", data_file(&dir))
        .env("KURZ__SERVER__BIND", "127.0.0.1:0")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot open the embedded store"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_first_then_stops_without_losing_clicks() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Long enough that the few requests below all fall inside the drain window.
    let env = [
        ("KURZ__SERVER__DRAIN_DELAY_MS", "8000"),
        ("KURZ__CLICKS__FLUSH_INTERVAL_MS", "3600000"),
    ];
    let kurz = KurzProcess::start(&data_file(&dir), &env);
    let client = client();
    let code = create(&client, &kurz.base, "https://example.com/drain")
        .await
        .expect("created");
    let ready = |base: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .expect("readyz answers")
                .status()
        }
    };
    assert_eq!(ready(kurz.base.clone()).await, 200);

    kurz.sigterm();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready(kurz.base.clone()).await != 503 {
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Draining is for the load balancer: requests are still served as usual meanwhile.
    assert_eq!(
        location(&client, &kurz.base, &code).await.as_deref(),
        Some("https://example.com/drain")
    );
    let during = create(&client, &kurz.base, "https://example.com/during-drain").await;
    assert!(during.is_some(), "creates are served while draining");
    let health = client
        .get(format!("{}/healthz", kurz.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "alive while draining");
    assert!(kurz.wait(), "exits cleanly once drained");

    // The click made while draining was flushed on the way out.
    let kurz = KurzProcess::start(&data_file(&dir), &[]);
    let stats = admin_stats(&client, &kurz.base, &code).await;
    assert_eq!(stats["total_clicks"], 1);
    let during = during.expect("created while draining");
    assert_eq!(
        location(&client, &kurz.base, &during).await.as_deref(),
        Some("https://example.com/during-drain")
    );
}

#[test]
fn healthcheck_exits_zero_only_while_healthz_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kurz = KurzProcess::start(&data_file(&dir), &[]);
    let port = kurz.base.rsplit(':').next().expect("port").to_owned();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_kurz"))
            .arg("healthcheck")
            // As in a container: bound to every address, checked over loopback.
            .env("KURZ__SERVER__BIND", format!("0.0.0.0:{port}"))
            .env("KURZ__AUTH__OPEN_CREATION", "true")
            .output()
            .expect("kurz healthcheck runs")
    };
    let up = check();
    assert!(up.status.success(), "{up:?}");
    drop(kurz); // killed
    let down = check();
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
