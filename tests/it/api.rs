//! The HTTP API end to end against the real app: one behavioural suite, run against every
//! store backend (the embedded redb file and DynamoDB Local).

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::{
    ADMIN_TOKEN, Backend, TestStore, assert_problem, spawn_app_on, spawn_app_on_backend,
};
use crate::on_every_backend;
use kurz::config::Secret;
use serde_json::{Value, json};

async fn create_redirect_stats_delete_cycle(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;

    let response = app
        .create(json!({ "url": "https://example.com/x?y=1#z" }))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    let code = body["code"].as_str().expect("code").to_owned();
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
    assert_eq!(body["short_url"], format!("{}/{code}", app.base));
    assert_eq!(location, format!("{}/{code}", app.base));
    assert_eq!(body["url"], "https://example.com/x?y=1#z");
    assert_eq!(body["redirect_status"], 302);
    assert_eq!(body["expires_at"], Value::Null);
    assert!(kurz::clock::parse_rfc3339(body["created_at"].as_str().expect("created_at")).is_some());

    for _ in 0..3 {
        let redirect = app.get(&format!("/{code}")).await;
        assert_eq!(redirect.status(), 302);
        assert_eq!(
            redirect.headers()["location"],
            "https://example.com/x?y=1#z"
        );
    }
    // HEAD answers the same redirect but is not a click.
    let head = app.head(&format!("/{code}")).await;
    assert_eq!(head.status(), 302);
    assert_eq!(head.headers()["location"], "https://example.com/x?y=1#z");

    let stats = app.stats_when(&code, 3).await;
    assert_eq!(stats["code"], code);
    assert_eq!(stats["total_clicks"], 3);
    let today = kurz::clock::format_day(kurz::clock::day_of(app.clock.now_ms()));
    assert_eq!(stats["daily"], json!([{ "date": today, "clicks": 3 }]));
    assert!(stats["last_click_at"].is_string());

    let meta: Value = app
        .get(&format!("/api/v1/links/{code}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(meta["url"], "https://example.com/x?y=1#z");
    assert_eq!(meta["code"], code);

    let deleted = app.admin_delete(&code).await;
    assert_eq!(deleted.status(), 204);
    // Evicted from the cache at once: the very next redirect is a 404.
    assert_problem(app.get(&format!("/{code}")).await, 404).await;
    assert_problem(
        app.admin_get(&format!("/api/v1/links/{code}/stats")).await,
        404,
    )
    .await;
    let again = app.admin_delete(&code).await;
    assert_problem(again, 404).await;
    app.stop().await;
}

async fn aliases_redirect_statuses_and_conflicts(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    // Permanent redirects (browsers keep them) need a credential.
    let permanent = |body: Value| {
        app.client
            .post(app.url("/api/v1/links"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    // An alias looked up before it exists is a 404 (cached as such), then works at once.
    assert_problem(app.get("/Promo_2026").await, 404).await;
    let anonymous = app
        .create(json!({ "url": "https://example.com/p", "redirect_status": 308 }))
        .await;
    let problem = assert_problem(anonymous, 403).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("API key")
    );
    let response = permanent(
        json!({ "url": "https://example.com/p", "alias": "Promo_2026", "redirect_status": 308 }),
    )
    .await
    .expect("send");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "Promo_2026");
    assert_eq!(body["redirect_status"], 308);

    let redirect = app.get("/Promo_2026").await;
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "https://example.com/p");
    // Browsers may keep a permanent redirect, for a bounded time.
    assert_eq!(redirect.headers()["cache-control"], "public, max-age=3600");
    // Aliases are case-sensitive.
    assert_problem(app.get("/promo_2026").await, 404).await;

    let taken = app
        .create(json!({ "url": "https://other.example/", "alias": "Promo_2026" }))
        .await;
    let problem = assert_problem(taken, 409).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("Promo_2026")
    );
    // The first link is untouched.
    assert_eq!(
        app.get("/Promo_2026").await.headers()["location"],
        "https://example.com/p"
    );
    for status in [301, 307] {
        let created =
            permanent(json!({ "url": "https://example.com/s", "redirect_status": status }))
                .await
                .expect("send");
        let code = created.json::<Value>().await.expect("json")["code"]
            .as_str()
            .expect("code")
            .to_owned();
        assert_eq!(app.get(&format!("/{code}")).await.status(), status);
    }
    // Temporary redirects are never cached, so every click reaches kurz.
    let temporary = app.create_code("https://example.com/t").await;
    assert_eq!(
        app.get(&format!("/{temporary}")).await.headers()["cache-control"],
        "no-store"
    );
    // A permanent redirect is never cached past its link's expiry.
    let expires = kurz::clock::format_rfc3339(app.clock.now_ms() + 90_000);
    let soon = permanent(
        json!({ "url": "https://example.com/soon", "redirect_status": 301, "expires_at": expires }),
    )
    .await
    .expect("send");
    let soon = soon.json::<Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    assert_eq!(
        app.get(&format!("/{soon}")).await.headers()["cache-control"],
        "public, max-age=90"
    );
    app.stop().await;
}

async fn expired_links_answer_410(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let expires = kurz::clock::format_rfc3339(app.clock.now_ms() + 1_500);
    let response = app
        .create(json!({ "url": "https://example.com/soon", "expires_at": expires }))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["expires_at"], expires);
    let code = body["code"].as_str().expect("code").to_owned();

    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    app.clock.advance(Duration::from_millis(1_499));
    assert_eq!(
        app.get(&format!("/{code}")).await.status(),
        302,
        "1 ms before expiry"
    );
    // The expiry is checked on every hit, so the cached link expires to the millisecond.
    app.clock.advance(Duration::from_millis(1));
    let problem = assert_problem(app.get(&format!("/{code}")).await, 410).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("expired")
    );
    // An expiry in the past (by the app's clock) is refused at create.
    let past = kurz::clock::format_rfc3339(app.clock.now_ms() - 1);
    let refused = app
        .create(json!({ "url": "https://example.com/late", "expires_at": past }))
        .await;
    assert_problem(refused, 400).await;
    app.stop().await;
}

