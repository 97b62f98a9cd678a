//! The in-process L1 cache: bounded by an estimate of its memory, with a short TTL for links
//! and a shorter one for "no such code", so hot links are answered from memory and scanners
//! probing random codes cannot hammer the store.
//!
//! Lookups use moka's synchronous cache (a hit is a lock-free read, no future involved).
//! Concurrent misses for one code are coalesced here: the first caller loads, the others wait
//! for its answer. A load that an invalidation overtook (a delete while it was reading) hands
//! its answer to its waiters but does not cache it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use tokio::sync::OnceCell;

use super::Cached;
use crate::clock;
use crate::config::LocalCacheSettings;
use crate::store::StoreError;

/// Rough per-entry overhead beyond the strings: moka's node, the Arc, the Target struct.
const ENTRY_OVERHEAD: usize = 160;

type Loaded = Result<Cached, Arc<StoreError>>;
type Flight = Arc<OnceCell<Loaded>>;

pub struct LocalCache {
    /// `None` when the cache is turned off (`max_bytes = 0`): every lookup goes to the store.
    entries: Option<Cache<String, Cached>>,
    /// Loads under way, by code.
    inflight: Mutex<HashMap<String, Flight>>,
}

impl LocalCache {
    pub fn new(settings: &LocalCacheSettings) -> Self {
        let inflight = Mutex::new(HashMap::new());
        if settings.max_bytes == 0 {
            return Self {
                entries: None,
                inflight,
            };
        }
        let expiry = TtlPolicy {
            ttl: Duration::from_millis(settings.ttl_ms),
            negative_ttl: Duration::from_millis(settings.negative_ttl_ms),
        };
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|code: &String, value: &Cached| {
                let url = match value {
                    Cached::Found(target) => target.url().len(),
                    Cached::Missing => 0,
                };
                u32::try_from(code.len() + url + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(expiry)
            .build();
        Self {
            entries: Some(entries),
            inflight,
        }
    }

    /// The cached answer for `code`, if any.
    pub fn get(&self, code: &str) -> Option<Cached> {
        self.entries.as_ref()?.get(code)
    }

    /// The cached answer, or the one `load` gives, cached for the next caller. Concurrent calls
    /// for one code share a single `load`; errors are not cached.
    pub async fn get_or_load<F>(&self, code: &str, load: F) -> Loaded
    where
        F: Future<Output = Result<Cached, StoreError>>,
    {
        let Some(entries) = &self.entries else {
            return load.await.map_err(Arc::new);
        };
        if let Some(hit) = entries.get(code) {
            return Ok(hit);
        }
        let flight = Arc::clone(self.flights().entry(code.to_owned()).or_default());
        let guard = FlightGuard {
            cache: self,
            code,
            flight: &flight,
        };
        // Only the first caller's `load` runs; if that caller goes away, a waiter takes over.
        let loaded = flight
            .get_or_init(|| async { load.await.map_err(Arc::new) })
            .await
            .clone();
        if let Ok(value) = &loaded {
            guard.finish(|| entries.insert(code.to_owned(), value.clone()));
        }
        loaded
    }

    /// Evicts `code`, and keeps a load already under way for it from caching its answer.
    pub fn invalidate(&self, code: &str) {
        if let Some(entries) = &self.entries {
            entries.invalidate(code);
        }
        self.flights().remove(code);
    }

    /// Forgets everything, e.g. after invalidation messages may have been missed.
    pub fn invalidate_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
        self.flights().clear();
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::entry_count)
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<String, Flight>> {
        // The map holds no invariant a panicking holder could break.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unregisters a load when it is done or abandoned, if it is still the registered one.
struct FlightGuard<'a> {
    cache: &'a LocalCache,
    code: &'a str,
    flight: &'a Flight,
}

impl FlightGuard<'_> {
    /// Runs `store` (caching the answer) only if no invalidation overtook this load.
    fn finish(self, store: impl FnOnce()) {
        let mut flights = self.cache.flights();
        if flights
            .get(self.code)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            store();
            flights.remove(self.code);
        }
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights();
        if flights
            .get(self.code)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            flights.remove(self.code);
        }
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
        assert!(cache.get("abc").is_none());
        cache
            .get_or_load("abc", async { Ok(Cached::Missing) })
            .await
            .expect("load");
        assert!(matches!(cache.get("abc"), Some(Cached::Missing)));
        cache.invalidate("abc");
        assert!(cache.get("abc").is_none());
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_is_not_cached() {
        let cache = Arc::new(LocalCache::new(&settings()));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let loading = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                cache
                    .get_or_load("abc", async {
                        let _ = released.await;
                        Ok(Cached::Missing)
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        // A delete lands while the load is reading the old state.
        cache.invalidate("abc");
        release.send(()).expect("loader waiting");
        assert!(matches!(loading.await.expect("join"), Ok(Cached::Missing)));
        assert!(
            cache.get("abc").is_none(),
            "the overtaken answer was cached"
        );
    }

    #[tokio::test]
    async fn an_abandoned_load_leaves_nothing_behind() {
        let cache = Arc::new(LocalCache::new(&settings()));
        let stuck = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                cache
                    .get_or_load("abc", std::future::pending::<Result<Cached, StoreError>>())
                    .await
            })
        };
        tokio::task::yield_now().await;
        stuck.abort();
        let _ = stuck.await;
        assert!(cache.flights().is_empty());
        let loaded = cache
            .get_or_load("abc", async { Ok(Cached::Missing) })
            .await;
        assert!(matches!(loaded, Ok(Cached::Missing)));
    }
}
