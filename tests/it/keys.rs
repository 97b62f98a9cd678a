//! API keys as data: created, listed, revoked and rotated through the admin API on every
//! backend, scopes per key, settings keys migrated into the store, a fleet that sees a revoke
//! within the stated bound, and failed authentication throttled per client.

use std::time::{Duration, Instant};

use kurz::config::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_TOKEN, Backend, TestApp, TestStore, assert_problem, code_of, eventually, spawn_app_on,
    spawn_app_on_backend,
};
use crate::on_every_backend;

const SETTINGS_KEY: &str = "settings-key-0123456789abcdef0123456";

async fn call(
    app: &TestApp,
    method: Method,
    path: impl AsRef<str>,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path.as_ref()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

/// A request with the admin token and no body.
async fn admin(app: &TestApp, method: Method, path: impl AsRef<str>) -> reqwest::Response {
    call(app, method, path, ADMIN_TOKEN, None).await
}

/// Creates a key through the admin API; returns its view (with the secret).
async fn new_key(app: &TestApp, body: Value) -> Value {
    let response = call(app, Method::POST, "/api/v1/keys", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("text")
        .to_owned();
    let key: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!("/api/v1/keys/{}", key["id"].as_str().expect("id"))
    );
    key
}

fn secret(key: &Value) -> &str {
    key["secret"].as_str().expect("the secret, shown once")
}

async fn create_link(app: &TestApp, token: &str, url: &str) -> reqwest::Response {
    call(
        app,
        Method::POST,
        "/api/v1/links",
        token,
        Some(json!({ "url": url })),
    )
    .await
}

async fn keys_are_created_listed_revoked_and_rotated(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let key = new_key(&app, json!({ "name": "ci pipeline" })).await;
    let id = key["id"].as_str().expect("id").to_owned();
    assert_eq!(key["name"], "ci pipeline");
    assert_eq!(key["scopes"], json!(["create", "read", "edit", "delete"]));
    assert!(secret(&key).len() >= 32);
    assert!(key["revoked_at"].is_null());

    // The key works at once on the instance that made it, and owns what it makes.
    let code = code_of(create_link(&app, secret(&key), "https://example.com/k1").await).await;
    let link = call(
        &app,
        Method::GET,
        format!("/api/v1/links/{code}"),
        secret(&key),
        None,
    )
    .await;
    assert_eq!(link.status(), 200);
    let other = new_key(&app, json!({ "name": "another" })).await;
    let theirs = call(
        &app,
        Method::GET,
        format!("/api/v1/links/{code}"),
        secret(&other),
        None,
    );
    assert_problem(theirs.await, 404).await;

    // Listed and read without the secret.
    let listed: Value = admin(&app, Method::GET, "/api/v1/keys")
        .await
        .json()
        .await
        .expect("json");
    let listed = listed["keys"].as_array().expect("keys");
    assert!(listed.iter().any(|k| k["id"] == id.as_str()));
    assert!(listed.iter().all(|k| k.get("secret").is_none()));
    let one = admin(&app, Method::GET, format!("/api/v1/keys/{id}")).await;
    assert_eq!(one.status(), 200);
    assert!(
        one.json::<Value>()
            .await
            .expect("json")
            .get("secret")
            .is_none()
    );

    // Rotated: a new secret for the same id; the old one works through the grace period.
    let rotated = call(
        &app,
        Method::POST,
        format!("/api/v1/keys/{id}/rotate"),
        ADMIN_TOKEN,
        Some(json!({ "grace_s": 60 })),
    )
    .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.expect("json");
    assert_eq!(rotated["id"], id.as_str());
    assert_ne!(secret(&rotated), secret(&key));
    assert!(rotated["previous_valid_until"].is_string());
    for token in [secret(&key), secret(&rotated)] {
        let own = call(
            &app,
            Method::GET,
            format!("/api/v1/links/{code}"),
            token,
            None,
        )
        .await;
        assert_eq!(own.status(), 200, "both secrets during the grace period");
    }
    app.clock.advance(Duration::from_secs(61));
    assert_problem(
        create_link(&app, secret(&key), "https://example.com/k2").await,
        403,
    )
    .await;
    let after = call(
        &app,
        Method::GET,
        format!("/api/v1/links/{code}"),
        secret(&rotated),
        None,
    );
    assert_eq!(
        after.await.status(),
        200,
        "the link stays the rotated key's"
    );

    // Revoked: refused at once here, still listed, as revoked.
    let revoke = admin(&app, Method::DELETE, format!("/api/v1/keys/{id}"));
    assert_eq!(revoke.await.status(), 204);
    assert_problem(
        create_link(&app, secret(&rotated), "https://example.com/k3").await,
        403,
    )
    .await;
    let one: Value = admin(&app, Method::GET, format!("/api/v1/keys/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert!(one["revoked_at"].is_string());
    let rotate_revoked = admin(&app, Method::POST, format!("/api/v1/keys/{id}/rotate"));
    assert_problem(rotate_revoked.await, 409).await;
    app.stop().await;
}

async fn the_key_routes_are_the_admins_and_check_their_input(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let key = new_key(&app, json!({ "name": "k", "scopes": ["create"] })).await;
    for (method, path) in [
        (Method::GET, "/api/v1/keys".to_owned()),
        (Method::POST, "/api/v1/keys".to_owned()),
        (
            Method::GET,
            format!("/api/v1/keys/{}", key["id"].as_str().expect("id")),
        ),
    ] {
        let response = call(
            &app,
            method,
            &path,
            secret(&key),
            Some(json!({ "name": "x" })),
        );
        assert_problem(response.await, 403).await;
    }
    let anonymous = app
        .client
        .get(app.url("/api/v1/keys"))
        .send()
        .await
        .expect("send");
    assert_problem(anonymous, 401).await;
    for body in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": "k", "scopes": ["create", "launch"] }),
        json!({ "name": "x".repeat(101) }),
    ] {
        let response = call(&app, Method::POST, "/api/v1/keys", ADMIN_TOKEN, Some(body));
        assert_problem(response.await, 400).await;
    }
    let id = key["id"].as_str().expect("id");
    let too_long = call(
        &app,
        Method::POST,
        format!("/api/v1/keys/{id}/rotate"),
        ADMIN_TOKEN,
        Some(json!({ "grace_s": 30 * 24 * 3600 })),
    );
    assert_problem(too_long.await, 400).await;
    let unknown = admin(&app, Method::GET, "/api/v1/keys/nosuchkey");
    assert_problem(unknown.await, 404).await;
    let unknown = admin(&app, Method::DELETE, "/api/v1/keys/nosuchkey");
    assert_problem(unknown.await, 404).await;
    app.stop().await;
}

async fn assert_missing_scope(response: reqwest::Response, scope: &str) {
    let problem = assert_problem(response, 403).await;
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains(&format!("'{scope}'")), "{detail}");
}

async fn a_missing_scope_is_a_403_naming_it(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let creator = new_key(&app, json!({ "name": "c", "scopes": ["create"] })).await;
    let code = code_of(create_link(&app, secret(&creator), "https://example.com/s").await).await;
    let path = format!("/api/v1/links/{code}");
    for (method, body, scope) in [
        (Method::GET, None, "read"),
        (Method::PATCH, Some(json!({ "title": "t" })), "edit"),
        (Method::DELETE, None, "delete"),
    ] {
        let response = call(&app, method, &path, secret(&creator), body).await;
        assert_missing_scope(response, scope).await;
    }
    let stats = format!("{path}/stats");
    let response = call(&app, Method::GET, &stats, secret(&creator), None).await;
    assert_missing_scope(response, "stats").await;
    let reader = new_key(&app, json!({ "name": "r", "scopes": ["read"] })).await;
    let response = create_link(&app, secret(&reader), "https://example.com/r").await;
    assert_missing_scope(response, "create").await;

    // `stats`: a key reads the statistics of its own links, not another's; the admin all.
    let counter = new_key(&app, json!({ "name": "s", "scopes": ["create", "stats"] })).await;
    let own_code =
        code_of(create_link(&app, secret(&counter), "https://example.com/own").await).await;
    let own_stats = format!("/api/v1/links/{own_code}/stats");
    let response = call(&app, Method::GET, &own_stats, secret(&counter), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json")["total_clicks"],
        0
    );
    assert_problem(
        call(&app, Method::GET, &stats, secret(&counter), None).await,
        404,
    )
    .await;
    assert_eq!(app.admin_get(&stats).await.status(), 200);
    app.stop().await;
}

async fn a_settings_key_is_migrated_and_keeps_its_links(backend: Backend) {
    let store = TestStore::new(backend).await;
    // A store as kurz left it before keys lived in it: links owned by the settings key under
    // its keyed fingerprint and, older, under its unkeyed SHA-256 prefix.
    let settings = store.settings();
    let raw = kurz::store::open(&settings.store, Default::default())
        .await
        .expect("store");
    let owner_key = kurz::secrets::ensure(&*raw, None)
        .await
        .expect("secrets")
        .owner_key;
    let keyed = kurz::keys::fingerprint(&owner_key, SETTINGS_KEY);
    let unkeyed = hex::encode(&kurz::keys::digest(SETTINGS_KEY)[..8]);
    for (code, owner) in [("oldKeyed", &keyed), ("oldUnkeyed", &unkeyed)] {
        let link = kurz::store::Link {
            code: code.into(),
            url: format!("https://example.com/{code}"),
            created_at_ms: kurz::clock::system_now_ms(),
            owner: Some(owner.clone()),
            ..kurz::store::Link::default()
        };
        raw.insert(&link, None).await.expect("inserted");
    }
    raw.close().await;
    drop(raw);

    let with_key =
        |s: &mut kurz::config::Settings| s.auth.api_keys = vec![Secret::new(SETTINGS_KEY)];
    let app = spawn_app_on(&store, with_key).await;
    let keys: Value = admin(&app, Method::GET, "/api/v1/keys")
        .await
        .json()
        .await
        .expect("json");
    let migrated = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == keyed.as_str())
        .expect("the settings key is in the store under its fingerprint")
        .clone();
    assert_eq!(
        migrated["scopes"],
        json!(["create", "read", "edit", "delete", "stats"])
    );
    let listed: Value = call(&app, Method::GET, "/api/v1/links", SETTINGS_KEY, None)
        .await
        .json()
        .await
        .expect("json");
    let codes: Vec<&str> = listed["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"oldKeyed") && codes.contains(&"oldUnkeyed"),
        "{codes:?}"
    );
    for code in ["oldKeyed", "oldUnkeyed"] {
        let delete = call(
            &app,
            Method::DELETE,
            format!("/api/v1/links/{code}"),
            SETTINGS_KEY,
            None,
        );
        assert_eq!(
            delete.await.status(),
            204,
            "its old link {code} is still its own"
        );
    }
    let made = create_link(&app, SETTINGS_KEY, "https://example.com/new").await;
    assert_eq!(made.status(), 201);

    // Revoked through the API, it stays revoked when an instance starts again.
    let revoke = admin(&app, Method::DELETE, format!("/api/v1/keys/{keyed}"));
    assert_eq!(revoke.await.status(), 204);
    app.stop().await;
    let again = spawn_app_on(&store, with_key).await;
    assert_problem(
        create_link(&again, SETTINGS_KEY, "https://example.com/no").await,
        403,
    )
    .await;
    again.stop().await;
}

