//! The behaviour every [`Store`] backend must show, as functions that take
//! a fresh, empty store (on etcd: a fresh prefix; other prefixes may be
//! written meanwhile, so revisions are compared, never counted). Each
//! backend's tests call all of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

/// Names every behaviour of the suite to the backend's test macros, so that
/// a behaviour added here runs on every backend: `$each!` gets those that
/// take `&S`, `$shared!` those that take an `Arc<S>` to share between
/// tasks. `compaction_bounds_history` is left to each backend (on etcd it
/// compacts the whole cluster and needs one of its own).
#[macro_export]
macro_rules! conformance_behaviours {
    ($each:ident, $shared:ident) => {
        $each!(
            create_is_exclusive,
            writes_are_conditional,
            unique_keys_have_one_owner,
            unique_keys_move_within_one_commit,
            scans_are_ordered,
            large_scans_are_complete,
            commits_are_atomic,
            reads_are_preconditions,
            counters_respect_limits,
            idempotency_records_outcomes,
            request_ids_commit_once,
            blobs_round_trip,
            stats_are_ranges_outside_the_log,
            watch_delivers_commits,
            idle_watch_reports_progress,
            history_lists_changes,
            versions_before_revisions,
        );
        $shared!(
            concurrent_creates_have_one_winner,
            concurrent_counters_are_exact,
            contended_counters_all_commit,
            watch_resumes_without_gaps,
        );
    };
}

use futures::StreamExt;

use crate::{
    ChangeMeta, ChangeStream, Claim, Commit, CommitError, CounterDelta, Expect, IdempotencyMark, Read, Scan,
    Store, StoreError, WatchItem, Write,
};

fn meta() -> ChangeMeta {
    ChangeMeta {
        principal: "tester".into(),
        request_id: String::new(),
        time_unix_ms: 1,
    }
}

fn write(key: &str, expect: Expect, value: Option<&str>) -> Write {
    Write {
        key: key.as_bytes().to_vec(),
        expect,
        value: value.map(|v| v.as_bytes().to_vec()),
        operation: if value.is_none() { "delete" } else { "update" }.into(),
    }
}

fn put(key: &str, expect: Expect, value: &str) -> Commit {
    Commit::of(write(key, expect, Some(value)), meta())
}

fn delete(key: &str, revision: u64) -> Commit {
    Commit::of(write(key, Expect::Revision(revision), None), meta())
}

