//! Click analytics: what a click records beyond its count, and how it is added up.
//!
//! A redirect hands over only what it already has ([`Headers`]: the raw `User-Agent`,
//! `Referer`, country header and client address, copied, each cut to a bounded length, into
//! its shard's [`Visits`]; none with `Sec-GPC: 1`); everything else happens in the click
//! flusher, off the redirect path, which reads each [`Visit`] where it lies: the user agent is
//! classified ([`classify`]), the referrer reduced to its host, the country looked up, the
//! visitor hashed with the day's key ([`uniques`]), and the click folded into its link's
//! [`Rollup`] for its hour. A rollup holds the clicks, the human and bot clicks, a
//! HyperLogLog of the day's visitors, and the human clicks per value of each [`Dimension`],
//! at most `analytics.max_values_per_dimension` values each (the rest count as `other`), so
//! no flood of random headers grows memory or storage past that cap.

pub mod aggregate;
pub mod classify;
pub mod dims;
pub mod report;
pub mod uniques;
pub mod visits;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use dims::Dims;
pub use uniques::Uniques;
pub use visits::Visits;

/// Milliseconds in an hour.
pub const MS_PER_HOUR: i64 = 3_600_000;

/// The UTC hour number (hours since 1970-01-01T00:00Z) a timestamp falls in.
pub fn hour_of(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(MS_PER_HOUR)).unwrap_or(0)
}

/// The UTC day number an hour number falls on.
pub fn day_of_hour(hour: u32) -> u32 {
    hour / 24
}

/// (UTC day number, the day's rollup) of rollups per hour (ascending): the hours of each day
/// merged, at most `cap` values per dimension.
pub fn day_rollups(hours: &[(u32, Rollup)], cap: usize) -> Vec<(u32, Rollup)> {
    let mut days: Vec<(u32, Rollup)> = Vec::new();
    for (hour, rollup) in hours {
        let day = day_of_hour(*hour);
        match days.last_mut() {
            Some((d, r)) if *d == day => r.merge(rollup, cap),
            _ => days.push((day, rollup.clone())),
        }
    }
    days
}

/// The value a dimension records when it has none (no `Referer`: `direct`; no country:
/// `unknown`), and the one values past the cap are counted as.
pub const OTHER: &str = "other";

/// What a click is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Referrer,
    Country,
    Device,
    Browser,
    Os,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::Referrer,
        Dimension::Country,
        Dimension::Device,
        Dimension::Browser,
        Dimension::Os,
    ];

    /// Its name in the API (`breakdown=referrer,country`) and in CSV.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Referrer => "referrer",
            Dimension::Country => "country",
            Dimension::Device => "device",
            Dimension::Browser => "browser",
            Dimension::Os => "os",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the redirect hands over for one click: the raw header values (empty when absent) and
/// the client's address, borrowed from the request. Nothing is parsed on the redirect path:
/// the click recorder copies them, each cut to [`Visit::MAX_HEADER`] bytes, into its shard's
/// [`Visits`].
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub user_agent: &'a [u8],
    pub referer: &'a [u8],
    /// The trusted proxy's country header (empty when not believed).
    pub country: &'a [u8],
    pub client_ip: IpAddr,
}

/// One click's details as the flusher reads them from [`Visits`]: header values cut to
/// [`Visit::MAX_HEADER`] bytes, and the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit<'a> {
    user_agent: &'a str,
    referer: &'a str,
    /// The trusted proxy's country header when it is two bytes long; zeros otherwise.
    country: [u8; 2],
    pub client_ip: IpAddr,
}

impl<'a> Visit<'a> {
    /// Most bytes of one header a visit keeps: enough for every real user agent and for a
    /// referrer's scheme and host, so an 8 KiB header costs no more than a short one.
    pub const MAX_HEADER: usize = 512;

    pub fn user_agent(&self) -> &'a str {
        self.user_agent
    }

    /// The `Referer` as sent (cut), empty when absent.
    pub fn referer(&self) -> &'a str {
        self.referer
    }

    /// The trusted proxy's country header, empty when absent, not believed or not two bytes.
    pub fn country(&self) -> &str {
        std::str::from_utf8(&self.country)
            .ok()
            .filter(|c| self.country != [0, 0] && c.is_ascii())
            .unwrap_or("")
    }

    /// `value` cut to [`Visit::MAX_HEADER`] bytes at a character boundary; bytes that are not
    /// UTF-8 are replaced.
    pub fn header(value: &[u8]) -> std::borrow::Cow<'_, str> {
        let value = &value[..value.len().min(Self::MAX_HEADER)];
        match std::str::from_utf8(value) {
            Ok(text) => text.into(),
            Err(e) if e.error_len().is_none() => {
                // Cut inside a character: keep what is whole.
                String::from_utf8_lossy(&value[..e.valid_up_to()])
            }
            Err(_) => String::from_utf8_lossy(value),
        }
    }
}

/// What a click was found to be, once classified (see [`classify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// A crawler, link-preview fetcher or monitor.
    pub bot: bool,
    /// The values of each dimension, in [`Dimension::ALL`]'s order (shared with the
    /// classifier's caches: adding a click to a rollup copies no text).
    pub values: [Arc<str>; 5],
}

