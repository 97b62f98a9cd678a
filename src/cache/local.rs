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

use moka::sync::Cache;
use tokio::sync::OnceCell;

use super::{Cached, Target};
use crate::config::LocalCacheSettings;
use crate::store::StoreError;

/// Per-entry memory beyond the code and URL bytes: moka's bookkeeping (~370 bytes), the
/// Arc'd Target and the allocations' rounding. Measured by `cargo bench --bench cache` (562
/// resident bytes per link with 7-byte codes and 70-byte URLs), so that `max_bytes` bounds
/// what the cache really takes.
const ENTRY_OVERHEAD: usize = 480;
/// Share of the memory budget "no such code" entries may take.
const MISSING_SHARE: u64 = 8;

type Loaded = Result<Cached, Arc<StoreError>>;
type Flight = Arc<OnceCell<Loaded>>;

pub struct LocalCache {
    /// Links, for `cache.local.ttl_ms`. A link's own expiry is checked on every hit, so entries
    /// need no expiry of their own (which would cost a timer node each).
    found: Option<Cache<Box<str>, Arc<Target>>>,
    /// Codes known not to exist, for `cache.local.negative_ttl_ms`, in a smaller budget.
    missing: Option<Cache<Box<str>, ()>>,
    /// Loads under way, by code.
    inflight: Mutex<HashMap<String, Flight>>,
}

impl LocalCache {
    /// `max_bytes = 0` turns the cache off: every lookup loads.
    pub fn new(settings: &LocalCacheSettings) -> Self {
        let enabled = settings.max_bytes > 0;
        let found = enabled.then(|| {
            Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(weigh_found)
                .time_to_live(settings.ttl)
                .build()
        });
        let missing = enabled.then(|| {
            Cache::builder()
                .max_capacity((settings.max_bytes / MISSING_SHARE).max(1))
                .weigher(weigh_missing)
                .time_to_live(settings.negative_ttl)
                .build()
        });
        Self {
            found,
            missing,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The cached answer for `code`, if any.
    pub fn get(&self, code: &str) -> Option<Cached> {
        if let Some(target) = self.found.as_ref()?.get(code) {
            return Some(Cached::Found(target));
        }
        self.missing.as_ref()?.get(code).map(|()| Cached::Missing)
    }

    fn insert(&self, code: &str, value: &Cached) {
        match value {
            Cached::Found(target) => {
                if let Some(found) = &self.found {
                    found.insert(code.into(), Arc::clone(target));
                }
            }
            Cached::Missing => {
                if let Some(missing) = &self.missing {
                    missing.insert(code.into(), ());
                }
            }
        }
    }

    /// The cached answer, or the one `load` gives, cached for the next caller. Concurrent calls
    /// for one code share a single `load`; errors are not cached.
    pub async fn get_or_load<F>(&self, code: &str, load: F) -> Loaded
    where
        F: Future<Output = Result<Cached, StoreError>>,
    {
        if self.found.is_none() {
            return load.await.map_err(Arc::new);
        }
        if let Some(hit) = self.get(code) {
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
            guard.finish(|| self.insert(code, value));
        }
        loaded
    }

    /// Evicts `code`, and keeps a load already under way for it from caching its answer.
    pub fn invalidate(&self, code: &str) {
        if let (Some(found), Some(missing)) = (&self.found, &self.missing) {
            found.invalidate(code);
            missing.invalidate(code);
        }
        self.flights().remove(code);
    }

    /// Forgets everything, e.g. after invalidation messages may have been missed.
    pub fn invalidate_all(&self) {
        if let (Some(found), Some(missing)) = (&self.found, &self.missing) {
            found.invalidate_all();
            missing.invalidate_all();
        }
        self.flights().clear();
    }

    pub fn entry_count(&self) -> u64 {
        self.found.as_ref().map_or(0, Cache::entry_count)
            + self.missing.as_ref().map_or(0, Cache::entry_count)
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<String, Flight>> {
        // The map holds no invariant a panicking holder could break.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// moka hands the weigher `&K`, and K is `Box<str>`.
#[allow(clippy::borrowed_box)]
fn weigh_found(code: &Box<str>, target: &Arc<Target>) -> u32 {
    u32::try_from(code.len() + target.url().len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

#[allow(clippy::borrowed_box)]
fn weigh_missing(code: &Box<str>, _: &()) -> u32 {
    u32::try_from(code.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn settings() -> LocalCacheSettings {
        LocalCacheSettings {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
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
            .get_or_load("abc", async { Err(StoreError::unavailable("down")) })
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
