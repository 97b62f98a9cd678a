//! Click analytics through the API: who may read a link's statistics and the top links, the
//! period, granularity and breakdown a report is asked for (and the 400s for bad ones), CSV,
//! and what a click records: its details with analytics on, only its count with the link's
//! switch off or `Sec-GPC: 1`, nothing at all for HEAD and the preview.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Backend, TestApp, assert_problem, code_of, spawn_app_on_backend,
};
use crate::on_every_backend;

const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// A new key's secret.
async fn new_key(app: &TestApp, name: &str) -> String {
    let response = call(
        app,
        Method::POST,
        "/api/v1/keys",
        ADMIN_TOKEN,
        Some(json!({ "name": name, "scopes": ["create", "read", "edit", "stats"] })),
    )
    .await;
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.expect("json");
    key["secret"].as_str().expect("secret").to_owned()
}

async fn create(app: &TestApp, token: &str, body: Value) -> String {
    code_of(call(app, Method::POST, "/api/v1/links", token, Some(body)).await).await
}

/// One click on `code` with these headers; answers 302.
async fn click(app: &TestApp, code: &str, headers: &[(&str, &str)]) {
    let mut request = app.client.get(app.url(&format!("/{code}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("redirect");
    assert_eq!(response.status(), 302);
}

/// The JSON at `path` (as `token`) once `ready` holds of it; fails after 20 s showing the last.
async fn json_when(
    app: &TestApp,
    path: &str,
    token: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = call(app, Method::GET, path, token, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.expect("json");
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A link's stats once `clicks` (over the period asked for) reaches `n`.
/// The stats once the period holds `n` clicks and the all-time total has them too: the two
/// are separate reads, and on DynamoDB a read beside a flush's transaction may see one of
/// its items before the other.
async fn stats_when(app: &TestApp, code: &str, query: &str, n: u64) -> Value {
    let path = format!("/api/v1/links/{code}/stats{query}");
    json_when(app, &path, ADMIN_TOKEN, |s| {
        s["clicks"] == n && s["total_clicks"].as_u64() >= Some(n)
    })
    .await
}

fn breakdown(stats: &Value, dimension: &str) -> Vec<(String, u64)> {
    stats["breakdown"][dimension]
        .as_array()
        .unwrap_or_else(|| panic!("no {dimension} breakdown: {stats}"))
        .iter()
        .map(|v| {
            (
                v["value"].as_str().expect("value").to_owned(),
                v["clicks"].as_u64().expect("clicks"),
            )
        })
        .collect()
}

async fn owners_see_their_links_stats_and_the_admin_sees_all(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let (a, b) = (new_key(&app, "a").await, new_key(&app, "b").await);
    let code_a = create(&app, &a, json!({ "url": "https://example.com/a" })).await;
    let code_b = create(&app, &b, json!({ "url": "https://example.com/b" })).await;
    // A link without clicks: left out of the top links.
    create(&app, &b, json!({ "url": "https://example.com/quiet" })).await;
    for _ in 0..3 {
        click(&app, &code_a, &[]).await;
    }
    click(&app, &code_b, &[]).await;
    stats_when(&app, &code_a, "", 3).await;
    stats_when(&app, &code_b, "", 1).await;

    let own = call(
        &app,
        Method::GET,
        &format!("/api/v1/links/{code_a}/stats"),
        &a,
        None,
    )
    .await;
    assert_eq!(own.status(), 200);
    let own: Value = own.json().await.expect("json");
    assert_eq!(
        (own["code"].as_str(), own["total_clicks"].as_u64()),
        (Some(&*code_a), Some(3))
    );
    assert_eq!(own["clicks"], 3, "{own}");
    assert_eq!(own["granularity"], "day");
    assert_eq!(own["uniques_standard_error"], 0.01625);
    // Another key's link is no link at all to this key, whether or not it exists.
    let other = call(
        &app,
        Method::GET,
        &format!("/api/v1/links/{code_b}/stats"),
        &a,
        None,
    )
    .await;
    let problem = assert_problem(other, 404).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no short link")
    );
    for code in [&code_a, &code_b] {
        let response = app.admin_get(&format!("/api/v1/links/{code}/stats")).await;
        assert_eq!(response.status(), 200);
    }

    // The top links: each key its own (a link without clicks left out), the admin every one.
    let top = |token: String| {
        let app = &app;
        async move {
            let body = json_when(app, "/api/v1/stats", &token, |_| true).await;
            body["links"]
                .as_array()
                .expect("links")
                .iter()
                .map(|l| {
                    (
                        l["code"].as_str().expect("code").to_owned(),
                        l["clicks"].as_u64().expect("clicks"),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(top(a.clone()).await, vec![(code_a.clone(), 3)]);
    assert_eq!(top(b.clone()).await, vec![(code_b.clone(), 1)]);
    assert_eq!(
        top(ADMIN_TOKEN.into()).await,
        vec![(code_a.clone(), 3), (code_b.clone(), 1)]
    );
    let limited = json_when(&app, "/api/v1/stats?limit=1", ADMIN_TOKEN, |_| true).await;
    assert_eq!(
        limited["links"].as_array().map(Vec::len),
        Some(1),
        "{limited}"
    );
    assert_eq!(
        limited["links"][0]["short_url"],
        format!("{}/{code_a}", app.base)
    );
    assert_eq!(limited["partial"], false);
    assert_problem(app.get("/api/v1/stats").await, 401).await;
    app.stop().await;
}

async fn stats_queries_are_checked(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let code = app.create_code("https://example.com/q").await;
    let stats = format!("/api/v1/links/{code}/stats");
    for (query, says) in [
        ("?granularity=minute", "granularity must be 'hour' or 'day'"),
        ("?breakdown=referrer,city", "'city', which is no dimension"),
        ("?top=0", "top must be a whole number from 1 to 100"),
        ("?top=101", "top must be a whole number from 1 to 100"),
        ("?from=2026-11-05&to=2026-11-04", "is after to"),
        ("?from=last-week", "from must be an RFC 3339 timestamp"),
        ("?to=2026-13-01", "to must be an RFC 3339 timestamp"),
        (
            "?granularity=hour&from=2020-01-01&to=2020-01-02",
            "hourly figures are kept for 30 days",
        ),
        ("?nonsense=1", "query parameters"),
    ] {
        let problem = assert_problem(app.admin_get(&format!("{stats}{query}")).await, 400).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{query}: {detail}");
    }
    for (query, says) in [
        ("?limit=101", "limit must be a whole number from 1 to 100"),
        (
            "?from=2026-11-05T00:00:00Z&to=2026-11-04T00:00:00Z",
            "is after to",
        ),
    ] {
        let problem =
            assert_problem(app.admin_get(&format!("/api/v1/stats{query}")).await, 400).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{query}: {detail}");
    }
    // A period of dates covers their whole days.
    let days: Value = app
        .admin_get(&format!("{stats}?from=2026-11-01&to=2026-11-03&breakdown="))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(days["from"], "2026-11-01T00:00:00Z");
    assert_eq!(days["to"], "2026-11-03T23:59:59.999Z");
    let at: Vec<&str> = days["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|p| p["at"].as_str())
        .collect();
    assert_eq!(at, vec!["2026-11-01", "2026-11-02", "2026-11-03"]);
    assert_eq!(days["breakdown"], json!({}));
    app.stop().await;
}

async fn hourly_and_daily_series_and_csv(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let code = app.create_code("https://example.com/series").await;
    for _ in 0..4 {
        click(&app, &code, &[("user-agent", FIREFOX_LINUX)]).await;
    }
    let now = app.clock.now_ms();
    let this_hour = kurz::clock::format_rfc3339(now / 3_600_000 * 3_600_000);
    let today = kurz::clock::format_day(kurz::clock::day_of(now));

    let daily = stats_when(&app, &code, "", 4).await;
    let series = daily["series"].as_array().expect("series");
    assert_eq!(series.len(), 31, "30 days back and today: {daily}");
    let last = series.last().expect("today");
    assert_eq!(
        (last["at"].as_str(), last["clicks"].as_u64()),
        (Some(&*today), Some(4))
    );
    assert_eq!(
        series
            .iter()
            .filter_map(|p| p["clicks"].as_u64())
            .sum::<u64>(),
        4
    );

    let hourly = stats_when(&app, &code, "?granularity=hour", 4).await;
    assert_eq!(hourly["granularity"], "hour");
    let series = hourly["series"].as_array().expect("series");
    assert_eq!(series.len(), 49, "48 hours back and this one: {hourly}");
    let last = series.last().expect("this hour");
    assert_eq!(
        (last["at"].as_str(), last["clicks"].as_u64()),
        (Some(&*this_hour), Some(4))
    );
    assert_eq!(series[0]["clicks"], 0);

    let csv = |query: &str| {
        let path = format!("/api/v1/links/{code}/stats{query}");
        let app = &app;
        async move {
            let response = app
                .client
                .get(app.url(&path))
                .bearer_auth(ADMIN_TOKEN)
                .header("accept", "text/csv")
                .send()
                .await
                .expect("csv");
            assert_eq!(response.status(), 200);
            let content_type = response.headers()["content-type"]
                .to_str()
                .expect("text")
                .to_owned();
            assert_eq!(content_type, "text/csv; charset=utf-8");
            response.text().await.expect("text")
        }
    };
    let text = csv("?granularity=hour").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "at,clicks,humans,bots,uniques");
    assert_eq!(lines.len(), 1 + 49);
    assert!(
        lines[49].starts_with(&format!("{this_hour},4,")),
        "{}",
        lines[49]
    );
    let text = csv("?breakdown=referrer").await;
    assert_eq!(text.lines().next(), Some("value,clicks"));
    assert_eq!(text.lines().nth(1), Some("direct,4"), "{text}");
    let response = app
        .client
        .get(app.url("/api/v1/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv");
    let text = response.text().await.expect("text");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "code,short_url,clicks,humans,bots,uniques".to_owned(),
            format!("{code},{}/{code},4,4,0,1", app.base)
        ]
    );
    app.stop().await;
}

async fn a_click_records_its_details_unless_the_link_or_the_visitor_says_not(backend: Backend) {
    let app = spawn_app_on_backend(backend, |s| {
        s.server.trusted_proxies = vec!["127.0.0.1".parse().expect("network")];
        s.analytics.country_header = Some("cf-ipcountry".into());
    })
    .await;
    let on = app.create_code("https://example.com/on").await;
    let off = code_of(
        app.create(json!({ "url": "https://example.com/off", "analytics": false }))
            .await,
    )
    .await;
    let person = [
        ("user-agent", FIREFOX_LINUX),
        ("referer", "https://news.example/story?id=1"),
        ("cf-ipcountry", "DE"),
        ("x-forwarded-for", "203.0.113.7"),
    ];
    for code in [&on, &off] {
        click(&app, code, &person).await;
        click(&app, code, &person).await;
        click(
            &app,
            code,
            &[
                ("user-agent", GOOGLEBOT),
                ("x-forwarded-for", "66.249.66.1"),
            ],
        )
        .await;
    }
    // Global Privacy Control: counted, nothing more.
    let mut private = person.to_vec();
    private.push(("sec-gpc", "1"));
    click(&app, &on, &private).await;

    let stats = stats_when(&app, &on, "", 4).await;
    assert_eq!(
        (stats["humans"].as_u64(), stats["bots"].as_u64()),
        (Some(2), Some(1)),
        "{stats}"
    );
    assert_eq!(stats["uniques"], 1, "the same person twice: {stats}");
    assert_eq!(
        breakdown(&stats, "referrer"),
        vec![("news.example".to_owned(), 2)]
    );
    assert_eq!(breakdown(&stats, "country"), vec![("DE".to_owned(), 2)]);
    let browsers = breakdown(&stats, "browser");
    assert!(
        browsers.len() == 1 && browsers[0].0.contains("Firefox"),
        "{browsers:?}"
    );
    let systems = breakdown(&stats, "os");
    assert!(
        systems.len() == 1 && systems[0].0.contains("Linux"),
        "{systems:?}"
    );

    let counted = stats_when(&app, &off, "", 3).await;
    assert_eq!(
        (
            counted["humans"].as_u64(),
            counted["bots"].as_u64(),
            counted["uniques"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{counted}"
    );
    for dimension in ["referrer", "country", "device", "browser", "os"] {
        assert_eq!(breakdown(&counted, dimension), vec![], "{dimension}");
    }
    // The switch is an edit away, and the link's view says where it stands.
    let edited = app.admin_patch(&off, &json!({ "analytics": true })).await;
    assert_eq!(edited.status(), 200);
    assert_eq!(
        edited.json::<Value>().await.expect("json")["analytics"],
        true
    );
    click(&app, &off, &person).await;
    let later = stats_when(&app, &off, "", 4).await;
    assert_eq!(later["humans"], 1, "{later}");
    app.stop().await;
}

async fn head_and_the_preview_count_nothing(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let code = app.create_code("https://example.com/looked-at").await;
    assert_eq!(app.head(&format!("/{code}")).await.status(), 302);
    assert_eq!(app.get(&format!("/{code}+")).await.status(), 200);
    assert_eq!(app.head(&format!("/{code}+")).await.status(), 200);
    // One real click after them: once it is in, anything they had counted would be too.
    click(&app, &code, &[]).await;
    let stats = stats_when(&app, &code, "", 1).await;
    assert_eq!(stats["total_clicks"], 1, "{stats}");
    app.stop().await;
}

on_every_backend!(
    owners_see_their_links_stats_and_the_admin_sees_all,
    stats_queries_are_checked,
    hourly_and_daily_series_and_csv,
    a_click_records_its_details_unless_the_link_or_the_visitor_says_not,
    head_and_the_preview_count_nothing,
);
