//! Turning counter ids into codes: the keyed permutation, then fixed-width base62.

use super::base62::{encode_padded, space};
use super::{CODE_LEN, Permutation, is_reserved};

/// Maps ids to codes: 7 characters while ids fit in 62^7, then 8.
pub struct CodeGenerator {
    seven: Permutation,
    eight: Permutation,
}

impl CodeGenerator {
    pub fn new(key: &[u8]) -> Self {
        Self {
            seven: Permutation::new(key, space(CODE_LEN as u32)),
            eight: Permutation::new(key, space(CODE_LEN as u32 + 1)),
        }
    }

    /// The code for `id`, or `None` when it is a reserved word (the caller takes the next id).
    pub fn code_for(&self, id: u64) -> Option<String> {
        let code = if id < self.seven.domain() {
            encode_padded(self.seven.forward(id), CODE_LEN)
        } else {
            // 7- and 8-character codes cannot collide with each other: their lengths differ.
            encode_padded(self.eight.forward(id % self.eight.domain()), CODE_LEN + 1)
        };
        (!is_reserved(&code)).then_some(code)
    }
}
