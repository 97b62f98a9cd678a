//! The click stream (`clicks.sink = "kinesis"`) on kinesis-local and DynamoDB Local: what one
//! instance's sink sends, what one `kurz aggregate` consumer folds and writes, and the ratios
//! that decide what the stream costs: events per record, bytes per event, link writes per event.
//!
//! The deltas are those an instance's click flusher makes with analytics on: each a flush
//! interval of clicks on links drawn by Zipf(1.0), their visits (the flusher bench's agents,
//! referrers, countries and addresses) classified and rolled up by hour by the analytics
//! aggregator. The emulators are not AWS and share the cores with this process, so the rates
//! are theirs; what carries over is the per-event ratios.
//!
//! Run: `cargo bench --bench stream` (needs DynamoDB Local and kinesis-local: `scripts/test.sh`
//! installs both). Options through the environment: `STREAM_LINKS` (links clicked, default
//! 1,000), `STREAM_PRODUCER_RATE` (clicks/s of the instance whose flushes the producer sends,
//! default 2,000), `STREAM_PRODUCER_SECONDS` (default 20), `STREAM_INSTANCES` (instances sending
//! to the consumer, default 4), `STREAM_CONSUMER_RATE` (clicks/s on each, default 100),
//! `STREAM_CONSUMER_SECONDS` (of sending, default 40), `STREAM_ONLY=producer` or `consumer`.

mod common;
#[path = "../tests/it/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_kinesis::config::{ConfigBag, Intercept};
use aws_sdk_kinesis::error::BoxError;
use aws_sdk_kinesis::operation::put_records::PutRecordsInput;
use harness::{Backend, DynamoLocal, KinesisLocal, TestStore, unique_name};
use kurz::analytics::aggregate::Aggregator;
use kurz::analytics::classify::{Classifier, Countries};
use kurz::analytics::uniques::DayKey;
use kurz::analytics::{Headers, Visits};
use kurz::clicks::Sink;
use kurz::clicks::stream::{self, StreamSink};
use kurz::code::CodeGenerator;
use kurz::config::{ClickSink, MIN_AGGREGATE_WINDOW, Settings};
use kurz::store::{ClickDelta, ClickLimits, Link, LinkStore};
use kurz::telemetry::{Metrics, STORE_CLASSES};
use tokio::sync::Semaphore;

use common::{Draw, Sent, Zipf, cpu_of_stat};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a run does, from the environment (see the module documentation).
struct Options {
    links: usize,
    producer_rate: u64,
    producer_seconds: u64,
    instances: usize,
    consumer_rate: u64,
    consumer_seconds: u64,
    only: Option<String>,
}

impl Options {
    fn from_env() -> Self {
        Self {
            links: env_or("STREAM_LINKS", 1_000) as usize,
            producer_rate: env_or("STREAM_PRODUCER_RATE", 2_000),
            producer_seconds: env_or("STREAM_PRODUCER_SECONDS", 20),
            instances: env_or("STREAM_INSTANCES", 4) as usize,
            consumer_rate: env_or("STREAM_CONSUMER_RATE", 100),
            consumer_seconds: env_or("STREAM_CONSUMER_SECONDS", 40),
            only: std::env::var("STREAM_ONLY").ok(),
        }
    }

    fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }
}

/// CPU seconds (user + system) of a process: `"self"` or a pid.
fn cpu_s(process: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/stat")).map_or(0.0, |stat| cpu_of_stat(&stat))
}

/// What the `PutRecords` calls carried, counted as the SDK sends them.
#[derive(Debug, Default)]
struct Puts {
    calls: AtomicU64,
    records: AtomicU64,
    data_bytes: AtomicU64,
    /// Partition keys (Kinesis counts them in a record's size) and explicit hash keys.
    key_bytes: AtomicU64,
    /// What Kinesis bills a put by: each record's data and partition key, in 25 KB units.
    payload_units: AtomicU64,
}

/// Kinesis's PUT payload unit.
const PAYLOAD_UNIT: usize = 25 * 1024;

#[derive(Debug)]
struct CountPuts(Arc<Puts>);

