//! The store with a client span around each call made within a traced request (or flush):
//! installed only when traces are on (`telemetry.otlp_endpoint`), so the store costs nothing
//! more when they are off. Outside a traced request a call costs one task-local lookup.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Analytics, ClickDelta, DiskState, FlushError, IdempotencyRecord, ImportOutcome, InsertOutcome,
    Link, LinkStats, LinkStore, ListPosition, ListScope, Purged, ReplaceOutcome, StoreError,
    StoredKey,
};
use crate::telemetry::trace::{self, Attribute};

pub struct TracedStore {
    inner: Arc<dyn LinkStore>,
}

impl TracedStore {
    pub fn wrap(inner: Arc<dyn LinkStore>) -> Arc<dyn LinkStore> {
        Arc::new(Self { inner })
    }

    /// `call` as the span `store.{operation}`.
    async fn span<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        // OpenTelemetry's names of the databases.
        let system = match self.inner.backend() {
            "dynamodb" => "aws.dynamodb",
            "embedded" => "redb",
            other => other,
        };
        trace::child(
            name,
            || {
                vec![
                    Attribute::str("db.system.name", system),
                    Attribute::str("db.operation.name", operation),
                ]
            },
            call,
        )
        .await
    }
}

/// `store.$op` spans around `self.inner.$op(args)`.
macro_rules! traced {
    ($self:ident, $op:ident ( $($arg:expr),* )) => {
        $self
            .span(
                concat!("store.", stringify!($op)),
                stringify!($op),
                $self.inner.$op($($arg),*),
            )
            .await
    };
}

#[async_trait]
impl LinkStore for TracedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn disk(&self) -> Option<DiskState> {
        self.inner.disk()
    }

    fn time_reference(&self) -> Option<Arc<dyn crate::clock::TimeReference>> {
        self.inner.time_reference()
    }

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        traced!(self, get(code))
    }

    async fn get_latest(&self, code: &str) -> Result<Option<Link>, StoreError> {
        traced!(self, get_latest(code))
    }

    async fn insert(
        &self,
        link: &Link,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        traced!(self, insert(link, idempotency))
    }

    async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError> {
        traced!(self, delete(code))
    }

    async fn replace(&self, link: &Link) -> Result<ReplaceOutcome, StoreError> {
        traced!(self, replace(link))
    }

    async fn list(
        &self,
        scope: &ListScope,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        traced!(self, list(scope, after, limit))
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        traced!(self, secret(name, candidate))
    }

    async fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        traced!(self, stored_secret(name))
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        traced!(self, delete_secret(name))
    }

    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError> {
        traced!(self, put_secret(name, secret))
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        traced!(self, keys())
    }

    async fn insert_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        traced!(self, insert_key(key))
    }

    async fn replace_key(&self, key: &StoredKey) -> Result<ReplaceOutcome, StoreError> {
        traced!(self, replace_key(key))
    }

    async fn import(&self, link: &Link, stats: &LinkStats) -> Result<ImportOutcome, StoreError> {
        traced!(self, import(link, stats))
    }

    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        traced!(self, lease_ids(count))
    }

    async fn note_lease(&self, region: u8, counter_end: u64) -> Result<(), StoreError> {
        traced!(self, note_lease(region, counter_end))
    }

    async fn noted_lease(&self, region: u8) -> Result<Option<u64>, StoreError> {
        traced!(self, noted_lease(region))
    }

    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        traced!(self, add_clicks(deltas))
    }

    async fn purge(
        &self,
        records_before_ms: i64,
        links_expired_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        traced!(
            self,
            purge(records_before_ms, links_expired_before_ms, limit)
        )
    }

    async fn forget_earlier_stats(&self, link: &Link) -> Result<(), StoreError> {
        traced!(self, forget_earlier_stats(link))
    }

    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        traced!(self, stats(code))
    }

    async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<Analytics>, StoreError> {
        traced!(self, analytics(code, from_hour, to_hour))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        traced!(self, ping())
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
