//! What writing clicks costs kurz off the redirect path, with analytics off and on: the click
//! flusher (collecting, classifying, hashing visitors, folding rollups) and the embedded
//! store's writer, at a steady click rate over a large set of links, as the load benchmark's
//! analytics section sends them but without HTTP or wrk sharing the cores, so the figure is
//! steady enough to compare one change with the next.
//! Run: `cargo bench --bench flusher` (`FLUSHER_LINKS`, default 1,000,000; `FLUSHER_RATE`
//! clicks/s, default 25,000; `FLUSHER_SECONDS`, default 20; `FLUSHER_ONLY=on` or `off`).

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kurz::analytics::Visit;
use kurz::analytics::aggregate::Aggregator;
use kurz::analytics::classify::{Classifier, Countries};
use kurz::clicks::{ClickFlusher, ClickRecorder, FlushPacing};
use kurz::config::Settings;
use kurz::store::{EmbeddedStore, LinkStore};
use kurz::telemetry::Metrics;

use common::{AGENTS, COUNTRIES, cpu_of_stat, prefill};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: the same clicks in every run and mode.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// A visit as the visits script makes them: a random agent, a referrer from 50 sites (or
/// none, one time in six), a country and a client address from 10.0.0.0/12.
fn visit(draw: &mut Draw) -> Visit {
    let agent = AGENTS[draw.next(AGENTS.len() as u64) as usize];
    let site = draw.next(60) + 1;
    let referer = if site <= 50 {
        format!("https://site{site}.example/page/{}", draw.next(1000) + 1)
    } else {
        String::new()
    };
    let country = COUNTRIES[draw.next(COUNTRIES.len() as u64) as usize];
    let ip = IpAddr::from([
        10,
        draw.next(16) as u8,
        draw.next(256) as u8,
        draw.next(25) as u8,
    ]);
    Visit::new(agent.as_bytes(), referer.as_bytes(), country.as_bytes(), ip)
}

/// utime + stime in seconds of the /proc stat file at `path`.
fn cpu_s(path: &str) -> f64 {
    std::fs::read_to_string(path).map_or(0.0, |stat| cpu_of_stat(&stat))
}

/// CPU seconds of this process's threads named `name`.
fn threads_cpu_s(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| cpu_of_stat(&stat))
        .sum()
}

/// Records `rate` clicks a second for `seconds` over `codes` (with visits when `analytics`),
/// and waits until the flusher wrote them all; CPU µs per click spent off this thread, in
/// total and by the store's writer thread.
fn run(path: &Path, codes: &[String], analytics: bool, rate: u64, seconds: u64) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(EmbeddedStore::open(path, Duration::from_secs(60)).expect("open"));
    let metrics = Arc::new(Metrics::default());
    let recorder = Arc::new(ClickRecorder::new(Arc::clone(&metrics)));
    let settings = Settings::default();
    let flusher = {
        let _inside = runtime.enter();
        ClickFlusher::start(
            Arc::clone(&recorder),
            Arc::clone(&store) as Arc<dyn LinkStore>,
            FlushPacing::from_settings(&settings),
            Aggregator::new(
                Classifier::new(Arc::new(Countries::open(None).expect("no database"))),
                settings.analytics.max_values_per_dimension,
            ),
        )
    };
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    let visits: Vec<Visit> = (0..4096).map(|_| visit(&mut draw)).collect();
    let (process_before, writer_before) =
        (cpu_s("/proc/self/stat"), threads_cpu_s("kurz-store-writ"));
    let own_before = cpu_s("/proc/thread-self/stat");
    let started = Instant::now();
    let per_tick = rate / 100;
    let mut recorded = 0;
    for tick in 0..seconds * 100 {
        let now = kurz::clock::system_now_ms();
        for _ in 0..per_tick {
            let code = &codes[draw.next(codes.len() as u64) as usize];
            // A copy, as a redirect makes one from its headers.
            let visit = analytics.then(|| visits[draw.next(4096) as usize].clone());
            recorder.record(code, now, visit);
            recorded += 1;
        }
        let next = started + Duration::from_millis(10 * (tick + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    while metrics.clicks_pending.get() > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let own = cpu_s("/proc/thread-self/stat") - own_before;
    let process = cpu_s("/proc/self/stat") - process_before;
    let writer = threads_cpu_s("kurz-store-writ") - writer_before;
    assert_eq!(
        metrics.clicks_flushed.get(),
        recorded,
        "every click written"
    );
    runtime.block_on(async {
        flusher.shutdown().await;
        store.close().await;
    });
    let per_click = |s: f64| s * 1e6 / recorded as f64;
    (per_click(process - own), per_click(writer))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let links = env_or("FLUSHER_LINKS", 1_000_000);
    let rate = env_or("FLUSHER_RATE", 25_000);
    let seconds = env_or("FLUSHER_SECONDS", 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let prefilled = dir.path().join("prefilled.redb");
    let codes = prefill(&prefilled, links);
    println!(
        "click writing off the redirect path, {rate} clicks/s for {seconds} s over {links} links (CPU per click, flusher and store writer together, then the writer alone):"
    );
    let mut totals = Vec::new();
    // `FLUSHER_ONLY=on` (or `off`) runs one mode, e.g. under a profiler.
    let only = std::env::var("FLUSHER_ONLY").ok();
    for analytics in [false, true] {
        let mode = if analytics { "on" } else { "off" };
        if only.as_deref().is_some_and(|only| only != mode) {
            continue;
        }
        let path = dir.path().join(format!("run-{analytics}.redb"));
        std::fs::copy(&prefilled, &path).expect("copy the store");
        let (total, writer) = run(&path, &codes, analytics, rate, seconds);
        println!(
            "analytics {mode}: {total:.2} us per click ({writer:.2} us of it the store's writer)"
        );
        totals.push(total);
    }
    if let [off, on] = totals[..] {
        println!(
            "analytics on adds {:.2} us per click to writing it",
            on - off
        );
    }
}
