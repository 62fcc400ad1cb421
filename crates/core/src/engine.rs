//! The engine every request goes through: its settings, the shared
//! helpers of stored resources (etags, encoding), and the reads (get,
//! list). Writes are in [`crate::write`] on [`crate::stage`]; transactions
//! in [`crate::transaction`]; request ids in [`crate::idempotency`].
//!
//! Validation and policy evaluation run outside any lock, against the
//! object as read at revision r; the store commits only if the object is
//! still at r and the unique keys are still free. A client that sent an
//! etag gets `ABORTED` if the object moved; one that did not is
//! re-evaluated on the new state, a bounded number of times.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbiter_store::{ChangeMeta, Scan, Store, Versioned};
use prost_types::Timestamp;

use crate::auth::Caller;
use crate::error::{Current, Error};
use crate::filter::Filter;
use crate::idempotency::Inflight;
use crate::kind::Resource;
use crate::names::{self, Name};
use crate::page;
use crate::policy::{Policies, PolicyConfig, PolicyRuntime};
use crate::quota::Quotas;
use crate::requests::{ListPage, ListRequest, RequestId};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a request id's outcome is remembered.
    pub idempotency_ttl: Duration,
    /// How often a write without an etag is re-evaluated when the object
    /// moved underneath it.
    pub max_retries: usize,
    /// Policy limits and defaults.
    pub policy: PolicyConfig,
    /// Tenants whose updates and deletes must carry an etag.
    pub require_etag: BTreeSet<String>,
    /// Most stored resources one list request reads before it ends its
    /// page early with a page token.
    pub list_scan_limit: usize,
    /// Per-tenant quotas of each collection.
    pub quotas: Quotas,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            max_retries: 8,
            policy: PolicyConfig::default(),
            require_etag: BTreeSet::new(),
            list_scan_limit: 10_000,
            quotas: Quotas::default(),
        }
    }
}

/// The resource engine over a store.
#[derive(Debug)]
pub struct Engine<S> {
    pub(crate) store: Arc<S>,
    pub(crate) config: EngineConfig,
    pub(crate) inflight: Inflight,
    pub(crate) policies: Policies,
    pub(crate) conflicts: Arc<crate::stats::ConflictCounter>,
}

/// Now in Unix milliseconds, as policies see the time of a request.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(now().0).unwrap_or_default()
}

pub(crate) fn now() -> (i64, Timestamp) {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
    let ts = Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    };
    (ms, ts)
}

/// The etag of a revision: a quoted strong entity tag (AIP-154).
pub fn etag_of(revision: u64) -> String {
    format!("\"{revision:x}\"")
}

/// RFC 3339 text of a timestamp.
pub fn rfc3339(ts: Option<&Timestamp>) -> String {
    ts.map(ToString::to_string).unwrap_or_default()
}

pub(crate) fn current_of<R: Resource>(r: &R) -> Current {
    let meta = r.meta();
    Current {
        etag: meta.etag.to_string(),
        state: R::KIND.state_name(meta.state).to_string(),
        updated_by: meta.updated_by.to_string(),
        update_time: rfc3339(meta.update_time),
    }
}

pub(crate) fn decode<R: Resource>(key: &[u8], stored: &Versioned) -> Result<R, Error> {
    let mut r = R::decode(stored.value.as_slice())
        .map_err(|e| Error::storage("decoding a stored resource", format!("{e} at {key:?}")))?;
    let meta = r.meta_mut();
    *meta.revision = stored.revision;
    *meta.etag = etag_of(stored.revision);
    Ok(r)
}

/// Encodes a resource for storage: the revision and etag come from the
/// store and are not kept in the value.
pub(crate) fn encode<R: Resource>(r: &R) -> Vec<u8> {
    let mut bare = r.clone();
    let meta = bare.meta_mut();
    *meta.revision = 0;
    meta.etag.clear();
    bare.encode_to_vec()
}

impl<S: Store> Engine<S> {
    /// An engine over `store`, without a policy runtime: policies cannot
    /// be created, and a stored one faults.
    pub fn new(store: Arc<S>, config: EngineConfig) -> Self {
        let conflicts = Arc::new(crate::stats::ConflictCounter::new());
        let policies = Policies::new(None, config.policy.clone(), Arc::clone(&conflicts));
        Self {
            store,
            config,
            inflight: Inflight::default(),
            policies,
            conflicts,
        }
    }