/// Counts per value of one dimension, sorted by value, at most the cap plus `other`.
pub type Values = Vec<(Arc<str>, u64)>;

/// Clicks on one link in one hour (or day): the unit kurz stores and adds up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rollup {
    /// Every click counted, classified or not (analytics off, `Sec-GPC: 1`, or details
    /// dropped under load count here only).
    pub clicks: u64,
    pub humans: u64,
    pub bots: u64,
    /// The human visitors of this hour or day (one daily key: hours of one day merge).
    pub uniques: Uniques,
    /// Human clicks per value of each [`Dimension`].
    pub dims: Dims,
}

impl Rollup {
    /// One click counted with no details.
    pub fn count_only(clicks: u64) -> Self {
        Self {
            clicks,
            ..Self::default()
        }
    }

    pub fn values(&self, dimension: Dimension) -> &[(Arc<str>, u64)] {
        self.dims.get(dimension)
    }

    /// Adds one classified click by `visitor` (its keyed hash), keeping at most `cap` values
    /// per dimension.
    pub fn add(&mut self, classified: &Classified, visitor: u64, cap: usize) {
        self.clicks += 1;
        if classified.bot {
            self.bots += 1;
            return;
        }
        self.humans += 1;
        self.uniques.insert(visitor);
        for (dimension, value) in Dimension::ALL.into_iter().zip(&classified.values) {
            self.dims.add(dimension, value, 1, cap);
        }
    }

    /// Adds `other` into this rollup, keeping at most `cap` values per dimension: values past
    /// the cap go to `other`, the least clicked first.
    pub fn merge(&mut self, other: &Rollup, cap: usize) {
        self.clicks += other.clicks;
        self.humans += other.humans;
        self.bots += other.bots;
        self.uniques.merge(&other.uniques);
        for dimension in Dimension::ALL {
            self.dims.merge(dimension, other.dims.get(dimension), cap);
        }
    }

    /// The stored form (compact binary).
    pub fn encode(&self) -> Vec<u8> {
        stored_form(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// `value`'s stored form (postcard) in a buffer of exactly its size: one allocation, where
/// growing a buffer from empty takes several for a rollup. It is written into this thread's
/// scratch buffer and copied out, which costs less than going over the value twice (once to
/// size it).
pub fn stored_form<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    /// Room the scratch buffer keeps between calls; a larger form's room is freed after it.
    const KEPT: usize = 64 << 10;
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let mut buffer = std::mem::take(scratch);
        buffer.clear();
        let Ok(written) = postcard::to_extend(value, buffer) else {
            return Vec::new();
        };
        let form = written.clone();
        if written.capacity() <= KEPT {
            *scratch = written;
        }
        form
    })
}

/// A human click from `referrer`, the other dimensions fixed (Germany, desktop Firefox on Linux).
#[cfg(test)]
pub(crate) fn human_click(referrer: &str) -> Classified {
    Classified {
        bot: false,
        values: [
            referrer.into(),
            "DE".into(),
            "desktop".into(),
            "Firefox".into(),
            "Linux".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_count_as_other_and_merges_keep_the_most_clicked() {
        let mut hour = Rollup::default();
        for (i, referrer) in [
            "a.example",
            "b.example",
            "a.example",
            "c.example",
            "d.example",
        ]
        .into_iter()
        .enumerate()
        {
            hour.add(&human_click(referrer), i as u64, 2);
        }
        let referrers = hour.values(Dimension::Referrer);
        assert_eq!(
            referrers,
            &vec![
                ("a.example".into(), 2),
                ("b.example".into(), 1),
                (OTHER.into(), 2)
            ]
        );
        assert_eq!((hour.clicks, hour.humans, hour.bots), (5, 5, 0));
        let mut later = Rollup::default();
        for i in 0..3 {
            later.add(&human_click("c.example"), 100 + i, 2);
        }
        hour.merge(&later, 2);
        // c.example (3) passes b.example (1), which is folded into other.
        assert_eq!(
            hour.values(Dimension::Referrer),
            &vec![
                ("a.example".into(), 2),
                ("c.example".into(), 3),
                (OTHER.into(), 3)
            ]
        );
        let total: u64 = hour
            .values(Dimension::Referrer)
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            total, hour.humans,
            "every human click is in each dimension once"
        );
    }

    #[test]
    fn a_rollup_survives_its_stored_form() {
        let mut hour = Rollup::count_only(3);
        hour.add(&human_click("a.example"), 7, 50);
        hour.bots += 1;
        let mut back = Rollup::decode(&hour.encode()).expect("decode");
        assert_eq!((back.clicks, back.humans, back.bots), (4, 1, 1));
        assert_eq!(back.dims, hour.dims);
        assert_eq!(back.uniques.estimate(), 1);
        assert!(Rollup::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn headers_are_cut_at_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = Visit::header(long.as_bytes());
        assert!(cut.len() <= Visit::MAX_HEADER && cut.chars().all(|c| c == 'é'));
        assert_eq!(&*Visit::header(b"ab\xffcd"), "ab\u{fffd}cd");
    }
}
