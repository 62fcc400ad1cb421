//! Transactions (`CommitTransaction`): up to [`MAX_OPERATIONS`] writes of
//! one tenant, each checked and judged exactly as if sent alone on the
//! state the ones before it leave, committed at one revision or not at all.
//! The first operation that fails fails the transaction with its own error
//! and its index.

use arbiter_api::v1::{
    CommitTransactionRequest, CommitTransactionResponse, OperationResult, Prompt, User, VirtualMachine,
    operation::Operation as Op, operation_result::Result as Outcome,
};
use arbiter_store::Store;
use prost::Message;

use crate::auth::Caller;
use crate::decide::{Creation, check_create, check_target, deleting, moving, transition_of, updating};
use crate::engine::{Engine, etag_of};
use crate::error::{Error, invalid};
use crate::idempotency::{Begin, check_fingerprint};
use crate::kind::{Resource, Transition};
use crate::mask::{self, Path};
use crate::names::{self, Name};
use crate::policy::Operation;
use crate::requests::RequestId;
use crate::stage::{Failure, Stage};
use crate::validate::check_request_id;
use crate::write::Target;

/// Most operations in one transaction.
pub const MAX_OPERATIONS: usize = 100;

/// One checked operation on a resource of kind `R`.
enum Step<R> {
    Create(Creation<R>),
    Update {
        name: Name,
        paths: Vec<Path>,
        resource: R,
        etag: String,
    },
    Delete {
        name: Name,
        etag: String,
    },
    Transition {
        name: Name,
        transition: &'static Transition,
        etag: String,
    },
}

/// One checked operation of any kind.
enum AnyStep {
    Vm(Step<VirtualMachine>),
    User(Step<User>),
    Prompt(Step<Prompt>),
}

/// Refuses what the transaction's own fields cover.
fn no_inner(request_id: &str, validate_only: bool) -> Result<(), Error> {
    if !request_id.is_empty() {
        return Err(Error::field(
            "request_id",
            "must be empty inside a transaction: the transaction's request_id covers all its operations",
        ));
    }
    if validate_only {
        return Err(Error::field(
            "validate_only",
            "must be false inside a transaction: set the transaction's validate_only instead",
        ));
    }
    Ok(())
}

/// Refuses a resource outside the transaction's tenant.
fn in_tenant(field: &str, name: &Name, tenant: &str) -> Result<(), Error> {
    if name.tenant == tenant {
        Ok(())
    } else {
        Err(Error::field(
            field,
            format!(
                "names tenant {:?}, but this transaction is in tenants/{tenant}; every operation works in the transaction's parent",
                name.tenant
            ),
        ))
    }
}

fn create<R: Resource>(
    caller: &Caller,
    tenant: &str,
    parent: &str,
    id: &str,
    resource: Option<R>,
    (request_id, validate_only): (&str, bool),
) -> Result<Step<R>, Error> {
    no_inner(request_id, validate_only)?;
    let creation = check_create(caller, parent, id, &resource.unwrap_or_default(), "")?;
    in_tenant("parent", &creation.name, tenant)?;
    Ok(Step::Create(creation))
}

fn update<R: Resource>(
    caller: &Caller,
    tenant: &str,
    resource: Option<R>,
    mask: Option<prost_types::FieldMask>,
    (request_id, validate_only): (&str, bool),
) -> Result<Step<R>, Error> {
    no_inner(request_id, validate_only)?;
    let resource = resource.unwrap_or_default();
    let field = format!("{}.name", R::KIND.singular);
    let name = check_target::<R>(caller, &field, resource.meta().name, "")?;
    in_tenant(&field, &name, tenant)?;
    let paths = mask::parse(&mask.map(|m| m.paths).unwrap_or_default(), &resource)?;
    Ok(Step::Update {
        name,
        paths,
        etag: resource.meta().etag.to_string(),
        resource,
    })
}

fn delete<R: Resource>(
    caller: &Caller,
    tenant: &str,
    name: &str,
    etag: String,
    (request_id, validate_only): (&str, bool),
) -> Result<Step<R>, Error> {
    no_inner(request_id, validate_only)?;
    let name = check_target::<R>(caller, "name", name, "")?;
    in_tenant("name", &name, tenant)?;
    Ok(Step::Delete { name, etag })
}

