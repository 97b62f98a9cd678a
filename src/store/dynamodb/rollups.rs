//! Click rollups on the table, beside the link item under its code:
//! - an hour item per UTC hour with clicks (`h#YYYY-MM-DDTHH`: `hour` N, `expires_at` N, the
//!   TTL attribute: the hour's end + `analytics.hourly_retention_days`) and the day items
//!   (`day#YYYY-MM-DD`: `day` N, and `expires_at` N, the link's own TTL when it has one, so
//!   they go with the link), each with `clicks`, `humans` and
//!   `bots` N and one N attribute per value of a dimension, `d.{dimension}.{value}` (any value
//!   text: the name is only ever sent through `ExpressionAttributeNames`, and no other
//!   attribute starts with `d.`);
//! - beside each, its visitors' sketch item (`{sort key}#u`: `u` B, the HyperLogLog's stored
//!   form, and `uv` N, its version). The sketch is read, merged and written back on the
//!   condition that `uv` is still what was read; kept apart from the counters so that it
//!   costs what the sketch weighs (at most 3.3 KB) rather than what the item's values weigh,
//!   and so that an item grown near DynamoDB's 400 KB never stops it.
//!
//! A delta's counters are written with `ADD` in transactions (see [`plan`]): at most
//! [`VALUES_PER_UPDATE`] values per update of one item (an update expression allows 300
//! operators and 4 KB) and at most [`ITEMS_PER_TRANSACTION`] items per transaction.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{DAY_PREFIX, Item, TTL_ATTRIBUTE, n, number};
use crate::analytics::{Dimension, OTHER, Rollup, Uniques, Values};
use crate::clock;

pub(super) const HOUR_PREFIX: &str = "h#";
const SKETCH_SUFFIX: &str = "#u";
/// The sketch item's attributes: the sketch's bytes and its version.
pub(super) const SKETCH: &str = "u";
pub(super) const SKETCH_VERSION: &str = "uv";
const DIM_PREFIX: &str = "d.";
/// Values one update adds: DynamoDB allows 300 operators and 4 KB of text per expression.
pub(super) const VALUES_PER_UPDATE: usize = 100;
/// Rollup items of one transaction: DynamoDB's limit is 100, and the token's item and the
/// link's take two.
pub(super) const ITEMS_PER_TRANSACTION: usize = 98;
/// Bytes of value names one transaction carries at most (DynamoDB's limit on a request: 4 MB).
const NAME_BYTES_PER_TRANSACTION: usize = 1 << 20;

/// The hour item of `hour` written by `region` (`None`: a single-region deployment).
pub(super) fn hour_sort_key(hour: u32, region: Option<u8>) -> String {
    format!(
        "{HOUR_PREFIX}{}T{:02}{}",
        clock::format_day(crate::analytics::day_of_hour(hour)),
        hour % 24,
        RegionSuffix(region)
    )
}

/// The day item of `day` written by `region` (`None`: a single-region deployment).
pub(super) fn day_sort_key(day: u32, region: Option<u8>) -> String {
    format!(
        "{DAY_PREFIX}{}{}",
        clock::format_day(day),
        RegionSuffix(region)
    )
}

/// The sort key of the click total `region` keeps for a link (a deployment in regions; a
/// single region's total is on the link's item).
pub(super) fn total_sort_key(region: u8) -> String {
    format!("{TOTAL_PREFIX}{region}")
}

/// Sort keys of the links' click totals of each region.
pub(super) const TOTAL_PREFIX: &str = "clicks!";

/// The region that writes the rollup, sketch or total item `sort_key` (`None`: an item of a
/// single-region deployment's, or of one from before it had regions).
pub(super) fn written_by(sort_key: &str) -> Option<u8> {
    let item = sort_key.strip_suffix(SKETCH_SUFFIX).unwrap_or(sort_key);
    item.rsplit_once('!')?.1.parse().ok()
}

/// What a region's rollup items add to their sort key: `!` and the region's number. Each
/// region adds its clicks to items of its own, so that replication between regions (last
/// writer wins, per item) never drops one region's counts for another's; reads sum them.
/// `!` sorts below `#`, so a region's items of an hour or day sort after the single-region
/// item of it and before its sketch (`#u`): a range of hours takes all of them.
struct RegionSuffix(Option<u8>);

impl std::fmt::Display for RegionSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(region) => write!(f, "!{region}"),
            None => Ok(()),
        }
    }
}

