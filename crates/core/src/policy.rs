//! Tenant policies in the apply pipeline.
//!
//! A policy is a resource (`tenants/{tenant}/policies/{policy}`) that binds
//! a WebAssembly module to kinds and operations. Before a write commits, the
//! engine asks every policy of the tenant bound to the write's kind and
//! operation to judge it: every ENFORCE policy must allow; AUDIT denials are
//! logged and counted only; a policy that cannot decide (a fault) fails the
//! request or lets it through, as its failure policy says.
//!
//! This module is the domain side: what a policy sees ([`Input`]), what it
//! answers ([`Verdict`], [`Fault`]), the [`PolicyRuntime`] that runs modules
//! (the wasmtime host in `arbiter-policy` implements it), the per-tenant
//! cache of bound policies, and how verdicts become errors.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbiter_api::v1::{Policy, policy};
use arbiter_store::{Scan, Store};
use prost::Message;

use crate::error::{Error, FieldViolation};
use crate::kind::Resource;
use crate::names;

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
    fn proto(self) -> i32 {
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

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

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

/// Runs policy modules. Implemented by the wasmtime host; the engine owns
/// everything else (storage, binding, modes, failure policies).
pub trait PolicyRuntime: Send + Sync + 'static {
    /// Compiles `module` and keeps it ready under `digest` (its hex SHA-256),
    /// or says why it is not a policy component.
    fn load(&self, digest: String, module: Arc<[u8]>) -> BoxFuture<'_, Result<(), LoadError>>;

    /// Whether the module with this digest is ready.
    fn is_loaded(&self, digest: &str) -> bool;

    /// Evaluates the module `digest` on `input` within `limits`. `policy`
    /// names the policy in logs.
    fn evaluate(
        &self,
        digest: String,
        policy: String,
        limits: Limits,
        input: Arc<Input>,
    ) -> BoxFuture<'_, Result<Verdict, Fault>>;
}

/// Server-wide policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Time limit of a policy that sets none.
    pub default_timeout: Duration,
    /// Highest time limit a policy may set.
    pub max_timeout: Duration,
    /// Memory limit of a policy that sets none.
    pub default_memory_bytes: u64,
    /// Highest memory limit a policy may set.
    pub max_memory_bytes: u64,
    /// Largest module accepted.
    pub max_module_bytes: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_millis(50),
            max_timeout: Duration::from_secs(2),
            default_memory_bytes: 16 << 20,
            max_memory_bytes: 256 << 20,
            max_module_bytes: 64 << 20,
        }
    }
}

impl PolicyConfig {
    /// The limits a policy runs with: its own, or the defaults (never more
    /// than the server allows).
    pub fn limits(&self, policy: &Policy) -> Limits {
        let timeout = policy
            .timeout
            .and_then(|t| Duration::try_from(t).ok())
            .filter(|t| !t.is_zero())
            .unwrap_or(self.default_timeout)
            .min(self.max_timeout);
        let memory = match policy.memory_limit_bytes {
            0 => self.default_memory_bytes,
            n => n,
        };
        Limits {
            timeout,
            memory_bytes: memory.min(self.max_memory_bytes),
        }
    }

    /// Checks the limits a policy asks for against the server's.
    pub fn check(&self, policy: &Policy, out: &mut Vec<FieldViolation>) {
        if let Some(timeout) = policy.timeout {
            match Duration::try_from(timeout) {
                Ok(t) if t.is_zero() => {}
                Ok(t) if t <= self.max_timeout => {}
                _ => out.push(FieldViolation::new(
                    "policy.timeout",
                    format!(
                        "must be a positive duration of at most {}ms (the server's limit)",
                        self.max_timeout.as_millis()
                    ),
                )),
            }
        }
        if policy.memory_limit_bytes > self.max_memory_bytes {
            out.push(FieldViolation::new(
                "policy.memory_limit_bytes",
                format!("must be at most {} (the server's limit)", self.max_memory_bytes),
            ));
        } else if policy.memory_limit_bytes != 0 && policy.memory_limit_bytes < MIN_MEMORY {
            out.push(FieldViolation::new(
                "policy.memory_limit_bytes",
                format!("must be at least {MIN_MEMORY} (one MiB), or 0 for the default"),
            ));
        }
    }
}

/// How long a caller refused for want of an evaluation slot waits.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Smallest memory limit a policy may set.
const MIN_MEMORY: u64 = 1 << 20;

/// How evaluations ended, per policy: for logs, tests and metrics.
#[derive(Debug, Default)]
pub struct PolicyStats {
    counts: Mutex<BTreeMap<(String, Outcome), (u64, Duration)>>,
}

