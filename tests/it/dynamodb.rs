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

/// A click of `referrer` from `country`, classified: what the flusher folds into a rollup.
fn classified(bot: bool, referrer: &str, country: &str) -> kurz::analytics::Classified {
    kurz::analytics::Classified {
        bot,
        values: [
            referrer.into(),
            country.into(),
            "mobile".into(),
            "Safari".into(),
            "iOS".into(),
        ],
    }
}

/// Visitor `n`'s hash, as the flusher makes it: keyed, uniform.
fn visitor(n: u32) -> u64 {
    kurz::analytics::uniques::DayKey::new(1, b"a test's visitor key")
        .visitor(std::net::IpAddr::from(n.to_be_bytes()), "Mozilla/5.0")
}

/// A store on a fresh table of the shared DynamoDB Local, reached through a chaos proxy,
/// keeping `max_values` values per dimension.
async fn analytics_store(
    max_values: usize,
) -> (
    TestStore,
    crate::harness::ChaosProxy,
    Arc<dyn kurz::store::LinkStore>,
) {
    let store = TestStore::new(Backend::Dynamodb).await;
    let proxy = crate::harness::ChaosProxy::start(&store.endpoint).await;
    let mut settings = store.settings();
    settings.store.dynamodb.endpoint_url = Some(proxy.url());
    settings.analytics.max_values_per_dimension = max_values;
    let links = kurz::store::open_with(
        &settings.store,
        kurz::store::ClickLimits::of(&settings.analytics),
        Default::default(),
    )
    .await
    .expect("store opens");
    (store, proxy, links)
}

async fn insert_link(links: &Arc<dyn kurz::store::LinkStore>, code: &str) {
    let link = kurz::store::Link {
        code: code.into(),
        url: format!("https://example.com/{code}"),
        created_at_ms: kurz::clock::system_now_ms(),
        ..Default::default()
    };
    links.insert(&link, None).await.expect("insert");
}

/// Every item under `code`, by sort key.
async fn items_under(
    store: &TestStore,
    code: &str,
) -> Vec<(
    String,
    HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
)> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = crate::harness::sdk_client(&store.endpoint)
            .query()
            .table_name(&store.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", attr(code))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("query");
        for item in page.items() {
            let sk = item["sk"].as_s().expect("sk").clone();
            items.push((sk, item.clone()));
        }
        match page.last_evaluated_key() {
            Some(last) if !last.is_empty() => start = Some(last.clone()),
            _ => return items,
        }
    }
}