/// The sort key of the sketch item beside the rollup item `sort_key`.
pub(super) fn sketch_sort_key(sort_key: &str) -> String {
    format!("{sort_key}{SKETCH_SUFFIX}")
}

pub(super) fn is_sketch(sort_key: &str) -> bool {
    sort_key.ends_with(SKETCH_SUFFIX)
}

/// The attribute counting the human clicks with `value` for `dimension`.
pub(super) fn value_attribute(dimension: Dimension, value: &str) -> String {
    format!("{DIM_PREFIX}{}.{value}", dimension.name())
}

fn parse_value_attribute(name: &str) -> Option<(Dimension, &str)> {
    let (dimension, value) = name.strip_prefix(DIM_PREFIX)?.split_once('.')?;
    Some((Dimension::parse(dimension)?, value))
}

/// The TTL of an hour item: the hour's end plus `retention_s`, epoch seconds.
pub(super) fn hour_expiry(hour: u32, retention_s: i64) -> i64 {
    (i64::from(hour) + 1) * 3_600 + retention_s
}

/// Attributes an update sets as they are (`day`, `hour`, `expires_at`).
pub(super) type Attributes = Vec<(&'static str, AttributeValue)>;

/// What a day item (or its sketch) sets: its day, and the TTL of its link's item when the
/// link has one (`link_ttl`), so that DynamoDB removes a link's days with the link.
pub(super) fn day_attributes(day: u32, link_ttl: Option<i64>) -> Attributes {
    let mut set = vec![("day", n(day))];
    if let Some(at) = link_ttl {
        set.push((TTL_ATTRIBUTE, n(at)));
    }
    set
}

/// An update expression with its names and values.
pub(super) struct Expression {
    pub text: String,
    pub names: Vec<(String, String)>,
    pub values: Vec<(String, AttributeValue)>,
}

/// One update of one rollup item, within one delta's writes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RollupWrite {
    pub sort_key: String,
    /// The first write of the item in the delta carries its counts and attributes.
    pub counts: Option<Counts>,
    pub values: Vec<(Dimension, Box<str>, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Counts {
    pub clicks: u64,
    pub humans: u64,
    pub bots: u64,
    pub set: Attributes,
}

impl RollupWrite {
    /// The values of each dimension counted as `other` instead: for an item DynamoDB finds
    /// too large to take more attributes.
    pub fn fold(&mut self) {
        let mut folded: Vec<(Dimension, Box<str>, u64)> = Vec::new();
        for (dimension, _, count) in self.values.drain(..) {
            match folded.iter_mut().find(|(d, _, _)| *d == dimension) {
                Some((_, _, sum)) => *sum += count,
                None => folded.push((dimension, OTHER.into(), count)),
            }
        }
        self.values = folded;
    }

    /// No values at all: the counts only.
    pub fn drop_values(&mut self) {
        self.values.clear();
    }

    /// The update: its expression, names and values.
    pub fn expression(&self) -> Expression {
        let (mut add, mut set) = (Vec::new(), Vec::new());
        let (mut names, mut values) = (Vec::new(), Vec::new());
        if let Some(counts) = &self.counts {
            for (name, count) in [
                ("clicks", counts.clicks),
                ("humans", counts.humans),
                ("bots", counts.bots),
            ] {
                // `clicks` always, so that a count-only item exists as before.
                if count > 0 || name == "clicks" {
                    add.push(format!("#{name} :{name}"));
                    names.push((format!("#{name}"), name.to_owned()));
                    values.push((format!(":{name}"), n(count)));
                }
            }
            for (i, (name, value)) in counts.set.iter().enumerate() {
                set.push(format!("#s{i} = :s{i}"));
                names.push((format!("#s{i}"), (*name).to_owned()));
                values.push((format!(":s{i}"), value.clone()));
            }
        }
        for (i, (dimension, value, count)) in self.values.iter().enumerate() {
            add.push(format!("#v{i} :v{i}"));
            names.push((format!("#v{i}"), value_attribute(*dimension, value)));
            values.push((format!(":v{i}"), n(count)));
        }
        let mut expression = String::new();
        if !add.is_empty() {
            expression = format!("ADD {}", add.join(", "));
        }
        if !set.is_empty() {
            expression.push_str(&format!(" SET {}", set.join(", ")));
        }
        Expression {
            text: expression.trim_start().to_owned(),
            names,
            values,
        }
    }

    fn name_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|(_, value, _)| value.len() + 16)
            .sum::<usize>()
            + 64
    }
}

