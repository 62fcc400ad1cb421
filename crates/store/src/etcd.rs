//! The etcd engine: the store of several replicas that serve as one.
//!
//! Everything lives under one prefix (`--etcd-prefix`, default `/arbiter`):
//!
//! | key | value |
//! |---|---|
//! | `P/o/{key}` | an object; its etcd `mod_revision` is its revision |
//! | `P/h/{key}` | the object's last [`ChangeEvent`] (without `before`); its versions in etcd's history are the object's history, and a watch on `P/h/` is the change log |
//! | `P/u/{key}` | a unique key → the owning object's key |
//! | `P/c/{key}` | a counter, 8 bytes big-endian |
//! | `P/r/{key}` | an [`IdempotencyRecord`], on a lease that ends after it expires |
//! | `P/b/{digest}`, `P/b/{digest}/{n}` | a blob's manifest and its chunks (etcd caps a request at 1.5 MiB) |
//! | `P/s/{key}` | a statistics record (outside the change log) |
//! | `P/m/{unix ms}` | retention marks: the revision of a moment |
//! | `P/meta/compacted` | the revision up to which this prefix's history was compacted |
//!
//! Each [`Commit`] is one etcd transaction whose guards compare
//! `mod_revision` and `create_revision` of what it relies on; there are no
//! locks and no leader of our own. Reads are linearizable. History is
//! etcd's MVCC history, compacted by [`Store::compact`] at the revision of
//! the newest retention mark older than the retention period.

mod commit;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, PutOptions, Txn, TxnOp,
};
use prost::Message;

use crate::{
    ChangeEvent, ChangeStream, Commit, CommitError, Committed, IdempotencyRecord, Scan, StatsRecords, Store,
    StoreError, Versioned,
};

/// Most writes in one etcd transaction (etcd's default cap is 128).
const TXN_OPS: usize = 64;
/// Largest chunk of a blob in one etcd request.
const CHUNK: usize = 512 << 10;
/// Objects read per range request of a scan.
const PAGE: i64 = 512;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the cluster's members.
    pub endpoints: Vec<String>,
    /// Prefix of every key Arbiter writes.
    pub prefix: String,
    /// Time limit of one request to etcd.
    pub request_timeout: Duration,
    /// Time limit of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/arbiter".into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// The etcd store. Cheap to clone; clones share the connections.
///
/// It holds one connection per member and sends every request to one of
/// them; when a member cannot be reached it moves on to the next (as etcd's
/// own client does), so that a member that is down costs a retry, not a
/// share of the requests.
#[derive(Clone)]
pub struct EtcdStore {
    clients: Arc<[Client]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    keys: Arc<Keys>,
    leases: Arc<Mutex<commit::Leases>>,
    /// Commits that move a counter take its stripe first: one replica's
    /// commits on one counter queue here instead of failing each other's
    /// compares in etcd.
    counter_stripes: Arc<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &String::from_utf8_lossy(&self.keys.root))
            .finish()
    }
}

/// Builds the etcd keys of the logical key spaces.
#[derive(Debug)]
pub(crate) struct Keys {
    root: Vec<u8>,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            root: prefix.trim_end_matches('/').as_bytes().to_vec(),
        }
    }

    fn space(&self, space: &str, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.root.len() + space.len() + key.len() + 2);
        out.extend_from_slice(&self.root);
        out.push(b'/');
        out.extend_from_slice(space.as_bytes());
        out.push(b'/');
        out.extend_from_slice(key);
        out
    }
    pub(crate) fn object(&self, key: &[u8]) -> Vec<u8> {
        self.space("o", key)
    }
    pub(crate) fn history(&self, key: &[u8]) -> Vec<u8> {
        self.space("h", key)
    }
    pub(crate) fn unique(&self, key: &[u8]) -> Vec<u8> {
        self.space("u", key)
    }
    pub(crate) fn counter(&self, key: &[u8]) -> Vec<u8> {
        self.space("c", key)
    }
    pub(crate) fn request(&self, key: &[u8]) -> Vec<u8> {
        self.space("r", key)
    }
    fn blob(&self, digest: &[u8]) -> Vec<u8> {
        self.space("b", digest)
    }
    fn stats(&self, key: &[u8]) -> Vec<u8> {
        self.space("s", key)
    }
    fn mark(&self, unix_ms: i64) -> Vec<u8> {
        self.space("m", format!("{:020}", unix_ms.max(0)).as_bytes())
    }
    fn compacted(&self) -> Vec<u8> {
        self.space("meta", b"compacted")
    }
    /// The length of a space's prefix, to cut it off a key.
    fn strip<'a>(&self, space: &str, key: &'a [u8]) -> &'a [u8] {
        &key[(self.root.len() + space.len() + 2).min(key.len())..]
    }
}

