//! Turning counter ids into codes: the keyed permutation, then fixed-width base62.
//!
//! Codes made before the keyed permutation came from the first one ([`Permutation::new`]) of
//! ids below [`V1_IDS`] (the counter never got near it: 2^41 ids are 60 years at 100 million
//! links a day). A 7-character code is now that first permutation's image of `V1_IDS + k(id)`,
//! with `k` the keyed permutation of [0, 62^7 - V1_IDS): the first permutation is a bijection,
//! so its images of ids at or above `V1_IDS` are never codes it made of ids below, while `k`
//! alone decides which code an id gets (the outer layer adds no secrecy, and needs none). The
//! cost: 7-character codes last for 62^7 - 2^41 ≈ 1.3 trillion ids (36 years at that rate)
//! instead of 3.5 trillion; then 8 characters, from a keyed permutation of their own (the
//! first one made 8-character codes only of ids from 62^7 on, which it never reached).

use super::base62::{encode_padded, space};
use super::{CODE_LEN, Permutation, is_reserved};

/// Counter ids the first permutation may have made codes of: every one below this.
pub const V1_IDS: u64 = 1 << 41;

/// Maps ids to codes: 7 characters for the first 62^7 - [`V1_IDS`] ids, then 8.
pub struct CodeGenerator {
    /// The first permutation of 7-character codes: the outer layer that keeps new codes apart.
    v1: Permutation,
    seven: Permutation,
    eight: Permutation,
}

impl CodeGenerator {
    pub fn new(key: &[u8]) -> Self {
        let seven = space(CODE_LEN as u32);
        Self {
            v1: Permutation::new(key, seven),
            seven: Permutation::keyed(key, seven - V1_IDS),
            eight: Permutation::keyed(key, space(CODE_LEN as u32 + 1)),
        }
    }

    /// The code for `id`, or `None` when it is a reserved word (the caller takes the next id).
    pub fn code_for(&self, id: u64) -> Option<String> {
        let sevens = self.seven.domain();
        let code = if id < sevens {
            encode_padded(self.v1.forward(V1_IDS + self.seven.forward(id)), CODE_LEN)
        } else {
            // 7- and 8-character codes cannot collide with each other: their lengths differ.
            let eights = self.eight.domain();
            encode_padded(self.eight.forward((id - sevens) % eights), CODE_LEN + 1)
        };
        (!is_reserved(&code)).then_some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::base62::decode;

    #[test]
    fn no_new_code_is_one_the_first_permutation_made() {
        // Every id the first permutation was given is below V1_IDS: a code is its image of an
        // id at or above, for consecutive ids and for ids from all over the 7-character range.
        let key = b"test-key";
        let v1 = Permutation::new(key, space(CODE_LEN as u32));
        let generator = CodeGenerator::new(key);
        let sevens = space(CODE_LEN as u32) - V1_IDS;
        let mut sampled = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..4_000u64 {
            let id = if step < 2_000 {
                step
            } else {
                sampled = sampled
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                sampled % sevens
            };
            let Some(code) = generator.code_for(id) else {
                continue;
            };
            assert_eq!(code.len(), CODE_LEN);
            let first = v1.inverse(decode(&code).expect("base62"));
            assert!(first >= V1_IDS, "{code} is the first code of id {first}");
        }
        let last = generator.code_for(sevens).expect("not reserved");
        assert_eq!(last.len(), CODE_LEN + 1);
    }

    #[test]
    fn on_a_small_space_the_new_codes_miss_every_old_one() {
        // The same construction on 62^2 codes, checked whole: the old codes of every id below
        // the bound, against the new codes of every id.
        let (space2, bound) = (space(2), space(2) / 3);
        let v1 = Permutation::new(b"k", space2);
        let keyed = Permutation::keyed(b"k", space2 - bound);
        let old: std::collections::HashSet<u64> = (0..bound).map(|id| v1.forward(id)).collect();
        let mut new = std::collections::HashSet::new();
        for id in 0..keyed.domain() {
            let code = v1.forward(bound + keyed.forward(id));
            assert!(!old.contains(&code), "id {id} got an old code");
            assert!(new.insert(code), "two ids got {code}");
        }
        assert_eq!(old.len() + new.len(), space2 as usize);
    }
}