/// A delta over two hours on two days, with 250 referrers in the first (more than one update
/// of an item takes, so it is written in three transactions), bots, and visitors: `analytics`
/// reads back each hour and day with its counts, every value, and the visitors (each day's
/// hours merged); `stats` still has the totals. The same delta sent again, after DynamoDB has
/// forgotten its request token too, changes nothing: not a count, not the visitors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_details_land_per_hour_and_day_and_a_resent_delta_counts_nothing_twice() {
    use kurz::analytics::{Dimension, Rollup};
    let (_store, proxy, links) = analytics_store(300).await;
    insert_link(&links, "rolled1").await;
    // Within the hourly retention (30 days): older hours are not shown.
    let today = kurz::clock::day_of(kurz::clock::system_now_ms());
    let late = (today - 1) * 24 + 23; // the last hour of yesterday
    let early = today * 24; // the first of today
    let mut first = Rollup::default();
    for i in 0..250 {
        first.add(
            &classified(false, &format!("r{i:03}.example"), "DE"),
            visitor(i),
            300,
        );
    }
    first.add(&classified(true, "direct", "US"), visitor(999), 300);
    let mut second = Rollup::default();
    for (n, country) in [(1, "FR"), (2, "FR"), (1_000, "SE")] {
        second.add(&classified(false, "direct", country), visitor(n), 300);
    }
    second.add(&classified(true, "direct", "US"), visitor(999), 300);
    let delta = ClickDelta {
        token: "rollups-a".into(),
        code: "rolled1".into(),
        count: 255,
        last_click_ms: i64::from(early) * 3_600_000 + 5,
        hours: vec![(late, first.clone()), (early, second.clone())],
    };

    let check = || async {
        let read = links
            .analytics("rolled1", late - 3, early + 3)
            .await
            .expect("analytics")
            .expect("the link exists");
        let hours: Vec<(u32, u64, u64, u64)> = read
            .hourly
            .iter()
            .map(|(h, r)| (*h, r.clicks, r.humans, r.bots))
            .collect();
        assert_eq!(hours, vec![(late, 251, 250, 1), (early, 4, 3, 1)]);
        let days: Vec<(u32, u64, u64, u64)> = read
            .daily
            .iter()
            .map(|(d, r)| (*d, r.clicks, r.humans, r.bots))
            .collect();
        assert_eq!(days, vec![(today - 1, 251, 250, 1), (today, 4, 3, 1)]);
        for (got, wrote) in [(&read.hourly[0].1, &first), (&read.hourly[1].1, &second)] {
            assert_eq!(got.dims, wrote.dims, "every value, sorted");
        }
        assert_eq!(read.daily[1].1.values(Dimension::Country).len(), 2);
        let mut estimates = Vec::new();
        for (_, rollup) in read.hourly.iter().chain(&read.daily) {
            estimates.push(rollup.uniques.clone().estimate());
        }
        assert_eq!(
            estimates,
            vec![
                first.uniques.clone().estimate(),
                3,
                first.uniques.clone().estimate(),
                3
            ]
        );
        let stats = links.stats("rolled1").await.expect("stats").expect("link");
        assert_eq!(stats.total_clicks, 255);
        assert_eq!(stats.daily, vec![(today - 1, 251), (today, 4)]);
        read
    };
    links
        .add_clicks(std::slice::from_ref(&delta))
        .await
        .expect("a flush");
    let once = check().await;
    assert!(
        (245..=255).contains(&once.hourly[0].1.uniques.clone().estimate()),
        "250 visitors"
    );
    // Within the token's window, DynamoDB's request token; past it, the token's items.
    links
        .add_clicks(std::slice::from_ref(&delta))
        .await
        .expect("a resend");
    check().await;
    proxy.rewrite_requests(
        r#""ClientRequestToken":"rollups-a""#,
        r#""ClientRequestToken":"rollups-A""#,
    );
    links
        .add_clicks(std::slice::from_ref(&delta))
        .await
        .expect("a late resend");
    check().await;

    // Visitors of another delta on the same day merge with those there.
    let mut more = Rollup::default();
    more.add(&classified(false, "direct", "FR"), visitor(1), 300);
    more.add(&classified(false, "direct", "FR"), visitor(2_000), 300);
    let another = ClickDelta {
        token: "rollups-b".into(),
        code: "rolled1".into(),
        count: 2,
        last_click_ms: i64::from(early) * 3_600_000 + 9,
        hours: vec![(early, more)],
    };
    links.add_clicks(&[another]).await.expect("a flush");
    let read = links
        .analytics("rolled1", early, early)
        .await
        .expect("analytics")
        .expect("the link exists");
    assert_eq!(read.hourly.len(), 1, "only the hours asked for");
    let (_, hour) = &read.hourly[0];
    assert_eq!((hour.clicks, hour.humans), (6, 5));
    assert_eq!(hour.uniques.clone().estimate(), 4, "visitor 1 counted once");
    assert_eq!(
        hour.values(Dimension::Country),
        &vec![("FR".into(), 4), ("SE".into(), 1)]
    );
    assert_eq!(read.daily.len(), 1, "the day of the hours asked for");

    // Hours past `analytics.hourly_retention_days` are not shown (before DynamoDB's TTL
    // removes them); their day is.
    let old_hour = early - 31 * 24;
    let old = ClickDelta {
        token: "rollups-old".into(),
        ..ClickDelta::count_only("rolled1", 1, i64::from(old_hour) * 3_600_000)
    };
    links.add_clicks(&[old]).await.expect("a flush");
    let read = links
        .analytics("rolled1", old_hour, old_hour)
        .await
        .expect("analytics")
        .expect("the link exists");
    assert_eq!(read.hourly.len(), 0, "past the retention");
    let days: Vec<(u32, u64)> = read.daily.iter().map(|(d, r)| (*d, r.clicks)).collect();
    assert_eq!(days, vec![(today - 31, 1)]);
    assert!(
        links
            .analytics("no-such-link", late, early)
            .await
            .expect("analytics")
            .is_none()
    );
}

