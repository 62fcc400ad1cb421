//! The generic apply pipeline: every operation on every kind goes through
//! [`Engine`]. Validation, lifecycle checks and (later) policy evaluation run
//! here, outside any lock, against the object as read at revision r; the
//! store's sequencer then commits only if the object is still at r and the
//! unique keys are still free. A client that sent an etag gets `ABORTED` if
//! the object moved; one that did not is re-evaluated on the new state, a
//! bounded number of times.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbiter_api::v1::{Prompt, User, VirtualMachine};
use arbiter_store::{
    ChangeMeta, Claim, Commit, CommitError, Expect, IdempotencyMark, IdempotencyRecord, Scan, Store,
    Versioned, Write,
};
use prost_types::Timestamp;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::{Current, Error, FieldViolation, invalid};
use crate::filter::Filter;
use crate::kind::{Kind, Resource};
use crate::mask;
use crate::names::{self, Name};
use crate::page;
use crate::policy::{self, Input, Operation, Policies, PolicyConfig, PolicyRuntime, PolicyStats};
use crate::quota::{Quotas, quota_exceeded};
use crate::validate::{check_id, check_labels, check_request_id};

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

/// A client's request id with a fingerprint of the request it came with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestId {
    /// The id as sent; empty when the client sent none.
    pub id: String,
    /// Digest of the method and the request.
    pub fingerprint: Vec<u8>,
}

impl RequestId {
    /// Fingerprints `request` (its encoding) sent to `method`.
    pub fn new(id: impl Into<String>, method: &str, request: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(method.as_bytes());
        digest.update([0]);
        digest.update(request);
        Self {
            id: id.into(),
            fingerprint: digest.finalize().to_vec(),
        }
    }
}

/// A create (AIP-133).
#[derive(Debug, Clone)]
pub struct CreateRequest<R> {
    /// `tenants/{tenant}`.
    pub parent: String,
    /// The new resource's id.
    pub id: String,
    /// The resource; output-only fields are ignored.
    pub resource: R,
    /// Idempotency.
    pub request_id: RequestId,
    /// Check only.
    pub validate_only: bool,
}

/// An update (AIP-134).
#[derive(Debug, Clone)]
pub struct UpdateRequest<R> {
    /// The resource with its name, new values and optional etag.
    pub resource: R,
    /// The mask paths.
    pub update_mask: Vec<String>,
    /// Idempotency.
    pub request_id: RequestId,
    /// Check only.
    pub validate_only: bool,
}

/// A delete (AIP-135).
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// The resource name.
    pub name: String,
    /// Optional etag precondition.
    pub etag: String,
    /// Idempotency.
    pub request_id: RequestId,
    /// Check only.
    pub validate_only: bool,
}

/// A state-changing custom method (AIP-136).
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    /// The resource name.
    pub name: String,
    /// Optional etag precondition.
    pub etag: String,
    /// Idempotency.
    pub request_id: RequestId,
    /// The custom verb, e.g. `start`.
    pub verb: &'static str,
}

/// A list (AIP-132).
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// `tenants/{tenant}`.
    pub parent: String,
    /// Requested page size.
    pub page_size: i32,
    /// Token of the previous page.
    pub page_token: String,
    /// Filter expression.
    pub filter: String,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<R> {
    /// The resources in name order.
    pub items: Vec<R>,
    /// Token of the next page, empty on the last.
    pub next_page_token: String,
}

/// The outcome of the idempotency check.
enum Begin<'a> {
    Replay(IdempotencyRecord),
    Fresh(Option<IdempotencyMark>, Option<InflightGuard<'a>>),
}

/// Marks a request id in flight until dropped.
struct InflightGuard<'a> {
    set: &'a Mutex<HashSet<Vec<u8>>>,
    key: Vec<u8>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}

/// The resource engine over a store.
#[derive(Debug)]
pub struct Engine<S> {
    pub(crate) store: Arc<S>,
    pub(crate) config: EngineConfig,
    inflight: Mutex<HashSet<Vec<u8>>>,
    pub(crate) policies: Policies,
}

