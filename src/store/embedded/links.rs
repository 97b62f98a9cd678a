//! Where the embedded store keeps a link: generated codes in the order of their ids, every
//! other code by itself.
//!
//! Generated codes are a keyed permutation of consecutive ids, so kept by code every create
//! lands in a random leaf of the B-tree and its commit rewrites that page. Kept by id, creates
//! append at the tree's right edge: a batch of them dirties one leaf. A code of the generated
//! shape (7 or 8 base62 characters) is placed by [`CodeGenerator::position`], the inverse of
//! the permutation, whoever made it (an alias or a hash code of that shape has a position too,
//! just not a neighbour's); any other code stays in [`LINKS`] under itself. Each code has
//! exactly one place, so put-if-absent in that place is the whole of uniqueness across the
//! two tables.
//!
//! The key the positions are computed with is the store's own ([`LAYOUT_KEY`]), fixed when the
//! file is first opened: the configured permutation key, else the stored one (made then if
//! there is none). Should the permutation key change later, every code still has its one place
//! (lookups find everything); only new creates stop landing in id order.

use std::ops::Bound;

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use crate::code::CodeGenerator;

/// Codes of other shapes (aliases that are not 7 or 8 base62 characters) -> the link as JSON;
/// before the split, every link.
pub(super) const LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("links");
/// Position (see the module's doc) -> the link as JSON.
pub(super) const LINKS_BY_ID: TableDefinition<u64, &[u8]> = TableDefinition::new("links_by_id");
/// The name, in the store's secrets, of the key positions are computed with.
pub(super) const LAYOUT_KEY: &str = "code_layout_key";
/// Set (in the counters) once every link of the generated shape is in [`LINKS_BY_ID`].
pub(super) const SPLIT: &str = "links_by_id";

/// How codes map to places, for the life of the file (or until a store without links takes
/// another permutation key, [`adopt`]).
pub(super) struct Layout {
    codes: CodeGenerator,
    key: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place<'a> {
    Id(u64),
    Code(&'a str),
}

impl Layout {
    pub(super) fn new(key: &[u8]) -> Self {
        Self {
            codes: CodeGenerator::new(key),
            key: key.to_vec(),
        }
    }

    /// `code`'s position, if it is of the generated shape (see the module's doc).
    pub(super) fn position(&self, code: &str) -> Option<u64> {
        self.codes.position(code)
    }

    pub(super) fn place<'a>(&self, code: &'a str) -> Place<'a> {
        Place::at(self.position(code), code)
    }
}

impl<'a> Place<'a> {
    /// The place of `code`, whose position (by a layout) is `position`.
    pub(super) fn at(position: Option<u64>, code: &'a str) -> Self {
        position.map_or(Place::Code(code), Place::Id)
    }
}

impl Place<'_> {
    /// `f` of the stored bytes, in a write transaction.
    pub(super) fn get<T>(
        self,
        txn: &WriteTransaction,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, redb::Error> {
        Ok(match self {
            Place::Id(id) => txn.open_table(LINKS_BY_ID)?.get(id)?.map(|v| f(v.value())),
            Place::Code(code) => txn.open_table(LINKS)?.get(code)?.map(|v| f(v.value())),
        })
    }

    /// `f` of the stored bytes, in a read transaction.
    pub(super) fn read<T>(
        self,
        txn: &ReadTransaction,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, redb::Error> {
        Ok(match self {
            Place::Id(id) => txn.open_table(LINKS_BY_ID)?.get(id)?.map(|v| f(v.value())),
            Place::Code(code) => txn.open_table(LINKS)?.get(code)?.map(|v| f(v.value())),
        })
    }

    /// Stores `bytes` unless something is stored here already; whether it did.
    pub(super) fn insert_new(
        self,
        txn: &WriteTransaction,
        bytes: &[u8],
    ) -> Result<bool, redb::Error> {
        match self {
            Place::Id(id) => {
                let mut table = txn.open_table(LINKS_BY_ID)?;
                if table.get(id)?.is_some() {
                    return Ok(false);
                }
                table.insert(id, bytes)?;
            }
            Place::Code(code) => {
                let mut table = txn.open_table(LINKS)?;
                if table.get(code)?.is_some() {
                    return Ok(false);
                }
                table.insert(code, bytes)?;
            }
        }
        Ok(true)
    }

    /// Stores `bytes`, replacing what is there.
    pub(super) fn put(self, txn: &WriteTransaction, bytes: &[u8]) -> Result<(), redb::Error> {
        match self {
            Place::Id(id) => drop(txn.open_table(LINKS_BY_ID)?.insert(id, bytes)?),
            Place::Code(code) => drop(txn.open_table(LINKS)?.insert(code, bytes)?),
        }
        Ok(())
    }

    /// Removes what is stored here, returning it.
    pub(super) fn remove(self, txn: &WriteTransaction) -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(match self {
            Place::Id(id) => txn
                .open_table(LINKS_BY_ID)?
                .remove(id)?
                .map(|v| v.value().to_vec()),
            Place::Code(code) => txn
                .open_table(LINKS)?
                .remove(code)?
                .map(|v| v.value().to_vec()),
        })
    }
}