/// An item gathers values over many flushes and keeps at most
/// `analytics.max_values_per_dimension` of each dimension: once it has that many, a flush's
/// new values are added to its `other`, and a read caps what it finds the same way (an item
/// written past the cap by flushes in flight at once), the least clicked as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_keeps_at_most_the_cap_of_values_over_many_flushes_and_reads() {
    use kurz::analytics::{Dimension, OTHER, Rollup};
    let (store, _proxy, links) = analytics_store(2).await;
    insert_link(&links, "capped1").await;
    let hour = kurz::analytics::hour_of(kurz::clock::system_now_ms());
    for (i, referrers) in [["a.example", "b.example"], ["c.example", "a.example"]]
        .iter()
        .enumerate()
    {
        let mut rollup = Rollup::default();
        for (n, referrer) in referrers.iter().enumerate() {
            rollup.add(&classified(false, referrer, "DE"), visitor(n as u32), 2);
        }
        let delta = ClickDelta {
            token: format!("capped-{i}"),
            code: "capped1".into(),
            count: 2,
            last_click_ms: i64::from(hour) * 3_600_000,
            hours: vec![(hour, rollup)],
        };
        links.add_clicks(&[delta]).await.expect("a flush");
    }
    let read = links
        .analytics("capped1", hour, hour)
        .await
        .expect("analytics")
        .expect("link");
    let expected = vec![
        ("a.example".into(), 2),
        ("b.example".into(), 1),
        (OTHER.into(), 1),
    ];
    assert_eq!(read.hourly[0].1.values(Dimension::Referrer), &expected);
    assert_eq!(read.daily[0].1.values(Dimension::Referrer), &expected);
    let items = items_under(&store, "capped1").await;
    for (sk, item) in items
        .iter()
        .filter(|(sk, _)| sk != "link" && !sk.ends_with("#u"))
    {
        let mut referrers: Vec<&str> = item
            .keys()
            .filter_map(|name| name.strip_prefix("d.referrer."))
            .collect();
        referrers.sort_unstable();
        assert_eq!(referrers, vec!["a.example", "b.example", "other"], "{sk}");
    }

    // Three values on an item, as two flushes at once can leave it: read as two and `other`.
    let earlier = hour - 1;
    let n = |v: u64| aws_sdk_dynamodb::types::AttributeValue::N(v.to_string());
    crate::harness::sdk_client(&store.endpoint)
        .put_item()
        .table_name(&store.table)
        .item("pk", attr("capped1"))
        .item(
            "sk",
            attr(&format!(
                "h#{}T{:02}",
                kurz::clock::format_day(earlier / 24),
                earlier % 24
            )),
        )
        .item("hour", n(u64::from(earlier)))
        .item("clicks", n(6))
        .item("humans", n(6))
        .item("d.referrer.x.example", n(3))
        .item("d.referrer.y.example", n(2))
        .item("d.referrer.z.example", n(1))
        .send()
        .await
        .expect("an item past the cap");
    let read = links
        .analytics("capped1", earlier, earlier)
        .await
        .expect("analytics")
        .expect("link");
    assert_eq!(
        read.hourly[0].1.values(Dimension::Referrer),
        &vec![
            (OTHER.into(), 1),
            ("x.example".into(), 3),
            ("y.example".into(), 2)
        ],
        "sorted by value"
    );
}

