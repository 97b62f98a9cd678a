//! The embedded store's clicks: an append-only log, merged into rollups in the background and
//! on read.
//!
//! A flush carries tens of thousands of distinct codes a second at the redirect ceiling.
//! Written as updates of per-code rows, each one lands on a random page of every table it
//! touches, and a commit rewrites all those pages: the store fell behind at ~40,000 clicks/s
//! over 1,000,000 links. So a flush only appends: its deltas, sorted by code, go into
//! [`CLICK_LOG`] under one sequence number, keys `(seq, code)` greater than every key before
//! them, so the commit writes a few fresh pages. Every [`MERGE_AFTER`] (or once more than
//! [`MERGE_AFTER_SEQS`] flushes wait) the writer thread merges the log into the rollups, in
//! chunks of codes in ascending order, each chunk one transaction that adds its clicks to
//! [`CLICK_TOTALS`], [`CLICK_DAYS`] (per code per day, for the life of the link) and
//! [`CLICK_HOURS`] (per hour per code, kept `analytics.hourly_retention_days`) and deletes
//! the log rows it took: every click is in the log or in the rollups, never both, whatever
//! crash comes between two chunks. A merge visits each page of the rollup tables once, however
//! many flushes it folds. Reads add what the log still holds, so statistics never wait for a
//! merge.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::analytics::aggregate::rollup_for;
use crate::analytics::{Rollup, day_of_hour, day_rollups, hour_of, stored_form};
use crate::store::{Analytics, ClickDelta, ClickLimits, LinkStats};

/// (flush sequence number, code) -> [`Entry`]: flushed clicks not yet merged.
pub(super) const CLICK_LOG: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("click_log");
/// code -> (total clicks, last click ms), merged.
pub(super) const CLICK_TOTALS: TableDefinition<&str, (u64, i64)> =
    TableDefinition::new("click_totals");
/// (code, UTC day) -> [`Rollup`], merged.
pub(super) const CLICK_DAYS: TableDefinition<(&str, u32), &[u8]> =
    TableDefinition::new("click_days");
/// (UTC hour, code) -> [`Rollup`], merged; hour first, so that the hours past the retention
/// are one range at the front.
pub(super) const CLICK_HOURS: TableDefinition<(u32, &str), &[u8]> =
    TableDefinition::new("click_hours");
/// (code, UTC day) -> clicks: the daily counts of stores made before rollups, moved into
/// [`CLICK_DAYS`] on open.
pub(super) const CLICK_DAILY: TableDefinition<(&str, u32), u64> =
    TableDefinition::new("click_daily");

/// How long flushed clicks wait in the log before a merge starts. A merge costs per code it
/// folds, so the longer the wait, the more of a code's clicks one merge folds: over 1,000,000
/// links clicked at the ceiling a code has about one click per 30 s and three per 120 s, and
/// merging every 30 s took more CPU than the cores had to spare (see `benches/README.md`).
pub(super) const MERGE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);
/// Flushes waiting in the log past which a merge starts anyway (each read looks at every one).
pub(super) const MERGE_AFTER_SEQS: u64 = 120;
/// Most log rows one merge chunk takes (shared out among the flushes it merges, at least
/// [`MIN_RUN`] from each).
const MERGE_CHUNK: usize = 8_192;
const MIN_RUN: usize = 64;
/// Most expired hourly rows one merge chunk deletes.
const PRUNE_CHUNK: usize = 16_384;

/// One code's clicks in one flush, as the log holds them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    count: u64,
    last_click_ms: i64,
    hours: Vec<(u32, Rollup)>,
}

impl Entry {
    fn decode(bytes: &[u8]) -> Option<Self> {
        // Written by this module only; a row that does not decode is skipped (and counted
        // nowhere) rather than failing every read of its code.
        postcard::from_bytes(bytes).ok()
    }

    fn encode(&self) -> Vec<u8> {
        stored_form(self)
    }

    fn merge(&mut self, other: Entry, cap: usize) {
        self.count += other.count;
        self.last_click_ms = self.last_click_ms.max(other.last_click_ms);
        merge_hours(&mut self.hours, other.hours, cap);
    }
}

/// Adds rollups keyed by hour (or day) into `into`, both ascending.
fn merge_hours(into: &mut Vec<(u32, Rollup)>, more: Vec<(u32, Rollup)>, cap: usize) {
    for (at, rollup) in more {
        rollup_for(into, at).merge(&rollup, cap);
    }
}

