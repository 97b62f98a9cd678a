//! Links in and out: bulk create, the NDJSON export over HTTP, and `kurz export` / `kurz
//! import` moving a whole store from the embedded file to DynamoDB Local with every link and
//! click, resumable after a kill -9 and idempotent; a Shlink-style CSV import.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    ADMIN_TOKEN, Backend, TestApp, TestStore, assert_problem, spawn_app_on, spawn_app_on_backend,
};
use crate::on_every_backend;
use kurz::analytics::Rollup;
use kurz::config::Secret;
use kurz::store::{ClickDelta, LinkStore};
use serde_json::{Value, json};

const KEY: &str = "key-transfer-0123456789abcdef0123456";
const OTHER_KEY: &str = "key-other-0123456789abcdef012345678";

fn with_keys(s: &mut kurz::config::Settings) {
    s.auth.api_keys = vec![Secret::new(KEY), Secret::new(OTHER_KEY)];
}

async fn bulk(app: &TestApp, token: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/links/bulk"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("bulk")
}

/// How many links the first page of `token`'s list (at most `limit`) holds.
async fn listed_by(app: &TestApp, token: &str, limit: usize) -> usize {
    let page: Value = app
        .client
        .get(app.url(&format!("/api/v1/links?limit={limit}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    page["links"].as_array().map_or(0, Vec::len)
}

/// The status of each item of a bulk create's answer, in order.
fn statuses(answer: &Value) -> Vec<u64> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect()
}

async fn bulk_creates_answer_per_item_in_order_and_retry_idempotently(backend: Backend) {
    let app = spawn_app_on_backend(backend, with_keys).await;
    let body = json!({ "links": [
        { "url": "https://example.com/1", "tags": ["a"] },
        { "url": "not a url" },
        { "url": "https://example.com/3", "alias": "bulk-three" },
        { "url": "https://example.com/4", "alias": "bulk-three" },
        { "link": "no url field" },
        { "url": "https://example.com/6", "redirect_status": 303 },
    ]});
    let response = bulk(&app, KEY, Some("batch-1"), &body).await;
    assert_eq!(response.status(), 200);
    let first: Value = response.json().await.expect("json");
    let statuses = statuses(&first);
    assert_eq!(statuses, [201, 400, 201, 409, 400, 400]);
    assert_eq!(
        (first["created"].as_u64(), first["failed"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(first["results"][0]["link"]["tags"], json!(["a"]));
    assert_eq!(first["results"][2]["link"]["code"], "bulk-three");
    let detail = first["results"][4]["problem"]["detail"]
        .as_str()
        .expect("detail");
    assert!(detail.contains("links[4]"), "{detail}");
    assert_eq!(first["results"][3]["problem"]["status"], 409);
    let code = first["results"][0]["link"]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);

    // The same request again, under the same key: the same links, nothing made twice.
    let again: Value = bulk(&app, KEY, Some("batch-1"), &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["results"][0]["link"]["code"], code.as_str());
    assert_eq!(again["results"][2]["link"]["code"], "bulk-three");
    assert_eq!(listed_by(&app, KEY, 100).await, 2);

    for bad in [
        json!({ "links": [] }),
        json!({ "links": {} }),
        json!([]),
        json!({ "links": [{ "url": "https://e.com" }], "x": 1 }),
    ] {
        assert_problem(bulk(&app, KEY, None, &bad).await, 400).await;
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({ "url": format!("https://e.com/{i}") }))
        .collect();
    assert_problem(
        bulk(&app, KEY, None, &json!({ "links": too_many })).await,
        400,
    )
    .await;
    let anonymous = app
        .client
        .post(app.url("/api/v1/links/bulk"))
        .json(&body)
        .send()
        .await
        .expect("bulk");
    assert_problem(anonymous, 401).await;
    app.stop().await;
}

async fn bulk_creates_count_against_the_rate_limit_per_link(backend: Backend) {
    let app = spawn_app_on_backend(backend, |s| {
        with_keys(s);
        s.limits.rate.creates_per_minute_per_key = 5;
    })
    .await;
    let links: Vec<Value> = (0..8)
        .map(|i| json!({ "url": format!("https://e.com/{i}") }))
        .collect();
    let outcome: Value = bulk(&app, KEY, None, &json!({ "links": links }))
        .await
        .json()
        .await
        .expect("json");
    let statuses = statuses(&outcome);
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        3,
        "{statuses:?}"
    );
    // The allowance is spent for single creates too.
    let single = app
        .client
        .post(app.url("/api/v1/links"))
        .bearer_auth(KEY)
        .json(&json!({ "url": "https://e.com/single" }))
        .send()
        .await
        .expect("create");
    assert_problem(single, 429).await;
    app.stop().await;
}

async fn the_export_streams_the_callers_links_with_their_clicks(backend: Backend) {
    let app = spawn_app_on_backend(backend, with_keys).await;
    let links: Vec<Value> = (0..7)
        .map(|i| json!({ "url": format!("https://example.com/e/{i}"), "title": format!("Link {i}") }))
        .collect();
    let made: Value = bulk(&app, KEY, None, &json!({ "links": links }))
        .await
        .json()
        .await
        .expect("json");
    let first = made["results"][0]["link"]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    bulk(
        &app,
        OTHER_KEY,
        None,
        &json!({ "links": [{ "url": "https://example.com/other" }] }),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(app.get(&format!("/{first}")).await.status(), 302);
    }
    app.stats_when(&first, 3).await;

    let export = |token: &'static str| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(app.url("/api/v1/links/export"))
                .bearer_auth(token)
                .send()
                .await
                .expect("export");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "application/x-ndjson");
            let text = response.text().await.expect("text");
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
                .collect::<Vec<_>>()
        }
    };
    let mine = export(KEY).await;
    assert_eq!(mine.len(), 7);
    let line = mine
        .iter()
        .find(|l| l["code"] == first.as_str())
        .expect("exported");
    assert_eq!(line["clicks"], 3);
    assert_eq!(line["daily"][0]["clicks"], 3);
    assert_eq!(line["title"], "Link 0");
    for field in [
        "url",
        "created_at_ms",
        "redirect_status",
        "tags",
        "forward_query",
        "owner",
        "revision",
    ] {
        assert!(line.get(field).is_some(), "{field} missing from {line}");
    }
    assert_eq!(export(ADMIN_TOKEN).await.len(), 8);
    assert_problem(app.get("/api/v1/links/export").await, 401).await;
    app.stop().await;
}

