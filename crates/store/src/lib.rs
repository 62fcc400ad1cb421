//! Arbiter's storage layer: a small key-value contract that the resource
//! engine in `arbiter-core` builds on, and its embedded RocksDB engine.
//!
//! # Layout
//! - [`Store`]: the trait every backend implements. Reads are direct; every
//!   write is a [`Mutation`] of one object, conditional on the object's
//!   revision, that also claims or releases unique keys and may record an
//!   idempotency outcome, all atomically.
//! - [`rocks`]: the RocksDB engine. One sequencer thread applies mutations in
//!   batches (group commit) with one global revision counter and a synced WAL.
//! - [`model`]: the records the engines persist (change events,
//!   idempotency records).
//!
//! Keys are opaque bytes here; `arbiter-core` decides their shape.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod model;
pub mod rocks;

use std::future::Future;

pub use model::{ChangeEvent, IdempotencyRecord};
pub use rocks::{RocksOptions, RocksStore};

/// A value with the global revision of the write that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Revision of the last write of this key.
    pub revision: u64,
    /// The stored bytes.
    pub value: Vec<u8>,
}

/// What the object must look like for a [`Mutation`] to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (create).
    Absent,
    /// The key must exist at exactly this revision.
    Revision(u64),
}

/// Who made a change and why, recorded in the change log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeMeta {
    /// The authenticated principal.
    pub principal: String,
    /// The client's request id, if it sent one.
    pub request_id: String,
    /// Wall-clock time of the change in Unix milliseconds.
    pub time_unix_ms: i64,
}

/// Remember the outcome of a request so that a retry returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyMark {
    /// Where the record lives (tenant and request id, chosen by the caller).
    pub key: Vec<u8>,
    /// Digest of the request, to tell a retry from a reuse of the id.
    pub fingerprint: Vec<u8>,
    /// When the record may be forgotten, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// One atomic, conditional change of one object and its unique keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// The object's key.
    pub key: Vec<u8>,
    /// The precondition on the object.
    pub expect: Expect,
    /// The new value; `None` deletes the object.
    pub value: Option<Vec<u8>>,
    /// Unique keys the object must hold afterwards; each must be free or
    /// already held by this object.
    pub claims: Vec<Vec<u8>>,
    /// Unique keys the object gives up.
    pub releases: Vec<Vec<u8>>,
    /// Who and when, for the change log.
    pub change: ChangeMeta,
    /// Record the outcome under this request id.
    pub idempotency: Option<IdempotencyMark>,
}

/// A successful commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The revision assigned to the mutation.
    pub revision: u64,
}

/// Why a mutation did not apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    /// The object was not as expected; `current` is what is stored now.
    #[error("the object is not at the expected revision")]
    Conflict {
        /// The stored object, if any.
        current: Option<Versioned>,
    },
    /// A unique key is held by another object.
    #[error("a unique key is held by another object")]
    Taken {
        /// The unique key.
        key: Vec<u8>,
        /// The key of the object that holds it.
        owner: Vec<u8>,
    },
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failure of the storage engine itself.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The engine reported an error.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt {
        /// The key, lossily printed.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// Tells a scan whether to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Visit the next entry.
    Continue,
    /// Stop here.
    Stop,
}

/// The storage contract every backend implements.
///
/// Reads see every mutation whose commit has returned. Mutations are
/// linearizable: each gets the next global revision, and a batch of them is
/// durable before any of their commits returns.
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// Visits objects whose key starts with `prefix`, in key order, starting
    /// after `start_after` when given, from one consistent snapshot.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Visits unique-index entries (key, owner) whose key starts with `prefix`.
    fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The object key that holds a unique key.
    fn unique_owner(&self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// The unexpired idempotency record under `key`.
    fn idempotency(
        &self,
        key: &[u8],
        now_unix_ms: i64,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Applies a mutation atomically and durably, or says why not.
    fn commit(&self, mutation: Mutation) -> impl Future<Output = Result<Committed, CommitError>> + Send;

    /// Stores `bytes` under their content digest, durably. Blobs are
    /// immutable: putting the same digest again changes nothing.
    fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The blob stored under `digest`.
    fn get_blob(&self, digest: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Change events after `after`, oldest first, at most `limit`.
    fn changes(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ChangeEvent>, StoreError>> + Send;

    /// The revision of the last committed mutation.
    fn revision(&self) -> u64;
}
