//! API keys as data: kept in the store (shared by the fleet), cached here in memory and read
//! again from the store every `auth.keys_refresh_s`. That interval (plus one store read) is
//! the bound on how long another instance's change (a new key, a revoke, a rotation) takes to
//! apply here; a change made through this instance applies here at once.
//!
//! When the store cannot be read at a refresh, the last good set stays in force (logged,
//! counted in `kurz_key_refresh_failures_total`, its age in `kurz_keys_loaded_at_seconds`): a
//! key revoked elsewhere may then keep working here for as long as the store is unreachable.
//!
//! The store holds only the SHA-256 digest of each secret. Presented tokens are compared with
//! every digest in constant time, without stopping at a match.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config::Secret;
use crate::store::{LinkStore, ReplaceOutcome, Scope, StoreError, StoredKey};
use crate::telemetry::Metrics;

pub type Digest32 = [u8; 32];

/// Longest a rotated-out secret may keep working.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a rotated-out secret keeps working when the rotation names no grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Scopes a new key gets when its request names none: everything but statistics, which
/// reveal who clicks and are asked for explicitly.
pub const DEFAULT_SCOPES: &[Scope] = &[Scope::Create, Scope::Read, Scope::Edit, Scope::Delete];

pub fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

pub fn same(a: &Digest32, b: &Digest32) -> bool {
    a.ct_eq(b).into()
}

/// A key a presented secret matched, as a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    /// What links made with this key remember as their owner.
    pub id: String,
    /// Another owner name its links may carry (a settings key's links from before keyed
    /// fingerprints).
    pub legacy: Option<String>,
    pub scopes: Vec<Scope>,
}

impl KeyId {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// One key of the cached set, its digests decoded for comparison.
struct Entry {
    key: StoredKey,
    digest: Digest32,
    /// The rotated-out secret's digest and until when (ms) it is valid.
    previous: Option<(Digest32, i64)>,
}

impl Entry {
    fn of(key: StoredKey) -> Self {
        let decode = |hex_text: &str| {
            let mut out = [0u8; 32];
            // An unreadable digest matches nothing: all zeros is no SHA-256 of a token anyone has.
            match hex::decode_to_slice(hex_text, &mut out) {
                Ok(()) => out,
                Err(_) => [0u8; 32],
            }
        };
        let previous = match (&key.previous_digest, key.previous_valid_until_ms) {
            (Some(d), Some(until)) => Some((decode(d), until)),
            _ => None,
        };
        Self {
            digest: decode(&key.digest),
            previous,
            key,
        }
    }
}

/// What rotating a key found.
pub enum Rotated {
    /// The key with its new secret (shown once).
    Done(Box<StoredKey>, String),
    Missing,
    /// A revoked key stays revoked.
    Revoked,
}

pub struct KeyRing {
    store: Arc<dyn LinkStore>,
    clock: Clock,
    metrics: Arc<Metrics>,
    refresh: Duration,
    current: RwLock<Arc<Vec<Entry>>>,
}

impl KeyRing {
    /// Migrates `settings_keys` into the store (each under its keyed fingerprint, put-if-absent
    /// so a fleet starting at once and a key revoked since both stay as they are), then reads
    /// every key.
    pub async fn load(
        store: Arc<dyn LinkStore>,
        clock: Clock,
        metrics: Arc<Metrics>,
        refresh: Duration,
        settings_keys: &[Secret],
        owner_secret: &[u8],
    ) -> Result<Self, StoreError> {
        let mut settings_ids = Vec::new();
        for secret in settings_keys {
            let key = settings_key(secret, owner_secret, clock.now_ms());
            settings_ids.push(key.id.clone());
            store.insert_key(&key).await?;
        }
        let ring = Self {
            store,
            clock,
            metrics,
            refresh,
            current: RwLock::new(Arc::new(Vec::new())),
        };
        ring.refresh().await?;
        for entry in ring.snapshot().iter() {
            let key = &entry.key;
            if key.legacy_owner.is_some()
                && key.revoked_at_ms.is_none()
                && !settings_ids.contains(&key.id)
            {
                tracing::warn!(
                    key = %key.id,
                    "an API key once in auth.api_keys is no longer there but is still valid: \
                     revoke it with DELETE /api/v1/keys/{}",
                    key.id
                );
            }
        }
        Ok(ring)
    }

