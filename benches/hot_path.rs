//! Micro-benchmarks of the redirect path's own work: an L1 cache hit and recording a click.
//! Run: `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kurz::analytics::{Headers, Visits};
use kurz::cache::{Cached, LocalCache, Target};
use kurz::clicks::ClickRecorder;
use kurz::config::LocalCacheSettings;
use kurz::telemetry::Metrics;

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let now = kurz::clock::system_now_ms();
    let cache = LocalCache::new(&LocalCacheSettings::default(), now);
    let codes: Vec<String> = (0..10_000).map(|i| format!("c{i:06}")).collect();
    runtime.block_on(async {
        for code in &codes {
            let url = format!("https://example.com/{code}");
            let target = Cached::Found(Target::new(&url, 302, None).expect("valid"));
            cache
                .get_or_load(code, now, async { Ok(target) })
                .await
                .expect("load");
        }
    });
    let mut i = 0;
    c.bench_function("l1_lookup_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % codes.len();
            cache.get(black_box(&codes[i]), now)
        })
    });

    let recorder = ClickRecorder::new(Arc::new(Metrics::default()));
    c.bench_function("record_click", |b| {
        b.iter(|| {
            i = (i + 7919) % codes.len();
            recorder.record(black_box(&codes[i]), now, None)
        })
    });

    // What a redirect adds with analytics on: copying the headers a click's details are made
    // from into its shard's buffer (the parsing happens in the flusher, which empties it).
    let headers = Headers {
        user_agent: b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        referer: b"https://news.example.com/2026/12/01/a-story-about-links?utm_source=x",
        country: b"DE",
        client_ip: std::net::IpAddr::from([192, 0, 2, 1]),
    };
    let mut visits = Visits::default();
    c.bench_function("capture_visit", |b| {
        b.iter(|| {
            if visits.len() == 4_096 {
                visits.clear();
            }
            i = (i + 7919) % codes.len();
            visits.push(black_box(&codes[i]), now, black_box(&headers));
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