/// Both tables, open in a write transaction for many lookups (a merge of the click log).
pub(super) struct Tables<'txn> {
    by_code: Table<'txn, &'static str, &'static [u8]>,
    by_id: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            by_code: txn.open_table(LINKS)?,
            by_id: txn.open_table(LINKS_BY_ID)?,
        })
    }

    pub(super) fn get<T>(
        &self,
        place: Place<'_>,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, redb::Error> {
        Ok(match place {
            Place::Id(id) => self.by_id.get(id)?.map(|v| f(v.value())),
            Place::Code(code) => self.by_code.get(code)?.map(|v| f(v.value())),
        })
    }
}

/// The key positions are computed with: the one this file was laid out with, else (on its
/// first open) `configured`, else the stored permutation key, else `fresh`, stored then as the
/// permutation key for the id generator to find.
pub(super) fn layout_key(
    txn: &WriteTransaction,
    configured: Option<&[u8]>,
    fresh: &[u8],
) -> Result<Vec<u8>, redb::Error> {
    let mut secrets = txn.open_table(super::SECRETS)?;
    if let Some(key) = secrets.get(LAYOUT_KEY)? {
        return Ok(key.value().to_vec());
    }
    let stored = secrets
        .get(crate::secrets::PERMUTATION_KEY)?
        .map(|k| k.value().to_vec());
    let key = match (configured, stored) {
        (Some(key), _) => key.to_vec(),
        (None, Some(key)) => key,
        (None, None) => {
            secrets.insert(crate::secrets::PERMUTATION_KEY, fresh)?;
            fresh.to_vec()
        }
    };
    secrets.insert(LAYOUT_KEY, key.as_slice())?;
    Ok(key)
}

/// A permutation key stored in place of the current one (`kurz import` carrying the source's
/// into a new store): the layout follows it while no link is stored, so that the links and
/// creates to come land in id order; once links are stored it stays (they are placed by it).
/// The layout to use from now on in this transaction, if it changed.
pub(super) fn adopt(
    txn: &WriteTransaction,
    current: &Layout,
    key: &[u8],
) -> Result<Option<Layout>, redb::Error> {
    if current.key == key
        || !txn.open_table(LINKS)?.is_empty()?
        || !txn.open_table(LINKS_BY_ID)?.is_empty()?
    {
        return Ok(None);
    }
    txn.open_table(super::SECRETS)?.insert(LAYOUT_KEY, key)?;
    Ok(Some(Layout::new(key)))
}

/// Links moved in one transaction of the split (a handful in tests, so that they take several).
#[cfg(not(test))]
const SPLIT_CHUNK: usize = 10_000;
#[cfg(test)]
const SPLIT_CHUNK: usize = 7;

/// Stores written before the split keep every link in [`LINKS`]: on open, before anything is
/// served, those of the generated shape move to their positions, [`SPLIT_CHUNK`] to a durable
/// transaction, so that memory stays bounded however many there are. Each transaction moves
/// its links whole (removed from one table, inserted in the other), so an open cut short
/// leaves every link in exactly one place, and the next open moves the rest.
pub(super) fn split(db: &Database, layout: &Layout) -> Result<(), redb::Error> {
    let mut after: Option<String> = None;
    let mut moved = 0usize;
    loop {
        let txn = db.begin_write()?;
        let mut counters = txn.open_table(super::COUNTERS)?;
        if counters.get(SPLIT)?.is_some() {
            return Ok(());
        }
        let mut by_code = txn.open_table(LINKS)?;
        let mut chunk = Vec::new();
        let mut last = None;
        let range = match &after {
            Some(code) => {
                by_code.range::<&str>((Bound::Excluded(code.as_str()), Bound::Unbounded))?
            }
            None => by_code.range::<&str>(..)?,
        };
        for entry in range {
            let (code, bytes) = entry?;
            let code = code.value();
            last = Some(code.to_owned());
            if let Place::Id(id) = layout.place(code) {
                chunk.push((code.to_owned(), id, bytes.value().to_vec()));
                if chunk.len() == SPLIT_CHUNK {
                    break;
                }
            }
        }
        let mut by_id = txn.open_table(LINKS_BY_ID)?;
        for (code, id, bytes) in &chunk {
            by_code.remove(code.as_str())?;
            by_id.insert(*id, bytes.as_slice())?;
        }
        moved += chunk.len();
        let done = chunk.len() < SPLIT_CHUNK;
        if done {
            counters.insert(SPLIT, 1)?;
        }
        drop((counters, by_code, by_id));
        txn.commit()?;
        if done {
            if moved > 0 {
                tracing::info!(
                    links = moved,
                    "moved the stored links of generated codes into id order"
                );
            }
            return Ok(());
        }
        tracing::info!(
            links = moved,
            "moving the stored links of generated codes into id order"
        );
        after = last;
    }
}

/// `each` of every link's JSON, in no particular order: for the indexes that stores written
/// before them get on first open.
pub(super) fn all(
    txn: &WriteTransaction,
    mut each: impl FnMut(&[u8]) -> Result<(), redb::Error>,
) -> Result<(), redb::Error> {
    for entry in txn.open_table(LINKS)?.iter()? {
        each(entry?.1.value())?;
    }
    for entry in txn.open_table(LINKS_BY_ID)?.iter()? {
        each(entry?.1.value())?;
    }
    Ok(())
}
