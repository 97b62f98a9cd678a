//! Rendezvous (highest random weight) hashing: every instance, given the same candidates in any
//! order, picks the same one for a key, and a candidate that comes or goes moves only the keys
//! it wins or held. A name's home region ([`super::regions`]) and the reader of a region's
//! stream shard (`dynamodb::stream`) are picked this way.

/// Of `candidates` (each with the bytes that name it), the one scoring highest for `key`: the
/// first 8 bytes of SHA-256(`domain` ‖ name ‖ `key`), big-endian, then the greater name.
/// `None` without candidates.
pub fn pick<'n, T>(
    domain: &[u8],
    key: &[u8],
    candidates: impl IntoIterator<Item = (T, &'n [u8])>,
) -> Option<T> {
    candidates
        .into_iter()
        .map(|(candidate, name)| ((score(domain, name, key), name), candidate))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

fn score(domain: &[u8], name: &[u8], key: &[u8]) -> u64 {
    crate::code::sha256_prefix(&[domain, name, key])
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// Homes of names are stored facts (an alias is claimed in its home): the score is the one
    /// regions have always used, SHA-256("kurz-region-home\0" ‖ id ‖ name), first 8 bytes.
    #[test]
    fn a_name_s_home_region_is_the_one_it_always_was() {
        let ids: [u8; 3] = [0, 3, 7];
        for i in 0..1000 {
            let name = format!("alias-{i}");
            let reference = ids
                .iter()
                .max_by_key(|id| {
                    let digest = Sha256::new()
                        .chain_update(b"kurz-region-home\0")
                        .chain_update([**id])
                        .chain_update(name.as_bytes())
                        .finalize();
                    let mut first = [0u8; 8];
                    first.copy_from_slice(&digest[..8]);
                    (u64::from_be_bytes(first), **id)
                })
                .copied();
            let names: Vec<[u8; 1]> = ids.iter().map(|id| [*id]).collect();
            let picked = pick(
                b"kurz-region-home\0",
                name.as_bytes(),
                ids.iter().zip(&names).map(|(id, n)| (*id, n.as_slice())),
            );
            assert_eq!(picked, reference, "{name}");
        }
    }

    #[test]
    fn the_order_of_the_candidates_does_not_matter_and_none_picks_nothing() {
        let names = ["a", "bb", "ccc", "dddd"];
        for key in ["x", "y", "z", "shardId-1"] {
            let forward = pick(
                b"d\0",
                key.as_bytes(),
                names.iter().map(|n| (*n, n.as_bytes())),
            );
            let backward = pick(
                b"d\0",
                key.as_bytes(),
                names.iter().rev().map(|n| (*n, n.as_bytes())),
            );
            assert_eq!(forward, backward, "{key}");
        }
        assert_eq!(pick::<u8>(b"d\0", b"x", []), None);
    }
}