fn now() -> (i64, Timestamp) {
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

/// Compares a client's etag with the current one, tolerating a missing
/// pair of quotes.
fn etag_matches(given: &str, current: &str) -> bool {
    let bare = |e: &str| e.trim().trim_matches('"').to_string();
    bare(given) == bare(current)
}

/// RFC 3339 text of a timestamp.
pub fn rfc3339(ts: Option<&Timestamp>) -> String {
    ts.map(ToString::to_string).unwrap_or_default()
}

fn current_of<R: Resource>(r: &R) -> Current {
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

fn validate_resource<R: Resource>(r: &R, prefix: &str, out: &mut Vec<FieldViolation>) {
    for f in R::KIND.fields {
        let value = r.field(f.name).map(String::as_str).unwrap_or_default();
        let path = format!("{prefix}.{}", f.name);
        if value.is_empty() {
            if f.required {
                out.push(FieldViolation::new(path, "is required"));
            }
        } else if let Err(e) = (f.check)(value) {
            out.push(FieldViolation::new(path, e));
        }
    }
    check_labels(&format!("{prefix}.labels"), r.meta().labels, out);
    r.check_more(prefix, out);
}

/// A unique field value of a resource: its store key, field and raw value.
struct UniqueValue {
    key: Vec<u8>,
    field: &'static str,
    value: String,
}

fn unique_values<R: Resource>(tenant: &str, r: &R) -> Vec<UniqueValue> {
    R::KIND
        .fields
        .iter()
        .filter_map(|f| {
            let normalize = f.unique?;
            let value = r.field(f.name)?;
            (!value.is_empty()).then(|| UniqueValue {
                key: names::unique_key(tenant, R::KIND, f.name, &normalize(value)),
                field: f.name,
                value: value.clone(),
            })
        })
        .collect()
}

impl<S: Store> Engine<S> {
    /// An engine over `store`, without a policy runtime: policies cannot
    /// be created, and a stored one faults.
    pub fn new(store: Arc<S>, config: EngineConfig) -> Self {
        let policies = Policies::new(None, config.policy.clone());
        Self {
            store,
            config,
            inflight: Mutex::new(HashSet::new()),
            policies,
        }
    }

    /// An engine over `store` whose policies run on `runtime`.
    pub fn with_runtime(store: Arc<S>, config: EngineConfig, runtime: Arc<dyn PolicyRuntime>) -> Self {
        let policies = Policies::new(Some(runtime), config.policy.clone());
        Self {
            store,
            config,
            inflight: Mutex::new(HashSet::new()),
            policies,
        }
    }

    /// How policy evaluations ended.
    pub fn policy_stats(&self) -> &PolicyStats {
        &self.policies.stats
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

    /// Creates a resource in its initial state.
    pub async fn create<R: Resource>(&self, caller: &Caller, req: CreateRequest<R>) -> Result<R, Error> {
        let kind = R::KIND;
        let tenant = names::parse_parent("parent", &req.parent)?;
        caller.authorize(&tenant, kind.write)?;
        let mut violations = Vec::new();
        if let Err(e) = check_id(&req.id) {
            violations.push(FieldViolation::new(format!("{}_id", kind.singular), e));
        }
        validate_resource(&req.resource, kind.singular, &mut violations);
        violations.extend(check_request_id(&req.request_id.id).err());
        invalid(violations)?;
        let name = Name {
            tenant,
            id: req.id.clone(),
        };
        let (mark, _guard) = match self
            .begin(&name.tenant, &req.request_id, req.validate_only)
            .await?
        {
            Begin::Replay(record) => return self.replayed::<R>(&name, &record),
            Begin::Fresh(mark, guard) => (mark, guard),
        };
        let (ms, ts) = now();
        let mut r = R::default();
        mask::apply(
            &mask::parse(&["*".to_string()], &req.resource)?,
            &req.resource,
            &mut r,
        );
        {
            let meta = r.meta_mut();
            *meta.name = name.full(kind);
            *meta.uid = uuid::Uuid::new_v4().to_string();
            *meta.state = kind.initial_state;
            *meta.create_time = Some(ts);
            *meta.update_time = Some(ts);
            caller.principal.clone_into(meta.created_by);
            caller.principal.clone_into(meta.updated_by);
        }
        let key = name.key(kind);
        let uniques = unique_values(&name.tenant, &r);
        self.admit(caller, &name, Operation::Create, None, Some(&r))
            .await?;
        if req.validate_only {
            if let Some(existing) = self.get_stored(&key).await? {
                return Err(self.exists::<R>(&name, &key, &existing));
            }
            for u in &uniques {
                if let Some(owner) = self.owner(&u.key).await? {
                    return Err(taken::<R>(&name, u, &owner));
                }
            }
            if let Some(limit) = self.config.quotas.limit(&name.tenant, kind.collection) {
                let usage = self.usage(&name.tenant, kind).await?;
                if usage >= i64::try_from(limit).unwrap_or(i64::MAX) {
                    return Err(quota_exceeded(&name.tenant, kind, limit, usage));
                }
            }
            return Ok(r);
        }
        let value = encode(&r);
        let mut writes = vec![Write {
            key: key.clone(),
            expect: Expect::Absent,
            value: Some(value.clone()),
            operation: "create".into(),
        }];
        writes.extend(markers::<R>(&name.tenant));
        let claims: Vec<Claim> = uniques
            .iter()
            .map(|u| Claim {
                key: u.key.clone(),
                owner: key.clone(),
            })
            .collect();
        let mut attempt = 0;
        loop {
            let counting = self.counting(&name.tenant, kind, 1).await?;
            let mut commit = Commit {
                writes: writes.clone(),
                claims: claims.clone(),
                change: self.change(caller, &req.request_id, ms),
                idempotency: mark.clone().map(|m| m.with_outcome(value.clone())),
                ..Commit::default()
            };
            counting.apply(&mut commit);
            return match self.store.commit(commit).await {
                Ok(done) => {
                    self.committed::<R>(&name.tenant);
                    let meta = r.meta_mut();
                    *meta.revision = done.revision;
                    *meta.etag = etag_of(done.revision);
                    Ok(r)
                }
                Err(CommitError::Conflict { key: moved, .. }) if counting.is_marker(&moved) => {
                    if attempt >= self.config.max_retries {
                        return Err(Error::storage("counting for a quota", "the count kept moving"));
                    }
                    attempt += 1;
                    continue;
                }
                Err(CommitError::Conflict {
                    current: Some(existing),
                    ..
                }) => Err(self.exists::<R>(&name, &key, &existing)),
                Err(CommitError::Taken { key, owner }) => {
                    let u = uniques.iter().find(|u| u.key == key);
                    Err(u.map_or_else(
                        || Error::storage("claiming a unique field", "unknown key"),
                        |u| taken::<R>(&name, u, &owner),
                    ))
                }
                Err(CommitError::Limit { value, .. }) => Err(quota_exceeded(
                    &name.tenant,
                    kind,
                    counting.limit.unwrap_or_default(),
                    value,
                )),
                Err(CommitError::Recorded(record)) => {
                    self.replay_recorded::<R>(&name, &req.request_id, &record)
                }
                Err(e) => Err(Error::storage("creating the resource", e)),
            };
        }
    }

    /// Updates the masked fields of a resource.
    pub async fn update<R: Resource>(&self, caller: &Caller, req: UpdateRequest<R>) -> Result<R, Error> {
        let kind = R::KIND;
        let prefix = kind.singular;
        let name = names::parse_name(&format!("{prefix}.name"), kind, req.resource.meta().name)?;
        caller.authorize(&name.tenant, kind.write)?;
        invalid(check_request_id(&req.request_id.id).err().into_iter().collect())?;
        let paths = mask::parse(&req.update_mask, &req.resource)?;
        let etag = req.resource.meta().etag.to_string();
        let target = Target {
            caller,
            verb: "update",
            name: &name,
            etag: &etag,
            request_id: &req.request_id,
            validate_only: req.validate_only,
            operation: Operation::Update,
        };
        let updated = self
            .modify::<R>(target, |current| {
                let mut next = current.clone();
                mask::apply(&paths, &req.resource, &mut next);
                let mut violations = Vec::new();
                validate_resource(&next, prefix, &mut violations);
                invalid(violations)?;
                check_field_locks(&name, current, &next)?;
                Ok(Some(next))
            })
            .await?;
        updated.ok_or_else(|| Error::Internal("updating the resource".into()))
    }

    /// Deletes a resource whose state allows it.
    pub async fn delete<R: Resource>(&self, caller: &Caller, req: DeleteRequest) -> Result<(), Error> {
        let kind = R::KIND;
        let name = names::parse_name("name", kind, &req.name)?;
        caller.authorize(&name.tenant, kind.write)?;
        invalid(check_request_id(&req.request_id.id).err().into_iter().collect())?;
        let target = Target {
            caller,
            verb: "delete",
            name: &name,
            etag: &req.etag,
            request_id: &req.request_id,
            validate_only: req.validate_only,
            operation: Operation::Delete,
        };
        self.modify::<R>(target, |current| {
            let state = current.meta().state;
            if kind.deletable_in.contains(&state) {
                Ok(None)
            } else {
                Err(Error::InvalidTransition {
                    kind,
                    name: name.full(kind),
                    operation: "delete".into(),
                    current_state: kind.state_name(state).into(),
                    allowed_from: kind.state_names(kind.deletable_in),
                    field: None,
                    hint: kind.delete_hint.into(),
                })
            }
        })
        .await?;
        Ok(())
    }

    /// Runs a custom method that moves the resource to another state.
    pub async fn transition<R: Resource>(&self, caller: &Caller, req: TransitionRequest) -> Result<R, Error> {
        let kind = R::KIND;
        let name = names::parse_name("name", kind, &req.name)?;
        caller.authorize(&name.tenant, kind.write)?;
        invalid(check_request_id(&req.request_id.id).err().into_iter().collect())?;
        let transition = kind.transition(req.verb).ok_or_else(|| {
            Error::Malformed(format!("{} has no custom method :{}", kind.type_name, req.verb))
        })?;
        let target = Target {
            caller,
            verb: transition.verb,
            name: &name,
            etag: &req.etag,
            request_id: &req.request_id,
            validate_only: false,
            operation: Operation::Transition,
        };
        let moved = self
            .modify::<R>(target, |current| {
                let state = current.meta().state;
                if state == transition.to {
                    return Err(Error::AlreadyInState {
                        kind,
                        name: name.full(kind),
                        state: kind.state_name(state).into(),
                    });
                }
                if !transition.from.contains(&state) {
                    return Err(Error::InvalidTransition {
                        kind,
                        name: name.full(kind),
                        operation: transition.verb.into(),
                        current_state: kind.state_name(state).into(),
                        allowed_from: kind.state_names(transition.from),
                        field: None,
                        hint: transition.hint.into(),
                    });
                }
                let mut next = current.clone();
                *next.meta_mut().state = transition.to;
                Ok(Some(next))
            })
            .await?;
        moved.ok_or_else(|| Error::Internal("changing the resource's state".into()))
    }

    /// The read-check-commit loop shared by update, delete and transitions.
    /// `decide` sees the current resource and returns its next version, or
    /// `None` to delete it.
    async fn modify<R: Resource>(
        &self,
        target: Target<'_>,
        mut decide: impl FnMut(&R) -> Result<Option<R>, Error>,
    ) -> Result<Option<R>, Error> {
        let Target {
            caller,
            verb,
            name,
            etag,
            request_id,
            validate_only,
            operation,
        } = target;
        let kind = R::KIND;
        let conditional = matches!(operation, Operation::Update | Operation::Delete);
        if conditional && etag.is_empty() && self.config.require_etag.contains(&name.tenant) {
            return Err(Error::PreconditionRequired {
                kind,
                name: name.full(kind),
                operation: if operation == Operation::Update {
                    "update"
                } else {
                    "delete"
                },
            });
        }
        let (mark, _guard) = match self.begin(&name.tenant, request_id, validate_only).await? {
            Begin::Replay(record) if record.value.is_empty() => return Ok(None),
            Begin::Replay(record) => return self.replayed::<R>(name, &record).map(Some),
            Begin::Fresh(mark, guard) => (mark, guard),
        };
        let key = name.key(kind);
        let mut attempt = 0;
        loop {
            let (stored, current) = self.read::<R>(name).await?;
            if !etag.is_empty() && !etag_matches(etag, current.meta().etag) {
                let changed = self.changed_since(&key, etag, &current).await;
                return Err(mismatch(name, etag, &current).with_changed_fields(changed));
            }
            let (ms, ts) = now();
            let mut next = decide(&current)?;
            let before = unique_values(&name.tenant, &current);
            let after = next
                .as_ref()
                .map(|n| unique_values(&name.tenant, n))
                .unwrap_or_default();
            if let Some(next) = next.as_mut() {
                let meta = next.meta_mut();
                *meta.update_time = Some(ts);
                caller.principal.clone_into(meta.updated_by);
            }
            self.admit(caller, name, operation, Some(&current), next.as_ref())
                .await?;
            if validate_only {
                for u in &after {
                    if let Some(owner) = self.owner(&u.key).await?.filter(|o| *o != key) {
                        return Err(taken::<R>(name, u, &owner));
                    }
                }
                return Ok(next);
            }
            let value = next.as_ref().map(encode);
            let counting = if next.is_none() {
                self.counting(&name.tenant, kind, -1).await?
            } else {
                Default::default()
            };
            let mut writes = vec![Write {
                key: key.clone(),
                expect: Expect::Revision(stored.revision),
                value: value.clone(),
                operation: verb.into(),
            }];
            writes.extend(markers::<R>(&name.tenant));
            let mut commit = Commit {
                writes,
                claims: after
                    .iter()
                    .filter(|a| !before.iter().any(|b| b.key == a.key))
                    .map(|a| Claim {
                        key: a.key.clone(),
                        owner: key.clone(),
                    })
                    .collect(),
                releases: before
                    .iter()
                    .filter(|b| !after.iter().any(|a| a.key == b.key))
                    .map(|b| b.key.clone())
                    .collect(),
                change: self.change(caller, request_id, ms),
                idempotency: mark.clone().map(|m| m.with_outcome(value.unwrap_or_default())),
                ..Commit::default()
            };
            counting.apply(&mut commit);
            match self.store.commit(commit).await {
                Ok(done) => {
                    self.committed::<R>(&name.tenant);
                    if let Some(next) = next.as_mut() {
                        let meta = next.meta_mut();
                        *meta.revision = done.revision;
                        *meta.etag = etag_of(done.revision);
                    }
                    return Ok(next);
                }
                Err(CommitError::Conflict { key: moved, .. })
                    if counting.is_marker(&moved) && attempt < self.config.max_retries =>
                {
                    attempt += 1;
                }
                Err(CommitError::Conflict {
                    current: Some(moved), ..
                }) => {
                    let moved = decode::<R>(&key, &moved)?;
                    if !etag.is_empty() || attempt >= self.config.max_retries {
                        let expected = if etag.is_empty() {
                            current.meta().etag
                        } else {
                            etag
                        };
                        let changed = self.changed_since(&key, expected, &moved).await;
                        return Err(mismatch(name, expected, &moved).with_changed_fields(changed));
                    }
                    attempt += 1;
                }
                Err(CommitError::Conflict { current: None, .. }) => {
                    return Err(Error::NotFound {
                        kind,
                        name: name.full(kind),
                    });
                }
                Err(CommitError::Taken {
                    key: taken_key,
                    owner,
                }) => {
                    let u = after.iter().find(|u| u.key == taken_key);
                    return Err(u.map_or_else(
                        || Error::storage("claiming a unique field", "unknown key"),
                        |u| taken::<R>(name, u, &owner),
                    ));
                }
                Err(CommitError::Recorded(record)) if record.value.is_empty() => {
                    self.check_fingerprint(request_id, &record)?;
                    return Ok(None);
                }
                Err(CommitError::Recorded(record)) => {
                    return self.replay_recorded::<R>(name, request_id, &record).map(Some);
                }
                Err(e) => return Err(Error::storage("writing the resource", e)),
            }
        }
    }

    async fn get_stored(&self, key: &[u8]) -> Result<Option<Versioned>, Error> {
        self.store
            .get(key)
            .await
            .map_err(|e| Error::storage("reading the resource", e))
    }

    async fn owner(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
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

    fn exists<R: Resource>(&self, name: &Name, key: &[u8], existing: &Versioned) -> Error {
        match decode::<R>(key, existing) {
            Ok(existing) => Error::Exists {
                kind: R::KIND,
                name: name.full(R::KIND),
                current: current_of(&existing),
            },
            Err(e) => e,
        }
    }

    /// Asks the tenant's policies bound to this kind and operation whether
    /// the change may happen.
    async fn admit<R: Resource>(
        &self,
        caller: &Caller,
        name: &Name,
        operation: Operation,
        current: Option<&R>,
        proposed: Option<&R>,
    ) -> Result<(), Error> {
        let kind = R::KIND;
        if !crate::kinds::JUDGED_KINDS.contains(&kind) {
            return Ok(());
        }
        let bound = self
            .policies
            .bound(&*self.store, &name.tenant, kind.singular, operation)
            .await?;
        if bound.is_empty() {
            return Ok(());
        }
        let object = |r: &R| policy::object_of(r, &encode(r));
        let input = Input {
            operation,
            tenant: name.tenant.clone(),
            principal: caller.principal.clone(),
            current: current.map(object).transpose()?,
            proposed: proposed.map(object).transpose()?,
            now_unix_ms: u64::try_from(now().0).unwrap_or_default(),
        };
        self.policies
            .judge(&*self.store, &bound, Arc::new(input), &name.full(kind))
            .await
    }

    /// Bookkeeping after a commit of `R` in `tenant`.
    fn committed<R: Resource>(&self, tenant: &str) {
        if R::KIND == &crate::kinds::POLICY {
            self.policies.invalidate(tenant);
        }
    }

    fn change(&self, caller: &Caller, request_id: &RequestId, ms: i64) -> ChangeMeta {
        ChangeMeta {
            principal: caller.principal.clone(),
            request_id: request_id.id.clone(),
            time_unix_ms: ms,
        }
    }

    /// The first outcome of a request whose commit found it already
    /// recorded (another replica, or a retry that raced the first).
    fn replay_recorded<R: Resource>(
        &self,
        name: &Name,
        request_id: &RequestId,
        record: &IdempotencyRecord,
    ) -> Result<R, Error> {
        self.check_fingerprint(request_id, record)?;
        self.replayed::<R>(name, record)
    }

    fn check_fingerprint(&self, request_id: &RequestId, record: &IdempotencyRecord) -> Result<(), Error> {
        if record.fingerprint == request_id.fingerprint {
            Ok(())
        } else {
            Err(Error::RequestIdReused {
                request_id: request_id.id.clone(),
            })
        }
    }

    fn replayed<R: Resource>(&self, name: &Name, record: &IdempotencyRecord) -> Result<R, Error> {
        let stored = Versioned {
            revision: record.revision,
            value: record.value.clone(),
        };
        decode::<R>(&name.key(R::KIND), &stored)
    }

    /// Looks up a request id: a finished request is replayed, a running one
    /// is refused, a new one is marked in flight.
    async fn begin(
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

    /// Checks that the unique indexes and the objects agree: every unique
    /// value of every object is indexed to it, and every index entry points
    /// at an object holding that value. Returns the disagreements.
    pub async fn check_consistency(&self) -> Result<Vec<String>, Error> {
        let mut expected = BTreeMap::new();
        let mut problems = Vec::new();
        self.expected_unique::<VirtualMachine>(&mut expected, &mut problems)
            .await?;
        self.expected_unique::<User>(&mut expected, &mut problems).await?;
        self.expected_unique::<Prompt>(&mut expected, &mut problems)
            .await?;
        let mut indexed = BTreeMap::new();
        self.store
            .scan_unique(b"", &mut |key, owner| {
                indexed.insert(key.to_vec(), owner.to_vec());
                Scan::Continue
            })
            .await
            .map_err(|e| Error::storage("scanning unique indexes", e))?;
        for (key, owner) in &expected {
            if indexed.get(key) != Some(owner) {
                problems.push(format!(
                    "{} holds {} but the index says {:?}",
                    names::name_of_key(owner),
                    String::from_utf8_lossy(key),
                    indexed.get(key).map(|o| names::name_of_key(o))
                ));
            }
        }
        for (key, owner) in &indexed {
            if !expected.contains_key(key) {
                problems.push(format!(
                    "index entry {} points at {}, which does not hold it",
                    String::from_utf8_lossy(key),
                    names::name_of_key(owner)
                ));
            }
        }
        Ok(problems)
    }

    async fn expected_unique<R: Resource>(
        &self,
        expected: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        problems: &mut Vec<String>,
    ) -> Result<(), Error> {
        let collection = format!("/{}/", R::KIND.collection);
        self.store
            .scan(b"", None, &mut |key, stored| {
                let text = String::from_utf8_lossy(key);
                let Some((tenant, _)) = text.split_once(&collection) else {
                    return Scan::Continue;
                };
                match decode::<R>(key, &stored) {
                    Ok(r) => {
                        for u in unique_values(tenant, &r) {
                            if let Some(other) = expected.insert(u.key, key.to_vec()) {
                                problems.push(format!(
                                    "{} and {} hold the same {}",
                                    names::name_of_key(&other),
                                    text,
                                    u.field
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(format!("{text}: {e}")),
                }
                Scan::Continue
            })
            .await
            .map(|_| ())
            .map_err(|e| Error::storage("scanning objects", e))
    }
}

/// The marker writes that go with a write of `R` in `tenant`: a policy
/// change moves the tenant's policy marker, which every replica watches.
fn markers<R: Resource>(tenant: &str) -> Option<Write> {
    (R::KIND == &crate::kinds::POLICY).then(|| crate::follow::policy_marker(tenant))
}

/// What a modification applies to.
struct Target<'a> {
    caller: &'a Caller,
    /// The change's name in the log: "update", "delete" or a custom verb.
    verb: &'static str,
    name: &'a Name,
    etag: &'a str,
    request_id: &'a RequestId,
    validate_only: bool,
    operation: Operation,
}

fn mismatch<R: Resource>(name: &Name, expected: &str, current: &R) -> Error {
    Error::EtagMismatch {
        kind: R::KIND,
        name: name.full(R::KIND),
        expected: expected.to_string(),
        current: current_of(current),
        changed_fields: None,
    }
}

fn taken<R: Resource>(name: &Name, u: &UniqueValue, owner: &[u8]) -> Error {
    Error::UniqueTaken {
        kind: R::KIND,
        name: name.full(R::KIND),
        field: u.field,
        value: u.value.clone(),
        existing: names::name_of_key(owner),
    }
}

/// Refuses changes to fields that are locked in the current state.
fn check_field_locks<R: Resource>(name: &Name, current: &R, next: &R) -> Result<(), Error> {
    let kind: &Kind = R::KIND;
    let state = current.meta().state;
    for f in kind.fields {
        let Some(allowed) = f.mutable_in else { continue };
        if current.differs(next, f.name) && !allowed.contains(&state) {
            return Err(Error::InvalidTransition {
                kind,
                name: name.full(kind),
                operation: format!("change the {} of", f.name),
                current_state: kind.state_name(state).into(),
                allowed_from: kind.state_names(allowed),
                field: Some(f.name),
                hint: f.lock_hint.into(),
            });
        }
    }
    Ok(())
}
