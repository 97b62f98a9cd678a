//! The in-process L1 cache: bounded by an estimate of its memory, with a short TTL for links
//! and a shorter one for "no such code", so hot links are answered from memory and scanners
//! probing random codes cannot hammer the store.
//!
//! Entries live inline in quick_cache's sharded tables: the code (inline up to
//! [`INLINE_CODE`] bytes), the ready `Location` value, the expiry and when the entry was
//! stored; the only heap memory per link is the URL's buffer and its reference count. A hit
//! is a read lock on one shard, a hash and a clone of the target. quick_cache has no TTL of
//! its own, so a hit older than the TTL is treated as a miss and replaced by the load that
//! follows; entries nobody asks for are evicted as the budget fills.
//!
//! Concurrent misses for one code are coalesced here: the first caller loads, the others wait
//! for its answer. A load that an invalidation overtook (a delete while it was reading) hands
//! its answer to its waiters but does not cache it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quick_cache::sync::Cache;
use tokio::sync::OnceCell;

use super::{Cached, Target};
use crate::config::LocalCacheSettings;
use crate::store::StoreError;

/// Per-entry memory beyond the code and URL bytes: the inline entry, the table's slot and
/// bookkeeping, the URL buffer's reference count and the allocations' rounding. Measured by
/// `cargo bench --bench cache` (7-byte codes, 70-byte URLs), so that `max_bytes` bounds what
/// the cache really takes.
const ENTRY_OVERHEAD: u64 = 160;
/// Share of the memory budget "no such code" entries may take.
const MISSING_SHARE: u64 = 8;
/// Codes up to this length are kept inside the entry (every generated code, most aliases).
pub const INLINE_CODE: usize = 22;
/// Entry timestamps count tenths of a second from the cache's start (u32: 13 years).
const TICK_MS: i64 = 100;

type Loaded = Result<Cached, Arc<StoreError>>;
type Flight = Arc<OnceCell<Loaded>>;
type Table<V> = Cache<Key, V, Weigher, foldhash::fast::RandomState>;

pub struct LocalCache {
    /// Links, for `cache.local.ttl_ms`. A link's own expiry is checked on every hit.
    found: Option<Table<Target>>,
    /// Codes known not to exist (the value is when that was learnt), for
    /// `cache.local.negative_ttl_ms`, in a smaller budget.
    missing: Option<Table<u32>>,
    ttl_ticks: u32,
    /// `ttl_ticks` and `cache.local.stale_if_error_ms`: the oldest a found link may be and
    /// still answer while the tiers below fail.
    stale_ticks: u32,
    negative_ttl_ticks: u32,
    /// Wall-clock time (ms) of tick 0.
    epoch_ms: i64,
    /// Loads under way, by code.
    inflight: Mutex<HashMap<String, Flight>>,
}

