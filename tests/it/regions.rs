//! Two regions, active-active, each with its own replica of the table (its own DynamoDB Local)
//! and its own instance: codes minted in both at once are never the same, an alias raced in
//! both has one winner, a link made in one region redirects in the other at once (before any
//! replication: the other region asks the code's home), and while one region's table is gone
//! the other keeps creating and redirecting, refusing only the claims homed in the lost one.
//! These tests run with no replication between the two tables, so every cross-region answer
//! here came from the home-region path, not from a replica.

use std::collections::HashSet;
use std::sync::Arc;

use crate::harness::{
    Backend, DynamoLocal, TestApp, TestStore, assert_problem, code_of, metric, spawn_app_on,
};
use kurz::config::{PeerRegion, RegionSettings, Settings};
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
    };
    // Small blocks: both regions lease from their counters many times.
    s.ids.block_size = 20;
}

struct TwoRegions {
    alpha: Arc<TestApp>,
    beta: Arc<TestApp>,
    tables: [Arc<dyn LinkStore>; 2],
    beta_dynamo: DynamoLocal,
    _stores: [TestStore; 2],
}

/// Region `alpha` (0) on the shared DynamoDB Local, `beta` (1) on one of its own, both
/// started at once on empty tables (so both want to make the permutation key at the same
/// moment).
async fn two_regions() -> TwoRegions {
    let alpha_store = TestStore::new(Backend::Dynamodb).await;
    let beta_dynamo = DynamoLocal::start_warm().await;
    let beta_store = alpha_store.replica_at(beta_dynamo.endpoint.clone()).await;
    let (alpha, beta) = tokio::join!(
        spawn_app_on(&alpha_store, |s| {
            in_region(s, "alpha", 0, "beta", 1, &beta_store.endpoint);
        }),
        spawn_app_on(&beta_store, |s| {
            in_region(s, "beta", 1, "alpha", 0, &alpha_store.endpoint);
        }),
    );
    let metrics = Arc::new(kurz::telemetry::Metrics::default());
    let table = |store: &TestStore| {
        let settings = store.settings().store;
        let metrics = Arc::clone(&metrics);
        async move { kurz::store::open(&settings, metrics).await.expect("open") }
    };
    let tables = [table(&alpha_store).await, table(&beta_store).await];
    TwoRegions {
        alpha: Arc::new(alpha),
        beta: Arc::new(beta),
        tables,
        beta_dynamo,
        _stores: [alpha_store, beta_store],
    }
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
                (code_of(app.create(json!({ "url": url })).await).await, url)
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
    let regions = two_regions().await;
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
    let regions = two_regions().await;
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
    let regions = two_regions().await;
    let before = code_of(
        regions
            .alpha
            .create(json!({ "url": "https://example.com/a" }))
            .await,
    )
    .await;
    let beta_code = code_of(
        regions
            .beta
            .create(json!({ "url": "https://example.com/b" }))
            .await,
    )
    .await;
    regions.beta_dynamo.server.kill();

    // Generated codes are alpha's own: creating and redirecting go on.
    let after = code_of(
        regions
            .alpha
            .create(json!({ "url": "https://example.com/c" }))
            .await,
    )
    .await;
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
    let metrics = regions.alpha.metrics().await;
    assert!(metric(&metrics, "kurz_region_remote_failures_total") >= f64::from(refused + 1));
}