/// A delete removes the link's hour items, day items and their visitors' sketches; and a
/// link made under a code whose earlier link DynamoDB's TTL removed does not show the
/// earlier one's hours or days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_expired_links_hour_items_and_sketches_go() {
    use kurz::analytics::Rollup;
    let (store, _proxy, links) = analytics_store(50).await;
    let write = |code: &'static str, token: &'static str, hour: u32| {
        let mut rollup = Rollup::default();
        rollup.add(&classified(false, "direct", "DE"), visitor(7), 50);
        let delta = ClickDelta {
            token: token.into(),
            code: code.into(),
            count: 1,
            last_click_ms: i64::from(hour) * 3_600_000,
            hours: vec![(hour, rollup)],
        };
        let links = Arc::clone(&links);
        async move { links.add_clicks(&[delta]).await.expect("a flush") }
    };
    let now_hour = kurz::analytics::hour_of(kurz::clock::system_now_ms());
    let kinds = |items: &[(
        String,
        HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    )]| {
        let mut kinds: Vec<String> = items
            .iter()
            .map(|(sk, _)| {
                let kind = sk.split('#').next().unwrap_or_default();
                if sk.ends_with("#u") {
                    format!("{kind} sketch")
                } else {
                    kind.to_owned()
                }
            })
            .collect();
        kinds.sort();
        kinds
    };

    insert_link(&links, "deleted1").await;
    write("deleted1", "deleted-a", now_hour).await;
    let items = items_under(&store, "deleted1").await;
    assert_eq!(
        kinds(&items),
        vec!["day", "day sketch", "h", "h sketch", "link"]
    );
    // The hour item and its sketch end by TTL, `analytics.hourly_retention_days` after the hour.
    for (sk, item) in &items {
        if sk.starts_with("h#") {
            let ttl: i64 = item["expires_at"].as_n().expect("ttl").parse().expect("n");
            assert_eq!(ttl, (i64::from(now_hour) + 1) * 3_600 + 30 * 86_400, "{sk}");
        }
    }
    assert_eq!(
        links
            .delete("deleted1")
            .await
            .expect("delete")
            .map(|l| l.code)
            .as_deref(),
        Some("deleted1")
    );
    assert_eq!(
        kinds(&items_under(&store, "deleted1").await),
        Vec::<String>::new()
    );

    // Removed by TTL: only its link item goes.
    insert_link(&links, "expired1").await;
    write("expired1", "expired-a", now_hour - 48).await;
    crate::harness::sdk_client(&store.endpoint)
        .delete_item()
        .table_name(&store.table)
        .key("pk", attr("expired1"))
        .key("sk", attr("link"))
        .send()
        .await
        .expect("the TTL's delete");
    let again = kurz::store::Link {
        code: "expired1".into(),
        url: "https://example.com/again".into(),
        created_at_ms: kurz::clock::system_now_ms(),
        ..Default::default()
    };
    links.insert(&again, None).await.expect("insert");
    // Clicks on the new link, in the hour it was made (on an hour boundary, not `now_hour`).
    let again_hour = kurz::analytics::hour_of(again.created_at_ms);
    write("expired1", "expired-b", again_hour).await;
    links.forget_earlier_stats(&again).await.expect("forget");
    let kept = items_under(&store, "expired1").await;
    assert_eq!(
        kinds(&kept),
        vec!["day", "day sketch", "h", "h sketch", "link"],
        "only the new link's: {:?}",
        kept.iter().map(|(sk, _)| sk).collect::<Vec<_>>()
    );
    let read = links
        .analytics("expired1", now_hour - 72, again_hour)
        .await
        .expect("analytics")
        .expect("link");
    assert_eq!(
        read.hourly.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        vec![again_hour]
    );
}

