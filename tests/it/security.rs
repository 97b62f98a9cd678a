//! Safe on the open internet: unpredictable codes, rate limits (one instance, a fleet sharing
//! Redis, Redis going away), slow bodies, self-links in every spelling, permanent redirects,
//! the audit log, disabling links, the domain denylist, and where `/metrics` is served.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kurz::code::CodeGenerator;
use kurz::config::{RateSettings, Secret, Settings};
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Backend, KurzProcess, REDIS_TIMEOUT_FOR_COUNTS, RedisServer, TestApp, TestStore,
    assert_problem, client, code_of, data_file, free_port, metric, sdk_client, spawn_app,
    spawn_app_on, spawn_app_on_backend, spawn_app_with, unique_name,
};

const KEY_A: &str = "key-alpha-0123456789abcdef01234567";
const KEY_B: &str = "key-beta-0123456789abcdef012345678";

fn rate(creates_per_ip: u32, creates_per_key: u32, misses_per_ip: u32) -> RateSettings {
    RateSettings {
        creates_per_minute_per_ip: creates_per_ip,
        creates_per_minute_per_key: creates_per_key,
        misses_per_minute_per_ip: misses_per_ip,
        auth_failures_per_minute_per_ip: 0,
        ..RateSettings::default()
    }
}

async fn create_as(app: &TestApp, token: Option<&str>, url: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/links"))
        .json(&json!({ "url": url }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("send")
}

/// A 429 with everything a client needs to back off.
async fn assert_limited(response: reqwest::Response, policy: &str) {
    let headers = response.headers().clone();
    let problem = assert_problem(response, 429).await;
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let policy_header = headers["ratelimit-policy"].to_str().expect("ascii");
    assert!(
        policy_header.starts_with(&format!("\"{policy}\";q=")),
        "{policy_header}"
    );
    assert!(policy_header.ends_with(";w=60"), "{policy_header}");
    let limit = headers["ratelimit"].to_str().expect("ascii");
    assert!(limit.contains(";r=0;t="), "{limit}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("per minute")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_install_makes_its_own_permutation_key_unless_one_is_set() {
    let first_code = |key: Option<&'static str>| async move {
        let app = spawn_app_with(move |s| s.ids.permutation_key = key.map(Secret::new)).await;
        let code = app.create_code("https://example.com/first").await;
        app.stop().await;
        code
    };
    // Two fresh installs: unrelated first codes (nobody can compute them offline).
    let (a, b) = (first_code(None).await, first_code(None).await);
    assert_ne!(a, b);
    // The same configured key gives the same codes: the setting wins.
    let key = Some("a-configured-permutation-key-0123");
    assert_eq!(first_code(key).await, first_code(key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_table_share_the_generated_key() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let small_blocks = |s: &mut Settings| s.ids.block_size = 5;
    // Started together: both race to store a key, and both must end up with the same one.
    let (a, b) = tokio::join!(
        spawn_app_on(&store, small_blocks),
        spawn_app_on(&store, small_blocks)
    );
    let mut codes = Vec::new();
    for i in 0..3 {
        for app in [&a, &b] {
            codes.push(app.create_code(&format!("https://example.com/{i}")).await);
        }
    }
    let stored = sdk_client(&store.endpoint)
        .get_item()
        .table_name(&store.table)
        .key("pk", attr("#secret#permutation_key"))
        .key("sk", attr("secret"))
        .consistent_read(true)
        .send()
        .await
        .expect("get the key");
    let key = stored
        .item()
        .and_then(|item| item.get("value"))
        .and_then(|v| v.as_b().ok())
        .expect("the generated key is in the table")
        .as_ref()
        .to_vec();
    assert_eq!(key.len(), 32);
    let generator = CodeGenerator::new(&key);
    let possible: HashSet<String> = (0..10).filter_map(|id| generator.code_for(id)).collect();
    for code in &codes {
        assert!(
            possible.contains(code),
            "{code} was not made with the stored key"
        );
    }
    a.stop().await;
    b.stop().await;
}

fn attr(s: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(s.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_are_limited_per_client_ip_and_per_api_key() {
    let app = spawn_app_with(|s| {
        s.limits.rate = rate(3, 2, 0);
        s.server.trusted_proxies = vec!["127.0.0.1".parse().expect("network")];
    })
    .await;
    let from = |ip: &'static str| {
        app.client
            .post(app.url("/api/v1/links"))
            .header("x-forwarded-for", ip)
            .json(&json!({ "url": "https://example.com/anon" }))
            .send()
    };
    // Behind a trusted proxy, the client is the forwarded address: 3 at once, then 429.
    for left in [2, 1, 0] {
        let ok = from("203.0.113.1").await.expect("send");
        assert_eq!(ok.status(), 201);
        let limit = ok.headers()["ratelimit"].to_str().expect("ascii");
        assert!(
            limit.starts_with(&format!("\"creates-per-ip\";r={left};t=")),
            "{limit}"
        );
        assert_eq!(
            ok.headers()["ratelimit-policy"],
            "\"creates-per-ip\";q=3;w=60"
        );
    }
    assert_limited(from("203.0.113.1").await.expect("send"), "creates-per-ip").await;
    assert_eq!(from("203.0.113.2").await.expect("send").status(), 201);
    assert_eq!(
        metric(&app.metrics().await, "kurz_rate_limited_creates_total"),
        1.0
    );
    app.stop().await;

    // Per key: 2, then 429; the other key and the admin are not affected.
    let app = spawn_app_with(|s| {
        s.limits.rate = rate(3, 2, 0);
        s.auth.api_keys = vec![Secret::new(KEY_A), Secret::new(KEY_B)];
    })
    .await;
    for _ in 0..2 {
        let ok = create_as(&app, Some(KEY_A), "https://example.com/a").await;
        assert_eq!(ok.status(), 201);
    }
    assert_limited(
        create_as(&app, Some(KEY_A), "https://example.com/a").await,
        "creates-per-key",
    )
    .await;
    assert_eq!(
        create_as(&app, Some(KEY_B), "https://example.com/b")
            .await
            .status(),
        201
    );
    assert_eq!(
        create_as(&app, Some(ADMIN_TOKEN), "https://example.com/admin")
            .await
            .status(),
        201
    );
    assert_eq!(
        metric(&app.metrics().await, "kurz_rate_limited_creates_total"),
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit() {
    let app = spawn_app_with(|s| s.limits.rate = rate(2, 0, 0)).await;
    for i in 0..3 {
        let response = app
            .client
            .post(app.url("/api/v1/links"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({ "url": "https://example.com/spoof" }))
            .send()
            .await
            .expect("send");
        if i < 2 {
            assert_eq!(response.status(), 201);
        } else {
            assert_limited(response, "creates-per-ip").await;
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_a_fleet_sharing_redis_and_fall_back_when_it_dies() {
    let redis = RedisServer::start_on(free_port());
    let prefix = format!("{}:", unique_name("rl"));
    let settings = |s: &mut Settings| {
        s.limits.rate = rate(4, 0, 0);
        s.cache.redis.url = Some(Secret::new(redis.url.clone()));
        s.cache.redis.key_prefix.clone_from(&prefix);
        // The shared bucket is counted exactly: a late Redis call must not fall back to the
        // instance's own before Redis is killed.
        s.cache.redis.timeout = REDIS_TIMEOUT_FOR_COUNTS;
    };
    let a = spawn_app_with(settings).await;
    let b = spawn_app_with(settings).await;
    // Four between the two instances, then both refuse: the bucket is the fleet's.
    for i in 0..4 {
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            create_as(app, None, "https://example.com/f").await.status(),
            201
        );
    }
    assert_limited(
        create_as(&a, None, "https://example.com/f").await,
        "creates-per-ip",
    )
    .await;
    assert_limited(
        create_as(&b, None, "https://example.com/f").await,
        "creates-per-ip",
    )
    .await;

    // Redis gone: each instance decides alone, and the limiter never fails a request.
    redis.kill();
    for app in [&a, &b] {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(
                create_as(app, None, "https://example.com/g")
                    .await
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses[..4], [201, 201, 201, 201], "{statuses:?}");
        assert_eq!(statuses[4..], [429, 429], "{statuses:?}");
        assert!(
            metric(
                &app.metrics().await,
                "kurz_rate_limit_local_fallbacks_total"
            ) >= 1.0
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_are_limited_per_ip_but_links_never() {
    let app = spawn_app_with(|s| s.limits.rate = rate(0, 0, 5)).await;
    let code = app.create_code("https://example.com/hot").await;
    // The first lookup misses the cache but finds the link: nothing spent.
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    for i in 0..5 {
        assert_problem(app.get(&format!("/Nope{i}")).await, 404).await;
    }
    let limited = app.get("/Nope9").await;
    assert_limited(limited, "misses-per-ip").await;
    // A cached link is never limited.
    for _ in 0..20 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    assert_eq!(
        metric(&app.metrics().await, "kurz_rate_limited_misses_total"),
        1.0
    );
    app.stop().await;
}

/// Sends `head` then `body` over a plain connection and returns the status of the answer
/// (bounded by a 10 s read timeout: a hang fails the test).
fn raw_status(port: u16, head: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).expect("an answer, not a hang");
    let line = String::from_utf8_lossy(&answer[..n]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_bodies_get_408_and_413_and_unreadable_ones_400() {
    let app = spawn_app_with(|s| s.server.body_timeout = Duration::from_millis(500)).await;
    let port: u16 = app
        .base
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    let post = "POST /api/v1/links HTTP/1.1\r\nHost: kurz\r\nContent-Type: application/json\r\n";
    let status = tokio::task::spawn_blocking(move || {
        let slow = raw_status(
            port,
            &format!("{post}Content-Length: 100\r\n\r\n"),
            b"{\"url\": ",
        );
        let chunk = vec![b'a'; 20_000];
        let mut chunked = format!("{:x}\r\n", chunk.len()).into_bytes();
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let too_large = raw_status(
            port,
            &format!("{post}Transfer-Encoding: chunked\r\n\r\n"),
            &chunked,
        );
        let broken = raw_status(
            port,
            &format!("{post}Transfer-Encoding: chunked\r\n\r\n"),
            b"zz\r\nnot a chunk\r\n",
        );
        (slow, too_large, broken)
    })
    .await
    .expect("join");
    assert_eq!(status, (408, 413, 400));
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_kurz_itself_is_accepted_and_urls_are_stored_normalised() {
    let app = spawn_app_with(|s| s.abuse.shortener_hosts = vec!["bit.ly".into()]).await;
    let port = app.base.rsplit(':').next().expect("port").to_owned();
    for url in [
        format!("http://localhost:{port}/x"),
        format!("http://127.1:{port}/x"),
        format!("http://2130706433:{port}/x"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://127.0.0.1.:{port}/x"),
    ] {
        let problem = assert_problem(app.create(json!({ "url": url })).await, 400).await;
        assert!(
            problem["detail"].as_str().expect("detail").contains("loop"),
            "{url}: {problem}"
        );
    }
    let other = assert_problem(app.create(json!({ "url": "https://bit.ly/x" })).await, 400).await;
    assert!(
        other["detail"]
            .as_str()
            .expect("detail")
            .contains("shortener")
    );
    let created = app
        .create(json!({ "url": "HTTPS://Example.COM:443/a b%20c/\u{e9}" }))
        .await;
    assert_problem(created, 400).await; // a raw space
    let created = app
        .create(json!({ "url": "HTTPS://B\u{fc}cher.Example:443/\u{e9}?q=1#f" }))
        .await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.expect("json");
    let normalised = "https://xn--bcher-kva.example/%C3%A9?q=1#f";
    assert_eq!(body["url"], normalised);
    let code = body["code"].as_str().expect("code");
    assert_eq!(
        app.get(&format!("/{code}")).await.headers()["location"],
        normalised
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_link_answers_410_keeps_its_stats_and_can_be_enabled_again() {
    for backend in [Backend::Embedded, Backend::Dynamodb] {
        let app = spawn_app_on_backend(backend, |_| {}).await;
        let code = app.create_code("https://example.com/phish").await;
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        assert_eq!(app.stats_when(&code, 1).await["total_clicks"], 1);
        let patch = async |body: Value| app.admin_patch(&code, &body).await;
        let disabled = patch(json!({ "disabled": true, "reason": "phishing report 17" })).await;
        assert_eq!(disabled.status(), 200);
        let view: Value = disabled.json().await.expect("json");
        assert_eq!(view["disabled"], true);
        assert_eq!(view["disabled_reason"], "phishing report 17");
        // At once on this instance, cached or not.
        let gone = assert_problem(app.get(&format!("/{code}")).await, 410).await;
        assert!(
            gone["detail"]
                .as_str()
                .expect("detail")
                .contains("disabled")
        );
        let stats = app.stats_when(&code, 1).await;
        assert_eq!(stats["total_clicks"], 1, "statistics are kept");
        // Only the admin may do it.
        let by_anyone = app
            .client
            .patch(app.url(&format!("/api/v1/links/{code}")))
            .json(&json!({ "disabled": false }))
            .send()
            .await
            .expect("send");
        assert_problem(by_anyone, 401).await;
        assert_problem(patch(json!({ "disabled": "yes" })).await, 400).await;
        assert_problem(
            app.admin_patch("NoSuchLink", &json!({ "disabled": true }))
                .await,
            404,
        )
        .await;

        let enabled = patch(json!({ "disabled": false })).await;
        assert_eq!(
            enabled.json::<Value>().await.expect("json")["disabled"],
            false
        );
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        assert_eq!(app.stats_when(&code, 2).await["total_clicks"], 2);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_the_admin_listener_when_one_is_set() {
    let admin_port = free_port();
    let app = spawn_app_with(move |s| {
        s.server.admin_bind = Some(format!("127.0.0.1:{admin_port}").parse().expect("addr"));
    })
    .await;
    assert_problem(app.get("/metrics").await, 404).await;
    let metrics = client()
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("admin listener answers");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("kurz_links_created_total"), "{text}");
    let other = client()
        .get(format!("http://127.0.0.1:{admin_port}/api/v1/links"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        other.status(),
        404,
        "the admin listener serves nothing else"
    );
    app.stop().await;
}

/// Polls `url` until it answers `status`; fails after 10 s.
async fn until_status(client: &reqwest::Client, url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = client.get(url).send().await.expect("answers").status();
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "{url} still {got}, not {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_denylist_refuses_creates_and_stops_old_links_after_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("denylist.txt");
    std::fs::write(&list, "# known phishing\nevil.example\n").expect("write");
    let kurz = KurzProcess::start(
        &data_file(&dir),
        &[("KURZ__ABUSE__DENYLIST_PATH", list.to_str().expect("utf-8"))],
    );
    let client = client();
    let create = |url: &'static str| {
        client
            .post(format!("{}/api/v1/links", kurz.base))
            .json(&json!({ "url": url }))
            .send()
    };
    let refused = create("https://login.evil.example/account")
        .await
        .expect("send");
    let problem = assert_problem(refused, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("denylist")
    );

    let later = code_of(create("https://later.example/x").await.expect("send")).await;
    let short = format!("{}/{later}", kurz.base);
    until_status(&client, &short, 302).await; // and now cached
    std::fs::write(&list, "evil.example\nlater.example\n").expect("write");
    kurz.signal("-HUP");
    until_status(&client, &short, 410).await;
    let gone = client.get(&short).send().await.expect("answers");
    let problem = assert_problem(gone, 410).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("denylist")
    );
    assert_problem(create("https://later.example/y").await.expect("send"), 422).await;
    assert!(kurz.stop());
}

/// What makes kurz write its `kurz::audit` lines (and warnings), as JSON, to its log.
const AUDIT_LOG_ENV: [(&str, &str); 2] = [
    ("KURZ__LOG__FORMAT", "json"),
    ("KURZ__LOG__LEVEL", "warn,kurz::audit=info"),
];

/// The log kurz wrote to `path`, whole, and its `kurz::audit` lines.
fn audit_lines(path: &std::path::Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path).expect("log");
    let audits = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "kurz::audit")
        .collect();
    (text, audits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_create_writes_one_audit_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("kurz.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let keys = format!("{KEY_A},{KEY_B}");
    let kurz = KurzProcess::start_with_logs(
        &data_file(&dir),
        &[
            AUDIT_LOG_ENV[0],
            AUDIT_LOG_ENV[1],
            ("KURZ__AUTH__API_KEYS", &keys),
        ],
        Stdio::from(log),
    );
    let client = client();
    let post = |path: &str, token: &str, body: Value| {
        client
            .post(format!("{}{path}", kurz.base))
            .bearer_auth(token)
            .json(&body)
    };
    // Each way a link is made, by each kind of caller: (code, host, who made it).
    let mut created: Vec<(String, &str, &str)> = Vec::new();
    let once = post(
        "/api/v1/links",
        KEY_A,
        json!({ "url": "https://Audited.example/page" }),
    )
    .header("idempotency-key", "audit-1");
    let code = code_of(once.send().await.expect("send")).await;
    created.push((code, "audited.example", KEY_A));
    let aliased = post(
        "/api/v1/links",
        KEY_B,
        json!({ "url": "https://b.example/", "alias": "audited-alias" }),
    );
    let code = code_of(aliased.send().await.expect("send")).await;
    created.push((code, "b.example", KEY_B));
    let by_admin = post(
        "/api/v1/links",
        ADMIN_TOKEN,
        json!({ "url": "https://admin.example/" }),
    );
    let code = code_of(by_admin.send().await.expect("send")).await;
    created.push((code, "admin.example", ADMIN_TOKEN));
    let bulk = post(
        "/api/v1/links/bulk",
        KEY_A,
        json!({ "links": [
            { "url": "https://bulk.example/1" },
            { "url": "not a url" },
            { "url": "https://bulk.example/2" },
        ] }),
    );
    let bulk: Value = bulk.send().await.expect("send").json().await.expect("json");
    assert_eq!(
        (bulk["created"].clone(), bulk["failed"].clone()),
        (json!(2), json!(1)),
        "{bulk}"
    );
    for i in [0, 2] {
        let code = bulk["results"][i]["link"]["code"].as_str().expect("code");
        created.push((code.to_owned(), "bulk.example", KEY_A));
    }

    // What makes no link writes no line: a replay, a refusal, a taken alias.
    let replay = post(
        "/api/v1/links",
        KEY_A,
        json!({ "url": "https://Audited.example/page" }),
    )
    .header("idempotency-key", "audit-1");
    let replay = replay.send().await.expect("send");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(code_of(replay).await, created[0].0);
    let invalid = post("/api/v1/links", KEY_A, json!({ "url": "ftp://x.example/" }));
    assert_problem(invalid.send().await.expect("send"), 400).await;
    let taken = post(
        "/api/v1/links",
        KEY_A,
        json!({ "url": "https://c.example/", "alias": "audited-alias" }),
    );
    assert_problem(taken.send().await.expect("send"), 409).await;
    assert!(kurz.stop());

    let (text, audits) = audit_lines(&log_path);
    assert_eq!(
        audits.len(),
        created.len(),
        "one line per link made: {text}"
    );
    let mut owners = std::collections::HashMap::new();
    for (code, host, by) in &created {
        let lines: Vec<&Value> = audits.iter().filter(|l| l["code"] == *code).collect();
        assert_eq!(lines.len(), 1, "one line for {code}: {text}");
        let line = lines[0];
        assert_eq!(line["event"], "link_created");
        assert_eq!(line["host"], *host);
        assert_eq!(line["client_ip"], "127.0.0.1");
        let owner = line["owner"].as_str().expect("owner").to_owned();
        // One owner per caller, whatever the route.
        assert_eq!(
            owners.entry(*by).or_insert_with(|| owner.clone()),
            &owner,
            "{code}"
        );
    }
    assert_eq!(owners[ADMIN_TOKEN], "admin");
    for key in [KEY_A, KEY_B] {
        assert_eq!(
            owners[key].len(),
            32,
            "a keyed fingerprint, never the key: {}",
            owners[key]
        );
    }
    assert_ne!(owners[KEY_A], owners[KEY_B]);
    for secret in [KEY_A, KEY_B, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "a secret is never logged");
    }
}

/// Keys made with the API count as keys: a fleet with none in its settings starts `kurz
/// serve` on a public address without `auth.open_creation`, and one with no key anywhere does
/// not.
#[tokio::test]
async fn a_key_made_with_the_api_lets_a_public_listener_start() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let (listening, stderr) = serve_publicly(store.env(), false);
    assert!(!listening, "no key in the settings or the store");
    assert!(stderr.contains("auth.open_creation"), "{stderr}");

    let app = spawn_app_on(&store, |_| {}).await;
    let made = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "made with the API" }))
        .send()
        .await
        .expect("request");
    assert_eq!(made.status(), 201);
    let (listening, stderr) = serve_publicly(store.env(), false);
    assert!(listening, "a key in the store: {stderr}");
}

/// Runs `kurz serve` on every address with `env` (no keys in its settings) and
/// `auth.open_creation` = `open`: whether it came to listen, and its stderr.
fn serve_publicly(env: Vec<(&'static str, String)>, open: bool) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kurz"))
        .envs(env)
        .env("KURZ__SERVER__BIND", "0.0.0.0:0")
        .env("KURZ__AUTH__OPEN_CREATION", open.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kurz runs");
    // Refused: exits at once. Allowed: prints where it listens (then is killed).
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 18];
    let listening = stdout.read_exact(&mut first).is_ok() && &first == b"kurz listening on ";
    let _ = child.kill();
    let output = child.wait_with_output().expect("exits");
    (
        listening,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn open_creation_on_a_public_address_must_be_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |open| {
        let env = vec![
            ("KURZ__STORE__PATH", data_file(&dir).display().to_string()),
            ("KURZ__AUTH__ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ];
        serve_publicly(env, open)
    };
    let (listening, stderr) = run(false);
    assert!(!listening);
    assert!(stderr.contains("auth.open_creation"), "{stderr}");
    assert!(stderr.contains("api_keys"), "{stderr}");
    let (listening, stderr) = run(true);
    assert!(listening, "{stderr}");
}

/// The limits as the README states them, with the defaults rather than values set for a test:
/// 30 anonymous creates a client, 6,000 creates a key, and 600 lookups of unknown codes a
/// client; the next one answers 429 naming its policy.
#[tokio::test]
async fn the_default_limits_are_the_documented_ones() {
    let app = spawn_app_with(|s| s.limits.rate = RateSettings::default()).await;
    // The whole policy, its quota included; then all a 429 must carry.
    async fn refused(response: reqwest::Response, name: &str, quota: u32) {
        assert_eq!(
            response.headers()["ratelimit-policy"],
            format!("\"{name}\";q={quota};w=60").as_str()
        );
        assert_limited(response, name).await;
    }

    for i in 0..30 {
        let made = create_as(&app, None, &format!("https://example.com/a{i}")).await;
        assert_eq!(made.status(), 201, "anonymous create {i}");
    }
    refused(
        create_as(&app, None, "https://example.com/a30").await,
        "creates-per-ip",
        30,
    )
    .await;

    let key: Value = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "bulk" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let key = key["secret"].as_str().expect("secret");
    for chunk in 0..6 {
        let links: Vec<Value> = (0..1000)
            .map(|i| json!({ "url": format!("https://example.com/k{chunk}-{i}") }))
            .collect();
        let made = app
            .client
            .post(app.url("/api/v1/links/bulk"))
            .bearer_auth(key)
            .json(&json!({ "links": links }))
            .send()
            .await
            .expect("bulk");
        assert_eq!(made.status(), 200, "bulk {chunk}");
        let made: Value = made.json().await.expect("json");
        let created = made["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter(|r| r["status"] == 201)
            .count();
        assert_eq!(
            created, 1000,
            "bulk {chunk}: every link within the key's 6,000"
        );
    }
    refused(
        create_as(&app, Some(key), "https://example.com/k6000").await,
        "creates-per-key",
        6000,
    )
    .await;

    for i in 0..600 {
        let missing = app.get(&format!("/unknown{i}")).await;
        assert_eq!(missing.status(), 404, "unknown code {i}");
    }
    refused(app.get("/unknown600").await, "misses-per-ip", 600).await;
}

/// Reads from `stream` into `answer` until the peer closes the connection (or resets it).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, answer: &mut Vec<u8>) {
    use tokio::io::AsyncReadExt;
    while let Ok(n) = stream.read_buf(answer).await {
        if n == 0 {
            return;
        }
    }
}

/// README, "Slow clients": request headers must arrive within 5 s. With the server's default
/// settings, a connection that sends part of its headers and stalls is answered 408 and closed
/// within that bound, and not before 4 s (the timer starts no earlier than the test's connect,
/// read from a clock actix-web updates every 500 ms), while a client that takes 3 s over its
/// headers is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_must_arrive_within_five_seconds() {
    use tokio::io::AsyncWriteExt;
    const BOUND: Duration = Duration::from_secs(5);
    // The test's own time between its connect and kurz's, and between kurz's write and its
    // read: loopback on a busy machine.
    const MARGIN: Duration = Duration::from_secs(3);
    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let stalled = tokio::spawn({
        let addr = addr.clone();
        async move {
            let start = Instant::now();
            let mut stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: kurz\r\nUser-Ag")
                .await
                .expect("write");
            let mut answer = Vec::new();
            let early = tokio::time::timeout_at(
                (start + BOUND - Duration::from_secs(1)).into(),
                read_until_closed(&mut stream, &mut answer),
            )
            .await;
            assert!(
                early.is_err(),
                "closed after {:?}, before the bound: {:?}",
                start.elapsed(),
                String::from_utf8_lossy(&answer)
            );
            let closed = tokio::time::timeout_at(
                (start + BOUND + MARGIN).into(),
                read_until_closed(&mut stream, &mut answer),
            )
            .await;
            assert!(
                closed.is_ok(),
                "a stalled request is still open {:?} after it began",
                start.elapsed()
            );
            String::from_utf8_lossy(&answer).into_owned()
        }
    });
    let slow_but_in_time = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        // A piece a second: the headers are complete 3 s in.
        let pieces = ["Host: kurz\r\n", "Connection: close\r\n", "\r\n"];
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        for piece in pieces {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stream.write_all(piece.as_bytes()).await.expect("write");
        }
        let mut answer = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            read_until_closed(&mut stream, &mut answer),
        )
        .await
        .expect("an answer");
        String::from_utf8_lossy(&answer).into_owned()
    });

    let served = slow_but_in_time.await.expect("join");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let refused = stalled.await.expect("join");
    assert!(refused.starts_with("HTTP/1.1 408"), "{refused:?}");
    app.stop().await;
}

/// README, "Abuse": a delete and a disable each write one line on `kurz::audit`, naming the
/// code, who did it (the key's id, or `admin`) and what a create's line names: the link's
/// owner, the client IP and the URL's host. On both stores: a delete's line names the link the
/// store deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delete_and_disable_writes_one_audit_line() {
    for backend in [Backend::Embedded, Backend::Dynamodb] {
        deletes_and_disables_write_one_audit_line(backend).await;
    }
}

async fn deletes_and_disables_write_one_audit_line(backend: Backend) {
    let store = TestStore::new(backend).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("kurz.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut env = store.env();
    env.extend(AUDIT_LOG_ENV.map(|(k, v)| (k, v.to_owned())));
    env.push(("KURZ__AUTH__API_KEYS", KEY_A.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let kurz = KurzProcess::start_with_logs(&data_file(&dir), &env, Stdio::from(log));
    let client = client();
    let link = |path: &str| format!("{}/api/v1/links{path}", kurz.base);
    let create = |url: &'static str| {
        client
            .post(link(""))
            .bearer_auth(KEY_A)
            .json(&json!({ "url": url }))
            .send()
    };
    let deleted = code_of(create("https://Deleted.example/a").await.expect("send")).await;
    let disabled = code_of(create("https://disabled.example/b").await.expect("send")).await;
    let by_key = client
        .delete(link(&format!("/{deleted}")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("send");
    assert_eq!(by_key.status(), 204);
    let by_admin = client
        .patch(link(&format!("/{disabled}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "disabled": true, "reason": "phishing report 18" }))
        .send()
        .await
        .expect("send");
    assert_eq!(by_admin.status(), 200);
    assert!(kurz.stop());

    let (text, audits) = audit_lines(&log_path);
    let only = |event: &str, code: &str| {
        let lines: Vec<&Value> = audits
            .iter()
            .filter(|l| l["event"] == event && l["code"] == code)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{backend:?}: one {event} line for {code}: {text}"
        );
        lines[0].clone()
    };
    let key_id = only("link_created", &deleted)["owner"]
        .as_str()
        .expect("owner")
        .to_owned();
    assert_eq!(key_id.len(), 32, "a key id: {key_id}");

    let delete = only("link_deleted", &deleted);
    assert_eq!(delete["by"], key_id.as_str());
    assert_eq!(delete["owner"], key_id.as_str());
    assert_eq!(delete["client_ip"], "127.0.0.1");
    assert_eq!(delete["host"], "deleted.example");

    let disable = only("link_disabled", &disabled);
    assert_eq!(disable["by"], "admin");
    assert_eq!(disable["owner"], key_id.as_str());
    assert_eq!(disable["client_ip"], "127.0.0.1");
    assert_eq!(disable["host"], "disabled.example");
    // Two creates, a delete and a disable: nothing else, and never the key itself.
    assert_eq!(audits.len(), 4, "{backend:?}: {text}");
    assert!(!text.contains(KEY_A), "the key itself is never logged");
}
