//! The L1 cache's memory and the two cache tiers' hit ratios.
//!
//! - Memory: the process's resident size before and after caching 1,000,000 links in L1,
//!   as bytes per cached link.
//! - Hit ratios under a Zipf(s = 1.0) workload over 1,000,000 links, with L1 sized to hold 10%
//!   of them: how many redirects L1 answers, how many of the rest Redis answers (Redis sized to
//!   hold every link it is sent), and how many reach the store.
//!
//! Run: `cargo bench --bench cache`.

mod common;
#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::collections::HashSet;

use kurz::cache::{Cached, LocalCache, Target};
use kurz::config::LocalCacheSettings;

use common::Zipf;

const LINKS: usize = 1_000_000;
/// The cache's clock: any fixed time (entries never reach their TTL here).
const NOW: i64 = 1_800_000_000_000;

fn code(i: usize) -> String {
    kurz::code::base62::encode_padded(i as u64 * 7_919 % 3_521_614_606_208, 7)
}

/// A typical long URL (~70 bytes).
fn target(i: usize) -> Cached {
    let url = format!("https://www.example.com/articles/2026/11/some-article-title-{i:08}");
    Cached::Found(Target::new(&url, 302, None).expect("valid URL"))
}

/// xorshift64*: a small deterministic generator, enough for sampling.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    // Memory per cached link.
    let codes: Vec<String> = (0..LINKS).map(code).collect();
    let before = harness::rss_kib("self");
    let cache = LocalCache::new(
        &LocalCacheSettings {
            max_bytes: 600 << 20,
            ..LocalCacheSettings::default()
        },
        NOW,
    );
    runtime.block_on(async {
        for (i, code) in codes.iter().enumerate() {
            let value = target(i);
            cache
                .get_or_load(code, NOW, async { Ok(value) })
                .await
                .expect("load");
        }
    });
    // Serve each link once, as a redirect does (its first redirect shares the URL's buffer).
    for code in &codes {
        match cache.get(code, NOW) {
            Some(Cached::Found(target)) => drop(std::hint::black_box(target.location().clone())),
            _ => panic!("{code} was not cached"),
        }
    }
    let after = harness::rss_kib("self");
    let per_link = (after - before) as f64 * 1024.0 / LINKS as f64;
    println!(
        "L1 with {LINKS} links (~70-byte URLs): {} entries, resident size +{} MiB, {per_link:.0} bytes per cached link",
        cache.entry_count(),
        (after - before) / 1024,
    );
    drop(cache);

    // Hit ratios under Zipf(1.0), L1 at 10% of the links.
    let weight = match target(0) {
        Cached::Found(t) => LocalCache::entry_weight(&codes[0], t.url()),
        Cached::Missing => unreachable!("a link"),
    };
    let l1 = LocalCache::new(
        &LocalCacheSettings {
            max_bytes: LINKS as u64 / 10 * weight,
            ..LocalCacheSettings::default()
        },
        NOW,
    );
    let zipf = Zipf::new(LINKS);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut redis: HashSet<usize> = HashSet::new();
    let (warm_up, measured) = (1_000_000, 4_000_000);
    let (mut l1_hits, mut redis_hits, mut store_reads) = (0u64, 0u64, 0u64);
    runtime.block_on(async {
        for n in 0..warm_up + measured {
            let rank = zipf.rank(rng.next_f64());
            let code = &codes[rank];
            let counted = n >= warm_up;
            if l1.get(code, NOW).is_some() {
                l1_hits += u64::from(counted);
                continue;
            }
            if redis.contains(&rank) {
                redis_hits += u64::from(counted);
            } else {
                store_reads += u64::from(counted);
                redis.insert(rank);
            }
            let value = target(rank);
            l1.get_or_load(code, NOW, async { Ok(value) })
                .await
                .expect("load");
        }
    });
    let measured = measured as f64;
    println!(
        "Zipf(1.0) over {LINKS} links, L1 sized for 10% of them, {measured} measured redirects after {warm_up} warm-up:"
    );
    println!("| tier | share of redirects answered |\n|---|---|");
    println!(
        "| L1 (in-process) | {:.1}% |",
        l1_hits as f64 / measured * 100.0
    );
    println!(
        "| Redis (of all redirects; {:.1}% of L1 misses) | {:.1}% |",
        redis_hits as f64 / (measured - l1_hits as f64) * 100.0,
        redis_hits as f64 / measured * 100.0
    );
    println!("| store | {:.1}% |", store_reads as f64 / measured * 100.0);
}
