//! Two regions, active-active, each with its own replica of the table (its own DynamoDB Local)
//! and its own instance: codes minted in both at once are never the same, an alias raced in
//! both has one winner, a link made in one region redirects in the other at once (before any
//! replication: the other region asks the code's home), and while one region's table is gone
//! the other keeps creating and redirecting, refusing only the claims homed in the lost one.
//! These tests run with no replication between the two tables, so every cross-region answer
//! here came from the home-region path, not from a replica.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{
    Backend, DynamoLocal, RedisServer, Replicator, TestApp, TestStore, assert_problem, eventually,
    metric, sdk_client, spawn_app_on, unique_name,
};
use kurz::config::{PeerRegion, RegionSettings, Secret, Settings};
use kurz::store::LinkStore;
use serde_json::json;

/// Region `name` (`id`) of a deployment whose other region is `peer` (`peer_id`), its table at
/// `peer_endpoint`.
fn in_region(s: &mut Settings, name: &str, id: u8, peer: &str, peer_id: u8, peer_endpoint: &str) {
    s.region = RegionSettings {
        name: Some(name.into()),
        id: Some(id),
        peers: vec![PeerRegion {
            name: peer.into(),
            id: peer_id,
            endpoint_url: Some(peer_endpoint.into()),
        }],
        ..RegionSettings::default()
    };
    // Small blocks: both regions lease from their counters many times.
    s.ids.block_size = 20;
}

struct TwoRegions {
    alpha: Arc<TestApp>,
    beta: Arc<TestApp>,
    tables: [Arc<dyn LinkStore>; 2],
    beta_dynamo: DynamoLocal,
    /// Between the two tables, when asked for.
    replicator: Option<Replicator>,
    stores: [TestStore; 2],
}

/// How long the replicator waits before applying a write to the other table.
const REPLICATION_LAG: Duration = Duration::from_millis(100);

/// Region `alpha` (0) on the shared DynamoDB Local, `beta` (1) on one of its own, both
/// started at once on empty tables (so both want to make the permutation key at the same
/// moment); with `replicated`, the replicator between their tables.
async fn two_regions(replicated: bool) -> TwoRegions {
    let alpha_store = TestStore::new(Backend::Dynamodb).await;
    let beta_dynamo = DynamoLocal::start_warm().await;
    let beta_store = alpha_store.replica_at(beta_dynamo.endpoint.clone()).await;
    for (store, id) in [(&alpha_store, 0), (&beta_store, 1)] {
        enable_stream(store, id).await;
    }
    let replicator = if replicated {
        let table = &alpha_store.table;
        Some(
            Replicator::start(
                table,
                &alpha_store.endpoint,
                &beta_store.endpoint,
                REPLICATION_LAG,
            )
            .await,
        )
    } else {
        None
    };
    let (alpha, beta) = tokio::join!(
        spawn_app_on(&alpha_store, |s| {
            in_region(s, "alpha", 0, "beta", 1, &beta_store.endpoint);
        }),
        spawn_app_on(&beta_store, |s| {
            in_region(s, "beta", 1, "alpha", 0, &alpha_store.endpoint);
        }),
    );
    let tables = [table(&alpha_store).await, table(&beta_store).await];
    TwoRegions {
        alpha: Arc::new(alpha),
        beta: Arc::new(beta),
        tables,
        beta_dynamo,
        replicator,
        stores: [alpha_store, beta_store],
    }
}

/// `kurz init` for region `id` of `store`'s table: its stream, which replication reads.
async fn enable_stream(store: &TestStore, id: u8) {
    let mut settings = store.settings().store;
    settings.region_id = Some(id);
    let done = kurz::store::init(&settings)
        .await
        .expect("kurz init in a region");
    assert!(done.iter().any(|line| line.contains("stream")), "{done:?}");
}