/// A delta as the log stores it: made by the caller, so the writer thread only inserts.
pub(super) fn log_row(delta: &ClickDelta) -> (String, Vec<u8>) {
    let entry = EntryRef {
        count: delta.count,
        last_click_ms: delta.last_click_ms,
        hours: &delta.hours,
    };
    let bytes = stored_form(&entry);
    (delta.code.clone(), bytes)
}

/// [`Entry`]'s stored form, borrowed.
#[derive(Serialize)]
struct EntryRef<'a> {
    count: u64,
    last_click_ms: i64,
    hours: &'a [(u32, Rollup)],
}

/// Appends one flush's rows (from [`log_row`], in ascending code order) under `seq`.
///
/// Only appends: no other table is read, since a flush's codes are spread over every link
/// and a read per code would land on a random page each. Rows of links deleted meanwhile
/// are dropped by the merge, which looks every code up anyway.
pub(super) fn append(
    txn: &WriteTransaction,
    seq: u64,
    rows: &[(String, Vec<u8>)],
    cap: usize,
) -> Result<(), redb::Error> {
    let mut log = txn.open_table(CLICK_LOG)?;
    for (code, bytes) in rows {
        let key = (seq, code.as_str());
        // One code twice under one sequence number (never from the flusher; possible from a
        // caller): added up.
        let Some(there) = log
            .insert(key, bytes.as_slice())?
            .and_then(|old| Entry::decode(old.value()))
        else {
            continue;
        };
        if let Some(mut entry) = Entry::decode(bytes) {
            entry.merge(there, cap);
            log.insert(key, entry.encode().as_slice())?;
        }
    }
    Ok(())
}