async fn failed_authentication_is_throttled_per_client(backend: Backend) {
    let app = spawn_app_on_backend(backend, |s| {
        s.limits.rate.auth_failures_per_minute_per_ip = 3;
        s.auth.api_keys = vec![Secret::new(SETTINGS_KEY)];
        s.server.trusted_proxies = vec!["127.0.0.1".parse().expect("network")];
    })
    .await;
    // A request from `client` (behind the trusted proxy) with `token`.
    let from = |client: &'static str, method: Method, path: &'static str, token: &'static str| {
        let mut request = app
            .client
            .request(method.clone(), app.url(path))
            .header("x-forwarded-for", client)
            .bearer_auth(token);
        if method == Method::POST {
            request = request.json(&json!({ "url": "https://example.com/t" }));
        }
        request.send()
    };
    let guesser = "203.0.113.9";
    for _ in 0..3 {
        let wrong = from(
            guesser,
            Method::POST,
            "/api/v1/links",
            "a-wrong-key-0123456789abcdef012",
        );
        assert_problem(wrong.await.expect("send"), 403).await;
    }
    let wrong_admin = from(guesser, Method::GET, "/api/v1/keys", "not-the-admin-token");
    let wrong_admin = wrong_admin.await.expect("send");
    assert_eq!(wrong_admin.status(), 429);
    let retry_after: u64 = wrong_admin.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_problem(wrong_admin, 429).await;
    // The right key is not even checked while the client is throttled.
    let right = from(guesser, Method::POST, "/api/v1/links", SETTINGS_KEY);
    assert_problem(right.await.expect("send"), 429).await;
    // Another client is not: the limit is per client.
    let other = from("198.51.100.7", Method::POST, "/api/v1/links", SETTINGS_KEY);
    assert_eq!(other.await.expect("send").status(), 201);
    // An IPv6 client is one per /64, as for every limit: another address in its prefix gets
    // no fresh budget.
    for _ in 0..3 {
        let wrong = from(
            "2001:db8:1:2::1",
            Method::GET,
            "/api/v1/keys",
            "not-the-admin-token",
        );
        assert_problem(wrong.await.expect("send"), 403).await;
    }
    let rotated = from(
        "2001:db8:1:2::99",
        Method::GET,
        "/api/v1/keys",
        "not-the-admin-token",
    );
    assert_problem(rotated.await.expect("send"), 429).await;
    // Requests without a token are no authentication failures, nor refused for them.
    let health = app
        .client
        .get(app.url("/healthz"))
        .header("x-forwarded-for", guesser);
    assert_eq!(health.send().await.expect("send").status(), 200);
    let metrics = app.metrics().await;
    assert!(crate::harness::metric(&metrics, "kurz_rate_limited_auth_failures_total") >= 2.0);
    app.stop().await;
}