async fn bad_input_gets_a_problem_with_the_right_status(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let long_url = format!("https://example.com/{}", "a".repeat(8 * 1024));
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing field `url`"),
        (json!({ "url": 42 }), "invalid type"),
        (json!({ "url": "" }), "must not be empty"),
        (json!({ "url": "example.com/no-scheme" }), "absolute"),
        (json!({ "url": "ftp://example.com/" }), "absolute"),
        (json!({ "url": "javascript:alert(1)" }), "absolute"),
        (json!({ "url": "https://exa mple.com/" }), "spaces"),
        (json!({ "url": "http://example.com:65536/" }), "port"),
        (
            json!({ "url": format!("https://{}.example/", "a.".repeat(130)) }),
            "253",
        ),
        (json!({ "url": long_url }), "limit"),
        (json!({ "url": format!("{}/abc", app.base) }), "loop"),
        (
            json!({ "url": "https://example.com/", "alias": "ab" }),
            "3 to 64",
        ),
        (
            json!({ "url": "https://example.com/", "alias": "a".repeat(65) }),
            "3 to 64",
        ),
        (
            json!({ "url": "https://example.com/", "alias": "no/slash" }),
            "letters, digits",
        ),
        (
            json!({ "url": "https://example.com/", "alias": "healthz" }),
            "reserved",
        ),
        (
            json!({ "url": "https://example.com/", "alias": "API" }),
            "reserved",
        ),
        (
            json!({ "url": "https://example.com/", "expires_at": "tomorrow" }),
            "RFC 3339",
        ),
        (
            json!({ "url": "https://example.com/", "expires_at": "2001-01-01T00:00:00Z" }),
            "future",
        ),
        (
            json!({ "url": "https://example.com/", "redirect_status": 200 }),
            "301, 302, 307, 308",
        ),
        (
            json!({ "url": "https://example.com/", "colour": "red" }),
            "unknown field `colour`",
        ),
    ];
    for (body, expected) in cases {
        let problem = assert_problem(app.create(body.clone()).await, 400).await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(expected), "{body}: {detail}");
    }

    let post = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/api/v1/links"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = post("application/json", b"{\"url\": ".to_vec())
        .await
        .expect("send");
    assert_problem(malformed, 400).await;
    let form = post("application/x-www-form-urlencoded", b"url=x".to_vec())
        .await
        .expect("send");
    assert_problem(form, 415).await;
    let none = app
        .client
        .post(app.url("/api/v1/links"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_problem(none, 415).await;
    let huge = format!(
        "{{\"url\": \"https://example.com/{}\"}}",
        "a".repeat(20_000)
    );
    assert_problem(
        post("application/json", huge.into_bytes())
            .await
            .expect("send"),
        413,
    )
    .await;

    assert_problem(app.get("/no-such-code").await, 404).await;
    assert_problem(app.get("/bad.code").await, 404).await;
    assert_problem(app.get("/api/v1/nothing/here").await, 404).await;
    let put = app
        .client
        .put(app.url("/api/v1/links"))
        .send()
        .await
        .expect("send");
    assert_eq!(put.headers()["allow"], "POST, GET");
    assert_problem(put, 405).await;
    let bad_key = app
        .client
        .post(app.url("/api/v1/links"))
        .header("idempotency-key", "")
        .json(&json!({ "url": "https://example.com/" }))
        .send()
        .await
        .expect("send");
    assert_problem(bad_key, 400).await;

    // Nothing above created a link or hurt the service.
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stop().await;
}

const KEY_A: &str = "key-alpha-0123456789abcdef01234567";
const KEY_B: &str = "key-beta-0123456789abcdef012345678";

async fn auth_guards_admin_routes_and_api_keys_when_configured(backend: Backend) {
    let app = spawn_app_on_backend(backend, |s| {
        s.auth.api_keys = vec![Secret::new(KEY_A), Secret::new(KEY_B)];
    })
    .await;
    let body = json!({ "url": "https://example.com/auth" });
    let create = |token: Option<&'static str>| {
        let mut request = app.client.post(app.url("/api/v1/links")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let as_key = |method: reqwest::Method, path: String, token: &'static str| {
        app.client
            .request(method, app.url(&path))
            .bearer_auth(token)
            .send()
    };
    let missing = create(None).await.expect("send");
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_problem(missing, 401).await;
    assert_problem(create(Some("wrong-key")).await.expect("send"), 403).await;
    let by_a = create(Some(KEY_A)).await.expect("send");
    assert_eq!(by_a.status(), 201);
    let code_a = by_a.json::<Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let by_admin = create(Some(ADMIN_TOKEN)).await.expect("send");
    assert_eq!(by_admin.status(), 201);
    let code = by_admin.json::<Value>().await.expect("json")["code"]
        .as_str()
        .expect("code")
        .to_owned();
    let malformed = app
        .client
        .post(app.url("/api/v1/links"))
        .header("authorization", "Basic dXNlcjpwdw==")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_problem(malformed, 401).await;

    // Metadata needs a key too; redirects never do.
    assert_problem(app.get(&format!("/api/v1/links/{code}")).await, 401).await;
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);

    // Links are scoped to the key that made them: another key sees no such link, the owner
    // and the admin do.
    let meta = format!("/api/v1/links/{code_a}");
    assert_problem(
        as_key(reqwest::Method::GET, meta.clone(), KEY_B)
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_problem(
        as_key(reqwest::Method::DELETE, meta.clone(), KEY_B)
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_eq!(
        as_key(reqwest::Method::GET, meta.clone(), KEY_A)
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(app.admin_get(&meta).await.status(), 200);
    // A key cannot touch the admin's link either.
    let admins = format!("/api/v1/links/{code}");
    assert_problem(
        as_key(reqwest::Method::GET, admins.clone(), KEY_A)
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_problem(
        as_key(reqwest::Method::DELETE, admins, KEY_A)
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_eq!(app.get(&format!("/{code}")).await.status(), 302);

    // Statistics: the admin's of every link; a settings key (every scope) of its own only.
    let stats = format!("/api/v1/links/{code}/stats");
    assert_problem(app.get(&stats).await, 401).await;
    assert_problem(
        as_key(reqwest::Method::GET, stats.clone(), KEY_A)
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_eq!(app.admin_get(&stats).await.status(), 200);
    let own_stats = format!("/api/v1/links/{code_a}/stats");
    let own = as_key(reqwest::Method::GET, own_stats, KEY_A);
    assert_eq!(own.await.expect("send").status(), 200);

    // The owner deletes its own link.
    assert_eq!(
        as_key(reqwest::Method::DELETE, meta.clone(), KEY_A)
            .await
            .expect("send")
            .status(),
        204
    );
    assert_problem(app.get(&format!("/{code_a}")).await, 404).await;
    app.stop().await;
}

async fn two_hundred_concurrent_creates_give_distinct_codes(backend: Backend) {
    let app = spawn_app_on_backend(backend, |s| s.ids.block_size = 7).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (client, url) = (app.client.clone(), app.url("/api/v1/links"));
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({ "url": format!("https://example.com/{i}") }))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 201);
            let body: Value = response.json().await.expect("json");
            (
                body["code"].as_str().expect("code").to_owned(),
                body["url"].as_str().expect("url").to_owned(),
            )
        }));
    }
    let mut codes = HashSet::new();
    let mut created = Vec::new();
    for task in tasks {
        let (code, url) = task.await.expect("join");
        assert!(codes.insert(code.clone()), "duplicate code {code}");
        created.push((code, url));
    }
    assert_eq!(codes.len(), 200);
    for (code, url) in created {
        assert_eq!(
            app.get(&format!("/{code}")).await.headers()["location"],
            url.as_str()
        );
    }
    app.stop().await;
}

