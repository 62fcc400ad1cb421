//! Runs the store conformance suite against RocksDB on disk, plus the
//! engine's own durability checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arbiter_store::conformance as suite;
use arbiter_store::{ChangeMeta, Claim, Commit, Expect, RocksOptions, RocksStore, Store, Write};

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

macro_rules! conformance_shared {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            suite::$name(Arc::new(open(&dir))).await;
        }
    )*};
}

arbiter_store::conformance_behaviours!(conformance, conformance_shared);

conformance!(compaction_bounds_history);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_and_data_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let key = format!("t/vm/{i:03}").into_bytes();
                let commit = Commit {
                    writes: vec![Write {
                        key: key.clone(),
                        expect: Expect::Absent,
                        value: Some(vec![7; 100]),
                        operation: "create".into(),
                    }],
                    claims: vec![Claim {
                        key: format!("t/u/{i}").into_bytes(),
                        owner: key,
                    }],
                    ..Commit::default()
                };
                store.commit(commit).await.unwrap().revision
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
    assert_eq!(store.revision().await.unwrap(), 200);
    assert!(store.get(b"t/vm/199").await.unwrap().is_some());
    assert_eq!(
        store.unique_owner(b"t/u/5").await.unwrap().as_deref(),
        Some(&b"t/vm/005"[..])
    );
    assert_eq!(store.history(b"t/vm/005", 0, 10).await.unwrap().len(), 1);
    let next = store
        .commit(Commit::of(
            Write {
                key: b"t/vm/new".to_vec(),
                expect: Expect::Absent,
                value: Some(Vec::new()),
                operation: "create".into(),
            },
            ChangeMeta::default(),
        ))
        .await
        .unwrap();
    assert_eq!(next.revision, 201);
}