fn transition<R: Resource>(
    caller: &Caller,
    tenant: &str,
    name: &str,
    etag: String,
    request_id: &str,
    verb: &str,
) -> Result<Step<R>, Error> {
    no_inner(request_id, false)?;
    let name = check_target::<R>(caller, "name", name, "")?;
    in_tenant("name", &name, tenant)?;
    Ok(Step::Transition {
        name,
        transition: transition_of::<R>(verb)?,
        etag,
    })
}

/// Checks one operation: its fields, its tenant, the caller's right to it.
fn check(caller: &Caller, tenant: &str, op: Option<Op>) -> Result<AnyStep, Error> {
    use AnyStep::{Prompt as P, User as U, Vm as V};
    let c = caller;
    let t = tenant;
    Ok(match op {
        None => {
            return Err(Error::field(
                "operation",
                "is empty; set one operation, e.g. create_virtual_machine",
            ));
        }
        Some(Op::CreateVirtualMachine(r)) => V(create(
            c,
            t,
            &r.parent,
            &r.vm_id,
            r.vm,
            (&r.request_id, r.validate_only),
        )?),
        Some(Op::UpdateVirtualMachine(r)) => V(update(
            c,
            t,
            r.vm,
            r.update_mask,
            (&r.request_id, r.validate_only),
        )?),
        Some(Op::DeleteVirtualMachine(r)) => {
            V(delete(c, t, &r.name, r.etag, (&r.request_id, r.validate_only))?)
        }
        Some(Op::StartVirtualMachine(r)) => V(transition(c, t, &r.name, r.etag, &r.request_id, "start")?),
        Some(Op::StopVirtualMachine(r)) => V(transition(c, t, &r.name, r.etag, &r.request_id, "stop")?),
        Some(Op::CreateUser(r)) => U(create(
            c,
            t,
            &r.parent,
            &r.user_id,
            r.user,
            (&r.request_id, r.validate_only),
        )?),
        Some(Op::UpdateUser(r)) => U(update(
            c,
            t,
            r.user,
            r.update_mask,
            (&r.request_id, r.validate_only),
        )?),
        Some(Op::DeleteUser(r)) => U(delete(c, t, &r.name, r.etag, (&r.request_id, r.validate_only))?),
        Some(Op::ActivateUser(r)) => U(transition(c, t, &r.name, r.etag, &r.request_id, "activate")?),
        Some(Op::SuspendUser(r)) => U(transition(c, t, &r.name, r.etag, &r.request_id, "suspend")?),
        Some(Op::CreatePrompt(r)) => P(create(
            c,
            t,
            &r.parent,
            &r.prompt_id,
            r.prompt,
            (&r.request_id, r.validate_only),
        )?),
        Some(Op::UpdatePrompt(r)) => P(update(
            c,
            t,
            r.prompt,
            r.update_mask,
            (&r.request_id, r.validate_only),
        )?),
        Some(Op::DeletePrompt(r)) => P(delete(c, t, &r.name, r.etag, (&r.request_id, r.validate_only))?),
        Some(Op::PublishPrompt(r)) => P(transition(c, t, &r.name, r.etag, &r.request_id, "publish")?),
        Some(Op::ArchivePrompt(r)) => P(transition(c, t, &r.name, r.etag, &r.request_id, "archive")?),
    })
}

/// Sets the revision and etag of every resource in `results`.
fn stamp(results: &mut [OperationResult], revision: u64) {
    for result in results {
        let meta = match result.result.as_mut() {
            Some(Outcome::Vm(r)) => r.meta_mut(),
            Some(Outcome::User(r)) => r.meta_mut(),
            Some(Outcome::Prompt(r)) => r.meta_mut(),
            Some(Outcome::Deleted(())) | None => continue,
        };
        *meta.revision = revision;
        *meta.etag = etag_of(revision);
    }
}

/// The answer recorded for a transaction's request id.
fn replayed(record: &arbiter_store::IdempotencyRecord) -> Result<CommitTransactionResponse, Error> {
    let mut response = CommitTransactionResponse::decode(record.value.as_slice())
        .map_err(|e| Error::storage("decoding a recorded transaction", e))?;
    response.revision = record.revision;
    stamp(&mut response.results, record.revision);
    Ok(response)
}