    /// An engine over `store` whose policies run on `runtime`.
    pub fn with_runtime(store: Arc<S>, config: EngineConfig, runtime: Arc<dyn PolicyRuntime>) -> Self {
        let conflicts = Arc::new(crate::stats::ConflictCounter::new());
        let policies = Policies::new(Some(runtime), config.policy.clone(), Arc::clone(&conflicts));
        Self {
            store,
            config,
            inflight: Inflight::default(),
            policies,
            conflicts,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Reads one resource.
    pub async fn get<R: Resource>(&self, caller: &Caller, name: &str) -> Result<R, Error> {
        let name = names::parse_name("name", R::KIND, name)?;
        caller.authorize(&name.tenant, R::KIND.read)?;
        let (_, r) = self.read::<R>(&name).await?;
        Ok(r)
    }

    /// Lists resources in name order, one page at a time.
    pub async fn list<R: Resource>(&self, caller: &Caller, req: ListRequest) -> Result<ListPage<R>, Error> {
        let kind = R::KIND;
        let tenant = names::parse_parent("parent", &req.parent)?;
        caller.authorize(&tenant, kind.read)?;
        let size = page::size(req.page_size)?;
        let filter = Filter::parse(kind, &req.filter)?;
        let prefix = names::collection_prefix(&tenant, kind);
        let after = match req.page_token.as_str() {
            "" => None,
            token => {
                let last = page::decode(token, &req.parent, kind.collection, &req.filter)?;
                let mut key = prefix.clone();
                key.extend_from_slice(last.as_bytes());
                Some(key)
            }
        };
        let mut items: Vec<R> = Vec::with_capacity(size + 1);
        let mut failure = None;
        // The work of one request is bounded: a filter that matches little
        // ends the page early, at the last resource read (AIP-158 allows a
        // short page with a token).
        let limit = self.config.list_scan_limit.max(1);
        let (mut scanned, mut last_read) = (0usize, Vec::new());
        self.store
            .scan(&prefix, after.as_deref(), &mut |key, stored| {
                match decode::<R>(key, &stored) {
                    Ok(r) if filter.matches(&r) => items.push(r),
                    Ok(_) => {}
                    Err(e) => failure = Some(e),
                }
                scanned += 1;
                if items.len() > size || failure.is_some() {
                    Scan::Stop
                } else if scanned >= limit {
                    key.clone_into(&mut last_read);
                    Scan::Stop
                } else {
                    Scan::Continue
                }
            })
            .await
            .map_err(|e| Error::storage("listing resources", e))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut next_page_token = String::new();
        if items.len() <= size && !last_read.is_empty() {
            let id = String::from_utf8_lossy(last_read.strip_prefix(prefix.as_slice()).unwrap_or_default());
            next_page_token = page::encode(&req.parent, kind.collection, &req.filter, &id);
        }
        if items.len() > size {
            items.truncate(size);
            if let Some(last) = items.last() {
                let id = last
                    .meta()
                    .name
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                next_page_token = page::encode(&req.parent, kind.collection, &req.filter, &id);
            }
        }
        Ok(ListPage {
            items,
            next_page_token,
        })
    }

    pub(crate) async fn get_stored(&self, key: &[u8]) -> Result<Option<Versioned>, Error> {
        self.store
            .get(key)
            .await
            .map_err(|e| Error::storage("reading the resource", e))
    }

    pub(crate) async fn owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.store
            .unique_owner(key)
            .await
            .map_err(|e| Error::storage("reading a unique index", e))
    }

    async fn read<R: Resource>(&self, name: &Name) -> Result<(Versioned, R), Error> {
        let key = name.key(R::KIND);
        let stored = self.get_stored(&key).await?.ok_or_else(|| Error::NotFound {
            kind: R::KIND,
            name: name.full(R::KIND),
        })?;
        let r = decode::<R>(&key, &stored)?;
        Ok((stored, r))
    }

    /// Who and when, for the change log.
    pub(crate) fn change(&self, caller: &Caller, request_id: &RequestId) -> ChangeMeta {
        ChangeMeta {
            principal: caller.principal.clone(),
            request_id: request_id.id.clone(),
            time_unix_ms: now().0,
        }
    }
}
