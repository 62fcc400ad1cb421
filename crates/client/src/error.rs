//! The one error of the client: a variant per `ErrorInfo.reason` of the
//! API (ARCHITECTURE.md section 3), carrying the details the server sent,
//! decoded — what conflicted, the current version, how long to wait.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The version of a resource the server holds now, sent with conflicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Its etag.
    pub etag: String,
    /// Its state name, e.g. `RUNNING`.
    pub state: String,
    /// Who changed it last.
    pub updated_by: String,
    /// When, RFC 3339.
    pub update_time: String,
}

/// One field at fault, with what is expected of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path in the request (or the policy's subject).
    pub field: String,
    /// What is wrong and what is expected.
    pub description: String,
}

/// How a request failed. Every variant of the API's reasons carries
/// [`Info`]: the server's message (which names the way out), its gRPC code,
/// and for a transaction the index of the operation at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `RESOURCE_EXISTS`: the name is taken.
    #[error("{info}")]
    AlreadyExists {
        /// The taken name.
        resource: String,
        /// The existing resource.
        current: Current,
        /// Message, code, operation.
        info: Info,
    },
    /// `UNIQUE_FIELD_TAKEN`: another resource holds a unique value.
    #[error("{info}")]
    UniqueFieldTaken {
        /// The unique field, e.g. `email`.
        field: String,
        /// The value asked for.
        value: String,
        /// The resource that holds it.
        existing: String,
        /// Message, code, operation.
        info: Info,
    },
    /// `ETAG_MISMATCH`: the resource changed since the etag was read.
    #[error("{info}")]
    EtagMismatch {
        /// The resource.
        resource: String,
        /// The etag that was sent.
        expected_etag: String,
        /// The etag now.
        current_etag: String,
        /// Who changed it last.
        updated_by: String,
        /// When, RFC 3339.
        update_time: String,
        /// The fields changed since the sent etag's version, when the
        /// server still retains that version.
        changed_fields: Option<Vec<String>>,
        /// Message, code, operation.
        info: Info,
    },
    /// `REQUEST_IN_PROGRESS`: the same request id is still running.
    #[error("{info}")]
    RequestInProgress {
        /// How long to wait before asking again.
        retry_after: Option<Duration>,
        /// Message, code, operation.
        info: Info,
    },
    /// `INVALID_TRANSITION`: the lifecycle does not allow this now.
    #[error("{info}")]
    InvalidTransition {
        /// The resource.
        resource: String,
        /// Its state now.
        current_state: String,
        /// The states it is allowed from.
        allowed_from: Vec<String>,
        /// A field locked in this state, when that is what conflicted.
        field: Option<String>,
        /// Message, code, operation.
        info: Info,
    },
    /// `ALREADY_IN_STATE`: nothing to do.
    #[error("{info}")]
    AlreadyInState {
        /// The state it is in.
        current_state: String,
        /// Message, code, operation.
        info: Info,
    },
    /// `PRECONDITION_REQUIRED`: the tenant requires an etag on this write.
    #[error("{info}")]
    PreconditionRequired {
        /// The resource.
        resource: String,
        /// Message, code, operation.
        info: Info,
    },
    /// `POLICY_DENIED`, `POLICY_REJECTED` or `POLICY_FORBIDDEN`: a tenant
    /// policy refused the change (see `info.reason` for which).
    #[error("{info}")]
    PolicyDenied {
        /// The policy's name.
        policy: String,
        /// The policy's revision.
        policy_revision: String,
        /// The policy's own reason.
        denial_reason: String,
        /// The fields it names.
        violations: Vec<Violation>,
        /// Message, code, operation.
        info: Info,
    },
    /// `POLICY_FAULT`: a fail-closed policy could not decide.
    #[error("{info}")]
    PolicyFault {
        /// The policy's name.
        policy: String,
        /// `timeout`, `memory`, `trap` or `unavailable`.
        fault: String,
        /// Message, code, operation.
        info: Info,
    },
    /// `INVALID_FIELD`: request fields are invalid.
    #[error("{info}")]
    InvalidField {
        /// Each bad field.
        violations: Vec<Violation>,
        /// Message, code, operation.
        info: Info,
    },
    /// `MALFORMED_REQUEST`: the request cannot be read.
    #[error("{info}")]
    Malformed {
        /// Message, code, operation.
        info: Info,
    },
    /// `REQUEST_ID_REUSED`: the request id was used for another request.
    #[error("{info}")]
    RequestIdReused {
        /// Message, code, operation.
        info: Info,
    },
    /// `UNAUTHENTICATED`: no token, or an unknown one.
    #[error("{info}")]
    Unauthenticated {
        /// Message, code, operation.
        info: Info,
    },
    /// `TENANT_FORBIDDEN` or `ROLE_FORBIDDEN`: the token does not allow it.
    #[error("{info}")]
    Forbidden {
        /// The role needed, for `ROLE_FORBIDDEN`.
        required_role: Option<String>,
        /// Message, code, operation.
        info: Info,
    },
    /// `RESOURCE_NOT_FOUND`.
    #[error("{info}")]
    NotFound {
        /// The name looked for.
        resource: String,
        /// Message, code, operation.
        info: Info,
    },
    /// `QUOTA_EXCEEDED`: the tenant holds its quota of the collection.
    #[error("{info}")]
    QuotaExceeded {
        /// The collection, e.g. `vms`.
        collection: String,
        /// The quota.
        limit: u64,
        /// How many the tenant holds.
        usage: u64,
        /// Message, code, operation.
        info: Info,
    },
    /// `RATE_LIMITED`: past a rate or in-flight limit.
    #[error("{info}")]
    RateLimited {
        /// How long to wait.
        retry_after: Option<Duration>,
        /// The limit, e.g. `200/s`.
        limit: String,
        /// Message, code, operation.
        info: Info,
    },
    /// `REVISION_COMPACTED`: a watch from a revision no longer retained.
    #[error("{info}")]
    RevisionCompacted {
        /// The revision asked for.
        requested_revision: u64,
        /// The oldest retained.
        oldest_revision: u64,
        /// Message, code, operation.
        info: Info,
    },
    /// `WATCH_TOO_SLOW`: the watcher fell too far behind.
    #[error("{info}")]
    WatchTooSlow {
        /// Where to resume.
        resume_revision: u64,
        /// Message, code, operation.
        info: Info,
    },
    /// `STORE_UNAVAILABLE`: the server cannot reach its store.
    #[error("{info}")]
    StoreUnavailable {
        /// How long to wait.
        retry_after: Option<Duration>,
        /// Message, code, operation.
        info: Info,
    },
    /// `INTERNAL`, or a status without Arbiter's details (from a proxy,
    /// say).
    #[error("{info}")]
    Server {
        /// Message, code, operation.
        info: Info,
    },
    /// The server could not be reached, or the connection failed.
    #[error("cannot reach the server: {0}")]
    Transport(String),
}

