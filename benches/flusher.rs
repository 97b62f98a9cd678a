//! What writing clicks costs kurz off the redirect path, with analytics off and on: the click
//! flusher (collecting, classifying, hashing visitors, folding rollups) and the embedded
//! store's writer, at a steady click rate over a large set of links, as the load benchmark's
//! analytics section sends them but without HTTP or wrk sharing the cores, so the figure is
//! steady enough to compare one change with the next.
//! Run: `cargo bench --bench flusher` (`FLUSHER_LINKS`, default 1,000,000; `FLUSHER_RATE`
//! clicks/s, default 25,000; `FLUSHER_SECONDS` a round, default 10; `FLUSHER_ROUNDS` of each
//! mode, default 3, taken in turn and reported by their median; `FLUSHER_ONLY=on` or `off`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kurz::analytics::aggregate::Aggregator;
use kurz::analytics::classify::{Classifier, Countries};
use kurz::clicks::{ClickFlusher, ClickRecorder, FlushPacing};
use kurz::config::Settings;
use kurz::store::{EmbeddedStore, LinkStore};
use kurz::telemetry::Metrics;

use common::{Draw, Sent, cpu_of_stat, prefill};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
/// and waits until the flusher wrote them all.
/// CPU µs per click.
struct Cost {
    /// On the recording thread (as a redirect's).
    recording: f64,
    /// Off it: the flusher and the store's writer.
    writing: f64,
    /// The store's writer alone.
    writer: f64,
}

fn run(path: &Path, codes: &[String], analytics: bool, rate: u64, seconds: u64) -> Cost {
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
    let sent: Vec<Sent> = (0..4096).map(|_| Sent::draw(&mut draw)).collect();
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
            let visit = analytics.then(|| sent[draw.next(4096) as usize].headers());
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
    Cost {
        recording: per_click(own),
        writing: per_click(process - own),
        writer: per_click(writer),
    }
}

/// The median of `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let links = env_or("FLUSHER_LINKS", 1_000_000);
    let rate = env_or("FLUSHER_RATE", 25_000);
    let seconds = env_or("FLUSHER_SECONDS", 10);
    let rounds = env_or("FLUSHER_ROUNDS", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let prefilled = dir.path().join("prefilled.redb");
    let codes = prefill(&prefilled, links);
    println!(
        "click writing off the redirect path, {rate} clicks/s for {seconds} s over {links} links, analytics off and on in turn, {rounds} rounds each (CPU per click: recording it, then the flusher and store writer together, then the writer alone):"
    );
    // `FLUSHER_ONLY=on` (or `off`) runs one mode, e.g. under a profiler.
    let only = std::env::var("FLUSHER_ONLY").ok();
    let mut totals = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for analytics in [false, true] {
            let mode = if analytics { "on" } else { "off" };
            if only.as_deref().is_some_and(|only| only != mode) {
                continue;
            }
            let path = dir.path().join(format!("run-{analytics}-{round}.redb"));
            std::fs::copy(&prefilled, &path).expect("copy the store");
            let cost = run(&path, &codes, analytics, rate, seconds);
            let _ = std::fs::remove_file(&path);
            println!(
                "analytics {mode}: recording {:.2} us, writing {:.2} us ({:.2} us of it the store's writer)",
                cost.recording, cost.writing, cost.writer
            );
            totals[usize::from(analytics)].push(cost.writing);
        }
    }
    if totals.iter().all(|t| !t.is_empty()) {
        let (off, on) = (median(&mut totals[0]), median(&mut totals[1]));
        println!(
            "medians: writing a click costs {off:.2} us with analytics off, {on:.2} us on; analytics adds {:.2} us",
            on - off
        );
    }
}