/// The TTL attribute of each of `code`'s items, by sort key (`None`: it has none).
async fn ttls_under(store: &TestStore, code: &str) -> Vec<(String, Option<i64>)> {
    items_under(store, code)
        .await
        .into_iter()
        .map(|(sk, item)| {
            let ttl = item
                .get("expires_at")
                .map(|n| n.as_n().expect("N").parse().expect("seconds"));
            (sk, ttl)
        })
        .collect()
}

/// One human click on `code` in `hour`, with a visitor (so the hour and the day get sketches).
fn one_click(code: &str, token: &str, hour: u32) -> ClickDelta {
    let mut rollup = Rollup::default();
    rollup.add(&classified(false, "direct", "DE"), visitor(7), 50);
    ClickDelta {
        token: token.into(),
        code: code.into(),
        count: 1,
        last_click_ms: i64::from(hour) * 3_600_000,
        hours: vec![(hour, rollup)],
    }
}

/// The sort key of `hour`'s item.
fn items_hour_key(hour: u32) -> String {
    let day = kurz::clock::format_day(kurz::analytics::day_of_hour(hour));
    format!("h#{day}T{:02}", hour % 24)
}

/// What the link item's TTL is for an expiry at `expires_ms` (the default purge delay, 30 days).
fn link_ttl_for(expires_ms: i64) -> i64 {
    (expires_ms + 30 * 86_400_000 + 999) / 1000
}

/// A link's day items and their sketches carry its item's TTL, so that DynamoDB removes them
/// with it; an edit of its expiry gives them the new one (or none); its hour items keep their
/// own, the hour's end plus the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_day_items_expire_with_it_through_edits_of_its_expiry() {
    let (store, _proxy, links) = analytics_store(50).await;
    let now = kurz::clock::system_now_ms();
    let hour = kurz::analytics::hour_of(now);
    let hour_ttl = (i64::from(hour) + 1) * 3_600 + 30 * 86_400;
    let mut link = kurz::store::Link {
        code: "ttldays1".into(),
        url: "https://example.com/ttldays".into(),
        created_at_ms: now,
        expires_at_ms: Some(now + 86_400_000),
        ..Default::default()
    };
    links.insert(&link, None).await.expect("insert");
    links
        .add_clicks(&[one_click("ttldays1", "ttldays-a", hour)])
        .await
        .expect("a flush");
    let day = kurz::clock::format_day(kurz::analytics::day_of_hour(hour));
    let expect = |link_ttl: Option<i64>| {
        let mut expected = vec![
            (format!("day#{day}"), link_ttl),
            (format!("day#{day}#u"), link_ttl),
        ];
        let h = items_hour_key(hour);
        expected.push((h.clone(), Some(hour_ttl)));
        expected.push((format!("{h}#u"), Some(hour_ttl)));
        expected.push(("link".into(), link_ttl));
        expected.sort();
        expected
    };
    let first = Some(link_ttl_for(now + 86_400_000));
    assert_eq!(ttls_under(&store, "ttldays1").await, expect(first));

    // Later, then none, then sooner: the days follow each edit.
    for expires in [Some(now + 10 * 86_400_000), None, Some(now + 3_600_000)] {
        link.expires_at_ms = expires;
        link.revision += 1;
        assert_eq!(
            links.replace(&link).await.expect("replace"),
            kurz::store::ReplaceOutcome::Replaced
        );
        assert_eq!(
            ttls_under(&store, "ttldays1").await,
            expect(expires.map(link_ttl_for)),
            "after the expiry became {expires:?}"
        );
    }
    let stats = links.stats("ttldays1").await.expect("stats").expect("link");
    assert_eq!(stats.total_clicks, 1);
}

