//! What a policy sees and answers — the types a guest's verdict becomes on
//! the host side — and the [`PolicyRuntime`] that runs modules (the
//! wasmtime host in `arbiter-policy` implements it). A leaf: it depends on
//! no other part of the engine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arbiter_api::v1::policy;

use crate::violation::{FieldViolation, truncate};

/// A boxed future, for the object-safe [`PolicyRuntime`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The operation a policy judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A create method.
    Create,
    /// An update method.
    Update,
    /// A delete method.
    Delete,
    /// A state-changing custom method.
    Transition,
}

impl Operation {
    /// The `Policy.Operation` value that binds to this operation.
    pub(crate) fn proto(self) -> i32 {
        let op = match self {
            Operation::Create => policy::Operation::Create,
            Operation::Update => policy::Operation::Update,
            Operation::Delete => policy::Operation::Delete,
            Operation::Transition => policy::Operation::Transition,
        };
        op as i32
    }
}

/// An object as a policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// `vm`, `user` or `prompt`.
    pub kind: String,
    /// The full resource name.
    pub name: String,
    /// The state name, e.g. `RUNNING`.
    pub state: String,
    /// The labels, in key order.
    pub labels: Vec<(String, String)>,
    /// The resource as proto3 JSON.
    pub spec_json: String,
    /// The store revision it was read at (0 for a new object).
    pub revision: u64,
}

/// What a policy judges: the `request` record of the WIT world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The operation.
    pub operation: Operation,
    /// The tenant.
    pub tenant: String,
    /// Who asks.
    pub principal: String,
    /// The object before the change; `None` on create.
    pub current: Option<Object>,
    /// The object after the change; `None` on delete.
    pub proposed: Option<Object>,
    /// The request's time, for policies that depend on time.
    pub now_unix_ms: u64,
}

/// How a denial is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// The object's state conflicts with the request (FAILED_PRECONDITION).
    Conflict,
    /// The request's values are not acceptable (INVALID_ARGUMENT).
    Invalid,
    /// The principal may not do this (PERMISSION_DENIED).
    Forbidden,
}

/// A policy's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// How to answer it.
    pub kind: DenialKind,
    /// The policy's UPPER_SNAKE_CASE reason.
    pub reason: String,
    /// The policy's explanation.
    pub message: String,
    /// The fields at fault.
    pub violations: Vec<FieldViolation>,
}

/// Longest policy message kept; status details travel in HTTP/2 trailers.
const MAX_MESSAGE: usize = 1024;
/// Longest policy reason kept.
const MAX_REASON: usize = 64;
/// Most violations kept.
const MAX_VIOLATIONS: usize = 8;
/// Longest violation field or description kept.
const MAX_VIOLATION_TEXT: usize = 256;

impl Denial {
    /// The denial cut to what fits in an error: a policy's output is
    /// untrusted and may be huge.
    pub fn bounded(self) -> Self {
        let mut reason: String = self
            .reason
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(MAX_REASON)
            .collect::<String>()
            .to_ascii_uppercase();
        if reason.is_empty() {
            reason = "DENIED".into();
        }
        let violations = self
            .violations
            .into_iter()
            .take(MAX_VIOLATIONS)
            .map(|v| {
                FieldViolation::new(
                    truncate(&v.field, MAX_VIOLATION_TEXT),
                    truncate(&v.description, MAX_VIOLATION_TEXT),
                )
            })
            .collect();
        Self {
            kind: self.kind,
            reason,
            message: truncate(&self.message, MAX_MESSAGE),
            violations,
        }
    }
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request may go on.
    Allow,
    /// The request is refused.
    Deny(Denial),
}

/// Why a policy could not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// It ran past its time limit.
    Timeout,
    /// It tried to grow its memory past its limit.
    Memory,
    /// It trapped (a panic, an unreachable, a stack overflow, ...).
    Trap,
    /// Its module could not be loaded or instantiated.
    Unavailable,
    /// No evaluation slot was free in time: the server is busy (often
    /// with the same tenant's requests), not the policy at fault.
    Busy,
}

impl FaultKind {
    /// The name reported in error metadata (`fault`).
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Trap => "trap",
            FaultKind::Unavailable => "unavailable",
            FaultKind::Busy => "busy",
        }
    }
}