/// Creation without a key is open only on an instance that has never had a key: once one is
/// made, revoking every key closes creation rather than opening it to anyone.
async fn revoking_every_key_does_not_open_creation(backend: Backend) {
    let app = spawn_app_on_backend(backend, |_| {}).await;
    let anonymous = || {
        app.client
            .post(app.url("/api/v1/links"))
            .json(&json!({ "url": "https://example.com/anonymous" }))
            .send()
    };
    assert_eq!(
        anonymous().await.expect("request").status(),
        201,
        "no key yet, on loopback: creation is open"
    );
    let key = new_key(&app, json!({ "name": "the only key" })).await;
    let id = key["id"].as_str().expect("id");
    assert_problem(anonymous().await.expect("request"), 401).await;
    let revoke = admin(&app, Method::DELETE, format!("/api/v1/keys/{id}"));
    assert_eq!(revoke.await.status(), 204);
    assert_problem(anonymous().await.expect("request"), 401).await;
}

on_every_backend!(
    keys_are_created_listed_revoked_and_rotated,
    revoking_every_key_does_not_open_creation,
    the_key_routes_are_the_admins_and_check_their_input,
    a_missing_scope_is_a_403_naming_it,
    a_settings_key_is_migrated_and_keeps_its_links,
    failed_authentication_is_throttled_per_client,
);