/// A flush that read the link's TTL just before an edit changed it finds out from its
/// transaction, reads the new one and writes the day items with it; the click counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_racing_an_edit_of_the_expiry_gives_the_days_the_new_ttl() {
    use crate::harness::Fault;
    let (store, proxy, links) = analytics_store(50).await;
    let now = kurz::clock::system_now_ms();
    let hour = kurz::analytics::hour_of(now);
    let mut link = kurz::store::Link {
        code: "ttlrace1".into(),
        url: "https://example.com/ttlrace".into(),
        created_at_ms: now,
        expires_at_ms: Some(now + 86_400_000),
        ..Default::default()
    };
    links.insert(&link, None).await.expect("insert");
    // The flush's read of the link's TTL is answered only after the edit.
    proxy.hold_answers_to("\"ProjectionExpression\":\"#ttl\"");
    let flush = tokio::spawn({
        let links = Arc::clone(&links);
        async move {
            links
                .add_clicks(&[one_click("ttlrace1", "ttlrace-a", hour)])
                .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.held() == 0 {
        assert!(
            Instant::now() < deadline,
            "the flush never read the link's TTL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    link.expires_at_ms = Some(now + 10 * 86_400_000);
    link.revision += 1;
    assert_eq!(
        links.replace(&link).await.expect("replace"),
        kurz::store::ReplaceOutcome::Replaced
    );
    proxy.set(Fault::None);
    flush.await.expect("joined").expect("the flush");

    let new_ttl = Some(link_ttl_for(now + 10 * 86_400_000));
    let day = kurz::clock::format_day(kurz::analytics::day_of_hour(hour));
    let days: Vec<(String, Option<i64>)> = ttls_under(&store, "ttlrace1")
        .await
        .into_iter()
        .filter(|(sk, _)| sk.starts_with("day#"))
        .collect();
    assert_eq!(
        days,
        vec![
            (format!("day#{day}"), new_ttl),
            (format!("day#{day}#u"), new_ttl)
        ]
    );
    let stats = links.stats("ttlrace1").await.expect("stats").expect("link");
    assert_eq!(stats.total_clicks, 1, "counted once");
    assert_eq!(stats.daily.iter().map(|(_, n)| n).sum::<u64>(), 1);
}

/// An item near DynamoDB's 400 KB takes no more values: the delta's values for it count as
/// `other` instead, and its clicks are all counted; the other items of the delta keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_item_too_large_for_more_values_counts_them_as_other() {
    use kurz::analytics::Rollup;
    // A cap the item is far from, so that only its size stops new values.
    let (store, _proxy, links) = analytics_store(1_000).await;
    insert_link(&links, "full1").await;
    let day = 20_000;
    // 402 values of 1,000 bytes: 393 KiB of DynamoDB's 400 (409,600 bytes); the delta's 20
    // referrers of 500 bytes would make it 403.
    let mut put = crate::harness::sdk_client(&store.endpoint)
        .put_item()
        .table_name(&store.table)
        .item("pk", attr("full1"))
        .item("sk", attr("day#2024-10-04"))
        .item(
            "day",
            aws_sdk_dynamodb::types::AttributeValue::N(day.to_string()),
        )
        .item(
            "clicks",
            aws_sdk_dynamodb::types::AttributeValue::N("402".into()),
        )
        .item(
            "humans",
            aws_sdk_dynamodb::types::AttributeValue::N("402".into()),
        );
    for i in 0..402 {
        put = put.item(
            format!("d.referrer.{i:03}{}", "x".repeat(985)),
            aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
        );
    }
    put.send().await.expect("a day item near 400 KB");
    let mut rollup = Rollup::default();
    for i in 0..20 {
        let referrer = format!("{i:02}{}", "y".repeat(498));
        rollup.add(&classified(false, &referrer, "DE"), visitor(i), 50);
    }
    let hour = day * 24 + 5;
    let delta = ClickDelta {
        token: "full-a".into(),
        code: "full1".into(),
        count: 20,
        last_click_ms: i64::from(hour) * 3_600_000,
        hours: vec![(hour, rollup)],
    };
    links.add_clicks(&[delta]).await.expect("a flush");

    let items = items_under(&store, "full1").await;
    let (_, day_item) = items
        .iter()
        .find(|(sk, _)| sk == "day#2024-10-04")
        .expect("the day item");
    let number = |name: &str| -> Option<u64> { day_item.get(name)?.as_n().ok()?.parse().ok() };
    assert_eq!(number("clicks"), Some(422), "every click counted");
    assert_eq!(number("humans"), Some(422));
    assert_eq!(
        number("d.referrer.other"),
        Some(20),
        "the new referrers as other"
    );
    assert_eq!(number("d.country.other"), Some(20));
    assert!(
        !day_item.keys().any(|name| name.contains("yyyy")),
        "no new referrer on the full item"
    );
    let (_, hour_item) = items
        .iter()
        .find(|(sk, _)| sk == "h#2024-10-04T05")
        .expect("the hour item");
    assert_eq!(
        hour_item
            .keys()
            .filter(|name| name.contains("yyyy"))
            .count(),
        20,
        "the hour item keeps its values"
    );
}

/// Two instances merging visitors into one sketch at once lose none: the one that read the
/// sketch before the other wrote it finds its version changed, reads again and merges into
/// that. (The chaos proxy holds the first instance's answers to its sketch reads until the
/// second has written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_merged_by_two_instances_at_once_are_all_counted() {
    use kurz::analytics::Rollup;
    let (store, proxy, slow) = analytics_store(50).await;
    let mut settings = store.settings();
    settings.store.dynamodb.endpoint_url = Some(store.endpoint.clone());
    let fast = kurz::store::open_with(
        &settings.store,
        kurz::store::ClickLimits::of(&settings.analytics),
        Default::default(),
    )
    .await
    .expect("store opens");
    insert_link(&slow, "raced1").await;
    let hour = kurz::analytics::hour_of(kurz::clock::system_now_ms());
    let delta = |token: &str, visitors: std::ops::Range<u32>| {
        let mut rollup = Rollup::default();
        for n in visitors {
            rollup.add(&classified(false, "direct", "DE"), visitor(n), 50);
        }
        ClickDelta {
            token: token.into(),
            code: "raced1".into(),
            count: rollup.clicks,
            last_click_ms: i64::from(hour) * 3_600_000,
            hours: vec![(hour, rollup)],
        }
    };
    // The sort keys of the sketch items end in `#u`; no other request names one.
    proxy.hold_answers_to(r##"#u""##);
    let first = tokio::spawn({
        let (slow, delta) = (Arc::clone(&slow), delta("raced-a", 0..10));
        async move { slow.add_clicks(&[delta]).await }
    });
    eventually(
        "the hour's and the day's sketch are read",
        Duration::from_secs(20),
        || async { proxy.held() >= 2 },
    )
    .await;
    fast.add_clicks(&[delta("raced-b", 100..105)])
        .await
        .expect("the second instance's flush");
    proxy.set(crate::harness::Fault::None);
    first
        .await
        .expect("task")
        .expect("the first instance's flush");

    let read = fast
        .analytics("raced1", hour, hour)
        .await
        .expect("analytics")
        .expect("link");
    for (_, rollup) in read.hourly.iter().chain(&read.daily) {
        assert_eq!(rollup.humans, 15);
        assert_eq!(
            rollup.uniques.clone().estimate(),
            15,
            "every visitor of both"
        );
    }
    assert_eq!((read.hourly.len(), read.daily.len()), (1, 1));
}

/// A deleted secret is gone (the day's visitor key, forgotten once its day is over): the next
/// instance to ask stores its own candidate; deleting one that is not there is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_secret_is_gone_and_the_next_candidate_is_stored() {
    let (_store, _proxy, links) = analytics_store(50).await;
    let name = "analytics-visitor-key-2026-12-01";
    assert_eq!(
        links.secret(name, b"first").await.expect("secret"),
        b"first"
    );
    assert_eq!(
        links.secret(name, b"other").await.expect("secret"),
        b"first"
    );
    links.delete_secret(name).await.expect("delete");
    assert_eq!(
        links.secret(name, b"second").await.expect("secret"),
        b"second"
    );
    links
        .delete_secret("never-stored")
        .await
        .expect("nothing to delete");
}
