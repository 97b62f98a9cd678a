//! Collision handling, against the real embedded store.

use std::time::Duration;

use super::*;
use crate::code::{CodeGenerator, hash_code};
use crate::config::LocalCacheSettings;
use crate::store::EmbeddedStore;
use crate::store::faulty::FaultyStore;

const KEY: &[u8] = b"test-key";

fn service(store: Arc<dyn LinkStore>) -> (LinkService, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let service = LinkService::new(
        store,
        Arc::new(LocalCache::new(
            &LocalCacheSettings::default(),
            crate::clock::system_now_ms(),
        )),
        None,
        CodeSource::new(10, KEY),
        Arc::new(ClickRecorder::new(Arc::clone(&metrics))),
        Arc::clone(&metrics),
        Clock::system(),
    );
    (service, metrics)
}

/// The embedded store with id leases failing.
fn no_counter(dir: &tempfile::TempDir) -> Arc<FaultyStore> {
    let store = FaultyStore::new(embedded(dir));
    store
        .fail_leases
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Arc::new(store)
}

fn embedded(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("k.redb"), Duration::from_secs(5)).expect("open")
}

fn new_link(url: &str) -> NewLink {
    NewLink {
        link: Link {
            url: url.into(),
            ..Link::default()
        },
        host: "example.com".into(),
        idempotency_key: None,
    }
}

fn squatter(code: String) -> Link {
    Link {
        code,
        url: "https://squatter.example/".into(),
        ..Link::default()
    }
}

#[tokio::test]
async fn a_taken_counter_code_takes_the_next_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn LinkStore> = Arc::new(embedded(&dir));
    let codes = CodeGenerator::new(KEY);
    let first = codes.code_for(0).expect("not reserved");
    let second = codes.code_for(1).expect("not reserved");
    // Someone took id 0's code as a custom alias before the counter got there.
    store
        .insert(&squatter(first.clone()), None)
        .await
        .expect("insert");
    let (service, metrics) = service(Arc::clone(&store));

    let created = service
        .create(new_link("https://example.com/a"))
        .await
        .expect("create");
    assert_eq!(created.link.code, second);
    assert_eq!(metrics.code_collisions.get(), 1);
    let squatter = store.get(&first).await.expect("get").expect("kept");
    assert_eq!(
        squatter.url, "https://squatter.example/",
        "never overwritten"
    );
}

#[tokio::test]
async fn hash_codes_grow_to_eight_characters_after_repeated_collisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = no_counter(&dir);
    // The first tries all find their code taken.
    store
        .taken_inserts
        .store(HASH_NONCES_AT_7, std::sync::atomic::Ordering::SeqCst);
    let (service, metrics) = service(Arc::clone(&store) as Arc<dyn LinkStore>);
    let created = service
        .create(new_link("https://example.com/crowded"))
        .await
        .expect("create");
    assert_eq!(created.link.code.len(), 8);
    assert_eq!(metrics.code_collisions.get(), u64::from(HASH_NONCES_AT_7));
    assert!(store.get(&created.link.code).await.expect("get").is_some());
}

#[tokio::test]
async fn a_taken_alias_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, _) = service(Arc::new(embedded(&dir)));
    let mut new = new_link("https://example.com/");
    new.link.code = "promo".into();
    service.create(new.clone()).await.expect("first");
    let err = service.create(new).await.expect_err("second");
    assert!(
        matches!(err, CreateError::AliasTaken(ref a) if a == "promo"),
        "{err}"
    );
}

#[tokio::test]
async fn a_run_of_squatted_counter_codes_cannot_make_a_create_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn LinkStore> = Arc::new(embedded(&dir));
    let codes = CodeGenerator::new(KEY);
    // Someone who could predict the counter took its next 100 codes as aliases.
    for id in 0..100 {
        if let Some(code) = codes.code_for(id) {
            store.insert(&squatter(code), None).await.expect("insert");
        }
    }
    let (service, metrics) = service(Arc::clone(&store));
    for i in 0..5 {
        let created = service
            .create(new_link(&format!("https://example.com/{i}")))
            .await
            .expect("created despite the squatters");
        assert!(created.link.code.len() >= 8, "{}", created.link.code);
        let stored = store
            .get(&created.link.code)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.url, format!("https://example.com/{i}"));
    }
    assert!(metrics.hash_fallbacks.get() >= 5);
}

#[test]
fn hash_codes_grow_so_they_cannot_run_out() {
    assert_eq!(hash_len(0), 7);
    assert_eq!(hash_len(HASH_NONCES_AT_7), 8);
    assert_eq!(hash_len(HASH_NONCES_AT_7 + 4), 9);
    assert!(hash_len(MAX_ATTEMPTS) <= crate::code::MAX_CODE_LEN as u32);
}

#[tokio::test]
async fn hash_codes_are_salted_from_the_first_try() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (service, metrics) = service(no_counter(&dir));
    let url = "https://example.com/unpredictable";
    let first = service.create(new_link(url)).await.expect("create");
    let second = service.create(new_link(url)).await.expect("create");
    assert_eq!(metrics.hash_fallbacks.get(), 2);
    assert_eq!(
        metrics.code_collisions.get(),
        0,
        "no predictable code to collide with"
    );
    assert_ne!(first.link.code, second.link.code);
    for code in [&first.link.code, &second.link.code] {
        assert_eq!(code.len(), 7);
        for nonce in 0..HASH_NONCES_AT_7 {
            let unsalted = hash_code(url, &nonce.to_be_bytes(), 7);
            assert_ne!(*code, unsalted, "a code anyone could compute");
        }
    }
}

#[tokio::test]
async fn a_create_that_times_out_but_commits_is_found_by_its_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The production default: the stalled write below waits it out, the others never need it.
    let embedded = Arc::new(
        EmbeddedStore::open(&dir.path().join("k.redb"), Duration::from_secs(3)).expect("open"),
    );
    let store: Arc<dyn LinkStore> = Arc::clone(&embedded) as Arc<dyn LinkStore>;
    let (service, _) = service(Arc::clone(&store));
    // The id block is leased first, so that the create below is the one write.
    service
        .create(new_link("https://example.com/first"))
        .await
        .expect("create");
    let keyed = || NewLink {
        idempotency_key: Some("order-9".into()),
        ..new_link("https://example.com/slow")
    };

    let go = embedded.hold_writer().await;
    let timed_out = service
        .create(keyed())
        .await
        .expect_err("the writer is stalled");
    // (The HTTP answer to it says the outcome is unknown: see `http::errors`.)
    assert!(
        matches!(timed_out, CreateError::Store(StoreError::Timeout(_))),
        "{timed_out:?}"
    );

    // The write the caller gave up on commits after all; the retry finds its link.
    go.send(()).expect("release the writer");
    let retried = service.create(keyed()).await.expect("retry");
    assert!(retried.replayed, "the link that landed, not a second one");
    let all = store
        .list(&crate::store::ListScope::All, None, 10)
        .await
        .expect("list");
    let slow: Vec<&Link> = all
        .iter()
        .filter(|l| l.url == "https://example.com/slow")
        .collect();
    assert_eq!(slow.len(), 1, "{all:?}");
    assert_eq!(slow[0].code, retried.link.code);
}
