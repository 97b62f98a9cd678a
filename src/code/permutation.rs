//! Keyed bijections over [0, N): a balanced Feistel network on the smallest even number of bits
//! that covers N, with cycle-walking to stay inside the domain.
//!
//! Why: consecutive counter ids must not give consecutive codes (that would let anyone enumerate
//! everyone's links), yet two ids must never give the same code. A Feistel network is a
//! permutation whatever its round function, and cycle-walking keeps it one on [0, N): from an
//! x < N, re-encrypting until the value is < N ends on the cycle through x. With N = 62^7 and
//! 42 bits, the walk takes 1.25 steps on average.
//!
//! Two round functions. [`Permutation::keyed`] (what codes are made with) runs 10 rounds of
//! HMAC-SHA-256 under the permutation key: a pseudo-random function, so without the key the
//! codes of consecutive ids cannot be told from random ones, nor the key learnt from codes.
//! [`Permutation::new`] is the first one (6 rounds of splitmix64's finaliser over SHA-256-derived
//! round keys): fast, but not a PRF, so someone who sees enough codes may work back to ids.
//! It is kept because codes were made with it: new codes are its images of ids it was never
//! given (see `CodeGenerator`), which keeps them apart from every code it made.

use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

/// Rounds of the first permutation.
const V1_ROUNDS: usize = 6;
/// Rounds of the keyed one: as NIST's FF1 uses on small domains.
const PRF_ROUNDS: u8 = 10;

#[derive(Clone)]
pub struct Permutation {
    domain: u64,
    half_bits: u32,
    mask: u64,
    rounds: Rounds,
}

#[derive(Clone)]
enum Rounds {
    /// The first permutation's round keys.
    V1([u64; V1_ROUNDS]),
    /// HMAC-SHA-256 keyed by the permutation key (and the domain).
    Prf(Box<Prf>),
}

impl Rounds {
    fn count(&self) -> usize {
        match self {
            Rounds::V1(keys) => keys.len(),
            Rounds::Prf(_) => usize::from(PRF_ROUNDS),
        }
    }

    fn apply(&self, round: usize, half: u64) -> u64 {
        match self {
            Rounds::V1(keys) => splitmix(half, keys[round]),
            Rounds::Prf(prf) => prf.round(round as u8, half),
        }
    }
}

impl std::fmt::Debug for Permutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permutation")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Permutation {
    /// The first permutation of [0, domain), keyed by `key`. `domain` must be at least 2.
    pub fn new(key: &[u8], domain: u64) -> Self {
        let mut keys = [0u64; V1_ROUNDS];
        for (round, k) in keys.iter_mut().enumerate() {
            let mut h = Sha256::new();
            h.update(b"kurz-permutation-v1");
            h.update(domain.max(2).to_be_bytes());
            h.update([round as u8]);
            h.update(key);
            let digest = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            *k = u64::from_be_bytes(first);
        }
        Self::with_rounds(domain, Rounds::V1(keys))
    }

    /// A permutation of [0, domain) whose rounds are a PRF keyed by `key` (HMAC-SHA-256).
    /// `domain` must be at least 2.
    pub fn keyed(key: &[u8], domain: u64) -> Self {
        Self::with_rounds(domain, Rounds::Prf(Box::new(Prf::new(key, domain.max(2)))))
    }

    fn with_rounds(domain: u64, rounds: Rounds) -> Self {
        let domain = domain.max(2);
        let bits = 64 - (domain - 1).leading_zeros();
        let half_bits = bits.div_ceil(2);
        Self {
            domain,
            half_bits,
            mask: (1u64 << half_bits) - 1,
            rounds,
        }
    }

    pub fn domain(&self) -> u64 {
        self.domain
    }

    /// Maps `x` (< domain) to its image (< domain).
    pub fn forward(&self, x: u64) -> u64 {
        debug_assert!(x < self.domain);
        let mut y = self.encrypt(x);
        while y >= self.domain {
            y = self.encrypt(y);
        }
        y
    }

    /// The inverse of [`forward`](Self::forward).
    pub fn inverse(&self, y: u64) -> u64 {
        debug_assert!(y < self.domain);
        let mut x = self.decrypt(y);
        while x >= self.domain {
            x = self.decrypt(x);
        }
        x
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> self.half_bits, x & self.mask);
        for round in 0..self.rounds.count() {
            let next = left ^ (self.rounds.apply(round, right) & self.mask);
            left = right;
            right = next;
        }
        (left << self.half_bits) | right
    }

    fn decrypt(&self, y: u64) -> u64 {
        let (mut left, mut right) = (y >> self.half_bits, y & self.mask);
        for round in (0..self.rounds.count()).rev() {
            let prev = right ^ (self.rounds.apply(round, left) & self.mask);
            right = left;
            left = prev;
        }
        (left << self.half_bits) | right
    }
}

