//! Request ids (AIP-155): a retried mutation gets the first outcome, a
//! reused id is refused, and an id still in flight is `ABORTED`. The
//! outcome is recorded by the commit itself, so a retry on any replica
//! sees it.

use std::collections::HashSet;
use std::sync::Mutex;

use arbiter_store::{IdempotencyMark, IdempotencyRecord, Store, Versioned};

use crate::engine::{Engine, decode, now};
use crate::error::Error;
use crate::kind::Resource;
use crate::names::Name;
use crate::requests::RequestId;

/// The request ids this replica is working on.
#[derive(Debug, Default)]
pub(crate) struct Inflight(Mutex<HashSet<Vec<u8>>>);

/// The outcome of the idempotency check.
pub(crate) enum Begin<'a> {
    /// The request was committed before: answer with its outcome.
    Replay(IdempotencyRecord),
    /// A new request, with the mark its commit records (none without a
    /// request id) and its place among the requests in flight.
    Fresh(Option<IdempotencyMark>, Option<InflightGuard<'a>>),
}

/// Marks a request id in flight until dropped.
pub(crate) struct InflightGuard<'a> {
    set: &'a Inflight,
    key: Vec<u8>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}

impl<S: Store> Engine<S> {
    /// Looks up a request id: a finished request is replayed, a running one
    /// is refused, a new one is marked in flight.
    pub(crate) async fn begin(
        &self,
        tenant: &str,
        request_id: &RequestId,
        validate_only: bool,
    ) -> Result<Begin<'_>, Error> {
        if request_id.id.is_empty() || validate_only {
            return Ok(Begin::Fresh(None, None));
        }
        let key = format!("{tenant}/{}", request_id.id).into_bytes();
        if let Some(record) = self.recorded(&key, request_id).await? {
            return Ok(Begin::Replay(record));
        }
        let inserted = self
            .inflight
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.clone());
        if !inserted {
            return Err(Error::RequestInProgress {
                request_id: request_id.id.clone(),
            });
        }
        let guard = InflightGuard {
            set: &self.inflight,
            key: key.clone(),
        };
        // The first request may have finished between the lookup and the mark.
        if let Some(record) = self.recorded(&key, request_id).await? {
            return Ok(Begin::Replay(record));
        }
        let (ms, _) = now();
        let ttl = i64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(i64::MAX);
        let mark = IdempotencyMark {
            key,
            fingerprint: request_id.fingerprint.clone(),
            expires_at_ms: ms.saturating_add(ttl),
            outcome: Vec::new(),
        };
        Ok(Begin::Fresh(Some(mark), Some(guard)))
    }

    async fn recorded(&self, key: &[u8], request_id: &RequestId) -> Result<Option<IdempotencyRecord>, Error> {
        let (ms, _) = now();
        let record = self
            .store
            .idempotency(key, ms)
            .await
            .map_err(|e| Error::storage("reading a request record", e))?;
        match record {
            Some(r) if r.fingerprint != request_id.fingerprint => Err(Error::RequestIdReused {
                request_id: request_id.id.clone(),
            }),
            other => Ok(other),
        }
    }
}

/// Refuses a record of another request under the same id.
pub(crate) fn check_fingerprint(request_id: &RequestId, record: &IdempotencyRecord) -> Result<(), Error> {
    if record.fingerprint == request_id.fingerprint {
        Ok(())
    } else {
        Err(Error::RequestIdReused {
            request_id: request_id.id.clone(),
        })
    }
}

/// The resource a recorded request answered with.
pub(crate) fn replayed<R: Resource>(name: &Name, record: &IdempotencyRecord) -> Result<R, Error> {
    let stored = Versioned {
        revision: record.revision,
        value: record.value.clone(),
    };
    decode::<R>(&name.key(R::KIND), &stored)
}