/// What every error of the server carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The gRPC code.
    pub code: Code,
    /// The `ErrorInfo.reason`, e.g. `ETAG_MISMATCH`; empty without one.
    pub reason: String,
    /// The server's message: what happened and the way out.
    pub message: String,
    /// For a transaction, the operation that failed (from 0).
    pub operation_index: Option<usize>,
    /// Every `ErrorInfo` metadata entry, as sent.
    pub metadata: HashMap<String, String>,
}

impl std::fmt::Display for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.reason, self.message)
        }
    }
}

/// What kind of failure an error is, for exit codes and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Bad input: fix the request.
    Invalid,
    /// The resource does not exist.
    NotFound,
    /// The request conflicts with the current state (409-class).
    Conflict,
    /// Not allowed (401/403).
    Denied,
    /// Rate or quota limited (429).
    Limited,
    /// The server or the network failed.
    Server,
}

impl Class {
    /// The exit code of the `arbiter` CLI for this class (0 is success).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Invalid => 1,
            Self::NotFound => 2,
            Self::Conflict => 3,
            Self::Denied => 4,
            Self::Limited => 5,
            Self::Server => 6,
        }
    }
}

impl Error {
    /// What the server sent with it; `None` for a transport failure.
    pub fn info(&self) -> Option<&Info> {
        match self {
            Self::AlreadyExists { info, .. }
            | Self::UniqueFieldTaken { info, .. }
            | Self::EtagMismatch { info, .. }
            | Self::RequestInProgress { info, .. }
            | Self::InvalidTransition { info, .. }
            | Self::AlreadyInState { info, .. }
            | Self::PreconditionRequired { info, .. }
            | Self::PolicyDenied { info, .. }
            | Self::PolicyFault { info, .. }
            | Self::InvalidField { info, .. }
            | Self::Malformed { info }
            | Self::RequestIdReused { info }
            | Self::Unauthenticated { info }
            | Self::Forbidden { info, .. }
            | Self::NotFound { info, .. }
            | Self::QuotaExceeded { info, .. }
            | Self::RateLimited { info, .. }
            | Self::RevisionCompacted { info, .. }
            | Self::WatchTooSlow { info, .. }
            | Self::StoreUnavailable { info, .. }
            | Self::Server { info } => Some(info),
            Self::Transport(_) => None,
        }
    }

    /// The `ErrorInfo.reason`, empty for a transport failure.
    pub fn reason(&self) -> &str {
        self.info().map_or("", |i| i.reason.as_str())
    }

    /// The class of the failure.
    pub fn class(&self) -> Class {
        let Some(info) = self.info() else {
            return Class::Server;
        };
        match info.code {
            Code::InvalidArgument | Code::OutOfRange => Class::Invalid,
            Code::NotFound => Class::NotFound,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => Class::Conflict,
            Code::Unauthenticated | Code::PermissionDenied => Class::Denied,
            Code::ResourceExhausted => Class::Limited,
            _ => Class::Server,
        }
    }

