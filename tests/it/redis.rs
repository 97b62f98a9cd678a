//! The Redis L2 cache against a real redis-server the harness starts and owns: misses fill
//! Redis with bounded TTLs (on every store backend), deletes and edits reach other instances
//! through pub/sub, and Redis dying mid-load (or going silent behind the chaos proxy) costs no
//! redirect; after it comes back, kurz uses it again without a restart. A Redis hit is one
//! command in one round trip (with the per-IP misses limit too), and connections Redis drops
//! are replaced without failing a call. An instance whose clock is off Redis's leaves rotation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{
    Backend, ChaosProxy, Fault, REDIS_TIMEOUT_FOR_COUNTS, RedisServer, TestApp, TestStore,
    eventually, free_port, metric, spawn_app_at, spawn_app_on, spawn_app_with, unique_name,
    with_clock_skew_bound,
};
use deadpool_redis::redis::{self, AsyncCommands};
use kurz::config::{Secret, Settings};

fn with_redis(url: &str, prefix: &str) -> impl FnOnce(&mut Settings) {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    move |s| {
        s.cache.redis.url = Some(Secret::new(url));
        s.cache.redis.key_prefix = prefix;
    }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Waits (at most `within`) for `key` to appear in Redis; returns its value and PTTL.
async fn wait_for_key(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    within: Duration,
) -> (String, i64) {
    let deadline = Instant::now() + within;
    loop {
        let value: Option<String> = conn.get(key).await.expect("GET");
        if let Some(value) = value {
            let pttl: i64 = conn.pttl(key).await.expect("PTTL");
            return (value, pttl);
        }
        assert!(Instant::now() < deadline, "{key} never appeared in Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `app` until `code` answers 404; fails after 2 s (the bound a delete must meet on
/// every instance).
async fn assert_gone_within_two_seconds(app: &TestApp, code: &str) {
    assert_answers_by(app, code, 404, Instant::now() + Duration::from_secs(2)).await;
}

/// Polls `app` for `code` until it answers `status`, failing once `deadline` has passed.
async fn assert_answers_by(app: &TestApp, code: &str, status: u16, deadline: Instant) {
    loop {
        let answered = app.get(&format!("/{code}")).await.status();
        if answered == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still answers {answered} for {code}, not {status}, by the deadline",
            app.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three instances on one DynamoDB table, sharing one Redis under `prefix`.
async fn fleet_of_three(store: &TestStore, redis_url: &str, prefix: &str) -> Vec<TestApp> {
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(spawn_app_on(store, with_redis(redis_url, prefix)).await);
    }
    fleet
}

async fn misses_fill_redis_with_bounded_ttls(backend: Backend) {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(backend).await;
    // L1 off, so every redirect shows what Redis does; Redis hits are counted exactly.
    let app = spawn_app_on(&store, |s| {
        with_redis(&redis_server.url, &prefix)(s);
        s.cache.local.max_bytes = 0;
        s.cache.redis.timeout = REDIS_TIMEOUT_FOR_COUNTS;
    })
    .await;
    let mut conn = redis_conn(&redis_server.url).await;

    let forever = app.create_code("https://example.com/forever").await;
    let expires = kurz::clock::format_rfc3339(app.clock.now_ms() + 30_000);
    let soon = app
        .create(serde_json::json!({ "url": "https://example.com/soon", "expires_at": expires, "redirect_status": 307 }))
        .await;
    assert_eq!(soon.status(), 201);
    let soon = soon.json::<serde_json::Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let key = |code: &str| format!("{prefix}l:{code}");
    let empty: Option<String> = conn.get(key(&forever)).await.expect("GET");
    assert_eq!(empty, None, "creating a link does not touch Redis");

    assert_eq!(app.get(&format!("/{forever}")).await.status(), 302);
    let (value, pttl) = wait_for_key(&mut conn, &key(&forever), Duration::from_secs(5)).await;
    assert_eq!(
        value,
        r#"2{"u":"https://example.com/forever","s":302,"q":true}"#
    );
    assert!(pttl > 0 && pttl <= 3_600_000, "{pttl}");

    assert_eq!(app.get(&format!("/{soon}")).await.status(), 307);
    let (value, pttl) = wait_for_key(&mut conn, &key(&soon), Duration::from_secs(5)).await;
    assert!(
        value.starts_with(r#"2{"u":"https://example.com/soon","s":307,"e":"#),
        "{value}"
    );
    assert!(
        pttl > 0 && pttl <= 30_000,
        "TTL {pttl} beyond the link's expiry"
    );

    assert_eq!(app.get("/NoSuchCode").await.status(), 404);
    let (value, pttl) = wait_for_key(&mut conn, &key("NoSuchCode"), Duration::from_secs(5)).await;
    assert_eq!(value, "-");
    assert!(pttl > 0 && pttl <= 5_000, "{pttl}");

    // The next lookups are answered by Redis.
    let before = metric(
        &app.get("/metrics").await.text().await.expect("text"),
        "kurz_redis_hits_total",
    );
    assert_eq!(app.get(&format!("/{forever}")).await.status(), 302);
    assert_eq!(app.get("/NoSuchCode").await.status(), 404);
    let after = metric(
        &app.get("/metrics").await.text().await.expect("text"),
        "kurz_redis_hits_total",
    );
    assert_eq!(after - before, 2.0);

    // What an instance of the version before wrote (mid-deploy, one Redis) still redirects.
    let _: () = conn
        .set(key("FirstForm"), "D 302 0 https://example.com/off")
        .await
        .expect("SET");
    let _: () = conn
        .set(key("FirstForm2"), "301 0 https://example.com/v1")
        .await
        .expect("SET");
    assert_eq!(app.get("/FirstForm").await.status(), 410, "disabled");
    let redirect = app.get("/FirstForm2?utm=x").await;
    assert_eq!(redirect.status(), 301);
    assert_eq!(
        redirect.headers()["location"],
        "https://example.com/v1",
        "never forwarded"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_fill_redis_with_bounded_ttls_on_the_embedded_store() {
    misses_fill_redis_with_bounded_ttls(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_fill_redis_with_bounded_ttls_on_dynamodb() {
    misses_fill_redis_with_bounded_ttls(Backend::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_instance_reaches_the_other_within_two_seconds() {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Dynamodb).await;
    let one = spawn_app_on(&store, with_redis(&redis_server.url, &prefix)).await;
    let two = spawn_app_on(&store, with_redis(&redis_server.url, &prefix)).await;
    let code = one.create_code("https://example.com/shared").await;
    // Both instances now hold the link in their L1 (for 60 s by default).
    assert_eq!(one.get(&format!("/{code}")).await.status(), 302);
    assert_eq!(two.get(&format!("/{code}")).await.status(), 302);
    assert_eq!(two.get(&format!("/{code}")).await.status(), 302);

    let deleted = one.admin_delete(&code).await;
    assert_eq!(deleted.status(), 204);
    assert_gone_within_two_seconds(&two, &code).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_on_one_of_three_instances_redirects_everywhere_within_two_seconds() {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Dynamodb).await;
    let fleet = fleet_of_three(&store, &redis_server.url, &prefix).await;
    let code = fleet[0].create_code("https://example.com/before").await;
    // Every instance holds the link in its L1 (for 60 s by default), and Redis has it too.
    for app in &fleet {
        for _ in 0..2 {
            let redirect = app.get(&format!("/{code}?utm=x")).await;
            assert_eq!(
                redirect.headers()["location"],
                "https://example.com/before?utm=x"
            );
        }
    }
    let edited = fleet[1]
        .admin_patch(
            &code,
            &serde_json::json!({ "url": "https://example.com/after", "forward_query": false }),
        )
        .await;
    assert_eq!(edited.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    for app in &fleet {
        loop {
            let redirect = app.get(&format!("/{code}?utm=x")).await;
            if redirect.headers()["location"] == "https://example.com/after" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} still redirects to {:?} 2 s after the edit",
                app.base,
                redirect.headers()["location"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for app in fleet {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_survive_redis_dying_and_kurz_uses_it_again_after_a_restart() {
    let port = free_port();
    let redis_server = RedisServer::start_on(port);
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Embedded).await;
    // L1 off: every redirect goes through Redis, the worst case for a Redis failure.
    let app = Arc::new(
        spawn_app_on(&store, |s| {
            with_redis(&redis_server.url, &prefix)(s);
            s.cache.local.max_bytes = 0;
        })
        .await,
    );
    let mut links = Vec::new();
    for i in 0..50 {
        let url = format!("https://example.com/load/{i}");
        links.push((app.create_code(&url).await, url));
    }
    let links = Arc::new(links);

    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (app, links, done) = (Arc::clone(&app), Arc::clone(&links), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for i in 0..500 {
                let (code, url) = &links[(w * 31 + i * 7) % links.len()];
                let started = Instant::now();
                let response = app.get(&format!("/{code}")).await;
                slowest = slowest.max(started.elapsed());
                assert_eq!(response.status(), 302, "redirect of {code} failed");
                assert_eq!(response.headers()["location"], url.as_str());
                done.fetch_add(1, Ordering::Relaxed);
            }
            slowest
        }));
    }
    // Kill Redis once the load is well under way.
    while done.load(Ordering::Relaxed) < 1_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis_server.kill();
    let killed_at = done.load(Ordering::Relaxed);

    // Creates keep working while Redis is down, and the breaker is seen open.
    for i in 0..5 {
        app.create_code(&format!("https://example.com/while-down/{i}"))
            .await;
    }
    let mut slowest = Duration::ZERO;
    for worker in workers {
        slowest = slowest.max(worker.await.expect("no failed redirect"));
    }
    assert_eq!(done.load(Ordering::Relaxed), 4_000);
    assert!(killed_at < 4_000, "Redis was killed during the load");
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metric(&metrics, "kurz_redis_errors_total") > 0.0);
    assert_eq!(
        metric(&metrics, "kurz_redis_breaker_open"),
        1.0,
        "{metrics}"
    );
    // Not a speed check: a hang detector. Redis calls time out after 50 ms.
    assert!(
        slowest < Duration::from_secs(2),
        "a redirect took {slowest:?}"
    );

    // Redis back on the same port: new misses fill it again, no kurz restart.
    let redis_server = RedisServer::start_on(port);
    let mut conn = redis_conn(&redis_server.url).await;
    let (code, _) = &links[0];
    let key = format!("{prefix}l:{code}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        let value: Option<String> = conn.get(&key).await.expect("GET");
        if value.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not refilled within 10 s of its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(metric(&metrics, "kurz_redis_breaker_open"), 0.0);
    Arc::into_inner(app)
        .map(TestApp::stop)
        .expect("sole owner")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_reach_other_instances_again_after_redis_restarts() {
    let port = free_port();
    let redis_server = RedisServer::start_on(port);
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Dynamodb).await;
    let one = spawn_app_on(&store, with_redis(&redis_server.url, &prefix)).await;
    let two = spawn_app_on(&store, with_redis(&redis_server.url, &prefix)).await;

    redis_server.kill();
    let redis_server = RedisServer::start_on(port);
    // Give both listeners time to resubscribe on their own (they retry with a short backoff);
    // a delete published before that would be missed, so wait until a probe message arrives.
    let mut conn = redis_conn(&redis_server.url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(format!("{prefix}invalidate"))
            .arg("no-such-code")
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
        if receivers == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listeners did not resubscribe within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let code = one.create_code("https://example.com/after-restart").await;
    assert_eq!(two.get(&format!("/{code}")).await.status(), 302); // cached in two's L1
    let deleted = one.admin_delete(&code).await;
    assert_eq!(deleted.status(), 204);
    assert_gone_within_two_seconds(&two, &code).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_opens_the_breaker_and_redirects_go_on_from_the_store() {
    let proxy = ChaosProxy::start(&RedisServer::shared().url).await;
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Embedded).await;
    // L1 off: every redirect asks Redis first.
    let app = spawn_app_on(&store, |s| {
        with_redis(&proxy.url_with_scheme("redis"), &prefix)(s);
        s.cache.local.max_bytes = 0;
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let code = app
            .create_code(&format!("https://example.com/silent-redis/{i}"))
            .await;
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        codes.push(code);
    }

    // Redis accepts connections and requests and never answers (a black-holed host).
    proxy.set(Fault::Silent);
    for _ in 0..5 {
        for code in &codes {
            assert_eq!(app.get(&format!("/{code}")).await.status(), 302, "{code}");
        }
    }
    let text = app.metrics().await;
    assert!(metric(&text, "kurz_redis_errors_total") > 0.0);
    assert_eq!(metric(&text, "kurz_redis_breaker_open"), 1.0);

    // Redis answers again: kurz reads from it again, without a restart.
    proxy.set(Fault::None);
    let hits = metric(&app.metrics().await, "kurz_redis_hits_total");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app.metrics().await, "kurz_redis_hits_total") <= hits {
        assert!(
            Instant::now() < deadline,
            "Redis not used again within 10 s"
        );
        for code in &codes {
            assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&app.metrics().await, "kurz_redis_breaker_open"), 0.0);
    app.stop().await;
}

/// Calls per command since Redis started (`INFO commandstats`), by command name.
async fn command_calls(conn: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands kurz sent between two [`command_calls`] readings (the readings' own INFO
/// left out), with how many times each.
fn sent(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| *name != "info")
        .map(|(name, calls)| (name.clone(), calls - before.get(name).unwrap_or(&0)))
        .filter(|(_, grown)| *grown > 0)
        .collect()
}

/// An app on a Redis of the test's own (its command counts are this test's alone) behind a
/// proxy that counts the requests kurz writes to it; L1 off, so every redirect asks Redis. The
/// Redis timeout is [`REDIS_TIMEOUT_FOR_COUNTS`]: a call that a busy test machine makes late
/// must not count as a failure and send the redirect to the store.
async fn app_counting_redis_requests(
    adjust: impl FnOnce(&mut Settings),
) -> (TestApp, RedisServer, ChaosProxy, String) {
    let redis_server = RedisServer::start_on(free_port());
    let proxy = ChaosProxy::start(&redis_server.url).await;
    let prefix = format!("{}:", unique_name("t"));
    let app = spawn_app_with(|s| {
        with_redis(&proxy.url_with_scheme("redis"), &prefix)(s);
        s.cache.local.max_bytes = 0;
        s.cache.redis.timeout = REDIS_TIMEOUT_FOR_COUNTS;
        adjust(s);
    })
    .await;
    (app, redis_server, proxy, prefix)
}

/// Two redirects of `code`: the first reads the store and fills Redis, the second is a Redis
/// hit (L1 is off in these apps).
async fn redirect_until_redis_answers(
    app: &TestApp,
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    code: &str,
) {
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    wait_for_key(conn, &format!("{prefix}l:{code}"), Duration::from_secs(5)).await;
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_served_from_redis_is_one_get_in_one_round_trip() {
    let (app, redis_server, proxy, prefix) = app_counting_redis_requests(|_| {}).await;
    let mut conn = redis_conn(&redis_server.url).await;
    let code = app.create_code("https://example.com/one-trip").await;
    redirect_until_redis_answers(&app, &mut conn, &prefix, &code).await;

    let hits = metric(&app.metrics().await, "kurz_redis_hits_total");
    let (before, requests) = (command_calls(&mut conn).await, proxy.forwarded());
    for _ in 0..10 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    let after = command_calls(&mut conn).await;
    assert_eq!(
        sent(&before, &after),
        BTreeMap::from([("get".to_owned(), 10)]),
        "a Redis hit must be its GET and nothing else (no PING on checkout)"
    );
    assert_eq!(
        proxy.forwarded() - requests,
        10,
        "one request written per redirect"
    );
    assert_eq!(
        metric(&app.metrics().await, "kurz_redis_hits_total") - hits,
        10.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_misses_limit_a_link_is_one_round_trip_and_only_unknown_codes_spend() {
    let (app, redis_server, proxy, prefix) = app_counting_redis_requests(|s| {
        s.limits.rate.misses_per_minute_per_ip = 6;
    })
    .await;
    let mut conn = redis_conn(&redis_server.url).await;
    let code = app.create_code("https://example.com/limited").await;
    redirect_until_redis_answers(&app, &mut conn, &prefix, &code).await;

    // A link from Redis: the limit's peek and the GET go together, the redirect is served
    // from what came back, and nothing is spent however often.
    let hits = metric(&app.metrics().await, "kurz_redis_hits_total");
    let (before, requests) = (command_calls(&mut conn).await, proxy.forwarded());
    for _ in 0..10 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    let commands = sent(&before, &command_calls(&mut conn).await);
    assert_eq!(
        proxy.forwarded() - requests,
        10,
        "one request written per lookup"
    );
    assert_eq!(commands.get("evalsha"), Some(&10), "{commands:?}");
    for extra in ["ping", "unwatch", "eval", "script|load", "set"] {
        assert!(!commands.contains_key(extra), "{commands:?}");
    }
    let text = app.metrics().await;
    assert_eq!(metric(&text, "kurz_redis_hits_total") - hits, 10.0);

    // Unknown codes spend the budget: 6, then 429.
    for i in 0..6 {
        assert_eq!(app.get(&format!("/Unknown{i}")).await.status(), 404);
    }
    let refused = app.get("/Unknown6").await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["ratelimit-policy"]
            .to_str()
            .expect("ascii")
            .starts_with("\"misses-per-ip\";q=6")
    );
    // Spent: the link still redirects from Redis in one round trip, and a code Redis knows
    // is missing is refused in one round trip without being resolved.
    wait_for_key(
        &mut conn,
        &format!("{prefix}l:Unknown0"),
        Duration::from_secs(5),
    )
    .await;
    let text = app.metrics().await;
    let lookups = metric(&text, "kurz_redis_hits_total") + metric(&text, "kurz_redis_misses_total");
    let requests = proxy.forwarded();
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    assert_eq!(app.get("/Unknown0").await.status(), 429);
    assert_eq!(proxy.forwarded() - requests, 2);
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "kurz_redis_hits_total") + metric(&text, "kurz_redis_misses_total"),
        lookups + 1.0,
        "only the link was resolved"
    );
    assert_eq!(metric(&text, "kurz_rate_limited_misses_total"), 2.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_redis_dropped_are_all_replaced_without_a_failed_call() {
    let (app, redis_server, _proxy, prefix) = app_counting_redis_requests(|s| {
        s.cache.redis.pool_size = std::num::NonZeroUsize::new(8).expect("non-zero");
    })
    .await;
    let app = Arc::new(app);
    let mut conn = redis_conn(&redis_server.url).await;
    let code = app.create_code("https://example.com/dropped").await;
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    wait_for_key(
        &mut conn,
        &format!("{prefix}l:{code}"),
        Duration::from_secs(5),
    )
    .await;

    // Concurrent redirects until the pool holds several connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let burst: Vec<_> = (0..32)
            .map(|_| {
                let (app, path) = (Arc::clone(&app), format!("/{code}"));
                tokio::spawn(async move { app.get(&path).await.status() })
            })
            .collect();
        for redirect in burst {
            assert_eq!(redirect.await.expect("join"), 302);
        }
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut conn)
            .await
            .expect("CLIENT LIST");
        // Ours is one of them.
        if clients.lines().count() > 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never grew: {clients}");
    }

    // Redis drops every connection but ours (as a restart would, without the wait).
    let errors = metric(&app.metrics().await, "kurz_redis_errors_total");
    let dropped: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    assert!(dropped > 1, "{dropped}");
    let hits = metric(&app.metrics().await, "kurz_redis_hits_total");
    for _ in 0..10 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "kurz_redis_errors_total"),
        errors,
        "a dropped connection failed a call"
    );
    assert_eq!(metric(&text, "kurz_redis_hits_total") - hits, 10.0);
    Arc::into_inner(app)
        .map(TestApp::stop)
        .expect("sole owner")
        .await;
}

/// Polls every instance of `fleet` until `code` answers 404 or 410 on all of them; fails after
/// `within`.
async fn assert_gone_everywhere_within(fleet: &[&TestApp], code: &str, within: Duration) {
    eventually(
        &format!("{code} answers 404/410 on every instance"),
        within,
        || async {
            for app in fleet {
                let status = app.get(&format!("/{code}")).await.status();
                if status != 404 && status != 410 {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_while_redis_is_down_holds_on_every_instance_once_it_is_back() {
    // Redis keeps an append-only file: restarted, it holds the link's entry again.
    let (dir, port) = (tempfile::tempdir().expect("tempdir"), free_port());
    let redis_server = RedisServer::start_persistent_on(port, dir.path());
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Dynamodb).await;
    let one = spawn_app_on(&store, with_redis(&redis_server.url, &prefix)).await;
    let two = spawn_app_on(&store, with_redis(&redis_server.url, &prefix)).await;
    let code = one.create_code("https://example.com/taken-down").await;
    let key = format!("{prefix}l:{code}");
    // In Redis, and in both instances' L1 (for 60 s by default).
    assert_eq!(one.get(&format!("/{code}")).await.status(), 302);
    wait_for_key(
        &mut redis_conn(&redis_server.url).await,
        &key,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(two.get(&format!("/{code}")).await.status(), 302);

    redis_server.kill();
    assert_eq!(one.admin_delete(&code).await.status(), 204);
    let redis_server = RedisServer::start_persistent_on(port, dir.path());

    // The bound, from the time Redis is back: the deleting instance's breaker lets a call
    // through within its cool-off and the kept invalidation goes with the next retry (every
    // 250 ms); its message, or the listeners' own resubscription (which clears L1, after at
    // most 2 s of backoff), evicts the link from every L1. Slack for a busy test machine;
    // far below the L1 TTL and the Redis TTL, which would otherwise end the stale entries.
    let redis = Settings::default().cache.redis;
    let bound = redis.breaker_cool_off
        + Duration::from_millis(250)
        + 2 * redis.timeout
        + Duration::from_secs(2)
        + Duration::from_secs(2);
    assert!(bound * 5 < Settings::default().cache.local.ttl);
    assert_gone_everywhere_within(&[&one, &two], &code, bound).await;
    let mut conn = redis_conn(&redis_server.url).await;
    let value: Option<String> = conn.get(&key).await.expect("GET");
    assert_ne!(
        value.as_deref().map(|v| v.starts_with('2')),
        Some(true),
        "stale entry in Redis"
    );
    assert_eq!(
        metric(&one.metrics().await, "kurz_redis_pending_invalidations"),
        0.0
    );
    one.stop().await;
    two.stop().await;
}

/// A metric's value, 0 when the metric is not there at all.
fn metric_or_zero(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_read_the_store_before_a_delete_does_not_put_the_link_back_in_redis() {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Dynamodb).await;
    // `slow` reads the store through a proxy that holds the answer to the read of the link;
    // `other` has no L1, so every redirect there shows what Redis holds.
    let proxy = ChaosProxy::start(&store.endpoint).await;
    let slow = spawn_app_on(&store, |s| {
        with_redis(&redis_server.url, &prefix)(s);
        s.store.dynamodb.endpoint_url = Some(proxy.url());
    })
    .await;
    let other = spawn_app_on(&store, |s| {
        with_redis(&redis_server.url, &prefix)(s);
        s.cache.local.max_bytes = 0;
    })
    .await;
    let code = other.create_code("https://example.com/resurrected").await;

    // `slow` reads the link from the store; the answer is held until after the delete.
    proxy.hold_answers_to(&code);
    let redirect = {
        let (client, url) = (slow.client.clone(), slow.url(&format!("/{code}")));
        tokio::spawn(async move { client.get(url).send().await.expect("redirect").status() })
    };
    eventually(
        "the slow instance read the link",
        Duration::from_secs(10),
        || async { proxy.held() >= 1 },
    )
    .await;
    assert_eq!(other.admin_delete(&code).await.status(), 204);
    proxy.set(Fault::None);
    assert_eq!(
        redirect.await.expect("join"),
        302,
        "it read before the delete"
    );

    // What the load does with Redis: writes the link back (it must not) or is refused.
    let mut conn = redis_conn(&redis_server.url).await;
    let key = format!("{prefix}l:{code}");
    eventually(
        "the load's write to Redis settled",
        Duration::from_secs(10),
        || async {
            let value: Option<String> = redis_conn(&redis_server.url)
                .await
                .get(&key)
                .await
                .expect("GET");
            value.is_some()
                || metric_or_zero(&slow.metrics().await, "kurz_redis_writes_refused_total") >= 1.0
        },
    )
    .await;
    let value: Option<String> = conn.get(&key).await.expect("GET");
    assert_eq!(
        value, None,
        "a load from before the delete put the link back in Redis"
    );
    assert_eq!(other.get(&format!("/{code}")).await.status(), 404);
    assert_eq!(slow.get(&format!("/{code}")).await.status(), 404);
    slow.stop().await;
    other.stop().await;
}

/// README, "Takedowns": a disable answers 410 at once on the instance that made it and, through
/// Redis, on every other within the 2 s an edit takes to reach them, though each had the link
/// in its own cache; Redis itself no longer holds the enabled link, so an instance without a
/// cache of its own (which reads Redis on every redirect) answers 410 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_on_one_of_three_instances_holds_on_every_instance_within_two_seconds() {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(Backend::Dynamodb).await;
    let fleet = fleet_of_three(&store, &redis_server.url, &prefix).await;
    let reader = spawn_app_on(&store, |s| {
        with_redis(&redis_server.url, &prefix)(s);
        s.cache.local.max_bytes = 0;
    })
    .await;
    let code = fleet[0].create_code("https://example.com/to-disable").await;
    for app in &fleet {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    // In Redis too (written in the background), as the reader sees it.
    let mut conn = redis_conn(&redis_server.url).await;
    let key = format!("{prefix}l:{code}");
    wait_for_key(&mut conn, &key, Duration::from_secs(5)).await;
    assert_eq!(reader.get(&format!("/{code}")).await.status(), 302);

    let disabled = fleet[0]
        .admin_patch(
            &code,
            &serde_json::json!({ "disabled": true, "reason": "takedown 12" }),
        )
        .await;
    assert_eq!(disabled.status(), 200);
    assert_eq!(
        fleet[0].get(&format!("/{code}")).await.status(),
        410,
        "at once on the instance that disabled it"
    );
    // Within 2 s of the disable on every instance: one deadline for all.
    let deadline = Instant::now() + Duration::from_secs(2);
    for app in fleet.iter().chain([&reader]) {
        assert_answers_by(app, &code, 410, deadline).await;
    }
    let cached: Option<String> = conn.get(&key).await.expect("GET");
    let fresh = reader.get(&format!("/{code}")).await.status();
    assert_eq!(fresh, 410, "Redis holds {cached:?}");
    for app in fleet {
        app.stop().await;
    }
    reader.stop().await;
}

/// kurz decides expiry by its own clock, and compares it with Redis's: an instance five minutes
/// ahead says so (`kurz_clock_skew_seconds`, `kurz_clock_skewed`) and answers `/readyz` 503
/// naming the skew from its start on; one on the machine's clock stays ready. Both measured at
/// start-up, before serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_is_off_redis_is_not_ready_and_says_by_how_much() {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let (store_one, store_two) = (
        TestStore::new(Backend::Embedded).await,
        TestStore::new(Backend::Embedded).await,
    );
    let bounded = |s: &mut Settings| {
        with_redis(&redis_server.url, &prefix)(s);
        with_clock_skew_bound(s);
    };
    let on_time = spawn_app_on(&store_one, bounded).await;
    let ahead = spawn_app_at(&store_two, bounded, kurz::clock::system_now_ms() + 300_000).await;

    let ready = on_time.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["checks"]["clock"], "ok", "{body}");
    let text = on_time.metrics().await;
    // Within the bound: the harness's clock stands still from spawn on, so by the comparison
    // at start-up it is behind by the time the start took.
    assert!(
        metric(&text, "kurz_clock_skew_seconds").abs() < 5.0,
        "{text}"
    );
    assert_eq!(metric(&text, "kurz_clock_skewed"), 0.0);

    let refused = ahead.get("/readyz").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.expect("json");
    let clock = problem["checks"]["clock"].as_str().expect("checks.clock");
    let seconds: f64 = clock
        .split(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("the skew in seconds");
    assert!(
        seconds > 290.0 && seconds < 301.0 && clock.contains("ahead of redis's clock"),
        "{problem}"
    );
    assert_eq!(problem["checks"]["redis"], "ok", "{problem}");
    let text = ahead.metrics().await;
    let skew = metric(&text, "kurz_clock_skew_seconds");
    assert!(skew > 290.0 && skew < 301.0, "{text}");
    assert_eq!(metric(&text, "kurz_clock_skewed"), 1.0);
    // Only readiness: requests sent to it directly are still served.
    assert_eq!(ahead.get("/healthz").await.status(), 200);
    on_time.stop().await;
    ahead.stop().await;
}