on_every_backend!(
    bulk_creates_answer_per_item_in_order_and_retry_idempotently,
    bulk_creates_count_against_the_rate_limit_per_link,
    the_export_streams_the_callers_links_with_their_clicks,
);

/// Runs `kurz ARGS` against `store`, with `stdin` as its input.
fn kurz(store: &TestStore, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kurz"));
    command.args(args);
    for (name, value) in store.env() {
        command.env(name, value);
    }
    command.output().expect("kurz runs")
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The links of an export, one JSON line each (the header left out), in the export's order.
fn link_lines(export: &str) -> Vec<&str> {
    export
        .lines()
        .filter(|l| !l.contains("\"kurz_export\""))
        .collect()
}

/// A source store with `count` links made through the API (bulk, under an API key: some
/// tagged, titled, aliased, expiring, disabled) and clicks on all of them over two days.
/// A store with `count` links made by `KEY`, and one more made by a key made through the API
/// (its secret and the link's code).
async fn populated_source(count: usize) -> (TestStore, Vec<String>, (String, String)) {
    let source = TestStore::new(Backend::Embedded).await;
    let app = spawn_app_on(&source, with_keys).await;
    let made_key: Value = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "name": "made at run time" }))
        .send()
        .await
        .expect("create a key")
        .json()
        .await
        .expect("json");
    let api_key = made_key["secret"].as_str().expect("secret").to_owned();
    let one = json!({ "links": [{ "url": "https://example.com/k" }] });
    let made: Value = bulk(&app, &api_key, None, &one)
        .await
        .json()
        .await
        .expect("json");
    let api_key_link = made["results"][0]["link"]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let mut codes = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(1000) {
        let links: Vec<Value> = (chunk * 1000..((chunk + 1) * 1000).min(count))
            .map(|i| match i % 5 {
                0 => json!({ "url": format!("https://example.com/{i}"), "tags": ["t", format!("n{}", i % 3)] }),
                1 => json!({ "url": format!("https://example.com/{i}?q=1"), "title": format!("Link {i}"), "forward_query": false }),
                2 => json!({ "url": format!("https://example.com/{i}"), "alias": format!("alias-{i}") }),
                3 => json!({ "url": format!("https://example.com/{i}"), "expires_at": "2099-01-01T00:00:00Z", "redirect_status": 308 }),
                _ => json!({ "url": format!("https://example.com/{i}") }),
            })
            .collect();
        let made: Value = bulk(&app, KEY, None, &json!({ "links": links }))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(made["failed"], 0, "{made}");
        for result in made["results"].as_array().expect("results") {
            codes.push(result["link"]["code"].as_str().expect("code").to_owned());
        }
    }
    let disabled = app
        .admin_patch(
            &codes[4],
            &json!({ "disabled": true, "reason": "takedown" }),
        )
        .await;
    assert_eq!(disabled.status(), 200);
    app.stop().await;

    // Clicks straight into the store: a redirect apiece for this many would only be slow.
    let store =
        kurz::store::EmbeddedStore::open(&source.settings().store.path, Duration::from_secs(30))
            .expect("open the source");
    // Two days' clicks, both after the links were made (clicks dated before their link are
    // not its).
    let hour = kurz::analytics::hour_of(kurz::clock::system_now_ms()) + 1;
    let deltas: Vec<ClickDelta> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| ClickDelta {
            token: format!("import-test-{i}"),
            code: code.clone(),
            count: (i % 7 + 1) as u64,
            last_click_ms: 1_800_000_000_000 + i as i64,
            hours: vec![
                (hour, Rollup::count_only(1)),
                (hour + 24, Rollup::count_only((i % 7) as u64)),
            ],
        })
        .collect();
    store.add_clicks(&deltas).await.expect("clicks");
    store.close().await;
    (source, codes, (api_key, api_key_link))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_from_embedded_to_dynamodb_with_every_link_and_click() {
    let (source, codes, (api_key, api_key_link)) = populated_source(10_000).await;
    let export = ok(kurz(&source, &["export"]), "kurz export (source)");
    assert_eq!(link_lines(&export).len(), 10_001);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &export).expect("write the export");
    let path = file.path().to_str().expect("utf-8 path");

    // A DynamoDB Local of its own: 10,000 links in and out would slow the shared one for every
    // other test of the suite.
    let dynamo = crate::harness::DynamoLocal::start();
    let target = TestStore::with_endpoint(Backend::Dynamodb, dynamo.endpoint.clone()).await;
    // As an operator would: the table first (which also makes the new store's own keys).
    ok(kurz(&target, &["init"]), "kurz init (target)");
    let report = ok(kurz(&target, &["import", path]), "kurz import");
    assert!(report.contains("carried 3 API keys"), "{report}");
    assert!(
        report.ends_with("kurz import: 10001 imported, 0 already there, 0 skipped\n"),
        "{}",
        report.lines().last().unwrap_or_default()
    );
    assert!(
        report.contains("replaced the new store's unused owner_fingerprint_key"),
        "the keys came along"
    );

    // Link by link: the target exports exactly what the source did.
    let moved = ok(kurz(&target, &["export"]), "kurz export (target)");
    let (before, after) = (link_lines(&export), link_lines(&moved));
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a, b, "line {i} differs");
    }
    assert_eq!(before.len(), after.len());
    let header = |text: &str| -> Value {
        serde_json::from_str(text.lines().next().expect("a header")).expect("json")
    };
    assert_eq!(header(&moved)["secrets"], header(&export)["secrets"]);
    assert_eq!(header(&moved)["api_keys"], header(&export)["api_keys"]);
    // The two from the settings and the one made at run time.
    assert_eq!(
        header(&export)["api_keys"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(header(&moved)["next_id"].as_u64() >= header(&export)["next_id"].as_u64());

    // Again: nothing is imported twice, clicks included.
    let again = ok(kurz(&target, &["import", path]), "kurz import, again");
    assert!(again.ends_with("kurz import: 0 imported, 10001 already there, 0 skipped\n"));
    assert_eq!(link_lines(&ok(kurz(&target, &["export"]), "export")), after);

    // Served from the target: the API key still owns its links, a new link takes a new code,
    // and the takedown holds.
    let app = spawn_app_on(&target, with_keys).await;
    assert_eq!(listed_by(&app, KEY, 1000).await, 1000);
    let own = app
        .client
        .get(app.url(&format!("/api/v1/links/{api_key_link}")))
        .bearer_auth(&api_key)
        .send()
        .await
        .expect("get");
    assert_eq!(
        own.status(),
        200,
        "a key made at run time came along with its link"
    );
    let taken: HashSet<&String> = codes.iter().collect();
    for i in 0..50 {
        let response = app
            .client
            .post(app.url("/api/v1/links"))
            .bearer_auth(KEY)
            .json(&json!({ "url": format!("https://example.com/new/{i}") }))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        let code = body["code"].as_str().expect("code").to_owned();
        assert!(!taken.contains(&code), "{code} was an imported link's");
    }
    assert_problem(app.get(&format!("/{}", codes[4])).await, 410).await;
    assert_eq!(app.get(&format!("/{}", codes[1])).await.status(), 302);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_half_way_loses_nothing_and_runs_again_cleanly() {
    let (source, _, _) = populated_source(3_000).await;
    let export = ok(kurz(&source, &["export"]), "kurz export");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &export).expect("write");
    let target = Arc::new(TestStore::new(Backend::Embedded).await);

    let mut command = Command::new(env!("CARGO_BIN_EXE_kurz"));
    command.args(["import", file.path().to_str().expect("utf-8")]);
    for (name, value) in target.env() {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("kurz import starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut imported = 0;
    while imported < 500 {
        let line = lines
            .next()
            .expect("the import reports lines")
            .expect("a line");
        imported += usize::from(line.contains(": imported "));
        assert!(Instant::now() < deadline, "the import did not get going");
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");

    let report = ok(
        kurz(&target, &["import", file.path().to_str().expect("utf-8")]),
        "import, again",
    );
    let summary = report.lines().last().expect("summary").to_owned();
    let count = |what: &str| -> u64 {
        summary
            .split(", ")
            .find_map(|part| {
                part.strip_suffix(what)?
                    .trim()
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no '{what}' in {summary}"))
    };
    assert!(count("already there") >= 500, "{summary}");
    assert_eq!(
        count("imported") + count("already there"),
        3_001,
        "{summary}"
    );
    assert_eq!(
        link_lines(&ok(kurz(&target, &["export"]), "export")),
        link_lines(&export)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shlink_csv_imports_row_by_row_and_bad_rows_are_reported_and_skipped() {
    let target = TestStore::new(Backend::Embedded).await;
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(
        file,
        "Long URL,Short Code,Title,Tags,Domain\n\
         https://example.com/a,shlink-a,First,news|Launch,\n\
         https://example.com/b,,Second,,s.example\n\
         ftp://example.com/c,shlink-c,,,\n\
         https://example.com/d,bad code,,,\n\
         \"https://example.com/e?x=1,2\",shlink-e,\"Quoted, title\",a|b|a,\n\
         https://example.com/f,shlink-f,,bad tag!,"
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8").to_owned();
    let first = kurz(&target, &["import", &path]);
    assert!(!first.status.success(), "rows were skipped: exit 1");
    let report = String::from_utf8(first.stdout).expect("utf-8");
    assert!(report.contains("line 2: imported shlink-a"), "{report}");
    assert!(
        report.contains("line 3: warning: domain 's.example' ignored"),
        "{report}"
    );
    assert!(report.contains("line 4: skipped"), "{report}");
    assert!(
        report.contains("line 5: skipped: 'bad code' is no code"),
        "{report}"
    );
    assert!(
        report.contains("line 7: skipped: a tag may hold"),
        "{report}"
    );
    assert!(
        report.ends_with("kurz import: 3 imported, 0 already there, 3 skipped\n"),
        "{report}"
    );

    let again = String::from_utf8(kurz(&target, &["import", &path]).stdout).expect("utf-8");
    assert!(
        again.ends_with("kurz import: 0 imported, 3 already there, 3 skipped\n"),
        "{again}"
    );

    let app = spawn_app_on(&target, |_| {}).await;
    let a: Value = app
        .admin_get("/api/v1/links/shlink-a")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (a["title"].as_str(), &a["tags"]),
        (Some("First"), &json!(["news", "launch"]))
    );
    let e: Value = app
        .admin_get("/api/v1/links/shlink-e")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(e["url"], "https://example.com/e?x=1,2");
    assert_eq!(e["tags"], json!(["a", "b"]));
    assert_eq!(e["title"], "Quoted, title");
    let all: Value = app
        .admin_get("/api/v1/links?limit=10")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all["links"].as_array().map(Vec::len), Some(3));
    app.stop().await;

    let mut bad = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(bad, "Title,Tags\nx,y").expect("write");
    let refused = kurz(&target, &["import", bad.path().to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("'Long URL'"));
}
