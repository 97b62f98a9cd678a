//! Keys kurz makes for itself when the settings give none, kept in the store so that every
//! instance of a fleet uses the same ones: the id -> code permutation key (without it codes
//! would be predictable: anyone could compute the next ones offline) and the key of owner
//! fingerprints. The first instance (or `kurz init`) to store one wins, race-safely
//! (put-if-absent); the others read it.

use crate::config::Secret;
use crate::store::{LinkStore, StoreError};

/// The stored names of the keys (`kurz export` carries them to a new store by these).
pub const PERMUTATION_KEY: &str = "permutation_key";
pub const OWNER_KEY: &str = "owner_fingerprint_key";

pub struct Secrets {
    pub permutation_key: Vec<u8>,
    /// Keys the HMAC that links remember their owner's API key by.
    pub owner_key: Vec<u8>,
}

/// Attempts at reading or storing a key at start-up, for a store that is briefly slow.
const ATTEMPTS: u32 = 3;

/// The keys to use: the configured permutation key if there is one, else the stored one,
/// generating and storing any that is missing.
pub async fn ensure(
    store: &dyn LinkStore,
    configured_permutation_key: Option<&Secret>,
) -> Result<Secrets, StoreError> {
    let permutation_key = match configured_permutation_key {
        Some(key) => key.expose().as_bytes().to_vec(),
        None => stored(store, PERMUTATION_KEY).await?,
    };
    let owner_key = stored(store, OWNER_KEY).await?;
    Ok(Secrets {
        permutation_key,
        owner_key,
    })
}

/// The key stored under `name`, made now if there is none; transient failures are retried
/// a few times (an instance should not fail to start over one slow call).
pub async fn stored(store: &dyn LinkStore, name: &str) -> Result<Vec<u8>, StoreError> {
    let candidate = random_key()?;
    let mut attempt = 1;
    loop {
        match store.secret(name, &candidate).await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, key = name, "reading a stored key failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                    .await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// 32 random bytes: a new key.
pub(crate) fn random_key() -> Result<[u8; 32], StoreError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| StoreError::internal(format!("no OS randomness for a new key: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;
    use std::time::Duration;

    #[tokio::test]
    async fn keys_are_made_once_kept_and_a_configured_key_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.redb");
        let store = EmbeddedStore::open(&path, Duration::from_secs(5)).expect("open");
        let first = ensure(&store, None).await.expect("secrets");
        assert_eq!(first.permutation_key.len(), 32);
        assert_ne!(first.permutation_key, first.owner_key);
        let again = ensure(&store, None).await.expect("secrets");
        assert_eq!(again.permutation_key, first.permutation_key);
        assert_eq!(again.owner_key, first.owner_key);
        let configured = Secret::new("a-configured-permutation-key");
        let chosen = ensure(&store, Some(&configured)).await.expect("secrets");
        assert_eq!(chosen.permutation_key, b"a-configured-permutation-key");
        assert_eq!(chosen.owner_key, first.owner_key);
        store.close().await;

        // Another install makes other keys: codes differ between installs.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = EmbeddedStore::open(&other_dir.path().join("k.redb"), Duration::from_secs(5))
            .expect("open");
        let theirs = ensure(&other, None).await.expect("secrets");
        assert_ne!(theirs.permutation_key, first.permutation_key);
        other.close().await;
    }
}
