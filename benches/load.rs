//! The load benchmark: kurz's redirect path against the machine's ceiling, measured with `wrk`.
//!
//! In one run it starts (a) a minimal actix-web server answering `GET /{code}` with a fixed 302
//! (this same program, re-executed with `--ceiling-server`) and (b) the real `kurz` binary on its
//! embedded default with 100,000 links created through the API, then drives them alternately
//! with `wrk` and a Lua script requesting random existing codes over keep-alive connections, at
//! 64 and 256 connections. It prints requests/s, p50 and p99 of each and the ratio kurz /
//! ceiling, durable creates per second through the API (32 connections; on an empty store and
//! on the one holding those links), redirects per second served from each cache tier (L1,
//! Redis with L1 off, the store with both off), and hot sets of 10,000, 100,000 and 1,000,000
//! links all cached in L1 before they are measured against the ceiling, with the resident
//! memory each cached link costs the whole process.
//!
//! Run: `cargo bench --bench load` (needs `wrk` and `redis-server`: `apt-get install wrk
//! redis-server`). `LOAD_SECONDS` sets each wrk run's length (default 10); `LOAD_ONLY=ceiling`
//! stops after the comparison with the ceiling (a quick check of the redirect path);
//! `LOAD_QUERY=utm_source=x` adds that query string to every redirect of that comparison
//! (kurz forwards it to the destination); `LOAD_ONLY=traces` measures what traces cost
//! redirects instead (off, 1% and 100% sampled); `LOAD_ONLY=creates` durable creates against
//! the disk's fsync rate and a raw redb insert loop; `LOAD_ONLY=tiers` (as root) the cache
//! tiers with Redis and DynamoDB Local on hosts of their own (the local fleet).

mod common;
#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kurz::store::{EmbeddedStore, LinkStore};

use common::{URL_BYTES, cpu_of_stat, prefill};

