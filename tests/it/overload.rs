//! kurz under a table that cannot keep up: capped, slow, resetting or silent, made so by a
//! chaos proxy between kurz and DynamoDB Local. Assertions are about behaviour (what was
//! answered, what was kept, what the metrics say), never about how fast.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;

use crate::harness::{
    Backend, ChaosProxy, DynamoLocal, Fault, TestApp, TestStore, metric, production_store_timeouts,
    spawn_app_on,
};

/// A table on the shared DynamoDB Local, reached through a proxy of its own, warmed up.
async fn proxied_store() -> (ChaosProxy, TestStore) {
    let proxy = ChaosProxy::start(&DynamoLocal::shared().endpoint).await;
    let store = TestStore::with_endpoint(Backend::Dynamodb, proxy.url()).await;
    warm_up(&store).await;
    (proxy, store)
}

/// Makes every kind of call the tests make on `store` once through the proxy, with the
/// harness's lenient timeouts, before an instance with production's timeouts meets the
/// emulator: a JVM that has not run a call yet (and a table just made) answers its first calls
/// in seconds, past production's 1 s attempt timeout, which would fail the test before any
/// fault is injected. Creates (an id lease and conditional writes), redirects (reads), clicks
/// (the flush on stop) and stats; the warm-up's links are its own, no test reads them.
async fn warm_up(store: &TestStore) {
    let warm = async {
        let app = spawn_app_on(store, |_| {}).await;
        for i in 0..10 {
            let url = format!("https://example.com/warm-up/{i}");
            let code = app.create_code(&url).await;
            let redirect = app.get(&format!("/{code}")).await;
            assert_eq!(redirect.headers()["location"], url.as_str());
            let stats = app.admin_get(&format!("/api/v1/links/{code}/stats")).await;
            assert_eq!(stats.status(), 200);
        }
        app.stop().await;
    };
    tokio::time::timeout(Duration::from_secs(120), warm)
        .await
        .expect("DynamoDB Local answered the warm-up within 120 s");
}

fn retry_after(response: &reqwest::Response) -> Option<&str> {
    response.headers().get("retry-after")?.to_str().ok()
}

