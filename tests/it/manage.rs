//! Managing links through the API, on every store backend: list and search in pages, edit with
//! `ETag`/`If-Match`, titles and tags, query forwarding on redirect.

use std::collections::HashSet;

use crate::harness::{ADMIN_TOKEN, Backend, TestApp, assert_problem, spawn_app_on_backend};
use crate::on_every_backend;
use kurz::config::Secret;
use serde_json::{Value, json};

const KEY_A: &str = "key-alpha-0123456789abcdef01234567";
const KEY_B: &str = "key-beta-0123456789abcdef012345678";

async fn app_with_keys(backend: Backend) -> TestApp {
    spawn_app_on_backend(backend, |s| {
        s.auth.api_keys = vec![Secret::new(KEY_A), Secret::new(KEY_B)];
    })
    .await
}

async fn create_as(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/links"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201, "{body}");
    response.json().await.expect("json")
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn page(app: &TestApp, token: &str, query: &str) -> Value {
    let response = get_as(app, token, &format!("/api/v1/links?{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.expect("json")
}

fn codes(page: &Value) -> Vec<String> {
    page["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| l["code"].as_str().expect("code").to_owned())
        .collect()
}

async fn patch_as(
    app: &TestApp,
    token: &str,
    code: &str,
    if_match: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .patch(app.url(&format!("/api/v1/links/{code}")))
        .bearer_auth(token)
        .json(&body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.expect("patch")
}

async fn links_are_listed_newest_first_in_pages_that_neither_repeat_nor_skip(backend: Backend) {
    let app = app_with_keys(backend).await;
    let mut before = Vec::new();
    for i in 0..23 {
        // Several links share a millisecond (the test's clock stands still between steps).
        if i % 3 == 0 {
            app.clock.advance(std::time::Duration::from_millis(1));
        }
        let url = format!("https://example.com/a/{i}");
        before.push(create_as(&app, KEY_A, json!({ "url": url })).await["code"].clone());
    }
    let others: HashSet<String> = {
        let mut codes = HashSet::new();
        for i in 0..4 {
            let url = format!("https://example.com/b/{i}");
            let link = create_as(&app, KEY_B, json!({ "url": url })).await;
            codes.insert(link["code"].as_str().expect("code").to_owned());
        }
        codes
    };

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=5&cursor={c}"),
            None => "limit=5".into(),
        };
        let page = page(&app, KEY_A, &query).await;
        seen.extend(codes(&page));
        pages += 1;
        // Links made while the client pages through are newer than every cursor.
        for i in 0..3 {
            app.clock.advance(std::time::Duration::from_millis(1));
            let url = format!("https://example.com/during/{pages}/{i}");
            create_as(&app, KEY_A, json!({ "url": url })).await;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 20, "the pages never end");
    }
    let expected: Vec<String> = before
        .iter()
        .rev()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    seen_sorted.dedup();
    assert_eq!(seen_sorted.len(), seen.len(), "a link came twice: {seen:?}");
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        seen_sorted, expected_sorted,
        "every link there at the start, once"
    );
    // Newest first: by creation time; links made in the same millisecond by code, descending.
    let listed = page(&app, KEY_A, "limit=1000").await;
    let times: Vec<(i64, String)> = listed["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            let at = l["created_at"]
                .as_str()
                .and_then(kurz::clock::parse_rfc3339);
            (
                at.expect("a time"),
                l["code"].as_str().expect("code").to_owned(),
            )
        })
        .collect();
    let mut ordered = times.clone();
    ordered.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, ordered);
    assert_eq!(times.len(), 23 + 3 * pages);

    // A key sees its own links, the admin everyone's.
    let b = codes(&page(&app, KEY_B, "limit=1000").await);
    assert_eq!(b.iter().cloned().collect::<HashSet<_>>(), others);
    let all = codes(&page(&app, ADMIN_TOKEN, "limit=1000").await);
    assert_eq!(all.len(), times.len() + others.len());

    assert_problem(app.get("/api/v1/links").await, 401).await;
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=0000",
        "state=gone",
        "tag=two%20words",
        "created_before=yesterday",
        "colour=blue",
    ] {
        let problem = assert_problem(
            get_as(&app, KEY_A, &format!("/api/v1/links?{bad}")).await,
            400,
        )
        .await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{bad}"
        );
    }
    // A cursor that was changed is refused, not followed somewhere else.
    let first = page(&app, KEY_A, "limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let mut tampered = cursor.to_owned().into_bytes();
    tampered[2] = if tampered[2] == b'3' { b'4' } else { b'3' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let problem = assert_problem(
        get_as(&app, KEY_A, &format!("/api/v1/links?cursor={tampered}")).await,
        400,
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("cursor")
    );
    app.stop().await;
}

async fn lists_filter_by_tag_text_time_and_state(backend: Backend) {
    let app = app_with_keys(backend).await;
    let start = app.clock.now_ms();
    let spring = create_as(
        &app,
        KEY_A,
        json!({ "url": "https://shop.example/spring", "title": "Spring Sale", "tags": ["Launch", "q2"] }),
    )
    .await;
    assert_eq!(spring["title"], "Spring Sale");
    assert_eq!(spring["tags"], json!(["launch", "q2"]), "normalised");
    assert_eq!(spring["forward_query"], true, "on by default");
    app.clock.advance(std::time::Duration::from_secs(10));
    let middle = app.clock.now_ms();
    app.clock.advance(std::time::Duration::from_secs(10));
    let docs = create_as(
        &app,
        KEY_A,
        json!({ "url": "https://docs.example/Guide", "tags": ["docs", "launch"], "expires_at": kurz::clock::format_rfc3339(app.clock.now_ms() + 60_000) }),
    )
    .await;
    let plain = create_as(&app, KEY_A, json!({ "url": "https://other.example/" })).await;
    let code = |v: &Value| v["code"].as_str().expect("code").to_owned();
    let disabled = patch_as(
        &app,
        KEY_A,
        &code(&plain),
        None,
        json!({ "disabled": true }),
    )
    .await;
    assert_eq!(disabled.status(), 200);
    app.clock.advance(std::time::Duration::from_secs(61)); // `docs` has expired

    let listed = |query: &'static str| {
        let app = &app;
        async move {
            let mut found = codes(&page(app, KEY_A, query).await);
            found.sort();
            found
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        listed("tag=launch").await,
        sorted(vec![code(&spring), code(&docs)])
    );
    assert_eq!(
        listed("tag=LAUNCH").await,
        sorted(vec![code(&spring), code(&docs)])
    );
    assert_eq!(listed("tag=q2").await, vec![code(&spring)]);
    assert_eq!(
        listed("q=spring%20s").await,
        vec![code(&spring)],
        "title, any case"
    );
    assert_eq!(
        listed("q=guide").await,
        vec![code(&docs)],
        "destination, any case"
    );
    assert_eq!(listed("state=active").await, vec![code(&spring)]);
    assert_eq!(listed("state=expired").await, vec![code(&docs)]);
    assert_eq!(listed("state=disabled").await, vec![code(&plain)]);
    let q = format!("q={}", code(&plain));
    assert!(
        codes(&page(&app, KEY_A, &q).await).contains(&code(&plain)),
        "the code"
    );
    let before = format!("created_before={}", kurz::clock::format_rfc3339(middle));
    assert_eq!(
        codes(&page(&app, KEY_A, &before).await),
        vec![code(&spring)]
    );
    let after = format!("created_after={}", kurz::clock::format_rfc3339(middle));
    assert_eq!(
        sorted(codes(&page(&app, KEY_A, &after).await)),
        sorted(vec![code(&docs), code(&plain)])
    );
    let since = format!("created_after={}", kurz::clock::format_rfc3339(start - 1));
    assert_eq!(codes(&page(&app, KEY_A, &since).await).len(), 3);

    // The tags in use, most used first; another key's tags are not counted.
    create_as(
        &app,
        KEY_B,
        json!({ "url": "https://b.example/", "tags": ["launch"] }),
    )
    .await;
    let tags: Value = get_as(&app, KEY_A, "/api/v1/tags")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        tags,
        json!({ "tags": [
            { "tag": "launch", "links": 2 },
            { "tag": "docs", "links": 1 },
            { "tag": "q2", "links": 1 },
        ], "complete": true })
    );
    let all: Value = get_as(&app, ADMIN_TOKEN, "/api/v1/tags")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all["tags"][0], json!({ "tag": "launch", "links": 3 }));
    assert_problem(app.get("/api/v1/tags").await, 401).await;

    let seventeen_tags: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    for bad in [
        json!({ "url": "https://e.com/", "tags": ["a b"] }),
        json!({ "url": "https://e.com/", "tags": seventeen_tags.clone() }),
        json!({ "url": "https://e.com/", "title": "x".repeat(201) }),
        json!({ "url": "https://e.com/", "title": "two\nlines" }),
        json!({ "url": "https://e.com/", "tags": "launch" }),
        json!({ "url": "https://e.com/", "forward_query": "yes" }),
        json!({ "url": "https://e.com/", "tags": ["x".repeat(5_000)] }),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/links"))
            .bearer_auth(KEY_A)
            .json(&bad)
            .send()
            .await
            .expect("create");
        let problem = assert_problem(response, 400).await;
        // Input quoted back is cut short: the 5,000-character tag's problem is not 5 KB.
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.chars().count() <= 512, "{detail}");
    }
    app.stop().await;
}