/// The updates of one item's rollup: the counts and the first [`VALUES_PER_UPDATE`] values,
/// then the rest that many at a time.
fn item_writes(sort_key: String, rollup: &Rollup, set: Attributes) -> Vec<RollupWrite> {
    let values: Vec<(Dimension, Box<str>, u64)> = Dimension::ALL
        .into_iter()
        .flat_map(|dimension| {
            rollup
                .values(dimension)
                .iter()
                .map(move |(value, count)| (dimension, Box::from(&**value), *count))
        })
        .collect();
    let mut writes = vec![RollupWrite {
        sort_key: sort_key.clone(),
        counts: Some(Counts {
            clicks: rollup.clicks,
            humans: rollup.humans,
            bots: rollup.bots,
            set,
        }),
        values: Vec::new(),
    }];
    for (i, chunk) in values.chunks(VALUES_PER_UPDATE).enumerate() {
        if i == 0 {
            writes[0].values = chunk.to_vec();
        } else {
            writes.push(RollupWrite {
                sort_key: sort_key.clone(),
                counts: None,
                values: chunk.to_vec(),
            });
        }
    }
    writes
}

/// A delta's rollup updates, in transactions: each holds at most [`ITEMS_PER_TRANSACTION`]
/// updates, never two of one item (DynamoDB refuses that), and at most about 1 MB of names.
/// Almost always one transaction: a delta spans one or two hours, and a busy link's item
/// more than 100 values only when its visitors vary that much within one flush interval.
/// `hours` ascending by hour, `days` by day; `hour_expiry` gives an hour item's TTL,
/// `day_expiry` the day items' (the link's own, [`day_attributes`]).
pub(super) fn plan(
    hours: &[(u32, Rollup)],
    days: &[(u32, Rollup)],
    hour_expiry: impl Fn(u32) -> i64,
    day_expiry: Option<i64>,
    region: Option<u8>,
) -> Vec<Vec<RollupWrite>> {
    let mut writes = Vec::new();
    for (hour, rollup) in hours {
        writes.extend(item_writes(
            hour_sort_key(*hour, region),
            rollup,
            vec![("hour", n(hour)), (TTL_ATTRIBUTE, n(hour_expiry(*hour)))],
        ));
    }
    for (day, rollup) in days {
        writes.extend(item_writes(
            day_sort_key(*day, region),
            rollup,
            day_attributes(*day, day_expiry),
        ));
    }
    let mut parts: Vec<(Vec<RollupWrite>, usize)> = Vec::new();
    for write in writes {
        let bytes = write.name_bytes();
        let fits = parts.iter().position(|(part, used)| {
            part.len() < ITEMS_PER_TRANSACTION
                && used + bytes <= NAME_BYTES_PER_TRANSACTION
                && part.iter().all(|w| w.sort_key != write.sort_key)
        });
        match fits {
            Some(i) => {
                parts[i].1 += bytes;
                parts[i].0.push(write);
            }
            None => parts.push((vec![write], bytes)),
        }
    }
    if parts.is_empty() {
        parts.push((Vec::new(), 0));
    }
    parts.into_iter().map(|(part, _)| part).collect()
}

/// `delta` with the values it would add to an item that has `stored`'s past `cap` values of a
/// dimension counted as `other` (the values the item has already are added to as they are);
/// `None` when it adds none past the cap.
pub(super) fn within_cap(stored: &Rollup, delta: &Rollup, cap: usize) -> Option<Rollup> {
    let mut capped = delta.clone();
    let mut changed = false;
    for dimension in Dimension::ALL {
        let there = stored.values(dimension);
        let mut distinct = there.iter().filter(|(v, _)| &**v != OTHER).count();
        let (mut kept, mut other): (Values, u64) = (Vec::new(), 0);
        for (value, count) in delta.values(dimension).iter().cloned() {
            let known = &*value == OTHER || there.binary_search_by(|(v, _)| v.cmp(&value)).is_ok();
            if known || distinct < cap {
                distinct += usize::from(!known);
                kept.push((value, count));
            } else {
                other += count;
                changed = true;
            }
        }
        if other > 0 {
            match kept.binary_search_by(|(v, _)| (**v).cmp(OTHER)) {
                Ok(i) => kept[i].1 += other,
                Err(i) => kept.insert(i, (OTHER.into(), other)),
            }
        }
        capped.dims.set(dimension, kept);
    }
    changed.then_some(capped)
}

