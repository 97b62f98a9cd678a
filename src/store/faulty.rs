//! For unit tests: the embedded store with faults the test switches on and off, and a link to
//! store.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Analytics, ClickDelta, EmbeddedStore, FlushError, IdempotencyRecord, ImportOutcome,
    InsertOutcome, Link, LinkStats, LinkStore, ListPosition, ListScope, ReplaceOutcome, StoreError,
    StoredKey,
};

/// A plain 302 link to `https://example.com/{code}`.
pub fn link(code: &str) -> Link {
    Link {
        code: code.into(),
        url: format!("https://example.com/{code}"),
        created_at_ms: 1,
        ..Link::default()
    }
}

pub struct FaultyStore {
    inner: EmbeddedStore,
    /// Id leases fail (as a throttled counter would).
    pub fail_leases: AtomicBool,
    /// Id leases asked for, failed or not.
    pub leases: AtomicU64,
    /// This many inserts answer "code taken" without looking (as squatted codes would).
    pub taken_inserts: AtomicU32,
    /// Click writes fail, none applied (as a stalled store would).
    pub fail_clicks: AtomicBool,
    /// The number of deltas of every click write, in order.
    pub click_writes: Mutex<Vec<usize>>,
    /// Reads of the API keys fail (as an unreachable store would).
    pub fail_keys: AtomicBool,
    /// Lookups and inserts (of links and keys) fail (as another region's table out of reach
    /// would).
    pub unreachable: AtomicBool,
}

impl FaultyStore {
    /// A faultless store on a fresh file in a temporary folder (kept while the folder is).
    pub fn temporary() -> (tempfile::TempDir, Arc<Self>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = EmbeddedStore::open(&dir.path().join("k.redb"), Duration::from_secs(5))
            .expect("open the embedded store");
        (dir, Arc::new(Self::new(inner)))
    }

    pub fn new(inner: EmbeddedStore) -> Self {
        Self {
            inner,
            fail_leases: AtomicBool::new(false),
            leases: AtomicU64::new(0),
            taken_inserts: AtomicU32::new(0),
            fail_clicks: AtomicBool::new(false),
            click_writes: Mutex::new(Vec::new()),
            fail_keys: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
        }
    }
}

impl FaultyStore {
    fn reachable(&self) -> Result<(), StoreError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("connection refused"));
        }
        Ok(())
    }
}

#[async_trait]
impl LinkStore for FaultyStore {
    fn backend(&self) -> &'static str {
        "test"
    }
    fn disk(&self) -> Option<super::DiskState> {
        self.inner.disk()
    }
    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.reachable()?;
        self.inner.get(code).await
    }
    async fn insert(
        &self,
        link: &Link,
        idem: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        self.reachable()?;
        let taken = self
            .taken_inserts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if taken.is_ok() {
            return Ok(InsertOutcome::CodeTaken);
        }
        self.inner.insert(link, idem).await
    }
    async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError> {
        self.inner.delete(code).await
    }
    async fn replace(&self, link: &Link) -> Result<ReplaceOutcome, StoreError> {
        self.inner.replace(link).await
    }
    async fn list(
        &self,
        scope: &ListScope,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        self.inner.list(scope, after, limit).await
    }
    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.inner.secret(name, candidate).await
    }
    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError> {
        self.inner.put_secret(name, secret).await
    }
    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_secret(name).await
    }
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        if self.fail_keys.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("store unreachable"));
        }
        self.inner.keys().await
    }
    async fn insert_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        self.reachable()?;
        self.inner.insert_key(key).await
    }
    async fn replace_key(&self, key: &StoredKey) -> Result<ReplaceOutcome, StoreError> {
        self.inner.replace_key(key).await
    }
    async fn import(&self, link: &Link, stats: &LinkStats) -> Result<ImportOutcome, StoreError> {
        self.inner.import(link, stats).await
    }
    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        self.leases.fetch_add(1, Ordering::SeqCst);
        if self.fail_leases.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("counter throttled"));
        }
        self.inner.lease_ids(count).await
    }
    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        if let Ok(mut writes) = self.click_writes.lock() {
            writes.push(deltas.len());
        }
        if self.fail_clicks.load(Ordering::SeqCst) {
            return Err(FlushError {
                error: StoreError::unavailable("store stalled"),
                unapplied: (0..deltas.len()).collect(),
            });
        }
        self.inner.add_clicks(deltas).await
    }
    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        self.inner.stats(code).await
    }
    async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<Analytics>, StoreError> {
        self.inner.analytics(code, from_hour, to_hour).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }

    fn time_reference(&self) -> Option<Arc<dyn crate::clock::TimeReference>> {
        self.inner.time_reference()
    }
}