/// The table of `store`, read directly.
async fn table(store: &TestStore) -> Arc<dyn LinkStore> {
    let metrics = Arc::new(kurz::telemetry::Metrics::default());
    kurz::store::open(&store.settings().store, metrics)
        .await
        .expect("open")
}

impl TwoRegions {
    /// Which tables hold `code`: alpha's, beta's.
    async fn held(&self, code: &str) -> [bool; 2] {
        let mut held = [false; 2];
        for (i, table) in self.tables.iter().enumerate() {
            held[i] = table.get(code).await.expect("read").is_some();
        }
        held
    }
}

async fn create_many(app: Arc<TestApp>, region: &'static str, n: usize) -> Vec<(String, String)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let url = format!("https://example.com/{region}/{i}");
                (app.create_code(&url).await, url)
            })
        })
        .collect();
    let mut made = Vec::new();
    for task in tasks {
        made.push(task.await.expect("create"));
    }
    made
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_mint_apart_and_each_redirects_the_other_s_links_at_once() {
    let regions = two_regions(false).await;
    let (at_alpha, at_beta) = tokio::join!(
        create_many(Arc::clone(&regions.alpha), "alpha", 150),
        create_many(Arc::clone(&regions.beta), "beta", 150),
    );
    let mut codes = HashSet::new();
    for (code, _) in at_alpha.iter().chain(&at_beta) {
        assert!(codes.insert(code.clone()), "{code} minted twice");
    }
    // Each link is written once, in the replica of the region that minted it.
    for (made, home) in [(&at_alpha, [true, false]), (&at_beta, [false, true])] {
        for (code, _) in made.iter().take(20) {
            assert_eq!(regions.held(code).await, home, "{code}");
        }
    }
    // And redirects from the other region at once: nothing replicates in this test.
    for (made, other) in [(&at_alpha, &regions.beta), (&at_beta, &regions.alpha)] {
        for (code, url) in made {
            let response = other.get(&format!("/{code}")).await;
            assert_eq!(response.status(), 302, "{code} from the other region");
            assert_eq!(response.headers()["location"], url.as_str());
        }
    }
    for app in [&regions.alpha, &regions.beta] {
        let metrics = app.metrics().await;
        assert_eq!(
            metric(&metrics, "kurz_region_remote_lookups_found_total"),
            150.0
        );
        assert_eq!(metric(&metrics, "kurz_region_remote_failures_total"), 0.0);
    }
    // Both started on empty tables at once; the permutation key was made once, in its home
    // region's table, and both regions use it: each found the other's codes' home above.
    let keys: Vec<bool> = {
        let mut held = Vec::new();
        for table in &regions.tables {
            held.push(
                table
                    .stored_secret("permutation_key")
                    .await
                    .expect("read")
                    .is_some(),
            );
        }
        held
    };
    assert_eq!(keys.iter().filter(|&&held| held).count(), 1, "{keys:?}");
    // An unknown code is still a 404 in both, after asking its home.
    for app in [&regions.alpha, &regions.beta] {
        assert_problem(app.get("/Zz9Zz9Z").await, 404).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_raced_in_two_regions_has_exactly_one_winner() {
    let regions = two_regions(false).await;
    let race = |app: Arc<TestApp>, alias: String, region: &'static str| async move {
        let url = format!("https://example.com/{region}/{alias}");
        let response = app.create(json!({ "url": url, "alias": alias })).await;
        (response.status().as_u16(), url)
    };
    let mut won = [0; 2];
    for i in 0..30 {
        let alias = format!("race-{i}");
        let (a, b) = tokio::join!(
            race(Arc::clone(&regions.alpha), alias.clone(), "alpha"),
            race(Arc::clone(&regions.beta), alias.clone(), "beta"),
        );
        let winner = match (a.0, b.0) {
            (201, 409) => a.1,
            (409, 201) => b.1,
            other => panic!("{alias}: {other:?}"),
        };
        won[usize::from(b.0 == 201)] += 1;
        // Held once, and both regions redirect to the winner's URL.
        let held = regions.held(&alias).await;
        assert_eq!(held.iter().filter(|&&h| h).count(), 1, "{alias}: {held:?}");
        for app in [&regions.alpha, &regions.beta] {
            let response = app.get(&format!("/{alias}")).await;
            assert_eq!(response.status(), 302, "{alias}");
            assert_eq!(response.headers()["location"], winner.as_str());
        }
    }
    assert_eq!(won[0] + won[1], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_region_s_table_gone_the_other_creates_and_refuses_only_claims_homed_there() {
    let regions = two_regions(false).await;
    let before = regions.alpha.create_code("https://example.com/a").await;
    let beta_code = regions.beta.create_code("https://example.com/b").await;
    regions.beta_dynamo.server.kill();

    // Generated codes are alpha's own: creating and redirecting go on.
    let after = regions.alpha.create_code("https://example.com/c").await;
    for code in [&before, &after] {
        assert_eq!(regions.alpha.get(&format!("/{code}")).await.status(), 302);
    }
    // Beta's link never reached alpha's replica (nothing replicates here): not found, not an
    // error, while its home is gone.
    assert_problem(regions.alpha.get(&format!("/{beta_code}")).await, 404).await;

    // Aliases homed in alpha are made; those homed in beta are refused, naming it.
    let (mut made, mut refused) = (0, 0);
    for i in 0..20 {
        let alias = format!("outage-{i}");
        let body = json!({ "url": "https://example.com/alias", "alias": alias });
        let response = regions.alpha.create(body).await;
        match response.status().as_u16() {
            201 => made += 1,
            503 => {
                assert!(response.headers().contains_key("retry-after"));
                let problem = assert_problem(response, 503).await;
                let detail = problem["detail"].as_str().expect("detail");
                assert!(detail.contains("region beta"), "{detail}");
                refused += 1;
            }
            other => panic!("{alias}: {other}"),
        }
    }
    assert!(made > 0 && refused > 0, "{made} made, {refused} refused");
    // Beta failed, then (three failures in a row) was not asked for a while: each refusal and
    // the lookup above is one or the other.
    let metrics = regions.alpha.metrics().await;
    let failed = metric(&metrics, "kurz_region_remote_failures_total")
        + metric(&metrics, "kurz_region_remote_skipped_total");
    assert!(failed >= f64::from(refused + 1), "{failed}");
}

/// A browser's User-Agent: its clicks count as people's, with their referrer.
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

/// Every link code in a table.
async fn link_codes(endpoint: &str, table: &str) -> HashSet<String> {
    let client = sdk_client(endpoint);
    let mut codes = HashSet::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            if text("sk").as_deref() == Some("link") {
                codes.extend(text("pk"));
            }
        }
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return codes,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_lost_costs_only_what_had_not_replicated_and_the_regions_converge_after() {
    let mut regions = two_regions(true).await;
    let replicator = regions.replicator.take().expect("replicated");
    let alpha_endpoint = regions.stores[0].endpoint.clone();
    let beta_endpoint = regions.stores[1].endpoint.clone();
    let at_beta = create_many(Arc::clone(&regions.beta), "beta", 40).await;
    let at_alpha = create_many(Arc::clone(&regions.alpha), "alpha", 20).await;
    let mut aliases = Vec::new();
    for i in 0..10 {
        let alias = format!("kept-{i}");
        let url = format!("https://example.com/kept/{i}");
        let response = regions
            .beta
            .create(json!({ "url": url, "alias": alias }))
            .await;
        assert_eq!(response.status(), 201, "{alias}");
        aliases.push((alias, url));
    }
    // Clicks on a link of each region, in both regions, flushed before the replication point.
    let clicked = [at_alpha[0].0.clone(), at_beta[0].0.clone()];
    for (app, n) in [(&regions.alpha, 7), (&regions.beta, 5)] {
        for code in &clicked {
            for _ in 0..n {
                assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
            }
        }
    }
    // Each region flushed its own, and both replicated: both regions count all 12.
    for code in &clicked {
        eventually(
            "clicks flushed and replicated",
            Duration::from_secs(30),
            || async {
                regions.alpha.stats_when(code, 12).await["total_clicks"] == 12
                    && regions.beta.stats_when(code, 12).await["total_clicks"] == 12
            },
        )
        .await;
    }
    // The replication point: everything so far is in both tables.
    replicator.settle(Duration::from_secs(30)).await;
    // Then a partition, and links made in beta meanwhile, which never reach alpha.
    replicator.pause().await;
    let unreplicated = create_many(Arc::clone(&regions.beta), "beta-late", 5).await;
    let (beta_port, table) = (
        regions.beta_dynamo.server.port,
        regions.stores[0].table.clone(),
    );
    regions.beta_dynamo.server.kill();

    // Alpha redirects every link acknowledged before the replication point, from its replica.
    // (HEAD: the same answer, and no click, so the click totals below stay those sent.)
    for (code, url) in at_beta.iter().chain(&at_alpha).chain(&aliases) {
        let response = regions.alpha.head(&format!("/{code}")).await;
        assert_eq!(response.status(), 302, "{code}");
        assert_eq!(response.headers()["location"], url.as_str());
    }
    // What was made after it is lost with the region: that is the RPO, the partition's length.
    for (code, _) in &unreplicated {
        assert_problem(regions.alpha.get(&format!("/{code}")).await, 404).await;
    }
    // And alpha goes on creating.
    let during = create_many(Arc::clone(&regions.alpha), "alpha-during", 10).await;
    // A new alpha instance starts while beta is gone: the secrets homed in beta (the
    // permutation key is, by the hash of its name) are those alpha's replica holds.
    let started = spawn_app_on(&regions.stores[0], |s| {
        in_region(s, "alpha", 0, "beta", 1, &beta_endpoint);
    })
    .await;
    started
        .create_code("https://example.com/started-during")
        .await;
    for (code, url) in at_beta.iter().take(5) {
        let response = started.head(&format!("/{code}")).await;
        assert_eq!(response.status(), 302, "{code} from the new instance");
        assert_eq!(response.headers()["location"], url.as_str());
    }
    started.stop().await;

    // Beta comes back: an empty table at the same address, filled from alpha (as global tables
    // fill a new replica), then both replicate again.
    let restored = DynamoLocal::start_on(beta_port);
    let beta_store = regions.stores[0]
        .replica_at(restored.endpoint.clone())
        .await;
    enable_stream(&beta_store, 1).await;
    replicator.backfill(0).await;
    replicator.resume();
    let beta = Arc::new(
        spawn_app_on(&beta_store, |s| {
            in_region(s, "beta", 1, "alpha", 0, &alpha_endpoint);
        })
        .await,
    );
    let after = create_many(Arc::clone(&beta), "beta-after", 10).await;
    // The codes of the links lost with beta are never handed out again: beta's counter moved
    // past the ids it had leased, which it told alpha of when it leased them.
    for (code, _) in &after {
        assert!(
            !unreplicated.iter().any(|(lost, _)| lost == code),
            "{code}, a code of a link lost with beta, was handed out again"
        );
    }
    replicator.settle(Duration::from_secs(30)).await;
    let alpha_codes = link_codes(&alpha_endpoint, &table).await;
    let beta_codes = link_codes(&restored.endpoint, &table).await;
    assert_eq!(
        alpha_codes, beta_codes,
        "the two tables hold the same links"
    );
    for (code, url) in at_beta.iter().chain(&during).chain(&after).chain(&aliases) {
        assert!(alpha_codes.contains(code), "{code} in both");
        let response = beta.head(&format!("/{code}")).await;
        assert_eq!(response.status(), 302, "{code} at beta");
        assert_eq!(response.headers()["location"], url.as_str());
    }
    // Every click counted before the replication point is in both regions' totals.
    for code in &clicked {
        for app in [&regions.alpha, &beta] {
            let stats = app.stats_when(code, 12).await;
            assert_eq!(stats["total_clicks"], 12, "{code}: {stats}");
        }
    }
    assert!(replicator.applied() > 0);
    drop(restored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_counted_in_both_regions_are_summed_and_neither_overwrites_the_other() {
    let regions = two_regions(true).await;
    let replicator = regions.replicator.as_ref().expect("replicated");
    let url = "https://example.com/clicked";
    let code = regions.alpha.create_code(url).await;
    replicator.settle(Duration::from_secs(30)).await;
    let clicks = |app: Arc<TestApp>, n: usize, code: String| async move {
        for _ in 0..n {
            let response = app
                .client
                .get(app.url(&format!("/{code}")))
                .header("Referer", "https://news.example/")
                .header("User-Agent", BROWSER)
                .send()
                .await
                .expect("redirect");
            assert_eq!(response.status(), 302);
        }
    };
    tokio::join!(
        clicks(Arc::clone(&regions.alpha), 30, code.clone()),
        clicks(Arc::clone(&regions.beta), 20, code.clone()),
    );
    // Each region flushes its own clicks to items of its own; once replicated, both read 50.
    for app in [&regions.alpha, &regions.beta] {
        eventually(
            "both regions' clicks in this region's stats",
            Duration::from_secs(30),
            || {
                let app = Arc::clone(app);
                let code = code.clone();
                async move {
                    let stats = app.stats_when(&code, 50).await;
                    stats["total_clicks"] == 50 && stats["daily"][0]["clicks"] == 50
                }
            },
        )
        .await;
        let period = app
            .admin_get(&format!("/api/v1/links/{code}/stats?breakdown=referrer"))
            .await;
        let period: serde_json::Value = period.json().await.expect("json");
        assert_eq!(period["clicks"], 50, "{period}");
        assert_eq!(period["breakdown"]["referrer"][0]["clicks"], 50, "{period}");
    }
    // The link's own item was written by its home region only: no region added its clicks
    // to it.
    for store in &regions.stores {
        let item = sdk_client(&store.endpoint)
            .get_item()
            .table_name(&store.table)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(code.clone()),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("link".into()),
            )
            .consistent_read(true)
            .send()
            .await
            .expect("read the link's item");
        let item = item.item().expect("the link is in both tables");
        assert!(!item.contains_key("clicks"), "{item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_made_in_another_region_are_made_in_the_link_s_home() {
    let regions = two_regions(false).await;
    let url = "https://example.com/edited";
    let code = regions.beta.create_code(url).await;
    // Alpha reads beta's version (its replica has none: nothing replicates here), edits it
    // there, and beta redirects by the edit at once.
    let response = regions
        .alpha
        .admin_get(&format!("/api/v1/links/{code}"))
        .await;
    assert_eq!(response.status(), 200);
    let patched = regions
        .alpha
        .admin_patch(&code, &json!({ "disabled": true, "reason": "abuse" }))
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(regions.held(&code).await, [false, true]);
    assert_problem(regions.beta.get(&format!("/{code}")).await, 410).await;
    // And a delete from alpha removes it from beta's table, whose stream tells beta's cache.
    assert_eq!(regions.alpha.admin_delete(&code).await.status(), 204);
    assert_eq!(regions.held(&code).await, [false, false]);
    eventually(
        "beta lets go of the deleted link",
        Duration::from_secs(20),
        || async { regions.beta.get(&format!("/{code}")).await.status() == 404 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_edit_in_one_region_reaches_the_other_region_s_caches_once_replicated() {
    let regions = two_regions(true).await;
    let replicator = regions.replicator.as_ref().expect("replicated");
    // Beta's region has two more instances sharing a Redis: one of the three reads beta's
    // stream (its lease), and Redis tells the others. (The first beta instance has no Redis:
    // it reads the stream for its own cache.)
    let redis = RedisServer::shared();
    let prefix = format!("{}:", unique_name("regions"));
    let alpha_endpoint = regions.stores[0].endpoint.clone();
    let mut shared = Vec::new();
    for _ in 0..2 {
        let (url, prefix, endpoint) = (redis.url.clone(), prefix.clone(), alpha_endpoint.clone());
        shared.push(
            spawn_app_on(&regions.stores[1], move |s| {
                in_region(s, "beta", 1, "alpha", 0, &endpoint);
                s.cache.redis.url = Some(Secret::new(url));
                s.cache.redis.key_prefix = prefix;
            })
            .await,
        );
    }
    let beta: Vec<&TestApp> = std::iter::once(&*regions.beta).chain(&shared).collect();
    let readers = || async {
        let mut readers = 0.0;
        for app in &shared {
            readers += metric(&app.metrics().await, "kurz_region_stream_reading");
        }
        readers
    };
    eventually(
        "one shared instance reads beta's stream",
        Duration::from_secs(30),
        || async { readers().await == 1.0 },
    )
    .await;

    let deleted = regions.alpha.create_code("https://example.com/d").await;
    let edited = regions.alpha.create_code("https://example.com/e").await;
    replicator.settle(Duration::from_secs(30)).await;
    // Every beta instance caches both, as they are.
    for app in &beta {
        for code in [&deleted, &edited] {
            assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        }
    }
    let changed_at = std::time::Instant::now();
    assert_eq!(regions.alpha.admin_delete(&deleted).await.status(), 204);
    let patch = json!({ "url": "https://example.com/e2" });
    assert_eq!(
        regions.alpha.admin_patch(&edited, &patch).await.status(),
        200
    );
    // No clock moves here: the caches let go because beta's stream showed the changes.
    for app in &beta {
        eventually(
            "beta's caches let go of the deleted link",
            Duration::from_secs(20),
            || async { app.get(&format!("/{deleted}")).await.status() == 404 },
        )
        .await;
        eventually(
            "beta's caches take the edit",
            Duration::from_secs(20),
            || async {
                let response = app.get(&format!("/{edited}")).await;
                response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    == Some("https://example.com/e2")
            },
        )
        .await;
    }
    let bound = changed_at.elapsed();
    assert!(
        metric(
            &regions.beta.metrics().await,
            "kurz_region_stream_invalidations_total"
        ) >= 2.0
    );
    eprintln!(
        "a change in alpha reached every beta cache within {bound:?} (replication lag {REPLICATION_LAG:?})"
    );

    // The shared instance that reads the stream stops: once its heartbeat has ended, the other
    // reads the shard, and a change in alpha still reaches its cache.
    let mut shared = shared;
    let mut reading = Vec::new();
    for app in &shared {
        reading.push(metric(&app.metrics().await, "kurz_region_stream_reading"));
    }
    let reader = reading
        .iter()
        .position(|shards| *shards == 1.0)
        .expect("one shared instance reads beta's stream");
    shared.remove(reader).stop().await;
    let other = &shared[0];
    eventually(
        "the other shared instance reads beta's stream",
        Duration::from_secs(30),
        || async { metric(&other.metrics().await, "kurz_region_stream_reading") == 1.0 },
    )
    .await;
    let later = regions.alpha.create_code("https://example.com/later").await;
    replicator.settle(Duration::from_secs(30)).await;
    assert_eq!(other.get(&format!("/{later}")).await.status(), 302);
    assert_eq!(regions.alpha.admin_delete(&later).await.status(), 204);
    eventually(
        "the remaining shared instance lets go of a link deleted in alpha",
        Duration::from_secs(20),
        || async { other.get(&format!("/{later}")).await.status() == 404 },
    )
    .await;
    for app in shared {
        app.stop().await;
    }
}