/// A rollup item's counts and values (values sorted, uncapped), without its visitors.
pub(super) fn parse_rollup(item: &Item) -> Rollup {
    let mut rollup = Rollup {
        clicks: number(item, "clicks").unwrap_or(0),
        humans: number(item, "humans").unwrap_or(0),
        bots: number(item, "bots").unwrap_or(0),
        ..Rollup::default()
    };
    let mut lists: [Values; 5] = Default::default();
    for (name, value) in item {
        let (Some((dimension, text)), Ok(count)) = (
            parse_value_attribute(name),
            value.as_n().map(|v| v.parse::<u64>()),
        ) else {
            continue;
        };
        let Ok(count) = count else {
            continue;
        };
        lists[Dimension::ALL
            .iter()
            .position(|d| *d == dimension)
            .unwrap_or_default()]
        .push((text.into(), count));
    }
    for (dimension, mut values) in Dimension::ALL.into_iter().zip(lists) {
        values.sort_unstable();
        rollup.dims.set(dimension, values);
    }
    rollup
}

/// A sketch item's visitors and version (`None`: never written).
pub(super) fn parse_sketch(item: Option<&Item>) -> (Result<Uniques, String>, Option<u64>) {
    let Some(item) = item else {
        return (Ok(Uniques::default()), None);
    };
    let bytes = item
        .get(SKETCH)
        .and_then(|v| v.as_b().ok())
        .map(|b| b.as_ref())
        .unwrap_or_default();
    (Uniques::decode(bytes), number(item, SKETCH_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Classified;

    fn rollup(values: usize) -> Rollup {
        let mut rollup = Rollup::default();
        for i in 0..values {
            let classified = Classified {
                bot: false,
                values: [
                    format!("r{i}.example").into(),
                    "DE".into(),
                    "desktop".into(),
                    "Firefox".into(),
                    "Linux".into(),
                ],
            };
            rollup.add(&classified, i as u64, usize::MAX);
        }
        rollup
    }

    #[test]
    fn value_names_survive_any_text_and_are_no_other_attribute() {
        for value in ["example.com", "a.b.c", "", "#:=,() d.x", "ü\u{0}"] {
            let name = value_attribute(Dimension::Referrer, value);
            assert_eq!(
                parse_value_attribute(&name),
                Some((Dimension::Referrer, value))
            );
        }
        for other in [
            "clicks",
            "humans",
            "bots",
            "day",
            "hour",
            "expires_at",
            "pk",
            "sk",
        ] {
            assert_eq!(parse_value_attribute(other), None);
        }
        assert_eq!(hour_sort_key(24 * 20_000 + 7, None), "h#2024-10-04T07");
        assert!(hour_sort_key(1, None) < sketch_sort_key(&hour_sort_key(1, None)));
        assert!(sketch_sort_key(&hour_sort_key(1, None)) < hour_sort_key(2, None));
    }

    #[test]
    fn a_range_of_hours_or_days_takes_every_region_s_items_of_them_and_no_other() {
        // What `analytics` queries: from the first item of the first hour to the sketch of the
        // last, both included.
        let (from, to) = (24 * 20_000 + 3, 24 * 20_000 + 5);
        let low = hour_sort_key(from, None);
        let high = sketch_sort_key(&hour_sort_key(to, None));
        for hour in from - 2..=to + 2 {
            for region in [None, Some(0), Some(1), Some(7)] {
                let item = hour_sort_key(hour, region);
                for key in [item.clone(), sketch_sort_key(&item)] {
                    let within = (low.as_str()..=high.as_str()).contains(&key.as_str());
                    assert_eq!(within, (from..=to).contains(&hour), "{key}");
                    assert_eq!(is_sketch(&key), key != item);
                }
            }
        }
        assert_eq!(day_sort_key(20_000, Some(3)), "day#2024-10-04!3");
        assert!(day_sort_key(20_000, Some(3)) < sketch_sort_key(&day_sort_key(20_000, None)));
        assert!(!total_sort_key(1).starts_with(DAY_PREFIX));
        assert!(!total_sort_key(1).starts_with(HOUR_PREFIX));
        for region in [None, Some(0), Some(5)] {
            let day = day_sort_key(20_000, region);
            assert_eq!(written_by(&day), region);
            assert_eq!(written_by(&sketch_sort_key(&day)), region);
            assert_eq!(written_by(&hour_sort_key(24 * 20_000, region)), region);
        }
        assert_eq!(written_by(&total_sort_key(6)), Some(6));
    }

    #[test]
    fn a_delta_with_many_values_is_split_never_two_updates_of_one_item_in_a_transaction() {
        // 250 referrers: 254 values in the hour and in the day, three updates each.
        let hour = rollup(250);
        let parts = plan(
            &[(24 * 20_000, hour.clone())],
            &[(20_000, hour)],
            |_| 0,
            None,
            None,
        );
        assert_eq!(parts.len(), 3);
        for part in &parts {
            assert!(part.len() <= ITEMS_PER_TRANSACTION);
            let mut keys: Vec<&str> = part.iter().map(|w| w.sort_key.as_str()).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), part.len(), "an item twice in one transaction");
            for write in part {
                assert!(write.values.len() <= VALUES_PER_UPDATE);
            }
        }
        let written: usize = parts.iter().flatten().map(|w| w.values.len()).sum();
        assert_eq!(written, 2 * 254, "every value is written once");
        assert_eq!(
            parts
                .iter()
                .flatten()
                .filter(|w| w.counts.is_some())
                .count(),
            2,
            "the counts once per item"
        );
        // Many hours: more items than one transaction takes.
        let hours: Vec<(u32, Rollup)> = (0..150).map(|h| (h, Rollup::count_only(1))).collect();
        let parts = plan(&hours, &[], |_| 0, None, None);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), vec![98, 52]);
    }

    #[test]
    fn an_item_at_the_cap_takes_no_new_values_but_adds_to_those_it_has() {
        let referrers = |names: &[&str], n: u64| {
            let mut rollup = Rollup::default();
            let mut values: Values = names.iter().map(|&name| (name.into(), n)).collect();
            values.sort_unstable();
            rollup.dims.set(Dimension::Referrer, values);
            rollup
        };
        let stored = referrers(&["a.example", "b.example"], 5);
        let delta = referrers(&["a.example", "c.example", "d.example", OTHER], 1);
        let capped = within_cap(&stored, &delta, 2).expect("over the cap");
        assert_eq!(
            capped.values(Dimension::Referrer),
            vec![("a.example".into(), 1), (OTHER.into(), 3)]
        );
        let room = within_cap(&stored, &delta, 3).expect("one more fits");
        assert_eq!(
            room.values(Dimension::Referrer),
            vec![
                ("a.example".into(), 1),
                ("c.example".into(), 1),
                (OTHER.into(), 2)
            ]
        );
        assert!(within_cap(&stored, &delta, 4).is_none(), "all fit");
    }

    #[test]
    fn a_folded_write_counts_the_same_clicks_as_other() {
        let parts = plan(&[], &[(20_000, rollup(3))], |_| 0, None, None);
        let mut write = parts[0][0].clone();
        write.fold();
        let referrers: Vec<_> = write
            .values
            .iter()
            .filter(|(d, _, _)| *d == Dimension::Referrer)
            .collect();
        assert_eq!(referrers, vec![&(Dimension::Referrer, OTHER.into(), 3)]);
        assert_eq!(write.values.len(), 5, "one `other` per dimension");
        assert_eq!(write.counts.as_ref().map(|c| c.humans), Some(3));
    }

    #[test]
    fn an_item_reads_back_as_the_rollup_written() {
        let written = rollup(3);
        let parts = plan(&[], &[(20_000, written.clone())], |_| 0, None, None);
        let Expression {
            text: expression,
            names,
            values,
        } = parts[0][0].expression();
        assert!(
            expression.starts_with("ADD #clicks :clicks, #humans :humans, #v0 :v0"),
            "{expression}"
        );
        // The item those names and values make.
        let mut item = Item::new();
        for (placeholder, name) in &names {
            let value = placeholder.replacen('#', ":", 1);
            let value = values
                .iter()
                .find(|(v, _)| *v == value)
                .expect("value")
                .1
                .clone();
            item.insert(name.clone(), value);
        }
        let read = parse_rollup(&item);
        assert_eq!((read.clicks, read.humans, read.bots), (3, 3, 0));
        assert_eq!(read.dims, written.dims);
    }
}
