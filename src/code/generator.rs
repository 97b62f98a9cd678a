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

use super::base62::{decode, encode_padded, space};
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

    /// Where `code` sits in id order, for codes of the generated shape (7 or 8 base62
    /// characters), whoever made them: the id it is the code of when this generator made it,
    /// so that consecutive ids sit side by side; for any other code of that shape a value no
    /// two codes share (codes of the first permutation from [`V1_POSITIONS`] on). `None` for
    /// codes of other shapes. One to one over every code of the shape.
    pub fn position(&self, code: &str) -> Option<u64> {
        if !matches!(code.len(), 7 | 8) {
            return None;
        }
        let n = decode(code)?; // `None` for a character outside base62's alphabet
        Some(if code.len() == CODE_LEN {
            match self.v1.inverse(n) {
                first if first < V1_IDS => V1_POSITIONS + first,
                outer => self.seven.inverse(outer - V1_IDS),
            }
        } else {
            self.seven.domain() + self.eight.inverse(n)
        })
    }
}

/// Positions of codes the first permutation made (ids below [`V1_IDS`]): far above every id
/// ([`CodeGenerator::position`]), so no code of either kind shares another's place.
const V1_POSITIONS: u64 = 1 << 62;

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_code_s_position_is_the_id_it_was_made_of_and_no_two_codes_share_one() {
        let generator = CodeGenerator::new(b"test-key");
        let sevens = space(CODE_LEN as u32) - V1_IDS;
        for id in (0..3_000u64).chain(sevens - 50..sevens + 50) {
            if let Some(code) = generator.code_for(id) {
                assert_eq!(generator.position(&code), Some(id), "{code}");
            }
        }
        // Codes this generator did not make (another key's, the first permutation's, any 8
        // characters): each still has a place, and no other code has it.
        let other = CodeGenerator::new(b"another-key");
        let v1 = Permutation::new(b"test-key", space(CODE_LEN as u32));
        let mut seen = std::collections::HashSet::new();
        for n in 0..2_000u64 {
            let first = encode_padded(v1.forward(n), CODE_LEN);
            assert!(generator.position(&first).expect("7 characters") >= V1_POSITIONS);
            let codes = [
                other.code_for(n),
                Some(first),
                Some(encode_padded(n * 7_919, CODE_LEN + 1)),
            ];
            for code in codes.into_iter().flatten() {
                let at = generator.position(&code).expect("the generated shape");
                assert!(seen.insert(at), "{code} shares position {at}");
            }
        }
        for other_shape in ["abc", "abcdefghi", "abc-efg", "abc_efgh", "ab\u{e9}defg"] {
            assert_eq!(generator.position(other_shape), None, "{other_shape}");
        }
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
