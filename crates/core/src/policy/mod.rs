//! Tenant policies in the apply pipeline.
//!
//! A policy is a resource (`tenants/{tenant}/policies/{policy}`) that binds
//! a WebAssembly module to kinds and operations. Before a write commits, the
//! engine asks every policy of the tenant bound to the write's kind and
//! operation to judge it: every ENFORCE policy must allow; AUDIT denials are
//! logged and counted only; a policy that cannot decide (a fault) fails the
//! request or lets it through, as its failure policy says.
//!
//! This module is the domain side: [`verdict`], what a policy sees
//! ([`Input`]) and answers ([`Verdict`], [`Fault`]) and the
//! [`PolicyRuntime`] that runs modules; [`config`], the server-wide
//! settings and evaluation counts; and here, the per-tenant cache of bound
//! policies and how their verdicts become errors.

mod config;
pub(crate) mod verdict;

pub use crate::violation::truncate;
pub use config::{Outcome, PolicyConfig, PolicyStats};
pub use verdict::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbiter_api::v1::{Policy, policy};
use arbiter_store::{Scan, Store};
use prost::Message;

use crate::error::Error;
use crate::kind::Resource;
use crate::names;

/// How long a caller refused for want of an evaluation slot waits.
const BUSY_RETRY: Duration = Duration::from_secs(1);

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
        Ok(policy::Mode::Warn) => policy::Mode::Warn,
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
        let mode = mode(policy);
        // AUDIT and WARN denials and faults never block.
        let audit = mode != policy::Mode::Enforce;
        match result {
            Ok(Verdict::Allow) => Outcome::Allow,
            Ok(Verdict::Deny(denial)) => {
                let denial = denial.bounded();
                if mode == policy::Mode::Warn {
                    tracing::info!(
                        policy = %policy.name, revision = policy.revision, resource,
                        reason = %denial.reason,
                        "WARN policy denies, the request goes on: {}", denial.message
                    );
                    crate::warnings::warn(format!("{}: {}: {}", policy.name, denial.reason, denial.message));
                    return Outcome::Warn;
                }
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
                        if audit { "AUDIT or WARN mode" } else { "FAIL_OPEN" },
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
