//! The embedded RocksDB engine.
//!
//! Column families: `objects` (key → revision ‖ value), `unique` (unique key
//! → owning object key), `counters` (key → i64), `log` (revision ‖ index →
//! [`ChangeEvent`]), `history` (object key ‖ NUL ‖ revision → index, the
//! per-object view of the log), `requests` (idempotency key →
//! [`IdempotencyRecord`]), `blobs` (content digest → bytes, e.g. policy
//! modules, kept in RocksDB's blob files), `stats` (statistics records,
//! outside the change log) and `meta` (the revision counter and the oldest
//! retained revision).
//!
//! Reads go straight to RocksDB. Commits go through one sequencer thread:
//! it takes every commit that is waiting, checks each against the stored
//! state plus the batch so far, assigns revisions, and writes the whole
//! batch as one `WriteBatch` with a synced WAL before answering any of them
//! (group commit). So an acknowledged write survives `kill -9`, and under
//! load one fsync serves many writes. After the write it publishes the
//! batch's change events to the watchers, without ever waiting for them.

mod sequencer;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use prost::Message;
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    ChangeEvent, ChangeStream, Commit, CommitError, Committed, IdempotencyRecord, Scan, StatsRecords, Store,
    StoreError, Versioned,
};
use sequencer::{Pending, Sequencer};

const CF_OBJECTS: &str = "objects";
const CF_UNIQUE: &str = "unique";
const CF_COUNTERS: &str = "counters";
const CF_LOG: &str = "log";
const CF_HISTORY: &str = "history";
const CF_REQUESTS: &str = "requests";
const CF_META: &str = "meta";
const CF_BLOBS: &str = "blobs";
const CF_STATS: &str = "stats";
const COLUMN_FAMILIES: [&str; 9] = [
    CF_OBJECTS,
    CF_UNIQUE,
    CF_COUNTERS,
    CF_LOG,
    CF_HISTORY,
    CF_REQUESTS,
    CF_META,
    CF_BLOBS,
    CF_STATS,
];
const REVISION_KEY: &[u8] = b"revision";
/// Written by a ping after a failed write, to see whether writes work again.
const PROBE_KEY: &[u8] = b"probe";
const OLDEST_KEY: &[u8] = b"oldest";
/// Batches of change events the watchers' feed holds before a slow
/// watcher falls behind and re-reads the log.
const FEED_CAPACITY: usize = 1024;
/// How often expired idempotency records are looked for (a full scan).
const PURGE_REQUESTS_EVERY_MS: i64 = 15 * 60 * 1000;

/// Tuning of the RocksDB engine.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Sync the WAL before acknowledging a write. Only benchmarks turn this
    /// off: without it an acknowledged write can be lost on power failure.
    pub fsync: bool,
    /// Most commits applied in one batch.
    pub max_batch: usize,
    /// Commits that may wait for the sequencer before callers wait too.
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