use harness::{KurzProcess, ServerProcess};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--tiers-client") {
        let seconds = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .expect("--tiers-client SECONDS STATE");
        let state = PathBuf::from(args.get(i + 2).expect("--tiers-client SECONDS STATE"));
        println!("{}", tiers_client(seconds, &state));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--ceiling-server") {
        let port: u16 = args
            .get(i + 1)
            .and_then(|p| p.parse().ok())
            .expect("--ceiling-server PORT");
        ceiling_server(port);
        return;
    }
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    assert!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is missing: apt-get install wrk"
    );
    let work = tempfile::tempdir().expect("tempdir");
    if std::env::var("LOAD_ONLY").as_deref() == Ok("analytics") {
        println!("{}", analytics(work.path(), seconds));
        return;
    }
    if std::env::var("LOAD_ONLY").as_deref() == Ok("traces") {
        println!("{}", traces(work.path(), seconds));
        return;
    }
    if std::env::var("LOAD_ONLY").as_deref() == Ok("tiers") {
        println!("{}", tiers(work.path(), seconds));
        return;
    }
    if std::env::var("LOAD_ONLY").as_deref() == Ok("creates") {
        println!("{}", creates(work.path(), seconds));
        return;
    }
    let mut report = String::new();
    let _ = writeln!(
        report,
        "kurz load benchmark, {} cores, wrk runs of {seconds} s\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // kurz on its embedded default, 100,000 links created through the API.
    let data = work.path().join("kurz.redb");
    let kurz = KurzProcess::start(&data, &[]);
    let started = Instant::now();
    let codes = create_links(&kurz.base, 100_000, 32);
    let _ = writeln!(
        report,
        "created 100,000 links through the API (32 concurrent HTTP/1.1 clients in this process): {:.0}/s\n",
        100_000.0 / started.elapsed().as_secs_f64()
    );
    let redirects = work.path().join("redirect.lua");
    // With LOAD_QUERY, every redirect carries that query string, which kurz forwards.
    let query = std::env::var("LOAD_QUERY").ok().filter(|q| !q.is_empty());
    write_redirect_script(&redirects, &codes, query.as_deref());
    if let Some(query) = &query {
        let _ = writeln!(report, "every redirect asks for /{{code}}?{query}\n");
    }
    let ceiling = ceiling();

    let _ = writeln!(
        report,
        "| connections | server | requests/s | p50 | p99 |\n|---|---|---|---|---|"
    );
    let mut ratios = Vec::new();
    for connections in [64, 256] {
        let (mut k, mut c) = (Vec::new(), Vec::new());
        // Alternate the order so that drift in the machine hits both alike.
        for round in 0..2 {
            if round == 0 {
                c.push(wrk(&ceiling.base(), &redirects, connections, seconds));
                k.push(wrk(&kurz.base, &redirects, connections, seconds));
            } else {
                k.push(wrk(&kurz.base, &redirects, connections, seconds));
                c.push(wrk(&ceiling.base(), &redirects, connections, seconds));
            }
        }
        let (k, c) = (Wrk::mean(&k), Wrk::mean(&c));
        for (name, r) in [("ceiling (fixed 302)", &c), ("kurz (L1)", &k)] {
            let _ = writeln!(
                report,
                "| {connections} | {name} | {:.0} | {:.2} ms | {:.2} ms |",
                r.rps, r.p50_ms, r.p99_ms
            );
        }
        ratios.push((connections, k.rps / c.rps, k.p99_ms / c.p99_ms));
    }
    let _ = writeln!(
        report,
        "\n| connections | kurz / ceiling requests/s | kurz / ceiling p99 |\n|---|---|---|"
    );
    for (connections, rps, p99) in ratios {
        let _ = writeln!(report, "| {connections} | {rps:.2} | {p99:.2} |");
    }
    drop(ceiling);
    if std::env::var("LOAD_ONLY").as_deref() == Ok("ceiling") {
        println!("{report}");
        kurz.stop();
        return;
    }

    // Durable creates through the API, 32 connections: on an empty store, then on this one.
    let create = create_script(work.path());
    let empty = KurzProcess::start(&work.path().join("empty.redb"), &[]);
    let on_empty = wrk_script(&empty.base, &create, 32, seconds);
    empty.stop();
    let _ = writeln!(
        report,
        "\ndurable creates on an empty store (32 connections): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx: {}",
        on_empty.rps, on_empty.p50_ms, on_empty.p99_ms, on_empty.errors
    );
    let creates = wrk_script(&kurz.base, &create, 32, seconds);
    let _ = writeln!(
        report,
        "durable creates on the store holding 100,000 links (POST /api/v1/links, 32 connections, every 201 committed to disk): {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx: {}",
        creates.rps, creates.p50_ms, creates.p99_ms, creates.errors
    );
    let rss = harness::rss_kib(&kurz.child.id().to_string());
    let _ = writeln!(
        report,
        "kurz resident size after all of the above: {} MiB",
        rss / 1024
    );
    kurz.stop();

    // Redirects per cache tier, on the same 100,000 links.
    let redis = harness::RedisServer::start_on(harness::free_port());
    let tiers: [(&str, Vec<(&str, String)>); 3] = [
        ("L1 (in-process)", vec![]),
        (
            "Redis (L1 off)",
            vec![
                ("KURZ__CACHE__LOCAL__MAX_BYTES", "0".into()),
                ("KURZ__CACHE__REDIS__URL", redis.url.clone()),
            ],
        ),
        (
            "store (L1 and Redis off)",
            vec![("KURZ__CACHE__LOCAL__MAX_BYTES", "0".into())],
        ),
    ];
    let _ = writeln!(
        report,
        "\n| redirects served from | requests/s | p50 | p99 |\n|---|---|---|---|"
    );
    for (tier, env) in tiers {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = KurzProcess::start(&data, &env);
        // Warm the tier (fills Redis in the Redis case), then measure.
        wrk(&server.base, &redirects, 64, seconds.min(5));
        let r = wrk(&server.base, &redirects, 64, seconds);
        let _ = writeln!(
            report,
            "| {tier} | {:.0} | {:.2} ms | {:.2} ms |",
            r.rps, r.p50_ms, r.p99_ms
        );
        server.stop();
    }
    drop(redis);

    // Hot sets at the ceiling: every link of the store in L1 before measuring, so that the
    // table measures the cache as it grows and not first lookups; and what caching them costs
    // the whole process in resident memory.
    let _ = writeln!(
        report,
        "\nhot sets, every link cached in L1 first ({URL_BYTES}-byte URLs, 64 connections, ceiling in the same section):\n\n\
         | links in L1 | kurz requests/s | ceiling requests/s | kurz / ceiling | kurz p99 | ceiling p99 | p99 ratio | resident growth | per cached link | L1 misses while measured |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    let ceiling = self::ceiling();
    let mut click_notes = Vec::new();
    for count in [10_000, 100_000, 1_000_000] {
        let data = work.path().join(format!("kurz-{count}.redb"));
        let codes = prefill(&data, count);
        let random = work.path().join(format!("redirect-{count}.lua"));
        write_redirect_script(&random, &codes, None);
        let each_once = work.path().join(format!("warm-{count}.lua"));
        write_warm_script(&each_once, &codes);
        let server = KurzProcess::start(
            &data,
            &[
                // Room for every link, for longer than the section runs.
                ("KURZ__CACHE__LOCAL__MAX_BYTES", "1073741824"),
                ("KURZ__CACHE__LOCAL__TTL_MS", "3600000"),
            ],
        );
        let pid = server.child.id().to_string();
        let before = harness::rss_kib(&pid);
        warm(&server, &each_once, count);
        let grown = harness::rss_kib(&pid) - before;
        let misses_before = metric(&server.base, "kurz_cache_misses_total");
        let (k, c) = against_ceiling(&server, &ceiling, &random, seconds);
        let misses = metric(&server.base, "kurz_cache_misses_total") - misses_before;
        let clicks = ["recorded_total", "flushed_total", "dropped_total"]
            .map(|m| metric(&server.base, &format!("kurz_clicks_{m}")));
        click_notes.push(format!(
            "{count} links: {} clicks recorded, {} written to the store by the end of the runs, {} dropped",
            clicks[0], clicks[1], clicks[2]
        ));
        let (k, c) = (Wrk::mean(&k), Wrk::mean(&c));
        let _ = writeln!(
            report,
            "| {count} | {:.0} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.2} | {} MiB | {:.0} bytes | {misses} |",
            k.rps,
            c.rps,
            k.rps / c.rps,
            k.p99_ms,
            c.p99_ms,
            k.p99_ms / c.p99_ms,
            grown / 1024,
            grown as f64 * 1024.0 / count as f64
        );
        server.stop();
    }
    drop(ceiling);
    let _ = writeln!(report, "\n{}", click_notes.join("\n"));
    report.push_str(&analytics(work.path(), seconds));
    println!("{report}");
}

/// Links of the analytics section (`LOAD_ANALYTICS_LINKS`, default 1,000,000).
fn analytics_links() -> u64 {
    env_or("LOAD_ANALYTICS_LINKS", 1_000_000)
}

/// Length of its sustained run (`LOAD_SUSTAINED_SECONDS`, default 60).
fn sustained_seconds() -> u64 {
    env_or("LOAD_SUSTAINED_SECONDS", 60)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Click analytics at the ceiling over 1,000,000 hot links: cached redirects with analytics on
/// and off against the ceiling, then a sustained run with the clicks waiting to be written
/// sampled at its start, middle and end, every click counted in the store afterwards, what
/// writing them cost per click, and the resident memory per hot link.
fn analytics(dir: &Path, seconds: u64) -> String {
    let (links, sustained) = (analytics_links(), sustained_seconds());
    // Rounds of at least 30 s: the on/off ratio is a few per cent, and each round should hold
    // the writer's merges (every two minutes) in the share they have of a longer run.
    let seconds = env_or("LOAD_ANALYTICS_SECONDS", seconds.max(30));
    let mut report = String::new();
    let data = dir.join("kurz-analytics.redb");
    let codes = prefill(&data, links);
    let random = dir.join("visits.lua");
    write_visits_script(&random, &codes);
    let each_once = dir.join("warm-analytics.lua");
    write_warm_script(&each_once, &codes);
    let env = |enabled: &'static str| {
        [
            ("KURZ__CACHE__LOCAL__MAX_BYTES", "1073741824"),
            ("KURZ__CACHE__LOCAL__TTL_MS", "3600000"),
            // wrk is the proxy here: its X-Forwarded-For and country header are believed.
            ("KURZ__SERVER__TRUSTED_PROXIES", "127.0.0.1"),
            ("KURZ__ANALYTICS__COUNTRY_HEADER", "CF-IPCountry"),
            ("KURZ__ANALYTICS__ENABLED", enabled),
        ]
    };
    let _ = writeln!(
        report,
        "\nclick analytics, {links} links all cached in L1 first, requests with real user agents, referrers, countries and client addresses (64 connections, two rounds of {seconds} s each, ceiling in the same section):\n\n\
         | server | requests/s | p50 | p99 | / ceiling requests/s | / ceiling p99 |\n|---|---|---|---|---|---|"
    );
    let ceiling = self::ceiling();
    let mut ratios = Vec::new();
    let mut on_server = None;
    // Clicks recorded by the server stopped before the sustained run's: in the store too.
    let mut earlier_clicks = 0.0;
    let mut cpu_per_request = Vec::new();
    let mut cpu_by_thread = Vec::new();
    let mut misses = Vec::new();
    for enabled in ["false", "true"] {
        let server = KurzProcess::start(&data, &env(enabled));
        let pid = server.child.id().to_string();
        let before = harness::rss_kib(&pid);
        warm(&server, &each_once, links);
        let cpu_before = process_cpu_s(&pid);
        let threads_before = THREADS.map(|(name, _)| thread_cpu_s(&pid, name));
        let misses_before = metric(&server.base, "kurz_cache_misses_total");
        let (k, c) = against_ceiling(&server, &ceiling, &random, seconds);
        let requests: u64 = k.iter().map(|r| r.requests).sum();
        misses.push(metric(&server.base, "kurz_cache_misses_total") - misses_before);
        cpu_per_request.push((process_cpu_s(&pid) - cpu_before) * 1e6 / requests as f64);
        let per_request = |s: f64| s * 1e6 / requests as f64;
        let mut per_thread: Vec<String> = Vec::new();
        let mut named = 0.0;
        for ((name, what), before) in THREADS.iter().zip(threads_before) {
            let cpu = thread_cpu_s(&pid, name) - before;
            named += cpu;
            per_thread.push(format!("{what} {:.2}", per_request(cpu)));
        }
        // The flusher runs on Tokio's workers and its store calls on blocking threads that
        // come and go: whatever the long-lived threads did not use.
        per_thread.push(format!(
            "the flusher and the rest {:.2}",
            per_request(process_cpu_s(&pid) - cpu_before) - per_request(named)
        ));
        cpu_by_thread.push(per_thread.join(", "));
        let (k, c) = (Wrk::mean(&k), Wrk::mean(&c));
        let name = if enabled == "true" {
            "kurz, analytics on"
        } else {
            "kurz, analytics off"
        };
        for (name, r) in [("ceiling (fixed 302)", &c), (name, &k)] {
            let _ = writeln!(
                report,
                "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.2} |",
                r.rps,
                r.p50_ms,
                r.p99_ms,
                r.rps / c.rps,
                r.p99_ms / c.p99_ms
            );
        }
        ratios.push(k.rps / c.rps);
        if enabled == "true" {
            on_server = Some((server, before));
        } else {
            earlier_clicks += metric(&server.base, "kurz_clicks_recorded_total");
            server.stop();
        }
    }
    drop(ceiling);
    let _ = writeln!(
        report,
        "\nanalytics on / analytics off, each against the ceiling: {:.3} (target >= 0.95); kurz's CPU per redirect: {:.2} us with analytics off ({}), {:.2} us on ({}); L1 misses while measured: {} off, {} on",
        ratios[1] / ratios[0],
        cpu_per_request[0],
        cpu_by_thread[0],
        cpu_per_request[1],
        cpu_by_thread[1],
        misses[0],
        misses[1]
    );

    // The sustained run, on the analytics-on server.
    let Some((server, rss_before)) = on_server else {
        return report;
    };
    let pid = server.child.id().to_string();
    let recorded_before = metric(&server.base, "kurz_clicks_recorded_total");
    let cpu_before = (thread_cpu_s(&pid, "kurz-store-writ"), process_cpu_s(&pid));
    let collect_before = metric(&server.base, "kurz_click_collect_microseconds_total");
    let run = {
        let (base, script) = (server.base.clone(), random.clone());
        std::thread::spawn(move || wrk(&base, &script, 64, sustained))
    };
    let started = Instant::now();
    let mut pending = Vec::new();
    for at in [1, sustained / 2, sustained - 1] {
        if let Some(wait) = Duration::from_secs(at).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        pending.push((at, metric(&server.base, "kurz_clicks_pending")));
    }
    let sent = run.join().expect("wrk");
    let drain = written(&server);
    let recorded_all = metric(&server.base, "kurz_clicks_recorded_total");
    let recorded = recorded_all - recorded_before;
    let flushed = metric(&server.base, "kurz_clicks_flushed_total");
    let dropped = metric(&server.base, "kurz_clicks_dropped_total");
    let visits_dropped = metric(&server.base, "kurz_analytics_visits_dropped_total");
    let writer_cpu = thread_cpu_s(&pid, "kurz-store-writ") - cpu_before.0;
    let process_cpu = process_cpu_s(&pid) - cpu_before.1;
    let collect_s =
        (metric(&server.base, "kurz_click_collect_microseconds_total") - collect_before) / 1e6;
    let rss = harness::rss_kib(&pid);
    server.stop();
    let stored = stored_clicks(&data, &codes);
    let _ = writeln!(
        report,
        "\nsustained run, analytics on, {sustained} s at 64 connections: {:.0} requests/s, p99 {:.2} ms, {} responses counted by wrk",
        sent.rps, sent.p99_ms, sent.requests
    );
    let _ = writeln!(
        report,
        "clicks waiting to be written (kurz_clicks_pending): {}",
        pending
            .iter()
            .map(|(t, n)| format!("{n:.0} at {t} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        report,
        "after the run: pending reached 0 within {:.1} s; clicks recorded during the run {recorded:.0}, since start {recorded_all:.0}, written since start {flushed:.0}, dropped {dropped:.0}, counted without details {visits_dropped:.0}; the store's totals over all {links} links: {stored} (equal to every click recorded, {:.0} of them by the analytics-off server before: {})",
        drain.as_secs_f64(),
        earlier_clicks,
        if stored as f64 == recorded_all + earlier_clicks {
            "yes"
        } else {
            "NO"
        }
    );
    let _ = writeln!(
        report,
        "cost per click: the store's writer thread (log appends and merges) {:.2} us of CPU, classifying and adding up in the flusher {:.2} us, the whole process {:.2} us (redirect included)",
        writer_cpu * 1e6 / recorded,
        collect_s * 1e6 / recorded,
        process_cpu * 1e6 / recorded
    );
    let _ = writeln!(
        report,
        "resident memory with analytics on: {} MiB grown since start, {:.0} bytes per hot link",
        (rss - rss_before) / 1024,
        (rss - rss_before) as f64 * 1024.0 / links as f64
    );
    report
}

/// `LOAD_ONLY=traces`: what traces cost redirects. The same 100,000 links, served from L1 and
/// from the store (L1 off), with traces off, on at 1% and 100% sampled, and off again, sent to
/// a receiver in this process that reads and discards them; each against the ceiling in the
/// same section, with kurz's CPU time per redirect.
fn traces(dir: &Path, seconds: u64) -> String {
    let data = dir.join("traces.redb");
    let codes = prefill(&data, 100_000);
    let script = dir.join("redirect-traces.lua");
    write_redirect_script(&script, &codes, None);
    let sink = SpanSink::start();
    let ceiling = ceiling();
    let mut report = format!(
        "traces and redirects, {} cores, wrk runs of {seconds} s, 64 connections, 100,000 links\n\n\
         | served from | traces | kurz requests/s | ceiling requests/s | kurz / ceiling | kurz p99 | kurz CPU per redirect | spans sent | spans dropped |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let traced = |ratio: &str| {
        vec![
            ("KURZ__TELEMETRY__OTLP_ENDPOINT", sink.endpoint()),
            ("KURZ__TELEMETRY__SAMPLE_RATIO", ratio.to_owned()),
        ]
    };
    for (tier, tier_env) in [
        ("L1", vec![]),
        (
            "store (L1 off)",
            vec![("KURZ__CACHE__LOCAL__MAX_BYTES", "0".to_owned())],
        ),
    ] {
        // Off once more at the end: what the runs before changed (the store grows with the
        // clicks of each) shows as the difference between the two.
        for (name, trace_env) in [
            ("off", vec![]),
            ("1% sampled", traced("0.01")),
            ("100% sampled", traced("1")),
            ("off, again", vec![]),
        ] {
            let env: Vec<(&str, &str)> = tier_env
                .iter()
                .chain(&trace_env)
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            let server = KurzProcess::start(&data, &env);
            wrk(&server.base, &script, 64, seconds.min(3));
            let pid = server.child.id().to_string();
            let cpu_before = process_cpu_s(&pid);
            let (k, c) = against_ceiling(&server, &ceiling, &script, seconds);
            let cpu = process_cpu_s(&pid) - cpu_before;
            let (k, c) = (Wrk::mean(&k), Wrk::mean(&c));
            // Sent once the next export (every second) has run.
            std::thread::sleep(Duration::from_millis(1500));
            let (sent, dropped) = if trace_env.is_empty() {
                (0.0, 0.0)
            } else {
                (
                    metric(&server.base, "kurz_trace_spans_exported_total"),
                    metric(&server.base, "kurz_trace_spans_dropped_total"),
                )
            };
            let _ = writeln!(
                report,
                "| {tier} | {name} | {:.0} | {:.0} | {:.2} | {:.2} ms | {:.1} µs | {sent:.0} | {dropped:.0} |",
                k.rps,
                c.rps,
                k.rps / c.rps,
                k.p99_ms,
                cpu * 1e6 / k.requests.max(1) as f64,
            );
            server.stop();
        }
    }
    let _ = writeln!(
        report,
        "\nthe receiver took {} export requests, {} MiB",
        sink.requests(),
        sink.bytes() / (1 << 20)
    );
    report
}

/// `LOAD_ONLY=tiers` (as root): the cache tiers with each dependency on a host of its own, the
/// local fleet of `infra/local/fleet.sh` (network namespaces; the cores are still the same
/// two). The rest runs on the fleet's client host: this program again (`--tiers-client`).
fn tiers(dir: &Path, seconds: u64) -> String {
    let fleet = Fleet {
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/fleet.sh"),
        state: dir.join("fleet"),
    };
    fleet.run(&["up"], "");
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_str().expect("utf-8 path");
    let state = fleet.state.to_str().expect("utf-8 path").to_owned();
    fleet.run(
        &[
            "exec",
            "client",
            exe,
            "--tiers-client",
            &seconds.to_string(),
            &state,
        ],
        "",
    )
}

/// `infra/local/fleet.sh` with this build's `kurz` and a state folder of its own; taken down
/// when dropped.
struct Fleet {
    script: PathBuf,
    state: PathBuf,
}

impl Fleet {
    /// `fleet.sh ARGS` with `KURZ_FLEET_K_ENV` set to `k_env`; its standard output.
    fn run(&self, args: &[&str], k_env: &str) -> String {
        let output = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .env("KURZ_BIN", env!("CARGO_BIN_EXE_kurz"))
            .env("KURZ_FLEET_DIR", &self.state)
            .env("KURZ_FLEET_K_ENV", k_env)
            .output()
            .expect("fleet.sh runs");
        assert!(
            output.status.success(),
            "fleet.sh {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn pid(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join("pids").join(name))
            .expect("pid file")
            .trim()
            .to_owned()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Only the fleet's own process (not the client run inside it) takes it down.
        if std::env::args().any(|a| a == "--tiers-client") {
            return;
        }
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .env("KURZ_FLEET_DIR", &self.state)
            .output();
    }
}

/// On the fleet's client host: 20,000 links through k1, then redirects of them (HEAD) from k1 with
/// its in-process cache off, served by Redis, then by DynamoDB (Redis off too), and from L1 for
/// reference; the CPU each process spent per redirect, from `/proc`.
fn tiers_client(seconds: u64, state: &Path) -> String {
    let fleet = Fleet {
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/local/fleet.sh"),
        state: state.to_owned(),
    };
    let env = std::fs::read_to_string(state.join("fleet.env")).expect("fleet.env");
    let k1 = env
        .lines()
        .find_map(|l| l.strip_prefix("KURZ_FLEET_K1="))
        .expect("KURZ_FLEET_K1")
        .to_owned();
    let codes = create_links(&k1, 20_000, 32);
    // HEAD looks a code up as GET does and counts no click, so the store writes no clicks
    // beside the lookups it is measured on.
    let script = state.join("tiers.lua");
    write_codes_script(
        &script,
        &codes,
        "function init(args) math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16)) end\n\
         function request() return wrk.format(\"HEAD\", \"/\" .. codes[math.random(n)]) end\n",
    );
    let mut report = format!(
        "cache tiers on hosts of their own (infra/local/fleet.sh: kurz k1, Redis, DynamoDB Local and \
         wrk each in a network namespace, the same {} cores), 20,000 links, 64 connections, runs of {seconds} s\n\n\
         | served from | requests/s | p50 | p99 | kurz CPU | Redis CPU | DynamoDB Local CPU | all three, per redirect |\n|---|---|---|---|---|---|---|---|\n",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for (tier, k_env) in [
        ("L1 (in-process)", ""),
        ("Redis (L1 off)", "KURZ__CACHE__LOCAL__MAX_BYTES=0"),
        (
            "DynamoDB (L1 and Redis off)",
            "KURZ__CACHE__LOCAL__MAX_BYTES=0 KURZ__CACHE__REDIS__URL=",
        ),
    ] {
        fleet.run(&["stop", "1"], "");
        fleet.run(&["start", "1"], k_env);
        // Warm the tier (Redis fills with the links), then measure.
        wrk(&k1, &script, 64, seconds.min(5));
        let pids = [fleet.pid("k1"), fleet.pid("redis"), fleet.pid("dynamodb")];
        let before: Vec<f64> = pids.iter().map(|p| process_cpu_s(p)).collect();
        let r = wrk(&k1, &script, 64, seconds);
        let per: Vec<f64> = pids
            .iter()
            .zip(&before)
            .map(|(p, b)| (process_cpu_s(p) - b) * 1e6 / r.requests.max(1) as f64)
            .collect();
        let _ = writeln!(
            report,
            "| {tier} | {:.0} | {:.2} ms | {:.2} ms | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            per[0],
            per[1],
            per[2],
            per.iter().sum::<f64>()
        );
    }
    report
}

/// `LOAD_ONLY=creates`: durable creates against what the disk and redb allow, in one run. The
/// disk's rate of 4 KiB writes each followed by `fdatasync` (`fio`); a raw loop of redb
/// inserts with kurz's durability (each commit durable) of link-sized values, 1 to 512 per
/// commit with keys in order (appends to the tree's right edge, as generated links are kept)
/// and 32 per commit with random keys (as links were kept by their permuted codes before);
/// then kurz's durable creates through the API at 32 and 256 connections on a fresh store,
/// with the writes each commit carried (`/metrics`). `LOAD_BASELINE=path` runs another kurz
/// binary (an earlier build) the same way, for an A/B in the same run. Preloading
/// `benches/common/slow_sync.c` into the run gives all of them a disk whose sync is slow.
fn creates(dir: &Path, seconds: u64) -> String {
    assert!(
        Command::new("fio").arg("--version").output().is_ok(),
        "fio is missing: apt-get install fio"
    );
    let mut report = format!(
        "durable creates against the disk, {} cores, runs of {seconds} s, on {}\n\n\
         | what | per second | p99 | kurz at 32 connections / it |\n|---|---|---|---|\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        dir.display()
    );
    let fsync = fio_fdatasync(dir, seconds);
    let mut raw: Vec<(String, usize, RawInserts)> = [1, 8, 32, 128, 512]
        .into_iter()
        .map(|n| {
            let inserts = if n == 1 { "insert" } else { "inserts" };
            let name = format!("redb, {n} {inserts} per durable commit, keys in order (appends)");
            (name, n, raw_inserts(dir, n, false, seconds))
        })
        .collect();
    raw.push((
        "redb, 32 inserts per durable commit, random keys".into(),
        32,
        raw_inserts(dir, 32, true, seconds),
    ));
    let create = create_script(dir);
    let baseline = std::env::var_os("LOAD_BASELINE").map(std::path::PathBuf::from);
    let mut kurz = Vec::new();
    for (binary, label) in std::iter::once((None, "kurz")).chain(
        baseline
            .as_deref()
            .map(|b| (Some(b), "kurz, LOAD_BASELINE")),
    ) {
        for connections in [32, 256] {
            let data = dir.join(format!("creates-{}-{connections}.redb", kurz.len()));
            let server = match binary {
                None => KurzProcess::start(&data, &[]),
                Some(binary) => KurzProcess::start_program(binary, &data, &[]),
            };
            let before = store_commits(&server);
            let result = wrk_script(&server.base, &create, connections, seconds);
            // The health probe carries the store's counts into /metrics once a second.
            std::thread::sleep(Duration::from_millis(1_200));
            let after = store_commits(&server);
            assert_eq!(result.errors, 0, "creates answered other than 2xx");
            server.stop();
            let per_commit = if after.0 > before.0 {
                format!(
                    "{:.1} creates a commit",
                    (after.1 - before.1) / (after.0 - before.0)
                )
            } else {
                "creates a commit not reported".to_owned()
            };
            kurz.push((label, connections, result, per_commit));
        }
    }
    let at_32 = kurz[0].2.rps;
    let _ = writeln!(
        report,
        "| the disk: 4 KiB write + fdatasync (fio, one job) | {:.0} | {:.2} ms | {:.2} |",
        fsync.0,
        fsync.1,
        at_32 / fsync.0
    );
    for (name, _, r) in &raw {
        let _ = writeln!(
            report,
            "| {name} | {:.0} inserts ({:.0} commits, mean {:.2} ms) | {:.2} ms a commit | {:.2} |",
            r.inserts_per_s,
            r.commits_per_s,
            1000.0 / r.commits_per_s,
            r.p99_commit_ms,
            at_32 / r.inserts_per_s
        );
    }
    for (label, connections, r, per_commit) in &kurz {
        let _ = writeln!(
            report,
            "| {label}, durable creates through the API, {connections} connections ({per_commit}) | {:.0} | {:.2} ms | {:.2} |",
            r.rps,
            r.p99_ms,
            at_32 / r.rps
        );
    }
    // What the sync costs against the work in a commit: a commit of n appends takes about
    // sync + n x insert; the batch the disk calls for is the smallest that spends no more than
    // a fifth of its commit on the sync.
    let single = &raw[0].2;
    let sync_ms = 1000.0 / single.commits_per_s;
    let largest = &raw[4].2;
    let insert_ms = (1000.0 / largest.commits_per_s - sync_ms).max(0.0) / 511.0;
    let called_for = (4.0 * sync_ms / insert_ms.max(1e-6)).ceil();
    let _ = writeln!(
        report,
        "\na durable commit of one append: {sync_ms:.3} ms; each further append {:.2} us; \
         the batch that spends at most a fifth of its commit on the sync: {called_for:.0} appends",
        insert_ms * 1000.0
    );
    report
}

/// The embedded store's (commits, writes committed) from `/metrics` (0 from a build without
/// them).
fn store_commits(server: &KurzProcess) -> (f64, f64) {
    let text = metrics_text(&server.base);
    let value = |name| harness::metric_if(&text, name).unwrap_or(0.0);
    (
        value("kurz_store_commits_total"),
        value("kurz_store_committed_writes_total"),
    )
}

/// The disk's rate of 4 KiB sequential writes each made durable with `fdatasync`, and the
/// p99 of the `fdatasync` alone, in ms (`fio`'s JSON).
fn fio_fdatasync(dir: &Path, seconds: u64) -> (f64, f64) {
    let output = Command::new("fio")
        .args([
            "--name=fdatasync",
            "--rw=write",
            "--bs=4k",
            "--size=256m",
            "--fdatasync=1",
            "--time_based",
            &format!("--runtime={seconds}"),
            "--output-format=json",
        ])
        .arg(format!("--directory={}", dir.display()))
        .output()
        .expect("fio runs");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "fio's output is no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let job = &json["jobs"][0];
    let iops = job["write"]["iops"].as_f64().expect("write iops");
    let p99_ns = job["sync"]["lat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let _ = std::fs::remove_file(dir.join("fdatasync.0.0"));
    (iops, p99_ns / 1e6)
}

struct RawInserts {
    inserts_per_s: f64,
    commits_per_s: f64,
    p99_commit_ms: f64,
}

/// A fresh redb file, `per_commit` inserts of a link-sized value in each durable write
/// transaction, for `seconds`, keys in order or random (7 base62 characters, as codes).
fn raw_inserts(dir: &Path, per_commit: usize, random: bool, seconds: u64) -> RawInserts {
    const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("links");
    const BY_ID: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("links_by_id");
    let path = dir.join(format!("raw-{per_commit}-{random}.redb"));
    let db = redb::Database::create(&path).expect("create redb file");
    let value = vec![b'x'; 200];
    let mut draw = common::Draw(0x9e37_79b9_7f4a_7c15);
    let mut next: u64 = 0;
    let mut commits = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let began = Instant::now();
        let txn = db.begin_write().expect("write transaction");
        if random {
            let mut table = txn.open_table(TABLE).expect("table");
            for _ in 0..per_commit {
                let key = {
                    let mut id = draw.next(3_521_614_606_208); // 62^7
                    let mut code = [b'0'; 7];
                    for c in code.iter_mut().rev() {
                        *c = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            [(id % 62) as usize];
                        id /= 62;
                    }
                    String::from_utf8_lossy(&code).into_owned()
                };
                table
                    .insert(key.as_str(), value.as_slice())
                    .expect("insert");
            }
        } else {
            let mut table = txn.open_table(BY_ID).expect("table");
            for _ in 0..per_commit {
                next += 1;
                table.insert(next, value.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("durable commit");
        commits.push(began.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_file(&path);
    commits.sort_unstable();
    let p99 = commits[(commits.len() * 99 / 100).min(commits.len() - 1)];
    RawInserts {
        inserts_per_s: (commits.len() * per_commit) as f64 / elapsed,
        commits_per_s: commits.len() as f64 / elapsed,
        p99_commit_ms: p99.as_secs_f64() * 1000.0,
    }
}

/// An OTLP/HTTP receiver that reads each export request and answers 200, keeping nothing: the
/// cheapest collector, so the benchmark measures kurz's side.
struct SpanSink {
    port: u16,
    counts: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

impl SpanSink {
    fn start() -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = listener.local_addr().expect("sink address").port();
        let counts = Arc::new(Default::default());
        let shared = Arc::clone(&counts);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counts: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)> =
                    Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut read = Vec::new();
                    let mut chunk = [0u8; 64 * 1024];
                    // kurz sends one request per connection and closes its side after it.
                    loop {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&chunk[..n]),
                        }
                        let Some(head) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let length: usize = String::from_utf8_lossy(&read[..head])
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if read.len() >= head + 4 + length {
                            counts.0.fetch_add(1, Ordering::Relaxed);
                            counts.1.fetch_add(read.len() as u64, Ordering::Relaxed);
                            let _ = stream.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                            );
                            return;
                        }
                    }
                });
            }
        });
        Self { port, counts }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> u64 {
        self.counts.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn bytes(&self) -> u64 {
        self.counts.1.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Two rounds of 64 connections against `server` and against the ceiling, in swapped order;
/// (kurz's runs, the ceiling's). Every click kurz recorded is written before the ceiling's
/// run that follows one of kurz's, which would otherwise share the cores with the writing.
fn against_ceiling(
    server: &KurzProcess,
    ceiling: &ServerProcess,
    script: &Path,
    seconds: u64,
) -> (Vec<Wrk>, Vec<Wrk>) {
    let (mut k, mut c) = (Vec::new(), Vec::new());
    c.push(wrk(&ceiling.base(), script, 64, seconds));
    k.push(wrk(&server.base, script, 64, seconds));
    k.push(wrk(&server.base, script, 64, seconds));
    written(server);
    c.push(wrk(&ceiling.base(), script, 64, seconds));
    (k, c)
}

/// Waits until every click `server` recorded is written (at most 300 s); how long that took.
fn written(server: &KurzProcess) -> Duration {
    let since = Instant::now();
    while metric(&server.base, "kurz_clicks_pending") > 0.0 {
        assert!(
            since.elapsed() < Duration::from_secs(300),
            "clicks still pending 300 s after the run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    since.elapsed()
}

/// Asks for every link once with HEAD until L1 holds `count` of them.
fn warm(server: &KurzProcess, each_once: &Path, count: u64) {
    let warm_up = Instant::now();
    let mut from = 0;
    loop {
        let cached = metric(&server.base, "kurz_cache_entries");
        if cached >= count as f64 {
            return;
        }
        assert!(
            warm_up.elapsed() < Duration::from_secs(600),
            "L1 took {cached} of {count} links"
        );
        // Each run goes on from where the last one stopped.
        let run = wrk_run(&server.base, each_once, 1, 64, 5, &[&from.to_string()]);
        assert_eq!(run.errors, 0, "warm-up lookups answered other than 3xx");
        from += run.requests;
    }
}

/// The sum of every link's click total in the store at `path` (kurz stopped).
fn stored_clicks(path: &Path, codes: &[String]) -> u64 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(path, Duration::from_secs(60)).expect("open");
        let mut total = 0;
        for code in codes {
            total += store
                .stats(code)
                .await
                .expect("stats")
                .map_or(0, |s| s.total_clicks);
        }
        store.close().await;
        total
    })
}

/// kurz's long-lived threads by the name /proc shows (cut to 15 bytes), and what they do: the
/// HTTP workers answer redirects; the store's writer thread commits flushes and merges them.
const THREADS: [(&str, &str); 2] = [
    ("actix-server wo", "HTTP workers"),
    ("kurz-store-writ", "store writer"),
];

/// CPU seconds (user + system) of the process's threads named `name` (as /proc shows it).
fn thread_cpu_s(pid: &str, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|stat| stat.contains(&format!("({name})")))
        .map(|stat| cpu_of_stat(&stat))
        .sum()
}

fn process_cpu_s(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0.0, |stat| cpu_of_stat(&stat))
}

/// A wrk script asking for random codes with a browser's headers: one of real user agents
/// (phones, desktops, a few crawlers), a referrer among many sites or none, a country, and
/// a client address (`X-Forwarded-For`) among 100,000.
fn write_visits_script(path: &Path, codes: &[String]) {
    write_codes_script(
        path,
        codes,
        &format!(
            "{}\n\
             {}\n\
             function init(args) math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16)) end\n\
             function request()\n\
               local headers = {{}}\n\
               headers[\"User-Agent\"] = agents[math.random(#agents)]\n\
               local site = math.random(60)\n\
               if site <= 50 then headers[\"Referer\"] = \"https://site\" .. site .. \".example/page/\" .. math.random(1000) end\n\
               headers[\"CF-IPCountry\"] = countries[math.random(#countries)]\n\
               headers[\"X-Forwarded-For\"] = \"10.\" .. math.random(0, 15) .. \".\" .. math.random(0, 255) .. \".\" .. math.random(0, 24)\n\
               return wrk.format(\"GET\", \"/\" .. codes[math.random(n)], headers)\n\
             end\n",
            lua_table("agents", &common::AGENTS),
            lua_table("countries", &common::COUNTRIES)
        ),
    );
}

/// `values` as a Lua table named `name`.
fn lua_table(name: &str, values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("local {name} = {{{}}}", quoted.join(", "))
}

/// The practical ceiling: actix-web answering every `GET /{code}` with the same 302.
fn ceiling_server(port: u16) {
    use actix_web::{App, HttpResponse, HttpServer, http::header::LOCATION, web};
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new().route(
                "/{code}",
                web::get().to(|| async {
                    HttpResponse::Found()
                        .insert_header((LOCATION, "https://example.com/bench/12345"))
                        .finish()
                }),
            )
        })
        .bind(("127.0.0.1", port))
        .expect("bind")
        .run()
        .await
        .expect("ceiling server");
    });
}

