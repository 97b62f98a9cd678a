//! What only the DynamoDB backend has to prove: many instances on one table never hand out a
//! code twice, aliases race safely, the hash fallback takes over when the counter fails,
//! `kurz init` is idempotent, and a stalled DynamoDB gives fast 503s while cached redirects
//! keep working, with recovery and no lost clicks once it answers again, and click flushes
//! that give up on it after one round of timeouts. Without Redis, an instance compares its
//! clock with DynamoDB's.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    ADMIN_TOKEN, Backend, DynamoLocal, RedisServer, TestApp, TestStore, assert_problem, code_of,
    eventually, metric, spawn_app_at, spawn_app_on, unique_name, with_clock_skew_bound,
};
use kurz::analytics::Rollup;
use kurz::config::Secret;
use kurz::store::{ClickDelta, StoreError};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_table_never_share_a_code() {
    let store = TestStore::new(Backend::Dynamodb).await;
    // Small blocks so the instances lease from the shared counter many times, concurrently.
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Arc::new(
            spawn_app_on(&store, |s| s.ids.block_size = 50).await,
        ));
    }
    let permits = Arc::new(Semaphore::new(96));
    let mut tasks = Vec::new();
    for i in 0..3_000 {
        let app = Arc::clone(&instances[i % 3]);
        let permits = Arc::clone(&permits);
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.expect("permit");
            let url = format!("https://example.com/fleet/{i}");
            let code = code_of(app.create(json!({ "url": url })).await).await;
            (code, url)
        }));
    }
    let mut created = HashMap::new();
    for task in tasks {
        let (code, url) = task.await.expect("create task");
        assert!(
            created.insert(code.clone(), url).is_none(),
            "code {code} handed out twice"
        );
    }
    assert_eq!(created.len(), 3_000);

    let created = Arc::new(created);
    let mut checks = Vec::new();
    for app in &instances {
        let (app, created, permits) = (Arc::clone(app), Arc::clone(&created), Arc::clone(&permits));
        checks.push(tokio::spawn(async move {
            let mut lookups = Vec::new();
            for (code, url) in created.iter() {
                let (app, code, url) = (Arc::clone(&app), code.clone(), url.clone());
                let permits = Arc::clone(&permits);
                lookups.push(tokio::spawn(async move {
                    let _permit = permits.acquire().await.expect("permit");
                    let response = app.get(&format!("/{code}")).await;
                    assert_eq!(response.status(), 302, "{code} on {}", app.base);
                    assert_eq!(response.headers()["location"], url.as_str());
                }));
            }
            for lookup in lookups {
                lookup.await.expect("lookup");
            }
        }));
    }
    for check in checks {
        check.await.expect("instance check");
    }
    for app in instances {
        Arc::into_inner(app).expect("sole owner").stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_alias_on_different_instances_have_one_winner() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Arc::new(spawn_app_on(&store, |_| {}).await));
    }
    let mut tasks = Vec::new();
    for i in 0..30 {
        let app = Arc::clone(&instances[i % 3]);
        tasks.push(tokio::spawn(async move {
            let response = app
                .create(json!({ "url": format!("https://example.com/race/{i}"), "alias": "launch-day" }))
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            (status, body)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            201 => winners.push(body["url"].as_str().expect("url").to_owned()),
            409 => assert!(
                body["detail"]
                    .as_str()
                    .expect("detail")
                    .contains("launch-day")
            ),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create of the alias wins");
    for app in &instances {
        assert_eq!(
            app.get("/launch-day").await.headers()["location"],
            winners[0].as_str()
        );
    }
    for app in instances {
        Arc::into_inner(app).expect("sole owner").stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_codes_take_over_when_the_counter_cannot_be_leased() {
    let store = TestStore::new(Backend::Dynamodb).await;
    // Break the counter record only: a string where DynamoDB's ADD needs a number makes every
    // lease fail with a validation error, while links can still be written.
    crate::harness::sdk_client(&store.endpoint)
        .put_item()
        .table_name(&store.table)
        .item("pk", attr("#counter"))
        .item("sk", attr("link_ids"))
        .item("next_id", attr("not-a-number"))
        .send()
        .await
        .expect("break the counter");

    let app = spawn_app_on(&store, |_| {}).await;
    let url = "https://example.com/no-counter";
    let first = code_of(app.create(json!({ "url": url })).await).await;
    // Salted with fresh randomness from the first try: the same URL gets another code, and
    // neither is one anyone could compute from the URL.
    let second = code_of(app.create(json!({ "url": url })).await).await;
    assert_ne!(first, second);
    for code in [&first, &second] {
        assert_eq!(code.len(), 7);
        assert_ne!(*code, kurz::code::hash_code(url, &0u32.to_be_bytes(), 7));
    }
    for (code, expected) in [(&first, url), (&second, url)] {
        assert_eq!(
            app.get(&format!("/{code}")).await.headers()["location"],
            expected
        );
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(metrics.contains("kurz_hash_fallbacks_total 2"), "{metrics}");
    app.stop().await;
}

/// Long enough for the once-a-second readiness probe to notice, with its 1 s store timeout,
/// on a busy machine.
fn within_probe() -> Duration {
    Duration::from_secs(15)
}

/// A create of `url` answered 201, its code.
async fn try_create(app: &TestApp, url: &str) -> Option<String> {
    let response = app.create(json!({ "url": url })).await;
    if response.status() != 201 {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    Some(body["code"].as_str()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_dynamodb_gives_fast_503s_and_kurz_recovers_without_restart() {
    let dynamo = DynamoLocal::start_warm().await;
    let store = TestStore::with_endpoint(Backend::Dynamodb, dynamo.endpoint.clone()).await;
    // Production-like timeouts: this test is about them.
    let app = spawn_app_on(&store, |s| {
        s.store.timeout = Duration::from_secs(1);
        s.store.dynamodb.attempt_timeout = Duration::from_millis(400);
    })
    .await;
    // A fresh DynamoDB Local (a cold JVM) may need longer than the 1 s timeout at first: wait
    // until it answers creates in time, so the stall below is the only thing that fails them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut created = Vec::new();
    while created.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local never answered within 1 s"
        );
        let url = format!("https://example.com/warm/{}", created.len());
        match try_create(&app, &url).await {
            Some(code) => created.push(code),
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let (hot, cold) = (created[0].clone(), created[1].clone());
    assert_eq!(app.get(&format!("/{hot}")).await.status(), 302); // now in the L1 cache

    dynamo.pause();
    // Creates fail fast with 503 + Retry-After; the client's 10 s timeout catches a hang.
    let fast = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for i in 0..3 {
        let response = fast
            .post(app.url("/api/v1/links"))
            .json(&json!({ "url": format!("https://example.com/stalled/{i}") }))
            .send()
            .await
            .expect("answered, not hung");
        assert!(response.headers().contains_key("retry-after"));
        assert_problem(response, 503).await;
    }
    // Cached redirects keep working, and their clicks are kept for later.
    for _ in 0..5 {
        let response = fast
            .get(app.url(&format!("/{hot}")))
            .send()
            .await
            .expect("redirect");
        assert_eq!(response.status(), 302);
    }
    // An uncached code needs the store: a 503, not a hang and not a 404.
    let uncached = fast
        .get(app.url(&format!("/{cold}")))
        .send()
        .await
        .expect("answered");
    assert_problem(uncached, 503).await;
    // The instance stays in rotation (a shared store being down is the same for every
    // instance): /readyz answers 200 and reports the store from its background probe.
    eventually(
        "/readyz reports the store unavailable",
        within_probe(),
        || async {
            let ready = fast.get(app.url("/readyz")).send().await.expect("answered");
            assert_eq!(
                ready.status(),
                200,
                "readiness must not follow a shared dependency"
            );
            let body: Value = ready.json().await.expect("json");
            body["checks"]["store"] == "unavailable"
        },
    )
    .await;
    assert_eq!(metric(&app.metrics().await, "kurz_store_up"), 0.0);

    dynamo.resume();
    // Recovery without a restart: each path comes back by itself (the emulator may need a few
    // seconds to work off what queued up while it was stopped).
    let within = Duration::from_secs(30);
    eventually("creates work again", within, || async {
        try_create(&app, "https://example.com/after")
            .await
            .is_some()
    })
    .await;
    eventually("/readyz reports the store again", within, || async {
        let body: Value = app.get("/readyz").await.json().await.expect("json");
        body["checks"]["store"] == "ok"
    })
    .await;
    assert_eq!(metric(&app.metrics().await, "kurz_store_up"), 1.0);
    eventually("the uncached code redirects", within, || async {
        app.get(&format!("/{cold}")).await.status() == 302
    })
    .await;
    // The clicks counted during the stall reach the store once it answers (1 before, 5 during).
    let stats = app.stats_when(&hot, 6).await;
    assert_eq!(stats["total_clicks"], 6, "{stats}");
    app.stop().await;
}

/// A click flush against a DynamoDB that does not answer reports a timeout and keeps every
/// delta, with its token, for the next flush (it stops sending after the first timeout: the
/// local fleet saw an instance take minutes to stop before that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_flush_gives_up_on_a_stalled_dynamodb_after_one_round_of_timeouts() {
    let dynamo = DynamoLocal::start();
    let store = TestStore::with_endpoint(Backend::Dynamodb, dynamo.endpoint.clone()).await;
    let mut settings = store.settings();
    settings.store.timeout = Duration::from_secs(1);
    settings.store.dynamodb.attempt_timeout = Duration::from_millis(400);
    settings.store.dynamodb.flush_concurrency = NonZeroUsize::new(2).expect("non-zero");
    let links = kurz::store::open(&settings.store, Default::default())
        .await
        .expect("store opens");
    let deltas: Vec<ClickDelta> = (0..40)
        .map(|i| ClickDelta {
            token: format!("stalled-flush-{i}"),
            code: format!("stalled{i}"),
            count: 1,
            last_click_ms: 0,
            hours: vec![(20_000 * 24, Rollup::count_only(1))],
        })
        .collect();

    dynamo.pause();
    let failed = links
        .add_clicks(&deltas)
        .await
        .expect_err("nothing answers");
    dynamo.resume();

    assert!(matches!(failed.error, StoreError::Timeout(_)), "{failed}");
    assert_eq!(
        failed.unapplied,
        (0..40).collect::<Vec<_>>(),
        "every delta is kept, with its token, for the next flush"
    );
    // That only the first round was sent is shown without a clock by the unit tests of
    // `write_bounded` in src/store/dynamodb/mod.rs, which count the writes attempted.
}

#[test]
fn kurz_init_is_idempotent_and_serve_names_it_when_the_table_is_missing() {
    let dynamo = DynamoLocal::shared();
    let table = crate::harness::unique_name("kurz_init");
    let run = |subcommand: &str| {
        Command::new(env!("CARGO_BIN_EXE_kurz"))
            .arg(subcommand)
            .env("KURZ__STORE__BACKEND", "dynamodb")
            .env("KURZ__STORE__DYNAMODB__TABLE", &table)
            .env("KURZ__STORE__DYNAMODB__ENDPOINT_URL", &dynamo.endpoint)
            .env("KURZ__STORE__DYNAMODB__REGION", "us-east-1")
            .env("KURZ__STORE__DYNAMODB__ACCESS_KEY_ID", "local")
            .env("KURZ__STORE__DYNAMODB__SECRET_ACCESS_KEY", "local")
            .env("KURZ__SERVER__BIND", "127.0.0.1:0")
            .env("KURZ__AUTH__ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("kurz runs")
    };
    let missing = run("serve");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("kurz init"), "{stderr}");

    let first = run("init");
    assert!(first.status.success(), "{first:?}");
    let first = String::from_utf8_lossy(&first.stdout);
    assert!(first.contains("created DynamoDB table"), "{first}");
    assert!(first.contains("enabled TTL on 'expires_at'"), "{first}");
    let second = run("init");
    assert!(second.status.success(), "{second:?}");
    let second = String::from_utf8_lossy(&second.stdout);
    assert!(second.contains("exists"), "{second}");
    assert!(second.contains("TTL already enabled"), "{second}");
}

#[tokio::test]
async fn clicks_of_a_deleted_link_do_not_bring_its_statistics_back() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let app = spawn_app_on(&store, |s| {
        s.clicks.flush_interval = Duration::from_secs(3_600)
    })
    .await;
    let code = app.create_code("https://example.com/gone").await;
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    let deleted = app.admin_delete(&code).await;
    assert_eq!(deleted.status(), 204);
    app.stop().await; // flushes the click recorded before the delete

    let items = crate::harness::sdk_client(&store.endpoint)
        .query()
        .table_name(&store.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", attr(&code))
        .send()
        .await
        .expect("query");
    assert_eq!(items.count(), 0, "{:?}", items.items());
}

fn attr(s: &str) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(s.to_owned())
}

/// A table made before the list indexes, holding a link written then: `kurz serve` names
/// `kurz init`, which adds the indexes and gives the old link their keys, and the link is then
/// listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kurz_init_adds_the_list_indexes_to_a_table_made_before_them() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType,
    };
    // An emulator of its own: on the shared one, busy with the other tests' tables, DynamoDB
    // Local leaves an index added to an existing table CREATING for minutes (AWS's finishes).
    let dynamo = DynamoLocal::start();
    let store = TestStore::new(Backend::Embedded).await; // only for its data folder
    let table = crate::harness::unique_name("kurz_old");
    let sdk = crate::harness::sdk_client(&dynamo.endpoint);
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    let string = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    sdk.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(string("pk"))
        .attribute_definitions(string("sk"))
        .send()
        .await
        .expect("an old table");
    let n = |v: &str| AttributeValue::N(v.to_owned());
    sdk.put_item()
        .table_name(&table)
        .item("pk", attr("OldLink"))
        .item("sk", attr("link"))
        .item("url", attr("https://example.com/old"))
        .item("created_at_ms", n("1700000000000"))
        .item("redirect_status", n("302"))
        .item("owner", attr("admin"))
        .item("clicks", n("4"))
        .send()
        .await
        .expect("an old link");

    let run = |subcommand: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kurz"));
        command.arg(subcommand);
        for (name, value) in store
            .env()
            .into_iter()
            .chain(crate::harness::dynamo_env(&table, &dynamo.endpoint))
        {
            command.env(name, value);
        }
        command.output().expect("kurz runs")
    };
    let refused = run("serve");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("list index") && stderr.contains("kurz init"),
        "{stderr}"
    );

    let init = run("init");
    assert!(init.status.success(), "{init:?}");
    let said = String::from_utf8_lossy(&init.stdout);
    assert!(said.contains("added the list index 'by_owner'"), "{said}");
    assert!(said.contains("added the list index 'by_created'"), "{said}");
    assert!(
        said.contains("indexed 1 links written before the list indexes"),
        "{said}"
    );

    let export = run("export");
    assert!(export.status.success(), "{export:?}");
    let text = String::from_utf8_lossy(&export.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("OldLink"))
        .expect("the old link is listed");
    let line: Value = serde_json::from_str(line).expect("json");
    assert_eq!(
        (line["url"].as_str(), line["clicks"].as_u64()),
        (Some("https://example.com/old"), Some(4))
    );
    assert_eq!(line["forward_query"], false, "it never forwarded");
}

/// A click delta sent again after DynamoDB has forgotten its request token (it keeps them 10
/// minutes) is refused by the table itself, and counted once. The chaos proxy stands in for
/// the passing of those minutes: it changes the token of the resend, so DynamoDB meets a
/// token it never saw, as it would after the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_delta_sent_again_after_its_request_token_expired_counts_once() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let proxy = crate::harness::ChaosProxy::start(&store.endpoint).await;
    let mut settings = store.settings();
    settings.store.dynamodb.endpoint_url = Some(proxy.url());
    let links = kurz::store::open(&settings.store, Default::default())
        .await
        .expect("store opens");
    let link = kurz::store::Link {
        code: "counted1".into(),
        url: "https://example.com/counted".into(),
        created_at_ms: 1,
        ..Default::default()
    };
    links.insert(&link, None).await.expect("insert");
    let flush = |token: &'static str, count: u64| {
        let delta = ClickDelta {
            token: token.into(),
            code: "counted1".into(),
            count,
            last_click_ms: 5,
            hours: vec![(20_000 * 24, Rollup::count_only(count))],
        };
        let links = Arc::clone(&links);
        async move { links.add_clicks(&[delta]).await.expect("a flush") }
    };
    flush("flush-a", 3).await;
    // Within the token's window DynamoDB itself recognises the resend of a write whose answer
    // was lost.
    flush("flush-a", 3).await;
    // Past it: the same delta, same token, to a DynamoDB that no longer knows the token.
    proxy.rewrite_requests(
        r#""ClientRequestToken":"flush-a""#,
        r#""ClientRequestToken":"flush-A""#,
    );
    flush("flush-a", 3).await;
    // Another delta is counted as usual.
    flush("flush-b", 2).await;
    let stats = links.stats("counted1").await.expect("stats").expect("link");
    assert_eq!(stats.total_clicks, 5, "{stats:?}");
    assert_eq!(stats.daily, vec![(20_000, 5)]);
}

/// `clicks.max_pending_codes` bounds what waits in memory while the store fails: with a bound
/// of 4 and 10 codes clicked once each during an outage, 6 clicks are dropped (the oldest
/// deltas) and counted, 4 stay pending however many flushes fail, and once the table answers
/// again the statistics hold exactly the 4 that were kept, never a dropped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_past_max_pending_codes_are_dropped_counted_and_never_written() {
    use crate::harness::{ChaosProxy, Fault, admin_stats};
    const BOUND: usize = 4;
    const CODES: usize = 10;
    let store = TestStore::new(Backend::Dynamodb).await;
    let proxy = ChaosProxy::start(&store.endpoint).await;
    let app = spawn_app_on(&store, |s| {
        s.store.dynamodb.endpoint_url = Some(proxy.url());
        s.clicks.max_pending_codes = BOUND;
        // Failing flushes keep coming, at most this far apart.
        s.clicks.max_backoff = Duration::from_millis(400);
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..CODES {
        let code = app
            .create_code(&format!("https://example.com/dropped/{i}"))
            .await;
        // Cached, so that it redirects while the table is away; HEAD counts no click.
        assert_eq!(app.head(&format!("/{code}")).await.status(), 302);
        codes.push(code);
    }

    proxy.set(Fault::Reset);
    for code in &codes {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    let dropped = (CODES - BOUND) as f64;
    let within = Duration::from_secs(20);
    eventually("the clicks past the bound are dropped", within, || async {
        metric(&app.metrics().await, "kurz_clicks_dropped_total") >= dropped
    })
    .await;
    let text = app.metrics().await;
    assert_eq!(metric(&text, "kurz_clicks_dropped_total"), dropped);
    assert_eq!(metric(&text, "kurz_clicks_pending"), BOUND as f64);
    // Two more failed flushes: still bounded, nothing more dropped.
    let failures = metric(&text, "kurz_click_flush_failures_total");
    eventually("two more flushes fail", within, || async {
        metric(&app.metrics().await, "kurz_click_flush_failures_total") >= failures + 2.0
    })
    .await;
    let text = app.metrics().await;
    assert_eq!(metric(&text, "kurz_clicks_dropped_total"), dropped);
    assert_eq!(metric(&text, "kurz_clicks_pending"), BOUND as f64);

    proxy.set(Fault::None);
    eventually("the kept clicks are written", within, || async {
        metric(&app.metrics().await, "kurz_clicks_pending") == 0.0
    })
    .await;
    let text = app.metrics().await;
    assert_eq!(metric(&text, "kurz_clicks_flushed_total"), BOUND as f64);
    let mut counted = 0;
    for code in &codes {
        let stats = admin_stats(&app.client, &app.base, code).await;
        let clicks = stats["total_clicks"].as_u64().expect("total_clicks");
        assert!(clicks <= 1, "{code}: {stats}");
        counted += clicks;
    }
    let sent = CODES as u64;
    assert_eq!(
        counted,
        sent - dropped as u64,
        "the stats hold sent - dropped"
    );
    app.stop().await;
}

/// A delete on DynamoDB removes every item under the link's code: the link and its per-day
/// click items, written by flushes before the delete (docs/data-model.md, "delete"). The
/// token items of applied deltas are keyed by token, not by code, and end by TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_removes_the_day_items_its_clicks_wrote() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let app = spawn_app_on(&store, |s| {
        s.clicks.flush_interval = Duration::from_millis(200)
    })
    .await;
    let code = app
        .create_code("https://example.com/counted-then-gone")
        .await;
    for _ in 0..3 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    let sdk = crate::harness::sdk_client(&store.endpoint);
    let items_of = |code: String| {
        let (sdk, table) = (sdk.clone(), store.table.clone());
        async move {
            sdk.query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", attr(&code))
                .consistent_read(true)
                .send()
                .await
                .expect("query")
                .items()
                .to_vec()
        }
    };
    let sort_key = |item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
        item.get("sk")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    eventually(
        "the clicks' day item is written",
        Duration::from_secs(20),
        || async {
            items_of(code.clone()).await.iter().any(|item| {
                sort_key(item).starts_with("day#")
                    && item
                        .get("clicks")
                        .and_then(|v| v.as_n().ok())
                        .map(String::as_str)
                        == Some("3")
            })
        },
    )
    .await;
    let before: Vec<String> = items_of(code.clone()).await.iter().map(sort_key).collect();
    assert!(before.contains(&"link".to_owned()), "{before:?}");

    assert_eq!(app.admin_delete(&code).await.status(), 204);
    let after: Vec<String> = items_of(code.clone()).await.iter().map(sort_key).collect();
    assert!(after.is_empty(), "left behind by the delete: {after:?}");
    app.stop().await;
}