impl<S: Store> Engine<S> {
    /// Commits the operations of `req` as one.
    pub async fn commit_transaction(
        &self,
        caller: &Caller,
        req: CommitTransactionRequest,
    ) -> Result<CommitTransactionResponse, Error> {
        let request_id = RequestId::of(req.request_id.clone(), "CommitTransaction", &req);
        let tenant = names::parse_parent("parent", &req.parent)?;
        let mut violations = Vec::new();
        if req.operations.is_empty() || req.operations.len() > MAX_OPERATIONS {
            violations.push(crate::error::FieldViolation::new(
                "operations",
                format!(
                    "has {} operations; a transaction takes 1 to {MAX_OPERATIONS}: split larger ones",
                    req.operations.len()
                ),
            ));
        }
        violations.extend(check_request_id(&req.request_id).err());
        invalid(violations)?;
        let steps = req
            .operations
            .into_iter()
            .enumerate()
            .map(|(i, op)| check(caller, &tenant, op.operation).map_err(|e| e.in_operation(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let (mark, _guard) = match self.begin(&tenant, &request_id, req.validate_only).await? {
            Begin::Replay(record) => return replayed(&record),
            Begin::Fresh(mark, guard) => (mark, guard),
        };
        let mut attempt = 0;
        loop {
            let mut stage = Stage::new(true);
            let mut results = Vec::with_capacity(steps.len());
            for (i, step) in steps.iter().enumerate() {
                let outcome = self
                    .stage_any(&mut stage, i, caller, step)
                    .await
                    .map_err(|e| e.in_operation(i))?;
                results.push(OperationResult {
                    result: Some(outcome.unwrap_or(Outcome::Deleted(()))),
                });
            }
            let mut response = CommitTransactionResponse { revision: 0, results };
            if req.validate_only {
                return Ok(response);
            }
            let idempotency = mark.clone().map(|m| m.with_outcome(response.encode_to_vec()));
            let change = self.change(caller, &request_id);
            match self
                .commit_stage(&stage, change, idempotency, attempt < self.config.max_retries)
                .await
            {
                Ok(done) => {
                    response.revision = done.revision;
                    stamp(&mut response.results, done.revision);
                    return Ok(response);
                }
                Err(Failure::Retry) => attempt += 1,
                Err(Failure::Recorded(record)) => {
                    check_fingerprint(&request_id, &record)?;
                    return replayed(&record);
                }
                Err(failure) => return Err(indexed(failure)),
            }
        }
    }

    /// Stages one operation of any kind; `None` for a delete.
    async fn stage_any(
        &self,
        stage: &mut Stage,
        i: usize,
        caller: &Caller,
        step: &AnyStep,
    ) -> Result<Option<Outcome>, Error> {
        Ok(match step {
            AnyStep::Vm(s) => self.stage_step(stage, i, caller, s).await?.map(Outcome::Vm),
            AnyStep::User(s) => self.stage_step(stage, i, caller, s).await?.map(Outcome::User),
            AnyStep::Prompt(s) => self.stage_step(stage, i, caller, s).await?.map(Outcome::Prompt),
        })
    }

    async fn stage_step<R: Resource>(
        &self,
        stage: &mut Stage,
        i: usize,
        caller: &Caller,
        step: &Step<R>,
    ) -> Result<Option<R>, Error> {
        let target = |verb, name, etag, operation| Target {
            caller,
            verb,
            name,
            etag,
            operation,
        };
        match step {
            Step::Create(c) => self
                .stage_create(stage, i, caller, &c.name, &c.resource)
                .await
                .map(Some),
            Step::Update {
                name,
                paths,
                resource,
                etag,
            } => {
                let target = target("update", name, etag, Operation::Update);
                self.stage_modify(stage, i, &target, &mut updating(name, paths, resource))
                    .await
            }
            Step::Delete { name, etag } => {
                let target = target("delete", name, etag, Operation::Delete);
                self.stage_modify(stage, i, &target, &mut deleting(name)).await
            }
            Step::Transition {
                name,
                transition,
                etag,
            } => {
                let target = target(transition.verb, name, etag, Operation::Transition);
                self.stage_modify(stage, i, &target, &mut moving(name, transition))
                    .await
            }
        }
    }
}

/// The error of a failed transaction, with the index of the operation at
/// fault.
fn indexed(failure: Failure) -> Error {
    match failure {
        Failure::Failed { op: Some(i), error } => error.in_operation(i),
        Failure::Failed { op: None, error } => error,
        Failure::Retry => Error::Internal("retrying the transaction".into()),
        Failure::Recorded(_) => Error::Internal("replaying a recorded transaction".into()),
    }
}