impl LocalCache {
    /// `max_bytes = 0` turns the cache off: every lookup loads. `now_ms` starts the cache's
    /// clock (the one every later call passes in).
    pub fn new(settings: &LocalCacheSettings, now_ms: i64) -> Self {
        let enabled = settings.max_bytes > 0;
        Self {
            found: enabled.then(|| table(settings.max_bytes)),
            missing: enabled.then(|| table(settings.max_bytes / MISSING_SHARE)),
            ttl_ticks: ticks(settings.ttl),
            stale_ticks: ticks(settings.ttl).saturating_add(stale_ticks(settings.stale_if_error)),
            negative_ttl_ticks: ticks(settings.negative_ttl),
            epoch_ms: now_ms,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn tick(&self, now_ms: i64) -> u32 {
        u32::try_from((now_ms - self.epoch_ms).max(0) / TICK_MS).unwrap_or(u32::MAX)
    }

    /// The cached answer for `code` at `now_ms`, if any (and not older than its TTL).
    pub fn get(&self, code: &str, now_ms: i64) -> Option<Cached> {
        let now = self.tick(now_ms);
        if let Some(target) = self.found.as_ref()?.get(code.as_bytes())
            && now.saturating_sub(target.cached_at.0) < self.ttl_ticks
        {
            return Some(Cached::Found(target));
        }
        let at = self.missing.as_ref()?.get(code.as_bytes())?;
        (now.saturating_sub(at) < self.negative_ttl_ticks).then_some(Cached::Missing)
    }

    /// A found link past its TTL but within `cache.local.stale_if_error_ms` of it: the answer
    /// for a redirect that Redis and the store both failed to give. Entries past their TTL
    /// stay in the table until evicted or replaced; an invalidation removes them.
    pub fn get_stale(&self, code: &str, now_ms: i64) -> Option<Target> {
        let now = self.tick(now_ms);
        self.found
            .as_ref()?
            .get(code.as_bytes())
            .filter(|target| now.saturating_sub(target.cached_at.0) < self.stale_ticks)
    }

    fn insert(&self, code: &str, value: &Cached, now_ms: i64) {
        let now = self.tick(now_ms);
        match value {
            Cached::Found(target) => {
                if let (Some(found), Some(missing)) = (&self.found, &self.missing) {
                    let mut target = target.clone();
                    target.cached_at.0 = now;
                    found.insert(Key::new(code), target);
                    missing.remove(code.as_bytes());
                }
            }
            Cached::Missing => {
                if let (Some(found), Some(missing)) = (&self.found, &self.missing) {
                    missing.insert(Key::new(code), now);
                    found.remove(code.as_bytes());
                }
            }
        }
    }

    /// The cached answer, or the one `load` gives, cached for the next caller. Concurrent calls
    /// for one code share a single `load`; errors are not cached.
    pub async fn get_or_load<F>(&self, code: &str, now_ms: i64, load: F) -> Loaded
    where
        F: Future<Output = Result<Cached, StoreError>>,
    {
        if self.found.is_none() {
            return load.await.map_err(Arc::new);
        }
        if let Some(hit) = self.get(code, now_ms) {
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
            guard.finish(|| self.insert(code, value, now_ms));
        }
        loaded
    }

    /// Evicts `code`, and keeps a load already under way for it from caching its answer.
    pub fn invalidate(&self, code: &str) {
        if let (Some(found), Some(missing)) = (&self.found, &self.missing) {
            found.remove(code.as_bytes());
            missing.remove(code.as_bytes());
        }
        self.flights().remove(code);
    }

    /// Forgets everything, e.g. after invalidation messages may have been missed.
    pub fn invalidate_all(&self) {
        if let (Some(found), Some(missing)) = (&self.found, &self.missing) {
            found.clear();
            missing.clear();
        }
        self.flights().clear();
    }

    pub fn entry_count(&self) -> u64 {
        self.found.as_ref().map_or(0, |t| t.len() as u64)
            + self.missing.as_ref().map_or(0, |t| t.len() as u64)
    }

    /// The share of `max_bytes` a link with this code and URL takes.
    pub fn entry_weight(code: &str, url: &str) -> u64 {
        weight(&Key::new(code), url.len())
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<String, Flight>> {
        // The map holds no invariant a panicking holder could break.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A table for `budget` bytes, sized up front for entries of a typical link (7-byte code,
/// 70-byte URL), so that it does not double (and briefly hold both copies) while filling.
fn table<V: Clone>(budget: u64) -> Table<V>
where
    Weigher: quick_cache::Weighter<Key, V>,
{
    let typical = weight(&Key::new("1234567"), 70);
    let items = usize::try_from(budget / typical).unwrap_or(usize::MAX);
    Cache::with(
        items.max(16),
        budget.max(1),
        Weigher,
        foldhash::fast::RandomState::default(),
        Default::default(),
    )
}

/// A TTL in ticks, rounded up (at least one).
fn ticks(ttl: Duration) -> u32 {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    u32::try_from((ms + TICK_MS - 1) / TICK_MS)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// A stale-if-error allowance in ticks, rounded up (0 stays 0: no stale answers).
fn stale_ticks(allowance: Duration) -> u32 {
    if allowance.is_zero() {
        0
    } else {
        ticks(allowance)
    }
}

/// A code as the tables' key: inline when short, so most entries own no heap node for it.
/// Hashes and compares as the code's bytes, so lookups take a plain `&[u8]`.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_CODE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(code: &str) -> Self {
        let code = code.as_bytes();
        match u8::try_from(code.len()) {
            Ok(len) if code.len() <= INLINE_CODE => {
                let mut bytes = [0; INLINE_CODE];
                bytes[..code.len()].copy_from_slice(code);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(code.into()),
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(code) => code,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        Borrow::<[u8]>::borrow(self) == Borrow::<[u8]>::borrow(other)
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Borrow::<[u8]>::borrow(self).hash(state);
    }
}

/// Weighs an entry by its estimated memory, so `max_bytes` bounds the cache.
#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<Key, Target> for Weigher {
    fn weight(&self, code: &Key, target: &Target) -> u64 {
        weight(code, target.url().len())
    }
}

impl quick_cache::Weighter<Key, u32> for Weigher {
    fn weight(&self, code: &Key, _: &u32) -> u64 {
        weight(code, 0)
    }
}

/// An entry's estimated memory: the key's bytes (inline, and on the heap when long), the URL's
/// and the per-entry overhead.
fn weight(code: &Key, url_len: usize) -> u64 {
    let key = match code {
        Key::Inline { .. } => INLINE_CODE,
        Key::Heap(code) => INLINE_CODE + code.len(),
    };
    (key + url_len) as u64 + ENTRY_OVERHEAD
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

    const NOW: i64 = 1_800_000_000_000;

    fn settings() -> LocalCacheSettings {
        LocalCacheSettings {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(600),
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load() {
        let cache = Arc::new(LocalCache::new(&settings(), NOW));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load("abc", NOW, async {
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
        let cache = LocalCache::new(&settings(), NOW);
        let failed = cache
            .get_or_load("abc", NOW, async { Err(StoreError::unavailable("down")) })
            .await;
        assert!(failed.is_err());
        assert!(cache.get("abc", NOW).is_none());
        cache
            .get_or_load("abc", NOW, async { Ok(Cached::Missing) })
            .await
            .expect("load");
        assert!(matches!(cache.get("abc", NOW), Some(Cached::Missing)));
        cache.invalidate("abc");
        assert!(cache.get("abc", NOW).is_none());
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_is_not_cached() {
        let cache = Arc::new(LocalCache::new(&settings(), NOW));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let loading = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                cache
                    .get_or_load("abc", NOW, async {
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
            cache.get("abc", NOW).is_none(),
            "the overtaken answer was cached"
        );
    }

    #[tokio::test]
    async fn an_abandoned_load_leaves_nothing_behind() {
        let cache = Arc::new(LocalCache::new(&settings(), NOW));
        let stuck = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                cache
                    .get_or_load(
                        "abc",
                        NOW,
                        std::future::pending::<Result<Cached, StoreError>>(),
                    )
                    .await
            })
        };
        tokio::task::yield_now().await;
        stuck.abort();
        let _ = stuck.await;
        assert!(cache.flights().is_empty());
        let loaded = cache
            .get_or_load("abc", NOW, async { Ok(Cached::Missing) })
            .await;
        assert!(matches!(loaded, Ok(Cached::Missing)));
    }

    fn found(url: &str) -> Cached {
        Cached::Found(Target::new(url, 302, None).expect("a valid header value"))
    }

    async fn put(cache: &LocalCache, code: &str, now_ms: i64, value: Cached) {
        cache
            .get_or_load(code, now_ms, async { Ok(value) })
            .await
            .expect("load");
    }

    #[tokio::test]
    async fn entries_live_for_their_ttl_only() {
        let cache = LocalCache::new(
            &LocalCacheSettings {
                ttl: Duration::from_millis(60_000),
                negative_ttl: Duration::from_millis(5_000),
                ..settings()
            },
            NOW,
        );
        put(&cache, "found", NOW, found("https://e.com/a")).await;
        put(&cache, "gone", NOW, Cached::Missing).await;
        assert_eq!(
            cache.get("found", NOW + 59_900),
            Some(found("https://e.com/a"))
        );
        assert_eq!(cache.get("found", NOW + 60_000), None);
        assert_eq!(cache.get("gone", NOW + 4_900), Some(Cached::Missing));
        assert_eq!(cache.get("gone", NOW + 5_000), None);
        // A stale entry is replaced by the next load, which starts a new TTL.
        put(&cache, "found", NOW + 60_000, found("https://e.com/b")).await;
        assert_eq!(
            cache.get("found", NOW + 119_900),
            Some(found("https://e.com/b"))
        );
        // A clock that steps back does not make entries stale.
        assert_eq!(
            cache.get("found", NOW - 1_000_000),
            Some(found("https://e.com/b"))
        );
    }

    #[tokio::test]
    async fn a_found_link_answers_stale_within_its_allowance_until_invalidated() {
        let cache = LocalCache::new(&settings(), NOW);
        put(&cache, "found", NOW, found("https://e.com/a")).await;
        put(&cache, "gone", NOW, Cached::Missing).await;
        // Past the 60 s TTL a lookup misses, but the stale answer is there for 600 s more.
        assert_eq!(cache.get("found", NOW + 61_000), None);
        assert_eq!(
            cache.get_stale("found", NOW + 659_900).map(Cached::Found),
            Some(found("https://e.com/a"))
        );
        assert_eq!(cache.get_stale("found", NOW + 660_000), None);
        // "No such code" is never answered stale.
        assert_eq!(cache.get_stale("gone", NOW + 61_000), None);
        // An invalidation (a delete or an edit anywhere) removes the stale answer too.
        cache.invalidate("found");
        assert_eq!(cache.get_stale("found", NOW + 61_000), None);

        let never = LocalCache::new(
            &LocalCacheSettings {
                stale_if_error: Duration::ZERO,
                ..settings()
            },
            NOW,
        );
        put(&never, "found", NOW, found("https://e.com/a")).await;
        assert!(never.get_stale("found", NOW + 59_900).is_some());
        assert_eq!(never.get_stale("found", NOW + 60_000), None);
    }

    #[tokio::test]
    async fn codes_of_any_length_are_keys_of_their_own() {
        let cache = LocalCache::new(&settings(), NOW);
        let short = "a".repeat(INLINE_CODE);
        let long = "a".repeat(INLINE_CODE + 1);
        let longest = "b".repeat(64);
        put(&cache, &short, NOW, found("https://e.com/short")).await;
        put(&cache, &long, NOW, found("https://e.com/long")).await;
        put(&cache, &longest, NOW, Cached::Missing).await;
        assert_eq!(cache.get(&short, NOW), Some(found("https://e.com/short")));
        assert_eq!(cache.get(&long, NOW), Some(found("https://e.com/long")));
        assert_eq!(cache.get(&longest, NOW), Some(Cached::Missing));
        assert_eq!(cache.get(&short[1..], NOW), None);
        assert_eq!(cache.entry_count(), 3);
        cache.invalidate(&long);
        assert_eq!(cache.get(&long, NOW), None);
        assert_eq!(cache.get(&short, NOW), Some(found("https://e.com/short")));
    }

    #[tokio::test]
    async fn a_found_link_replaces_a_cached_miss_and_the_other_way_round() {
        let cache = LocalCache::new(&settings(), NOW);
        put(&cache, "abc", NOW, Cached::Missing).await;
        cache.insert("abc", &found("https://e.com/"), NOW);
        assert_eq!(cache.get("abc", NOW), Some(found("https://e.com/")));
        cache.insert("abc", &Cached::Missing, NOW);
        assert_eq!(cache.get("abc", NOW), Some(Cached::Missing));
        assert_eq!(cache.entry_count(), 1);
    }

    #[tokio::test]
    async fn the_budget_bounds_the_entries() {
        let budget = 1 << 20;
        let cache = LocalCache::new(
            &LocalCacheSettings {
                max_bytes: budget,
                ..settings()
            },
            NOW,
        );
        let url = format!("https://e.com/{}", "x".repeat(56));
        for i in 0..100_000 {
            cache.insert(&format!("c{i}"), &found(&url), NOW);
        }
        let per_entry = LocalCache::entry_weight("c99999", &url);
        let most = budget / per_entry;
        assert!(
            cache.entry_count() <= most,
            "{} entries in a budget for {most}",
            cache.entry_count()
        );
        assert!(
            cache.entry_count() >= most / 2,
            "{} entries",
            cache.entry_count()
        );
    }
}
