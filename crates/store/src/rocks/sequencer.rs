//! The single writer of the RocksDB engine: checks commits against the
//! stored state plus the batch so far, assigns revisions, writes a batch
//! with one synced WAL write, then answers and publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use super::{
    CF_COUNTERS, CF_HISTORY, CF_LOG, CF_META, CF_OBJECTS, CF_REQUESTS, CF_UNIQUE, REVISION_KEY, RocksOptions,
    Shared, encode_object, engine, history_key, log_key,
};
use crate::{ChangeEvent, Commit, CommitError, Committed, Expect, IdempotencyRecord, StoreError, Versioned};

/// A commit waiting for the sequencer.
pub(crate) struct Pending {
    pub(crate) commit: Commit,
    pub(crate) reply: oneshot::Sender<Result<Committed, CommitError>>,
}

/// The single writer. Owns the revision counter.
pub(crate) struct Sequencer {
    shared: Arc<Shared>,
    options: RocksOptions,
}

/// The state of keys touched earlier in the batch being built.
#[derive(Default)]
struct Overlay {
    objects: HashMap<Vec<u8>, Option<Versioned>>,
    unique: HashMap<Vec<u8>, Option<Vec<u8>>>,
    counters: HashMap<Vec<u8>, i64>,
    requests: HashMap<Vec<u8>, IdempotencyRecord>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl Sequencer {
    pub(crate) fn new(shared: Arc<Shared>, options: RocksOptions) -> Self {
        Self { shared, options }
    }

    pub(crate) fn run(self, mut rx: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.options.max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
    }

    fn commit_batch(&self, batch: &mut Vec<Pending>) {
        let results = match self.apply(batch) {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "commit batch failed");
                batch.iter().map(|_| Err(CommitError::Store(e.clone()))).collect()
            }
        };
        for (pending, result) in batch.drain(..).zip(results) {
            // The caller may have given up waiting; its write stands anyway.
            let _ = pending.reply.send(result);
        }
    }

    /// Checks and writes a batch; returns one result per commit.
    fn apply(&self, batch: &[Pending]) -> Result<Vec<Result<Committed, CommitError>>, StoreError> {
        let mut overlay = Overlay::default();
        let mut write = WriteBatch::default();
        let mut events = Vec::new();
        let mut revision = self.shared.revision.load(Ordering::Acquire);
        let now = now_ms();
        let mut results = Vec::with_capacity(batch.len());
        for Pending { commit, .. } in batch {
            let currents = match self.check(&overlay, commit, now) {
                Ok(currents) => currents,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            revision += 1;
            self.stage(&mut overlay, &mut write, &mut events, commit, currents, revision)?;
            results.push(Ok(Committed { revision }));
        }
        if write.is_empty() {
            return Ok(results);
        }
        write.put_cf(self.shared.cf(CF_META)?, REVISION_KEY, revision.to_be_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(self.options.fsync);
        let started = std::time::Instant::now();
        if let Err(e) = self.shared.db.write_opt(write, &opts) {
            let e = engine(e);
            *self
                .shared
                .write_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            return Err(e);
        }
        *self
            .shared
            .write_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        metrics::histogram!("arbiter_store_sync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("arbiter_store_commit_batch_size").record(batch.len() as f64);
        self.shared.revision.store(revision, Ordering::Release);
        // No watcher: nothing to do. A full feed drops its oldest batch and
        // the watcher that missed it re-reads the log.
        let _ = self.shared.feed.send(Arc::new(events));
        Ok(results)
    }

    /// Adds a checked commit to the write batch and the overlay.
    fn stage(
        &self,
        overlay: &mut Overlay,
        write: &mut WriteBatch,
        events: &mut Vec<ChangeEvent>,
        commit: &Commit,
        currents: Vec<Option<Versioned>>,
        revision: u64,
    ) -> Result<(), StoreError> {
        let shared = &self.shared;
        let (objects, unique, counters) = (
            shared.cf(CF_OBJECTS)?,
            shared.cf(CF_UNIQUE)?,
            shared.cf(CF_COUNTERS)?,
        );
        let (log, history, requests) = (
            shared.cf(CF_LOG)?,
            shared.cf(CF_HISTORY)?,
            shared.cf(CF_REQUESTS)?,
        );
        let mut order: Vec<usize> = (0..commit.writes.len()).collect();
        order.sort_by(|a, b| commit.writes[*a].key.cmp(&commit.writes[*b].key));
        for (index, &i) in order.iter().enumerate() {
            let w = &commit.writes[i];
            let index = u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes();
            match &w.value {
                Some(value) => write.put_cf(objects, &w.key, encode_object(revision, value)),
                None => write.delete_cf(objects, &w.key),
            }
            let event = ChangeEvent {
                revision,
                key: w.key.clone(),
                before: currents[i].as_ref().map(|c| c.value.clone()),
                after: w.value.clone(),
                principal: commit.change.principal.clone(),
                request_id: commit.change.request_id.clone(),
                time_unix_ms: commit.change.time_unix_ms,
                operation: w.operation.clone(),
            };
            write.put_cf(log, log_key(revision, &index), event.encode_to_vec());
            write.put_cf(history, history_key(&w.key, revision), index);
            events.push(event);
            let stored = w.value.as_ref().map(|value| Versioned {
                revision,
                value: value.clone(),
            });
            overlay.objects.insert(w.key.clone(), stored);
        }
        for key in &commit.releases {
            write.delete_cf(unique, key);
            overlay.unique.insert(key.clone(), None);
        }
        for claim in &commit.claims {
            write.put_cf(unique, &claim.key, &claim.owner);
            overlay
                .unique
                .insert(claim.key.clone(), Some(claim.owner.clone()));
        }
        for c in &commit.counters {
            let value = self.counter(overlay, &c.key)?.saturating_add(c.delta);
            write.put_cf(counters, &c.key, value.to_be_bytes());
            overlay.counters.insert(c.key.clone(), value);
        }
        if let Some(mark) = &commit.idempotency {
            let record = IdempotencyRecord {
                fingerprint: mark.fingerprint.clone(),
                revision,
                value: mark.outcome.clone(),
                expires_at_ms: mark.expires_at_ms,
            };
            write.put_cf(requests, &mark.key, record.encode_to_vec());
            overlay.requests.insert(mark.key.clone(), record);
        }
        Ok(())
    }

    fn object(&self, overlay: &Overlay, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        match overlay.objects.get(key) {
            Some(seen) => Ok(seen.clone()),
            None => self.shared.object(key),
        }
    }

    fn counter(&self, overlay: &Overlay, key: &[u8]) -> Result<i64, StoreError> {
        match overlay.counters.get(key) {
            Some(value) => Ok(*value),
            None => self.shared.counter(key),
        }
    }

    /// Checks every precondition of a commit; returns the current version
    /// of each object it writes.
    fn check(&self, overlay: &Overlay, c: &Commit, now: i64) -> Result<Vec<Option<Versioned>>, CommitError> {
        if let Some(mark) = &c.idempotency {
            let record = match overlay.requests.get(&mark.key) {
                Some(seen) => Some(seen.clone()),
                None => self.shared.request(&mark.key)?,
            };
            if let Some(record) = record.filter(|r| r.expires_at_ms > now) {
                return Err(CommitError::Recorded(record));
            }
        }
        let expected = |key: &[u8], expect: Expect| -> Result<Option<Versioned>, CommitError> {
            let current = self.object(overlay, key)?;
            let matches = match (expect, &current) {
                (Expect::Absent, None) => true,
                (Expect::Revision(want), Some(have)) => have.revision == want,
                (Expect::Any, _) => true,
                _ => false,
            };
            if matches {
                Ok(current)
            } else {
                Err(CommitError::Conflict {
                    key: key.to_vec(),
                    current,
                })
            }
        };
        let currents = c
            .writes
            .iter()
            .map(|w| expected(&w.key, w.expect))
            .collect::<Result<Vec<_>, _>>()?;
        for r in &c.reads {
            expected(&r.key, r.expect)?;
        }
        for claim in &c.claims {
            if c.releases.contains(&claim.key) {
                continue;
            }
            let owner = match overlay.unique.get(&claim.key) {
                Some(seen) => seen.clone(),
                None => self
                    .shared
                    .db
                    .get_cf(self.shared.cf(CF_UNIQUE)?, &claim.key)
                    .map_err(engine)?,
            };
            if let Some(owner) = owner {
                return Err(CommitError::Taken {
                    key: claim.key.clone(),
                    owner,
                });
            }
        }
        for counter in &c.counters {
            let (Some(max), true) = (counter.max, counter.delta > 0) else {
                continue;
            };
            let value = self.counter(overlay, &counter.key)?;
            if value.saturating_add(counter.delta) > max {
                return Err(CommitError::Limit {
                    key: counter.key.clone(),
                    value,
                    max,
                });
            }
        }
        Ok(currents)
    }
}