/// How one evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// It allowed.
    Allow,
    /// It denied and the request was refused.
    Deny,
    /// It denied in AUDIT mode; the request went on.
    AuditDeny,
    /// It faulted and the request failed (fail-closed).
    Fault,
    /// It faulted and the request went on (fail-open, or AUDIT).
    FaultIgnored,
    /// It could not run for want of a slot; the request was refused with
    /// `RATE_LIMITED`, whatever the policy's failure policy.
    Busy,
}

impl Outcome {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::AuditDeny => "audit_deny",
            Outcome::Fault => "fault",
            Outcome::FaultIgnored => "fault_ignored",
            Outcome::Busy => "busy",
        }
    }
}

impl PolicyStats {
    fn record(&self, policy: &str, outcome: Outcome, took: Duration) {
        // No policy name in the labels: `/metrics` is open to anyone who can
        // reach it and must not list tenants or their policies (the counts
        // per policy are below, for the API).
        metrics::counter!("arbiter_policy_evaluations_total", "result" => outcome.as_str()).increment(1);
        metrics::histogram!("arbiter_policy_evaluation_seconds").record(took.as_secs_f64());
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = counts.entry((policy.to_string(), outcome)).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    /// How often `policy` ended with `outcome`.
    pub fn count(&self, policy: &str, outcome: Outcome) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&(policy.to_string(), outcome)).map_or(0, |c| c.0)
    }

    /// Every (policy, outcome, count, total time), in policy order.
    pub fn snapshot(&self) -> Vec<(String, Outcome, u64, Duration)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .iter()
            .map(|((p, o), (n, t))| (p.clone(), *o, *n, *t))
            .collect()
    }
}

/// Most tenants whose policy lists are cached at once.
const MAX_CACHED_TENANTS: usize = 100_000;

/// Every tenant's policies as last read from the store. A policy write
/// drops the tenant's entry; the generation keeps a read that raced with a
/// write from caching what it read.
///
/// With several replicas, a policy written through another replica is seen
/// only through the store's watch ([`crate::Engine::follow_policies`]):
/// while that watch is down the cache is off (`live` false) and every
/// request reads the tenant's policies from the store.
#[derive(Debug)]
struct PolicyCache {
    generation: AtomicU64,
    live: AtomicBool,
    tenants: Mutex<HashMap<String, Arc<[Policy]>>>,
}

impl Default for PolicyCache {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            live: AtomicBool::new(true),
            tenants: Mutex::new(HashMap::new()),
        }
    }
}

impl PolicyCache {
    fn cached(&self, tenant: &str) -> Option<Arc<[Policy]>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        tenants.get(tenant).cloned()
    }

    fn insert_if_current(&self, tenant: &str, generation: u64, policies: Arc<[Policy]>) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != generation || !self.live.load(Ordering::Acquire) {
            return;
        }
        if tenants.len() >= MAX_CACHED_TENANTS {
            tenants.clear();
        }
        tenants.insert(tenant.to_string(), policies);
    }

    fn invalidate(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        tenants.remove(tenant);
    }

    /// Turns caching on or off; either way, forgets everything cached.
    fn set_live(&self, live: bool) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.live.store(live, Ordering::Release);
        tenants.clear();
    }
}

/// The engine's policy machinery: the runtime, settings, cache and stats.
pub(crate) struct Policies {
    runtime: Option<Arc<dyn PolicyRuntime>>,
    pub(crate) config: PolicyConfig,
    cache: PolicyCache,
    pub(crate) stats: PolicyStats,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("runtime", &self.runtime.is_some())
            .field("config", &self.config)
            .finish()
    }
}

/// A policy that judges a request, with what it needs to run.
struct Bound<'a> {
    policy: &'a Policy,
    limits: Limits,
}

fn mode(p: &Policy) -> policy::Mode {
    match policy::Mode::try_from(p.mode) {
        Ok(policy::Mode::Audit) => policy::Mode::Audit,
        _ => policy::Mode::Enforce,
    }
}

fn fails_open(p: &Policy) -> bool {
    p.failure_policy == policy::FailurePolicy::FailOpen as i32
}

fn binds(p: &Policy, kind: &str, operation: Operation) -> bool {
    p.kinds.iter().any(|k| k == kind)
        && (p.operations.is_empty() || p.operations.contains(&operation.proto()))
}

impl Policies {
    pub(crate) fn new(runtime: Option<Arc<dyn PolicyRuntime>>, config: PolicyConfig) -> Self {
        Self {
            runtime,
            config,
            cache: PolicyCache::default(),
            stats: PolicyStats::default(),
        }
    }

