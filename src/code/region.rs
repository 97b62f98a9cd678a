//! Ids of a deployment in several regions: each region mints from a range of the id space no
//! other region mints from, so two regions never make the same code, and the id a code was made
//! of (its [position](super::CodeGenerator::position)) names the region that made it.
//!
//! The 7-character ids are cut into [`MAX_REGIONS`] equal ranges, the 8-character ones too.
//! Region `r`'s counter value `c` is the id `r * SEVENS_PER_REGION + c` while `c` is below
//! [`SEVENS_PER_REGION`], then the 8-character id of `c - SEVENS_PER_REGION` in `r`'s range of
//! those. Region 0's first range starts at id 0: a single-region deployment that becomes region
//! 0 keeps its counter and its codes.

use std::ops::Range;

use super::base62::space;
use super::{CODE_LEN, V1_IDS};

/// How many regions the id space is cut for (region numbers 0 to 7).
pub const MAX_REGIONS: u8 = 8;

/// 7-character ids: those the keyed permutation of 7-character codes maps.
const SEVENS: u64 = space(CODE_LEN as u32) - V1_IDS;
/// 8-character ids, which follow the 7-character ones.
const EIGHTS: u64 = space(CODE_LEN as u32 + 1);

/// 7-character ids per region: 165 billion, 4.5 years of 100 million links a day.
pub const SEVENS_PER_REGION: u64 = SEVENS / MAX_REGIONS as u64;
/// 8-character ids per region: 27 trillion.
pub const EIGHTS_PER_REGION: u64 = EIGHTS / MAX_REGIONS as u64;

/// The ids region `region`'s counter values `counters` stand for: as many as fit before the
/// region's 7-character range ends (the rest of such a lease is skipped; the next one starts in
/// the 8-character range). `None` once the region's 8-character range is used up.
pub fn ids(region: u8, counters: Range<u64>) -> Option<Range<u64>> {
    let start = id_of(region, counters.start)?;
    let end = if counters.start < SEVENS_PER_REGION {
        counters.end.min(SEVENS_PER_REGION)
    } else {
        counters.end.min(SEVENS_PER_REGION + EIGHTS_PER_REGION)
    };
    Some(start..start + end.saturating_sub(counters.start))
}

/// The id region `region`'s counter value `counter` stands for; `None` past its ranges.
pub fn id_of(region: u8, counter: u64) -> Option<u64> {
    if region >= MAX_REGIONS {
        return None;
    }
    let region = u64::from(region);
    if counter < SEVENS_PER_REGION {
        Some(region * SEVENS_PER_REGION + counter)
    } else {
        let eight = counter - SEVENS_PER_REGION;
        (eight < EIGHTS_PER_REGION).then(|| SEVENS + region * EIGHTS_PER_REGION + eight)
    }
}

/// The counter value of region `region` that `id` stands for: [`id_of`]'s inverse; `None` for
/// an id outside the region's ranges.
pub fn counter_of(region: u8, id: u64) -> Option<u64> {
    if region_of(id)? != region {
        return None;
    }
    let region = u64::from(region);
    Some(if id < SEVENS {
        id - region * SEVENS_PER_REGION
    } else {
        SEVENS_PER_REGION + (id - SEVENS - region * EIGHTS_PER_REGION)
    })
}

/// The region whose range holds `position` (an id, or where a code sits in id order); `None`
/// for positions outside the id space (codes made before ids had regions, by the first
/// permutation).
pub fn region_of(position: u64) -> Option<u8> {
    let region = if position < SEVENS {
        position / SEVENS_PER_REGION
    } else if position - SEVENS < EIGHTS {
        (position - SEVENS) / EIGHTS_PER_REGION
    } else {
        return None;
    };
    u8::try_from(region).ok()
}

/// The counter value of a hash code made for `region` from `hash`, `len` (7 or 8) characters
/// long: anywhere in the region's range of that length, so that the code too names its region.
pub fn hash_counter(hash: u64, len: usize) -> u64 {
    if len <= CODE_LEN {
        hash % SEVENS_PER_REGION
    } else {
        SEVENS_PER_REGION + hash % EIGHTS_PER_REGION
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::CodeGenerator;

    #[test]
    fn the_ranges_cut_the_id_space_exactly() {
        assert_eq!(SEVENS_PER_REGION * u64::from(MAX_REGIONS), SEVENS);
        assert_eq!(EIGHTS_PER_REGION * u64::from(MAX_REGIONS), EIGHTS);
        for region in 0..MAX_REGIONS {
            for counter in [
                0,
                1,
                SEVENS_PER_REGION - 1,
                SEVENS_PER_REGION,
                SEVENS_PER_REGION + EIGHTS_PER_REGION - 1,
            ] {
                let id = id_of(region, counter).expect("in range");
                assert_eq!(
                    region_of(id),
                    Some(region),
                    "region {region} counter {counter}"
                );
                assert_eq!(counter_of(region, id), Some(counter));
                assert_eq!(counter_of((region + 1) % MAX_REGIONS, id), None);
            }
            assert_eq!(id_of(region, SEVENS_PER_REGION + EIGHTS_PER_REGION), None);
        }
        assert_eq!(id_of(MAX_REGIONS, 0), None);
        // Region 0 is the single-region deployment's counter, unchanged.
        assert_eq!(id_of(0, 12_345), Some(12_345));
        assert_eq!(region_of(SEVENS + EIGHTS), None);
    }

    #[test]
    fn a_lease_stops_at_the_end_of_the_region_s_seven_character_range() {
        assert_eq!(
            ids(2, 0..1_000),
            Some(2 * SEVENS_PER_REGION..2 * SEVENS_PER_REGION + 1_000)
        );
        let last = SEVENS_PER_REGION - 10;
        let ids_at_end = ids(1, last..last + 1_000).expect("in range");
        assert_eq!(ids_at_end.end - ids_at_end.start, 10);
        assert_eq!(ids_at_end.end, 2 * SEVENS_PER_REGION);
        let next = ids(1, last + 1_000..last + 2_000).expect("in range");
        assert_eq!(next.start, SEVENS + EIGHTS_PER_REGION + 990);
        assert_eq!(ids(0, u64::MAX - 5..u64::MAX), None);
    }

    #[test]
    fn every_code_names_the_region_that_made_it() {
        let generator = CodeGenerator::new(b"region-test-key");
        for region in 0..MAX_REGIONS {
            let counters = [0, 1, 2, 999, SEVENS_PER_REGION - 1, SEVENS_PER_REGION + 5];
            let hashes = [7u64, u64::MAX, 0x1234_5678_9abc_def0];
            let made = counters
                .into_iter()
                .chain(hashes.iter().map(|&h| hash_counter(h, 7)))
                .chain(hashes.iter().map(|&h| hash_counter(h, 8)));
            for counter in made {
                let id = id_of(region, counter).expect("in range");
                let Some(code) = generator.code_for(id) else {
                    continue; // a reserved word
                };
                let position = generator.position(&code).expect("generated shape");
                assert_eq!(region_of(position), Some(region), "{code}");
            }
        }
    }
}
