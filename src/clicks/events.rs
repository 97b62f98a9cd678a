//! Clicks as events on the click stream (`clicks.sink = "kinesis"`): what one record carries.
//!
//! A record is one instance's flushed deltas for the links of one shard, packed many per
//! record: a version byte, the record's id (the producing instance's random number and its
//! count of records, 16 bytes), then one event per link, each in postcard (the code, its
//! clicks, its last click, its rollups per hour). The id stays with the record when it is sent
//! again, so `kurz aggregate` counts a record that landed twice (a put that timed out but did
//! land) once. A record is at most [`MAX_RECORD_DATA`] bytes.

use serde::{Deserialize, Serialize};

use crate::analytics::Rollup;
use crate::store::ClickDelta;

/// The format's version, the record's first byte.
const VERSION: u8 = 1;
/// Bytes before the events: the version and the id.
const HEADER: usize = 1 + 16;
/// Most data bytes per record: Kinesis takes 1 MiB with the partition key; kurz leaves room.
pub const MAX_RECORD_DATA: usize = 1_000_000;

/// A record's id: the producing instance's random number and its count of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub producer: u64,
    pub serial: u64,
}

impl RecordId {
    pub fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.producer.to_be_bytes());
        bytes[8..].copy_from_slice(&self.serial.to_be_bytes());
        bytes
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let (producer, serial) = bytes.split_at(8);
        Self {
            producer: u64::from_be_bytes(producer.try_into().unwrap_or_default()),
            serial: u64::from_be_bytes(serial.try_into().unwrap_or_default()),
        }
    }

    /// 32 hex digits, e.g. for a record's partition key.
    pub fn hex(self) -> String {
        hex::encode(self.to_bytes())
    }
}

/// One link's clicks in a record: a flushed delta without its token (the record's id stands
/// for it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    pub code: String,
    pub count: u64,
    pub last_click_ms: i64,
    /// (UTC hour number, rollup), ascending by hour.
    pub hours: Vec<(u32, Rollup)>,
}

#[derive(Serialize)]
struct EventRef<'a> {
    code: &'a str,
    count: u64,
    last_click_ms: i64,
    hours: &'a [(u32, Rollup)],
}

/// One record made by [`pack`].
#[derive(Debug)]
pub struct Packed {
    pub id: RecordId,
    pub data: Vec<u8>,
    pub clicks: u64,
    pub events: u64,
}

/// Packs `deltas` into records of at most [`MAX_RECORD_DATA`] bytes, each with the id
/// `next_id()` gives it, in the deltas' order. A delta
/// too large for a record of its own (a link with more distinct values in an interval than
/// 1 MB holds: impossible under the per-dimension cap) is sent with its counts only.
pub fn pack(deltas: &[&ClickDelta], mut next_id: impl FnMut() -> RecordId) -> Vec<Packed> {
    let mut records = Vec::new();
    let mut open: Option<Packed> = None;
    let mut scratch = Vec::new();
    for delta in deltas {
        scratch.clear();
        let event = EventRef {
            code: &delta.code,
            count: delta.count,
            last_click_ms: delta.last_click_ms,
            hours: &delta.hours,
        };
        scratch = postcard::to_extend(&event, std::mem::take(&mut scratch)).unwrap_or_default();
        if scratch.len() + HEADER > MAX_RECORD_DATA {
            let counts: Vec<(u32, Rollup)> = delta
                .hours
                .iter()
                .map(|(hour, r)| (*hour, Rollup::count_only(r.clicks)))
                .collect();
            let event = EventRef {
                hours: &counts,
                ..event
            };
            scratch = postcard::to_extend(&event, Vec::new()).unwrap_or_default();
        }
        if open
            .as_ref()
            .is_some_and(|r| r.data.len() + scratch.len() > MAX_RECORD_DATA)
            && let Some(full) = open.take()
        {
            records.push(full);
        }
        let record = open.get_or_insert_with(|| {
            let id = next_id();
            let mut data = Vec::with_capacity(64 << 10);
            data.push(VERSION);
            data.extend_from_slice(&id.to_bytes());
            Packed {
                id,
                data,
                clicks: 0,
                events: 0,
            }
        });
        record.data.extend_from_slice(&scratch);
        record.clicks += delta.count;
        record.events += 1;
    }
    records.extend(open);
    records
}

