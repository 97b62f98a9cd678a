//! Unique visitors per link per day, without keeping who they were.
//!
//! A visitor is a keyed hash (SipHash-2-4, a pseudorandom function of its 128-bit key) of the
//! client's address and user agent, under a key made for each UTC day and forgotten after it
//! (the method Plausible documents): the same person counts once a day per link, and once the
//! day's key is gone no hash can be tied to an address again, so no address or stable visitor
//! id is ever stored. The key lives in the store (`analytics-visitor-key-YYYY-MM-DD`, made by
//! whichever instance asks first), so every instance of a fleet hashes a visitor alike, and
//! is deleted two days later.
//!
//! Up to 16 visitors an hour or day are kept as their hashes and counted exactly; past that
//! they go into a HyperLogLog++ (the `hyperloglogplus` crate) with 2^12 registers: near exact
//! while small (its sparse form), and past that a standard error of 1.04 / sqrt(4096) = 1.6 %
//! ([`STANDARD_ERROR`]) in at most 3.3 KB, however many visitors.
//! Hours of one day merge into the day (one key); days do not (a visitor on two days is two
//! daily visitors, as in every analytics tool that forgets its keys).

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher24;

/// Registers: 2^PRECISION.
const PRECISION: u8 = 12;

/// The relative standard error of an estimate past the sparse range: 1.04 / sqrt(2^12).
pub const STANDARD_ERROR: f64 = 0.01625;

/// The store's name for the visitor key of a UTC day.
pub fn key_name(day: u32) -> String {
    format!("analytics-visitor-key-{}", crate::clock::format_day(day))
}

/// Hashes arrive already keyed and uniform: the sketch uses them as they are.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct AsIs;

impl BuildHasher for AsIs {
    type Hasher = AsIsHasher;

    fn build_hasher(&self) -> AsIsHasher {
        AsIsHasher(0)
    }
}

pub struct AsIsHasher(u64);

impl Hasher for AsIsHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Sketch = HyperLogLogPlus<u64, AsIs>;

/// Visitors kept as their hashes, exactly, up to this many; past it, a sketch.
const FEW: usize = 16;

/// The visitors of one hour or day; empty costs one word. Most links see a few visitors an
/// hour: those are kept as their (keyed) hashes, sorted, and counted exactly, which costs
/// less to build, store and merge than a sketch; the 17th makes it a HyperLogLog. One
/// visitor, the most common case over a large hot set, is held inline: no allocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Uniques(Option<Form>);

#[derive(Debug, Clone, Deserialize)]
#[serde(from = "Stored")]
enum Form {
    One(u64),
    Few(Vec<u64>),
    Sketch(Box<Sketch>),
}

/// How [`Form`] is stored: one visitor as a list of one, so the stored bytes do not depend on
/// how it is held in memory.
#[derive(Deserialize)]
enum Stored {
    Few(Vec<u64>),
    Sketch(Box<Sketch>),
}

#[derive(Serialize)]
enum StoredRef<'a> {
    Few(&'a [u64]),
    Sketch(&'a Sketch),
}

impl From<Stored> for Form {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Few(few) if few.len() == 1 => Form::One(few[0]),
            Stored::Few(few) => Form::Few(few),
            Stored::Sketch(sketch) => Form::Sketch(sketch),
        }
    }
}

impl Serialize for Form {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Form::One(visitor) => StoredRef::Few(std::slice::from_ref(visitor)),
            Form::Few(few) => StoredRef::Few(few),
            Form::Sketch(sketch) => StoredRef::Sketch(sketch),
        }
        .serialize(serializer)
    }
}

impl Uniques {
    pub fn insert(&mut self, visitor: u64) {
        match &mut self.0 {
            None => self.0 = Some(Form::One(visitor)),
            Some(Form::One(one)) => {
                let one = *one;
                if one != visitor {
                    self.0 = Some(Form::Few(vec![one.min(visitor), one.max(visitor)]));
                }
            }
            Some(Form::Few(few)) => {
                if let Err(at) = few.binary_search(&visitor) {
                    few.insert(at, visitor);
                }
                if few.len() > FEW
                    && let Some(sketch) = sketch_of(few)
                {
                    self.0 = Some(Form::Sketch(sketch));
                }
            }
            Some(Form::Sketch(sketch)) => sketch.insert(&visitor),
        }
    }

    pub fn merge(&mut self, other: &Uniques) {
        match &other.0 {
            None => {}
            Some(Form::One(visitor)) => self.insert(*visitor),
            Some(Form::Few(theirs)) => theirs.iter().for_each(|&v| self.insert(v)),
            Some(Form::Sketch(theirs)) => match &mut self.0 {
                Some(Form::Sketch(ours)) => {
                    // Sketches of one precision always merge.
                    let _ = ours.merge(theirs);
                }
                mine => {
                    let mut merged = theirs.clone();
                    match mine {
                        Some(Form::One(visitor)) => merged.insert(visitor),
                        Some(Form::Few(few)) => few.iter().for_each(|v| merged.insert(v)),
                        _ => {}
                    }
                    *mine = Some(Form::Sketch(merged));
                }
            },
        }
    }

