//! A deployment in several regions, on a DynamoDB global table: every region reads and writes
//! its own replica, and replication between them is last-writer-wins. A claim checked against
//! one replica only (an alias put-if-absent, an idempotency key, a stored secret, an edit's
//! revision) could then be won in two regions at once, and one acknowledged write silently
//! replaced by the other. So each such write is made in one region, the home of what it claims:
//!
//! - a code of the generated shape: the region whose range of ids its position falls in
//!   ([`crate::code::region`]), which is the region that minted it (a 7- or 8-character alias
//!   gets the home of the code it looks like, the same in every region);
//! - any other code, a secret's name, an API key's id: the region that scores highest for it
//!   (rendezvous hashing, SHA-256 of the region's number and the name), so adding a region
//!   moves only the names it now wins.
//!
//! Creates, edits and deletes of a link are made in its code's home (with the create's
//! idempotency record in the same transaction); a create that mints a code mints it in this
//! region's range, so its home is here. A lookup that this region's replica misses is asked of
//! the code's home region before it answers "not found": a link made there a moment ago is
//! found before it has replicated. When a home region cannot be reached, its claims are refused
//! (503, naming the region) and lookups of its codes answer from this replica alone.
//! Everything else (lists, statistics, clicks, leases of this region's counter) is this
//! region's replica.

use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Analytics, ClickDelta, DiskState, FlushError, IdempotencyRecord, ImportOutcome, InsertOutcome,
    Link, LinkStats, LinkStore, ListPosition, ListScope, Purged, ReplaceOutcome, StoreError,
    StoredKey, rendezvous,
};
use crate::code::{CodeGenerator, region};
use crate::telemetry::Metrics;

/// A region of the deployment, as the settings name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub id: u8,
}

/// Another region: its name and number, and its replica of the table.
pub struct Peer {
    pub region: Region,
    pub store: Arc<dyn LinkStore>,
    /// Calls to it that failed in a row, and until when (Unix ms) it is not asked, after
    /// [`FAILURES_TO_SKIP`] of them.
    failures: AtomicU32,
    skipped_until_ms: AtomicI64,
}

impl Peer {
    pub fn new(region: Region, store: Arc<dyn LinkStore>) -> Self {
        Self {
            region,
            store,
            failures: AtomicU32::new(0),
            skipped_until_ms: AtomicI64::new(0),
        }
    }
}

/// Failed calls in a row after which a region is not asked for [`SKIP_FOR`]: while it is down
/// (or black-holed), its claims answer 503 at once and lookups of its codes answer from here,
/// instead of each waiting out the store timeout.
const FAILURES_TO_SKIP: u32 = 3;
const SKIP_FOR: Duration = Duration::from_secs(5);

pub struct RegionalStore {
    local: Arc<dyn LinkStore>,
    this: Region,
    peers: Vec<Peer>,
    /// The fleet's code generator, for a code's position: known once the permutation key is
    /// (which is itself a secret decided in its home region). Until then codes are homed by
    /// name.
    codes: OnceLock<CodeGenerator>,
    metrics: Arc<Metrics>,
    /// Whether this region's counter has been checked against what the other regions were told
    /// of its leases (see [`lease_ids`](LinkStore::lease_ids)); held while it is checked.
    counter_checked: tokio::sync::Mutex<bool>,
}

/// How long a lease waits for each other region to take note of it.
const NOTE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a write is decided.
enum Home<'a> {
    Here,
    There(&'a Peer),
}