/// A record's id and events. An unknown version or bytes that do not parse are refused whole.
pub fn unpack(data: &[u8]) -> Result<(RecordId, Vec<Event>), String> {
    let Some((&version, rest)) = data.split_first() else {
        return Err("empty record".into());
    };
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    if rest.len() < 16 {
        return Err("record shorter than its id".into());
    }
    let (id, mut rest) = rest.split_at(16);
    let id = RecordId::from_bytes(id.try_into().unwrap_or_default());
    let mut events = Vec::new();
    while !rest.is_empty() {
        let (event, more) =
            postcard::take_from_bytes::<Event>(rest).map_err(|e| format!("bad event: {e}"))?;
        events.push(event);
        rest = more;
    }
    Ok((id, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{Classified, Dimension};

    fn delta(code: &str, count: u64, referrer: &str) -> ClickDelta {
        let mut rollup = Rollup::default();
        let classified = Classified {
            bot: false,
            values: Dimension::ALL.map(|_| std::sync::Arc::from(referrer)),
        };
        for visitor in 0..count {
            rollup.add(&classified, visitor, 50);
        }
        ClickDelta {
            token: "t".into(),
            code: code.into(),
            count,
            last_click_ms: 1_700_000_000_000,
            hours: vec![(472_222, rollup)],
        }
    }

    fn ids() -> impl FnMut() -> RecordId {
        let mut serial = 0;
        move || {
            serial += 1;
            RecordId {
                producer: 7,
                serial,
            }
        }
    }

    #[test]
    fn a_record_gives_back_its_id_and_every_event() {
        let deltas = [delta("abc", 3, "example.com"), delta("xyz", 1, "direct")];
        let records = pack(&deltas.iter().collect::<Vec<_>>(), ids());
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!((record.clicks, record.events), (4, 2));
        let (read_id, events) = unpack(&record.data).expect("unpacks");
        assert_eq!(read_id, record.id);
        assert_eq!(read_id, RecordId::from_bytes(record.id.to_bytes()));
        let summary: Vec<_> = events
            .iter()
            .map(|e| {
                let rollup = &e.hours[0].1;
                (
                    e.code.as_str(),
                    e.count,
                    rollup.humans,
                    rollup.values(Dimension::Referrer)[0].0.to_string(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("abc", 3, 3, "example.com".to_owned()),
                ("xyz", 1, 1, "direct".to_owned())
            ]
        );
    }

    #[test]
    fn many_deltas_fill_records_of_at_most_a_megabyte_and_lose_none() {
        let deltas: Vec<ClickDelta> = (0..40_000)
            .map(|i| delta(&format!("code{i}"), 2, &format!("site{i}.example")))
            .collect();
        let records = pack(&deltas.iter().collect::<Vec<_>>(), ids());
        assert!(records.len() > 1, "{} records", records.len());
        let mut codes = 0;
        let mut clicks = 0;
        for record in &records {
            assert!(
                record.data.len() <= MAX_RECORD_DATA,
                "{} bytes",
                record.data.len()
            );
            let (_, events) = unpack(&record.data).expect("unpacks");
            codes += events.len();
            clicks += events.iter().map(|e| e.count).sum::<u64>();
            assert_eq!(record.clicks, events.iter().map(|e| e.count).sum::<u64>());
            assert_eq!(record.events, events.len() as u64);
        }
        assert_eq!((codes, clicks), (40_000, 80_000));
        let serials: Vec<u64> = records.iter().map(|r| r.id.serial).collect();
        assert_eq!(serials, (1..=records.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_foreign_or_damaged_record_is_refused_not_misread() {
        let deltas = [delta("abc", 3, "example.com")];
        let data = pack(&deltas.iter().collect::<Vec<_>>(), ids())
            .remove(0)
            .data;
        let mut foreign = data.clone();
        foreign[0] = 9;
        assert!(unpack(&foreign).expect_err("refused").contains("version 9"));
        assert!(unpack(&data[..10]).is_err());
        assert!(unpack(&data[..data.len() - 1]).is_err());
        assert!(unpack(&[]).is_err());
    }
}