/// The flush sequence numbers in the log below `below`, ascending.
fn seqs<T: ReadableTable<(u64, &'static str), &'static [u8]>>(
    log: &T,
    below: u64,
) -> Result<Vec<u64>, redb::Error> {
    let mut seqs = Vec::new();
    let mut from = 0u64;
    while from < below {
        let Some(first) = log.range((from, "")..(below, ""))?.next() else {
            break;
        };
        let seq = first?.0.value().0;
        seqs.push(seq);
        from = seq + 1;
    }
    Ok(seqs)
}

/// The next sequence number to append under: one past the log's last.
pub(super) fn next_seq<T: ReadableTable<(u64, &'static str), &'static [u8]>>(
    log: &T,
) -> Result<u64, redb::Error> {
    Ok(log.last()?.map_or(0, |(key, _)| key.value().0 + 1))
}

/// A merge of the log below `up_to`, going through codes in ascending order.
#[derive(Debug)]
pub(super) struct Merge {
    pub up_to: u64,
    /// The last code merged; the next chunk starts after it.
    after: Option<String>,
    /// Most rows a chunk takes.
    rows: usize,
}

impl Merge {
    pub fn below(up_to: u64) -> Self {
        Self {
            up_to,
            after: None,
            rows: MERGE_CHUNK,
        }
    }
}

/// One flush's rows in a merge chunk: its sequence number, the rows (code order), and
/// whether it had more past them.
type Run = (u64, Vec<(String, Entry)>, bool);

/// Merges one chunk of codes; `true` when the merge is done.
pub(super) fn merge_chunk(
    txn: &WriteTransaction,
    merge: &mut Merge,
    layout: &super::Layout,
    limits: ClickLimits,
    now_ms: i64,
) -> Result<bool, redb::Error> {
    let mut log = txn.open_table(CLICK_LOG)?;
    let start = match &merge.after {
        Some(code) => Bound::Excluded(code.as_str()),
        None => Bound::Unbounded,
    };
    // Up to a share of the chunk's rows from each flush after `start`; the chunk ends at the
    // lowest last code among the flushes that had more, so that it holds every row of its
    // codes.
    let seqs = seqs(&log, merge.up_to)?;
    let run_rows = (merge.rows / seqs.len().max(1)).max(MIN_RUN);
    let mut runs: Vec<Run> = Vec::new();
    for seq in seqs {
        let lower = match start {
            Bound::Excluded(code) => Bound::Excluded((seq, code)),
            _ => Bound::Included((seq, "")),
        };
        let mut rows = Vec::new();
        let mut full = false;
        for row in log.range::<(u64, &str)>((lower, Bound::Excluded((seq + 1, ""))))? {
            let (key, value) = row?;
            if rows.len() == run_rows {
                full = true;
                break;
            }
            rows.push((
                key.value().1.to_owned(),
                Entry::decode(value.value()).unwrap_or_default(),
            ));
        }
        runs.push((seq, rows, full));
    }
    let end: Option<String> = runs
        .iter()
        .filter(|(_, rows, full)| *full && !rows.is_empty())
        .filter_map(|(_, rows, _)| rows.last().map(|(code, _)| code.clone()))
        .min();
    let mut by_code: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for (seq, rows, _) in runs {
        for (code, entry) in rows {
            if end.as_ref().is_some_and(|end| code > *end) {
                break;
            }
            log.remove((seq, code.as_str()))?;
            by_code.entry(code).or_default().push(entry);
        }
    }
    drop(log);
    let links = super::links::Tables::open(txn)?;
    let mut totals = txn.open_table(CLICK_TOTALS)?;
    let mut days = txn.open_table(CLICK_DAYS)?;
    let mut hours = txn.open_table(CLICK_HOURS)?;
    let keep_from = hour_of(now_ms).saturating_sub(limits.retention_hours);
    for (code, entries) in by_code {
        let code = code.as_str();
        let Some(created_at_ms) = links
            .get(layout.place(code), |v| {
                serde_json::from_slice::<Created>(v).ok()
            })?
            .flatten()
            .map(|link| link.created_at_ms)
        else {
            continue; // deleted since the click: its statistics went with it
        };
        let Some(entry) = of_link(entries, created_at_ms, limits.max_values) else {
            continue;
        };
        let (total, last) = totals.get(code)?.map(|v| v.value()).unwrap_or((0, 0));
        totals.insert(
            code,
            (
                total.saturating_add(entry.count),
                last.max(entry.last_click_ms),
            ),
        )?;
        for (hour, rollup) in &entry.hours {
            if *hour < keep_from {
                continue;
            }
            let mut merged = hours
                .get((*hour, code))?
                .and_then(|v| Rollup::decode(v.value()).ok())
                .unwrap_or_default();
            merged.merge(rollup, limits.max_values);
            hours.insert((*hour, code), merged.encode().as_slice())?;
        }
        for (day, rollup) in day_rollups(&entry.hours, limits.max_values) {
            let mut merged = days
                .get((code, day))?
                .and_then(|v| Rollup::decode(v.value()).ok())
                .unwrap_or_default();
            merged.merge(&rollup, limits.max_values);
            days.insert((code, day), merged.encode().as_slice())?;
        }
    }
    // Hourly rollups past the retention go, a bounded number per chunk.
    let expired = hours
        .extract_from_if::<(u32, &str), _>(..(keep_from, ""), |_, _| true)?
        .take(PRUNE_CHUNK)
        .count();
    if expired > 0 {
        tracing::debug!(
            rows = expired,
            "pruned hourly click rollups past the retention"
        );
    }
    match end {
        Some(end) => {
            merge.after = Some(end);
            Ok(false)
        }
        None => Ok(true),
    }
}

/// The one field of a stored link that a merge needs (the rest of its record is skipped, not
/// decoded).
#[derive(Deserialize)]
struct Created {
    created_at_ms: i64,
}

/// Log entries of one code merged, leaving out the clicks of an earlier link under the code
/// than the one made at `created_at_ms`: entries whose last click came before it, and hours
/// before its hour. `None` when nothing is left.
fn of_link(
    entries: impl IntoIterator<Item = Entry>,
    created_at_ms: i64,
    cap: usize,
) -> Option<Entry> {
    let created_hour = hour_of(created_at_ms);
    let mut total: Option<Entry> = None;
    for mut entry in entries {
        if entry.last_click_ms < created_at_ms {
            continue;
        }
        entry.hours.retain(|(hour, _)| *hour >= created_hour);
        match &mut total {
            Some(total) => total.merge(entry, cap),
            None => total = Some(entry),
        }
    }
    let mut total = total?;
    total.count = total.hours.iter().map(|(_, r)| r.clicks).sum();
    Some(total)
}

/// What the log still holds for `code`, a link made at `created_at_ms` (see [`of_link`]).
fn unmerged<T: ReadableTable<(u64, &'static str), &'static [u8]>>(
    log: &T,
    code: &str,
    created_at_ms: i64,
    cap: usize,
) -> Result<Entry, redb::Error> {
    let mut entries = Vec::new();
    for seq in seqs(log, u64::MAX)? {
        if let Some(entry) = log.get((seq, code))?.and_then(|v| Entry::decode(v.value())) {
            entries.push(entry);
        }
    }
    Ok(of_link(entries, created_at_ms, cap).unwrap_or_default())
}

/// A link's rollups for `from_hour..=to_hour` and their days, merged and from the log.
pub(super) fn read(
    txn: &redb::ReadTransaction,
    code: &str,
    created_at_ms: i64,
    from_hour: u32,
    to_hour: u32,
    cap: usize,
) -> Result<Analytics, redb::Error> {
    let created_hour = hour_of(created_at_ms);
    let hours_table = txn.open_table(CLICK_HOURS)?;
    let mut hourly = Vec::new();
    for hour in from_hour.max(created_hour)..=to_hour {
        if let Some(v) = hours_table.get((hour, code))?
            && let Ok(rollup) = Rollup::decode(v.value())
        {
            hourly.push((hour, rollup));
        }
    }
    let (from_day, to_day) = (day_of_hour(from_hour), day_of_hour(to_hour));
    let mut daily = Vec::new();
    for row in txn
        .open_table(CLICK_DAYS)?
        .range((code, from_day)..=(code, to_day))?
    {
        let (key, value) = row?;
        if let Ok(rollup) = Rollup::decode(value.value()) {
            daily.push((key.value().1, rollup));
        }
    }
    let pending = unmerged(&txn.open_table(CLICK_LOG)?, code, created_at_ms, cap)?;
    let in_range: Vec<(u32, Rollup)> = pending
        .hours
        .into_iter()
        .filter(|(hour, _)| (from_hour..=to_hour).contains(hour))
        .collect();
    let pending_days = day_rollups(&in_range, cap);
    merge_hours(&mut hourly, in_range, cap);
    merge_hours(&mut daily, pending_days, cap);
    Ok(Analytics { hourly, daily })
}

/// A link's totals and clicks per day, merged and from the log.
pub(super) fn stats(
    txn: &redb::ReadTransaction,
    code: &str,
    created_at_ms: i64,
    cap: usize,
) -> Result<LinkStats, redb::Error> {
    let (merged, last) = txn
        .open_table(CLICK_TOTALS)?
        .get(code)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    let mut daily = Vec::new();
    for row in txn
        .open_table(CLICK_DAYS)?
        .range((code, 0u32)..=(code, u32::MAX))?
    {
        let (key, value) = row?;
        let clicks = Rollup::decode(value.value()).map_or(0, |r| r.clicks);
        daily.push((key.value().1, clicks));
    }
    let pending = unmerged(&txn.open_table(CLICK_LOG)?, code, created_at_ms, cap)?;
    for (day, rollup) in day_rollups(&pending.hours, cap) {
        match daily.binary_search_by_key(&day, |(d, _)| *d) {
            Ok(i) => daily[i].1 += rollup.clicks,
            Err(i) => daily.insert(i, (day, rollup.clicks)),
        }
    }
    let total_clicks = merged + pending.count;
    let last = last.max(pending.last_click_ms);
    Ok(LinkStats {
        total_clicks,
        last_click_ms: (total_clicks > 0).then_some(last),
        daily,
    })
}

/// Removes every click of `code` (a link made at `created_at_ms`): rollups and log rows.
pub(super) fn remove(
    txn: &WriteTransaction,
    code: &str,
    created_at_ms: i64,
    now_ms: i64,
) -> Result<(), redb::Error> {
    txn.open_table(CLICK_TOTALS)?.remove(code)?;
    txn.open_table(CLICK_DAYS)?
        .retain_in((code, 0u32)..=(code, u32::MAX), |_, _| false)?;
    let mut hours = txn.open_table(CLICK_HOURS)?;
    // Rows past the retention may linger until a merge prunes them; every hour the link
    // lived is looked at (each a point delete), up to the hour after now for clocks ahead.
    let first = hour_of(created_at_ms).max(first_kept_row(&hours)?);
    for hour in first..=hour_of(now_ms).saturating_add(1) {
        hours.remove((hour, code))?;
    }
    let mut log = txn.open_table(CLICK_LOG)?;
    for seq in seqs(&log, u64::MAX)? {
        log.remove((seq, code))?;
    }
    Ok(())
}

/// The hour of the oldest hourly rollup kept.
fn first_kept_row<T: ReadableTable<(u32, &'static str), &'static [u8]>>(
    hours: &T,
) -> Result<u32, redb::Error> {
    Ok(hours.first()?.map_or(u32::MAX, |(key, _)| key.value().0))
}

/// Sets an imported link's statistics to `stats` (absolute values), replacing any.
pub(super) fn import(
    txn: &WriteTransaction,
    code: &str,
    stats: &LinkStats,
) -> Result<(), redb::Error> {
    txn.open_table(CLICK_TOTALS)?
        .insert(code, (stats.total_clicks, stats.last_click_ms.unwrap_or(0)))?;
    let mut days = txn.open_table(CLICK_DAYS)?;
    days.retain_in((code, 0u32)..=(code, u32::MAX), |_, _| false)?;
    for &(day, clicks) in &stats.daily {
        days.insert((code, day), Rollup::count_only(clicks).encode().as_slice())?;
    }
    let mut log = txn.open_table(CLICK_LOG)?;
    for seq in seqs(&log, u64::MAX)? {
        log.remove((seq, code))?;
    }
    Ok(())
}

/// Stores made before rollups kept clicks per day as plain counts: moved into
/// [`CLICK_DAYS`], in the transaction that opens the store.
pub(super) fn migrate_daily_counts(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let mut old = txn.open_table(CLICK_DAILY)?;
    if old.is_empty()? {
        return Ok(());
    }
    let mut days = txn.open_table(CLICK_DAYS)?;
    let mut moved = 0u64;
    for row in old.iter()? {
        let (key, clicks) = row?;
        let (code, day) = key.value();
        days.insert(
            (code, day),
            Rollup::count_only(clicks.value()).encode().as_slice(),
        )?;
        moved += 1;
    }
    old.retain(|_, _| false)?;
    tracing::info!(rows = moved, "moved daily click counts into rollups");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;
    use crate::analytics::uniques::DayKey;
    use crate::analytics::{Dimension, OTHER};
    use crate::store::LinkStore;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::embedded::tests::rows;
    use crate::store::faulty::link;

    const MS_PER_DAY_FOR_TESTS: i64 = 86_400_000;

    const HOUR: i64 = 3_600_000;

    fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
        EmbeddedStore::open(&dir.path().join("k.redb"), Duration::from_secs(5)).expect("open")
    }

    /// Runs a whole merge of the log now, the way the writer does it.
    fn merge_all(store: &EmbeddedStore) -> usize {
        let db = store.shared.current().expect("open");
        let mut merge = Merge::below(
            store
                .shared
                .next_seq
                .load(std::sync::atomic::Ordering::Acquire),
        );
        // Small chunks, so that a test's few thousand rows take several.
        merge.rows = 1_000;
        let mut chunks = 0;
        loop {
            let txn = db.begin_write().expect("write");
            let done = merge_chunk(
                &txn,
                &mut merge,
                &store.shared.layout(),
                store.shared.clicks,
                crate::clock::system_now_ms(),
            )
            .expect("merge");
            txn.commit().expect("commit");
            chunks += 1;
            if done {
                return chunks;
            }
        }
    }

    /// A delta of `n` human clicks from `n` visitors at `at_ms`, referred by `referrer`.
    fn delta(code: &str, at_ms: i64, n: u64, referrer: &str) -> ClickDelta {
        let key = DayKey::new(crate::clock::day_of(at_ms), b"test key");
        let mut rollup = Rollup::default();
        for i in 0..n {
            let ip = IpAddr::from((i as u32).to_be_bytes());
            rollup.add(
                &crate::analytics::human_click(referrer),
                key.visitor(ip, "ua"),
                50,
            );
        }
        ClickDelta {
            code: code.into(),
            count: n,
            last_click_ms: at_ms,
            hours: vec![(hour_of(at_ms), rollup)],
            ..ClickDelta::default()
        }
    }

    /// (hour or day, clicks, humans, uniques, referrers) of each hour, then each day.
    type Summary = (u32, u64, u64, u64, crate::analytics::Values);

    fn summary(analytics: &mut Analytics) -> Vec<Summary> {
        analytics
            .hourly
            .iter_mut()
            .chain(analytics.daily.iter_mut())
            .map(|(at, r)| {
                let values = r.values(Dimension::Referrer).to_vec();
                (*at, r.clicks, r.humans, r.uniques.estimate(), values)
            })
            .collect()
    }

    #[tokio::test]
    async fn clicks_read_alike_from_the_log_and_from_the_rollups_and_go_with_their_link() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir);
        let now = crate::clock::system_now_ms();
        // One link kept by its code, one of the generated shape, kept by its position.
        for code in ["a", "b7Code7"] {
            store.insert(&link(code), None).await.expect("insert");
        }
        // Three flushes over two days and three hours; visitors 0..n each time, so the
        // same people come back within a day.
        let day = MS_PER_DAY_FOR_TESTS;
        let t0 = (now / day) * day - day + 22 * HOUR;
        store
            .add_clicks(&[
                delta("a", t0, 3, "x.example"),
                delta("b7Code7", t0, 1, "y.example"),
            ])
            .await
            .expect("flush 1");
        store
            .add_clicks(&[delta("a", t0 + 10, 5, "y.example")])
            .await
            .expect("flush 2");
        store
            .add_clicks(&[delta("a", t0 + 3 * HOUR, 2, "x.example")])
            .await
            .expect("flush 3");
        let (from, to) = (hour_of(t0) - 1, hour_of(t0) + 5);
        let mut before = store
            .analytics("a", from, to)
            .await
            .expect("read")
            .expect("link");
        let stats_before = store.stats("a").await.expect("stats").expect("link");
        assert!(rows(&store, CLICK_LOG) > 0);
        assert!(merge_all(&store) >= 1);
        assert_eq!(
            rows(&store, CLICK_LOG),
            0,
            "the merge took every row of the log"
        );
        let mut after = store
            .analytics("a", from, to)
            .await
            .expect("read")
            .expect("link");
        assert_eq!(summary(&mut before), summary(&mut after));
        assert_eq!(
            stats_before,
            store.stats("a").await.expect("stats").expect("link")
        );
        let first_day = crate::clock::day_of(t0);
        assert_eq!(
            summary(&mut after),
            vec![
                (
                    hour_of(t0),
                    8,
                    8,
                    5,
                    vec![("x.example".into(), 3), ("y.example".into(), 5)]
                ),
                (hour_of(t0) + 3, 2, 2, 2, vec![("x.example".into(), 2)]),
                (
                    first_day,
                    8,
                    8,
                    5,
                    vec![("x.example".into(), 3), ("y.example".into(), 5)]
                ),
                (first_day + 1, 2, 2, 2, vec![("x.example".into(), 2)]),
            ]
        );
        assert_eq!(stats_before.total_clicks, 10);
        assert_eq!(stats_before.daily, vec![(first_day, 8), (first_day + 1, 2)]);
        // More clicks after the merge add to the rollups.
        store
            .add_clicks(&[delta("a", t0, 1, "z.example")])
            .await
            .expect("flush 4");
        let stats = store.stats("a").await.expect("stats").expect("link");
        assert_eq!(stats.total_clicks, 11);
        // A delete takes the link's clicks, merged or not, and leaves the other's.
        store.delete("a").await.expect("delete");
        assert!(
            store
                .analytics("a", from, to)
                .await
                .expect("read")
                .is_none()
        );
        store.insert(&link("a"), None).await.expect("insert again");
        let again = store.stats("a").await.expect("stats").expect("link");
        assert_eq!(again.total_clicks, 0, "{again:?}");
        let b = store.stats("b7Code7").await.expect("stats").expect("link");
        assert_eq!(b.total_clicks, 1);
    }

    #[tokio::test]
    async fn a_merge_in_many_chunks_counts_every_click_once() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir);
        let now = crate::clock::system_now_ms();
        let codes: Vec<String> = (0..6_000).map(|i| format!("c{i:05}")).collect();
        for code in &codes {
            store.insert(&link(code), None).await.expect("insert");
        }
        // Three flushes of overlapping codes, each with more rows than one chunk takes.
        for flush in 0..3 {
            let deltas: Vec<ClickDelta> = codes
                .iter()
                .enumerate()
                .filter(|(i, _)| (i + flush) % 3 != 0)
                .map(|(_, code)| ClickDelta::count_only(code, 1 + flush as u64, now))
                .collect();
            store.add_clicks(&deltas).await.expect("flush");
        }
        let chunks = merge_all(&store);
        assert!(chunks > 2, "{chunks} chunks");
        assert_eq!(rows(&store, CLICK_LOG), 0);
        for (i, code) in codes.iter().enumerate() {
            let expected: u64 = (0..3)
                .filter(|f| (i + f) % 3 != 0)
                .map(|f| 1 + f as u64)
                .sum();
            let stats = store.stats(code).await.expect("stats").expect("link");
            assert_eq!(stats.total_clicks, expected, "{code}");
        }
    }

    #[tokio::test]
    async fn the_writer_merges_on_its_own_once_enough_flushes_wait() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir);
        store.insert(&link("hot"), None).await.expect("insert");
        let now = crate::clock::system_now_ms();
        for i in 0..MERGE_AFTER_SEQS {
            store
                .add_clicks(&[ClickDelta::count_only("hot", 1, now + i as i64)])
                .await
                .expect("flush");
        }
        // The last flush made the merge due; poll while it runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while rows(&store, CLICK_LOG) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was never merged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stats = store.stats("hot").await.expect("stats").expect("link");
        assert_eq!(stats.total_clicks, MERGE_AFTER_SEQS);
        assert_eq!(rows(&store, CLICK_TOTALS), 1);
    }

    #[tokio::test]
    async fn clicks_from_before_a_link_was_made_and_hours_past_the_retention_are_not_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir);
        let now = crate::clock::system_now_ms();
        let made = crate::store::Link {
            created_at_ms: now - 2 * HOUR,
            ..link("new")
        };
        store.insert(&made, None).await.expect("insert");
        store.insert(&link("old"), None).await.expect("insert");
        let retention = i64::from(store.shared.clicks.retention_hours) * HOUR;
        store
            .add_clicks(&[
                delta("new", now - 5 * HOUR, 4, "before.example"),
                delta("new", now, 1, "after.example"),
                delta("old", now - retention - 3 * HOUR, 2, "long.example"),
            ])
            .await
            .expect("flush");
        let read = |code: &'static str, from: i64| {
            let store = &store;
            async move {
                let (from, to) = (hour_of(from), hour_of(now));
                store
                    .analytics(code, from, to)
                    .await
                    .expect("read")
                    .expect("link")
            }
        };
        for merged in [false, true] {
            let mut new = read("new", now - 10 * HOUR).await;
            assert_eq!(
                summary(&mut new).iter().map(|s| s.1).collect::<Vec<_>>(),
                vec![1, 1],
                "merged: {merged}"
            );
            assert_eq!(
                store
                    .stats("new")
                    .await
                    .expect("stats")
                    .expect("link")
                    .total_clicks,
                1
            );
            merge_all(&store);
        }
        // The old link's clicks are counted per day, but no hourly row past the retention.
        let mut old = read("old", now - retention - 5 * HOUR).await;
        assert!(old.hourly.is_empty(), "{:?}", summary(&mut old));
        assert_eq!(old.daily.len(), 1);
        assert_eq!(rows(&store, CLICK_HOURS), 1, "only the new link's hour");
        let _ = OTHER;
    }

    #[tokio::test]
    async fn daily_counts_of_a_store_from_before_rollups_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k.redb");
        {
            let store = open(&dir);
            store.insert(&link("abc"), None).await.expect("insert");
            store.close().await;
        }
        {
            let db = redb::Database::open(&path).expect("db");
            let txn = db.begin_write().expect("write");
            {
                let mut old = txn.open_table(CLICK_DAILY).expect("table");
                old.insert(("abc", 20_000), 7).expect("row");
                old.insert(("abc", 20_001), 2).expect("row");
                txn.open_table(CLICK_TOTALS)
                    .expect("table")
                    .insert("abc", (9, 5))
                    .expect("row");
            }
            txn.commit().expect("commit");
        }
        let store = open(&dir);
        let stats = store.stats("abc").await.expect("stats").expect("link");
        assert_eq!(stats.total_clicks, 9);
        assert_eq!(stats.daily, vec![(20_000, 7), (20_001, 2)]);
        assert_eq!(rows(&store, CLICK_DAILY), 0, "moved, not copied");
    }
}