/// A policy that could not decide, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The kind of fault.
    pub kind: FaultKind,
    /// A one-line description, e.g. the trap message.
    pub detail: String,
}

impl Fault {
    /// A fault of `kind`.
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: truncate(&detail.into(), 512),
        }
    }
}

/// The limits of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time limit.
    pub timeout: Duration,
    /// Linear-memory limit in bytes.
    pub memory_bytes: u64,
}

/// Why a module could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes are not a policy component: why, for the uploader.
    Invalid(String),
    /// The server could not compile it now (too many compiles at once, or
    /// one took too long); a retry later may pass.
    Busy(String),
}

impl From<String> for LoadError {
    fn from(why: String) -> Self {
        Self::Invalid(why)
    }
}

impl From<&str> for LoadError {
    fn from(why: &str) -> Self {
        Self::Invalid(why.to_string())
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(why) | Self::Busy(why) => f.write_str(why),
        }
    }
}

/// Most `lookup` calls of one evaluation; one more is a fault.
pub const MAX_LOOKUPS: usize = 16;

/// Reads objects for a policy's `lookup` import (`arbiter:policy@0.2.0`).
pub trait Lookup: Send + Sync {
    /// The object `name` names, as the evaluation sees it: `None` when it
    /// is absent, another tenant's, a policy, or not a resource name. An
    /// error is a fault of the evaluation (the store could not be read).
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Object>, Fault>>;
}

/// One evaluation: which module runs, for which policy, within which
/// limits, with the binding's settings and what its lookups read.
#[derive(Clone)]
pub struct Call {
    /// The module's hex SHA-256.
    pub digest: String,
    /// The policy's name, for logs.
    pub policy: String,
    /// Time and memory limits.
    pub limits: Limits,
    /// `Policy.settings` as JSON; `{}` when none.
    pub settings_json: Arc<str>,
    /// What `lookup` reads; `None` finds nothing.
    pub lookup: Option<Arc<dyn Lookup>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("digest", &self.digest)
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("settings_json", &self.settings_json)
            .field("lookup", &self.lookup.is_some())
            .finish()
    }
}

impl Call {
    /// A call of `digest` for `policy` with no settings and no lookups.
    pub fn new(digest: impl Into<String>, policy: impl Into<String>, limits: Limits) -> Self {
        Self {
            digest: digest.into(),
            policy: policy.into(),
            limits,
            settings_json: Arc::from(NO_SETTINGS),
            lookup: None,
        }
    }
}

/// The settings JSON of a binding without settings.
pub const NO_SETTINGS: &str = "{}";

/// Runs policy modules. Implemented by the wasmtime host; the engine owns
/// everything else (storage, binding, modes, failure policies).
pub trait PolicyRuntime: Send + Sync + 'static {
    /// Compiles `module` and keeps it ready under `digest` (its hex SHA-256),
    /// or says why it is not a policy component.
    fn load(&self, digest: String, module: Arc<[u8]>) -> BoxFuture<'_, Result<(), LoadError>>;

    /// Whether the module with this digest is ready.
    fn is_loaded(&self, digest: &str) -> bool;

    /// Evaluates `call`'s module on `input`.
    fn evaluate(&self, call: Call, input: Arc<Input>) -> BoxFuture<'_, Result<Verdict, Fault>>;

    /// Asks the loaded module `digest` whether `settings_json` are settings
    /// it accepts: `Ok(Err(why))` when it refuses them, in its own words.
    /// A module of `arbiter:policy@0.1.0` accepts only `{}`.
    fn validate_settings(
        &self,
        digest: String,
        limits: Limits,
        settings_json: String,
    ) -> BoxFuture<'_, Result<Result<(), String>, Fault>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_denials_are_cut_to_size() {
        let denial = Denial {
            kind: DenialKind::Conflict,
            reason: "not snake! ".repeat(100),
            message: "é".repeat(10_000),
            violations: (0..1000)
                .map(|i| FieldViolation::new(format!("f{i}"), "x".repeat(10_000)))
                .collect(),
        }
        .bounded();
        assert!(denial.reason.len() <= MAX_REASON);
        assert!(denial.reason.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        assert!(denial.message.len() <= MAX_MESSAGE && denial.message.ends_with("..."));
        assert_eq!(denial.violations.len(), MAX_VIOLATIONS);
        assert!(denial.violations[0].description.len() <= MAX_VIOLATION_TEXT);
    }
}
