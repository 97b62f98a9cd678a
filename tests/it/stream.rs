//! Clicks as an event stream (`clicks.sink = "kinesis"`): instances send their flushed clicks
//! to a real Kinesis emulator (kinesis-local) and `kurz aggregate` consumers, real processes,
//! fold them and write them to DynamoDB Local, across kills, lease moves and a reshard.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    Backend, KinesisLocal, TestApp, TestStore, metric, spawn_app_on, unique_name,
};
use kurz::config::{ClickSink, Settings};

/// Points `settings` at the stream `stream` on `kinesis`.
fn on_stream(settings: &mut Settings, kinesis: &KinesisLocal, stream: &str) {
    settings.clicks.sink = ClickSink::Kinesis;
    settings.clicks.kinesis.endpoint_url = Some(kinesis.endpoint.clone());
    settings.clicks.kinesis.stream = stream.to_owned();
    settings.clicks.kinesis.shards = 4;
}

/// Creates the stream that `store`'s settings, as `adjust` leaves them, name (as `kurz init` does).
async fn create_stream(store: &TestStore, adjust: impl FnOnce(&mut Settings)) {
    let mut settings = store.settings();
    adjust(&mut settings);
    let client = kurz::clicks::stream::client(&settings)
        .await
        .expect("kinesis client");
    kurz::clicks::stream::ensure_stream(&client, &settings.clicks.kinesis)
        .await
        .expect("kurz init's stream");
}

/// A `kurz aggregate` process on the store and stream of `settings`.
struct Consumer {
    child: Child,
    base: String,
}

