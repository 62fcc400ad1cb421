//! [`AnyStore`]: the engine chosen at start-up, behind one type, so that
//! the server is compiled once for both.

use crate::{
    ChangeEvent, ChangeStream, Commit, CommitError, Committed, EtcdStore, IdempotencyRecord, RocksStore,
    Scan, StatsRecords, Store, StoreError, Versioned,
};

/// Either storage engine.
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded RocksDB engine.
    Rocks(RocksStore),
    /// The etcd engine (boxed: its client is large).
    Etcd(Box<EtcdStore>),
}

/// Calls the same method on whichever engine this is.
macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Rocks($store) => $call,
            AnyStore::Etcd($store) => $call,
        }
    };
}

impl AnyStore {
    /// The engine's name, for logs and metrics.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Rocks(_) => "rocksdb",
            Self::Etcd(_) => "etcd",
        }
    }
}

impl Store for AnyStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        each!(self, s => s.get(key).await)
    }

    async fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<Versioned>, StoreError> {
        each!(self, s => s.get_at(key, revision).await)
    }

    async fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> Result<u64, StoreError> {
        each!(self, s => s.scan(prefix, start_after, visit).await)
    }

    async fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> Result<(), StoreError> {
        each!(self, s => s.scan_unique(prefix, visit).await)
    }

    async fn unique_owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        each!(self, s => s.unique_owner(key).await)
    }

    async fn counter(&self, key: &[u8]) -> Result<i64, StoreError> {
        each!(self, s => s.counter(key).await)
    }

    async fn idempotency(
        &self,
        key: &[u8],
        now_unix_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        each!(self, s => s.idempotency(key, now_unix_ms).await)
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        each!(self, s => s.commit(commit).await)
    }

    async fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> Result<(), StoreError> {
        each!(self, s => s.put_blob(digest, bytes).await)
    }

    async fn get_blob(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        each!(self, s => s.get_blob(digest).await)
    }

    async fn put_stats(&self, records: StatsRecords) -> Result<(), StoreError> {
        each!(self, s => s.put_stats(records).await)
    }

    async fn scan_stats(&self, from: &[u8], to: &[u8], limit: usize) -> Result<StatsRecords, StoreError> {
        each!(self, s => s.scan_stats(from, to, limit).await)
    }

    async fn delete_stats(&self, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        each!(self, s => s.delete_stats(from, to).await)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        each!(self, s => s.revision().await)
    }

    async fn watch(&self, prefix: &[u8], start: u64) -> Result<ChangeStream, StoreError> {
        each!(self, s => s.watch(prefix, start).await)
    }

    async fn history(&self, key: &[u8], before: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        each!(self, s => s.history(key, before, limit).await)
    }

    async fn version_before(&self, key: &[u8], revision: u64) -> Result<Option<Versioned>, StoreError> {
        each!(self, s => s.version_before(key, revision).await)
    }

    async fn compact(&self, cutoff_unix_ms: i64, now_unix_ms: i64) -> Result<u64, StoreError> {
        each!(self, s => s.compact(cutoff_unix_ms, now_unix_ms).await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        each!(self, s => s.ping().await)
    }
}
