//! Runs the store conformance suite against RocksDB on disk, plus the
//! engine's own durability checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arbiter_store::conformance as suite;
use arbiter_store::{ChangeMeta, Expect, Mutation, RocksOptions, RocksStore, Store};

fn open(dir: &tempfile::TempDir) -> RocksStore {
    RocksStore::open(dir.path(), RocksOptions::default()).unwrap()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            suite::$name(&open(&dir)).await;
        }
    )*};
}

conformance!(
    create_is_exclusive,
    writes_are_conditional,
    unique_keys_have_one_owner,
    scans_are_ordered,
    changes_are_logged,
    idempotency_records_outcomes,
    blobs_round_trip,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    suite::concurrent_creates_have_one_winner(Arc::new(open(&dir))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_and_data_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let m = Mutation {
                    key: format!("t/vm/{i:03}").into_bytes(),
                    expect: Expect::Absent,
                    value: Some(vec![7; 100]),
                    claims: vec![format!("t/u/{i}").into_bytes()],
                    releases: Vec::new(),
                    change: ChangeMeta::default(),
                    idempotency: None,
                };
                store.commit(m).await.unwrap().revision
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap());
    }
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (1..=200).collect::<Vec<u64>>(),
        "revisions are dense and unique"
    );
    drop(Arc::into_inner(store).unwrap());
    let store = open(&dir);
    assert_eq!(store.revision(), 200);
    assert!(store.get(b"t/vm/199").await.unwrap().is_some());
    assert_eq!(
        store.unique_owner(b"t/u/5").await.unwrap().as_deref(),
        Some(&b"t/vm/005"[..])
    );
    let next = store
        .commit(Mutation {
            key: b"t/vm/new".to_vec(),
            expect: Expect::Absent,
            value: Some(Vec::new()),
            claims: Vec::new(),
            releases: Vec::new(),
            change: ChangeMeta::default(),
            idempotency: None,
        })
        .await
        .unwrap();
    assert_eq!(next.revision, 201);
}
