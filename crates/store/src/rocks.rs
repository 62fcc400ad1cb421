//! The embedded RocksDB engine.
//!
//! Column families: `objects` (key → revision ‖ value), `unique` (unique key
//! → owning object key), `log` (revision → [`ChangeEvent`]), `requests`
//! (idempotency key → [`IdempotencyRecord`]), `blobs` (content digest →
//! bytes, e.g. policy modules, kept in RocksDB's blob files) and `meta` (the
//! revision counter).
//!
//! Reads go straight to RocksDB. Writes go through one sequencer thread:
//! it takes every mutation that is waiting, checks each against the stored
//! state plus the batch so far, assigns revisions, and writes the whole
//! batch as one `WriteBatch` with a synced WAL before answering any of them
//! (group commit). So an acknowledged write survives `kill -9`, and under
//! load one fsync serves many writes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use prost::Message;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    ChangeEvent, CommitError, Committed, Expect, IdempotencyRecord, Mutation, Scan, Store, StoreError,
    Versioned,
};

const CF_OBJECTS: &str = "objects";
const CF_UNIQUE: &str = "unique";
const CF_LOG: &str = "log";
const CF_REQUESTS: &str = "requests";
const CF_META: &str = "meta";
const CF_BLOBS: &str = "blobs";
const COLUMN_FAMILIES: [&str; 6] = [CF_OBJECTS, CF_UNIQUE, CF_LOG, CF_REQUESTS, CF_META, CF_BLOBS];
const REVISION_KEY: &[u8] = b"revision";

/// Tuning of the RocksDB engine.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Sync the WAL before acknowledging a write. Only benchmarks turn this
    /// off: without it an acknowledged write can be lost on power failure.
    pub fsync: bool,
    /// Most mutations committed in one batch.
    pub max_batch: usize,
    /// Mutations that may wait for the sequencer before callers wait too.
    pub queue_depth: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            max_batch: 512,
            queue_depth: 8192,
        }
    }
}

struct Pending {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
}

/// The RocksDB store. Cheap to share behind an `Arc`; dropping the last
/// handle stops the sequencer after it has written what it accepted.
pub struct RocksStore {
    db: Arc<DB>,
    fsync: bool,
    revision: Arc<AtomicU64>,
    queue: Option<mpsc::Sender<Pending>>,
    sequencer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.db.path())
            .field("revision", &self.revision())
            .finish()
    }
}

fn engine(e: rocksdb::Error) -> StoreError {
    StoreError::Engine(e.into_string())
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

fn encode_object(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_object(key: &[u8], raw: &[u8]) -> Result<Versioned, StoreError> {
    let (head, value) = raw
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt(key, "object record shorter than its revision"))?;
    Ok(Versioned {
        revision: u64::from_be_bytes(*head),
        value: value.to_vec(),
    })
}

fn column_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == CF_BLOBS {
        // Modules are large and written once: keep them out of the LSM tree.
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(4096);
    }
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts
}

impl RocksStore {
    /// Opens (or creates) the store in `path` and starts its sequencer.
    pub fn open(path: &Path, options: RocksOptions) -> Result<Self, StoreError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, column_options(name)));
        let db = Arc::new(DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine)?);
        let revision = Arc::new(AtomicU64::new(read_revision(&db)?));
        let (queue, rx) = mpsc::channel(options.queue_depth.max(1));
        let fsync = options.fsync;
        let sequencer = Sequencer {
            db: Arc::clone(&db),
            revision: Arc::clone(&revision),
            options,
        };
        let sequencer = std::thread::Builder::new()
            .name("arbiter-sequencer".into())
            .spawn(move || sequencer.run(rx))
            .map_err(|e| StoreError::Engine(format!("cannot start the sequencer: {e}")))?;
        Ok(Self {
            db,
            fsync,
            revision,
            queue: Some(queue),
            sequencer: Some(sequencer),
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        cf(&self.db, name)
    }

    /// Deletes idempotency records that expired before `now_unix_ms`;
    /// returns how many. Run periodically by the server.
    pub fn purge_expired_requests(&self, now_unix_ms: i64) -> Result<usize, StoreError> {
        let cf = self.cf(CF_REQUESTS)?;
        let mut batch = WriteBatch::default();
        let mut purged = 0;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, raw) = item.map_err(engine)?;
            let record = IdempotencyRecord::decode(&*raw).map_err(|e| corrupt(&key, e.to_string()))?;
            if record.expires_at_ms <= now_unix_ms {
                batch.delete_cf(cf, &key);
                purged += 1;
            }
        }
        self.db.write(batch).map_err(engine)?;
        Ok(purged)
    }

    /// Stops the sequencer after it has answered everything it accepted.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.queue.take();
        if let Some(handle) = self.sequencer.take() {
            // A sequencer that panicked has nothing left to flush.
            let _ = handle.join();
        }
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Engine(format!("column family {name} is missing")))
}