async fn value(app: &TestApp, name: &str) -> f64 {
    metric(&app.metrics().await, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_table_sheds_excess_creates_at_once_and_keeps_every_acknowledged_one() {
    let (proxy, store) = proxied_store().await;
    let app = Arc::new(spawn_app_on(&store, production_store_timeouts).await);
    let initial_limit = value(&app, "kurz_store_concurrency_limit").await;

    // About 200 calls a second get through; 256 clients ask for far more.
    proxy.set(Fault::Cap(Duration::from_millis(5)));
    let clients = (0..256).map(|i| {
        let app = Arc::clone(&app);
        async move {
            let mut answers = Vec::new();
            for j in 0..3 {
                let url = format!("https://example.com/capped/{i}/{j}");
                let response = app.create(json!({ "url": url })).await;
                let status = response.status().as_u16();
                let retry_after = retry_after(&response).map(str::to_owned);
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                answers.push((status, retry_after, body, url));
            }
            answers
        }
    });
    let answers: Vec<_> = join_all(clients).await.into_iter().flatten().collect();
    proxy.set(Fault::None);

    let created: Vec<(&str, &str)> = answers
        .iter()
        .filter(|(status, ..)| *status == 201)
        .map(|(_, _, body, url)| {
            (
                body["code"].as_str().expect("a 201 names its code"),
                url.as_str(),
            )
        })
        .collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status != 201)
        .collect();
    for (status, retry_after, body, _) in &refused {
        assert_eq!(*status, 503, "every refusal is a 503: {body}");
        assert!(retry_after.is_some(), "503 without Retry-After: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let text = app.metrics().await;
    let shed = metric(&text, "kurz_store_calls_shed_total{class=\"write\"}");
    assert!(
        shed > 0.0,
        "with 256 clients on a capped table, some calls are shed"
    );
    assert!(!created.is_empty(), "the table still takes creates");
    println!(
        "capped table: {} created, {} refused (503), {shed} store calls shed, limit {} -> {}",
        created.len(),
        refused.len(),
        initial_limit,
        metric(&text, "kurz_store_concurrency_limit")
    );

    // Every acknowledged link is there, read from the table (a fresh instance has no cache),
    // and goes where its create asked.
    let reader = spawn_app_on(&store, |_| {}).await;
    for (code, url) in &created {
        let redirect = reader.get(&format!("/{code}")).await;
        assert_eq!(redirect.status(), 302, "{code}");
        assert_eq!(redirect.headers()["location"], *url, "{code}");
    }
    reader.stop().await;
    Arc::into_inner(app).expect("one owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_table_slows_creates_but_never_cached_redirects() {
    let (proxy, store) = proxied_store().await;
    let app = spawn_app_on(&store, production_store_timeouts).await;
    let hot = app.create_code("https://example.com/hot").await;
    assert_eq!(app.get(&format!("/{hot}")).await.status(), 302);

    proxy.set(Fault::Delay(Duration::from_millis(200)));
    let misses = value(&app, "kurz_cache_misses_total").await;
    for _ in 0..50 {
        let redirect = app.get(&format!("/{hot}")).await;
        assert_eq!(redirect.status(), 302);
        assert_eq!(redirect.headers()["location"], "https://example.com/hot");
    }
    assert_eq!(
        value(&app, "kurz_cache_misses_total").await,
        misses,
        "cached redirects never wait on the table"
    );
    // Creates wait for the slow table, one at a time, and all get through.
    for i in 0..5 {
        let response = app
            .create(json!({ "url": format!("https://example.com/slow/{i}") }))
            .await;
        assert_eq!(response.status(), 201);
    }
    let stats = app.admin_get(&format!("/api/v1/links/{hot}/stats")).await;
    assert_eq!(stats.status(), 200);
    assert_eq!(
        value(&app, "kurz_store_calls_shed_total{class=\"write\"}").await,
        0.0
    );
    proxy.set(Fault::None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_table_gets_fewer_retries_and_click_flushes_and_nothing_is_lost_when_it_returns() {
    let (proxy, store) = proxied_store().await;
    let app = spawn_app_on(&store, |s| {
        production_store_timeouts(s);
        s.store.timeout = Duration::from_secs(2);
        s.store.dynamodb.attempt_timeout = Duration::from_millis(600);
        s.clicks.max_backoff = Duration::from_secs(1);
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..5 {
        codes.push(
            app.create_code(&format!("https://example.com/lost/{i}"))
                .await,
        );
    }
    let mut clicks = 0;
    let mut click_all = async |app: &TestApp| {
        for code in &codes {
            assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        }
        clicks += 1;
    };
    for _ in 0..3 {
        click_all(&app).await;
    }

    // Connections reset: creates fail fast with a 503 (retried within the budget first).
    proxy.set(Fault::Reset);
    for i in 0..5 {
        let response = app
            .create(json!({ "url": format!("https://example.com/reset/{i}") }))
            .await;
        assert_eq!(response.status(), 503);
        assert!(retry_after(&response).is_some());
    }
    // Then no answer at all: redirects of cached links go on, and their clicks wait.
    proxy.set(Fault::Silent);
    for _ in 0..4 {
        click_all(&app).await;
    }
    let response = app
        .create(json!({ "url": "https://example.com/silent" }))
        .await;
    assert_eq!(response.status(), 503);
    assert!(retry_after(&response).is_some());
    let deadline = Instant::now() + Duration::from_secs(60);
    while value(&app, "kurz_click_flush_consecutive_failures").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "click flushes never failed twice in a row"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(value(&app, "kurz_click_flush_backoff_milliseconds").await > 0.0);
    let text = app.metrics().await;
    let calls = metric(&text, "kurz_store_calls_total");
    let retries = metric(&text, "kurz_store_retries_total");
    assert!(
        retries <= calls / 10.0 + 10.0,
        "{retries} retries for {calls} calls: more than the budget's tenth plus its reserve"
    );

    // The table answers again: kurz recovers by itself, and no click was lost or doubled.
    proxy.set(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app
            .create(json!({ "url": "https://example.com/back" }))
            .await;
        if response.status() == 201 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(Instant::now() < deadline, "creates never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for code in &codes {
        let stats = app.stats_when(code, clicks).await;
        assert_eq!(stats["total_clicks"], clicks, "{code}");
    }
    assert_eq!(
        value(&app, "kurz_click_flush_consecutive_failures").await,
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_link_redirects_past_its_ttl_while_no_tier_below_can_be_read() {
    let (proxy, store) = proxied_store().await;
    // The defaults: a 60 s TTL, and an hour's allowance past it.
    let stale = spawn_app_on(&store, |_| {}).await;
    // The same instance without the allowance: what a redirect would answer without it.
    let strict = spawn_app_on(&store, |s| s.cache.local.stale_if_error = Duration::ZERO).await;
    let url = "https://example.com/stale-if-error";
    let code = stale.create_code(url).await;
    let never_cached = stale.create_code("https://example.com/never-cached").await;
    for app in [&stale, &strict] {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }

    // The table refuses every connection, and both L1 entries are past their TTL.
    proxy.set(Fault::Reset);
    for app in [&stale, &strict] {
        app.clock.advance(Duration::from_secs(61));
    }
    let response = stale.get(&format!("/{code}")).await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], url);
    assert_eq!(value(&stale, "kurz_cache_stale_answers_total").await, 1.0);
    assert_eq!(strict.get(&format!("/{code}")).await.status(), 503);
    // Only what the instance knew: a link it never cached still answers 503.
    assert_eq!(stale.get(&format!("/{never_cached}")).await.status(), 503);
    // And for an hour past the TTL only.
    stale.clock.advance(Duration::from_secs(3600));
    assert_eq!(stale.get(&format!("/{code}")).await.status(), 503);

    // The table answers again: the next lookup reads it, and the entry is fresh again.
    proxy.set(Fault::None);
    for app in [&stale, &strict] {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    assert_eq!(value(&stale, "kurz_cache_stale_answers_total").await, 1.0);
    stale.stop().await;
    strict.stop().await;
}
