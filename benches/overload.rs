//! kurz when DynamoDB cannot keep up, through the harness's chaos proxy in front of DynamoDB
//! Local, with production's admission control and timeouts:
//!
//! 1. Overload: the proxy lets one call through every 5 ms (about 200 calls a second); creates
//!    at 32, 256 and 1,024 connections, then 1,024 again with admission control off (a fixed
//!    limit of 1,024 that never sheds: the behaviour before it). Goodput, refusals, and how long any request waited.
//! 2. Slow table: 200 ms added to every call under steady mixed load (cached redirects and
//!    creates); cached-redirect latency before and during.
//! 3. Recovery: the table silent for a while under load, then back; how long until creates
//!    are back to their rate before, and whether every click sent was counted.
//!
//! Run: `cargo bench --bench overload` (needs DynamoDB Local: `scripts/test.sh` installs it).
//! Options through the environment: BENCH_SECONDS (each overload step, default 10),
//! BENCH_FAULT_SECONDS (the slow and silent phases, default 30), BENCH_ONLY (`overload`,
//! `slow` or `recovery`: that part alone).

#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{
    Backend, ChaosProxy, DynamoLocal, Fault, TestApp, TestStore, client, metric,
    production_store_timeouts, spawn_app_on,
};
use kurz::config::Settings;
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request as the client saw it.
#[derive(Clone, Copy)]
struct Sample {
    /// Since the start of the run.
    at: Duration,
    latency: Duration,
    status: u16,
    retry_after: bool,
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    /// A redirect of a code chosen by the worker.
    Redirect,
}

/// `conns` clients, each with its own connection, sending `op` back to back until `stop`.
async fn load(
    app: &TestApp,
    conns: usize,
    op: Op,
    codes: Arc<Vec<String>>,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let workers = (0..conns).map(|w| {
        let (base, codes, stop) = (app.base.clone(), Arc::clone(&codes), Arc::clone(&stop));
        tokio::spawn(async move {
            let http = client();
            let mut samples = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sent = Instant::now();
                let request = match op {
                    Op::Create => http
                        .post(format!("{base}/api/v1/links"))
                        .json(&json!({ "url": format!("https://example.com/o/{w}/{n}") })),
                    Op::Redirect => http.get(format!("{base}/{}", codes[(w + n) % codes.len()])),
                };
                let Ok(response) = request.send().await else {
                    samples.push(Sample {
                        at: sent - origin,
                        latency: sent.elapsed(),
                        status: 0,
                        retry_after: false,
                    });
                    continue;
                };
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let _ = response.bytes().await;
                samples.push(Sample {
                    at: sent - origin,
                    latency: sent.elapsed(),
                    status,
                    retry_after,
                });
            }
            samples
        })
    });
    let mut all = Vec::new();
    for worker in workers.collect::<Vec<_>>() {
        all.extend(worker.await.expect("worker"));
    }
    all
}

/// `redirects` connections redirecting `codes` and `creates` connections creating, together.
async fn mixed(
    app: &TestApp,
    redirects: usize,
    creates: usize,
    codes: &Arc<Vec<String>>,
    origin: Instant,
    stop: &Arc<AtomicBool>,
) -> (Vec<Sample>, Vec<Sample>) {
    let redirect = load(
        app,
        redirects,
        Op::Redirect,
        Arc::clone(codes),
        origin,
        Arc::clone(stop),
    );
    let create = load(
        app,
        creates,
        Op::Create,
        Arc::default(),
        origin,
        Arc::clone(stop),
    );
    tokio::join!(redirect, create)
}

