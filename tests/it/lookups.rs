//! Lookups and who makes them: the misses limit counts codes that exist nowhere and never
//! refuses a link that exists (one instance, a fleet sharing Redis), every route that looks a
//! code up shares it, clients are told apart behind proxies (IPv6 by prefix, junk hops), and
//! an instance bound to every address knows its own addresses and keeps `/metrics` to the admin.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Backend, REDIS_TIMEOUT_FOR_COUNTS, RedisServer, TestApp, TestStore,
    assert_problem, free_port, spawn_app_on, spawn_app_on_backend, spawn_app_with, unique_name,
};
use crate::on_every_backend;

/// `count` new links in one bulk request; their codes.
async fn bulk_codes(app: &TestApp, count: usize) -> Vec<String> {
    let links: Vec<Value> = (0..count)
        .map(|i| json!({ "url": format!("https://example.com/bulk/{i}") }))
        .collect();
    let response = app
        .client
        .post(app.url("/api/v1/links/bulk"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "links": links }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["created"], count);
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["link"]["code"].as_str().expect("code").to_owned())
        .collect()
}

/// `GET path` as the client a trusted proxy at 127.0.0.1 forwarded for (`None`: the peer).
async fn get_from(app: &TestApp, path: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.expect("send")
}

/// The status of an anonymous create for the client a trusted proxy at 127.0.0.1 forwarded
/// for (the `X-Forwarded-For` value as given).
async fn create_from(app: &TestApp, forwarded_for: &str) -> u16 {
    app.client
        .post(app.url("/api/v1/links"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "url": "https://example.com/forwarded" }))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

/// An app with these limits per minute, behind a trusted proxy at 127.0.0.1.
async fn behind_a_proxy(creates: u32, misses: u32, ipv6_prefix_len: u8) -> TestApp {
    spawn_app_with(|s| {
        s.limits.rate.creates_per_minute_per_ip = creates;
        s.limits.rate.misses_per_minute_per_ip = misses;
        s.limits.rate.ipv6_prefix_len = ipv6_prefix_len;
        s.server.trusted_proxies = vec!["127.0.0.1".parse().expect("network")];
    })
    .await
}

/// A 429 from the misses limit.
async fn assert_refused_miss(response: reqwest::Response) {
    let policy = response.headers()["ratelimit-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(policy.starts_with("\"misses-per-ip\";q="), "{policy}");
    assert_problem(response, 429).await;
}

/// The statuses of `GET /{code}` for each code, from one client.
async fn redirect_statuses(apps: &[&TestApp], codes: &[String]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let app = apps[i % apps.len()];
        statuses.push(app.get(&format!("/{code}")).await.status().as_u16());
    }
    statuses
}

/// From one address with no cache to help (L1 off): every existing link redirects however
/// many there are, while unknown codes spend the budget; once it is spent, unknown codes
/// answer 429 (not 404) and known links still redirect.
async fn existing_links_always_redirect_and_a_scanner_is_stopped(backend: Backend) {
    const BUDGET: usize = 50;
    let app = spawn_app_on_backend(backend, |s| {
        s.limits.rate.misses_per_minute_per_ip = BUDGET as u32;
        s.cache.local.max_bytes = 0;
    })
    .await;
    let codes = bulk_codes(&app, 4 * BUDGET).await;
    let statuses = redirect_statuses(&[&app], &codes).await;
    let refused = statuses.iter().filter(|&&s| s != 302).count();
    assert_eq!(refused, 0, "{statuses:?}");

    // A scanner from the same address: the budget of unknown codes, then 429.
    for i in 0..BUDGET {
        assert_problem(app.get(&format!("/Scan{i}")).await, 404).await;
    }
    for i in BUDGET..BUDGET + 5 {
        assert_refused_miss(app.get(&format!("/Scan{i}")).await).await;
    }
    // While refused it learns nothing about unknown codes, seen before or not, and links
    // that exist still redirect.
    assert_refused_miss(app.get("/Scan0").await).await;
    assert_eq!(app.get(&format!("/{}", codes[0])).await.status(), 302);
    assert_refused_miss(app.get("/ScanAgain").await).await;
    app.stop().await;
}