/// The ceiling: this program re-executed as a minimal actix-web server (`--ceiling-server`).
fn ceiling() -> ServerProcess {
    let port = harness::free_port();
    let exe = std::env::current_exe().expect("own path");
    let command = format!("'{}' --ceiling-server {port}", exe.display());
    ServerProcess::spawn("ceiling server", &command, port)
}

/// Creates `count` links through the API with `concurrency` clients; returns their codes.
fn create_links(base: &str, count: usize, concurrency: usize) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = harness::client();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (client, next, base) = (client.clone(), Arc::clone(&next), base.to_owned());
            workers.push(tokio::spawn(async move {
                let mut codes = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return codes;
                    }
                    let response = client
                        .post(format!("{base}/api/v1/links"))
                        .json(
                            &serde_json::json!({ "url": format!("https://example.com/bench/{i}") }),
                        )
                        .send()
                        .await
                        .expect("create");
                    assert_eq!(response.status(), 201);
                    let body: serde_json::Value = response.json().await.expect("json");
                    codes.push(body["code"].as_str().expect("code").to_owned());
                }
            }));
        }
        let mut codes = Vec::with_capacity(count);
        for worker in workers {
            codes.extend(worker.await.expect("worker"));
        }
        codes
    })
}

/// A script for one wrk thread that asks for every code once with HEAD (which counts no click,
/// so warming up is not a flood of clicks to flush), from the index its first argument gives,
/// then starts over. A run that ends with N answers leaves no code before index N unasked.
fn write_warm_script(path: &Path, codes: &[String]) {
    write_codes_script(
        path,
        codes,
        "local cursor = 0\n\
         function init(args) cursor = tonumber(args[1] or 0) end\n\
         function request() local code = codes[cursor % n + 1] cursor = cursor + 1 return wrk.format(\"HEAD\", \"/\" .. code) end\n",
    );
}

