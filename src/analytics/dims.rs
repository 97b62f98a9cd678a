//! A rollup's human clicks per value of each [`Dimension`], held in one list.
//!
//! Over a large hot set most clicks of a flush are the only click of their link in it, so the
//! flusher makes a rollup per click: five lists of one value each were five allocations (and
//! five frees once written), most of what analytics added to the flusher's cost in a profile
//! of the load bench's 1,000,000-link run. One list, sorted by dimension and then by value,
//! with where each dimension ends, is one allocation. The stored form is unchanged: five
//! sequences of (value, clicks), as five lists were stored.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Dimension, OTHER, Values};

/// Human clicks per value, per dimension: each dimension's values sorted, at most the cap plus
/// `other` (see [`super::Rollup`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dims {
    /// Every dimension's (value, clicks), in [`Dimension::ALL`]'s order.
    values: Vec<(Arc<str>, u64)>,
    /// Where each dimension's values end in `values`.
    ends: [u32; Dimension::ALL.len()],
}

impl Dims {
    fn range(&self, dimension: Dimension) -> Range<usize> {
        let i = dimension.index();
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    /// One dimension's values, sorted by value.
    pub fn get(&self, dimension: Dimension) -> &[(Arc<str>, u64)] {
        &self.values[self.range(dimension)]
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Puts `values` (sorted by value) in place of a dimension's.
    pub fn set(&mut self, dimension: Dimension, values: Values) {
        let range = self.range(dimension);
        let (old, new) = (range.len(), values.len());
        self.values.splice(range, values);
        for end in &mut self.ends[dimension.index()..] {
            *end = (*end as usize - old + new) as u32;
        }
    }

    /// Adds `n` clicks to `value`; a value beyond the cap counts as `other`.
    pub fn add(&mut self, dimension: Dimension, value: &Arc<str>, n: u64, cap: usize) {
        let range = self.range(dimension);
        let these = &self.values[range.clone()];
        match these.binary_search_by(|(v, _)| (**v).cmp(value)) {
            Ok(i) => self.values[range.start + i].1 += n,
            Err(_) if distinct(these) >= cap && &**value != OTHER => self.add_other(dimension, n),
            Err(i) => self.insert(dimension, range.start + i, Arc::clone(value), n),
        }
    }

    fn add_other(&mut self, dimension: Dimension, n: u64) {
        let range = self.range(dimension);
        match self.values[range.clone()].binary_search_by(|(v, _)| (**v).cmp(OTHER)) {
            Ok(i) => self.values[range.start + i].1 += n,
            Err(i) => self.insert(dimension, range.start + i, OTHER.into(), n),
        }
    }

    fn insert(&mut self, dimension: Dimension, at: usize, value: Arc<str>, n: u64) {
        if self.values.capacity() == 0 {
            // A click's first values: one for each dimension.
            self.values.reserve_exact(Dimension::ALL.len());
        }
        self.values.insert(at, (value, n));
        for end in &mut self.ends[dimension.index()..] {
            *end += 1;
        }
    }

    /// Adds `more` (sorted by value) to a dimension's values, keeping at most `cap`: values
    /// past the cap go to `other`, the least clicked first (ties: the last by value).
    pub fn merge(&mut self, dimension: Dimension, more: &[(Arc<str>, u64)], cap: usize) {
        for (value, n) in more {
            self.add(dimension, value, *n, usize::MAX);
        }
        let these = self.get(dimension);
        let excess = distinct(these).saturating_sub(cap);
        if excess == 0 {
            return;
        }
        let mut order: Vec<usize> = (0..these.len())
            .filter(|&i| &*these[i].0 != OTHER)
            .collect();
        order.sort_by(|&a, &b| {
            these[a]
                .1
                .cmp(&these[b].1)
                .then(these[b].0.cmp(&these[a].0))
        });
        let mut folded = vec![false; these.len()];
        for i in order.into_iter().take(excess) {
            folded[i] = true;
        }
        let mut moved = 0;
        let kept: Values = these
            .iter()
            .zip(folded)
            .filter_map(|(entry, fold)| {
                if fold {
                    moved += entry.1;
                    None
                } else {
                    Some(entry.clone())
                }
            })
            .collect();
        self.set(dimension, kept);
        self.add_other(dimension, moved);
    }
}

/// Values other than `other`.
fn distinct(values: &[(Arc<str>, u64)]) -> usize {
    values.len() - usize::from(values.iter().any(|(v, _)| &**v == OTHER))
}

impl Serialize for Dims {
    /// As `[Vec<(value, clicks)>; 5]`: a tuple of five sequences.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(Dimension::ALL.len())?;
        for dimension in Dimension::ALL {
            tuple.serialize_element(self.get(dimension))?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Dims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(Dimension::ALL.len(), DimsVisitor)
    }
}

struct DimsVisitor;

impl<'de> Visitor<'de> for DimsVisitor {
    type Value = Dims;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} lists of (value, clicks)", Dimension::ALL.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dims, A::Error> {
        let mut dims = Dims::default();
        for (i, dimension) in Dimension::ALL.into_iter().enumerate() {
            let start = dims.values.len();
            seq.next_element_seed(Append(&mut dims.values))?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            let these = &mut dims.values[start..];
            // Written sorted; kept sorted whatever was read, since lookups search them.
            if !these.is_sorted_by(|a, b| a.0 <= b.0) {
                these.sort_unstable();
            }
            dims.ends[dimension.index()..].fill(dims.values.len() as u32);
        }
        Ok(dims)
    }
}

