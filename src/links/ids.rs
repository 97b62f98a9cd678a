//! Ids from the store's counter.
//!
//! Each instance leases a block of ids from the store's counter (one atomic add per block) and
//! hands them out from memory, so the counter record is touched once per `block_size` links.

use std::ops::Range;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::code::{CodeGenerator, hash_code, hash_value, region};
use crate::store::{LinkStore, StoreError};

/// Generated codes: the next id of a leased block, through the keyed permutation.
pub struct CodeSource {
    ids: IdAllocator,
    codes: CodeGenerator,
    /// `region.id`: hash codes are made in this region's range of ids, as its counter's are.
    region: Option<u8>,
}

impl CodeSource {
    pub fn new(block_size: u64, permutation_key: &[u8]) -> Self {
        Self {
            ids: IdAllocator::new(block_size),
            codes: CodeGenerator::new(permutation_key),
            region: None,
        }
    }

    /// Hash codes of region `region` (the store's counter is already the region's).
    pub fn in_region(mut self, region: Option<u8>) -> Self {
        self.region = region;
        self
    }

    /// A hash code for `url` with `salt`, `len` (7 or 8) characters long; `None` when it is a
    /// reserved word (the caller tries another salt). In a region, one of its range of ids, so
    /// that the code names its home region as a counter code does.
    pub fn hash_code(&self, url: &str, salt: &[u8], len: u32) -> Option<String> {
        let Some(region) = self.region else {
            return Some(hash_code(url, salt, len));
        };
        let counter = region::hash_counter(hash_value(url, salt), len as usize);
        self.codes.code_for(region::id_of(region, counter)?)
    }

    /// The next generated code, or `None` when the next id maps to a reserved word (the caller
    /// asks again).
    pub async fn next_code(&self, store: &dyn LinkStore) -> Result<Option<String>, StoreError> {
        let id = self.ids.next_id(store).await?;
        Ok(self.codes.code_for(id))
    }
}

/// Hands out ids from leased blocks. Leasing is single-flight: while one caller leases, the
/// others wait for the new block instead of leasing blocks of their own; and when that lease
/// fails, they share its failure instead of each trying again in turn (which would make the
/// last of them wait one store timeout per caller ahead of it).
struct IdAllocator {
    block_size: u64,
    block: Mutex<Block>,
}

struct Block {
    ids: Range<u64>,
    /// When the last lease failed, and how.
    failed: Option<(Instant, StoreError)>,
}

impl IdAllocator {
    fn new(block_size: u64) -> Self {
        Self {
            block_size,
            block: Mutex::new(Block {
                ids: 0..0,
                failed: None,
            }),
        }
    }

    async fn next_id(&self, store: &dyn LinkStore) -> Result<u64, StoreError> {
        self.next_id_asked_at(store, Instant::now()).await
    }

    async fn next_id_asked_at(
        &self,
        store: &dyn LinkStore,
        asked: Instant,
    ) -> Result<u64, StoreError> {
        let mut block = self.block.lock().await;
        if let Some(id) = block.ids.next() {
            return Ok(id);
        }
        if let Some((at, error)) = &block.failed
            && *at >= asked
        {
            // A lease failed while this caller waited for it: that is the answer.
            return Err(error.clone());
        }
        let mut leased = match store.lease_ids(self.block_size).await {
            Ok(leased) => leased,
            Err(error) => {
                block.failed = Some((Instant::now(), error.clone()));
                return Err(error);
            }
        };
        let id = leased.next().ok_or_else(|| {
            StoreError::internal(format!("counter lease returned an empty block {leased:?}"))
        })?;
        block.ids = leased;
        block.failed = None;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::faulty::FaultyStore;

    #[tokio::test]
    async fn callers_waiting_on_a_failed_lease_share_its_failure_and_later_ones_try_again() {
        let (_dir, store) = FaultyStore::temporary();
        store.fail_leases.store(true, Ordering::SeqCst);
        let ids = Arc::new(IdAllocator::new(10));
        // Eight callers that all asked before the lease failed.
        let asked = Instant::now();
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (ids, store) = (Arc::clone(&ids), Arc::clone(&store));
                tokio::spawn(async move { ids.next_id_asked_at(&*store, asked).await })
            })
            .collect();
        for caller in callers {
            assert!(caller.await.expect("join").is_err());
        }
        assert_eq!(
            store.leases.load(Ordering::SeqCst),
            1,
            "one lease for all of them"
        );
        // A caller that asks after the failure tries again, and gets ids once the store answers.
        store.fail_leases.store(false, Ordering::SeqCst);
        assert_eq!(ids.next_id(&*store).await.expect("leased"), 0);
        assert_eq!(ids.next_id(&*store).await.expect("from the block"), 1);
        assert_eq!(store.leases.load(Ordering::SeqCst), 2);
    }
}