async fn idempotency_key_returns_the_original_link(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let send = |url: &'static str, key: &'static str| {
        app.client
            .post(app.url("/api/v1/links"))
            .header("idempotency-key", key)
            .json(&json!({ "url": url }))
            .send()
    };
    let first = send("https://example.com/once", "order-17")
        .await
        .expect("send");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let retry = send("https://example.com/once", "order-17")
        .await
        .expect("send");
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["code"], first["code"]);
    assert_eq!(retry["created_at"], first["created_at"]);

    let misuse = send("https://example.com/different", "order-17")
        .await
        .expect("send");
    assert_problem(misuse, 422).await;
    // Another key is another request: the same URL gets a link of its own, made now.
    let other_key = send("https://example.com/once", "order-18")
        .await
        .expect("send");
    assert_eq!(other_key.status(), 201);
    assert!(
        other_key.headers().get("idempotent-replayed").is_none(),
        "a new key is not a replay"
    );
    let other: Value = other_key.json().await.expect("json");
    assert_ne!(other["code"], first["code"]);
    assert_eq!(other["url"], "https://example.com/once");
    // Each key replays its own link, not the other's.
    let other_retry = send("https://example.com/once", "order-18")
        .await
        .expect("send");
    assert_eq!(other_retry.status(), 201);
    assert_eq!(other_retry.headers()["idempotent-replayed"], "true");
    let other_retry: Value = other_retry.json().await.expect("json");
    assert_eq!(other_retry["code"], other["code"]);
    assert_eq!(other_retry["created_at"], other["created_at"]);
    // Both links are real: each redirects to the URL.
    for link in [&first, &other] {
        let code = link["code"].as_str().expect("code");
        let redirect = app.get(&format!("/{code}")).await;
        assert_eq!(redirect.status(), 302, "{code}");
        assert_eq!(redirect.headers()["location"], "https://example.com/once");
    }
    app.stop().await;
}

