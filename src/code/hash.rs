//! Hash codes: base62 of SHA-256(url ‖ salt), used when the counter cannot be leased (with a
//! fresh random salt for every try, so nobody can compute a link's code ahead of it and take
//! it) and by `kurz import` for CSV rows without a code (salt 0: the same URL gets the same
//! code when imported again). A collision is resolved by the caller with another salt; after a
//! few, with 8 characters.

use sha2::{Digest, Sha256};

use super::base62::{encode_padded, space};

/// The code for `url` with `salt`, `len` (7 or 8) characters long.
pub fn hash_code(url: &str, salt: &[u8], len: u32) -> String {
    // 2^64 is ~5,000x 62^8, so the modulo bias is negligible.
    encode_padded(hash_value(url, salt) % space(len), len as usize)
}

/// The first 64 bits of SHA-256(url ‖ salt): what a hash code is made of (in a deployment
/// with regions, through the region's range of ids: [`super::region::hash_counter`]).
pub fn hash_value(url: &str, salt: &[u8]) -> u64 {
    sha256_prefix(&[url.as_bytes(), salt])
}

/// The first 8 bytes, big-endian, of SHA-256 over `parts` one after another.
pub(crate) fn sha256_prefix(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_the_salt_changes_the_code() {
        let a = hash_code("https://example.com/", &[0; 4], 7);
        assert_eq!(a, hash_code("https://example.com/", &[0; 4], 7));
        assert_eq!(a.len(), 7);
        assert_ne!(a, hash_code("https://example.com/", &1u32.to_be_bytes(), 7));
        assert_eq!(hash_code("https://example.com/", &[0; 4], 8).len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
