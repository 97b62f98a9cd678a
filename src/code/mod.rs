//! Short codes: what a code may look like, and how new ones are made.
//!
//! Generated codes come from a leased counter mapped through a keyed permutation (so codes are
//! unique by construction and do not reveal their order); a SHA-256 hash code is the fallback
//! when the counter cannot be leased. Custom aliases follow stricter rules. Whatever the source,
//! the store's put-if-absent insert is the final word on uniqueness.

mod alias;
pub mod base62;
mod generator;
mod hash;
mod permutation;
pub mod region;

pub use alias::{AliasError, is_reserved, parse_alias};
pub use generator::{CodeGenerator, V1_IDS};
pub(crate) use hash::sha256_prefix;
pub use hash::{hash_code, hash_value};
pub use permutation::Permutation;

/// Length of generated codes; 62^7 ≈ 3.5 trillion ids before codes grow to 8 characters.
pub const CODE_LEN: usize = 7;
/// Longest code or alias kurz will ever store.
pub const MAX_CODE_LEN: usize = 64;

/// Characters allowed in any code: base62 plus `-` and `_` (aliases only).
pub fn is_code_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Whether `text` could be a stored code at all. The redirect path uses it to answer 404
/// without touching the cache or store for paths that can never match.
pub fn looks_like_code(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_CODE_LEN && text.bytes().all(is_code_char)
}