impl RegionalStore {
    pub fn new(
        local: Arc<dyn LinkStore>,
        this: Region,
        peers: Vec<Peer>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            local,
            this,
            peers,
            codes: OnceLock::new(),
            metrics,
            counter_checked: tokio::sync::Mutex::new(false),
        }
    }

    /// Moves this region's counter past what the other regions (and this region's replica,
    /// from them) were told it had leased: after this region was lost and its replica filled
    /// again from the others, its counter is only what had replicated, and the ids it leased
    /// after that would be handed out a second time, the codes of links lost with it among
    /// them. Checked once; again at the next lease while some region did not answer.
    async fn catch_up_counter(&self) -> Result<(), StoreError> {
        let mut checked = self.counter_checked.lock().await;
        if *checked {
            return Ok(());
        }
        let mut noted = self.local.noted_lease(self.this.id).await?;
        let mut everyone = true;
        for peer in &self.peers {
            let asked = peer.store.noted_lease(self.this.id);
            match tokio::time::timeout(NOTE_TIMEOUT, self.at(peer, asked)).await {
                Ok(Ok(theirs)) => noted = noted.max(theirs),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, region = %peer.region.name, "cannot ask another region how far this region's counter went");
                    everyone = false;
                }
                Err(_) => {
                    self.metrics.region_remote_failures.inc();
                    everyone = false;
                }
            }
        }
        let here = self.local.lease_ids(0).await?.start;
        let counter = region::counter_of(self.this.id, here).unwrap_or_default();
        if let Some(noted) = noted.filter(|&noted| noted > counter) {
            tracing::warn!(
                counter,
                noted,
                "this region's counter is behind the leases the other regions were told of \
                 (its replica was filled again after a loss): skipping the ids between"
            );
            self.local.lease_ids(noted - counter).await?;
        }
        *checked = everyone;
        Ok(())
    }

    /// Tells every other region (at most [`NOTE_TIMEOUT`] each) that this region's counter
    /// went up to `counter_end`. One that cannot be told is skipped: the lease goes on.
    async fn note_lease(&self, counter_end: u64) {
        let notes = self.peers.iter().map(|peer| async move {
            let note = self.at(peer, peer.store.note_lease(self.this.id, counter_end));
            match tokio::time::timeout(NOTE_TIMEOUT, note).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, region = %peer.region.name, "another region was not told of this lease");
                }
                Err(_) => {
                    self.metrics.region_remote_failures.inc();
                    tracing::warn!(region = %peer.region.name, "another region was not told of this lease in time");
                }
            }
        });
        futures_util::future::join_all(notes).await;
    }

    /// Codes are homed by their position from now on (set once, when the permutation key is
    /// known; later calls change nothing).
    pub fn know_codes(&self, codes: CodeGenerator) {
        let _ = self.codes.set(codes);
    }

    /// The home region of `code`.
    fn home_of_code(&self, code: &str) -> Home<'_> {
        let minted = self
            .codes
            .get()
            .and_then(|codes| codes.position(code))
            .and_then(region::region_of)
            .and_then(|id| self.region(id));
        match minted {
            Some(home) => home,
            None => self.home_of_name(code),
        }
    }

    /// The home region of a name: the region scoring highest for it (rendezvous hashing on
    /// the regions' ids).
    fn home_of_name(&self, name: &str) -> Home<'_> {
        let here = [self.this.id];
        let ids: Vec<[u8; 1]> = self.peers.iter().map(|peer| [peer.region.id]).collect();
        let candidates = std::iter::once((Home::Here, here.as_slice())).chain(
            self.peers
                .iter()
                .zip(&ids)
                .map(|(peer, id)| (Home::There(peer), id.as_slice())),
        );
        rendezvous::pick(b"kurz-region-home\0", name.as_bytes(), candidates).unwrap_or(Home::Here)
    }

    fn region(&self, id: u8) -> Option<Home<'_>> {
        if id == self.this.id {
            return Some(Home::Here);
        }
        self.peers
            .iter()
            .find(|peer| peer.region.id == id)
            .map(Home::There)
    }

    /// `peer`'s answer, its failure to answer named as its region's; once it has failed
    /// [`FAILURES_TO_SKIP`] calls in a row, not asked at all for [`SKIP_FOR`].
    async fn at<T>(
        &self,
        peer: &Peer,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let now = crate::clock::system_now_ms();
        if peer.skipped_until_ms.load(Ordering::Relaxed) > now {
            self.metrics.region_remote_skipped.inc();
            return Err(StoreError::Region {
                region: peer.region.name.clone(),
                reason: format!(
                    "failed {FAILURES_TO_SKIP} times in a row; not asked for {SKIP_FOR:?}"
                ),
            });
        }
        self.metrics.region_remote_calls.inc();
        let result = call.await;
        match &result {
            Ok(_) => peer.failures.store(0, Ordering::Relaxed),
            Err(e) if e.is_transient() => {
                if peer.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_TO_SKIP {
                    let until = now + i64::try_from(SKIP_FOR.as_millis()).unwrap_or(i64::MAX);
                    peer.skipped_until_ms.store(until, Ordering::Relaxed);
                    peer.failures.store(0, Ordering::Relaxed);
                    tracing::warn!(region = %peer.region.name, "another region failed {FAILURES_TO_SKIP} calls in a row; not asking it for {SKIP_FOR:?}");
                }
            }
            Err(_) => {}
        }
        result.map_err(|e| {
            self.metrics.region_remote_failures.inc();
            match e {
                // A write that may have been made stays one of unknown outcome.
                StoreError::Timeout(_) | StoreError::Corrupt { .. } => e,
                e if e.is_transient() => StoreError::Region {
                    region: peer.region.name.clone(),
                    reason: e.to_string(),
                },
                e => e,
            }
        })
    }
}