/// On DynamoDB the reference clock is DynamoDB's (the `Date` of an answer, to the second), with
/// Redis or without: an instance five minutes ahead of it is not ready and names the skew; one
/// on the machine's clock is within the bound. (The harness's clocks stand still from spawn on, so by the
/// comparison at start-up they are behind by the time the start took: hence the margins.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_is_off_dynamodb_is_not_ready_with_redis_or_without() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let on_time = spawn_app_on(&store, with_clock_skew_bound).await;
    // With Redis too: DynamoDB's clock (AWS's) is still the one compared with.
    let ahead = spawn_app_at(
        &store,
        |s| {
            with_clock_skew_bound(s);
            s.cache.redis.url = Some(Secret::new(RedisServer::shared().url.clone()));
            s.cache.redis.key_prefix = format!("{}:", unique_name("t"));
        },
        kurz::clock::system_now_ms() + 300_000,
    )
    .await;

    let ready = on_time.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["checks"]["clock"], "ok", "{body}");
    assert_eq!(body["checks"]["redis"], "off", "{body}");
    let skew = metric(&on_time.metrics().await, "kurz_clock_skew_seconds");
    assert!(skew.abs() < 5.0, "{skew}");

    let refused = ahead.get("/readyz").await;
    assert_eq!(refused.status(), 503);
    let problem: Value = refused.json().await.expect("json");
    let clock = problem["checks"]["clock"].as_str().expect("checks.clock");
    assert!(clock.contains("ahead of dynamodb's clock"), "{problem}");
    let skew = metric(&ahead.metrics().await, "kurz_clock_skew_seconds");
    assert!(skew > 290.0 && skew < 301.0, "{skew}");
    on_time.stop().await;
    ahead.stop().await;
}