/// The keyed round function: the first 8 bytes of HMAC-SHA-256 under the permutation key of
/// `"kurz-permutation-v2" ‖ domain ‖ round ‖ half` (big-endian), computed from the key's inner
/// and outer states with two compressions a round. (What the `hmac` crate computes, without
/// cloning its state and buffer each round: a test holds the two equal.)
#[derive(Clone)]
struct Prf {
    /// SHA-256 states after the key block XOR ipad, and XOR opad.
    inner: [u32; 8],
    outer: [u32; 8],
    /// The inner hash's last block: the label and domain, room for the round and the half,
    /// then SHA-256's padding for a 64 + 36-byte message.
    block: [u8; 64],
}

/// Where a round's byte and half go in [`Prf::block`]: after the label (19 bytes) and the
/// domain (8).
const ROUND_AT: usize = 27;

impl Prf {
    fn new(key: &[u8], domain: u64) -> Self {
        const IV: [u32; 8] = [
            0x6a09_e667,
            0xbb67_ae85,
            0x3c6e_f372,
            0xa54f_f53a,
            0x510e_527f,
            0x9b05_688c,
            0x1f83_d9ab,
            0x5be0_cd19,
        ];
        // HMAC's key block: the key, hashed first when longer than a block, zero-padded.
        let mut padded = [0u8; 64];
        if key.len() > 64 {
            padded[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            padded[..key.len()].copy_from_slice(key);
        }
        let state_after = |pad: u8| {
            let mut state = IV;
            compress256(&mut state, &[padded.map(|b| b ^ pad)]);
            state
        };
        let mut block = [0u8; 64];
        block[..19].copy_from_slice(b"kurz-permutation-v2");
        block[19..ROUND_AT].copy_from_slice(&domain.to_be_bytes());
        block[ROUND_AT + 9] = 0x80;
        block[56..].copy_from_slice(&((64 + ROUND_AT as u64 + 9) * 8).to_be_bytes());
        Self {
            inner: state_after(0x36),
            outer: state_after(0x5c),
            block,
        }
    }

    fn round(&self, round: u8, half: u64) -> u64 {
        let mut block = self.block;
        block[ROUND_AT] = round;
        block[ROUND_AT + 1..ROUND_AT + 9].copy_from_slice(&half.to_be_bytes());
        let mut inner = self.inner;
        compress256(&mut inner, &[block]);
        let mut last = [0u8; 64];
        for (bytes, word) in last.chunks_exact_mut(4).zip(inner) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        last[32] = 0x80;
        last[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut outer = self.outer;
        compress256(&mut outer, &[last]);
        (u64::from(outer[0]) << 32) | u64::from(outer[1])
    }
}

/// The first permutation's round function: splitmix64's finaliser over the half-block mixed
/// with the round key.
fn splitmix(x: u64, key: u64) -> u64 {
    let mut z = x ^ key;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::base62::{encode_padded, space};
    use std::collections::HashSet;

    #[test]
    fn the_keyed_round_is_hmac_sha256_of_label_domain_round_and_half() {
        use hmac::{Hmac, KeyInit, Mac};
        let long = [7u8; 100];
        for key in [
            &b"sixteen-byte-key"[..],
            &[0xa5; 32],
            &[1; 64],
            &[2; 65],
            &long,
        ] {
            for domain in [2u64, 62u64.pow(7) - (1 << 41), u64::MAX] {
                let prf = Prf::new(key, domain);
                let mut half = 0x0123_4567_89ab_cdefu64;
                for round in 0..PRF_ROUNDS {
                    half = half.rotate_left(13) ^ u64::from(round);
                    let mut mac =
                        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any length");
                    mac.update(b"kurz-permutation-v2");
                    mac.update(&domain.to_be_bytes());
                    mac.update(&[round]);
                    mac.update(&half.to_be_bytes());
                    let out = mac.finalize().into_bytes();
                    let want = u64::from_be_bytes(out[..8].try_into().expect("8 bytes"));
                    assert_eq!(prf.round(round, half), want, "key {} bytes", key.len());
                }
            }
        }
    }

    #[test]
    fn bijection_on_a_whole_reduced_domain() {
        // 62^3 = 238,328: small enough to check every element, odd-sized so cycle-walking runs.
        assert_bijection(&Permutation::new(b"test-key", space(3)));
    }

    /// Every element of `p`'s domain maps inside it, to an image no other has, and back.
    fn assert_bijection(p: &Permutation) {
        let mut seen = vec![false; p.domain() as usize];
        for x in 0..p.domain() {
            let y = p.forward(x);
            assert!(y < p.domain());
            assert!(!seen[y as usize], "{y} hit twice");
            seen[y as usize] = true;
            assert_eq!(p.inverse(y), x);
        }
    }

    #[test]
    fn round_trips_on_random_samples_of_the_full_domain() {
        let p = Permutation::new(b"test-key", space(7));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let id = x % space(7);
            let y = p.forward(id);
            assert!(y < space(7));
            assert_eq!(p.inverse(y), id);
        }
    }

    #[test]
    fn a_million_consecutive_ids_give_distinct_base62_codes() {
        let p = Permutation::new(b"kurz-default-permutation-key", space(7));
        let mut codes = HashSet::with_capacity(1_000_000);
        for id in 0..1_000_000 {
            let code = encode_padded(p.forward(id), 7);
            assert_eq!(code.len(), 7);
            assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
            assert!(codes.insert(code));
        }
        assert_eq!(codes.len(), 1_000_000);
    }

    #[test]
    fn the_keyed_permutation_is_a_bijection_on_a_whole_small_domain() {
        // Odd-sized and far from a power of two, so cycle-walking runs often (HMAC is slow
        // in a debug build: a few thousand ids).
        assert_bijection(&Permutation::keyed(b"test-key", 2_503));
    }

    #[test]
    fn the_keyed_permutation_is_deterministic_per_key_and_differs_between_keys() {
        let p = Permutation::keyed(b"test-key", space(7));
        let again = Permutation::keyed(b"test-key", space(7));
        let other = Permutation::keyed(b"test-kez", space(7));
        let v1 = Permutation::new(b"test-key", space(7));
        let ids = 1_000..1_200;
        let images: Vec<u64> = ids.clone().map(|x| p.forward(x)).collect();
        assert_eq!(
            images,
            ids.clone().map(|x| again.forward(x)).collect::<Vec<_>>()
        );
        // Another key (one bit apart) or the first round function: next to no image in common.
        for q in [&other, &v1] {
            let same = ids
                .clone()
                .zip(&images)
                .filter(|(x, y)| q.forward(*x) == **y)
                .count();
            assert!(same <= 1, "{same} of 200 images shared");
        }
        // And no neighbours for neighbours.
        assert!(
            images.windows(2).all(|w| w[0].abs_diff(w[1]) > 1_000),
            "{images:?}"
        );
    }

    #[test]
    fn consecutive_ids_do_not_give_neighbouring_codes() {
        let p = Permutation::new(b"k", space(7));
        let a = p.forward(1000);
        let b = p.forward(1001);
        assert!(a.abs_diff(b) > 1_000_000, "{a} {b}");
        let other = Permutation::new(b"another key", space(7));
        assert_ne!(p.forward(1000), other.forward(1000));
    }
}
