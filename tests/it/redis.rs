//! The Redis L2 cache against a real redis-server the harness starts and owns: misses fill
//! Redis with bounded TTLs (on every store backend), deletes reach other instances through
//! pub/sub, and Redis dying mid-load (or going silent behind the chaos proxy) costs no
//! redirect; after it comes back, kurz uses it again without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{
    Backend, ChaosProxy, Fault, RedisServer, TestApp, TestStore, free_port, metric, spawn_app_on,
    unique_name,
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
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = app.get(&format!("/{code}")).await.status();
        if status == 404 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still answers {status} for {code} after 2 s",
            app.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn misses_fill_redis_with_bounded_ttls(backend: Backend) {
    let redis_server = RedisServer::shared();
    let prefix = format!("{}:", unique_name("t"));
    let store = TestStore::new(backend).await;
    // L1 off, so every redirect shows what Redis does.
    let app = spawn_app_on(&store, |s| {
        with_redis(&redis_server.url, &prefix)(s);
        s.cache.local.max_bytes = 0;
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
    assert_eq!(value, "302 0 https://example.com/forever");
    assert!(pttl > 0 && pttl <= 3_600_000, "{pttl}");

    assert_eq!(app.get(&format!("/{soon}")).await.status(), 307);
    let (value, pttl) = wait_for_key(&mut conn, &key(&soon), Duration::from_secs(5)).await;
    assert!(value.starts_with("307 "), "{value}");
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
