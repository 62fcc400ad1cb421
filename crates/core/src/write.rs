//! The write methods: create, update, delete and state transitions. Each
//! validates its request, stages its one operation (see [`crate::stage`])
//! and commits it; transactions stage many of the same operations.

use arbiter_store::Store;

use crate::auth::Caller;
use crate::decide::{check_create, check_target, deleting, moving, transition_of, updating};
use crate::engine::{Engine, decode, encode, etag_of, now};
use crate::error::Error;
use crate::idempotency::{Begin, check_fingerprint, replayed};
use crate::kind::{Kind, Resource};
use crate::lookup::StoreLookup;
use crate::mask;
use crate::names::Name;
use crate::policy::{self, Input, Operation};
use crate::requests::{CreateRequest, DeleteRequest, RequestId, TransitionRequest, UpdateRequest};
use crate::stage::{Codec, Failure, Holder, Stage, mismatch, taken, unique_values};

/// What one modifying operation applies to.
pub(crate) struct Target<'a> {
    pub(crate) caller: &'a Caller,
    /// The change's name in the log: "update", "delete" or a custom verb.
    pub(crate) verb: &'static str,
    pub(crate) name: &'a Name,
    pub(crate) etag: &'a str,
    pub(crate) operation: Operation,
}

impl<S: Store> Engine<S> {
    /// Creates a resource in its initial state.
    pub async fn create<R: Resource>(&self, caller: &Caller, req: CreateRequest<R>) -> Result<R, Error> {
        let creation = check_create(caller, &req.parent, &req.id, &req.resource, &req.request_id.id)?;
        let name = &creation.name;
        let (mark, _guard) = match self
            .begin(&name.tenant, &req.request_id, req.validate_only)
            .await?
        {
            Begin::Replay(record) => return replayed::<R>(name, &record),
            Begin::Fresh(mark, guard) => (mark, guard),
        };
        let mut attempt = 0;
        loop {
            let mut stage = Stage::new(req.validate_only);
            let mut r = self
                .stage_create(&mut stage, 0, caller, name, &creation.resource)
                .await?;
            if req.validate_only {
                return Ok(r);
            }
            let idempotency = mark.clone().map(|m| m.with_outcome(encode(&r)));
            let change = self.change(caller, &req.request_id);
            match self
                .commit_stage(&stage, change, idempotency, attempt < self.config.max_retries)
                .await
            {
                Ok(done) => {
                    let meta = r.meta_mut();
                    *meta.revision = done.revision;
                    *meta.etag = etag_of(done.revision);
                    return Ok(r);
                }
                Err(Failure::Retry) => attempt += 1,
                Err(Failure::Recorded(record)) => {
                    check_fingerprint(&req.request_id, &record)?;
                    return replayed::<R>(name, &record);
                }
                Err(failure) => return Err(single(failure)),
            }
        }
    }

    /// Updates the masked fields of a resource.
    pub async fn update<R: Resource>(&self, caller: &Caller, req: UpdateRequest<R>) -> Result<R, Error> {
        let kind = R::KIND;
        let field = format!("{}.name", kind.singular);
        let name = check_target::<R>(caller, &field, req.resource.meta().name, &req.request_id.id)?;
        let paths = mask::parse(&req.update_mask, &req.resource)?;
        let etag = req.resource.meta().etag.to_string();
        let target = Target {
            caller,
            verb: "update",
            name: &name,
            etag: &etag,
            operation: Operation::Update,
        };
        let decide = updating(&name, &paths, &req.resource);
        let updated = self
            .modify::<R>(target, &req.request_id, req.validate_only, decide)
            .await?;
        updated.ok_or_else(|| Error::Internal("updating the resource".into()))
    }

    /// Deletes a resource whose state allows it.
    pub async fn delete<R: Resource>(&self, caller: &Caller, req: DeleteRequest) -> Result<(), Error> {
        let name = check_target::<R>(caller, "name", &req.name, &req.request_id.id)?;
        let target = Target {
            caller,
            verb: "delete",
            name: &name,
            etag: &req.etag,
            operation: Operation::Delete,
        };
        self.modify::<R>(target, &req.request_id, req.validate_only, deleting(&name))
            .await?;
        Ok(())
    }