/// This region's store `local` with the other regions' replicas of its table, as `region`
/// names them: same table, the peer's AWS region (or its endpoint). No call is made yet: a
/// region starts while another is down.
#[cfg(feature = "dynamodb")]
pub async fn with_peers(
    settings: &crate::config::StoreSettings,
    regions: &crate::config::RegionSettings,
    clicks: super::ClickLimits,
    local: Arc<dyn LinkStore>,
    metrics: Arc<Metrics>,
) -> Result<Arc<RegionalStore>, StoreError> {
    let (Some(name), Some(id)) = (&regions.name, regions.id) else {
        return Err(StoreError::internal("no region is configured"));
    };
    let mut peers = Vec::new();
    for peer in &regions.peers {
        let mut at_peer = settings.clone();
        at_peer.dynamodb.region = Some(peer.name.clone());
        at_peer.dynamodb.endpoint_url.clone_from(&peer.endpoint_url);
        at_peer.region_id = Some(peer.id);
        // Its calls are counted apart: this instance's store gauges are its own region's.
        let store = super::DynamoStore::connect(&at_peer, clicks, Arc::new(Metrics::default()));
        let region = Region {
            name: peer.name.clone(),
            id: peer.id,
        };
        peers.push(Peer::new(region, Arc::new(store.await?)));
    }
    let this = Region {
        name: name.clone(),
        id,
    };
    Ok(Arc::new(RegionalStore::new(local, this, peers, metrics)))
}

/// `$op($args)` on the store of `$home`: this region's, or the peer's.
macro_rules! at_home {
    ($self:ident, $home:expr, $op:ident ( $($arg:expr),* )) => {
        match $home {
            Home::Here => $self.local.$op($($arg),*).await,
            Home::There(peer) => $self.at(peer, peer.store.$op($($arg),*)).await,
        }
    };
}

