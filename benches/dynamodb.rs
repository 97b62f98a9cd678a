//! How much kurz adds on top of DynamoDB: creates and uncached redirects per second through
//! kurz's HTTP API on DynamoDB Local, beside raw SDK PutItem / GetItem against the same DynamoDB
//! Local in the same run, at the same concurrency. Printed as ratios.
//!
//! Run: `cargo bench --bench dynamodb` (needs DynamoDB Local: `scripts/test.sh` installs it).
//! Options through the environment: BENCH_OPS (default 4000), BENCH_CONCURRENCY (default 32).

#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use harness::{Backend, DynamoLocal, TestStore, spawn_app_on};
use tokio::sync::Semaphore;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `ops` calls of `op` with at most `concurrency` in flight; returns calls per second.
async fn rate<F, Fut>(ops: usize, concurrency: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(ops);
    for i in 0..ops {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore");
        let fut = op(i);
        tasks.push(tokio::spawn(async move {
            fut.await;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("op");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

fn link_item(i: usize) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".into(), AttributeValue::S(format!("raw{i:07}"))),
        ("sk".into(), AttributeValue::S("link".into())),
        (
            "url".into(),
            AttributeValue::S(format!("https://example.com/raw/{i}")),
        ),
        ("created_at_ms".into(), AttributeValue::N("1".into())),
        ("redirect_status".into(), AttributeValue::N("302".into())),
    ])
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; this benchmark has no options of its own.
    let ops = env_or("BENCH_OPS", 4_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 32);
    let dynamo = DynamoLocal::start();
    let store = TestStore::with_endpoint(Backend::Dynamodb, dynamo.endpoint.clone()).await;
    // L1 off: every redirect reads DynamoDB, which is what this compares.
    let app = Arc::new(
        spawn_app_on(&store, |s| {
            s.cache.local.max_bytes = 0;
            s.store.timeout = std::time::Duration::from_secs(10);
        })
        .await,
    );
    let raw = harness::sdk_client(&dynamo.endpoint);
    let table = store.table.clone();

    // Warm up both paths (connections, JIT of DynamoDB Local).
    let _ = rate(500, concurrency, |i| {
        let (app, raw, table) = (Arc::clone(&app), raw.clone(), table.clone());
        async move {
            let _ = app
                .create(serde_json::json!({ "url": format!("https://example.com/warm/{i}") }))
                .await;
            let _ = raw
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S("warm".into()))
                .key("sk", AttributeValue::S("link".into()))
                .send()
                .await;
        }
    })
    .await;

    let codes = Arc::new(std::sync::Mutex::new(Vec::with_capacity(ops)));
    let kurz_creates = rate(ops, concurrency, |i| {
        let (app, codes) = (Arc::clone(&app), Arc::clone(&codes));
        async move {
            let code = app
                .create_code(&format!("https://example.com/bench/{i}"))
                .await;
            codes.lock().expect("codes").push(code);
        }
    })
    .await;
    let raw_puts = rate(ops, concurrency, |i| {
        let (raw, table) = (raw.clone(), table.clone());
        async move {
            raw.put_item()
                .table_name(table)
                .set_item(Some(link_item(i)))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
                .expect("PutItem");
        }
    })
    .await;
    let codes: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *codes.lock().expect("codes")));
    let kurz_redirects = rate(ops, concurrency, |i| {
        let (app, codes) = (Arc::clone(&app), Arc::clone(&codes));
        async move {
            let code = &codes[(i * 7919) % codes.len()];
            let response = app.get(&format!("/{code}")).await;
            assert_eq!(response.status(), 302);
        }
    })
    .await;
    let raw_gets = rate(ops, concurrency, |i| {
        let (raw, table) = (raw.clone(), table.clone());
        async move {
            let out = raw
                .get_item()
                .table_name(table)
                .key(
                    "pk",
                    AttributeValue::S(format!("raw{:07}", (i * 7919) % ops)),
                )
                .key("sk", AttributeValue::S("link".into()))
                .consistent_read(true)
                .send()
                .await
                .expect("GetItem");
            assert!(out.item().is_some());
        }
    })
    .await;

    println!("kurz on DynamoDB Local, {ops} operations each, {concurrency} in flight");
    println!("| path | kurz (HTTP) ops/s | raw SDK ops/s | kurz / raw |");
    println!("|---|---|---|---|");
    println!(
        "| create vs PutItem | {kurz_creates:.0} | {raw_puts:.0} | {:.2} |",
        kurz_creates / raw_puts
    );
    println!(
        "| uncached redirect vs GetItem | {kurz_redirects:.0} | {raw_gets:.0} | {:.2} |",
        kurz_redirects / raw_gets
    );
    Arc::into_inner(app).expect("sole owner").stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}