async fn edits_take_effect_at_once_and_honour_if_match(backend: Backend) {
    let app = app_with_keys(backend).await;
    let link = create_as(
        &app,
        KEY_A,
        json!({ "url": "https://example.com/old", "expires_at": "2099-01-01T00:00:00Z" }),
    )
    .await;
    let code = link["code"].as_str().expect("code").to_owned();
    let path = format!("/api/v1/links/{code}");
    assert_eq!(
        app.get(&format!("/{code}")).await.headers()["location"],
        "https://example.com/old"
    );
    let read = get_as(&app, KEY_A, &path).await;
    let tag = read.headers()["etag"].to_str().expect("ascii").to_owned();
    let unchanged = app
        .client
        .get(app.url(&path))
        .bearer_auth(KEY_A)
        .header("if-none-match", &tag)
        .send()
        .await
        .expect("get");
    assert_eq!(unchanged.status(), 304);

    let edited = patch_as(
        &app,
        KEY_A,
        &code,
        Some(&tag),
        json!({ "url": "https://example.com/new", "expires_at": null, "title": "New", "tags": ["b", "a"] }),
    )
    .await;
    assert_eq!(edited.status(), 200);
    let new_tag = edited.headers()["etag"].to_str().expect("ascii").to_owned();
    assert_ne!(new_tag, tag);
    let body: Value = edited.json().await.expect("json");
    assert_eq!(body["url"], "https://example.com/new");
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(body["title"], "New");
    assert_eq!(body["tags"], json!(["b", "a"]));
    assert_eq!(body["created_at"], link["created_at"], "kept");
    // This instance's cache was cleared: the very next redirect goes to the new place.
    assert_eq!(
        app.get(&format!("/{code}")).await.headers()["location"],
        "https://example.com/new"
    );

    // An edit made from the old version is refused, and changes nothing.
    let stale = patch_as(
        &app,
        KEY_A,
        &code,
        Some(&tag),
        json!({ "url": "https://example.com/lost" }),
    )
    .await;
    let problem = assert_problem(stale, 412).await;
    assert!(problem["detail"].as_str().expect("detail").contains("ETag"));
    let current: Value = get_as(&app, KEY_A, &path).await.json().await.expect("json");
    assert_eq!(current["url"], "https://example.com/new");
    // Without If-Match the edit applies to whatever is there.
    let status = patch_as(
        &app,
        KEY_A,
        &code,
        None,
        json!({ "redirect_status": 307, "title": null }),
    )
    .await;
    assert_eq!(status.status(), 200);
    let current: Value = status.json().await.expect("json");
    assert_eq!(
        (current["redirect_status"].as_u64(), &current["title"]),
        (Some(307), &Value::Null)
    );
    assert_eq!(app.get(&format!("/{code}")).await.status(), 307);

    // Another key's link does not exist for this key; anonymous callers may not edit.
    assert_problem(
        patch_as(&app, KEY_B, &code, None, json!({ "title": "x" })).await,
        404,
    )
    .await;
    let anonymous = app
        .client
        .patch(app.url(&path))
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .expect("patch");
    assert_problem(anonymous, 401).await;
    for bad in [
        json!({}),
        json!({ "url": "ftp://example.com/" }),
        json!({ "url": app.url("/loop") }),
        json!({ "redirect_status": 303 }),
        json!({ "expires_at": "2001-01-01T00:00:00Z" }),
        json!({ "tags": ["no spaces"] }),
        json!({ "code": "renamed" }),
    ] {
        assert_problem(patch_as(&app, KEY_A, &code, None, bad.clone()).await, 400).await;
    }
    assert_problem(
        patch_as(&app, KEY_A, &code, Some("\"0.0\""), json!({ "title": "x" })).await,
        412,
    )
    .await;
    assert_problem(
        patch_as(&app, KEY_A, "NoSuchLink", None, json!({ "title": "x" })).await,
        404,
    )
    .await;

    // The owner may disable and enable its link; a takedown by the admin only the admin undoes.
    let off = patch_as(&app, KEY_A, &code, None, json!({ "disabled": true })).await;
    assert_eq!(off.status(), 200);
    assert_problem(app.get(&format!("/{code}")).await, 410).await;
    assert_eq!(
        patch_as(&app, KEY_A, &code, None, json!({ "disabled": false }))
            .await
            .status(),
        200
    );
    assert_eq!(app.get(&format!("/{code}")).await.status(), 307);
    let takedown = patch_as(
        &app,
        ADMIN_TOKEN,
        &code,
        None,
        json!({ "disabled": true, "reason": "phishing" }),
    )
    .await;
    assert_eq!(takedown.status(), 200);
    let refused = patch_as(&app, KEY_A, &code, None, json!({ "disabled": false })).await;
    assert_problem(refused, 403).await;
    assert_problem(app.get(&format!("/{code}")).await, 410).await;
    assert_eq!(
        patch_as(&app, ADMIN_TOKEN, &code, None, json!({ "disabled": false }))
            .await
            .status(),
        200
    );
    assert_eq!(app.get(&format!("/{code}")).await.status(), 307);
    app.stop().await;
}