#[async_trait]
impl LinkStore for RegionalStore {
    fn backend(&self) -> &'static str {
        self.local.backend()
    }

    fn disk(&self) -> Option<DiskState> {
        self.local.disk()
    }

    fn time_reference(&self) -> Option<Arc<dyn crate::clock::TimeReference>> {
        self.local.time_reference()
    }

    /// This region's replica, then, for a code it does not hold, the code's home region.
    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        if let Some(link) = self.local.get(code).await? {
            return Ok(Some(link));
        }
        let Home::There(peer) = self.home_of_code(code) else {
            return Ok(None);
        };
        match self.at(peer, peer.store.get(code)).await {
            Ok(found) => {
                if found.is_some() {
                    self.metrics.region_remote_found.inc();
                }
                Ok(found)
            }
            Err(e) => {
                // Its home is out of reach: what this replica holds is all there is to say. A
                // link made there since the last replication is not found until it returns.
                // (Counted; logged once when the region starts being skipped.)
                tracing::debug!(error = %e, code, region = %peer.region.name, "the code's home region did not answer; answering from this region's replica");
                Ok(None)
            }
        }
    }

    async fn get_latest(&self, code: &str) -> Result<Option<Link>, StoreError> {
        let Home::There(peer) = self.home_of_code(code) else {
            return self.local.get(code).await;
        };
        match self.at(peer, peer.store.get(code)).await {
            Ok(latest) => Ok(latest),
            Err(e) => {
                tracing::warn!(error = %e, code, region = %peer.region.name, "the code's home region did not answer; reading this region's replica");
                self.local.get(code).await
            }
        }
    }

    async fn insert(
        &self,
        link: &Link,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        at_home!(
            self,
            self.home_of_code(&link.code),
            insert(link, idempotency)
        )
    }

    async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError> {
        at_home!(self, self.home_of_code(code), delete(code))
    }

    async fn replace(&self, link: &Link) -> Result<ReplaceOutcome, StoreError> {
        at_home!(self, self.home_of_code(&link.code), replace(link))
    }

    async fn list(
        &self,
        scope: &ListScope,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        self.local.list(scope, after, limit).await
    }

    /// Decided in the name's home region; when it cannot be reached, the secret this
    /// region's replica holds (decided there earlier, and replicated), if any.
    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Home::There(peer) = self.home_of_name(name) else {
            return self.local.secret(name, candidate).await;
        };
        match self.at(peer, peer.store.secret(name, candidate)).await {
            Ok(secret) => Ok(secret),
            Err(e) => match self.local.stored_secret(name).await? {
                Some(secret) => {
                    tracing::warn!(error = %e, name, region = %peer.region.name, "the secret's home region did not answer; using this region's replica of it");
                    Ok(secret)
                }
                None => Err(e),
            },
        }
    }

    async fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.local.stored_secret(name).await
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        at_home!(self, self.home_of_name(name), delete_secret(name))
    }

    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError> {
        at_home!(self, self.home_of_name(name), put_secret(name, secret))
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.local.keys().await
    }

    /// In the key id's home; when that cannot be reached, a key this region's replica holds
    /// already is "there" (an instance starting with `auth.api_keys` while the home is down).
    async fn insert_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let Home::There(peer) = self.home_of_name(&key.id) else {
            return self.local.insert_key(key).await;
        };
        match self.at(peer, peer.store.insert_key(key)).await {
            Err(e @ StoreError::Region { .. }) => {
                let held = self.local.keys().await?.iter().any(|k| k.id == key.id);
                if held { Ok(false) } else { Err(e) }
            }
            outcome => outcome,
        }
    }

    async fn replace_key(&self, key: &StoredKey) -> Result<ReplaceOutcome, StoreError> {
        at_home!(self, self.home_of_name(&key.id), replace_key(key))
    }

    async fn import(&self, link: &Link, stats: &LinkStats) -> Result<ImportOutcome, StoreError> {
        at_home!(self, self.home_of_code(&link.code), import(link, stats))
    }

    /// This region's counter, whose ids are this region's range; each lease is noted in the
    /// other regions before its ids are handed out, and the first moves the counter past what
    /// they noted (see [`catch_up_counter`](RegionalStore::catch_up_counter)).
    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        self.catch_up_counter().await?;
        let ids = self.local.lease_ids(count).await?;
        if let Some(last) = ids.clone().next_back()
            && let Some(counter) = region::counter_of(self.this.id, last)
        {
            self.note_lease(counter + 1).await;
        }
        Ok(ids)
    }

    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        self.local.add_clicks(deltas).await
    }

    async fn purge(
        &self,
        records_before_ms: i64,
        links_expired_before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Purged, StoreError> {
        self.local
            .purge(records_before_ms, links_expired_before_ms, limit)
            .await
    }

    async fn forget_earlier_stats(&self, link: &Link) -> Result<(), StoreError> {
        self.local.forget_earlier_stats(link).await
    }

    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        self.local.stats(code).await
    }

    async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<Analytics>, StoreError> {
        self.local.analytics(code, from_hour, to_hour).await
    }

    /// This region's replica: readiness and the store probe are about the region's own table.
    async fn ping(&self) -> Result<(), StoreError> {
        self.local.ping().await
    }

    async fn close(&self) {
        self.local.close().await;
        for peer in &self.peers {
            peer.store.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::faulty::{FaultyStore, link};

    /// Two regions on two stores, as each region's instances see them: `alpha` (0), whose
    /// replica is the first store, and `beta` (1), whose replica is the second.
    struct TwoRegions {
        _dirs: [tempfile::TempDir; 2],
        stores: [Arc<FaultyStore>; 2],
        alpha: RegionalStore,
        beta: RegionalStore,
    }

    fn two_regions() -> TwoRegions {
        let (dir_a, a) = FaultyStore::temporary();
        let (dir_b, b) = FaultyStore::temporary();
        let region = |name: &str, id| Region {
            name: name.into(),
            id,
        };
        let view = |local: &Arc<FaultyStore>, this, peer: &Arc<FaultyStore>, other| {
            let store = RegionalStore::new(
                Arc::clone(local) as Arc<dyn LinkStore>,
                this,
                vec![Peer::new(other, Arc::clone(peer) as Arc<dyn LinkStore>)],
                Arc::new(Metrics::default()),
            );
            store.know_codes(CodeGenerator::new(b"regions-test-key"));
            store
        };
        TwoRegions {
            alpha: view(&a, region("alpha", 0), &b, region("beta", 1)),
            beta: view(&b, region("beta", 1), &a, region("alpha", 0)),
            _dirs: [dir_a, dir_b],
            stores: [a, b],
        }
    }

    fn is_here(home: Home<'_>) -> bool {
        matches!(home, Home::Here)
    }

    #[test]
    fn every_region_names_the_same_home_and_names_spread_over_the_regions() {
        let regions = two_regions();
        let mut at_alpha = 0;
        for i in 0..2_000 {
            let name = format!("alias-{i}");
            let alpha = is_here(regions.alpha.home_of_name(&name));
            assert_ne!(alpha, is_here(regions.beta.home_of_name(&name)), "{name}");
            at_alpha += usize::from(alpha);
        }
        assert!(
            (800..1_200).contains(&at_alpha),
            "{at_alpha} of 2000 at alpha"
        );
    }

    #[test]
    fn a_generated_code_s_home_is_the_region_that_minted_it() {
        let regions = two_regions();
        let codes = CodeGenerator::new(b"regions-test-key");
        for counter in 0..200 {
            for (id, minted_at_alpha) in [(0, true), (1, false)] {
                let Some(code) = codes.code_for(region::id_of(id, counter).expect("in range"))
                else {
                    continue;
                };
                assert_eq!(is_here(regions.alpha.home_of_code(&code)), minted_at_alpha);
                assert_eq!(is_here(regions.beta.home_of_code(&code)), !minted_at_alpha);
            }
        }
    }

    #[tokio::test]
    async fn an_alias_is_won_in_its_home_region_only_and_found_from_both() {
        let regions = two_regions();
        for i in 0..40 {
            let alias = format!("race-{i}");
            let won_at_alpha = regions.alpha.insert(&link(&alias), None).await;
            let won_at_beta = regions.beta.insert(&link(&alias), None).await;
            let outcomes = [won_at_alpha.expect("alpha"), won_at_beta.expect("beta")];
            assert!(
                matches!(
                    outcomes,
                    [InsertOutcome::Inserted, InsertOutcome::CodeTaken]
                ),
                "{alias}: {outcomes:?}"
            );
            // Written once, in its home's replica, and found from either region.
            let home = usize::from(!is_here(regions.alpha.home_of_name(&alias)));
            for (i, store) in regions.stores.iter().enumerate() {
                let held = store.get(&alias).await.expect("read").is_some();
                assert_eq!(held, i == home, "{alias} in store {i}");
            }
            for view in [&regions.alpha, &regions.beta] {
                let found = view.get(&alias).await.expect("lookup");
                assert_eq!(found.map(|l| l.code), Some(alias.clone()));
            }
        }
        let remote = |r: &RegionalStore| r.metrics.region_remote_found.get();
        assert_eq!(remote(&regions.alpha) + remote(&regions.beta), 40);
    }

    #[tokio::test]
    async fn the_api_and_edits_read_the_home_region_s_version_of_a_link() {
        let regions = two_regions();
        // An alias homed in beta, as beta holds it now, and an older version of it in alpha's
        // replica (replication behind).
        let alias = (0..)
            .map(|i| format!("edited-{i}"))
            .find(|alias| !is_here(regions.alpha.home_of_name(alias)))
            .expect("some alias is homed in beta");
        let mut latest = link(&alias);
        latest.revision = 3;
        regions.stores[1]
            .insert(&latest, None)
            .await
            .expect("insert");
        regions.stores[0]
            .insert(&link(&alias), None)
            .await
            .expect("insert");
        let read = |link: Option<Link>| link.map(|l| l.revision);
        assert_eq!(read(regions.alpha.get(&alias).await.expect("get")), Some(0));
        assert_eq!(
            read(regions.alpha.get_latest(&alias).await.expect("get")),
            Some(3)
        );
        // With beta out of reach, what alpha holds.
        regions.stores[1].unreachable.store(true, Ordering::SeqCst);
        assert_eq!(
            read(regions.alpha.get_latest(&alias).await.expect("get")),
            Some(0)
        );
    }

    #[tokio::test]
    async fn while_the_home_is_out_of_reach_its_claims_are_refused_and_lookups_answer_from_here() {
        let regions = two_regions();
        regions.stores[1].unreachable.store(true, Ordering::SeqCst);
        let (mut refused, mut taken_here) = (0, 0);
        for i in 0..40 {
            let alias = format!("outage-{i}");
            match regions.alpha.insert(&link(&alias), None).await {
                Err(StoreError::Region { region, .. }) => {
                    assert_eq!(region, "beta");
                    assert!(!is_here(regions.alpha.home_of_name(&alias)));
                    // Not found here, and its home cannot say: not found, not an error.
                    assert_eq!(regions.alpha.get(&alias).await.expect("lookup"), None);
                    refused += 1;
                }
                Ok(InsertOutcome::Inserted) => taken_here += 1,
                other => panic!("{alias}: {other:?}"),
            }
        }
        assert!(
            refused > 5 && taken_here > 5,
            "{refused} refused, {taken_here} made"
        );
        // After three failures in a row beta is not asked for a while: the rest were answered
        // at once, as failures.
        let metrics = &regions.alpha.metrics;
        assert_eq!(
            metrics.region_remote_calls.get(),
            u64::from(FAILURES_TO_SKIP)
        );
        assert_eq!(
            metrics.region_remote_failures.get(),
            u64::from(FAILURES_TO_SKIP)
        );
        assert_eq!(
            metrics.region_remote_skipped.get(),
            2 * refused - u64::from(FAILURES_TO_SKIP)
        );
    }

    #[tokio::test]
    async fn an_api_key_the_replica_holds_is_there_while_its_home_is_out_of_reach() {
        let regions = two_regions();
        let key = |id: &str| StoredKey {
            id: id.to_owned(),
            name: "test".into(),
            scopes: Vec::new(),
            created_at_ms: 1,
            digest: "00".into(),
            previous_digest: None,
            previous_valid_until_ms: None,
            revoked_at_ms: None,
            legacy_owner: None,
            revision: 1,
        };
        let id = (0..)
            .map(|i| format!("{i:032x}"))
            .find(|id| !is_here(regions.alpha.home_of_name(id)))
            .expect("some key id is homed in beta");
        assert!(
            regions
                .alpha
                .insert_key(&key(&id))
                .await
                .expect("inserted in beta")
        );
        regions.stores[1].unreachable.store(true, Ordering::SeqCst);
        // Not replicated to alpha (nothing replicates here): its home cannot say.
        assert!(matches!(
            regions.alpha.insert_key(&key(&id)).await,
            Err(StoreError::Region { .. })
        ));
        // Replicated: there already, as far as alpha can tell.
        regions.stores[0]
            .insert_key(&key(&id))
            .await
            .expect("the replica's copy");
        assert!(!regions.alpha.insert_key(&key(&id)).await.expect("known"));
    }
}