impl Consumer {
    fn start(store: &TestStore, kinesis: &KinesisLocal, stream: &str, name: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kurz"));
        command
            .arg("aggregate")
            .env("KURZ__CLICKS__SINK", "kinesis")
            .env("KURZ__CLICKS__KINESIS__ENDPOINT_URL", &kinesis.endpoint)
            .env("KURZ__CLICKS__KINESIS__STREAM", stream)
            .env("KURZ__AGGREGATE__LEASE_MS", "3000")
            .env("KURZ__AGGREGATE__WORKER_ID", name)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in store.env() {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("kurz aggregate starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("kurz aggregate exited before listening")
                .expect("stdout line");
            if let Some(addr) = line.strip_prefix("kurz aggregate listening on ") {
                break addr.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, base }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("consumer metrics")
            .text()
            .await
            .expect("text");
        metric(&text, name)
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn click(app: &TestApp, code: &str, times: u64) {
    for _ in 0..times {
        let response = app.get(&format!("/{code}")).await;
        assert_eq!(response.status(), 302, "redirect of {code}");
    }
}

async fn totals(app: &TestApp, codes: &[String]) -> Vec<u64> {
    let mut totals = Vec::new();
    for code in codes {
        let stats: serde_json::Value = app
            .admin_get(&format!("/api/v1/links/{code}/stats"))
            .await
            .json()
            .await
            .expect("stats json");
        totals.push(stats["total_clicks"].as_u64().unwrap_or(u64::MAX));
    }
    totals
}

/// Waits (at most 120 s) until the stats of `codes` show `expected`, then a window and more
/// (12 s) to see nothing more arrive: every click written, none twice.
async fn exactly_once(app: &TestApp, codes: &[String], expected: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = totals(app, codes).await;
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clicks not written within 120 s: {seen:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(totals(app, codes).await, expected, "clicks written twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clicks_on_three_instances_through_two_consumers_count_exactly_once_across_a_kill_and_lease_moves()
 {
    let kinesis = KinesisLocal::start();
    let stream = unique_name("clicks");
    let store = TestStore::new(Backend::Dynamodb).await;
    create_stream(&store, |s| on_stream(s, &kinesis, &stream)).await;

    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(spawn_app_on(&store, |s| on_stream(s, &kinesis, &stream)).await);
    }
    let mut codes = Vec::new();
    for i in 0..12 {
        codes.push(
            apps[0]
                .create_code(&format!("https://example.com/{i}"))
                .await,
        );
    }
    let first = Consumer::start(&store, &kinesis, &stream, "first");
    let second = Consumer::start(&store, &kinesis, &stream, "second");

    // Round one: the first link is clicked on every instance (a viral link), the others a
    // few times each on one instance or another.
    let mut expected = vec![0u64; codes.len()];
    for (i, app) in apps.iter().enumerate() {
        click(app, &codes[0], 20).await;
        expected[0] += 20;
        for (j, code) in codes.iter().enumerate().skip(1) {
            if j % 3 == i {
                let times = 1 + (j as u64 % 4);
                click(app, code, times).await;
                expected[j] += times;
            }
        }
    }
    // Mid-window, the first consumer dies without a word; the second takes its shards once
    // their leases expire.
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.kill9();
    for (i, app) in apps.iter().enumerate() {
        click(app, &codes[0], 10).await;
        expected[0] += 10;
        let j = 1 + i;
        click(app, &codes[j], 2).await;
        expected[j] += 2;
    }
    // It comes back: leases move to it from the second until each holds its share.
    let again = Consumer::start(&store, &kinesis, &stream, "first");
    for app in &apps {
        click(app, &codes[0], 5).await;
        expected[0] += 5;
    }

    // Nothing more arrives later: no window is applied twice.
    exactly_once(&apps[0], &codes, &expected).await;

    let sent: f64 = {
        let mut sum = 0.0;
        for app in &apps {
            let text = app.metrics().await;
            assert_eq!(metric(&text, "kurz_click_stream_dropped_total"), 0.0);
            sum += metric(&text, "kurz_click_stream_events_total");
        }
        sum
    };
    assert!(sent >= 3.0, "events sent: {sent}");
    let held = again.metric("kurz_aggregate_leases_held").await
        + second.metric("kurz_aggregate_leases_held").await;
    assert_eq!(held, 4.0, "every shard has one consumer");
    assert!(
        again.metric("kurz_aggregate_leases_taken_total").await >= 1.0,
        "the restarted consumer took its share back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_silent_for_30_s_leaves_redirects_alone_bounds_the_queue_and_counts_the_drops() {
    let kinesis = KinesisLocal::start();
    let stream = unique_name("clicks");
    let store = TestStore::new(Backend::Dynamodb).await;
    let adjust = |s: &mut Settings| {
        on_stream(s, &kinesis, &stream);
        s.clicks.kinesis.timeout = Duration::from_millis(500);
        s.clicks.kinesis.resend_window = Duration::from_secs(5);
        s.clicks.kinesis.max_queued_bytes = kurz::config::MAX_RECORD_BYTES;
    };
    create_stream(&store, adjust).await;
    let app = spawn_app_on(&store, adjust).await;
    let consumer = Consumer::start(&store, &kinesis, &stream, "only");
    let code = app.create_code("https://example.com/silent").await;

    kinesis.server.pause();
    let silent_until = Instant::now() + Duration::from_secs(30);
    let mut during = 0u64;
    let mut queued_max = 0.0f64;
    while Instant::now() < silent_until {
        // Every redirect answers at once: the stream is never waited for.
        let started = Instant::now();
        click(&app, &code, 20).await;
        during += 20;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "20 redirects took {:?} while the stream was silent",
            started.elapsed()
        );
        let text = app.metrics().await;
        queued_max = queued_max.max(metric(&text, "kurz_click_stream_queued_bytes"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = app.metrics().await;
    let dropped = metric(&text, "kurz_click_stream_dropped_total");
    assert!(
        queued_max <= kurz::config::MAX_RECORD_BYTES as f64,
        "queue grew to {queued_max} bytes"
    );
    assert!(
        dropped > 0.0,
        "records older than the resend window were dropped and counted"
    );
    assert!(metric(&text, "kurz_click_stream_put_failures_total") > 0.0);
    assert!(metric(&text, "kurz_clicks_dropped_total") >= dropped);
    kinesis.server.resume();

    // Once the stream answers: what was not dropped, and every later click, is counted. A put
    // that timed out while the stream was stopped may land when it wakes, after its records
    // were given up on and counted as dropped: those count after all, once (the records sent
    // again carry the same ids), so the total lies between the two, never above the clicks.
    click(&app, &code, 7).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = app.metrics().await;
        let dropped = metric(&text, "kurz_click_stream_dropped_total") as u64;
        let queued = metric(&text, "kurz_click_stream_queued_clicks");
        let total = totals(&app, std::slice::from_ref(&code)).await[0];
        if queued == 0.0 && total >= during + 7 - dropped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the silence: {total} counted, {dropped} dropped, {queued} queued of {} clicks",
            during + 7
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let total = totals(&app, std::slice::from_ref(&code)).await[0];
    assert!(
        total <= during + 7,
        "{total} counted of {} clicks",
        during + 7
    );
    assert!(consumer.metric("kurz_aggregate_clicks_total").await >= 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viral_link_clicked_on_every_instance_is_written_once_per_window() {
    let kinesis = KinesisLocal::start();
    let stream = unique_name("clicks");
    let store = TestStore::new(Backend::Dynamodb).await;
    create_stream(&store, |s| on_stream(s, &kinesis, &stream)).await;
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(spawn_app_on(&store, |s| on_stream(s, &kinesis, &stream)).await);
    }
    let code = apps[0].create_code("https://example.com/viral").await;
    let consumer = Consumer::start(&store, &kinesis, &stream, "only");

    // Clicks on all three instances for 25 s: about one event per instance per flush.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(25) {
        for app in &apps {
            click(app, &code, 3).await;
            sent += 3;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while totals(&apps[0], std::slice::from_ref(&code)).await[0] != sent {
        assert!(
            Instant::now() < deadline,
            "{sent} clicks not written within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let mut events = 0.0;
    for app in &apps {
        events += metric(&app.metrics().await, "kurz_click_stream_events_total");
    }
    let writes = consumer.metric("kurz_aggregate_link_writes_total").await;
    eprintln!("viral link: {writes} writes in {elapsed:?} for {events} events of {sent} clicks");
    // Windows are at least 10 s each: over the run, at most one write per window that began.
    let windows = (elapsed.as_secs_f64() / 10.0).ceil() + 1.0;
    assert!(
        writes >= 1.0 && writes <= windows,
        "{writes} writes of the link in {elapsed:?} ({windows} windows at most)"
    );
    // The instances sent an event a flush each (1 s): far more than the writes.
    assert!(
        events >= 3.0 * 20.0,
        "{events} events from three instances in 25 s of clicks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshard_while_clicks_flow_loses_and_doubles_no_click() {
    let kinesis = KinesisLocal::start();
    let stream = unique_name("clicks");
    let store = TestStore::new(Backend::Dynamodb).await;
    let two_shards = |s: &mut Settings| {
        on_stream(s, &kinesis, &stream);
        s.clicks.kinesis.shards = 2;
    };
    create_stream(&store, two_shards).await;
    let apps = [
        spawn_app_on(&store, two_shards).await,
        spawn_app_on(&store, two_shards).await,
    ];
    let mut codes = Vec::new();
    for i in 0..10 {
        codes.push(
            apps[0]
                .create_code(&format!("https://example.com/{i}"))
                .await,
        );
    }
    let consumer = Consumer::start(&store, &kinesis, &stream, "only");
    let mut expected = vec![0u64; codes.len()];
    let round = |expected: &mut Vec<u64>, n: u64| {
        let clicks: Vec<(usize, usize, u64)> = (0..codes.len())
            .flat_map(|j| (0..apps.len()).map(move |i| (i, j, n + (j as u64 % 3))))
            .collect();
        for &(_, j, times) in &clicks {
            expected[j] += times;
        }
        clicks
    };

    // Clicks before the reshard: on the two parent shards, a window begun on each.
    for (i, j, times) in round(&mut expected, 2) {
        click(&apps[i], &codes[j], times).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // An operator doubles the shards (each parent split in two and closed), as
    // UpdateShardCount does; the instances go on sending meanwhile.
    let mut settings = store.settings();
    two_shards(&mut settings);
    let client = kurz::clicks::stream::client(&settings)
        .await
        .expect("kinesis client");
    client
        .update_shard_count()
        .stream_name(&stream)
        .target_shard_count(4)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .expect("UpdateShardCount");
    for (i, j, times) in round(&mut expected, 1) {
        click(&apps[i], &codes[j], times).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shards = kurz::clicks::stream::list_shards(&client, &stream)
            .await
            .expect("ListShards");
        let open = shards
            .iter()
            .filter(|s| s.ending_sequence.is_none())
            .count();
        let closed = shards.len() - open;
        if open == 4 && closed == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reshard did not finish within 30 s: {shards:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Clicks after it land on the children only, which are read once their parents are done.
    for (i, j, times) in round(&mut expected, 3) {
        click(&apps[i], &codes[j], times).await;
    }

    // Nothing more arrives later: no parent's window is applied again by a child's reader.
    exactly_once(&apps[0], &codes, &expected).await;
    for app in &apps {
        let text = app.metrics().await;
        assert_eq!(metric(&text, "kurz_click_stream_dropped_total"), 0.0);
    }
    assert_eq!(
        consumer.metric("kurz_aggregate_bad_records_total").await,
        0.0
    );
    // It read the two parents and then the four children.
    let taken = consumer.metric("kurz_aggregate_leases_taken_total").await;
    assert!(
        taken >= 6.0,
        "{taken} leases taken, of 2 parents and 4 children"
    );
}
