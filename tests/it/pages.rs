//! Pages for people: HTML errors for browsers (and problem+json for everyone else), the
//! preview, QR codes, the home, manage and statistics pages, their security headers and static
//! files. What the pages' scripts do in a real browser is tested in `tests/browser/`.

use std::time::Duration;

use kurz::config::Secret;
use serde_json::json;

use crate::harness::{
    ADMIN_TOKEN, TestApp, assert_problem, code_of, qr, spawn_app, spawn_app_with,
};

/// What a browser sends when it opens a page.
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn get_accepting(app: &TestApp, path: &str, accept: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.expect("request")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Asserts `response` is an HTML page with `status` and kurz's page headers; returns its body.
async fn assert_page(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status, "status of {}", response.url());
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "content-security-policy"), CSP);
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    let body = response.text().await.expect("body");
    assert!(body.starts_with("<!doctype html>"), "{body}");
    // Nothing inline: the policy would block it, so it must not be there at all.
    for script in body.match_indices("<script").map(|(i, _)| &body[i..]) {
        assert!(script.starts_with("<script src=\"/static/"), "{script}");
    }
    assert!(
        !body.contains("<style") && !body.contains(" style="),
        "{body}"
    );
    body
}

/// An error is negotiated: HTML for a browser, problem+json for API clients, `Vary: Accept`.
async fn assert_negotiated(app: &TestApp, path: &str, status: u16, detail: &str) {
    let page = get_accepting(app, path, Some(BROWSER_ACCEPT)).await;
    assert_eq!(header(&page, "vary"), "accept");
    let body = assert_page(page, status).await;
    // The page starts the detail with a capital letter.
    assert!(body.to_lowercase().contains(detail), "{path}: {body}");
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/problem+json"),
        Some("text/html;q=0.5, application/json"),
    ] {
        let problem = get_accepting(app, path, accept).await;
        assert_eq!(header(&problem, "vary"), "accept");
        let problem = assert_problem(problem, status).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(detail),
            "{path} {accept:?}: {problem}"
        );
    }
}