    fn snapshot(&self) -> Arc<Vec<Entry>> {
        match self.current.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the cached set with `change(current set)`, as one step: a refresh and a change
    /// made here never undo each other.
    fn install(&self, change: impl FnOnce(&[Entry]) -> Vec<Entry>) {
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(change(&current));
    }

    /// Reads every key from the store and puts it in force here. A key this instance changed
    /// after the read began keeps its newer revision.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let fetched = self.store.keys().await?;
        self.install(|cached| {
            let mut set: Vec<Entry> = fetched
                .into_iter()
                .map(|key| {
                    match cached
                        .iter()
                        .find(|e| e.key.id == key.id && e.key.revision > key.revision)
                    {
                        Some(newer) => Entry::of(newer.key.clone()),
                        None => Entry::of(key),
                    }
                })
                .collect();
            for entry in cached {
                if !set.iter().any(|e| e.key.id == entry.key.id) {
                    set.push(Entry::of(entry.key.clone()));
                }
            }
            set
        });
        let now_s = u64::try_from(self.clock.now_ms() / 1000).unwrap_or(0);
        self.metrics.keys_loaded_at.set(now_s);
        Ok(())
    }

    /// Refreshes every `auth.keys_refresh_s` until dropped; a failed refresh keeps the set.
    pub fn start_refreshing(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(ring.refresh);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(e) = ring.refresh().await {
                    ring.metrics.key_refresh_failures.inc();
                    tracing::warn!(
                        error = %e,
                        "reading the API keys from the store failed; the last good set stays in \
                         force (keys revoked elsewhere since then still work here)"
                    );
                }
            }
        })
    }

    /// Whether any key was ever made, revoked ones included: creation without a key is open
    /// only while none was (revoking every key closes creation, it never opens it).
    pub fn any_issued(&self) -> bool {
        !self.snapshot().is_empty()
    }

    /// The key `presented` is the secret of (or the rotated-out secret, within its grace),
    /// unless revoked. Every digest is compared, in constant time.
    pub fn find(&self, presented: &Digest32) -> Option<KeyId> {
        let now = self.clock.now_ms();
        let set = self.snapshot();
        let matched = set.iter().fold(None, |found: Option<&Entry>, entry| {
            let current = same(presented, &entry.digest);
            let previous = entry
                .previous
                .as_ref()
                .is_some_and(|(d, until)| same(presented, d) & (now < *until));
            found.or((current | previous).then_some(entry))
        })?;
        let key = &matched.key;
        if key.revoked_at_ms.is_some() {
            return None;
        }
        Some(KeyId {
            id: key.id.clone(),
            legacy: key.legacy_owner.clone(),
            scopes: key.scopes.clone(),
        })
    }

    /// Every key, read from the store (the admin sees the truth, not this instance's cache).
    pub async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = self.store.keys().await?;
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(keys)
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(self.store.keys().await?.into_iter().find(|k| k.id == id))
    }

    /// A new key and its secret (shown once, never stored).
    pub async fn create(
        &self,
        name: String,
        scopes: Vec<Scope>,
    ) -> Result<(StoredKey, String), StoreError> {
        loop {
            let secret = new_secret()?;
            let key = StoredKey {
                id: hex::encode(random::<16>()?),
                name: name.clone(),
                scopes: scopes.clone(),
                created_at_ms: self.clock.now_ms(),
                digest: hex::encode(digest(&secret)),
                previous_digest: None,
                previous_valid_until_ms: None,
                revoked_at_ms: None,
                legacy_owner: None,
                revision: 1,
            };
            // 128 random bits collide never in practice; if they do, draw again.
            if self.store.insert_key(&key).await? {
                self.apply(key.clone());
                return Ok((key, secret));
            }
        }
    }

    /// Revokes key `id` (a revoked key stays revoked); `None` when there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        self.change(id, |key, now| -> Result<(), std::convert::Infallible> {
            if key.revoked_at_ms.is_none() {
                key.revoked_at_ms = Some(now);
                key.previous_digest = None;
                key.previous_valid_until_ms = None;
            }
            Ok(())
        })
        .await
        .map_err(StoreError::from)
    }

    /// A new secret for key `id`; the old one keeps working for `grace`.
    pub async fn rotate(&self, id: &str, grace: Duration) -> Result<Rotated, StoreError> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let secret = new_secret()?;
        let outcome = self
            .change(id, |key, now| {
                if key.revoked_at_ms.is_some() {
                    return Err(());
                }
                let old = std::mem::replace(&mut key.digest, hex::encode(digest(&secret)));
                (key.previous_digest, key.previous_valid_until_ms) = if grace_ms > 0 {
                    (Some(old), Some(now.saturating_add(grace_ms)))
                } else {
                    (None, None)
                };
                Ok(())
            })
            .await;
        match outcome {
            Ok(Some(key)) => Ok(Rotated::Done(Box::new(key), secret)),
            Ok(None) => Ok(Rotated::Missing),
            Err(Changed::Refused(())) => Ok(Rotated::Revoked),
            Err(Changed::Store(e)) => Err(e),
        }
    }

    /// Applies `edit` to the stored key `id` as one conditional replace (read again and retried
    /// when another instance changed it in between), then puts the result in force here.
    async fn change<E>(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut StoredKey, i64) -> Result<(), E>,
    ) -> Result<Option<StoredKey>, Changed<E>> {
        loop {
            let Some(mut key) = self.get(id).await.map_err(Changed::Store)? else {
                return Ok(None);
            };
            let before = key.clone();
            edit(&mut key, self.clock.now_ms()).map_err(Changed::Refused)?;
            if key == before {
                return Ok(Some(key));
            }
            key.revision += 1;
            match self.store.replace_key(&key).await.map_err(Changed::Store)? {
                ReplaceOutcome::Replaced => {
                    self.apply(key.clone());
                    return Ok(Some(key));
                }
                ReplaceOutcome::Missing => return Ok(None),
                ReplaceOutcome::Conflict => continue,
            }
        }
    }

    /// Puts `key` in force here at once.
    fn apply(&self, key: StoredKey) {
        self.install(|cached| {
            let mut set: Vec<Entry> = cached
                .iter()
                .filter(|e| e.key.id != key.id)
                .map(|e| Entry::of(e.key.clone()))
                .collect();
            set.push(Entry::of(key));
            set
        });
    }
}