/// A wrk script: the table `codes` (its length in `n`), then `body`.
fn write_codes_script(path: &Path, codes: &[String], body: &str) {
    let mut lua = String::with_capacity(codes.len() * 12 + 512);
    lua.push_str("codes = {\n");
    for code in codes {
        let _ = writeln!(lua, "\"{code}\",");
    }
    lua.push_str("}\nlocal n = #codes\n");
    lua.push_str(body);
    std::fs::write(path, lua).expect("write lua");
}

/// One metric from kurz's `/metrics`, over a plain HTTP/1.0 request.
fn metric(base: &str, name: &str) -> f64 {
    harness::metric(&metrics_text(base), name)
}

/// kurz's `/metrics`, over a plain HTTP/1.0 request.
fn metrics_text(base: &str) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to kurz");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics");
    text
}

/// A wrk script asking for random codes of `codes`, each with `?query` when there is one.
fn write_redirect_script(path: &Path, codes: &[String], query: Option<&str>) {
    let suffix = query.map_or(String::new(), |q| format!("?{q}"));
    write_codes_script(
        path,
        codes,
        &format!(
            "function init(args) math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16)) end\n\
             function request() return wrk.format(\"GET\", \"/\" .. codes[math.random(n)] .. \"{suffix}\") end\n"
        ),
    );
}

