//! Data lifetime on the embedded store: idempotency records past their window are pruned and
//! links expired for longer than `store.purge_expired_after_s` are purged, in the background,
//! by the app's own clock. (DynamoDB's TTL does both there: see `store::dynamodb::item`.)

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

use crate::harness::{
    Backend, TestStore, assert_problem, eventually, metric, sdk_client, spawn_app_on,
    spawn_app_with,
};

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_and_old_idempotency_records_are_purged_and_their_codes_freed() {
    let app = spawn_app_with(|s| s.store.purge_interval = Duration::from_secs(1)).await;
    let expires = |after: Duration| {
        let at = app.clock.now_ms() + i64::try_from(after.as_millis()).expect("ms");
        kurz::clock::format_rfc3339(at)
    };
    let gone = json!({ "url": "https://example.com/gone", "alias": "old-promo",
                       "expires_at": expires(Duration::from_secs(3600)) });
    assert_eq!(app.create(gone).await.status(), 201);
    let later = json!({ "url": "https://example.com/later", "alias": "later-promo",
                        "expires_at": expires(40 * DAY) });
    assert_eq!(app.create(later).await.status(), 201);
    let keeper = app.create_code("https://example.com/keeper").await;
    let create_keyed = || {
        app.client
            .post(app.url("/api/v1/links"))
            .header("idempotency-key", "order-old")
            .json(&json!({ "url": "https://example.com/keyed" }))
            .send()
    };
    let keyed = create_keyed().await.expect("send");
    assert_eq!(keyed.status(), 201);
    let keyed: Value = keyed.json().await.expect("json");
    assert_eq!(app.get("/old-promo").await.status(), 302);

    // 30 days (the default) after the first link expired, and past every idempotency window.
    app.clock
        .advance(Duration::from_secs(3600) + 30 * DAY + Duration::from_secs(60));
    eventually(
        "the expired link is purged",
        Duration::from_secs(20),
        || async {
            let metrics = app.metrics().await;
            metric(&metrics, "kurz_store_expired_links_purged_total") >= 1.0
                && metric(&metrics, "kurz_store_idempotency_records_pruned_total") >= 1.0
        },
    )
    .await;
    let codes: Vec<String> = app
        .admin_links()
        .await
        .iter()
        .map(|l| l["code"].as_str().expect("code").to_owned())
        .collect();
    assert!(!codes.contains(&"old-promo".to_owned()), "{codes:?}");
    assert!(codes.contains(&"later-promo".to_owned()), "{codes:?}");
    assert!(codes.contains(&keeper), "{codes:?}");
    assert_problem(app.admin_get("/api/v1/links/old-promo/stats").await, 404).await;
    // Purged, its code is free for an alias again (generated codes never repeat anyway).
    let again = json!({ "url": "https://example.com/new-promo", "alias": "old-promo" });
    assert_eq!(app.create(again).await.status(), 201);
    assert_eq!(
        app.get("/old-promo").await.headers()["location"],
        "https://example.com/new-promo"
    );
    // The old key's record is gone with its window: the key makes a new link.
    let reused = create_keyed().await.expect("send");
    assert_eq!(reused.status(), 201);
    assert!(!reused.headers().contains_key("idempotent-replayed"));
    let reused: Value = reused.json().await.expect("json");
    assert_ne!(reused["code"], keyed["code"]);
    app.stop().await;
}

/// The link item on DynamoDB under `code`, read with the SDK.
async fn dynamo_link_item(
    store: &TestStore,
    code: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    sdk_client(&store.endpoint)
        .get_item()
        .table_name(&store.table)
        .key("pk", AttributeValue::S(code.into()))
        .key("sk", AttributeValue::S("link".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
}

/// On DynamoDB the TTL removes expired links, `store.purge_expired_after_s` after they expire
/// (until then they answer 410, as on the embedded store). Its day counts carry the same TTL,
/// but DynamoDB's TTL deletes items in its own time, not together: a link made later under the
/// same code never shows those still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_ttl_removes_expired_links_after_the_purge_delay_and_a_reused_code_starts_afresh()
{
    let store = TestStore::new(Backend::Dynamodb).await;
    let app = spawn_app_on(&store, |_| {}).await;
    let expires_ms = (app.clock.now_ms() / 1000 + 3600) * 1000;
    let body = json!({ "url": "https://example.com/ttl", "alias": "ttl-promo",
                       "expires_at": kurz::clock::format_rfc3339(expires_ms) });
    assert_eq!(app.create(body).await.status(), 201);
    let item = dynamo_link_item(&store, "ttl-promo").await.expect("stored");
    let AttributeValue::N(ttl) = &item["expires_at"] else {
        panic!("no TTL attribute: {item:?}");
    };
    assert_eq!(
        ttl.parse::<i64>().expect("seconds"),
        expires_ms / 1000 + 30 * 86_400,
        "the TTL falls due 30 days (the default) after the expiry"
    );

    assert_eq!(app.get("/ttl-promo").await.status(), 302);
    app.stats_when("ttl-promo", 1).await;
    let day_item = sdk_client(&store.endpoint)
        .query()
        .table_name(&store.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :day)")
        .expression_attribute_values(":pk", AttributeValue::S("ttl-promo".into()))
        .expression_attribute_values(":day", AttributeValue::S("day#".into()))
        .send()
        .await
        .expect("query")
        .items
        .unwrap_or_default();
    assert!(!day_item.is_empty(), "a day item");
    for day in &day_item {
        assert_eq!(
            day.get("expires_at"),
            Some(&AttributeValue::N(ttl.clone())),
            "{day:?}"
        );
    }
    // DynamoDB's TTL deletes the link item first (its day items are other items, deleted
    // when DynamoDB gets to them).
    sdk_client(&store.endpoint)
        .delete_item()
        .table_name(&store.table)
        .key("pk", AttributeValue::S("ttl-promo".into()))
        .key("sk", AttributeValue::S("link".into()))
        .send()
        .await
        .expect("delete item");
    app.clock.advance(DAY);
    let again = json!({ "url": "https://example.com/ttl-again", "alias": "ttl-promo" });
    assert_eq!(app.create(again).await.status(), 201);
    let stats: Value = app
        .admin_get("/api/v1/links/ttl-promo/stats")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stats["total_clicks"], 0, "{stats}");
    assert_eq!(stats["daily"], json!([]), "{stats}");
    app.stop().await;
}