enum Changed<E> {
    Refused(E),
    Store(StoreError),
}

impl From<Changed<std::convert::Infallible>> for StoreError {
    fn from(changed: Changed<std::convert::Infallible>) -> Self {
        match changed {
            Changed::Store(e) => e,
            Changed::Refused(never) => match never {},
        }
    }
}

/// A key from `auth.api_keys` as the store keeps it: its id is the keyed fingerprint links
/// made with it already carry, its legacy owner the unkeyed one older links carry.
pub fn settings_key(secret: &Secret, owner_secret: &[u8], now_ms: i64) -> StoredKey {
    let d = digest(secret.expose());
    StoredKey {
        id: fingerprint(owner_secret, secret.expose()),
        name: "from auth.api_keys".into(),
        scopes: Scope::ALL.to_vec(),
        created_at_ms: now_ms,
        digest: hex::encode(d),
        previous_digest: None,
        previous_valid_until_ms: None,
        revoked_at_ms: None,
        legacy_owner: Some(hex::encode(&d[..8])),
        revision: 1,
    }
}

/// The keyed fingerprint of an API key: HMAC-SHA256 under the server's owner secret, 16 bytes
/// hex, so a fingerprint seen in a log or a backup cannot be checked against guessed keys.
pub fn fingerprint(owner_secret: &[u8], key: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(owner_secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(key.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::internal(format!("no OS randomness for a new key: {e}")))?;
    Ok(bytes)
}

/// A new secret: `kurz_` and 256 random bits in hex.
fn new_secret() -> Result<String, StoreError> {
    Ok(format!("kurz_{}", hex::encode(random::<32>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::faulty::FaultyStore;

    async fn ring() -> (tempfile::TempDir, Arc<FaultyStore>, KeyRing) {
        let (dir, store) = FaultyStore::temporary();
        let ring = KeyRing::load(
            Arc::clone(&store) as Arc<dyn LinkStore>,
            Clock::manual(1_000_000),
            Arc::new(Metrics::default()),
            Duration::from_secs(10),
            &[Secret::new("a-settings-key-0123456789abcdef0123")],
            b"owner-secret",
        )
        .await
        .expect("loads");
        (dir, store, ring)
    }

    #[tokio::test]
    async fn a_rotated_out_secret_works_until_its_grace_ends_and_a_revoke_ends_both() {
        let (_dir, _store, ring) = ring().await;
        let (key, first) = ring
            .create("k".into(), DEFAULT_SCOPES.to_vec())
            .await
            .expect("created");
        assert_eq!(
            ring.find(&digest(&first)).map(|k| k.id),
            Some(key.id.clone())
        );
        let Rotated::Done(_, second) = ring
            .rotate(&key.id, Duration::from_secs(60))
            .await
            .expect("rotated")
        else {
            panic!("the key exists");
        };
        assert!(ring.find(&digest(&first)).is_some(), "within the grace");
        assert!(ring.find(&digest(&second)).is_some());
        ring.clock.advance(Duration::from_secs(60));
        assert!(ring.find(&digest(&first)).is_none(), "the grace is over");
        assert!(ring.find(&digest(&second)).is_some());

        // A rotation with no grace ends the old secret at once.
        let Rotated::Done(_, third) = ring.rotate(&key.id, Duration::ZERO).await.expect("rotated")
        else {
            panic!("the key exists");
        };
        assert!(ring.find(&digest(&second)).is_none());
        let revoked = ring
            .revoke(&key.id)
            .await
            .expect("revoked")
            .expect("exists");
        assert!(revoked.revoked_at_ms.is_some());
        assert!(ring.find(&digest(&third)).is_none());
        assert!(matches!(
            ring.rotate(&key.id, DEFAULT_GRACE).await.expect("answers"),
            Rotated::Revoked
        ));
        // Revoking again changes nothing; an unknown id is none.
        let again = ring
            .revoke(&key.id)
            .await
            .expect("revoked")
            .expect("exists");
        assert_eq!(again.revoked_at_ms, revoked.revoked_at_ms);
        assert!(ring.revoke("nope").await.expect("answers").is_none());
    }

    #[tokio::test]
    async fn settings_keys_keep_their_fingerprint_all_scopes_and_a_revoke() {
        let (_dir, store, ring) = ring().await;
        let secret = Secret::new("a-settings-key-0123456789abcdef0123");
        let found = ring.find(&digest(secret.expose())).expect("migrated");
        assert_eq!(found.id, fingerprint(b"owner-secret", secret.expose()));
        assert_eq!(found.scopes, Scope::ALL.to_vec());
        assert_eq!(
            found.legacy.as_deref(),
            Some(hex::encode(&digest(secret.expose())[..8]).as_str())
        );
        ring.revoke(&found.id).await.expect("revoked");
        // Another instance starting with the same settings does not bring it back.
        let again = KeyRing::load(
            Arc::clone(&store) as Arc<dyn LinkStore>,
            Clock::manual(2_000_000),
            Arc::new(Metrics::default()),
            Duration::from_secs(10),
            std::slice::from_ref(&secret),
            b"owner-secret",
        )
        .await
        .expect("loads");
        assert!(again.find(&digest(secret.expose())).is_none());
        assert_eq!(store.keys().await.expect("keys").len(), 1);
    }

    #[tokio::test]
    async fn a_refresh_sees_other_instances_changes_and_a_failed_one_keeps_the_set() {
        let (_dir, store, ring) = ring().await;
        let other = KeyRing::load(
            Arc::clone(&store) as Arc<dyn LinkStore>,
            Clock::manual(1_000_000),
            Arc::new(Metrics::default()),
            Duration::from_secs(10),
            &[],
            b"owner-secret",
        )
        .await
        .expect("loads");
        let (key, secret) = other
            .create("elsewhere".into(), vec![Scope::Read])
            .await
            .expect("created");
        assert!(ring.find(&digest(&secret)).is_none(), "not yet seen here");
        ring.refresh().await.expect("refreshed");
        assert_eq!(
            ring.find(&digest(&secret)).map(|k| k.scopes),
            Some(vec![Scope::Read])
        );
        other.revoke(&key.id).await.expect("revoked");
        store
            .fail_keys
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(ring.refresh().await.is_err());
        assert!(
            ring.find(&digest(&secret)).is_some(),
            "the last good set stays"
        );
        store
            .fail_keys
            .store(false, std::sync::atomic::Ordering::SeqCst);
        ring.refresh().await.expect("refreshed");
        assert!(ring.find(&digest(&secret)).is_none());
        assert!(ring.any_issued(), "a revoked key still closes creation");
    }
}