fn create_script(dir: &Path) -> PathBuf {
    let path = dir.join("create.lua");
    std::fs::write(
        &path,
        "local counter = 0\n\
         local id = tostring({}):sub(8)\n\
         wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         function request()\n\
           counter = counter + 1\n\
           return wrk.format(nil, \"/api/v1/links\", nil, '{\"url\":\"https://example.com/wrk/' .. id .. '/' .. counter .. '\"}')\n\
         end\n",
    )
    .expect("write lua");
    path
}

#[derive(Debug, Default, Clone)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Wrk {
    fn mean(runs: &[Wrk]) -> Wrk {
        let n = runs.len() as f64;
        Wrk {
            requests: runs.iter().map(|r| r.requests).sum(),
            rps: runs.iter().map(|r| r.rps).sum::<f64>() / n,
            p50_ms: runs.iter().map(|r| r.p50_ms).sum::<f64>() / n,
            p99_ms: runs.iter().map(|r| r.p99_ms).sum::<f64>() / n,
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }
}

fn wrk(base: &str, script: &Path, connections: u32, seconds: u64) -> Wrk {
    let result = wrk_script(base, script, connections, seconds);
    assert_eq!(result.errors, 0, "redirects answered other than 3xx");
    result
}

fn wrk_script(base: &str, script: &Path, connections: u32, seconds: u64) -> Wrk {
    wrk_run(base, script, 2, connections, seconds, &[])
}

/// A wrk run on `threads` threads; `args` go to the script's `init`.
fn wrk_run(
    base: &str,
    script: &Path,
    threads: u32,
    connections: u32,
    seconds: u64,
    args: &[&str],
) -> Wrk {
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(base)
        .arg("--")
        .args(args)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    Wrk {
        // "1234 requests in 5.00s, 1.2MB read"
        requests: text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0),
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}")),
        p50_ms: field("50%").map(millis).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(millis).unwrap_or(f64::NAN),
        errors: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// wrk's latency figures: `812.00us`, `1.23ms`, `2.01s`.
fn millis(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}
