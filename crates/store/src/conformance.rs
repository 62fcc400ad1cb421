//! The behaviour every [`Store`] backend must show, as functions that take
//! a fresh, empty store. Each backend's tests call all of them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::{ChangeMeta, CommitError, Expect, IdempotencyMark, Mutation, Scan, Store};

fn put(key: &str, expect: Expect, value: &str) -> Mutation {
    Mutation {
        key: key.as_bytes().to_vec(),
        expect,
        value: Some(value.as_bytes().to_vec()),
        claims: Vec::new(),
        releases: Vec::new(),
        change: ChangeMeta {
            principal: "tester".into(),
            request_id: String::new(),
            time_unix_ms: 1,
        },
        idempotency: None,
    }
}

fn delete(key: &str, revision: u64) -> Mutation {
    Mutation {
        value: None,
        ..put(key, Expect::Revision(revision), "")
    }
}

/// Creates succeed once; a second create sees the first.
pub async fn create_is_exclusive(store: &impl Store) {
    let first = store.commit(put("t/vm/a", Expect::Absent, "one")).await.unwrap();
    assert_eq!(first.revision, 1);
    let again = store.commit(put("t/vm/a", Expect::Absent, "two")).await;
    match again {
        Err(CommitError::Conflict { current: Some(c) }) => {
            assert_eq!(c.revision, 1);
            assert_eq!(c.value, b"one");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let got = store.get(b"t/vm/a").await.unwrap().unwrap();
    assert_eq!((got.revision, got.value.as_slice()), (1, &b"one"[..]));
    assert_eq!(store.revision(), 1);
}

/// Updates and deletes apply only at the expected revision.
pub async fn writes_are_conditional(store: &impl Store) {
    let created = store.commit(put("t/vm/a", Expect::Absent, "v1")).await.unwrap();
    let updated = store
        .commit(put("t/vm/a", Expect::Revision(created.revision), "v2"))
        .await
        .unwrap();
    assert!(updated.revision > created.revision);
    let stale = store
        .commit(put("t/vm/a", Expect::Revision(created.revision), "v3"))
        .await;
    assert!(matches!(stale, Err(CommitError::Conflict { current: Some(c) }) if c.value == b"v2"));
    let missing = store.commit(put("t/vm/b", Expect::Revision(1), "x")).await;
    assert!(matches!(missing, Err(CommitError::Conflict { current: None })));
    store.commit(delete("t/vm/a", updated.revision)).await.unwrap();
    assert_eq!(store.get(b"t/vm/a").await.unwrap(), None);
}

/// A unique key has one owner at a time; releasing frees it.
pub async fn unique_keys_have_one_owner(store: &impl Store) {
    let mut alice = put("t/user/alice", Expect::Absent, "a");
    alice.claims.push(b"t/user/email/a@x".to_vec());
    let a = store.commit(alice).await.unwrap();
    let mut bob = put("t/user/bob", Expect::Absent, "b");
    bob.claims.push(b"t/user/email/a@x".to_vec());
    match store.commit(bob.clone()).await {
        Err(CommitError::Taken { key, owner }) => {
            assert_eq!(key, b"t/user/email/a@x");
            assert_eq!(owner, b"t/user/alice");
        }
        other => panic!("expected taken, got {other:?}"),
    }
    assert_eq!(
        store.get(b"t/user/bob").await.unwrap(),
        None,
        "a refused mutation writes nothing"
    );
    // Alice keeps her key on an update that claims it again.
    let mut keep = put("t/user/alice", Expect::Revision(a.revision), "a2");
    keep.claims.push(b"t/user/email/a@x".to_vec());
    let a2 = store.commit(keep).await.unwrap();
    let mut release = delete("t/user/alice", a2.revision);
    release.releases.push(b"t/user/email/a@x".to_vec());
    store.commit(release).await.unwrap();
    assert_eq!(store.unique_owner(b"t/user/email/a@x").await.unwrap(), None);
    store.commit(bob).await.unwrap();
    let owner = store.unique_owner(b"t/user/email/a@x").await.unwrap();
    assert_eq!(owner.as_deref(), Some(&b"t/user/bob"[..]));
}

/// Concurrent creates of one key: exactly one wins.
pub async fn concurrent_creates_have_one_winner<S: Store>(store: std::sync::Arc<S>) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .commit(put("t/vm/race", Expect::Absent, &i.to_string()))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(CommitError::Conflict { current: Some(_) }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.revision(), 1);
}

/// Scans see keys under a prefix in order and resume after a key.
pub async fn scans_are_ordered(store: &impl Store) {
    for key in ["t/vm/c", "t/vm/a", "t/vm/b", "u/vm/a", "t/vmx/a"] {
        store.commit(put(key, Expect::Absent, key)).await.unwrap();
    }
    let mut seen = Vec::new();
    store
        .scan(b"t/vm/", None, &mut |key, _| {
            seen.push(String::from_utf8_lossy(key).into_owned());
            Scan::Continue
        })
        .await
        .unwrap();
    assert_eq!(seen, ["t/vm/a", "t/vm/b", "t/vm/c"]);
    seen.clear();
    store
        .scan(b"t/vm/", Some(b"t/vm/a"), &mut |key, _| {
            seen.push(String::from_utf8_lossy(key).into_owned());
            Scan::Stop
        })
        .await
        .unwrap();
    assert_eq!(seen, ["t/vm/b"]);
}

/// Every committed mutation is in the change log, with before and after.
pub async fn changes_are_logged(store: &impl Store) {
    let c = store.commit(put("t/vm/a", Expect::Absent, "v1")).await.unwrap();
    store
        .commit(put("t/vm/a", Expect::Revision(c.revision), "v2"))
        .await
        .unwrap();
    let events = store.changes(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].before.as_deref(), Some(&b"v1"[..]));
    assert_eq!(events[1].after.as_deref(), Some(&b"v2"[..]));
    assert_eq!(events[1].principal, "tester");
    assert_eq!(store.changes(1, 10).await.unwrap().len(), 1);
}