#[tokio::test]
async fn unknown_and_expired_links_answer_a_page_to_browsers_and_problem_json_to_programs() {
    let app = spawn_app().await;
    let expires = kurz::clock::format_rfc3339(app.clock.now_ms() + 60_000);
    let expiring = code_of(
        app.create(json!({ "url": "https://example.com/soon", "expires_at": expires }))
            .await,
    )
    .await;
    app.clock.advance(Duration::from_secs(61));

    assert_negotiated(&app, "/no-such-code", 404, "no-such-code").await;
    assert_negotiated(&app, &format!("/{expiring}"), 410, "expired").await;
    assert_negotiated(&app, "/not/a/code", 404, "nothing is served").await;
    assert_negotiated(&app, "/bad.code", 404, "codes are").await;
    assert_negotiated(&app, "/admin/nothing", 404, "nothing is served").await;
    let page = get_accepting(&app, "/no-such-code", Some(BROWSER_ACCEPT)).await;
    let body = assert_page(page, 404).await;
    assert!(body.contains("<a href=\"/\">"), "a way back home: {body}");

    // The API stays problem+json whatever the client prefers.
    let api = get_accepting(&app, "/api/v1/links/no-such-code", Some(BROWSER_ACCEPT)).await;
    assert_problem(api, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn a_preview_shows_the_destination_and_counts_no_click() {
    let app = spawn_app().await;
    let url = "https://Docs.Example.com:8443/guide?topic=a&page=2";
    let code = code_of(app.create(json!({ "url": url, "alias": "guide" })).await).await;
    assert_eq!(code, "guide");

    for accept in [Some(BROWSER_ACCEPT), None] {
        let body = assert_page(get_accepting(&app, "/guide+", accept).await, 200).await;
        assert!(
            body.contains(
                r#"https://<strong class="host">docs.example.com</strong>:8443/guide?topic=a&amp;page=2"#
            ),
            "{body}"
        );
        // Stored as normalised on create (lower-case host).
        assert!(body.contains(r#"href="https://docs.example.com:8443/guide?topic=a&amp;page=2""#));
        assert!(
            body.contains(&format!("{}/guide", app.base)),
            "the short link"
        );
        assert!(body.contains("Created") && body.contains("never"), "{body}");
    }
    let head = app.head("/guide+").await;
    assert_eq!(head.status(), 200);

    // One real click after the previews: the stats count exactly that one.
    assert_eq!(app.get("/guide").await.status(), 302);
    let stats = app.stats_when("guide", 1).await;
    assert_eq!(stats["total_clicks"], 1, "{stats}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"kurz_http_requests_total{route="preview",status="2xx"} 3"#),
        "previews have their own metric label"
    );

    assert_negotiated(&app, "/unknown+", 404, "unknown").await;
    assert_negotiated(&app, "/+", 404, "codes are").await;
    app.stop().await;
}

#[tokio::test]
async fn an_expiring_link_previews_its_expiry() {
    let app = spawn_app().await;
    let expires = kurz::clock::format_rfc3339(app.clock.now_ms() + 3_600_000);
    let code = code_of(
        app.create(json!({ "url": "https://example.com/later", "expires_at": expires }))
            .await,
    )
    .await;
    let body = assert_page(app.get(&format!("/{code}+")).await, 200).await;
    assert!(
        body.contains(&format!("<time datetime=\"{expires}\">")),
        "{body}"
    );
    app.clock.advance(Duration::from_secs(3_601));
    assert_negotiated(&app, &format!("/{code}+"), 410, "expired").await;
    app.stop().await;
}

/// The width and height in a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let word = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (word(16), word(20))
}

#[tokio::test]
async fn qr_codes_of_the_short_url_for_anyone() {
    // With API keys configured, reading a link needs one; its QR code does not.
    let app = spawn_app_with(|s| s.auth.api_keys = vec![Secret::new("key-for-qr-tests")]).await;
    let created = app
        .client
        .post(app.url("/api/v1/links"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "url": "https://example.com/qr" }))
        .send()
        .await
        .expect("create");
    let code = code_of(created).await;
    let short_url = format!("{}/{code}", app.base);

    let svg = app.get(&format!("/api/v1/links/{code}/qr")).await;
    assert_eq!(svg.status(), 200);
    assert_eq!(header(&svg, "content-type"), "image/svg+xml");
    assert!(header(&svg, "cache-control").contains("max-age="));
    let svg = svg.text().await.expect("svg");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"256\""));
    assert_eq!(
        qr::read_svg(&svg),
        short_url,
        "the SVG scans as the short URL"
    );

    let png = app
        .get(&format!("/api/v1/links/{code}/qr?format=png&size=300"))
        .await;
    assert_eq!(png.status(), 200);
    assert_eq!(header(&png, "content-type"), "image/png");
    let png = png.bytes().await.expect("png");
    assert_eq!(png_size(&png), (300, 300));
    assert_eq!(
        qr::read_png(&png),
        short_url,
        "the PNG scans as the short URL"
    );

    for (size, ok) in [("64", true), ("1024", true), ("63", false), ("1025", false)] {
        let response = app
            .get(&format!("/api/v1/links/{code}/qr?format=png&size={size}"))
            .await;
        if ok {
            assert_eq!(response.status(), 200, "size {size}");
            let side: u32 = size.parse().expect("number");
            let png = response.bytes().await.expect("png");
            assert_eq!(png_size(&png), (side, side));
            assert_eq!(qr::read_png(&png), short_url, "size {size}");
        } else {
            let problem = assert_problem(response, 400).await;
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("64 to 1024"),
                "{problem}"
            );
        }
    }
    for query in ["size=abc", "size=-5", "size=", "format=gif", "format=PNG"] {
        let response = app.get(&format!("/api/v1/links/{code}/qr?{query}")).await;
        assert_problem(response, 400).await;
    }
    assert_problem(app.get("/api/v1/links/nope123/qr").await, 404).await;
    assert_problem(app.get("/api/v1/links/no.pe/qr").await, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn the_home_and_stats_pages_are_strict_about_what_they_load() {
    let app = spawn_app().await;
    let home = assert_page(get_accepting(&app, "/", Some(BROWSER_ACCEPT)).await, 200).await;
    for control in [
        r#"<label for="url">"#,
        r#"<input id="url" name="url" type="url" required"#,
        r#"<label for="alias">"#,
        r#"<label for="expires">"#,
        r#"type="datetime-local""#,
        r#"<label for="api-key">"#,
        r#"<script src="/static/home.js?v="#,
    ] {
        assert!(home.contains(control), "{control} in {home}");
    }

    let code = app.create_code("https://example.com/stats-page").await;
    let stats = assert_page(app.get(&format!("/admin/links/{code}")).await, 200).await;
    assert!(stats.contains(&format!(r#"data-code="{code}""#)), "{stats}");
    assert!(stats.contains(r#"<label for="admin-token">"#));
    assert!(stats.contains(r#"type="password""#));
    assert!(stats.contains(r#"<script src="/static/stats.js?v="#));
    // The page is a shell: the statistics themselves need the admin token, asked by the page.
    assert!(!stats.contains("total_clicks"));
    assert_negotiated(&app, "/admin/links/not.a.code", 404, "codes are").await;
    app.stop().await;
}

#[tokio::test]
async fn the_manage_page_is_a_shell_that_asks_for_a_key_or_token() {
    let app = spawn_app().await;
    app.create_code("https://example.com/not-on-the-page").await;
    let page = get_accepting(&app, "/admin/links", Some(BROWSER_ACCEPT)).await;
    let manage = assert_page(page, 200).await;
    for control in [
        "<title>Manage links · kurz</title>",
        r#"<label for="token">"#,
        r#"<input id="token" name="token" type="password" required"#,
        r#"<label for="q">"#,
        r#"<label for="tag">"#,
        r#"<label for="state">"#,
        r#"<script src="/static/manage.js?v="#,
    ] {
        assert!(manage.contains(control), "{control} in {manage}");
    }
    // The links themselves need a key or the admin token, asked by the page.
    assert!(!manage.contains("not-on-the-page"), "{manage}");

    let script = app.get("/static/manage.js").await;
    assert_eq!(script.status(), 200);
    assert_eq!(
        header(&script, "content-type"),
        "text/javascript; charset=utf-8"
    );
    let script = script.text().await.expect("manage.js");
    for call in [
        "/api/v1/links",
        "/api/v1/tags",
        "If-Match",
        "sessionStorage",
    ] {
        assert!(script.contains(call), "manage.js uses {call}");
    }
    assert!(
        !script.contains("localStorage"),
        "the token stays in the tab"
    );
    app.stop().await;
}

#[tokio::test]
async fn static_assets_are_served_for_good() {
    let app = spawn_app().await;
    let home = app.get("/").await.text().await.expect("home");
    let linked: Vec<&str> = home
        .split('"')
        .filter(|part| part.starts_with("/static/"))
        .collect();
    assert_eq!(linked.len(), 2, "the stylesheet and the script: {linked:?}");
    for path in linked {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let expected = if path.contains(".css?v=") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(header(&response, "content-type"), expected, "{path}");
        assert_eq!(
            header(&response, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert!(!response.text().await.expect("asset").is_empty());
    }
    let stats_js = app.get("/static/stats.js").await;
    assert_eq!(stats_js.status(), 200);
    assert_negotiated(&app, "/static/nothing.js", 404, "nothing.js").await;
    assert_negotiated(&app, "/static/", 404, "nothing is served").await;
    app.stop().await;
}