/// Creates succeed once; a second create sees the first.
pub async fn create_is_exclusive(store: &impl Store) {
    let first = store.commit(put("t/vm/a", Expect::Absent, "one")).await.unwrap();
    assert!(first.revision >= 1);
    let again = store.commit(put("t/vm/a", Expect::Absent, "two")).await;
    match again {
        Err(CommitError::Conflict {
            key,
            current: Some(c),
        }) => {
            assert_eq!(key, b"t/vm/a");
            assert_eq!(c.revision, first.revision);
            assert_eq!(c.value, b"one");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let got = store.get(b"t/vm/a").await.unwrap().unwrap();
    assert_eq!(
        (got.revision, got.value.as_slice()),
        (first.revision, &b"one"[..])
    );
    assert!(store.revision().await.unwrap() >= first.revision);
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
    assert!(matches!(stale, Err(CommitError::Conflict { current: Some(c), .. }) if c.value == b"v2"));
    let missing = store.commit(put("t/vm/b", Expect::Revision(1), "x")).await;
    assert!(matches!(
        missing,
        Err(CommitError::Conflict { current: None, .. })
    ));
    store.commit(delete("t/vm/a", updated.revision)).await.unwrap();
    assert_eq!(store.get(b"t/vm/a").await.unwrap(), None);
}

fn claim(key: &str, owner: &str) -> Claim {
    Claim {
        key: key.as_bytes().to_vec(),
        owner: owner.as_bytes().to_vec(),
    }
}

/// A unique key has one owner at a time; releasing frees it.
pub async fn unique_keys_have_one_owner(store: &impl Store) {
    let mut alice = put("t/user/alice", Expect::Absent, "a");
    alice.claims.push(claim("t/user/email/a@x", "t/user/alice"));
    let a = store.commit(alice).await.unwrap();
    let mut bob = put("t/user/bob", Expect::Absent, "b");
    bob.claims.push(claim("t/user/email/a@x", "t/user/bob"));
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
        "a refused commit writes nothing"
    );
    // An update that keeps the key leaves it where it is.
    let a2 = store
        .commit(put("t/user/alice", Expect::Revision(a.revision), "a2"))
        .await
        .unwrap();
    let owner = store.unique_owner(b"t/user/email/a@x").await.unwrap();
    assert_eq!(owner.as_deref(), Some(&b"t/user/alice"[..]));
    let mut release = delete("t/user/alice", a2.revision);
    release.releases.push(b"t/user/email/a@x".to_vec());
    store.commit(release).await.unwrap();
    assert_eq!(store.unique_owner(b"t/user/email/a@x").await.unwrap(), None);
    store.commit(bob).await.unwrap();
    let owner = store.unique_owner(b"t/user/email/a@x").await.unwrap();
    assert_eq!(owner.as_deref(), Some(&b"t/user/bob"[..]));
    let mut seen = Vec::new();
    store
        .scan_unique(b"t/user/", &mut |key, owner| {
            seen.push((key.to_vec(), owner.to_vec()));
            Scan::Continue
        })
        .await
        .unwrap();
    assert_eq!(seen, [(b"t/user/email/a@x".to_vec(), b"t/user/bob".to_vec())]);
}

/// One commit moves a unique key from one object to another.
pub async fn unique_keys_move_within_one_commit(store: &impl Store) {
    let mut first = put("t/user/a", Expect::Absent, "a");
    first.claims.push(claim("t/email/x", "t/user/a"));
    let a = store.commit(first).await.unwrap();
    let mut swap = Commit {
        writes: vec![
            write("t/user/a", Expect::Revision(a.revision), None),
            write("t/user/b", Expect::Absent, Some("b")),
        ],
        change: meta(),
        ..Commit::default()
    };
    swap.releases.push(b"t/email/x".to_vec());
    swap.claims.push(claim("t/email/x", "t/user/b"));
    store.commit(swap).await.unwrap();
    let owner = store.unique_owner(b"t/email/x").await.unwrap();
    assert_eq!(owner.as_deref(), Some(&b"t/user/b"[..]));
}

/// Concurrent creates of one key: exactly one wins.
pub async fn concurrent_creates_have_one_winner<S: Store>(store: Arc<S>) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .commit(put("t/vm/race", Expect::Absent, &i.to_string()))
                    .await
            })
        })
        .collect();
    let mut wins = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(done) => wins.push(done.revision),
            Err(CommitError::Conflict { current: Some(_), .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins.len(), 1);
    let stored = store.get(b"t/vm/race").await.unwrap().unwrap();
    assert_eq!(stored.revision, wins[0]);
}