fn read_revision(db: &DB) -> Result<u64, StoreError> {
    match db.get_cf(cf(db, CF_META)?, REVISION_KEY).map_err(engine)? {
        None => Ok(0),
        Some(raw) => {
            let bytes: [u8; 8] = raw
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(REVISION_KEY, "revision is not 8 bytes"))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

impl Store for RocksStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let raw = self.db.get_pinned_cf(self.cf(CF_OBJECTS)?, key).map_err(engine)?;
        raw.map(|raw| decode_object(key, &raw)).transpose()
    }

    async fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_OBJECTS)?;
        let snapshot = self.db.snapshot();
        let start = start_after.unwrap_or(prefix);
        let mode = IteratorMode::From(start, Direction::Forward);
        for item in snapshot.iterator_cf(cf, mode) {
            let (key, raw) = item.map_err(engine)?;
            if !key.starts_with(prefix) {
                break;
            }
            if Some(&*key) == start_after {
                continue;
            }
            if visit(&key, decode_object(&key, &raw)?) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    async fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_UNIQUE)?;
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (key, owner) = item.map_err(engine)?;
            if !key.starts_with(prefix) || visit(&key, &owner) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    async fn unique_owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_UNIQUE)?, key).map_err(engine)
    }

    async fn idempotency(
        &self,
        key: &[u8],
        now_unix_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(raw) = self
            .db
            .get_pinned_cf(self.cf(CF_REQUESTS)?, key)
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let record = IdempotencyRecord::decode(&*raw).map_err(|e| corrupt(key, e.to_string()))?;
        Ok((record.expires_at_ms > now_unix_ms).then_some(record))
    }

    async fn commit(&self, mutation: Mutation) -> Result<Committed, CommitError> {
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(Pending { mutation, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let cf = self.cf(CF_LOG)?;
        let start = (after + 1).to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, mode).take(limit) {
            let (key, raw) = item.map_err(engine)?;
            out.push(ChangeEvent::decode(&*raw).map_err(|e| corrupt(&key, e.to_string()))?);
        }
        Ok(out)
    }

    async fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> Result<(), StoreError> {
        let db = Arc::clone(&self.db);
        let digest = digest.to_vec();
        let fsync = self.fsync;
        let write = move || {
            let mut opts = WriteOptions::default();
            opts.set_sync(fsync);
            db.put_cf_opt(cf(&db, CF_BLOBS)?, digest, bytes, &opts)
                .map_err(engine)
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StoreError::Engine(format!("the blob writer failed: {e}")))?
    }

    async fn get_blob(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_BLOBS)?, digest).map_err(engine)
    }

    fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }
}

/// The single writer. Owns the revision counter.
struct Sequencer {
    db: Arc<DB>,
    revision: Arc<AtomicU64>,
    options: RocksOptions,
}