    /// Runs a custom method that moves the resource to another state.
    pub async fn transition<R: Resource>(&self, caller: &Caller, req: TransitionRequest) -> Result<R, Error> {
        let name = check_target::<R>(caller, "name", &req.name, &req.request_id.id)?;
        let transition = transition_of::<R>(req.verb)?;
        let target = Target {
            caller,
            verb: transition.verb,
            name: &name,
            etag: &req.etag,
            operation: Operation::Transition,
        };
        let moved = self
            .modify::<R>(target, &req.request_id, false, moving(&name, transition))
            .await?;
        moved.ok_or_else(|| Error::Internal("changing the resource's state".into()))
    }

    /// The stage-and-commit loop of update, delete and transitions.
    async fn modify<R: Resource>(
        &self,
        target: Target<'_>,
        request_id: &RequestId,
        validate_only: bool,
        mut decide: impl FnMut(&R) -> Result<Option<R>, Error>,
    ) -> Result<Option<R>, Error> {
        let name = target.name;
        let (mark, _guard) = match self.begin(&name.tenant, request_id, validate_only).await? {
            Begin::Replay(record) if record.value.is_empty() => return Ok(None),
            Begin::Replay(record) => return replayed::<R>(name, &record).map(Some),
            Begin::Fresh(mark, guard) => (mark, guard),
        };
        let mut attempt = 0;
        loop {
            let mut stage = Stage::new(validate_only);
            let mut next = self
                .stage_modify::<R>(&mut stage, 0, &target, &mut decide)
                .await?;
            if validate_only {
                return Ok(next);
            }
            let outcome = next.as_ref().map(encode).unwrap_or_default();
            let idempotency = mark.clone().map(|m| m.with_outcome(outcome));
            let change = self.change(target.caller, request_id);
            match self
                .commit_stage(&stage, change, idempotency, attempt < self.config.max_retries)
                .await
            {
                Ok(done) => {
                    if let Some(next) = next.as_mut() {
                        let meta = next.meta_mut();
                        *meta.revision = done.revision;
                        *meta.etag = etag_of(done.revision);
                    }
                    return Ok(next);
                }
                Err(Failure::Retry) => attempt += 1,
                Err(Failure::Recorded(record)) => {
                    check_fingerprint(request_id, &record)?;
                    if record.value.is_empty() {
                        return Ok(None);
                    }
                    return replayed::<R>(name, &record).map(Some);
                }
                Err(failure) => return Err(single(failure)),
            }
        }
    }

    /// Stages operation `op`, a create of `resource` as `name`, judged by
    /// the tenant's policies. Returns the resource as created.
    pub(crate) async fn stage_create<R: Resource>(
        &self,
        stage: &mut Stage,
        op: usize,
        caller: &Caller,
        name: &Name,
        resource: &R,
    ) -> Result<R, Error> {
        let kind = R::KIND;
        let key = name.key(kind);
        if let Some(existing) = stage.get(&key).and_then(|s| s.version()) {
            let existing = decode::<R>(&key, &existing)?;
            return Err(Error::Exists {
                kind,
                name: name.full(kind),
                current: crate::engine::current_of(&existing),
            });
        }
        let (_, ts) = now();
        let mut r = R::default();
        mask::apply(&mask::parse(&["*".to_string()], resource)?, resource, &mut r);
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
        self.admit(stage, op, caller, name, Operation::Create, None, Some(&r))
            .await?;
        if stage.exact
            && stage.get(&key).is_none()
            && let Some(existing) = self.get_stored(&key).await?
        {
            let existing = decode::<R>(&key, &existing)?;
            return Err(Error::Exists {
                kind,
                name: name.full(kind),
                current: crate::engine::current_of(&existing),
            });
        }
        let uniques = unique_values(&name.tenant, &r);
        self.check_uniques(stage, kind, name, &key, &uniques).await?;
        self.stage_count(stage, op, &name.tenant, kind, 1).await?;
        stage.touch::<R>(op, &key, name, None);
        stage.set(op, &key, "create", "", Some(encode(&r)), uniques);
        Ok(r)
    }