/// Reads one dimension's sequence onto the end of the list.
struct Append<'a>(&'a mut Vec<(Arc<str>, u64)>);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Append<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of (value, clicks)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The hint comes from the bytes read: reserve no more than a cap's worth from it.
        self.0.reserve(seq.size_hint().unwrap_or(0).min(256));
        while let Some((Shared(value), n)) = seq.next_element::<(Shared, u64)>()? {
            self.0.push((value, n));
        }
        Ok(())
    }
}

/// A value read straight into shared text: one allocation (serde's own `Arc<str>` reads a
/// `Box<str>` first, and copies it).
struct Shared(Arc<str>);

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Shared;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("text")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Shared, E> {
                Ok(Shared(text.into()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, u64)]) -> Values {
        pairs.iter().map(|&(v, n)| (v.into(), n)).collect()
    }

    #[test]
    fn each_dimension_keeps_its_own_sorted_values() {
        let mut dims = Dims::default();
        for (dimension, value) in [
            (Dimension::Os, "Linux"),
            (Dimension::Referrer, "b.example"),
            (Dimension::Country, "DE"),
            (Dimension::Referrer, "a.example"),
            (Dimension::Os, "Android"),
            (Dimension::Referrer, "b.example"),
        ] {
            dims.add(dimension, &value.into(), 1, 50);
        }
        assert_eq!(
            dims.get(Dimension::Referrer),
            &values(&[("a.example", 1), ("b.example", 2)])[..]
        );
        assert_eq!(dims.get(Dimension::Country), &values(&[("DE", 1)])[..]);
        assert!(dims.get(Dimension::Device).is_empty());
        assert!(dims.get(Dimension::Browser).is_empty());
        assert_eq!(
            dims.get(Dimension::Os),
            &values(&[("Android", 1), ("Linux", 1)])[..]
        );
        dims.set(Dimension::Country, values(&[("FR", 2), ("US", 3)]));
        assert_eq!(
            dims.get(Dimension::Country),
            &values(&[("FR", 2), ("US", 3)])[..]
        );
        assert_eq!(dims.get(Dimension::Os).len(), 2, "later dimensions moved");
        dims.set(Dimension::Referrer, Vec::new());
        assert!(dims.get(Dimension::Referrer).is_empty());
        assert_eq!(dims.get(Dimension::Country).len(), 2);
    }

    #[test]
    fn the_stored_form_is_five_lists_and_reads_back() {
        let lists: [Values; 5] = [
            values(&[("a.example", 2), ("direct", 1)]),
            values(&[("DE", 3)]),
            Vec::new(),
            values(&[("Firefox", 3)]),
            values(&[("Linux", 3)]),
        ];
        let mut dims = Dims::default();
        for (dimension, list) in Dimension::ALL.into_iter().zip(&lists) {
            dims.set(dimension, list.clone());
        }
        let bytes = postcard::to_allocvec(&dims).expect("encode");
        assert_eq!(
            bytes,
            postcard::to_allocvec(&lists).expect("encode"),
            "stores written before keep reading"
        );
        let back: Dims = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, dims);
        // Values out of order (never written so) are sorted when read.
        let unsorted: [Values; 5] = [
            values(&[("b", 1), ("a", 2)]),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        ];
        let back: Dims = postcard::from_bytes(&postcard::to_allocvec(&unsorted).expect("encode"))
            .expect("decode");
        assert_eq!(
            back.get(Dimension::Referrer),
            &values(&[("a", 2), ("b", 1)])[..]
        );
        assert!(postcard::from_bytes::<Dims>(&bytes[..bytes.len() - 3]).is_err());
    }
}
