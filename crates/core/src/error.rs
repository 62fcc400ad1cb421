//! The domain error of every operation. The server turns it into a
//! `google.rpc.Status` (and the HTTP layer into problem details) in exactly
//! one place; every variant carries what a client needs to resolve it.

use crate::kind::Kind;
use crate::policy::verdict::{Denial, Fault};
pub use crate::violation::FieldViolation;

/// Most violations one error reports: the last of them then says how many
/// more there were. Errors travel in gRPC trailers, which clients bound.
pub const MAX_VIOLATIONS: usize = 8;

/// `Ok` when there is no violation, else `INVALID_FIELD` with at most
/// [`MAX_VIOLATIONS`] of them.
pub(crate) fn invalid(mut violations: Vec<FieldViolation>) -> Result<(), Error> {
    if violations.is_empty() {
        return Ok(());
    }
    if violations.len() > MAX_VIOLATIONS {
        let more = violations.len() - (MAX_VIOLATIONS - 1);
        let next = violations.swap_remove(MAX_VIOLATIONS - 1);
        violations.truncate(MAX_VIOLATIONS - 1);
        violations.push(FieldViolation::new(
            next.field,
            format!(
                "and {more} more invalid fields from here on; fix the ones listed and send the request again"
            ),
        ));
    }
    Err(Error::InvalidField { violations })
}

