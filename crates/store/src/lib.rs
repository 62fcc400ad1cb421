//! Arbiter's storage layer: a small key-value contract that the resource
//! engine in `arbiter-core` builds on, and its two engines.
//!
//! # Layout
//! - [`Store`]: the trait every backend implements. Reads are direct; every
//!   write is one [`Commit`]: conditional writes of any number of objects,
//!   preconditions on objects it only read, unique keys claimed and
//!   released, counters moved and an idempotency record, all or nothing at
//!   one revision. Every commit is kept in the change log, which
//!   [`Store::watch`] follows and [`Store::history`] reads per object.
//! - [`rocks`]: the embedded RocksDB engine. One sequencer thread applies
//!   commits in batches (group commit) with one global revision counter and
//!   a synced WAL.
//! - [`etcd`]: the engine on an etcd cluster, so that several replicas
//!   serve as one. Each commit is one etcd transaction; revisions are
//!   etcd's.
//! - [`any`]: [`AnyStore`], either engine behind one type.
//! - [`model`]: the records the engines persist (change events,
//!   idempotency records).
//!
//! Keys are opaque bytes here; `arbiter-core` decides their shape. They
//! never contain a NUL byte.

pub mod any;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod etcd;
pub mod model;
pub mod rocks;
#[cfg(feature = "conformance")]
pub mod testing;

use std::future::Future;
use std::pin::Pin;

use futures::Stream;

pub use any::AnyStore;
pub use etcd::{EtcdOptions, EtcdStore};
pub use model::{ChangeEvent, IdempotencyRecord};
pub use rocks::{RocksOptions, RocksStore};

/// A value with the revision of the write that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Revision of the last write of this key.
    pub revision: u64,
    /// The stored bytes.
    pub value: Vec<u8>,
}

/// What an object must look like for a [`Commit`] to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (create).
    Absent,
    /// The key must exist at exactly this revision.
    Revision(u64),
    /// Whatever the key holds (a blind write, e.g. of a marker that
    /// watchers follow).
    Any,
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
    /// What to answer a retry with (the caller's encoding).
    pub outcome: Vec<u8>,
}

impl IdempotencyMark {
    /// The mark with the outcome a retry gets.
    pub fn with_outcome(mut self, outcome: Vec<u8>) -> Self {
        self.outcome = outcome;
        self
    }
}

/// A conditional write of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The object's key.
    pub key: Vec<u8>,
    /// The precondition on the object.
    pub expect: Expect,
    /// The new value; `None` deletes the object.
    pub value: Option<Vec<u8>>,
    /// What the change was ("create", "update", "start", ...), for the log.
    pub operation: String,
}

/// A precondition on an object the commit reads but does not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The object's key.
    pub key: Vec<u8>,
    /// What it must still look like.
    pub expect: Expect,
}

/// A unique key taken by an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The unique key; it must be free, or released by the same commit.
    pub key: Vec<u8>,
    /// The key of the object that holds it afterwards.
    pub owner: Vec<u8>,
}

/// A change of a counter (e.g. the number of a tenant's VMs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDelta {
    /// The counter's key.
    pub key: Vec<u8>,
    /// How much to add; negative to subtract.
    pub delta: i64,
    /// The commit fails with [`CommitError::Limit`] if an increase would
    /// take the counter above this.
    pub max: Option<i64>,
}

/// One atomic commit: everything in it applies at one revision, or nothing
/// does. Each object key is written at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// The objects written.
    pub writes: Vec<Write>,
    /// Objects read and relied on.
    pub reads: Vec<Read>,
    /// Unique keys taken.
    pub claims: Vec<Claim>,
    /// Unique keys given up.
    pub releases: Vec<Vec<u8>>,
    /// Counters moved.
    pub counters: Vec<CounterDelta>,
    /// Who and when, for the change log.
    pub change: ChangeMeta,
    /// Record the outcome under this request id. The record must not
    /// exist yet: a second commit under one id fails with
    /// [`CommitError::Recorded`], whichever replica sends it.
    pub idempotency: Option<IdempotencyMark>,
}