on_every_backend!(existing_links_always_redirect_and_a_scanner_is_stopped);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_redis_counts_only_unknown_codes_and_never_refuses_a_link() {
    const BUDGET: usize = 10;
    let redis = RedisServer::start_on(free_port());
    let prefix = format!("{}:", unique_name("miss"));
    let store = TestStore::new(Backend::Dynamodb).await;
    let settings = |s: &mut kurz::config::Settings| {
        s.limits.rate.misses_per_minute_per_ip = BUDGET as u32;
        s.cache.local.max_bytes = 0;
        s.cache.redis.url = Some(kurz::config::Secret::new(redis.url.clone()));
        s.cache.redis.key_prefix.clone_from(&prefix);
        // The shared bucket is counted exactly: a late Redis call must not fall back to the
        // instance's own.
        s.cache.redis.timeout = REDIS_TIMEOUT_FOR_COUNTS;
    };
    let a = spawn_app_on(&store, settings).await;
    let b = spawn_app_on(&store, settings).await;
    let codes = bulk_codes(&a, 6 * BUDGET).await;
    // Each link once, from one address, through both instances: all redirect.
    let statuses = redirect_statuses(&[&a, &b], &codes).await;
    assert!(statuses.iter().all(|&s| s == 302), "{statuses:?}");

    // Unknown codes through both instances share one bucket, which Redis refills by its
    // own clock (one every 60 s / BUDGET): as many 404s as the budget and what refilled.
    let interval = Duration::from_secs(60) / BUDGET as u32;
    let started = Instant::now();
    // All of it through a, none left through b.
    for (app, expected) in [(&a, BUDGET), (&b, 0)] {
        let mut found_missing = 0;
        let refused = loop {
            let response = app.get(&format!("/Fleet{}", unique_name("x"))).await;
            if response.status() != 404 {
                break response;
            }
            found_missing += 1;
            assert!(found_missing <= 2 * BUDGET, "never refused");
        };
        assert_refused_miss(refused).await;
        let refilled = (started.elapsed().as_millis() / interval.as_millis()) as usize;
        assert!(
            (expected..=expected + refilled).contains(&found_missing),
            "{found_missing} unknown codes answered 404 before the 429"
        );
    }
    // Refused for unknown codes, still redirecting to links (from Redis) on both.
    let statuses = redirect_statuses(&[&a, &b], &codes[..10]).await;
    assert!(statuses.iter().all(|&s| s == 302), "{statuses:?}");
    a.stop().await;
    b.stop().await;
}

