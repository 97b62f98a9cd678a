//! What the load, flusher, stream and cache benchmarks share: links written straight into an embedded
//! store, the headers of the visits they click with, and CPU time read from /proc.
#![allow(dead_code)] // each bench uses a different part

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kurz::analytics::Headers;
use kurz::code::CodeGenerator;
use kurz::store::{EmbeddedStore, Link, LinkStore};

/// Writes `count` links straight into a fresh embedded store, as kurz would have made them
/// (leased ids through the permutation), and returns their codes.
pub fn prefill(path: &Path, count: u64) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(path, Duration::from_secs(60)).expect("open"));
        let ids = store.lease_ids(count).await.expect("lease");
        // Any key: these links are written straight into the store under these codes.
        let generator = CodeGenerator::new(b"load-benchmark-prefill");
        let codes: Vec<String> = ids.filter_map(|id| generator.code_for(id)).collect();
        for chunk in codes.chunks(10_000) {
            let mut tasks = Vec::with_capacity(chunk.len());
            for code in chunk {
                let (store, code) = (Arc::clone(&store), code.clone());
                tasks.push(tokio::spawn(async move {
                    let link = Link {
                        url: long_url(&code),
                        code,
                        created_at_ms: kurz::clock::system_now_ms(),
                        ..Link::default()
                    };
                    store.insert(&link, None).await.expect("insert");
                }));
            }
            for task in tasks {
                task.await.expect("insert task");
            }
        }
        store.close().await;
        codes
    })
}

/// Long URLs in the hot-set section: 70 bytes, the size the memory target is stated for.
pub const URL_BYTES: usize = 70;

/// A 70-byte URL for `code` (codes are 7 characters).
fn long_url(code: &str) -> String {
    let url = format!("https://www.example.com/articles/2026/some-article-title/{code}");
    format!("{url}{}", "x".repeat(URL_BYTES.saturating_sub(url.len())))
}

/// The user agents of the visits the benchmarks send: phones, desktops, in-app browsers, and a
/// few crawlers, link-preview fetchers and monitors.
pub const AGENTS: [&str; 12] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 350.0.0.0.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
];

/// The countries the visits come from.
pub const COUNTRIES: [&str; 10] = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "NL", "CA", "ES"];

/// A small xorshift generator: the same clicks in every run and mode.
pub struct Draw(pub u64);

impl Draw {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Link popularity as Zipf(1.0): the link of rank k is drawn in proportion to 1/k.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(links: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=links)
            .map(|k| {
                total += 1.0 / k as f64;
                total
            })
            .collect();
        Self { cumulative }
    }

    /// A rank, 0 the most clicked.
    pub fn sample(&self, draw: &mut Draw) -> usize {
        self.rank(draw.next(1 << 53) as f64 / (1u64 << 53) as f64)
    }

    /// The rank at `u` of [0, 1) on the cumulative distribution: a rank drawn by a uniform `u`.
    pub fn rank(&self, u: f64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = u * total;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

/// A visit's headers as the visits script makes them: a random agent, a referrer from 50
/// sites (or none, one time in six), a country and a client address from 10.0.0.0/12.
pub struct Sent {
    agent: &'static str,
    referer: String,
    country: &'static str,
    ip: IpAddr,
}

impl Sent {
    pub fn draw(draw: &mut Draw) -> Self {
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
        Self {
            agent,
            referer,
            country,
            ip,
        }
    }

    pub fn headers(&self) -> Headers<'_> {
        Headers {
            user_agent: self.agent.as_bytes(),
            referer: self.referer.as_bytes(),
            country: self.country.as_bytes(),
            client_ip: self.ip,
        }
    }
}

/// utime + stime of a /proc stat line, in seconds (100 ticks a second).
pub fn cpu_of_stat(stat: &str) -> f64 {
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the name start at the state (field 3): utime is field 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}