/// State shared by the store handle, the sequencer and the watchers.
pub(crate) struct Shared {
    db: DB,
    /// The last committed revision.
    revision: AtomicU64,
    /// The oldest revision the log retains.
    oldest: AtomicU64,
    /// Every committed batch's change events, for watchers.
    feed: broadcast::Sender<Arc<Vec<ChangeEvent>>>,
    /// When expired request records were last purged (Unix ms).
    purged_at: std::sync::atomic::AtomicI64,
    /// Why the last write failed (a full disk, say); cleared by the next
    /// write that succeeds.
    pub(crate) write_failure: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Engine(format!("column family {name} is missing")))
    }

    fn object(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let raw = self.db.get_pinned_cf(self.cf(CF_OBJECTS)?, key).map_err(engine)?;
        raw.map(|raw| decode_object(key, &raw)).transpose()
    }

    fn counter(&self, key: &[u8]) -> Result<i64, StoreError> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_COUNTERS)?, key)
            .map_err(engine)?
        {
            None => Ok(0),
            Some(raw) => {
                let bytes: [u8; 8] = (*raw)
                    .try_into()
                    .map_err(|_| corrupt(key, "counter is not 8 bytes"))?;
                Ok(i64::from_be_bytes(bytes))
            }
        }
    }

    fn request(&self, key: &[u8]) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(raw) = self
            .db
            .get_pinned_cf(self.cf(CF_REQUESTS)?, key)
            .map_err(engine)?
        else {
            return Ok(None);
        };
        IdempotencyRecord::decode(&*raw)
            .map(Some)
            .map_err(|e| corrupt(key, e.to_string()))
    }

    /// Change events with revisions from `from` through `to`, oldest first.
    fn log_range(&self, from: u64, to: u64) -> Result<Vec<ChangeEvent>, StoreError> {
        let start = from.to_be_bytes();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_LOG)?, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, raw) = item.map_err(engine)?;
            let event = ChangeEvent::decode(&*raw).map_err(|e| corrupt(&key, e.to_string()))?;
            if event.revision > to {
                break;
            }
            out.push(event);
        }
        Ok(out)
    }

    fn log_entry(&self, revision: u64, index: &[u8]) -> Result<Option<ChangeEvent>, StoreError> {
        let key = log_key(revision, index);
        let raw = self.db.get_pinned_cf(self.cf(CF_LOG)?, &key).map_err(engine)?;
        raw.map(|raw| ChangeEvent::decode(&*raw).map_err(|e| corrupt(&key, e.to_string())))
            .transpose()
    }

    /// Deletes log entries older than the cutoff (and their history index
    /// entries) and expired request records; returns the oldest retained
    /// revision.
    fn compact(&self, cutoff_unix_ms: i64, now_unix_ms: i64) -> Result<u64, StoreError> {
        let (log, history, requests) = (self.cf(CF_LOG)?, self.cf(CF_HISTORY)?, self.cf(CF_REQUESTS)?);
        let mut batch = WriteBatch::default();
        let current = self.revision.load(Ordering::Acquire);
        let mut oldest = current + 1;
        // Start at the oldest retained entry: what lies before it is
        // deleted, and iterating over deletions costs time.
        let from = self.oldest.load(Ordering::Acquire).to_be_bytes();
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, raw) = item.map_err(engine)?;
            let event = ChangeEvent::decode(&*raw).map_err(|e| corrupt(&key, e.to_string()))?;
            if event.time_unix_ms >= cutoff_unix_ms {
                oldest = event.revision;
                break;
            }
            batch.delete_cf(log, &key);
            batch.delete_cf(history, history_key(&event.key, event.revision));
        }
        let last = self.purged_at.load(Ordering::Acquire);
        if now_unix_ms.saturating_sub(last) >= PURGE_REQUESTS_EVERY_MS {
            self.purged_at.store(now_unix_ms, Ordering::Release);
            for item in self.db.iterator_cf(requests, IteratorMode::Start) {
                let (key, raw) = item.map_err(engine)?;
                let record = IdempotencyRecord::decode(&*raw).map_err(|e| corrupt(&key, e.to_string()))?;
                if record.expires_at_ms <= now_unix_ms {
                    batch.delete_cf(requests, &key);
                }
            }
        }
        // Watchers check `oldest` before they read the log: raise it first.
        let oldest = oldest.max(self.oldest.load(Ordering::Acquire));
        self.oldest.fetch_max(oldest, Ordering::AcqRel);
        batch.put_cf(self.cf(CF_META)?, OLDEST_KEY, oldest.to_be_bytes());
        self.db.write(batch).map_err(engine)?;
        Ok(oldest)
    }

    fn check_retained(&self, revision: u64) -> Result<(), StoreError> {
        let oldest = self.oldest.load(Ordering::Acquire);
        if revision < oldest {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest,
            });
        }
        Ok(())
    }
}

/// The RocksDB store. Cheap to share behind an `Arc`; dropping the last
/// handle stops the sequencer after it has written what it accepted.
pub struct RocksStore {
    shared: Arc<Shared>,
    fsync: bool,
    queue: Option<mpsc::Sender<Pending>>,
    sequencer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.shared.db.path())
            .field("revision", &self.shared.revision.load(Ordering::Acquire))
            .finish()
    }
}

/// Entries a scan visits on the async runtime's thread before it moves
/// off it.
const INLINE_SCAN: usize = 256;

/// Runs `f`, blocking work, off the async runtime: on a multi-threaded
/// runtime this thread first hands its other tasks to another worker.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(crate) fn engine(e: rocksdb::Error) -> StoreError {
    StoreError::Engine(e.into_string())
}

pub(crate) fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
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

/// The log key of the `index`-th change of a revision.
fn log_key(revision: u64, index: &[u8]) -> Vec<u8> {
    let mut key = revision.to_be_bytes().to_vec();
    key.extend_from_slice(index);
    key
}

/// The history key of an object's change at `revision`.
fn history_key(key: &[u8], revision: u64) -> Vec<u8> {
    let mut out = history_prefix(key);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 9);
    out.extend_from_slice(key);
    out.push(0);
    out
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