/// A route's path for a code.
type PathOf = fn(&str) -> String;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lookup_route_spends_the_misses_budget_on_unknown_codes() {
    const BUDGET: usize = 6;
    let app = behind_a_proxy(0, BUDGET as u32, 64).await;
    let code = app.create_code("https://example.com/known").await;
    let routes: [(&str, PathOf); 3] = [
        ("preview", |c| format!("/{c}+")),
        ("qr", |c| format!("/api/v1/links/{c}/qr")),
        ("get", |c| format!("/api/v1/links/{c}")),
    ];
    for (i, (route, path)) in routes.iter().enumerate() {
        // A client of its own per route.
        let client = format!("203.0.113.{}", i + 1);
        // Codes of its own too: one L1 already knows to be missing answers 404 for free.
        for n in 0..BUDGET {
            let response = get_from(&app, &path(&format!("{route}{n}")), Some(&client)).await;
            assert_eq!(response.status(), 404, "{route} #{n}");
        }
        let refused = get_from(&app, &path(&format!("{route}Over")), Some(&client)).await;
        assert_eq!(refused.status(), 429, "{route}");
        assert_refused_miss(refused).await;
    }
    // One budget for all of them: misses on the redirect, the QR code and the link API add up.
    let client = Some("203.0.113.50");
    for n in 0..BUDGET {
        let path = routes[n % 3].1(&format!("Mixed{n}"));
        assert_eq!(get_from(&app, &path, client).await.status(), 404, "{path}");
    }
    assert_refused_miss(get_from(&app, "/MixedOver", client).await).await;
    // A QR code of a link that exists is still served to that client.
    let qr = get_from(&app, &format!("/api/v1/links/{code}/qr"), client).await;
    assert_eq!(qr.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_limited_per_prefix() {
    let app = behind_a_proxy(2, 3, 64).await;
    // One host rotating addresses in its /64 has one bucket.
    for client in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"] {
        assert_eq!(create_from(&app, client).await, 201);
    }
    assert_eq!(create_from(&app, "2001:db8:1:2:abcd::7").await, 429);
    // The next /64 is someone else.
    assert_eq!(create_from(&app, "2001:db8:1:3::1").await, 201);

    for n in 0..3 {
        let client = format!("2001:db8:5:6::{n:x}");
        let response = get_from(&app, &format!("/Rotate{n}"), Some(&client)).await;
        assert_eq!(response.status(), 404);
    }
    assert_refused_miss(get_from(&app, "/Rotate9", Some("2001:db8:5:6:1:2:3:4")).await).await;
    app.stop().await;

    // With a /128 prefix every address is its own client.
    let app = behind_a_proxy(1, 0, 128).await;
    for client in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        assert_eq!(create_from(&app, client).await, 201);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_forwarded_for_hop_never_makes_the_proxy_the_client() {
    let app = behind_a_proxy(1, 0, 64).await;
    let status = |forwarded| create_from(&app, forwarded);
    // Junk to the client's left is ignored: two clients, one create each.
    assert_eq!(status("bogus, 203.0.113.5").await, 201);
    assert_eq!(status("also bogus, 203.0.113.7").await, 201);
    // A hop with a port is the address.
    assert_eq!(status("203.0.113.8:5678").await, 201);
    assert_eq!(status("203.0.113.8:9999").await, 429);
    assert_eq!(status("[2001:db8::8]:80").await, 201);
    // Junk in the client's place is a bucket of its own, never the proxy's.
    assert_eq!(status("garbage").await, 201);
    assert_eq!(status("other-garbage").await, 201);
    assert_eq!(status("garbage").await, 429);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_to_every_address_metrics_need_the_admin_token_and_own_addresses_are_loops() {
    let app = spawn_app_with(|s| {
        s.server.bind = "0.0.0.0:0".parse().expect("address");
        s.auth.open_creation = true;
    })
    .await;
    let anonymous = app.get("/metrics").await;
    assert_problem(anonymous, 401).await;
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("not-the-admin-token-0123456789")
        .send()
        .await
        .expect("send");
    assert_problem(wrong, 403).await;
    let scraped = app.admin_get("/metrics").await;
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.expect("text").contains("kurz_"));

    let port = app.base.rsplit(':').next().expect("port").to_owned();
    let mut own = vec![
        format!("http://0.0.0.0:{port}/x"),
        format!("http://0:{port}/x"),
        format!("http://[::]:{port}/x"),
    ];
    // This machine's address on its default route, if it has one (no packet is sent).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:80").map(|()| s))
        .and_then(|s| s.local_addr());
    if let Ok(addr) = outward {
        own.push(format!("http://{}:{port}/x", addr.ip()));
    }
    for url in own {
        let refused = app.create(json!({ "url": url })).await;
        let problem = assert_problem(refused, 400).await;
        assert!(
            problem["detail"].as_str().expect("detail").contains("loop"),
            "{url}: {problem}"
        );
    }
    app.stop().await;
}