/// Scans see keys under a prefix in order and resume after a key.
pub async fn scans_are_ordered(store: &impl Store) {
    for key in ["t/vm/c", "t/vm/a", "t/vm/b", "u/vm/a", "t/vmx/a"] {
        store.commit(put(key, Expect::Absent, key)).await.unwrap();
    }
    let mut seen = Vec::new();
    store
        .scan(b"t/vm/", None, &mut |key, stored| {
            assert_eq!(stored.value, key);
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

/// A scan larger than one page of the engine sees every object once.
pub async fn large_scans_are_complete(store: &impl Store) {
    for i in 0..1200 {
        store
            .commit(put(&format!("t/vm/{i:05}"), Expect::Absent, "x"))
            .await
            .unwrap();
    }
    let mut count = 0;
    let mut last = Vec::new();
    store
        .scan(b"t/vm/", None, &mut |key, _| {
            assert!(key > last.as_slice(), "keys ascend");
            last = key.to_vec();
            count += 1;
            Scan::Continue
        })
        .await
        .unwrap();
    assert_eq!(count, 1200);
}

/// Several objects, unique keys and counters change at one revision, or
/// none of them does.
pub async fn commits_are_atomic(store: &impl Store) {
    let both = Commit {
        writes: vec![
            write("t/vm/a", Expect::Absent, Some("a")),
            write("t/vm/b", Expect::Absent, Some("b")),
        ],
        claims: vec![claim("t/vm/ip/1", "t/vm/a")],
        counters: vec![CounterDelta {
            key: b"t/count/vms".to_vec(),
            delta: 2,
            max: None,
        }],
        change: meta(),
        ..Commit::default()
    };
    let done = store.commit(both).await.unwrap();
    let a = store.get(b"t/vm/a").await.unwrap().unwrap();
    let b = store.get(b"t/vm/b").await.unwrap().unwrap();
    assert_eq!((a.revision, b.revision), (done.revision, done.revision));
    assert_eq!(store.counter(b"t/count/vms").await.unwrap(), 2);
    // The second write's precondition fails: the first write, the claim
    // and the counter do not happen either.
    let failing = Commit {
        writes: vec![
            write("t/vm/c", Expect::Absent, Some("c")),
            write("t/vm/a", Expect::Absent, Some("again")),
        ],
        claims: vec![claim("t/vm/ip/2", "t/vm/c")],
        counters: vec![CounterDelta {
            key: b"t/count/vms".to_vec(),
            delta: 1,
            max: None,
        }],
        change: meta(),
        ..Commit::default()
    };
    match store.commit(failing).await {
        Err(CommitError::Conflict {
            key,
            current: Some(c),
        }) => {
            assert_eq!(key, b"t/vm/a");
            assert_eq!(c.revision, done.revision);
        }
        other => panic!("expected a conflict on t/vm/a, got {other:?}"),
    }
    assert_eq!(store.get(b"t/vm/c").await.unwrap(), None);
    assert_eq!(store.unique_owner(b"t/vm/ip/2").await.unwrap(), None);
    assert_eq!(store.counter(b"t/count/vms").await.unwrap(), 2);
    let twice = Commit {
        writes: vec![
            write("t/vm/d", Expect::Absent, Some("d")),
            write("t/vm/d", Expect::Absent, Some("d")),
        ],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(twice).await,
        Err(CommitError::Store(StoreError::Invalid(_)))
    ));
}

/// An object only read is a precondition like one written.
pub async fn reads_are_preconditions(store: &impl Store) {
    let flag = store.commit(put("t/vm/flag", Expect::Absent, "1")).await.unwrap();
    let guarded = |value: &str, expect| Commit {
        writes: vec![write("t/vm/x", Expect::Absent, Some(value))],
        reads: vec![
            Read {
                key: b"t/vm/flag".to_vec(),
                expect,
            },
            Read {
                key: b"t/vm/none".to_vec(),
                expect: Expect::Absent,
            },
        ],
        change: meta(),
        ..Commit::default()
    };
    let moved = store
        .commit(put("t/vm/flag", Expect::Revision(flag.revision), "2"))
        .await
        .unwrap();
    match store.commit(guarded("x", Expect::Revision(flag.revision))).await {
        Err(CommitError::Conflict {
            key,
            current: Some(c),
        }) => {
            assert_eq!(key, b"t/vm/flag");
            assert_eq!(c.revision, moved.revision);
        }
        other => panic!("expected a conflict on the read, got {other:?}"),
    }
    assert_eq!(store.get(b"t/vm/x").await.unwrap(), None);
    store
        .commit(guarded("x", Expect::Revision(moved.revision)))
        .await
        .unwrap();
}

/// Counters add up and refuse to pass their maximum.
pub async fn counters_respect_limits(store: &impl Store) {
    let step = |key: &str, delta| Commit {
        writes: vec![write(key, Expect::Absent, Some("v"))],
        counters: vec![CounterDelta {
            key: b"t/count".to_vec(),
            delta,
            max: Some(2),
        }],
        change: meta(),
        ..Commit::default()
    };
    store.commit(step("t/vm/1", 1)).await.unwrap();
    store.commit(step("t/vm/2", 1)).await.unwrap();
    match store.commit(step("t/vm/3", 1)).await {
        Err(CommitError::Limit { key, value, max }) => {
            assert_eq!((key.as_slice(), value, max), (&b"t/count"[..], 2, 2));
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    assert_eq!(store.get(b"t/vm/3").await.unwrap(), None);
    store.commit(step("t/vm/4", -1)).await.unwrap();
    assert_eq!(store.counter(b"t/count").await.unwrap(), 1);
    assert_eq!(store.counter(b"t/other").await.unwrap(), 0);
}

/// `n` concurrent commits, each creating `{key}/{i}` and adding one to the
/// counter `key` up to `max`; how many applied (the rest hit the limit).
async fn race_counter<S: Store>(store: &Arc<S>, key: &str, n: usize, max: i64) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(store);
            let c = Commit {
                writes: vec![write(&format!("{key}/{i}"), Expect::Absent, Some("v"))],
                counters: vec![CounterDelta {
                    key: key.as_bytes().to_vec(),
                    delta: 1,
                    max: Some(max),
                }],
                change: meta(),
                ..Commit::default()
            };
            tokio::spawn(async move { store.commit(c).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CommitError::Limit { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    ok
}

/// Many commits that move one counter at once (a tenant's creates under a
/// quota) all apply: contention costs time, never a failed commit.
pub async fn contended_counters_all_commit<S: Store>(store: Arc<S>) {
    assert_eq!(race_counter(&store, "t/busy", 64, 1000).await, 64);
    assert_eq!(store.counter(b"t/busy").await.unwrap(), 64);
}

/// Concurrent increments for the last places under a maximum: exactly as
/// many succeed as there are places.
pub async fn concurrent_counters_are_exact<S: Store>(store: Arc<S>) {
    let ok = race_counter(&store, "t/quota", 32, 5).await;
    assert_eq!(ok, 5);
    assert_eq!(store.counter(b"t/quota").await.unwrap(), 5);
}

fn mark(key: &str, expires_at_ms: i64, outcome: &str) -> IdempotencyMark {
    IdempotencyMark {
        key: key.as_bytes().to_vec(),
        fingerprint: b"fp".to_vec(),
        expires_at_ms,
        outcome: outcome.as_bytes().to_vec(),
    }
}

fn far_future() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    i64::try_from(now).unwrap() + 3_600_000
}

/// An idempotency record is written with the commit, and expires.
pub async fn idempotency_records_outcomes(store: &impl Store) {
    let until = far_future();
    let mut m = put("t/vm/a", Expect::Absent, "v1");
    m.idempotency = Some(mark("t/req-1", until, "outcome"));
    let c = store.commit(m).await.unwrap();
    let record = store.idempotency(b"t/req-1", until - 1).await.unwrap().unwrap();
    assert_eq!(record.revision, c.revision);
    assert_eq!(record.value, b"outcome");
    assert_eq!(record.fingerprint, b"fp");
    assert_eq!(store.idempotency(b"t/req-1", until).await.unwrap(), None);
    let mut refused = put("t/vm/a", Expect::Absent, "v2");
    refused.idempotency = Some(mark("t/req-2", until, "x"));
    assert!(store.commit(refused).await.is_err());
    assert_eq!(
        store.idempotency(b"t/req-2", 0).await.unwrap(),
        None,
        "no record for a refused commit"
    );
}

/// A second commit under one request id is refused with the first's
/// record, and writes nothing.
pub async fn request_ids_commit_once(store: &impl Store) {
    let until = far_future();
    let mut first = put("t/vm/a", Expect::Absent, "a");
    first.idempotency = Some(mark("t/req", until, "first"));
    let done = store.commit(first).await.unwrap();
    let mut second = put("t/vm/b", Expect::Absent, "b");
    second.idempotency = Some(mark("t/req", until, "second"));
    match store.commit(second).await {
        Err(CommitError::Recorded(record)) => {
            assert_eq!(record.revision, done.revision);
            assert_eq!(record.value, b"first");
        }
        other => panic!("expected the first outcome, got {other:?}"),
    }
    assert_eq!(store.get(b"t/vm/b").await.unwrap(), None);
    // An expired record is no obstacle.
    let mut old = put("t/vm/c", Expect::Absent, "c");
    old.idempotency = Some(mark("t/old", 1_000, "old"));
    store.commit(old).await.unwrap();
    let mut again = put("t/vm/d", Expect::Absent, "d");
    again.idempotency = Some(mark("t/old", until, "new"));
    store.commit(again).await.unwrap();
}

/// Blobs are stored by digest, read back whole, and immutable.
/// Statistics records are overwritten, read and deleted by key range, and
/// are neither objects nor changes.
pub async fn stats_are_ranges_outside_the_log(store: &impl Store) {
    let record = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
    assert_eq!(store.scan_stats(b"", b"~", 10).await.unwrap(), []);
    // More records than one etcd transaction holds.
    let many: Vec<_> = (0..150).map(|i| record(&format!("m/a/{i:04}"), "1")).collect();
    store.put_stats(many).await.unwrap();
    store
        .put_stats(vec![record("m/a/0001", "2"), record("m/b/0000", "3")])
        .await
        .unwrap();
    let all = store.scan_stats(b"m/", b"m0", 1000).await.unwrap();
    assert_eq!(all.len(), 151);
    assert_eq!(all[1], record("m/a/0001", "2"));
    assert_eq!(all[150], record("m/b/0000", "3"));
    // A range, and a limit across etcd's pages.
    let some = store.scan_stats(b"m/a/0010", b"m/a/0013", 1000).await.unwrap();
    let keys: Vec<_> = some
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(keys, ["m/a/0010", "m/a/0011", "m/a/0012"]);
    assert_eq!(store.scan_stats(b"m/", b"m0", 120).await.unwrap().len(), 120);
    store.delete_stats(b"m/a/", b"m/a/0149").await.unwrap();
    let left = store.scan_stats(b"m/", b"m0", 1000).await.unwrap();
    assert_eq!(left, [record("m/a/0149", "1"), record("m/b/0000", "3")]);
    assert_eq!(store.history(b"m/a/0001", 0, 10).await.unwrap(), []);
    assert_eq!(store.get(b"m/a/0149").await.unwrap(), None);
}

pub async fn blobs_round_trip(store: &impl Store) {
    assert_eq!(store.get_blob(b"d1").await.unwrap(), None);
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    store.put_blob(b"d1", big.clone()).await.unwrap();
    store.put_blob(b"d2", b"small".to_vec()).await.unwrap();
    assert_eq!(store.get_blob(b"d1").await.unwrap(), Some(big.clone()));
    assert_eq!(
        store.get_blob(b"d2").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
    store.put_blob(b"d1", big.clone()).await.unwrap();
    assert_eq!(store.get_blob(b"d1").await.unwrap(), Some(big));
}

/// The next item of a watch, within a deadline.
pub async fn next_item(stream: &mut ChangeStream) -> Result<WatchItem, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the watch delivered nothing within 10 s")
        .expect("the watch ended")
}

/// The next group of changes, skipping progress reports.
pub async fn next_changes(stream: &mut ChangeStream) -> Vec<crate::ChangeEvent> {
    loop {
        match next_item(stream).await.unwrap() {
            WatchItem::Changes(changes) => return changes,
            WatchItem::Progress(_) => {}
        }
    }
}

/// A watch delivers the prefix's commits from its start revision, one
/// item per commit, with before and after, and nothing else.
pub async fn watch_delivers_commits(store: &impl Store) {
    let first = store.commit(put("w/vm/a", Expect::Absent, "a1")).await.unwrap();
    let mut from_first = store.watch(b"w/", first.revision).await.unwrap();
    let mut live = store.watch(b"w/", 0).await.unwrap();
    store
        .commit(put("other/vm/a", Expect::Absent, "x"))
        .await
        .unwrap();
    let pair = Commit {
        writes: vec![
            write("w/vm/b", Expect::Absent, Some("b1")),
            write("w/vm/a", Expect::Revision(first.revision), Some("a2")),
        ],
        change: ChangeMeta {
            principal: "alice".into(),
            request_id: "r-1".into(),
            time_unix_ms: 7,
        },
        ..Commit::default()
    };
    let second = store.commit(pair).await.unwrap();
    let created = next_changes(&mut from_first).await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        (created[0].revision, created[0].after.as_deref()),
        (first.revision, Some(&b"a1"[..]))
    );
    for stream in [&mut from_first, &mut live] {
        let group = next_changes(stream).await;
        assert_eq!(group.len(), 2, "one commit, one item: {group:?}");
        assert_eq!(group[0].key, b"w/vm/a");
        assert_eq!(group[0].before.as_deref(), Some(&b"a1"[..]));
        assert_eq!(group[0].after.as_deref(), Some(&b"a2"[..]));
        assert_eq!(group[1].key, b"w/vm/b");
        assert_eq!(group[1].before, None);
        for change in &group {
            assert_eq!(change.revision, second.revision);
            assert_eq!(
                (change.principal.as_str(), change.request_id.as_str()),
                ("alice", "r-1")
            );
            assert_eq!(change.time_unix_ms, 7);
            assert_eq!(change.operation, "update");
        }
    }
    store.commit(delete("w/vm/b", second.revision)).await.unwrap();
    let gone = next_changes(&mut live).await;
    assert_eq!(
        (gone[0].after.as_deref(), gone[0].before.as_deref()),
        (None, Some(&b"b1"[..]))
    );
}

/// Under a write load, a watcher that resumes from its last revision + 1
/// sees every change exactly once, in order.
pub async fn watch_resumes_without_gaps<S: Store>(store: Arc<S>) {
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .commit(put(&format!("r/vm/{i:03}"), Expect::Absent, "v"))
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut next = 1;
    while seen.len() < 200 {
        let mut stream = store.watch(b"r/", next).await.unwrap();
        // Read a few, then drop the stream as a disconnecting client would.
        for _ in 0..7 {
            if seen.len() == 200 {
                break;
            }
            for change in next_changes(&mut stream).await {
                assert!(change.revision >= next, "nothing twice");
                next = change.revision + 1;
                seen.push((change.revision, change.key));
            }
        }
    }
    writer.await.unwrap();
    let keys: Vec<_> = seen.iter().map(|(_, k)| k.clone()).collect();
    let expected: Vec<_> = (0..200).map(|i| format!("r/vm/{i:03}").into_bytes()).collect();
    assert_eq!(keys, expected, "every change once, in commit order");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
}

/// An idle watch reports its progress.
pub async fn idle_watch_reports_progress(store: &impl Store) {
    let done = store.commit(put("p/vm/a", Expect::Absent, "a")).await.unwrap();
    let mut stream = store.watch(b"p/", done.revision + 1).await.unwrap();
    store.commit(put("q/vm/a", Expect::Absent, "a")).await.unwrap();
    match next_item(&mut stream).await.unwrap() {
        WatchItem::Progress(revision) => assert!(revision >= done.revision),
        other => panic!("expected progress, got {other:?}"),
    }
}

/// An object's history, newest first, pages by revision, and old versions
/// can be read back.
pub async fn history_lists_changes(store: &impl Store) {
    let mut revisions = Vec::new();
    let mut last = store.commit(put("h/vm/a", Expect::Absent, "v0")).await.unwrap();
    revisions.push(last.revision);
    for i in 1..5 {
        store
            .commit(put(&format!("h/vm/noise{i}"), Expect::Absent, "n"))
            .await
            .unwrap();
        last = store
            .commit(put("h/vm/a", Expect::Revision(last.revision), &format!("v{i}")))
            .await
            .unwrap();
        revisions.push(last.revision);
    }
    let all = store.history(b"h/vm/a", 0, 100).await.unwrap();
    let got: Vec<_> = all.iter().map(|e| e.revision).collect();
    let mut newest_first = revisions.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);
    assert_eq!(all[0].after.as_deref(), Some(&b"v4"[..]));
    assert_eq!(all[0].before.as_deref(), Some(&b"v3"[..]));
    assert_eq!(all[4].before, None);
    let page = store.history(b"h/vm/a", revisions[3], 2).await.unwrap();
    let got: Vec<_> = page.iter().map(|e| e.revision).collect();
    assert_eq!(got, [revisions[2], revisions[1]]);
    let old = store.get_at(b"h/vm/a", revisions[1]).await.unwrap().unwrap();
    assert_eq!((old.revision, old.value.as_slice()), (revisions[1], &b"v1"[..]));
    assert_eq!(store.get_at(b"h/vm/a", revisions[1] + 1).await.unwrap(), None);
    store.commit(delete("h/vm/a", last.revision)).await.unwrap();
    let after_delete = store.history(b"h/vm/a", 0, 1).await.unwrap();
    assert_eq!(after_delete[0].after, None, "a deleted object keeps its history");
    assert!(store.history(b"h/vm/none", 0, 10).await.unwrap().is_empty());
}

/// An object as it was just before a revision: absent before its create,
/// each version until the next, nothing after its delete.
pub async fn versions_before_revisions(store: &impl Store) {
    let v1 = store
        .commit(put("vb/vm/a", Expect::Absent, "v1"))
        .await
        .unwrap()
        .revision;
    let other = store
        .commit(put("vb/vm/b", Expect::Absent, "b"))
        .await
        .unwrap()
        .revision;
    let v2 = store
        .commit(put("vb/vm/a", Expect::Revision(v1), "v2"))
        .await
        .unwrap()
        .revision;
    let gone = store.commit(delete("vb/vm/a", v2)).await.unwrap().revision;
    let before = |key: &'static str, revision: u64| async move {
        store
            .version_before(key.as_bytes(), revision)
            .await
            .unwrap()
            .map(|v| (v.revision, String::from_utf8(v.value).unwrap()))
    };
    assert_eq!(before("vb/vm/a", v1).await, None, "before its create");
    assert_eq!(before("vb/vm/a", other).await, Some((v1, "v1".into())));
    assert_eq!(before("vb/vm/a", v2).await, Some((v1, "v1".into())));
    assert_eq!(before("vb/vm/a", gone).await, Some((v2, "v2".into())));
    assert_eq!(before("vb/vm/a", gone + 1).await, None, "after its delete");
    assert_eq!(before("vb/vm/b", other).await, None);
    assert_eq!(
        before("vb/vm/b", gone).await,
        Some((other, "b".into())),
        "unchanged since"
    );
    assert_eq!(before("vb/vm/none", gone).await, None);
}

/// Compaction forgets old changes: a watch or read from before it fails
/// with the oldest retained revision, one from after it works.
pub async fn compaction_bounds_history(store: &impl Store) {
    let old = store.commit(put("c/vm/a", Expect::Absent, "v1")).await.unwrap();
    let newer = store
        .commit(put("c/vm/a", Expect::Revision(old.revision), "v2"))
        .await
        .unwrap();
    let now = far_future() - 3_600_000;
    let oldest = store.compact(now + 1, now).await.unwrap();
    assert!(oldest > old.revision, "oldest {oldest} after {}", old.revision);
    match store.watch(b"c/", old.revision).await {
        Err(StoreError::Compacted { requested, oldest: o }) => {
            assert_eq!((requested, o), (old.revision, oldest));
        }
        Err(e) => panic!("expected compacted, got {e:?}"),
        Ok(_) => panic!("expected compacted, got a stream"),
    }
    assert!(matches!(
        store.get_at(b"c/vm/a", old.revision).await,
        Err(StoreError::Compacted { .. })
    ));
    let current = store.get(b"c/vm/a").await.unwrap().unwrap();
    assert_eq!(current.revision, newer.revision, "compaction keeps the objects");
    // Before the newer version: the older one, whose change is gone. A
    // backend that keeps a change's previous value with it (RocksDB) still
    // has it, without its revision; one that reads it from the compacted
    // version (etcd) says it is compacted.
    match store.version_before(b"c/vm/a", newer.revision).await {
        Ok(Some(v)) => assert_eq!((v.revision, v.value.as_slice()), (0, &b"v1"[..])),
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("expected v1 or compacted, got {other:?}"),
    }
    let since = store.version_before(b"c/vm/a", newer.revision + 1).await.unwrap();
    assert_eq!(since.map(|v| v.revision), Some(newer.revision), "unchanged since");
    let mut stream = store.watch(b"c/", oldest).await.unwrap();
    let later = store
        .commit(put("c/vm/a", Expect::Revision(newer.revision), "v3"))
        .await
        .unwrap();
    let changes = next_changes(&mut stream).await;
    assert_eq!(changes.last().map(|c| c.revision), Some(later.revision));
}