async fn operations_endpoints_and_request_ids(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["checks"]["store"], "ok");
    assert_eq!(ready["checks"]["redis"], "off");

    // A client's own request id is not believed (it is not a trusted proxy): kurz's own
    // goes into the logs and the response.
    let untrusted = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("send");
    let id = untrusted.headers()["x-request-id"].to_str().expect("ascii");
    assert_ne!(id, "trace-abc-123");
    assert_eq!(id.len(), 25, "{id}");

    let code = app.create_code("https://example.com/m").await;
    app.get(&format!("/{code}")).await;
    app.get(&format!("/{code}")).await;
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let text = metrics.text().await.expect("text");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from metrics"))
    };
    assert_eq!(
        value("kurz_http_requests_total{route=\"redirect\",status=\"3xx\"}"),
        2.0
    );
    assert_eq!(
        value("kurz_http_requests_total{route=\"create_link\",status=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        value("kurz_http_request_duration_seconds_count{route=\"redirect\"}"),
        2.0
    );
    assert_eq!(value("kurz_cache_misses_total"), 1.0);
    assert_eq!(value("kurz_cache_hits_total"), 1.0);
    assert_eq!(value("kurz_links_created_total"), 1.0);
    assert_eq!(value("kurz_clicks_recorded_total"), 2.0);
    assert!(text.contains("kurz_clicks_pending"));
    app.stop().await;
}

async fn clicks_are_flushed_on_shutdown(backend: Backend) {
    let store = TestStore::new(backend).await;
    // No periodic flush within the test: only the shutdown flush can write these clicks.
    let slow =
        |s: &mut kurz::config::Settings| s.clicks.flush_interval = Duration::from_secs(3_600);
    let app = spawn_app_on(&store, slow).await;
    let code = app.create_code("https://example.com/flush").await;
    for _ in 0..4 {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
    app.stop().await;

    let app = spawn_app_on(&store, slow).await;
    let stats: Value = app
        .admin_get(&format!("/api/v1/links/{code}/stats"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stats["total_clicks"], 4);
    app.stop().await;
}

on_every_backend!(
    create_redirect_stats_delete_cycle,
    aliases_redirect_statuses_and_conflicts,
    expired_links_answer_410,
    bad_input_gets_a_problem_with_the_right_status,
    auth_guards_admin_routes_and_api_keys_when_configured,
    two_hundred_concurrent_creates_give_distinct_codes,
    idempotency_key_returns_the_original_link,
    operations_endpoints_and_request_ids,
    clicks_are_flushed_on_shutdown,
);