/// A request that failed for want of etcd (down, partitioned away, too
/// slow): a read is safe to send again, and the caller may retry later.
pub(crate) fn unreachable(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) => true,
        E::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// A request that never reached etcd (the connection was refused): even a
/// write is safe to send again.
pub(crate) fn not_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    [
        "tcp connect error",
        "error trying to connect",
        "Connection refused",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// The key just after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Maps an etcd client error: transport failures and timeouts mean etcd
/// cannot be reached.
pub(crate) fn etcd_error(e: etcd_client::Error) -> StoreError {
    if unreachable(&e) {
        return StoreError::Unavailable(e.to_string());
    }
    match e {
        etcd_client::Error::GRpcStatus(status) if status.message().contains("compacted") => {
            StoreError::Compacted {
                requested: 0,
                oldest: 0,
            }
        }
        etcd_client::Error::GRpcStatus(status) => StoreError::Engine(format!("etcd: {}", status.message())),
        other => StoreError::Engine(format!("etcd: {other}")),
    }
}

pub(crate) fn revision_of(i: i64) -> u64 {
    u64::try_from(i).unwrap_or(0)
}

pub(crate) fn etcd_revision(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    }
}

impl EtcdStore {
    /// Connects to the cluster. The connection is made lazily: a cluster
    /// that is down now makes requests fail with
    /// [`StoreError::Unavailable`] until it is back.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoint given".into()));
        }
        let connect = ConnectOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut clients = Vec::with_capacity(options.endpoints.len());
        for endpoint in &options.endpoints {
            clients.push(
                Client::connect([endpoint], Some(connect.clone()))
                    .await
                    .map_err(etcd_error)?,
            );
        }
        Ok(Self {
            clients: clients.into(),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            keys: Arc::new(Keys::new(&options.prefix)),
            leases: Arc::new(Mutex::new(commit::Leases::default())),
            counter_stripes: (0..commit::COUNTER_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// The member requests go to now, and its index.
    pub(crate) fn client(&self) -> (usize, &Client) {
        let i = self.current.load(std::sync::atomic::Ordering::Acquire) % self.clients.len();
        (i, &self.clients[i])
    }

    fn kv(&self) -> KvClient {
        self.client().1.kv_client()
    }

    /// Moves on from member `i`, which could not be reached (unless another
    /// caller moved on already).
    pub(crate) fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self.current.compare_exchange(
            i,
            next,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
    }

    /// Runs `call` on the current member, and on the next ones while it
    /// fails in a way that `repeatable` says is safe to repeat (each member
    /// once, and the first again).
    pub(crate) async fn again<T, F, Fut>(
        &self,
        mut call: F,
        repeatable: fn(&etcd_client::Error) -> bool,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 1;
        loop {
            let (i, client) = self.client();
            match call(client.kv_client()).await {
                Err(e) if attempt <= self.clients.len() && repeatable(&e) => {
                    self.failed(i);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn get_one(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<Option<etcd_client::KeyValue>, StoreError> {
        let mut response = self
            .again(
                |mut kv| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { kv.get(key, options).await }
                },
                unreachable,
            )
            .await
            .map_err(etcd_error)?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// The revision up to which history is compacted (0: never).
    async fn compacted(&self) -> Result<u64, StoreError> {
        Ok(self.compacted_record().await?.0)
    }

    /// The compacted revision and the `mod_revision` of its record.
    async fn compacted_record(&self) -> Result<(u64, i64), StoreError> {
        Ok(match self.get_one(self.keys.compacted(), None).await? {
            Some(kv) => (parse_u64(kv.value()), kv.mod_revision()),
            None => (0, 0),
        })
    }

    /// The oldest revision whose state can still be read.
    async fn oldest(&self) -> Result<u64, StoreError> {
        Ok(self.compacted().await?.max(1))
    }

    async fn compacted_error(&self, requested: u64) -> StoreError {
        match self.oldest().await {
            Ok(oldest) => StoreError::Compacted { requested, oldest },
            Err(e) => e,
        }
    }

    /// Visits every key-value pair under `prefix` in `space`, in pages, at
    /// one revision.
    async fn range(
        &self,
        space: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], &etcd_client::KeyValue) -> Scan + Send),
    ) -> Result<u64, StoreError> {
        let full = self.keys.space(space, prefix);
        let end = prefix_end(&full);
        let mut from = match start_after {
            Some(after) => {
                let mut k = self.keys.space(space, after);
                k.push(0);
                k
            }
            None => full,
        };
        let mut at = 0;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at > 0 {
                options = options.with_revision(at);
            }
            let mut response = self.get_page(&from, options).await?;
            if at == 0 {
                at = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            let revision = revision_of(at);
            let Some(last) = kvs.last() else {
                return Ok(revision);
            };
            from = last.key().to_vec();
            from.push(0);
            for kv in &kvs {
                if visit(self.keys.strip(space, kv.key()), kv) == Scan::Stop {
                    return Ok(revision);
                }
            }
            if !more {
                return Ok(revision);
            }
        }
    }

    /// One range request from `from`, sent again while etcd is out of
    /// reach (a read is safe to repeat).
    async fn get_page(
        &self,
        from: &[u8],
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        self.again(
            |mut kv| {
                let (from, options) = (from.to_vec(), options.clone());
                async move { kv.get(from, Some(options)).await }
            },
            unreachable,
        )
        .await
        .map_err(etcd_error)
    }

    /// The version of an object's change record live at revision `at`
    /// (now: `None`); `None` when there was none or it is compacted.
    async fn history_version(
        &self,
        key: &[u8],
        at: Option<u64>,
    ) -> Result<Option<etcd_client::KeyValue>, StoreError> {
        let options = at.map(|r| GetOptions::new().with_revision(etcd_revision(r)));
        match self.get_one(self.keys.history(key), options).await {
            Err(StoreError::Compacted { .. }) => Ok(None),
            other => other,
        }
    }
}

pub(crate) fn decode_event(kv: &etcd_client::KeyValue) -> Result<ChangeEvent, StoreError> {
    let mut event = ChangeEvent::decode(kv.value()).map_err(|e| corrupt(kv.key(), e))?;
    event.revision = revision_of(kv.mod_revision());
    Ok(event)
}

fn parse_u64(raw: &[u8]) -> u64 {
    raw.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned {
        revision: revision_of(kv.mod_revision()),
        value: kv.value().to_vec(),
    }
}

impl Store for EtcdStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        Ok(self
            .get_one(self.keys.object(key), None)
            .await?
            .map(|kv| versioned(&kv)))
    }

    async fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<Versioned>, StoreError> {
        let options = GetOptions::new().with_revision(etcd_revision(revision));
        match self.get_one(self.keys.object(key), Some(options)).await {
            Ok(kv) => Ok(kv
                .filter(|kv| revision_of(kv.mod_revision()) == revision)
                .map(|kv| versioned(&kv))),
            Err(StoreError::Compacted { .. }) => Err(self.compacted_error(revision).await),
            Err(e) => Err(e),
        }
    }

    /// Unchanged since: as it is now. Otherwise etcd keeps the object's
    /// earlier versions until compaction: the object read at the revision
    /// before.
    async fn version_before(&self, key: &[u8], revision: u64) -> Result<Option<Versioned>, StoreError> {
        let current = self.get(key).await?;
        if let Some(current) = current.filter(|c| c.revision < revision) {
            return Ok(Some(current));
        }
        let Some(then) = revision.checked_sub(1).filter(|r| *r > 0) else {
            return Ok(None);
        };
        let options = GetOptions::new().with_revision(etcd_revision(then));
        match self.get_one(self.keys.object(key), Some(options)).await {
            Ok(kv) => Ok(kv.map(|kv| versioned(&kv))),
            Err(StoreError::Compacted { .. }) => Err(self.compacted_error(then).await),
            Err(e) => Err(e),
        }
    }

    async fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        visit: &mut (dyn FnMut(&[u8], Versioned) -> Scan + Send),
    ) -> Result<u64, StoreError> {
        self.range("o", prefix, start_after, &mut |key, kv| visit(key, versioned(kv)))
            .await
    }

    async fn scan_unique(
        &self,
        prefix: &[u8],
        visit: &mut (dyn FnMut(&[u8], &[u8]) -> Scan + Send),
    ) -> Result<(), StoreError> {
        self.range("u", prefix, None, &mut |key, kv| visit(key, kv.value()))
            .await
            .map(|_| ())
    }

    async fn unique_owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .get_one(self.keys.unique(key), None)
            .await?
            .map(|kv| kv.value().to_vec()))
    }

    async fn counter(&self, key: &[u8]) -> Result<i64, StoreError> {
        Ok(self
            .get_one(self.keys.counter(key), None)
            .await?
            .map_or(0, |kv| commit::parse_counter(kv.value())))
    }

    async fn idempotency(
        &self,
        key: &[u8],
        now_unix_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(kv) = self.get_one(self.keys.request(key), None).await? else {
            return Ok(None);
        };
        let record = commit::decode_record(&kv)?;
        Ok((record.expires_at_ms > now_unix_ms).then_some(record))
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, CommitError> {
        commit::run(self, commit).await
    }

    async fn put_blob(&self, digest: &[u8], bytes: Vec<u8>) -> Result<(), StoreError> {
        let manifest = self.keys.blob(digest);
        if self.get_one(manifest.clone(), None).await?.is_some() {
            return Ok(());
        }
        let mut kv = self.kv();
        let chunks = bytes.chunks(CHUNK);
        let count = chunks.len();
        for (i, chunk) in chunks.enumerate() {
            let mut key = manifest.clone();
            key.push(b'/');
            key.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
            kv.put(key, chunk.to_vec(), None).await.map_err(etcd_error)?;
        }
        // The manifest goes last: a blob is there once it is whole.
        let mut head = (bytes.len() as u64).to_be_bytes().to_vec();
        head.extend_from_slice(&(count as u64).to_be_bytes());
        kv.put(manifest, head, None::<PutOptions>)
            .await
            .map_err(etcd_error)?;
        Ok(())
    }

    async fn get_blob(&self, digest: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let manifest = self.keys.blob(digest);
        let Some(head) = self.get_one(manifest.clone(), None).await? else {
            return Ok(None);
        };
        let (len, count) = match head.value().split_at_checked(8) {
            Some((len, count)) => (parse_u64(len), parse_u64(count)),
            None => return Err(corrupt(&manifest, "blob manifest shorter than 16 bytes")),
        };
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
        for i in 0..count {
            let mut key = manifest.clone();
            key.push(b'/');
            key.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
            let chunk = self
                .get_one(key.clone(), None)
                .await?
                .ok_or_else(|| corrupt(&key, "blob chunk missing"))?;
            out.extend_from_slice(chunk.value());
        }
        if out.len() as u64 != len {
            return Err(corrupt(&manifest, "blob length differs from its manifest"));
        }
        Ok(Some(out))
    }

    async fn put_stats(&self, records: StatsRecords) -> Result<(), StoreError> {
        for chunk in records.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(key, value)| TxnOp::put(self.keys.stats(key), value.clone(), None))
                .collect();
            // A put of the same value again changes nothing: safe to repeat.
            self.again(
                |mut kv| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { kv.txn(txn).await }
                },
                unreachable,
            )
            .await
            .map_err(etcd_error)?;
        }
        Ok(())
    }

    async fn scan_stats(&self, from: &[u8], to: &[u8], limit: usize) -> Result<StatsRecords, StoreError> {
        let end = self.keys.stats(to);
        let mut from = self.keys.stats(from);
        let mut out = Vec::new();
        while out.len() < limit {
            let page = i64::try_from(limit - out.len()).unwrap_or(PAGE).min(PAGE);
            let options = GetOptions::new().with_range(end.clone()).with_limit(page);
            let mut response = self.get_page(&from, options).await?;
            let more = response.more();
            let kvs = response.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            out.extend(
                kvs.iter()
                    .map(|kv| (self.keys.strip("s", kv.key()).to_vec(), kv.value().to_vec())),
            );
            if !more {
                break;
            }
        }
        Ok(out)
    }

    async fn delete_stats(&self, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        let (from, to) = (self.keys.stats(from), self.keys.stats(to));
        self.again(
            |mut kv| {
                let (from, options) = (from.clone(), DeleteOptions::new().with_range(to.clone()));
                async move { kv.delete(from, Some(options)).await }
            },
            unreachable,
        )
        .await
        .map_err(etcd_error)?;
        Ok(())
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let key = self.keys.compacted();
        let response = self
            .again(
                |mut kv| {
                    let key = key.clone();
                    async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
                },
                unreachable,
            )
            .await
            .map_err(etcd_error)?;
        Ok(response.header().map_or(0, |h| revision_of(h.revision())))
    }

    async fn watch(&self, prefix: &[u8], start: u64) -> Result<ChangeStream, StoreError> {
        let start = if start == 0 {
            self.revision().await? + 1
        } else {
            start
        };
        let oldest = self.oldest().await?;
        if start < oldest {
            return Err(StoreError::Compacted {
                requested: start,
                oldest,
            });
        }
        watch::start(self, prefix, start).await
    }

    async fn history(&self, key: &[u8], before: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let mut out: Vec<ChangeEvent> = Vec::new();
        let at = match before {
            0 => None,
            1 => return Ok(out),
            b => Some(b - 1),
        };
        let Some(mut kv) = self.history_version(key, at).await? else {
            return Ok(out);
        };
        while out.len() < limit {
            let mut event = decode_event(&kv)?;
            // Versions go back to the record's creation, or to compaction.
            let previous = if kv.create_revision() < kv.mod_revision() {
                self.history_version(key, Some(revision_of(kv.mod_revision() - 1)))
                    .await?
            } else {
                None
            };
            if let Some(prev) = &previous {
                event.before = decode_event(prev)?.after;
            }
            out.push(event);
            match previous {
                Some(prev) => kv = prev,
                None => break,
            }
        }
        Ok(out)
    }

    async fn compact(&self, cutoff_unix_ms: i64, now_unix_ms: i64) -> Result<u64, StoreError> {
        let mut kv = self.kv();
        kv.put(self.keys.mark(now_unix_ms), Vec::new(), None)
            .await
            .map_err(etcd_error)?;
        let first = self.keys.mark(0);
        let options = GetOptions::new()
            .with_range(self.keys.mark(cutoff_unix_ms))
            .with_keys_only();
        let marks = kv.get(first.clone(), Some(options)).await.map_err(etcd_error)?;
        let (compacted, seen) = self.compacted_record().await?;
        let Some(last) = marks.kvs().last() else {
            return Ok(compacted.max(1));
        };
        let target = revision_of(last.mod_revision());
        if target <= compacted {
            return Ok(compacted.max(1));
        }
        match kv.compact(etcd_revision(target), None).await.map_err(etcd_error) {
            // Another replica compacted as far or further.
            Ok(_) | Err(StoreError::Compacted { .. }) => {}
            Err(e) => return Err(e),
        }
        // Record it unless another replica recorded a compaction meanwhile.
        let record = Txn::new()
            .when([Compare::mod_revision(
                self.keys.compacted(),
                CompareOp::Equal,
                seen,
            )])
            .and_then([
                TxnOp::put(self.keys.compacted(), target.to_be_bytes().to_vec(), None),
                TxnOp::delete(first, Some(DeleteOptions::new().with_range(last.key().to_vec()))),
            ]);
        kv.txn(record).await.map_err(etcd_error)?;
        Ok(target)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.revision().await.map(|_| ())
    }
}