impl Intercept for CountPuts {
    fn name(&self) -> &'static str {
        "CountPuts"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<PutRecordsInput>() {
            let puts = &self.0;
            puts.calls.fetch_add(1, Ordering::Relaxed);
            for record in input.records() {
                puts.records.fetch_add(1, Ordering::Relaxed);
                let data = record.data().as_ref().len();
                let partition_key = record.partition_key().map_or(0, str::len);
                let keys = partition_key + record.explicit_hash_key().map_or(0, str::len);
                let units = (data + partition_key).div_ceil(PAYLOAD_UNIT);
                puts.data_bytes.fetch_add(data as u64, Ordering::Relaxed);
                puts.key_bytes.fetch_add(keys as u64, Ordering::Relaxed);
                puts.payload_units
                    .fetch_add(units as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// What the stream took from a sink, by its metrics and the puts the SDK sent.
#[derive(Debug, Clone, Copy)]
struct Took {
    events: u64,
    records: u64,
    calls: u64,
    data_bytes: u64,
    key_bytes: u64,
    payload_units: u64,
}

impl Took {
    fn of(metrics: &Metrics, puts: &Puts) -> Self {
        let took = Self {
            events: metrics.click_stream_events.get(),
            records: metrics.click_stream_records.get(),
            calls: puts.calls.load(Ordering::Relaxed),
            data_bytes: puts.data_bytes.load(Ordering::Relaxed),
            key_bytes: puts.key_bytes.load(Ordering::Relaxed),
            payload_units: puts.payload_units.load(Ordering::Relaxed),
        };
        // Every record put was taken (none refused and sent again), so the bytes counted at
        // the puts are those of the records the metrics count.
        assert_eq!(
            puts.records.load(Ordering::Relaxed),
            took.records,
            "records put = records taken"
        );
        took
    }

    fn minus(self, before: &Self) -> Self {
        Self {
            events: self.events - before.events,
            records: self.records - before.records,
            calls: self.calls - before.calls,
            data_bytes: self.data_bytes - before.data_bytes,
            key_bytes: self.key_bytes - before.key_bytes,
            payload_units: self.payload_units - before.payload_units,
        }
    }

    /// The rows that carry over to Kinesis itself.
    fn print_ratios(&self, clicks: u64) {
        let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
        println!(
            "| events per record | {:.1} |",
            per(self.events, self.records)
        );
        println!(
            "| records per PutRecords call | {:.2} |",
            per(self.records, self.calls)
        );
        println!(
            "| record data bytes per event | {:.1} |",
            per(self.data_bytes, self.events)
        );
        println!(
            "| record data bytes per click | {:.1} |",
            per(self.data_bytes, clicks)
        );
        println!(
            "| record data bytes per record (+ partition and hash keys) | {:.0} (+ {:.0}) |",
            per(self.data_bytes, self.records),
            per(self.key_bytes, self.records)
        );
        println!(
            "| PUT payload units (25 KB) per 1,000 events | {:.2} |",
            1_000.0 * per(self.payload_units, self.events)
        );
    }
}

/// kurz's Kinesis client for `settings`, with the puts it sends counted into `puts`.
async fn kinesis_client(settings: &Settings, puts: &Arc<Puts>) -> aws_sdk_kinesis::Client {
    let client = stream::client(settings).await.expect("kinesis client");
    let config = client
        .config()
        .to_builder()
        .interceptor(CountPuts(Arc::clone(puts)))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// Settings for instances and the consumer on `store` and the stream `name` on `kinesis`
/// (created as `kurz init` does): production's flush interval, the shortest aggregate window.
async fn on_stream(store: &TestStore, kinesis: &KinesisLocal, name: &str) -> Settings {
    let mut s = store.settings();
    s.clicks.flush_interval = Settings::default().clicks.flush_interval;
    s.clicks.sink = ClickSink::Kinesis;
    s.clicks.kinesis.endpoint_url = Some(kinesis.endpoint.clone());
    s.clicks.kinesis.stream = name.to_owned();
    s.aggregate.window = MIN_AGGREGATE_WINDOW;
    s.aggregate.worker_id = Some("bench".into());
    let client = stream::client(&s).await.expect("kinesis client");
    stream::ensure_stream(&client, &s.clicks.kinesis)
        .await
        .expect("kurz init's stream");
    s
}

/// Creates `count` links in the table (as kurz would name them) and returns their codes.
async fn create_links(store: &Arc<dyn LinkStore>, count: usize) -> Vec<String> {
    let generator = CodeGenerator::new(b"stream-benchmark-links");
    let codes: Vec<String> = (1..)
        .filter_map(|id| generator.code_for(id))
        .take(count)
        .collect();
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(count);
    for code in &codes {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
        let (store, code) = (Arc::clone(store), code.clone());
        tasks.push(tokio::spawn(async move {
            let link = Link {
                url: format!("https://www.example.com/articles/2026/{code}"),
                code,
                created_at_ms: kurz::clock::system_now_ms(),
                ..Link::default()
            };
            store.insert(&link, None).await.expect("insert");
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("insert task");
    }
    codes
}

/// `count` flushes of one instance, as its click flusher makes them with analytics on: each a
/// flush interval of clicks at `rate` a second on `codes` drawn by `zipf`, each link's visits
/// classified and rolled up by hour (referrer, country, device, browser, OS, visitors).
fn flushes(
    codes: &[String],
    zipf: &Zipf,
    rate: u64,
    settings: &Settings,
    count: usize,
    seed: u64,
) -> Vec<Vec<ClickDelta>> {
    let countries = Arc::new(Countries::open(None).expect("no country database"));
    let cap = settings.analytics.max_values_per_dimension;
    let mut aggregator = Aggregator::new(Classifier::new(countries), cap);
    let now = kurz::clock::system_now_ms();
    let today = kurz::clock::day_of(now);
    for day in [today, today + 1] {
        aggregator.set_key(DayKey::new(day, b"stream-benchmark-day-key"), true);
    }
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15 ^ seed);
    let sent: Vec<Sent> = (0..4096).map(|_| Sent::draw(&mut draw)).collect();
    let interval_ms = i64::try_from(settings.clicks.flush_interval.as_millis()).unwrap_or(1_000);
    let per_flush = (rate * interval_ms as u64 / 1_000).max(1);
    let mut visits = Visits::default();
    let mut all = Vec::with_capacity(count);
    for flush in 0..count {
        visits.clear();
        let start = now + flush as i64 * interval_ms;
        for i in 0..per_flush {
            let at = start + (i as i64 * interval_ms) / per_flush as i64;
            let code = &codes[zipf.sample(&mut draw)];
            let headers: Headers = sent[draw.next(sent.len() as u64) as usize].headers();
            visits.push(code, at, &headers);
        }
        let mut fresh: HashMap<&str, ClickDelta> = HashMap::new();
        for (code, at, visit) in visits.iter() {
            let delta = fresh.entry(code).or_insert_with(|| ClickDelta {
                code: code.to_owned(),
                ..ClickDelta::default()
            });
            delta.count += 1;
            delta.last_click_ms = delta.last_click_ms.max(at);
            aggregator.add(&mut delta.hours, at, &visit);
        }
        let deltas: Vec<ClickDelta> = fresh
            .into_values()
            .enumerate()
            .map(|(i, delta)| ClickDelta {
                token: format!("bench-{seed}-{flush}-{i}"),
                ..delta
            })
            .collect();
        all.push(deltas);
    }
    all
}

fn clicks_of(flush: &[ClickDelta]) -> u64 {
    flush.iter().map(|d| d.count).sum()
}

/// The producer: one instance's sink sending its flushes back to back for a while.
async fn producer(
    settings: &Settings,
    options: &Options,
    flushes: &[Vec<ClickDelta>],
    kinesis_pid: u32,
) {
    let puts = Arc::new(Puts::default());
    let metrics = Arc::new(Metrics::default());
    let sink = StreamSink::new(
        kinesis_client(settings, &puts).await,
        &settings.clicks.kinesis,
        Arc::clone(&metrics),
    );
    // The shard map read and the connections made before the clock starts.
    sink.add_clicks(&flushes[0])
        .await
        .expect("the stream takes a flush");
    let before = (
        Took::of(&metrics, &puts),
        cpu_s("self"),
        cpu_s(&kinesis_pid.to_string()),
    );
    let started = Instant::now();
    let mut flushed = 0usize;
    let mut clicks = 0;
    while started.elapsed() < Duration::from_secs(options.producer_seconds) {
        let flush = &flushes[(flushed + 1) % flushes.len()];
        sink.add_clicks(flush)
            .await
            .expect("the stream takes every flush");
        clicks += clicks_of(flush);
        flushed += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = Took::of(&metrics, &puts).minus(&before.0);
    let own = cpu_s("self") - before.1;
    let emulator = cpu_s(&kinesis_pid.to_string()) - before.2;
    assert_eq!(metrics.click_stream_put_failures.get(), 0, "no put failed");
    assert_eq!(metrics.click_stream_dropped.get(), 0, "nothing dropped");
    let interval = settings.clicks.flush_interval.as_secs_f64();
    println!(
        "producer: one instance's sink, {flushed} flushes of {interval:.0} s of {} clicks/s over {} links sent back to back for {elapsed:.1} s, {} shards",
        options.producer_rate, options.links, settings.clicks.kinesis.shards,
    );
    let (events, per) = (sent.events as f64, |n: u64, d: f64| n as f64 / d.max(1.0));
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| events/s sent (bounded by kinesis-local) | {:.0} |",
        per(sent.events, elapsed)
    );
    println!("| clicks/s sent | {:.0} |", per(clicks, elapsed));
    println!(
        "| flushes/s sent (an instance makes {:.0}/s) | {:.1} |",
        1.0 / interval,
        flushed as f64 / elapsed
    );
    println!("| records/s | {:.0} |", per(sent.records, elapsed));
    println!("| PutRecords calls/s | {:.1} |", per(sent.calls, elapsed));
    println!(
        "| events per flush | {:.0} |",
        per(sent.events, flushed as f64)
    );
    sent.print_ratios(clicks);
    println!(
        "| record data bytes per flush | {:.0} |",
        per(sent.data_bytes, flushed as f64)
    );
    println!(
        "| CPU per event: this process (the sink) / kinesis-local | {:.2} / {:.2} us |",
        own * 1e6 / events.max(1.0),
        emulator * 1e6 / events.max(1.0)
    );
}

/// The index of the store's click calls in `Metrics::store_admitted`.
fn clicks_class() -> usize {
    STORE_CLASSES
        .iter()
        .position(|&c| c == "clicks")
        .expect("a clicks class")
}

/// The consumer: `instances` sinks each sending a flush per flush interval for `seconds`,
/// while one `kurz aggregate` consumer folds and writes them; then until it has written all.
async fn consumer(
    settings: &Settings,
    options: &Options,
    instances: &[Vec<Vec<ClickDelta>>],
    dynamo_pid: u32,
    kinesis_pid: u32,
) {
    let puts = Arc::new(Puts::default());
    let sent_metrics = Arc::new(Metrics::default());
    let client = kinesis_client(settings, &puts).await;
    let sinks: Vec<StreamSink> = instances
        .iter()
        .map(|_| {
            StreamSink::new(
                client.clone(),
                &settings.clicks.kinesis,
                Arc::clone(&sent_metrics),
            )
        })
        .collect();
    let metrics = Arc::new(Metrics::default());
    let store = kurz::store::open_with(
        &settings.store,
        ClickLimits::of(&settings.analytics),
        Arc::clone(&metrics),
    )
    .await
    .expect("the consumer's store");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let consumer = tokio::spawn({
        let (settings, metrics) = (settings.clone(), Arc::clone(&metrics));
        async move {
            kurz::aggregate::run(&settings, store, metrics, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    // Time the consumer spends writing: the tenths of a second in which it made store calls.
    let (done, finished) = tokio::sync::watch::channel(false);
    let busy = tokio::spawn({
        let metrics = Arc::clone(&metrics);
        async move {
            let calls = || metrics.store_admitted[clicks_class()].get();
            let (mut last, mut tenths) = (calls(), 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !*finished.borrow() {
                tick.tick().await;
                let now = calls();
                if now != last {
                    tenths += 1;
                    last = now;
                }
            }
            tenths as f64 / 10.0
        }
    });
    let interval = settings.clicks.flush_interval;
    let (own0, dynamo0, kinesis0) = (
        cpu_s("self"),
        cpu_s(&dynamo_pid.to_string()),
        cpu_s(&kinesis_pid.to_string()),
    );
    let mut clicks = 0;
    let mut tick = tokio::time::Instant::now();
    let mut flush = 0;
    while started.elapsed() < Duration::from_secs(options.consumer_seconds) {
        let sends = sinks.iter().zip(instances).map(|(sink, flushes)| {
            let deltas = &flushes[flush % flushes.len()];
            async move {
                sink.add_clicks(deltas)
                    .await
                    .expect("the stream takes every flush");
                clicks_of(deltas)
            }
        });
        clicks += futures_util::future::join_all(sends)
            .await
            .into_iter()
            .sum::<u64>();
        flush += 1;
        tick += interval;
        tokio::time::sleep_until(tick).await;
    }
    let sent_for = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(90);
    while metrics.aggregate_clicks.get() < clicks {
        assert!(
            Instant::now() < deadline,
            "the consumer did not write every click within 90 s of the last sent: {} of {clicks}",
            metrics.aggregate_clicks.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written_for = started.elapsed();
    let (own, dynamo, kinesis) = (
        cpu_s("self") - own0,
        cpu_s(&dynamo_pid.to_string()) - dynamo0,
        cpu_s(&kinesis_pid.to_string()) - kinesis0,
    );
    let _ = done.send(true);
    let busy = busy.await.expect("busy sampler");
    let _ = stop.send(());
    consumer
        .await
        .expect("consumer task")
        .expect("the consumer ran");
    assert_eq!(
        metrics.aggregate_clicks.get(),
        clicks,
        "every click written once"
    );
    assert_eq!(metrics.aggregate_duplicate_records.get(), 0);
    assert_eq!(metrics.aggregate_bad_records.get(), 0);
    assert_eq!(sent_metrics.click_stream_put_failures.get(), 0);
    let events = metrics.aggregate_events.get();
    assert_eq!(
        events,
        sent_metrics.click_stream_events.get(),
        "every event sent is folded"
    );
    let writes = metrics.aggregate_link_writes.get();
    let windows = metrics.aggregate_windows.get();
    let records = metrics.aggregate_records.get();
    let calls = metrics.store_admitted[clicks_class()].get();
    let shards = u64::from(settings.clicks.kinesis.shards);
    let took = Took::of(&sent_metrics, &puts);
    let (sent_for, written_for) = (sent_for.as_secs_f64(), written_for.as_secs_f64());
    println!(
        "consumer: {} instances at {} clicks/s each over {} links ({flush} flushes each), one `kurz aggregate`, {shards} shards, {} s windows; the last click written {:.1} s after the last sent",
        instances.len(),
        options.consumer_rate,
        options.links,
        settings.aggregate.window.as_secs(),
        written_for - sent_for,
    );
    let per = |n: u64, d: u64| n as f64 / d.max(1) as f64;
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| events/s sent (all instances) | {:.0} |",
        events as f64 / sent_for
    );
    println!(
        "| events/s folded and written, first sent to last written | {:.0} |",
        events as f64 / written_for
    );
    println!(
        "| events/s folded and written while writing (bounded by DynamoDB Local) | {:.0} |",
        events as f64 / busy
    );
    println!(
        "| link writes/s while writing | {:.0} |",
        writes as f64 / busy
    );
    println!("| time writing, of first sent to last written | {busy:.1} of {written_for:.1} s |");
    println!("| windows (one shard each) | {windows} |");
    println!(
        "| a shard's windows, one every | {:.1} s |",
        written_for * shards as f64 / windows.max(1) as f64
    );
    println!(
        "| events per window (a shard's) | {:.0} |",
        per(events, windows)
    );
    println!(
        "| link writes per window (a shard's) | {:.0} |",
        per(writes, windows)
    );
    println!("| link writes per event | {:.3} |", per(writes, events));
    println!("| records per window | {:.1} |", per(records, windows));
    println!("| clicks written (each once) | {clicks} |");
    took.print_ratios(clicks);
    println!(
        "| store calls per link write (the click flush's, lease calls apart) | {:.2} |",
        per(calls, writes)
    );
    println!(
        "| CPU per link write: this process (consumer and sinks) / DynamoDB Local / kinesis-local | {:.0} / {:.0} / {:.0} us |",
        own * 1e6 / writes.max(1) as f64,
        dynamo * 1e6 / writes.max(1) as f64,
        kinesis * 1e6 / writes.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let options = Options::from_env();
    let started = Instant::now();
    let dynamo = DynamoLocal::start_warm().await;
    let kinesis = KinesisLocal::start();
    let store = TestStore::with_endpoint(Backend::Dynamodb, dynamo.endpoint.clone()).await;
    let defaults = store.settings();
    let table = kurz::store::open_with(
        &defaults.store,
        ClickLimits::of(&defaults.analytics),
        Arc::new(Metrics::default()),
    )
    .await
    .expect("the table");
    let codes = create_links(&table, options.links).await;
    table.close().await;
    let zipf = Zipf::new(codes.len());
    println!(
        "set-up: DynamoDB Local and kinesis-local started, {} links created, in {:.1} s",
        options.links,
        started.elapsed().as_secs_f64()
    );

    if options.runs("producer") {
        let settings = on_stream(&store, &kinesis, &unique_name("producer")).await;
        let flushes = flushes(&codes, &zipf, options.producer_rate, &settings, 30, 1);
        producer(&settings, &options, &flushes, kinesis.server.pid).await;
    }
    if options.runs("consumer") {
        let settings = on_stream(&store, &kinesis, &unique_name("consumer")).await;
        // Two windows' worth of flushes per instance, sent in turn.
        let count = (2 * settings.aggregate.window.as_millis()
            / settings.clicks.flush_interval.as_millis().max(1)) as usize;
        let per_instance: Vec<_> = (0..options.instances)
            .map(|i| {
                let seed = 100 + i as u64;
                flushes(&codes, &zipf, options.consumer_rate, &settings, count, seed)
            })
            .collect();
        consumer(
            &settings,
            &options,
            &per_instance,
            dynamo.server.pid,
            kinesis.server.pid,
        )
        .await;
    }
    println!("whole run: {:.1} s", started.elapsed().as_secs_f64());
}
