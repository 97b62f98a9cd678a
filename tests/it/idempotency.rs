//! `Idempotency-Key` on every store backend: concurrent retries end in the one link, and a
//! replay only ever gives back the link that very create made, to the key that made it.

use std::collections::HashSet;

use kurz::config::Secret;
use serde_json::{Value, json};

use crate::harness::{
    Backend, ChaosProxy, DynamoLocal, TestApp, TestStore, assert_problem, spawn_app_on,
    spawn_app_on_backend,
};
use crate::on_every_backend;

const KEY_A: &str = "key-alpha-0123456789abcdef01234567";
const KEY_B: &str = "key-beta-0123456789abcdef012345678";

/// `POST /api/v1/links` with `body`, as `token`, under `Idempotency-Key: key`.
async fn create_keyed(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/links"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("send")
}

/// The codes of the admin's list.
async fn admin_codes(app: &TestApp) -> Vec<String> {
    let links = app.admin_links().await;
    links
        .iter()
        .map(|l| l["code"].as_str().expect("code").to_owned())
        .collect()
}

fn with_key_a(s: &mut kurz::config::Settings) {
    s.auth.api_keys = vec![Secret::new(KEY_A)];
}

/// A first link, so that the id block is leased and each create after it is one write: the
/// link with its idempotency record. Its code.
async fn warm_up(app: &TestApp) -> String {
    let body = json!({ "url": "https://example.com/w" });
    let first: Value = create_keyed(app, KEY_A, "warm-up", &body)
        .await
        .json()
        .await
        .expect("json");
    first["code"].as_str().expect("code").to_owned()
}

async fn concurrent_retries_with_one_key_end_in_one_link(backend: Backend) {
    let app = spawn_app_on_backend(backend, with_key_a).await;
    let earlier = warm_up(&app).await;
    twenty_racing_retries_make_one_link(&app, &earlier).await;
    app.stop().await;
}

/// Twenty identical creates under one key at once, all racing for the one idempotency record:
/// every one answers 201 with the one code (nineteen of them replays), one link is stored
/// (besides `earlier`).
async fn twenty_racing_retries_make_one_link(app: &TestApp, earlier: &str) {
    let body = json!({ "url": "https://example.com/raced" });
    let answers = futures_util::future::join_all(
        (0..20).map(|_| create_keyed(app, KEY_A, "order-raced", &body)),
    )
    .await;
    let mut codes = HashSet::new();
    let mut replays = 0;
    for answer in answers {
        let status = answer.status();
        replays += usize::from(answer.headers().contains_key("idempotent-replayed"));
        let text = answer.text().await.expect("body");
        assert_eq!(status, 201, "every retry gets the link: {text}");
        let link: Value = serde_json::from_str(&text).expect("json");
        codes.insert(link["code"].as_str().expect("code").to_owned());
    }
    assert_eq!(codes.len(), 1, "one code for one key: {codes:?}");
    assert_eq!(replays, 19, "one create, nineteen replays");
    let stored: Vec<String> = admin_codes(app)
        .await
        .into_iter()
        .filter(|c| c != earlier)
        .collect();
    assert_eq!(
        stored,
        codes.into_iter().collect::<Vec<_>>(),
        "exactly one link stored"
    );
}

/// On DynamoDB, creates racing for one idempotency record meet each other's transactions in
/// flight: DynamoDB cancels those with `TransactionConflict` (DynamoDB Local runs transactions
/// one at a time and never does, so the proxy answers the first ten as DynamoDB would). A
/// conflict is transient: each ends in the one link all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_retries_on_dynamodb_that_meet_transaction_conflicts_end_in_one_link() {
    let proxy = ChaosProxy::start(&DynamoLocal::shared().endpoint).await;
    let store = TestStore::with_endpoint(Backend::Dynamodb, proxy.url()).await;
    let app = spawn_app_on(&store, with_key_a).await;
    let earlier = warm_up(&app).await;
    proxy.conflict_transactions(10);
    twenty_racing_retries_make_one_link(&app, &earlier).await;
    assert_eq!(proxy.conflicts_left(), 0, "ten creates met a conflict");
    app.stop().await;
}

async fn a_replay_never_returns_a_link_another_key_made_under_the_code_since(backend: Backend) {
    let app = spawn_app_on_backend(backend, |s| {
        s.auth.api_keys = vec![Secret::new(KEY_A), Secret::new(KEY_B)];
    })
    .await;
    let body = json!({ "url": "https://example.com/mine" });
    let first = create_keyed(&app, KEY_A, "order-1", &body).await;
    assert_eq!(first.status(), 201);
    let code = first.json::<Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert_eq!(app.admin_delete(&code).await.status(), 204);
    // Another key takes the freed code as its alias.
    let theirs = json!({ "url": "https://example.com/theirs", "alias": code });
    let taken = create_keyed(&app, KEY_B, "theirs-1", &theirs).await;
    assert_eq!(taken.status(), 201);

    // A's retry: the link its create made is gone; B's link under the same code is not A's.
    let retry = create_keyed(&app, KEY_A, "order-1", &body).await;
    let problem = assert_problem(retry, 409).await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("deleted"), "{detail}");
    assert!(!problem.to_string().contains("theirs"), "{problem}");

    // The same key from another API key is another key: its own link, nothing of A's.
    let other = create_keyed(&app, KEY_B, "order-1", &body).await;
    assert_eq!(other.status(), 201);
    assert!(!other.headers().contains_key("idempotent-replayed"));
    let other: Value = other.json().await.expect("json");
    assert_ne!(other["code"], code.as_str());
    // And reusing a key with another body is refused, not replayed.
    let another = json!({ "url": "https://example.com/x" });
    let misuse = create_keyed(&app, KEY_B, "order-1", &another).await;
    assert_problem(misuse, 422).await;
    app.stop().await;
}

on_every_backend!(
    concurrent_retries_with_one_key_end_in_one_link,
    a_replay_never_returns_a_link_another_key_made_under_the_code_since,
);