/// The state a resource is in now, reported with conflicts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    /// Its etag.
    pub etag: String,
    /// Its state name.
    pub state: String,
    /// Who changed it last.
    pub updated_by: String,
    /// When it changed last, RFC 3339.
    pub update_time: String,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Request fields are invalid (INVALID_ARGUMENT `INVALID_FIELD`).
    #[error("the request has invalid fields: {}", describe(violations))]
    InvalidField {
        /// The bad fields.
        violations: Vec<FieldViolation>,
    },
    /// No resource has this name (NOT_FOUND `RESOURCE_NOT_FOUND`).
    #[error("{} {name} does not exist; check the name, or list the {} to find it", kind.noun, kind.collection)]
    NotFound {
        /// The kind looked for.
        kind: &'static Kind,
        /// The full name.
        name: String,
    },
    /// The name is taken (ALREADY_EXISTS `RESOURCE_EXISTS`).
    #[error("{} {name} already exists; choose another {}_id, or get the existing one", kind.noun, kind.singular)]
    Exists {
        /// The kind.
        kind: &'static Kind,
        /// The taken name.
        name: String,
        /// The existing resource's state.
        current: Current,
    },
    /// A unique field's value is held by another resource (ALREADY_EXISTS
    /// `UNIQUE_FIELD_TAKEN`).
    #[error(
        "{field} {value:?} is already used by {existing}; choose another {field}, or update {existing} instead"
    )]
    UniqueTaken {
        /// The kind.
        kind: &'static Kind,
        /// The resource being written.
        name: String,
        /// The unique field.
        field: &'static str,
        /// The value asked for.
        value: String,
        /// The resource that holds it.
        existing: String,
    },
    /// The client's etag is stale (ABORTED `ETAG_MISMATCH`).
    #[error("{} {name} was changed by {} at {} (etag {} is now {}); get it again, reapply your change and retry with the new etag", kind.noun, current.updated_by, current.update_time, expected, current.etag)]
    EtagMismatch {
        /// The kind.
        kind: &'static Kind,
        /// The resource.
        name: String,
        /// The etag the client sent.
        expected: String,
        /// The resource as it is now.
        current: Current,
        /// The fields changed since the client's version, when that version
        /// is still in the change log.
        changed_fields: Option<Vec<String>>,
    },
    /// An object the policies looked up changed between their verdict and
    /// the commit (ABORTED `ETAG_MISMATCH`, metadata `looked_up`): the
    /// client sent an etag, or the write was judged again too often.
    #[error("policies judged {} {name} on {looked_up}, which changed before the write committed; get {name} again and retry", kind.noun)]
    LookupChanged {
        /// The kind of the resource written.
        kind: &'static Kind,
        /// The resource written.
        name: String,
        /// The etag the client sent, if any.
        expected: String,
        /// The object a policy looked up that changed.
        looked_up: String,
    },
    /// The same request id is being processed (ABORTED `REQUEST_IN_PROGRESS`).
    #[error(
        "a request with request_id {request_id} is still in progress; retry after it completes to get its outcome"
    )]
    RequestInProgress {
        /// The request id.
        request_id: String,
    },
    /// The request id was used for a different request (INVALID_ARGUMENT
    /// `REQUEST_ID_REUSED`).
    #[error(
        "request_id {request_id} was already used for a different request; send a new UUID for a new request"
    )]
    RequestIdReused {
        /// The request id.
        request_id: String,
    },
    /// The lifecycle does not allow the operation in the current state
    /// (FAILED_PRECONDITION `INVALID_TRANSITION`).
    #[error("cannot {operation} {} {name} while it is {current_state}; {hint}", kind.noun)]
    InvalidTransition {
        /// The kind.
        kind: &'static Kind,
        /// The resource.
        name: String,
        /// What was attempted, e.g. `delete`, `start`, `change machine_type`.
        operation: String,
        /// The state it is in.
        current_state: String,
        /// The states in which the operation is allowed.
        allowed_from: Vec<&'static str>,
        /// The field the operation would change, for field locks.
        field: Option<&'static str>,
        /// How to get there.
        hint: String,
    },
    /// The resource is already in the requested state (FAILED_PRECONDITION
    /// `ALREADY_IN_STATE`).
    #[error("{} {name} is already {state}; nothing to do", kind.noun)]
    AlreadyInState {
        /// The kind.
        kind: &'static Kind,
        /// The resource.
        name: String,
        /// The state.
        state: String,
    },
    /// The tenant requires a precondition on updates and deletes and none
    /// was given (FAILED_PRECONDITION `PRECONDITION_REQUIRED`).
    #[error("tenant requires conditional writes: send the etag of {} {name} to {operation} it (If-Match over HTTP)", kind.noun)]
    PreconditionRequired {
        /// The kind.
        kind: &'static Kind,
        /// The resource.
        name: String,
        /// `update` or `delete`.
        operation: &'static str,
    },
    /// The caller's token does not grant the tenant (PERMISSION_DENIED
    /// `TENANT_FORBIDDEN`).
    #[error("principal {principal} may not access tenant {tenant}; use a token issued for that tenant")]
    TenantForbidden {
        /// The caller.
        principal: String,
        /// The tenant asked for.
        tenant: String,
    },
    /// The caller's role is too weak (PERMISSION_DENIED `ROLE_FORBIDDEN`).
    #[error("principal {principal} has role {role}, but this needs role {required} or higher")]
    RoleForbidden {
        /// The caller.
        principal: String,
        /// The caller's role.
        role: &'static str,
        /// The weakest role allowed.
        required: &'static str,
    },
    /// A tenant policy refused the request: FAILED_PRECONDITION
    /// `POLICY_DENIED`, INVALID_ARGUMENT `POLICY_REJECTED` or
    /// PERMISSION_DENIED `POLICY_FORBIDDEN`, by the denial's kind.
    #[error("policy {policy} (revision {revision}) refused this change of {resource}: {}", denial.message)]
    PolicyDenied {
        /// The policy's full name.
        policy: String,
        /// The policy's revision.
        revision: u64,
        /// The resource being changed.
        resource: String,
        /// The policy's denial, cut to size.
        denial: Denial,
    },
    /// A fail-closed policy could not decide (INTERNAL `POLICY_FAULT`).
    /// The message names the kind of fault only: what the guest wrote
    /// (a panic message with its source location, say) goes to the server
    /// log, not to every caller of the tenant.
    #[error(
        "policy {policy} (revision {revision}) failed ({}), and it fails closed, so this change of {resource} was refused; the policy's owner finds the details in the server log and should fix it or set failure_policy FAIL_OPEN",
        fault.kind.as_str()
    )]
    PolicyFault {
        /// The policy's full name.
        policy: String,
        /// The policy's revision.
        revision: u64,
        /// The resource being changed.
        resource: String,
        /// What went wrong.
        fault: Fault,
    },
    /// No valid credentials (UNAUTHENTICATED).
    #[error("{0}")]
    Unauthenticated(String),
    /// The request could not be parsed at all (INVALID_ARGUMENT
    /// `MALFORMED_REQUEST`).
    #[error("{0}")]
    Malformed(String),
    /// A watch asked for changes the log no longer retains (OUT_OF_RANGE
    /// `REVISION_COMPACTED`).
    #[error(
        "revision {requested} is no longer retained (the oldest is {oldest}); list again, or watch with send_initial, and resume from the bookmark"
    )]
    RevisionCompacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision retained.
        oldest: u64,
    },
    /// A watcher fell too far behind (ABORTED `WATCH_TOO_SLOW`).
    #[error(
        "the watch fell too far behind and was ended; resume with start_revision {resume_revision}, and read faster"
    )]
    WatchTooSlow {
        /// The first revision not delivered.
        resume_revision: u64,
    },
    /// A create would take the tenant past its quota of the collection
    /// (RESOURCE_EXHAUSTED `QUOTA_EXCEEDED`).
    #[error(
        "tenant {tenant} holds {usage} {collection} and its quota is {limit}; delete {collection} it no longer needs, or ask an operator to raise the quota"
    )]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// The collection, e.g. `vms`.
        collection: &'static str,
        /// The quota.
        limit: u64,
        /// How many the tenant holds.
        usage: u64,
    },
    /// Too many requests: a rate limit, the in-flight limit, or no policy
    /// evaluation slot in time (RESOURCE_EXHAUSTED `RATE_LIMITED`).
    #[error("{what}; retry after {}ms", retry_after.as_millis())]
    RateLimited {
        /// Which limit, in words.
        what: String,
        /// The limit, for clients (e.g. `200/s`).
        limit: String,
        /// How long to wait before a retry may pass.
        retry_after: std::time::Duration,
    },
    /// The store cannot be reached (UNAVAILABLE `STORE_UNAVAILABLE`).
    #[error("the store is unavailable while {0}; retry shortly")]
    StoreUnavailable(String),
    /// The server failed. The text says what failed, never internals.
    #[error("internal error while {0}; retry later, and report it if it persists")]
    Internal(String),
    /// An operation of a transaction failed, so nothing was written: its
    /// own error, answered with ErrorInfo metadata `operation_index`.
    #[error("operation {index} of the transaction failed, so none was applied: {error}")]
    InOperation {
        /// The operation's index, from 0.
        index: usize,
        /// Its error, as if it had been sent alone.
        error: Box<Error>,
    },
}

fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    parts.join("; ")
}

impl Error {
    /// This error as the failure of operation `index` of a transaction;
    /// its field violations are prefixed `operations[index].`.
    pub(crate) fn in_operation(mut self, index: usize) -> Self {
        if let Self::InvalidField { violations } = &mut self {
            for v in violations {
                v.field = format!("operations[{index}].{}", v.field);
            }
        }
        Self::InOperation {
            index,
            error: Box::new(self),
        }
    }

    /// One bad field.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidField {
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    /// A storage failure while doing `what`; the cause goes to the log only.
    /// A store out of reach is `StoreUnavailable`, which clients retry.
    pub(crate) fn storage(what: &str, cause: impl StoreCause) -> Self {
        if cause.unavailable() {
            tracing::warn!(error = %cause, "the store is unavailable while {what}");
            return Self::StoreUnavailable(what.to_string());
        }
        tracing::error!(error = %cause, "storage failure while {what}");
        Self::Internal(what.to_string())
    }
}

/// The cause of a storage failure.
pub(crate) trait StoreCause: std::fmt::Display {
    /// Whether the store could not be reached (a retry may succeed).
    fn unavailable(&self) -> bool {
        false
    }
}

impl StoreCause for arbiter_store::StoreError {
    fn unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl StoreCause for arbiter_store::CommitError {
    fn unavailable(&self) -> bool {
        matches!(self, Self::Store(arbiter_store::StoreError::Unavailable(_)))
    }
}

impl StoreCause for &str {}
impl StoreCause for String {}
impl StoreCause for prost::DecodeError {}
impl StoreCause for arbiter_api::json::JsonError {}

impl Error {
    /// Whether this is `ETAG_MISMATCH`, to which changed fields can be added.
    pub(crate) fn with_changed_fields(mut self, fields: Option<Vec<String>>) -> Self {
        if let Self::EtagMismatch { changed_fields, .. } = &mut self {
            *changed_fields = fields;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::violation::{MAX_DESCRIPTION_BYTES, MAX_FIELD_BYTES};

    #[test]
    fn violations_are_bounded_in_number_and_size() {
        let many: Vec<FieldViolation> = (0..1000)
            .map(|i| FieldViolation::new(format!("vm.labels[\"{}{i}\"]", "k".repeat(500)), "d".repeat(5000)))
            .collect();
        let Err(Error::InvalidField { violations }) = invalid(many) else {
            panic!("violations make an error");
        };
        assert_eq!(violations.len(), MAX_VIOLATIONS);
        assert!(
            violations[MAX_VIOLATIONS - 1]
                .description
                .starts_with("and 993 more")
        );
        for v in &violations {
            assert!(
                v.field.len() <= MAX_FIELD_BYTES && v.field.ends_with("..."),
                "{}",
                v.field
            );
            assert!(
                v.description.len() <= MAX_DESCRIPTION_BYTES,
                "{}",
                v.description.len()
            );
        }
        // Cut at a character boundary.
        let wide = FieldViolation::new("é".repeat(100), "");
        assert!(wide.field.len() <= MAX_FIELD_BYTES);
        assert!(invalid(Vec::new()).is_ok());
    }
}
