//! Ids from the store's counter.
//!
//! Each instance leases a block of ids from the store's counter (one atomic add per block) and
//! hands them out from memory, so the counter record is touched once per `block_size` links.

use std::ops::Range;

use tokio::sync::Mutex;

use crate::code::CodeGenerator;
use crate::store::{LinkStore, StoreError};

/// Generated codes: the next id of a leased block, through the keyed permutation.
pub struct CodeSource {
    ids: IdAllocator,
    codes: CodeGenerator,
}

impl CodeSource {
    pub fn new(block_size: u64, permutation_key: &[u8]) -> Self {
        Self {
            ids: IdAllocator::new(block_size),
            codes: CodeGenerator::new(permutation_key),
        }
    }

    /// The next generated code, or `None` when the next id maps to a reserved word (the caller
    /// asks again).
    pub async fn next_code(&self, store: &dyn LinkStore) -> Result<Option<String>, StoreError> {
        let id = self.ids.next_id(store).await?;
        Ok(self.codes.code_for(id))
    }
}

/// Hands out ids from leased blocks. Leasing is single-flight: while one caller leases, the
/// others wait for the new block instead of leasing blocks of their own.
struct IdAllocator {
    block_size: u64,
    block: Mutex<Range<u64>>,
}

impl IdAllocator {
    fn new(block_size: u64) -> Self {
        Self {
            block_size,
            block: Mutex::new(0..0),
        }
    }

    async fn next_id(&self, store: &dyn LinkStore) -> Result<u64, StoreError> {
        let mut block = self.block.lock().await;
        if let Some(id) = block.next() {
            return Ok(id);
        }
        let mut leased = store.lease_ids(self.block_size).await?;
        let id = leased.next().ok_or_else(|| {
            StoreError::internal(format!("counter lease returned an empty block {leased:?}"))
        })?;
        *block = leased;
        Ok(id)
    }
}