    pub(crate) fn runtime(&self) -> Result<&Arc<dyn PolicyRuntime>, Error> {
        self.runtime
            .as_ref()
            .ok_or_else(|| Error::Internal("running policies: this server has no policy runtime".into()))
    }

    /// Forgets a tenant's cached policies after one of them changed.
    pub(crate) fn invalidate(&self, tenant: &str) {
        self.cache.invalidate(tenant);
    }

    /// Whether cached policy lists may be used (the watch that keeps them
    /// current is up).
    pub(crate) fn set_cache_live(&self, live: bool) {
        self.cache.set_live(live);
    }

    /// The tenant's policies, from the cache or the store.
    async fn of_tenant<S: Store>(&self, store: &S, tenant: &str) -> Result<Arc<[Policy]>, Error> {
        if let Some(hit) = self.cache.cached(tenant) {
            return Ok(hit);
        }
        let generation = self.cache.generation.load(Ordering::Acquire);
        let prefix = names::collection_prefix(tenant, &crate::kinds::POLICY);
        let mut found = Vec::new();
        let mut failure = None;
        store
            .scan(&prefix, None, &mut |key, stored| {
                match Policy::decode(stored.value.as_slice()) {
                    Ok(mut p) => {
                        p.revision = stored.revision;
                        found.push(p);
                    }
                    Err(e) => failure = Some(format!("{e} at {}", String::from_utf8_lossy(key))),
                }
                Scan::Continue
            })
            .await
            .map_err(|e| Error::storage("reading the tenant's policies", e))?;
        if let Some(e) = failure {
            return Err(Error::storage("decoding a policy", e));
        }
        let policies: Arc<[Policy]> = found.into();
        self.cache
            .insert_if_current(tenant, generation, Arc::clone(&policies));
        Ok(policies)
    }

    /// The tenant's policies that judge `kind` and `operation`; when there
    /// are none, the engine builds no [`Input`].
    pub(crate) async fn bound<S: Store>(
        &self,
        store: &S,
        tenant: &str,
        kind: &str,
        operation: Operation,
    ) -> Result<Arc<[Policy]>, Error> {
        let all = self.of_tenant(store, tenant).await?;
        let bound: Vec<Policy> = all
            .iter()
            .filter(|p| binds(p, kind, operation))
            .cloned()
            .collect();
        Ok(bound.into())
    }