impl Commit {
    /// A commit of one write.
    pub fn of(write: Write, change: ChangeMeta) -> Self {
        Self {
            writes: vec![write],
            change,
            ..Self::default()
        }
    }

    /// Checks the shape of the commit: no object key written twice or both
    /// read and written, no unique key claimed twice.
    pub fn check_shape(&self) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        for key in self
            .writes
            .iter()
            .map(|w| &w.key)
            .chain(self.reads.iter().map(|r| &r.key))
        {
            if !seen.insert(key) {
                return Err(StoreError::Invalid(format!(
                    "object {} appears twice in one commit",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        let mut claimed = std::collections::HashSet::new();
        for claim in &self.claims {
            if !claimed.insert(&claim.key) {
                return Err(StoreError::Invalid(format!(
                    "unique key {} is claimed twice in one commit",
                    String::from_utf8_lossy(&claim.key)
                )));
            }
        }
        let mut counted = std::collections::HashSet::new();
        for counter in &self.counters {
            if !counted.insert(&counter.key) {
                return Err(StoreError::Invalid(format!(
                    "counter {} moves twice in one commit",
                    String::from_utf8_lossy(&counter.key)
                )));
            }
        }
        Ok(())
    }
}

/// A successful commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The revision assigned to the commit.
    pub revision: u64,
}

/// Why a commit did not apply.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommitError {
    /// An object was not as expected; `current` is what is stored now.
    #[error("object {} is not at the expected revision", String::from_utf8_lossy(.key))]
    Conflict {
        /// The object's key.
        key: Vec<u8>,
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
    /// A counter would go above its maximum.
    #[error("counter {} is at its limit", String::from_utf8_lossy(.key))]
    Limit {
        /// The counter's key.
        key: Vec<u8>,
        /// Its value now.
        value: i64,
        /// The maximum.
        max: i64,
    },
    /// The idempotency record already exists: the request was committed.
    #[error("the request was already committed")]
    Recorded(IdempotencyRecord),
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
    /// The store cannot be reached (etcd down or partitioned away); the
    /// request may be retried later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt {
        /// The key, lossily printed.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// The revision asked for is no longer retained.
    #[error("revision {requested} is compacted; the oldest retained is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision still retained.
        oldest: u64,
    },
    /// The caller asked for something the contract does not allow.
    #[error("invalid store request: {0}")]
    Invalid(String),
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

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// Every change of one commit under the watched prefix, in key order;
    /// all share one revision.
    Changes(Vec<ChangeEvent>),
    /// Every change up to this revision has been delivered.
    Progress(u64),
}

/// How often an idle watch reports how far it has got.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A stream of changes; it ends with an error when it cannot go on.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<WatchItem, StoreError>> + Send>>;

/// Statistics records: (key, value) pairs in key order.
pub type StatsRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Most changes of one object [`Store::version_before`] walks back.
pub const VERSION_BEFORE_MAX_CHANGES: usize = 256;
/// Changes of one object read at a time by [`Store::version_before`].
const VERSION_BEFORE_PAGE: usize = 64;

/// The storage contract every backend implements.
///
/// Reads see every commit that has returned. Commits are linearizable:
/// each gets a revision higher than every earlier one, and is durable
/// before it returns.
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// Reads the version of an object that `revision` wrote, while the
    /// change log retains it; `None` if that revision did not write it.
    fn get_at(
        &self,
        key: &[u8],
        revision: u64,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;

    /// Visits objects whose key starts with `prefix`, in key order, starting
    /// after `start_after` when given, from one consistent snapshot; returns
    /// the revision of that snapshot.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Visits unique-index entries (key, owner) whose key starts with `prefix`.
    fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The object key that holds a unique key.
    fn unique_owner(&self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// A counter's value; 0 if it was never moved.
    fn counter(&self, key: &[u8]) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The unexpired idempotency record under `key`.
    fn idempotency(
        &self,
        key: &[u8],
        now_unix_ms: i64,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Applies a commit atomically and durably, or says why not.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<Committed, CommitError>> + Send;

    /// Stores `bytes` under their content digest, durably. Blobs are
    /// immutable: putting the same digest again changes nothing.
    fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The blob stored under `digest`.
    fn get_blob(&self, digest: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Writes statistics records (key → value), each overwriting what
    /// was under its key, durably. Statistics are not objects: no
    /// revision, no change log, no watch.
    fn put_stats(
        &self,
        records: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The statistics records whose keys lie in `from..to`, in key order,
    /// at most `limit` of them.
    fn scan_stats(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<StatsRecords, StoreError>> + Send;

    /// Deletes the statistics records whose keys lie in `from..to`.
    fn delete_stats(&self, from: &[u8], to: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The revision of the last commit.
    fn revision(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Follows the changes of objects under `prefix` from revision `start`
    /// on (0: from the next commit on), each exactly once, in revision
    /// order. A `start` older than the retained log fails with
    /// [`StoreError::Compacted`]. Slow readers never slow commits.
    fn watch(
        &self,
        prefix: &[u8],
        start: u64,
    ) -> impl Future<Output = Result<ChangeStream, StoreError>> + Send;

    /// The retained changes of one object, newest first, those before
    /// revision `before` (0: all), at most `limit`.
    fn history(
        &self,
        key: &[u8],
        before: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ChangeEvent>, StoreError>> + Send;

    /// The version of an object just before `revision` was committed:
    /// what a read then would have returned (`None`: absent). Read from the
    /// object and its retained changes; the version's revision is 0 when
    /// the change that wrote it is no longer retained. Fails with
    /// [`StoreError::Compacted`] when what the object was then is not
    /// retained, or lies more than [`VERSION_BEFORE_MAX_CHANGES`] changes
    /// back.
    fn version_before(
        &self,
        key: &[u8],
        revision: u64,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send {
        async move {
            // Unchanged since: as it is now.
            let current = self.get(key).await?;
            if current.as_ref().is_some_and(|c| c.revision < revision) {
                return Ok(current);
            }
            // The newest retained change before it wrote it (or deleted it).
            match self.history(key, revision, 1).await {
                Ok(mut newest) => {
                    if let Some(change) = newest.pop() {
                        return Ok(change.after.map(|value| Versioned {
                            revision: change.revision,
                            value,
                        }));
                    }
                }
                Err(StoreError::Compacted { .. }) => {}
                Err(e) => return Err(e),
            }
            // No change before it is retained: the oldest retained change
            // after it says what was there before (`None`: it created the
            // object, or the object never existed).
            let compacted = || StoreError::Compacted {
                requested: revision.saturating_sub(1),
                oldest: revision,
            };
            let mut cursor = 0;
            let mut oldest = None;
            for _ in 0..VERSION_BEFORE_MAX_CHANGES / VERSION_BEFORE_PAGE {
                let page = self.history(key, cursor, VERSION_BEFORE_PAGE).await?;
                let complete = page.len() < VERSION_BEFORE_PAGE;
                if let Some(last) = page.into_iter().next_back() {
                    cursor = last.revision;
                    oldest = Some(last);
                }
                if complete || cursor <= 1 {
                    return match oldest {
                        Some(change) if change.revision < revision => Err(compacted()),
                        Some(change) => Ok(change.before.map(|value| Versioned { revision: 0, value })),
                        None if current.is_some() => Err(compacted()),
                        None => Ok(None),
                    };
                }
            }
            Err(compacted())
        }
    }

    /// Forgets changes made before `cutoff_unix_ms` and idempotency records
    /// expired by `now_unix_ms`; returns the oldest revision still
    /// retained. Run periodically by the server.
    fn compact(
        &self,
        cutoff_unix_ms: i64,
        now_unix_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Checks that the store can serve: a cheap linearizable read.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