fn read_u64(db: &DB, cf: &rocksdb::ColumnFamily, key: &[u8]) -> Result<Option<u64>, StoreError> {
    match db.get_cf(cf, key).map_err(engine)? {
        None => Ok(None),
        Some(raw) => {
            let bytes: [u8; 8] = raw
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(key, "not 8 bytes"))?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
    }
}

impl RocksStore {
    /// Writes what `fill` puts in a batch, outside the sequencer (blobs,
    /// statistics: nothing with a revision), synced as commits are.
    async fn write_aside(
        &self,
        fill: impl FnOnce(&Shared, &mut WriteBatch) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        let fsync = self.fsync;
        let write = move || {
            let mut batch = WriteBatch::default();
            fill(&shared, &mut batch)?;
            let mut opts = WriteOptions::default();
            opts.set_sync(fsync);
            shared.db.write_opt(batch, &opts).map_err(engine)
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StoreError::Engine(format!("a write outside the sequencer failed: {e}")))?
    }

    /// Opens (or creates) the store in `path` and starts its sequencer.
    pub fn open(path: &Path, options: RocksOptions) -> Result<Self, StoreError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.increase_parallelism(2);
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, column_options(name)));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine)?;
        let meta = db
            .cf_handle(CF_META)
            .ok_or_else(|| StoreError::Engine("column family meta is missing".into()))?;
        let revision = read_u64(&db, meta, REVISION_KEY)?.unwrap_or(0);
        let oldest = read_u64(&db, meta, OLDEST_KEY)?.unwrap_or(1);
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let shared = Arc::new(Shared {
            db,
            revision: AtomicU64::new(revision),
            oldest: AtomicU64::new(oldest),
            feed,
            purged_at: std::sync::atomic::AtomicI64::new(0),
            write_failure: std::sync::Mutex::new(None),
        });
        let (queue, rx) = mpsc::channel(options.queue_depth.max(1));
        let fsync = options.fsync;
        let sequencer = Sequencer::new(Arc::clone(&shared), options);
        let sequencer = std::thread::Builder::new()
            .name("arbiter-sequencer".into())
            .spawn(move || sequencer.run(rx))
            .map_err(|e| StoreError::Engine(format!("cannot start the sequencer: {e}")))?;
        Ok(Self {
            shared,
            fsync,
            queue: Some(queue),
            sequencer: Some(sequencer),
        })
    }

    /// Change events after `after`, oldest first, at most `limit` (for tests
    /// and tools; watchers use [`Store::watch`]).
    pub fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let mut events = self.shared.log_range(after + 1, u64::MAX)?;
        events.truncate(limit);
        Ok(events)
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