/// The state of keys touched earlier in the batch being built.
#[derive(Default)]
struct Overlay {
    objects: HashMap<Vec<u8>, Option<Versioned>>,
    unique: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Sequencer {
    fn run(self, mut rx: mpsc::Receiver<Pending>) {
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
        let outcome = self.apply(batch);
        let results = match outcome {
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

    /// Checks and writes a batch; returns one result per mutation.
    fn apply(&self, batch: &[Pending]) -> Result<Vec<Result<Committed, CommitError>>, StoreError> {
        let (objects, unique) = (cf(&self.db, CF_OBJECTS)?, cf(&self.db, CF_UNIQUE)?);
        let (log, requests) = (cf(&self.db, CF_LOG)?, cf(&self.db, CF_REQUESTS)?);
        let mut overlay = Overlay::default();
        let mut write = WriteBatch::default();
        let mut revision = self.revision.load(Ordering::Acquire);
        let mut results = Vec::with_capacity(batch.len());
        for Pending { mutation: m, .. } in batch {
            let current = self.current(&overlay, &m.key)?;
            if let Err(e) = self.check(&overlay, m, &current) {
                results.push(Err(e));
                continue;
            }
            revision += 1;
            match &m.value {
                Some(value) => write.put_cf(objects, &m.key, encode_object(revision, value)),
                None => write.delete_cf(objects, &m.key),
            }
            for key in &m.releases {
                write.delete_cf(unique, key);
                overlay.unique.insert(key.clone(), None);
            }
            for key in &m.claims {
                write.put_cf(unique, key, &m.key);
                overlay.unique.insert(key.clone(), Some(m.key.clone()));
            }
            let event = ChangeEvent {
                revision,
                key: m.key.clone(),
                before: current.map(|c| c.value),
                after: m.value.clone(),
                principal: m.change.principal.clone(),
                request_id: m.change.request_id.clone(),
                time_unix_ms: m.change.time_unix_ms,
            };
            write.put_cf(log, revision.to_be_bytes(), event.encode_to_vec());
            if let Some(mark) = &m.idempotency {
                let record = IdempotencyRecord {
                    fingerprint: mark.fingerprint.clone(),
                    revision,
                    value: m.value.clone().unwrap_or_default(),
                    expires_at_ms: mark.expires_at_ms,
                };
                write.put_cf(requests, &mark.key, record.encode_to_vec());
            }
            let stored = m.value.as_ref().map(|value| Versioned {
                revision,
                value: value.clone(),
            });
            overlay.objects.insert(m.key.clone(), stored);
            results.push(Ok(Committed { revision }));
        }
        if write.is_empty() {
            return Ok(results);
        }
        write.put_cf(cf(&self.db, CF_META)?, REVISION_KEY, revision.to_be_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(self.options.fsync);
        let started = std::time::Instant::now();
        self.db.write_opt(write, &opts).map_err(engine)?;
        metrics::histogram!("arbiter_store_sync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("arbiter_store_commit_batch_size").record(batch.len() as f64);
        self.revision.store(revision, Ordering::Release);
        Ok(results)
    }

    fn current(&self, overlay: &Overlay, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        if let Some(seen) = overlay.objects.get(key) {
            return Ok(seen.clone());
        }
        let raw = self
            .db
            .get_pinned_cf(cf(&self.db, CF_OBJECTS)?, key)
            .map_err(engine)?;
        raw.map(|raw| decode_object(key, &raw)).transpose()
    }

    fn check(&self, overlay: &Overlay, m: &Mutation, current: &Option<Versioned>) -> Result<(), CommitError> {
        let matches = match (m.expect, current) {
            (Expect::Absent, None) => true,
            (Expect::Revision(want), Some(have)) => have.revision == want,
            _ => false,
        };
        if !matches {
            return Err(CommitError::Conflict {
                current: current.clone(),
            });
        }
        for key in &m.claims {
            let owner = match overlay.unique.get(key) {
                Some(seen) => seen.clone(),
                None => self.db.get_cf(cf(&self.db, CF_UNIQUE)?, key).map_err(engine)?,
            };
            if let Some(owner) = owner.filter(|o| *o != m.key) {
                return Err(CommitError::Taken {
                    key: key.clone(),
                    owner,
                });
            }
        }
        Ok(())
    }
}
