//! Turning counter ids into codes.
//!
//! Each instance leases a block of ids from the store's counter (one atomic add per block) and
//! hands them out from memory, so the counter record is touched once per `block_size` links.

use std::ops::Range;

use tokio::sync::Mutex;

use super::base62::{encode_padded, space};
use super::{CODE_LEN, Permutation, is_reserved};
use crate::store::{LinkStore, StoreError};

/// Hands out ids from leased blocks. Leasing is single-flight: while one caller leases, the
/// others wait for the new block instead of leasing blocks of their own.
pub struct IdAllocator {
    block_size: u64,
    block: Mutex<Range<u64>>,
}

impl IdAllocator {
    pub fn new(block_size: u64) -> Self {
        Self {
            block_size,
            block: Mutex::new(0..0),
        }
    }

    pub async fn next_id(&self, store: &dyn LinkStore) -> Result<u64, StoreError> {
        let mut block = self.block.lock().await;
        if let Some(id) = block.next() {
            return Ok(id);
        }
        let mut leased = store.lease_ids(self.block_size).await?;
        let id = leased.next().ok_or_else(|| {
            StoreError::Internal(format!("counter lease returned an empty block {leased:?}"))
        })?;
        *block = leased;
        Ok(id)
    }
}

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