/// An idempotency mark is written with the mutation and expires.
pub async fn idempotency_records_outcomes(store: &impl Store) {
    let mut m = put("t/vm/a", Expect::Absent, "v1");
    m.idempotency = Some(IdempotencyMark {
        key: b"t/req-1".to_vec(),
        fingerprint: b"fp".to_vec(),
        expires_at_ms: 1_000,
    });
    let c = store.commit(m).await.unwrap();
    let record = store.idempotency(b"t/req-1", 999).await.unwrap().unwrap();
    assert_eq!(record.revision, c.revision);
    assert_eq!(record.value, b"v1");
    assert_eq!(record.fingerprint, b"fp");
    assert_eq!(store.idempotency(b"t/req-1", 1_000).await.unwrap(), None);
    let mut refused = put("t/vm/a", Expect::Absent, "v2");
    refused.idempotency = Some(IdempotencyMark {
        key: b"t/req-2".to_vec(),
        fingerprint: b"fp".to_vec(),
        expires_at_ms: 1_000,
    });
    assert!(store.commit(refused).await.is_err());
    assert_eq!(
        store.idempotency(b"t/req-2", 0).await.unwrap(),
        None,
        "no record for a refused mutation"
    );
}

/// Blobs are stored by digest, read back whole, and immutable.
pub async fn blobs_round_trip(store: &impl Store) {
    assert_eq!(store.get_blob(b"d1").await.unwrap(), None);
    let big = vec![7u8; 3 << 20];
    store.put_blob(b"d1", big.clone()).await.unwrap();
    store.put_blob(b"d2", b"small".to_vec()).await.unwrap();
    assert_eq!(store.get_blob(b"d1").await.unwrap(), Some(big.clone()));
    assert_eq!(
        store.get_blob(b"d2").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
    store.put_blob(b"d1", big.clone()).await.unwrap();
    assert_eq!(store.get_blob(b"d1").await.unwrap(), Some(big));
    assert_eq!(store.revision(), 0, "blobs are not revisions");
}