    /// How long the server asks the client to wait before a retry, for
    /// errors that pass when retried later.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::StoreUnavailable { retry_after, .. }
            | Self::RequestInProgress { retry_after, .. } => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        }
    }

    /// Decodes a status the server answered with.
    pub fn from_status(status: &Status) -> Self {
        let details = status.get_error_details();
        let error_info = details.error_info();
        let metadata = error_info.map(|i| i.metadata.clone()).unwrap_or_default();
        let get = |key: &str| metadata.get(key).cloned().unwrap_or_default();
        let number = |key: &str| get(key).parse::<u64>().unwrap_or_default();
        let list = |key: &str| -> Vec<String> {
            get(key)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        let info = Info {
            code: status.code(),
            reason: error_info.map(|i| i.reason.clone()).unwrap_or_default(),
            message: status.message().to_string(),
            operation_index: metadata.get("operation_index").and_then(|i| i.parse().ok()),
            metadata: metadata.clone(),
        };
        let violations = || -> Vec<Violation> {
            let bad = details.bad_request().map(|b| {
                b.field_violations.iter().map(|v| Violation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
            });
            let failed = details.precondition_failure().map(|p| {
                p.violations.iter().map(|v| Violation {
                    field: v.subject.clone(),
                    description: v.description.clone(),
                })
            });
            bad.into_iter()
                .flatten()
                .chain(failed.into_iter().flatten())
                .collect()
        };
        match info.reason.as_str() {
            "RESOURCE_EXISTS" => Self::AlreadyExists {
                resource: get("resource"),
                current: Current {
                    etag: get("current_etag"),
                    state: get("current_state"),
                    updated_by: get("updated_by"),
                    update_time: get("update_time"),
                },
                info,
            },
            "UNIQUE_FIELD_TAKEN" => Self::UniqueFieldTaken {
                field: get("field"),
                value: get("value"),
                existing: get("existing"),
                info,
            },
            "ETAG_MISMATCH" => Self::EtagMismatch {
                resource: get("resource"),
                expected_etag: get("expected_etag"),
                current_etag: get("current_etag"),
                updated_by: get("updated_by"),
                update_time: get("update_time"),
                changed_fields: metadata
                    .contains_key("changed_fields")
                    .then(|| list("changed_fields")),
                info,
            },
            "REQUEST_IN_PROGRESS" => Self::RequestInProgress { retry_after, info },
            "INVALID_TRANSITION" => Self::InvalidTransition {
                resource: get("resource"),
                current_state: get("current_state"),
                allowed_from: list("allowed_from"),
                field: metadata.get("field").cloned(),
                info,
            },
            "ALREADY_IN_STATE" => Self::AlreadyInState {
                current_state: get("current_state"),
                info,
            },
            "PRECONDITION_REQUIRED" => Self::PreconditionRequired {
                resource: get("resource"),
                info,
            },
            "POLICY_DENIED" | "POLICY_REJECTED" | "POLICY_FORBIDDEN" => Self::PolicyDenied {
                policy: get("policy"),
                policy_revision: get("policy_revision"),
                denial_reason: get("denial_reason"),
                violations: violations(),
                info,
            },
            "POLICY_FAULT" => Self::PolicyFault {
                policy: get("policy"),
                fault: get("fault"),
                info,
            },
            "INVALID_FIELD" => Self::InvalidField {
                violations: violations(),
                info,
            },
            "MALFORMED_REQUEST" => Self::Malformed { info },
            "REQUEST_ID_REUSED" => Self::RequestIdReused { info },
            "UNAUTHENTICATED" => Self::Unauthenticated { info },
            "TENANT_FORBIDDEN" | "ROLE_FORBIDDEN" => Self::Forbidden {
                required_role: metadata.get("required_role").cloned(),
                info,
            },
            "RESOURCE_NOT_FOUND" => Self::NotFound {
                resource: get("resource"),
                info,
            },
            "QUOTA_EXCEEDED" => Self::QuotaExceeded {
                collection: get("collection"),
                limit: number("limit"),
                usage: number("usage"),
                info,
            },
            "RATE_LIMITED" => Self::RateLimited {
                retry_after,
                limit: get("limit"),
                info,
            },
            "REVISION_COMPACTED" => Self::RevisionCompacted {
                requested_revision: number("requested_revision"),
                oldest_revision: number("oldest_revision"),
                info,
            },
            "WATCH_TOO_SLOW" => Self::WatchTooSlow {
                resume_revision: number("resume_revision"),
                info,
            },
            "STORE_UNAVAILABLE" => Self::StoreUnavailable { retry_after, info },
            _ if info.code == Code::Unavailable && info.reason.is_empty() => Self::Transport(info.message),
            _ => Self::Server { info },
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(&status)
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Self::Transport(e.to_string())
    }
}