    /// Makes sure the module `digest` is loaded, reading it from the store
    /// if this server has not loaded it yet (after a restart, say).
    pub(crate) async fn ensure_loaded<S: Store>(&self, store: &S, digest: &str) -> Result<(), Fault> {
        let runtime = self
            .runtime()
            .map_err(|_| Fault::new(FaultKind::Unavailable, "this server has no policy runtime"))?;
        if runtime.is_loaded(digest) {
            return Ok(());
        }
        let module = store
            .get_blob(digest.as_bytes())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, digest, "reading a policy module failed");
                Fault::new(FaultKind::Unavailable, "the module could not be read")
            })?
            .ok_or_else(|| Fault::new(FaultKind::Unavailable, format!("module {digest} is missing")))?;
        runtime
            .load(digest.to_string(), module.into())
            .await
            .map_err(|e| match e {
                LoadError::Busy(why) => Fault::new(FaultKind::Busy, why),
                LoadError::Invalid(why) => {
                    Fault::new(FaultKind::Unavailable, format!("the module does not load: {why}"))
                }
            })
    }

    /// Runs every bound policy on `input` and combines their verdicts.
    pub(crate) async fn judge<S: Store>(
        &self,
        store: &S,
        bound: &[Policy],
        input: Arc<Input>,
        resource: &str,
    ) -> Result<(), Error> {
        let runs = bound.iter().map(|policy| {
            let bound = Bound {
                policy,
                limits: self.config.limits(policy),
            };
            self.run(store, bound, Arc::clone(&input))
        });
        let results = futures::future::join_all(runs).await;
        let mut refusal = None;
        for (policy, (result, took)) in bound.iter().zip(results) {
            let outcome = self.weigh(policy, result, resource, &mut refusal);
            self.stats.record(&policy.name, outcome, took);
        }
        refusal.map_or(Ok(()), Err)
    }

    async fn run<S: Store>(
        &self,
        store: &S,
        bound: Bound<'_>,
        input: Arc<Input>,
    ) -> (Result<Verdict, Fault>, Duration) {
        let started = Instant::now();
        let policy = bound.policy;
        if let Err(fault) = self.ensure_loaded(store, &policy.module_sha256).await {
            return (Err(fault), started.elapsed());
        }
        let result = match self.runtime() {
            Ok(runtime) => {
                runtime
                    .evaluate(
                        policy.module_sha256.clone(),
                        policy.name.clone(),
                        bound.limits,
                        input,
                    )
                    .await
            }
            Err(_) => Err(Fault::new(
                FaultKind::Unavailable,
                "this server has no policy runtime",
            )),
        };
        (result, started.elapsed())
    }

    /// Turns one verdict into an outcome, keeping the first refusal (in
    /// policy name order).
    fn weigh(
        &self,
        policy: &Policy,
        result: Result<Verdict, Fault>,
        resource: &str,
        refusal: &mut Option<Error>,
    ) -> Outcome {
        let audit = mode(policy) == policy::Mode::Audit;
        match result {
            Ok(Verdict::Allow) => Outcome::Allow,
            Ok(Verdict::Deny(denial)) => {
                let denial = denial.bounded();
                if audit {
                    tracing::warn!(
                        policy = %policy.name, revision = policy.revision, resource,
                        reason = %denial.reason,
                        "AUDIT policy would deny: {}", denial.message
                    );
                    return Outcome::AuditDeny;
                }
                refusal.get_or_insert_with(|| Error::PolicyDenied {
                    policy: policy.name.clone(),
                    revision: policy.revision,
                    resource: resource.to_string(),
                    denial,
                });
                Outcome::Deny
            }
            Err(fault) if fault.kind == FaultKind::Busy => {
                // Never skipped, even FAIL_OPEN or AUDIT: a policy that
                // did not run must not let a change through unjudged
                // because the server was busy.
                tracing::warn!(
                    policy = %policy.name, revision = policy.revision, resource,
                    "policy could not run: {}", fault.detail
                );
                refusal.get_or_insert_with(|| Error::RateLimited {
                    what: format!("policy {} could not run: {}", policy.name, fault.detail),
                    limit: "policy evaluation slots".into(),
                    retry_after: BUSY_RETRY,
                });
                Outcome::Busy
            }
            Err(fault) => {
                if audit || fails_open(policy) {
                    tracing::warn!(
                        policy = %policy.name, revision = policy.revision, resource,
                        fault = fault.kind.as_str(),
                        "policy fault ignored ({}): {}",
                        if audit { "AUDIT mode" } else { "FAIL_OPEN" },
                        fault.detail
                    );
                    return Outcome::FaultIgnored;
                }
                tracing::warn!(
                    policy = %policy.name, revision = policy.revision, resource,
                    fault = fault.kind.as_str(),
                    "policy fault refuses the request: {}", fault.detail
                );
                refusal.get_or_insert_with(|| Error::PolicyFault {
                    policy: policy.name.clone(),
                    revision: policy.revision,
                    resource: resource.to_string(),
                    fault,
                });
                Outcome::Fault
            }
        }
    }
}

/// The object a policy sees for resource `r`, whose stored encoding is
/// `encoded`.
pub(crate) fn object_of<R: Resource>(r: &R, encoded: &[u8]) -> Result<Object, Error> {
    let meta = r.meta();
    let spec_json = arbiter_api::json::to_json(R::KIND.type_name, encoded)
        .map_err(|e| Error::storage("preparing the request for policies", e))?;
    Ok(Object {
        kind: R::KIND.singular.to_string(),
        name: meta.name.to_string(),
        state: R::KIND.state_name(meta.state).to_string(),
        labels: meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        spec_json,
        revision: meta.revision,
    })
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

    #[test]
    fn limits_default_and_cap() {
        let config = PolicyConfig::default();
        let mut p = Policy::default();
        assert_eq!(config.limits(&p).timeout, Duration::from_millis(50));
        assert_eq!(config.limits(&p).memory_bytes, 16 << 20);
        p.timeout = Some(prost_types::Duration { seconds: 1, nanos: 0 });
        p.memory_limit_bytes = 32 << 20;
        assert_eq!(config.limits(&p).timeout, Duration::from_secs(1));
        assert_eq!(config.limits(&p).memory_bytes, 32 << 20);
        let mut violations = Vec::new();
        p.timeout = Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        });
        p.memory_limit_bytes = 1 << 40;
        config.check(&p, &mut violations);
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["policy.timeout", "policy.memory_limit_bytes"]);
    }

    #[test]
    fn policies_bind_to_kinds_and_operations() {
        let p = Policy {
            kinds: vec!["vm".into()],
            operations: vec![policy::Operation::Delete as i32],
            ..Default::default()
        };
        assert!(binds(&p, "vm", Operation::Delete));
        assert!(!binds(&p, "vm", Operation::Create));
        assert!(!binds(&p, "user", Operation::Delete));
        let all_ops = Policy {
            kinds: vec!["user".into()],
            ..Default::default()
        };
        assert!(binds(&all_ops, "user", Operation::Transition));
    }
}
