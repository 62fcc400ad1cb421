//! What a policy's `lookup` import reads (`arbiter:policy@0.2.0`), and how
//! those reads become preconditions of the commit.
//!
//! A lookup reads an object of the request's tenant: from the request's
//! stage when an earlier operation of the same transaction touched it,
//! otherwise from the store, noting the revision it found (or that it found
//! nothing). The commit then holds only if every object the policies read
//! from the store is still as they read it; if one moved, a write without
//! an etag is staged and judged again on the new state, and one with an
//! etag fails with `ABORTED`. So a rule such as "at most one VM labelled
//! `primary=true`" holds under concurrent writes: two requests can not both
//! be judged on a state that one of them changes.

use std::sync::{Arc, Mutex};

use arbiter_api::v1::{Prompt, User, VirtualMachine};
use arbiter_store::{Store, StoreError, Versioned};

use crate::error::Error;
use crate::names;
use crate::policy::{BoxFuture, Fault, FaultKind, Lookup, Object};
use crate::stage::{Codec, Stage};

/// What one lookup read from the store: the object's key and revision,
/// `None` when it was absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Looked {
    pub(crate) key: Vec<u8>,
    pub(crate) revision: Option<u64>,
}

/// The codec of the kind whose collection is `collection`, if policies may
/// look objects of it up.
pub(crate) fn judged_codec(collection: &str) -> Option<Codec> {
    [
        Codec::of::<VirtualMachine>(),
        Codec::of::<User>(),
        Codec::of::<Prompt>(),
    ]
    .into_iter()
    .find(|c| c.kind.collection == collection)
}

/// The lookups of one operation's evaluations.
pub(crate) struct StoreLookup<S> {
    store: Arc<S>,
    tenant: String,
    /// The objects the stage holds, as the operations before left them
    /// (`None`: deleted), with their codecs.
    staged: Vec<(Vec<u8>, Option<Versioned>, Codec)>,
    /// Read the objects as they were just before this revision, not as
    /// they are (a preview's replay of a past change).
    before: Option<u64>,
    reads: Mutex<Vec<Looked>>,
}

impl<S: Store> StoreLookup<S> {
    /// Lookups for an operation of `tenant` staged on `stage`.
    pub(crate) fn new(store: Arc<S>, tenant: &str, stage: &Stage) -> Self {
        Self {
            store,
            tenant: tenant.to_string(),
            staged: stage
                .objects
                .iter()
                .filter(|s| s.tenant == tenant)
                .map(|s| (s.key.clone(), s.version(), s.codec))
                .collect(),
            before: None,
            reads: Mutex::new(Vec::new()),
        }
    }

    /// These lookups read the objects as they were just before `revision`
    /// was committed.
    pub(crate) fn before(mut self, revision: u64) -> Self {
        self.before = Some(revision);
        self
    }

    /// What the lookups read from the store, each object once.
    pub(crate) fn take_reads(&self) -> Vec<Looked> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, looked: Looked) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        if !reads.iter().any(|r| r.key == looked.key) {
            reads.push(looked);
        }
    }
}

fn unreadable(name: &str, e: impl std::fmt::Display) -> Fault {
    tracing::error!(error = %e, name, "a policy's lookup could not read the store");
    Fault::new(
        FaultKind::Unavailable,
        format!("its lookup of {name} could not read the store"),
    )
}

impl<S: Store> StoreLookup<S> {
    async fn read(&self, name: &str) -> Result<Option<Object>, Fault> {
        let Some(codec) = name.split('/').nth(2).and_then(judged_codec) else {
            return Ok(None);
        };
        let Ok(parsed) = names::parse_name("name", codec.kind, name) else {
            return Ok(None);
        };
        if parsed.tenant != self.tenant {
            return Ok(None);
        }
        let key = parsed.key(codec.kind);
        let object = |v: &Versioned| (codec.object)(&key, v).map_err(|e: Error| unreadable(name, e));
        if let Some((_, version, _)) = self.staged.iter().find(|(k, ..)| *k == key) {
            return version.as_ref().map(object).transpose();
        }
        let stored = match self.before {
            None => self.store.get(&key).await,
            Some(revision) => self.store.version_before(&key, revision).await,
        };
        let stored = stored.map_err(|e| match e {
            StoreError::Compacted { .. } => Fault::new(
                FaultKind::Unavailable,
                format!(
                    "the change log no longer holds what {name} was before revision {}",
                    self.before.unwrap_or_default()
                ),
            ),
            e => unreadable(name, e),
        })?;
        self.record(Looked {
            key: key.clone(),
            revision: stored.as_ref().map(|v| v.revision),
        });
        stored.as_ref().map(object).transpose()
    }
}

impl<S: Store> Lookup for StoreLookup<S> {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Object>, Fault>> {
        Box::pin(self.read(name))
    }
}
