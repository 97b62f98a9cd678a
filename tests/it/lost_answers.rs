//! Writes that land while their answers are lost: the chaos proxy passes kurz's requests on to
//! DynamoDB Local and throws the answers away (a remote store's "committed, then timed out"),
//! then lets answers through again. What kurz promises must hold through it: a create retried
//! under its `Idempotency-Key` gives the one link, clicks are counted exactly once, and a delete
//! retried finds the link gone, never back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Backend, ChaosProxy, DynamoLocal, Fault, TestApp, TestStore, admin_stats,
    spawn_app_on,
};

/// An app on a table reached through a proxy of its own, with short attempt timeouts so a lost
/// answer is given up on quickly (the store timeout still allows retries).
async fn app_behind_proxy(
    adjust: impl FnOnce(&mut kurz::config::Settings),
) -> (ChaosProxy, TestStore, TestApp) {
    let proxy = ChaosProxy::start(&DynamoLocal::shared().endpoint).await;
    let store = TestStore::with_endpoint(Backend::Dynamodb, proxy.url()).await;
    let app = spawn_app_on(&store, |s| {
        s.store.timeout = Duration::from_secs(4);
        s.store.dynamodb.attempt_timeout = Duration::from_millis(800);
        adjust(s);
    })
    .await;
    (proxy, store, app)
}

/// Waits (at most 10 s) until the proxy has thrown away at least one answer.
async fn until_an_answer_is_lost(proxy: &ChaosProxy, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.dropped() <= before {
        assert!(Instant::now() < deadline, "no answer was dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_create_retried_after_a_lost_answer_gives_one_link() {
    let (proxy, _store, app) = app_behind_proxy(|_| {}).await;
    let create = || {
        app.client
            .post(app.url("/api/v1/links"))
            .header("idempotency-key", "order-17")
            .json(&json!({ "url": "https://example.com/lost-answer" }))
            .send()
    };
    // A first link leases a block of ids, so the create below is one write: the link with its
    // idempotency record.
    let earlier = app.create_code("https://example.com/earlier").await;
    proxy.set(Fault::DropAnswers);
    let first = create().await.expect("create");
    assert!(
        proxy.dropped() > 0,
        "the write went through and its answer was lost"
    );
    assert_eq!(
        first.status(),
        503,
        "kurz cannot know the outcome: a retryable answer"
    );
    proxy.set(Fault::None);

    let retried = create().await.expect("create");
    assert_eq!(retried.status(), 201);
    assert_eq!(
        retried.headers()["idempotent-replayed"],
        "true",
        "the link that landed"
    );
    let link: Value = retried.json().await.expect("json");
    let links: Vec<Value> = app
        .admin_links()
        .await
        .into_iter()
        .filter(|l| l["code"] != earlier.as_str())
        .collect();
    assert_eq!(links.len(), 1, "one link, not one per attempt: {links:?}");
    assert_eq!(links[0]["code"], link["code"]);
    let redirect = app
        .get(&format!("/{}", link["code"].as_str().expect("code")))
        .await;
    assert_eq!(
        redirect.headers()["location"],
        "https://example.com/lost-answer"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_whose_flush_answers_were_lost_are_counted_exactly_once() {
    let (proxy, _store, app) = app_behind_proxy(|s| {
        s.clicks.flush_interval = Duration::from_millis(200);
    })
    .await;
    let code = app.create_code("https://example.com/counted").await;
    // Cached from here on: the redirects need no store call, only the flushes do.
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    let dropped = proxy.dropped();
    proxy.set(Fault::DropAnswers);
    for _ in 0..49 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    // Flushes land and their answers are lost; kurz keeps the deltas (and their request
    // tokens) and sends them again.
    until_an_answer_is_lost(&proxy, dropped).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set(Fault::None);

    let stats = app.stats_when(&code, 50).await;
    assert_eq!(stats["total_clicks"], 50, "{stats}");
    // And stays there: the retried flushes added nothing twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = admin_stats(&app.client, &app.base, &code).await;
    assert_eq!(stats["total_clicks"], 50, "{stats}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_retried_after_a_lost_answer_finds_the_link_gone() {
    let (proxy, _store, app) = app_behind_proxy(|_| {}).await;
    let code = app.create_code("https://example.com/deleted").await;
    proxy.set(Fault::DropAnswers);
    let first = app.admin_delete(&code).await;
    assert!(
        proxy.dropped() > 0,
        "the delete went through and its answer was lost"
    );
    assert_eq!(first.status(), 503);
    proxy.set(Fault::None);

    // The retry learns the link is gone (it was deleted by the first attempt), and it stays
    // gone: no redirect, no metadata.
    let retried = app.admin_delete(&code).await;
    assert_eq!(retried.status(), 404);
    let problem: Value = retried.json().await.expect("problem");
    assert!(problem["detail"].as_str().expect("detail").contains(&code));
    assert_eq!(app.get(&format!("/{code}")).await.status(), 404);
    let metadata = app
        .client
        .get(app.url(&format!("/api/v1/links/{code}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(metadata.status(), 404);
    assert!(app.admin_links().await.is_empty());
    app.stop().await;
}
