//! The in-process L1 cache: bounded by an estimate of its memory, with a short TTL for links
//! and a shorter one for "no such code", so hot links are answered from memory and scanners
//! probing random codes cannot hammer the store. Concurrent misses for one code are coalesced
//! into one load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::Cached;
use crate::clock;
use crate::config::LocalCacheSettings;
use crate::store::StoreError;

/// Rough per-entry overhead beyond the strings: moka's node, the Arc, the Target struct.
const ENTRY_OVERHEAD: usize = 160;

pub struct LocalCache {
    /// `None` when the cache is turned off (`max_bytes = 0`): every lookup goes to the store.
    entries: Option<Cache<String, Cached>>,
}

impl LocalCache {
    pub fn new(settings: &LocalCacheSettings) -> Self {
        if settings.max_bytes == 0 {
            return Self { entries: None };
        }
        let expiry = TtlPolicy {
            ttl: Duration::from_millis(settings.ttl_ms),
            negative_ttl: Duration::from_millis(settings.negative_ttl_ms),
        };
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|code: &String, value: &Cached| {
                let url = match value {
                    Cached::Found(target) => target.url.len(),
                    Cached::Missing => 0,
                };
                u32::try_from(code.len() + url + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(expiry)
            .build();
        Self {
            entries: Some(entries),
        }
    }

    /// The cached answer for `code`, if any.
    pub async fn get(&self, code: &str) -> Option<Cached> {
        self.entries.as_ref()?.get(code).await
    }

    /// The cached answer, or the one `load` gives, cached for the next caller. Concurrent calls
    /// for one code share a single `load`; errors are not cached.
    pub async fn get_or_load<F>(&self, code: &str, load: F) -> Result<Cached, Arc<StoreError>>
    where
        F: Future<Output = Result<Cached, StoreError>>,
    {
        match &self.entries {
            Some(entries) => entries.try_get_with_by_ref(code, load).await,
            None => load.await.map_err(Arc::new),
        }
    }

    pub async fn invalidate(&self, code: &str) {
        if let Some(entries) = &self.entries {
            entries.invalidate(code).await;
        }
    }

    /// Forgets everything, e.g. after invalidation messages may have been missed.
    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::entry_count)
    }
}

struct TtlPolicy {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<String, Cached> for TtlPolicy {
    fn expire_after_create(&self, _: &String, value: &Cached, _: Instant) -> Option<Duration> {
        Some(match value {
            Cached::Missing => self.negative_ttl,
            // Never keep a link past its own expiry: after it, the store answers 410.
            Cached::Found(link) => match link.expires_at_ms {
                Some(at) => {
                    let left = u64::try_from(at - clock::now_ms()).unwrap_or(0);
                    self.ttl.min(Duration::from_millis(left))
                }
                None => self.ttl,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn settings() -> LocalCacheSettings {
        LocalCacheSettings {
            max_bytes: 1 << 20,
            ttl_ms: 60_000,
            negative_ttl_ms: 60_000,
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let cache = Arc::new(LocalCache::new(&settings()));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("abc", async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Cached::Missing)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert!(matches!(task.await.expect("join"), Ok(Cached::Missing)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_invalidate_evicts() {
        let cache = LocalCache::new(&settings());
        let failed = cache
            .get_or_load("abc", async { Err(StoreError::Unavailable("down".into())) })
            .await;
        assert!(failed.is_err());
        assert!(cache.get("abc").await.is_none());
        cache
            .get_or_load("abc", async { Ok(Cached::Missing) })
            .await
            .expect("load");
        assert!(matches!(cache.get("abc").await, Some(Cached::Missing)));
        cache.invalidate("abc").await;
        assert!(cache.get("abc").await.is_none());
    }
}