impl Store for RocksStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.shared.object(key)
    }

    async fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<Versioned>, StoreError> {
        let shared = &self.shared;
        shared.check_retained(revision)?;
        let Some(index) = shared
            .db
            .get_cf(shared.cf(CF_HISTORY)?, history_key(key, revision))
            .map_err(engine)?
        else {
            return Ok(None);
        };
        let event = shared.log_entry(revision, &index)?;
        Ok(event
            .and_then(|e| e.after)
            .map(|value| Versioned { revision, value }))
    }

    async fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> Result<u64, StoreError> {
        let cf = self.shared.cf(CF_OBJECTS)?;
        let snapshot = self.shared.db.snapshot();
        // The revision counter is written in the same batch as the objects.
        let revision = match snapshot
            .get_cf(self.shared.cf(CF_META)?, REVISION_KEY)
            .map_err(engine)?
        {
            None => 0,
            Some(raw) => u64::from_be_bytes(
                raw.as_slice()
                    .try_into()
                    .map_err(|_| corrupt(REVISION_KEY, "not 8 bytes"))?,
            ),
        };
        let start = start_after.unwrap_or(prefix);
        let mode = IteratorMode::From(start, Direction::Forward);
        let mut items = snapshot.iterator_cf(cf, mode);
        // Visits up to `budget` entries; whether the scan may go on.
        let mut run = |budget: usize| -> Result<bool, StoreError> {
            for _ in 0..budget {
                let Some(item) = items.next() else {
                    return Ok(false);
                };
                let (key, raw) = item.map_err(engine)?;
                if !key.starts_with(prefix) {
                    return Ok(false);
                }
                if Some(&*key) == start_after {
                    continue;
                }
                if visit(&key, decode_object(&key, &raw)?) == Scan::Stop {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        // A short scan runs here; a long one leaves the async runtime's
        // thread first, so that it holds up no other request.
        if run(INLINE_SCAN)? {
            off_runtime(|| run(usize::MAX))?;
        }
        Ok(revision)
    }

    async fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> Result<(), StoreError> {
        let cf = self.shared.cf(CF_UNIQUE)?;
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.shared.db.iterator_cf(cf, mode) {
            let (key, owner) = item.map_err(engine)?;
            if !key.starts_with(prefix) || visit(&key, &owner) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    async fn unique_owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared
            .db
            .get_cf(self.shared.cf(CF_UNIQUE)?, key)
            .map_err(engine)
    }

    async fn counter(&self, key: &[u8]) -> Result<i64, StoreError> {
        self.shared.counter(key)
    }

    async fn idempotency(
        &self,
        key: &[u8],
        now_unix_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self
            .shared
            .request(key)?
            .filter(|record| record.expires_at_ms > now_unix_ms))
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        commit.check_shape()?;
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(Pending { commit, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> Result<(), StoreError> {
        let digest = digest.to_vec();
        self.write_aside(move |shared, batch| {
            batch.put_cf(shared.cf(CF_BLOBS)?, digest, bytes);
            Ok(())
        })
        .await
    }

    async fn get_blob(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared
            .db
            .get_cf(self.shared.cf(CF_BLOBS)?, digest)
            .map_err(engine)
    }

    async fn put_stats(&self, records: StatsRecords) -> Result<(), StoreError> {
        self.write_aside(move |shared, batch| {
            let cf = shared.cf(CF_STATS)?;
            for (key, value) in records {
                batch.put_cf(cf, key, value);
            }
            Ok(())
        })
        .await
    }

    async fn scan_stats(&self, from: &[u8], to: &[u8], limit: usize) -> Result<StatsRecords, StoreError> {
        let cf = self.shared.cf(CF_STATS)?;
        let mut out = Vec::new();
        for item in self
            .shared
            .db
            .iterator_cf(cf, IteratorMode::From(from, Direction::Forward))
        {
            let (key, value) = item.map_err(engine)?;
            if out.len() >= limit || &*key >= to {
                break;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }

    async fn delete_stats(&self, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        let (from, to) = (from.to_vec(), to.to_vec());
        self.write_aside(move |shared, batch| {
            batch.delete_range_cf(shared.cf(CF_STATS)?, from, to);
            Ok(())
        })
        .await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn watch(&self, prefix: &[u8], start: u64) -> Result<ChangeStream, StoreError> {
        watch::start(&self.shared, prefix, start)
    }

    async fn history(&self, key: &[u8], before: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let shared = &self.shared;
        let prefix = history_prefix(key);
        let end = history_key(key, end_revision(before));
        let mut out = Vec::new();
        let mode = IteratorMode::From(&end, Direction::Reverse);
        for item in shared.db.iterator_cf(shared.cf(CF_HISTORY)?, mode) {
            if out.len() >= limit {
                break;
            }
            let (hkey, index) = item.map_err(engine)?;
            let Some(revision) = hkey.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let revision: [u8; 8] = revision
                .try_into()
                .map_err(|_| corrupt(&hkey, "history key without its revision"))?;
            let revision = u64::from_be_bytes(revision);
            if revision >= end_revision(before) {
                continue;
            }
            if let Some(event) = shared.log_entry(revision, &index)? {
                out.push(event);
            }
        }
        Ok(out)
    }

    async fn compact(&self, cutoff_unix_ms: i64, now_unix_ms: i64) -> Result<u64, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.compact(cutoff_unix_ms, now_unix_ms))
            .await
            .map_err(|e| StoreError::Engine(format!("the compaction failed: {e}")))?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.sequencer.as_ref().is_none_or(|s| s.is_finished()) {
            return Err(StoreError::Closed);
        }
        // After a failed write, a ping writes (and syncs) a probe: the
        // store is healthy again only once a write goes through.
        let failed = self
            .shared
            .write_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(why) = failed else {
            return Ok(());
        };
        let shared = Arc::clone(&self.shared);
        let probe = tokio::task::spawn_blocking(move || {
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            shared
                .db
                .put_cf_opt(shared.cf(CF_META)?, PROBE_KEY, now.to_be_bytes(), &opts)
                .map_err(engine)
        })
        .await
        .map_err(|e| StoreError::Engine(format!("the write probe failed: {e}")))?;
        match probe {
            Ok(()) => {
                *self
                    .shared
                    .write_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                Ok(())
            }
            Err(e) => Err(StoreError::Engine(format!(
                "writes fail ({why}); a probe write failed too: {e}"
            ))),
        }
    }
}

fn end_revision(before: u64) -> u64 {
    if before == 0 { u64::MAX } else { before }
}