async fn redirects_forward_the_query_unless_the_link_says_not(backend: Backend) {
    let app = app_with_keys(backend).await;
    let code_of = |v: Value| v["code"].as_str().expect("code").to_owned();
    let forwards = code_of(
        create_as(
            &app,
            KEY_A,
            json!({ "url": "https://example.com/p?a=1#top" }),
        )
        .await,
    );
    let keeps = code_of(
        create_as(
            &app,
            KEY_A,
            json!({ "url": "https://example.com/q?a=1", "forward_query": false }),
        )
        .await,
    );
    for _ in 0..2 {
        // From the store, then from the cache: the same answer.
        let redirect = app.get(&format!("/{forwards}?utm_source=x&b=%20")).await;
        assert_eq!(redirect.status(), 302);
        assert_eq!(
            redirect.headers()["location"],
            "https://example.com/p?a=1&utm_source=x&b=%20#top"
        );
        let plain = app.get(&format!("/{forwards}")).await;
        assert_eq!(plain.headers()["location"], "https://example.com/p?a=1#top");
        let kept = app.get(&format!("/{keeps}?utm_source=x")).await;
        assert_eq!(kept.headers()["location"], "https://example.com/q?a=1");
    }
    // The destination with the query stays within the bound on destinations.
    let long = format!("/{forwards}?q={}", "x".repeat(8 * 1024));
    assert_problem(app.get(&long).await, 414).await;
    let off = patch_as(
        &app,
        KEY_A,
        &forwards,
        None,
        json!({ "forward_query": false }),
    )
    .await;
    assert_eq!(off.status(), 200);
    let redirect = app.get(&format!("/{forwards}?utm_source=x")).await;
    assert_eq!(
        redirect.headers()["location"],
        "https://example.com/p?a=1#top"
    );
    app.stop().await;
}

on_every_backend!(
    links_are_listed_newest_first_in_pages_that_neither_repeat_nor_skip,
    lists_filter_by_tag_text_time_and_state,
    edits_take_effect_at_once_and_honour_if_match,
    redirects_forward_the_query_unless_the_link_says_not,
);