/// The refresh setting of the fleet test: a change made on one instance is to apply on every
/// other within one refresh interval plus one read of the keys from the store.
const REFRESH_S: u64 = 1;

/// Requests to one instance of the fleet test, each timed: the slowest one is part of what
/// observing a change can take beyond the bound itself.
struct Probe<'a> {
    app: &'a TestApp,
    slowest: std::sync::Mutex<Duration>,
}

impl<'a> Probe<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            slowest: std::sync::Mutex::new(Duration::ZERO),
        }
    }

    /// Whether `token` is a working API key here (it may list its links).
    async fn works(&self, token: &str) -> bool {
        let started = Instant::now();
        let response = self
            .app
            .client
            .get(self.app.url("/api/v1/links"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        self.took(started.elapsed());
        response.status() == 200
    }

    /// Times one read of every key from the store (an admin list reads them, as a refresh does).
    async fn read_keys(&self) {
        let started = Instant::now();
        assert_eq!(
            admin(self.app, Method::GET, "/api/v1/keys").await.status(),
            200
        );
        self.took(started.elapsed());
    }

    fn took(&self, elapsed: Duration) {
        if let Ok(mut slowest) = self.slowest.lock() {
            *slowest = (*slowest).max(elapsed);
        }
    }

    fn slowest(&self) -> Duration {
        self.slowest.lock().map(|s| *s).unwrap_or_default()
    }

    /// Polls until `token` works here (or, `working` false, until it no longer does) and
    /// returns how long after `since` that was seen. The change itself is bounded by the
    /// refresh interval plus one store read; seeing it adds at most one polling step of
    /// `eventually` (200 ms) and one request, and a store read here is timed like the requests.
    async fn until(&self, token: &str, working: bool, since: Instant) -> Duration {
        let bound = Duration::from_secs(REFRESH_S);
        eventually(
            "the change reaches the instance",
            bound * 10,
            || async move { self.works(token).await == working },
        )
        .await;
        let seen = since.elapsed();
        self.read_keys().await;
        let allowed = bound + Duration::from_millis(200) + self.slowest() * 2;
        assert!(
            seen <= allowed,
            "seen after {seen:?}, past the bound plus what observing it takes ({allowed:?})"
        );
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_or_rotation_reaches_every_instance_of_a_fleet_within_the_bound() {
    let store = TestStore::new(Backend::Dynamodb).await;
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let refresh = |s: &mut kurz::config::Settings| {
            s.auth.keys_refresh = Duration::from_secs(REFRESH_S);
        };
        fleet.push(spawn_app_on(&store, refresh).await);
    }
    let probes: Vec<Probe> = fleet.iter().map(Probe::new).collect();
    let (a, others) = probes.split_first().expect("three");
    let key = new_key(a.app, json!({ "name": "fleet" })).await;
    let id = key["id"].as_str().expect("id").to_owned();
    assert!(a.works(secret(&key)).await, "at once where it was made");
    let made_at = Instant::now();
    for probe in others {
        probe.until(secret(&key), true, made_at).await;
    }

    // Rotation: the new secret at once where it was rotated, within the bound elsewhere; the
    // old one through the grace period, and not after.
    let rotate = call(
        a.app,
        Method::POST,
        format!("/api/v1/keys/{id}/rotate"),
        ADMIN_TOKEN,
        Some(json!({ "grace_s": 3600 })),
    );
    let rotated: Value = rotate.await.json().await.expect("json");
    let rotated_at = Instant::now();
    assert!(a.works(secret(&rotated)).await);
    for probe in others {
        probe.until(secret(&rotated), true, rotated_at).await;
        assert!(
            probe.works(secret(&key)).await,
            "the old secret in its grace"
        );
    }
    for probe in &probes {
        probe.app.clock.advance(Duration::from_secs(3601));
        assert!(
            !probe.works(secret(&key)).await,
            "the old secret after its grace"
        );
    }

    // Revocation via A: refused at once there, on B and C within the bound.
    let revoke = admin(a.app, Method::DELETE, format!("/api/v1/keys/{id}"));
    assert_eq!(revoke.await.status(), 204);
    let revoked_at = Instant::now();
    assert!(!a.works(secret(&rotated)).await);
    for probe in others {
        probe.until(secret(&rotated), false, revoked_at).await;
    }
    drop(probes);
    for app in fleet {
        app.stop().await;
    }
}