    /// Stages operation `op`, a change of the resource `target` names as
    /// `decide` makes it from the current version (`None` deletes it),
    /// judged by the tenant's policies. Returns the next version.
    pub(crate) async fn stage_modify<R: Resource>(
        &self,
        stage: &mut Stage,
        op: usize,
        target: &Target<'_>,
        decide: &mut impl FnMut(&R) -> Result<Option<R>, Error>,
    ) -> Result<Option<R>, Error> {
        let Target {
            caller,
            verb,
            name,
            etag,
            operation,
        } = *target;
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
        let key = name.key(kind);
        let not_found = || Error::NotFound {
            kind,
            name: name.full(kind),
        };
        let (stored, current) = match stage.get(&key) {
            Some(staged) => {
                let version = staged.version().ok_or_else(not_found)?;
                let current = decode::<R>(&key, &version)?;
                (version, current)
            }
            None => {
                let stored = self.get_stored(&key).await?.ok_or_else(not_found)?;
                let current = decode::<R>(&key, &stored)?;
                stage.touch(op, &key, name, Some((stored.clone(), &current)));
                (stored, current)
            }
        };
        if !etag.is_empty() && !etag_matches(etag, current.meta().etag) {
            let changed = self.changed_since(&key, etag, Codec::of::<R>(), &stored).await;
            return Err(
                mismatch(kind, &name.full(kind), etag, crate::engine::current_of(&current))
                    .with_changed_fields(changed),
            );
        }
        let (_, ts) = now();
        let mut next = decide(&current)?;
        if let Some(next) = next.as_mut() {
            let meta = next.meta_mut();
            *meta.update_time = Some(ts);
            caller.principal.clone_into(meta.updated_by);
        }
        self.admit(stage, op, caller, name, operation, Some(&current), next.as_ref())
            .await?;
        let uniques = next
            .as_ref()
            .map(|n| unique_values(&name.tenant, n))
            .unwrap_or_default();
        self.check_uniques(stage, kind, name, &key, &uniques).await?;
        if next.is_none() {
            self.stage_count(stage, op, &name.tenant, kind, -1).await?;
        }
        stage.set(op, &key, verb, etag, next.as_ref().map(encode), uniques);
        Ok(next)
    }

    /// Refuses unique values that another object holds: one the stage
    /// touched, or, when the stage is exact, one in the store.
    async fn check_uniques(
        &self,
        stage: &Stage,
        kind: &'static Kind,
        name: &Name,
        key: &[u8],
        uniques: &[crate::stage::UniqueValue],
    ) -> Result<(), Error> {
        for u in uniques {
            let owner = match stage.holder(&u.key) {
                Holder::Object(owner) => Some(owner.to_vec()),
                Holder::Released => None,
                Holder::Unknown if stage.exact => self.owner(&u.key).await?,
                Holder::Unknown => None,
            };
            if let Some(owner) = owner.filter(|o| o != key) {
                return Err(taken(kind, &name.full(kind), u, &owner));
            }
        }
        Ok(())
    }

    /// Asks the tenant's policies bound to this kind and operation whether
    /// operation `op` may happen; what they look up becomes a precondition
    /// of the stage's commit.
    #[allow(clippy::too_many_arguments)]
    async fn admit<R: Resource>(
        &self,
        stage: &mut Stage,
        op: usize,
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
        let input = Input {
            operation,
            tenant: name.tenant.clone(),
            principal: caller.principal.clone(),
            current: current.map(policy::object_of),
            proposed: proposed.map(policy::object_of),
            now_unix_ms: crate::engine::now_ms(),
        };
        let lookup = std::sync::Arc::new(StoreLookup::new(
            std::sync::Arc::clone(&self.store),
            &name.tenant,
            stage,
        ));
        // The resource's full name, as its current or proposed version
        // holds it.
        let resource = proposed.or(current).map_or("", |r| r.meta().name);
        let judged = self
            .policies
            .judge(
                &*self.store,
                &bound,
                std::sync::Arc::new(input),
                resource,
                Some(lookup.clone()),
            )
            .await;
        stage
            .lookups
            .extend(lookup.take_reads().into_iter().map(|looked| (op, looked)));
        judged
    }
}

/// The error of a failed single write (no operation index to add).
fn single(failure: Failure) -> Error {
    match failure {
        Failure::Failed { error, .. } => error,
        Failure::Retry => Error::Internal("retrying the write".into()),
        Failure::Recorded(_) => Error::Internal("replaying a recorded request".into()),
    }
}

/// Compares a client's etag with the current one, tolerating a missing
/// pair of quotes.
fn etag_matches(given: &str, current: &str) -> bool {
    let bare = |e: &str| e.trim().trim_matches('"').to_string();
    bare(given) == bare(current)
}
