//! Engine behaviour that needs control over timing: a store whose commits
//! wait at a gate makes "in flight" and "moved underneath" deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arbiter_api::v1::VirtualMachine;
use arbiter_core::{Caller, CreateRequest, Engine, EngineConfig, Error, RequestId, Role, UpdateRequest};
use arbiter_store::{
    ChangeEvent, ChangeStream, Commit, CommitError, Committed, IdempotencyRecord, RocksOptions, RocksStore,
    Scan, Store, StoreError, Versioned,
};
use std::sync::Mutex;

use tokio::sync::{Notify, oneshot};

/// A RocksDB store that can hold the next commit until released.
struct Gated {
    inner: RocksStore,
    hold: Mutex<Option<oneshot::Receiver<()>>>,
    arrived: Notify,
}

impl Gated {
    /// Holds the next commit; it proceeds when the returned sender fires.
    fn hold_next(&self) -> oneshot::Sender<()> {
        let (release, held) = oneshot::channel();
        *self.hold.lock().unwrap() = Some(held);
        release
    }
}

impl Store for Gated {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<Versioned>, StoreError> {
        self.inner.get_at(key, revision).await
    }
    async fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> Result<u64, StoreError> {
        self.inner.scan(prefix, start_after, visit).await
    }
    async fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> Result<(), StoreError> {
        self.inner.scan_unique(prefix, visit).await
    }
    async fn unique_owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.unique_owner(key).await
    }
    async fn counter(&self, key: &[u8]) -> Result<i64, StoreError> {
        self.inner.counter(key).await
    }
    async fn idempotency(&self, key: &[u8], now: i64) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency(key, now).await
    }
    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        let held = self.hold.lock().unwrap().take();
        if let Some(held) = held {
            self.arrived.notify_one();
            let _ = held.await;
        }
        self.inner.commit(commit).await
    }
    async fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put_blob(digest, bytes).await
    }
    async fn get_blob(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(digest).await
    }
    async fn put_stats(&self, records: arbiter_store::StatsRecords) -> Result<(), StoreError> {
        self.inner.put_stats(records).await
    }
    async fn scan_stats(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<arbiter_store::StatsRecords, StoreError> {
        self.inner.scan_stats(from, to, limit).await
    }
    async fn delete_stats(&self, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        self.inner.delete_stats(from, to).await
    }
    async fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision().await
    }
    async fn watch(&self, prefix: &[u8], start: u64) -> Result<ChangeStream, StoreError> {
        self.inner.watch(prefix, start).await
    }
    async fn history(&self, key: &[u8], before: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.inner.history(key, before, limit).await
    }
    async fn compact(&self, cutoff: i64, now: i64) -> Result<u64, StoreError> {
        self.inner.compact(cutoff, now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

fn setup() -> (tempfile::TempDir, Arc<Engine<Gated>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Gated {
        inner: RocksStore::open(dir.path(), RocksOptions::default()).unwrap(),
        hold: Mutex::new(None),
        arrived: Notify::new(),
    };
    (
        dir,
        Arc::new(Engine::new(Arc::new(store), EngineConfig::default())),
    )
}

fn alice() -> Caller {
    Caller {
        principal: "alice".into(),
        tenant: "acme".into(),
        role: Role::Editor,
    }
}

fn create(id: &str, request_id: RequestId) -> CreateRequest<VirtualMachine> {
    CreateRequest {
        parent: "tenants/acme".into(),
        id: id.into(),
        resource: VirtualMachine {
            region: "us-east1".into(),
            machine_type: "e2-small".into(),
            image: "debian-12".into(),
            ..Default::default()
        },
        request_id,
        validate_only: false,
    }
}

fn label_update(name: &str, key: &str, etag: &str) -> UpdateRequest<VirtualMachine> {
    UpdateRequest {
        resource: VirtualMachine {
            name: name.into(),
            etag: etag.into(),
            labels: [(key.to_string(), "yes".to_string())].into(),
            ..Default::default()
        },
        update_mask: vec![format!("labels.{key}")],
        request_id: RequestId::default(),
        validate_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_request_in_flight_is_refused_then_replayed() {
    let (_dir, engine) = setup();
    let release = engine.store().hold_next();
    let id = RequestId::new("7d3f4c7e-2f59-4c0b-9a49-3b1c1f7f2a10", "create", b"same");
    let first = tokio::spawn({
        let engine = Arc::clone(&engine);
        let id = id.clone();
        async move { engine.create(&alice(), create("web-1", id)).await }
    });
    engine.store().arrived.notified().await;
    let refused = engine
        .create(&alice(), create("web-1", id.clone()))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::RequestInProgress { .. }), "{refused:?}");
    release.send(()).unwrap();
    let created = first.await.unwrap().unwrap();
    let replayed = engine.create(&alice(), create("web-1", id)).await.unwrap();
    assert_eq!(created, replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_etag_is_reevaluated_when_the_object_moves() {
    let (_dir, engine) = setup();
    let vm = engine
        .create(&alice(), create("web-1", RequestId::default()))
        .await
        .unwrap();
    let release = engine.store().hold_next();
    let slow = tokio::spawn({
        let engine = Arc::clone(&engine);
        let name = vm.name.clone();
        async move { engine.update(&alice(), label_update(&name, "slow", "")).await }
    });
    // The slow update has read the VM and waits to commit; another commits first.
    engine.store().arrived.notified().await;
    let fast = engine
        .update(&alice(), label_update(&vm.name, "fast", ""))
        .await
        .unwrap();
    release.send(()).unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert!(slow.revision > fast.revision);
    assert_eq!(
        slow.labels.keys().collect::<Vec<_>>(),
        ["fast", "slow"],
        "re-evaluated on the new version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_stale_etag_is_aborted_not_reevaluated() {
    let (_dir, engine) = setup();
    let vm = engine
        .create(&alice(), create("web-1", RequestId::default()))
        .await
        .unwrap();
    engine
        .update(&alice(), label_update(&vm.name, "first", ""))
        .await
        .unwrap();
    let err = engine
        .update(&alice(), label_update(&vm.name, "second", &vm.etag))
        .await
        .unwrap_err();
    match err {
        Error::EtagMismatch {
            expected, current, ..
        } => {
            assert_eq!(expected, vm.etag);
            assert_ne!(current.etag, vm.etag);
            assert_eq!(current.updated_by, "alice");
        }
        other => panic!("expected an etag mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn the_change_log_records_who_did_what() {
    let (_dir, engine) = setup();
    let id = RequestId::new("0b6f4b3e-5c8e-4f3a-9d55-2c1f0f3b8a11", "create", b"x");
    let vm = engine.create(&alice(), create("web-1", id)).await.unwrap();
    let events = engine.store().inner.changes(0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].revision, vm.revision);
    assert_eq!(events[0].principal, "alice");
    assert_eq!(events[0].request_id, "0b6f4b3e-5c8e-4f3a-9d55-2c1f0f3b8a11");
    assert!(events[0].before.is_none() && events[0].after.is_some());
    assert!(engine.check_consistency().await.unwrap().is_empty());
}