fn percentile(samples: &[&Sample], p: f64) -> Duration {
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    latencies
        .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

async fn run_for<T>(seconds: u64, work: impl Future<Output = T>, stop: &AtomicBool) -> T {
    let (result, ()) = tokio::join!(work, async {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
    });
    result
}

fn production(s: &mut Settings) {
    production_store_timeouts(s);
    s.log.level = "error".into();
}

/// A proxy, a fresh table behind it, an instance with production's settings, and `links`
/// links created and redirected once (so they are cached).
async fn proxied_app(
    dynamo: &DynamoLocal,
    links: usize,
) -> (ChaosProxy, TestApp, Arc<Vec<String>>) {
    let proxy = ChaosProxy::start(&dynamo.endpoint).await;
    let store = TestStore::with_endpoint(Backend::Dynamodb, proxy.url()).await;
    let app = spawn_app_on(&store, production).await;
    let mut codes = Vec::new();
    for i in 0..links {
        let code = app
            .create_code(&format!("https://example.com/hot/{i}"))
            .await;
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
        codes.push(code);
    }
    (proxy, app, Arc::new(codes))
}

async fn overload(dynamo: &DynamoLocal, seconds: u64) {
    println!("\n## Overload: the table takes one call every 5 ms; creates for {seconds} s each\n");
    println!(
        "| connections | admission | creates/s (201) | vs 32 conns | refused | refusals 503/429 + Retry-After | refusal p50 / p99 ms | slowest request ms | limit after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut at_32 = None;
    for (conns, admission) in [(32, true), (256, true), (1024, true), (1024, false)] {
        // A fresh table and instance per step, so one step's backlog does not meet the next.
        let proxy = ChaosProxy::start(&dynamo.endpoint).await;
        let store = TestStore::with_endpoint(Backend::Dynamodb, proxy.url()).await;
        let app = spawn_app_on(&store, |s| {
            production(s);
            if !admission {
                // A fixed limit of 1,024 that never sheds: what kurz did before admission control.
                let a = &mut s.store.dynamodb.admission;
                a.initial_limit = a.max_limit;
                a.min_limit = a.max_limit;
                a.queue_timeout = s.store.timeout;
            }
        })
        .await;
        proxy.set(Fault::Cap(Duration::from_millis(5)));
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = run_for(
            seconds,
            load(
                &app,
                conns,
                Op::Create,
                Arc::default(),
                origin,
                Arc::clone(&stop),
            ),
            &stop,
        )
        .await;
        let limit = metric(&app.metrics().await, "kurz_store_concurrency_limit");
        proxy.set(Fault::None);
        let elapsed = origin.elapsed().as_secs_f64();
        let created = samples.iter().filter(|s| s.status == 201).count();
        let refused: Vec<&Sample> = samples.iter().filter(|s| s.status != 201).collect();
        let graceful = refused
            .iter()
            .filter(|s| matches!(s.status, 503 | 429) && s.retry_after)
            .count();
        let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
        let rate = created as f64 / elapsed;
        let base = *at_32.get_or_insert(rate);
        println!(
            "| {conns} | {} | {rate:.0} | {:.2} | {} | {graceful} of {} | {} / {} | {} | {limit:.0} |",
            if admission { "on" } else { "off (fixed 1,024)" },
            rate / base,
            refused.len(),
            refused.len(),
            ms(percentile(&refused, 0.5)),
            ms(percentile(&refused, 0.99)),
            ms(slowest),
        );
        app.stop().await;
    }
}

/// Cached redirects and creates at a steady rate while the table is fine, then slow.
async fn slow_table(dynamo: &DynamoLocal, seconds: u64) {
    let (proxy, app, codes) = proxied_app(dynamo, 20).await;
    println!(
        "\n## Slow table: 200 ms added to every call for {seconds} s; 16 connections of cached redirects, 4 of creates\n"
    );
    println!(
        "| phase | redirects/s | redirect p50 ms | redirect p99 ms | creates/s | create p99 ms | non-2xx/3xx | most calls in flight |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut p99_before = Duration::ZERO;
    for (phase, fault) in [
        ("before", Fault::None),
        ("200 ms slower", Fault::Delay(Duration::from_millis(200))),
    ] {
        proxy.set(fault);
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let most_in_flight = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let watch = {
            let (base, stop, most) = (
                app.base.clone(),
                Arc::clone(&stop),
                Arc::clone(&most_in_flight),
            );
            tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = http.get(format!("{base}/metrics")).send().await
                        && let Ok(text) = r.text().await
                    {
                        let now = metric(&text, "kurz_store_calls_in_flight") as u64;
                        most.fetch_max(now, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let (redirects, creates) =
            run_for(seconds, mixed(&app, 16, 4, &codes, origin, &stop), &stop).await;
        let _ = watch.await;
        let elapsed = origin.elapsed().as_secs_f64();
        let redirects: Vec<&Sample> = redirects.iter().collect();
        let creates: Vec<&Sample> = creates.iter().collect();
        let bad = redirects
            .iter()
            .chain(&creates)
            .filter(|s| !(200..400).contains(&s.status))
            .count();
        let p99 = percentile(&redirects, 0.99);
        if p99_before.is_zero() {
            p99_before = p99;
        }
        println!(
            "| {phase} | {:.0} | {} | {} (x{:.2}) | {:.1} | {} | {bad} | {} |",
            redirects.len() as f64 / elapsed,
            ms(percentile(&redirects, 0.5)),
            ms(p99),
            p99.as_secs_f64() / p99_before.as_secs_f64(),
            creates.iter().filter(|s| s.status == 201).count() as f64 / elapsed,
            ms(percentile(&creates, 0.99)),
            most_in_flight.load(Ordering::Relaxed),
        );
    }
    proxy.set(Fault::None);
    app.stop().await;
}

/// Creates and clicks under load; the table silent for `seconds`, then back.
async fn recovery(dynamo: &DynamoLocal, seconds: u64) {
    let (proxy, app, codes) = proxied_app(dynamo, 20).await;
    // Each link was clicked once when it was cached.
    let warm_clicks = codes.len() as u64;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let before = 10;
    let after = 20;
    let script = {
        let proxy = &proxy;
        async move {
            tokio::time::sleep(Duration::from_secs(before)).await;
            proxy.set(Fault::Silent);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            proxy.set(Fault::None);
        }
    };
    let ((redirects, creates), ()) = run_for(
        before + seconds + after,
        async { tokio::join!(mixed(&app, 8, 8, &codes, origin, &stop), script) },
        &stop,
    )
    .await;
    let back_at = Duration::from_secs(before + seconds);
    let per_second = |from: u64| {
        creates
            .iter()
            .filter(|s| s.status == 201 && s.at.as_secs() == from)
            .count()
    };
    let rate_before = (1..before).map(per_second).sum::<usize>() as f64 / (before - 1) as f64;
    let recovered_after = (back_at.as_secs()..back_at.as_secs() + after)
        .find(|&second| per_second(second) as f64 >= 0.9 * rate_before)
        .map(|second| second - back_at.as_secs() + 1);
    let clicks_sent = warm_clicks + redirects.iter().filter(|s| s.status == 302).count() as u64;
    // Clicks are flushed asynchronously, and the flusher may still be backing off.
    let deadline = Instant::now() + Duration::from_secs(60);
    let counted = loop {
        let mut counted = 0;
        for code in codes.iter() {
            let response = app.admin_get(&format!("/api/v1/links/{code}/stats")).await;
            let stats: serde_json::Value = response.json().await.unwrap_or_default();
            counted += stats["total_clicks"].as_u64().unwrap_or(0);
        }
        if counted == clicks_sent || Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let silent_creates: Vec<&Sample> = creates
        .iter()
        .filter(|s| s.at >= Duration::from_secs(before) && s.at < back_at)
        .collect();
    println!(
        "\n## Recovery: the table silent for {seconds} s under load (8 connections of creates, 8 of cached redirects)\n"
    );
    println!(
        "| creates/s before | creates while silent: 201 / 503 / other | slowest answer while silent ms | back to 90% of the rate within | clicks sent | clicks counted | redirects that failed |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {rate_before:.0} | {} / {} / {} | {} | {} | {clicks_sent} | {counted} | {} |",
        silent_creates.iter().filter(|s| s.status == 201).count(),
        silent_creates.iter().filter(|s| s.status == 503).count(),
        silent_creates
            .iter()
            .filter(|s| !matches!(s.status, 201 | 503))
            .count(),
        ms(silent_creates
            .iter()
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()),
        recovered_after.map_or("not within 20 s".to_owned(), |s| format!("{s} s")),
        redirects.iter().filter(|s| s.status != 302).count(),
    );
    app.stop().await;
}

#[tokio::main]
async fn main() {
    let seconds = env_or("BENCH_SECONDS", 10);
    let fault_seconds = env_or("BENCH_FAULT_SECONDS", 30);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    let dynamo = DynamoLocal::start_warm().await;
    if run("overload") {
        overload(&dynamo, seconds).await;
    }
    if run("slow") {
        slow_table(&dynamo, fault_seconds).await;
    }
    if run("recovery") {
        recovery(&dynamo, fault_seconds).await;
    }
}
