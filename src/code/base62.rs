//! Fixed-width base62 (`0-9A-Za-z`), so every generated code of a length has the same shape.

/// Encodes `n` in base62, left-padded with `0` to `width` characters.
/// `n` must be below 62^width; callers guarantee it through the permutation's domain.
pub fn encode_padded(n: u64, width: usize) -> String {
    let mut digits = [0u8; 22];
    let len = base62::encode_bytes(n, &mut digits).unwrap_or(0);
    let mut out = String::with_capacity(width.max(len));
    for _ in len..width {
        out.push('0');
    }
    out.extend(digits[..len].iter().map(|&b| char::from(b)));
    out
}

/// Decodes a base62 string; `None` for characters outside the alphabet or overflow of u64.
pub fn decode(text: &str) -> Option<u64> {
    base62::decode(text)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
}

/// 62^len, the number of codes of a length.
pub const fn space(len: u32) -> u64 {
    62u64.pow(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_round_trips() {
        assert_eq!(encode_padded(0, 7), "0000000");
        assert_eq!(encode_padded(61, 7), "000000z");
        assert_eq!(encode_padded(space(7) - 1, 7), "zzzzzzz");
        for n in [0, 1, 62, 12_345_678, space(7) - 1] {
            assert_eq!(decode(&encode_padded(n, 7)), Some(n));
        }
        assert_eq!(decode("ab-c"), None);
    }
}