    /// The stored form (compact binary; empty for no visitors).
    pub fn encode(&self) -> Vec<u8> {
        if self.0.is_none() {
            return Vec::new();
        }
        super::stored_form(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The estimated number of distinct visitors (exact while few).
    pub fn estimate(&mut self) -> u64 {
        match &mut self.0 {
            None => 0,
            Some(Form::One(_)) => 1,
            Some(Form::Few(few)) => few.len() as u64,
            Some(Form::Sketch(sketch)) => sketch.count().round() as u64,
        }
    }
}

/// A sketch of `visitors`; `None` only for a precision out of range, which PRECISION is not.
fn sketch_of(visitors: &[u64]) -> Option<Box<Sketch>> {
    let mut sketch = Box::new(Sketch::new(PRECISION, AsIs).ok()?);
    visitors.iter().for_each(|v| sketch.insert(v));
    Some(sketch)
}

/// The key of one UTC day, held in memory while it is in use.
#[derive(Clone)]
pub struct DayKey {
    pub day: u32,
    key: [u64; 2],
}

impl DayKey {
    /// The day's key from the stored secret: its first 16 bytes (shorter ones padded).
    pub fn new(day: u32, secret: &[u8]) -> Self {
        let mut bytes = [0u8; 16];
        let n = secret.len().min(16);
        bytes[..n].copy_from_slice(&secret[..n]);
        let half = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(word)
        };
        Self {
            day,
            key: [half(0), half(1)],
        }
    }

    /// The visitor's hash under this day's key.
    pub fn visitor(&self, ip: IpAddr, user_agent: &str) -> u64 {
        let mut hasher = SipHasher24::new_with_keys(self.key[0], self.key[1]);
        match ip {
            IpAddr::V4(v4) => hasher.write(&v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => hasher.write(&v6.octets()),
        }
        hasher.write(user_agent.as_bytes());
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_of_100000_visitors_is_within_its_standard_error() {
        let key = DayKey::new(20_000, b"a fixed test key");
        let mut day = Uniques::default();
        // Each visitor clicks twice (two hours): counted once.
        let mut hours = [Uniques::default(), Uniques::default()];
        for n in 0..100_000u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            let visitor = key.visitor(ip, "Mozilla/5.0 (X11; Linux x86_64)");
            hours[(n % 2) as usize].insert(visitor);
            day.insert(visitor);
            day.insert(visitor);
        }
        let estimate = day.estimate() as f64;
        let error = (estimate - 100_000.0).abs() / 100_000.0;
        // Three standard errors: where 99.7 % of estimates fall.
        assert!(
            error <= 3.0 * STANDARD_ERROR,
            "estimate {estimate}: relative error {error}"
        );
        let mut merged = Uniques::default();
        merged.merge(&hours[0]);
        merged.merge(&hours[1]);
        assert_eq!(
            merged.estimate(),
            day.estimate(),
            "hours merge into their day"
        );
    }

    #[test]
    fn one_visitor_held_inline_is_stored_as_a_list_of_one_as_before() {
        // The form stored before one visitor was held inline.
        #[derive(Serialize)]
        struct Before(Option<BeforeForm>);
        #[derive(Serialize)]
        enum BeforeForm {
            Few(Vec<u64>),
        }
        let mut one = Uniques::default();
        one.insert(42);
        one.insert(42);
        let before =
            postcard::to_allocvec(&Before(Some(BeforeForm::Few(vec![42])))).expect("encode");
        assert_eq!(one.encode(), before);
        let mut back = Uniques::decode(&before).expect("decode");
        assert!(matches!(back.0, Some(Form::One(42))));
        assert_eq!(back.estimate(), 1);
        back.insert(7);
        back.merge(&one);
        assert!(matches!(&back.0, Some(Form::Few(few)) if few == &[7, 42]));
        let two =
            postcard::to_allocvec(&Before(Some(BeforeForm::Few(vec![7, 42])))).expect("encode");
        assert_eq!(back.encode(), two);
    }

    #[test]
    fn small_counts_are_exact_and_the_key_decides_the_hash() {
        let key = DayKey::new(1, b"k1");
        let mut few = Uniques::default();
        assert_eq!(few.estimate(), 0);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for agent in ["a", "b", "c", "a"] {
            few.insert(key.visitor(ip, agent));
        }
        assert_eq!(few.estimate(), 3);
        // Past the few kept exactly, a sketch: still counts them (HLL++ is exact while small),
        // and merging one into the other in either order counts each visitor once.
        let mut many = Uniques::default();
        for n in 0..40u32 {
            many.insert(key.visitor(IpAddr::from(n.to_be_bytes()), "a"));
        }
        assert_eq!(many.estimate(), 40);
        let mut both = few.clone();
        both.merge(&many);
        many.merge(&few);
        assert_eq!((both.estimate(), many.estimate()), (43, 43));
        let back = Uniques::decode(&both.encode()).expect("decode");
        assert_eq!(back.clone().estimate(), 43);
        let other_day = DayKey::new(2, b"k2");
        assert_ne!(key.visitor(ip, "a"), other_day.visitor(ip, "a"));
        let other_ip: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_ne!(key.visitor(ip, "a"), key.visitor(other_ip, "a"));
    }
}
