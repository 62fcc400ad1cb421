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
pub use config::{EvaluationMetrics, Outcome, PolicyConfig};
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
    tenants: Mutex<HashMap<String, Bindings>>,
}

/// A policy as the engine runs it: with its settings as JSON, made once
/// when the tenant's policies are read.
#[derive(Debug)]
pub(crate) struct Binding {
    pub(crate) policy: Policy,
    pub(crate) settings_json: Arc<str>,
}

/// A tenant's policies.
pub(crate) type Bindings = Arc<[Arc<Binding>]>;

/// A policy's settings as the JSON its module sees: `{}` when it has none.
pub(crate) fn settings_json(settings: Option<&prost_types::Struct>) -> Arc<str> {
    match settings {
        None => Arc::from(NO_SETTINGS),
        Some(settings) => Arc::from(struct_json(settings).to_string()),
    }
}

/// Largest integer a double holds exactly (2^53).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// A `Struct` as JSON. Its numbers are doubles; the integral ones become
/// JSON integers (`17`, not `17.0`), so that a policy reads them into its
/// integer fields; NaN and infinities, which JSON lacks, become `null`.
fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    use prost_types::value::Kind;
    fn value(v: &prost_types::Value) -> serde_json::Value {
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => (*b).into(),
            #[allow(clippy::cast_possible_truncation)]
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() <= MAX_EXACT => (*n as i64).into(),
            Some(Kind::NumberValue(n)) => {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
            Some(Kind::StringValue(s)) => s.clone().into(),
            Some(Kind::ListValue(l)) => l.values.iter().map(value).collect(),
            Some(Kind::StructValue(s)) => struct_json(s),
        }
    }
    s.fields.iter().map(|(k, v)| (k.clone(), value(v))).collect()
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
    fn cached(&self, tenant: &str) -> Option<Bindings> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        tenants.get(tenant).cloned()
    }

    fn insert_if_current(&self, tenant: &str, generation: u64, policies: Bindings) {
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
    metrics: EvaluationMetrics,
    /// Keeps the evaluations per policy in the store's statistics.
    counter: Arc<crate::stats::ConflictCounter>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("runtime", &self.runtime.is_some())
            .field("config", &self.config)
            .finish()
    }
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

pub(crate) fn binds(p: &Policy, kind: &str, operation: Operation) -> bool {
    p.kinds.iter().any(|k| k == kind)
        && (p.operations.is_empty() || p.operations.contains(&operation.proto()))
}

impl Policies {
    pub(crate) fn new(
        runtime: Option<Arc<dyn PolicyRuntime>>,
        config: PolicyConfig,
        counter: Arc<crate::stats::ConflictCounter>,
    ) -> Self {
        Self {
            runtime,
            config,
            cache: PolicyCache::default(),
            metrics: EvaluationMetrics::default(),
            counter,
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
    async fn of_tenant<S: Store>(&self, store: &S, tenant: &str) -> Result<Bindings, Error> {
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
        let policies: Bindings = found
            .into_iter()
            .map(|policy| {
                let settings_json = settings_json(policy.settings.as_ref());
                Arc::new(Binding {
                    policy,
                    settings_json,
                })
            })
            .collect();
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
    ) -> Result<Vec<Arc<Binding>>, Error> {
        let all = self.of_tenant(store, tenant).await?;
        Ok(all
            .iter()
            .filter(|b| binds(&b.policy, kind, operation))
            .cloned()
            .collect())
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

    /// Runs every bound policy on `input` and combines their verdicts;
    /// their lookups read through `lookup`.
    pub(crate) async fn judge<S: Store>(
        &self,
        store: &S,
        bound: &[Arc<Binding>],
        input: Arc<Input>,
        resource: &str,
        lookup: Option<Arc<dyn Lookup>>,
    ) -> Result<(), Error> {
        let runs = bound
            .iter()
            .map(|b| self.run(store, b, Arc::clone(&input), lookup.clone()));
        let results = futures::future::join_all(runs).await;
        let mut refusal = None;
        for (b, (result, took)) in bound.iter().zip(results) {
            let outcome = self.weigh(&b.policy, result, resource, &mut refusal);
            self.metrics.record(outcome, took);
            self.counter.evaluated(&b.policy.name, outcome.as_str(), took);
        }
        refusal.map_or(Ok(()), Err)
    }

    /// Runs one bound policy on `input`: its verdict and how long it took.
    pub(crate) async fn run<S: Store>(
        &self,
        store: &S,
        binding: &Binding,
        input: Arc<Input>,
        lookup: Option<Arc<dyn Lookup>>,
    ) -> (Result<Verdict, Fault>, Duration) {
        let started = Instant::now();
        let policy = &binding.policy;
        if let Err(fault) = self.ensure_loaded(store, &policy.module_sha256).await {
            return (Err(fault), started.elapsed());
        }
        let result = match self.runtime() {
            Ok(runtime) => {
                let call = Call {
                    settings_json: Arc::clone(&binding.settings_json),
                    lookup,
                    ..Call::new(&policy.module_sha256, &policy.name, self.config.limits(policy))
                };
                runtime.evaluate(call, input).await
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

/// The object a policy sees for resource `r`.
pub(crate) fn object_of<R: Resource>(r: &R) -> Object {
    let meta = r.meta();
    Object {
        kind: R::KIND.singular.to_string(),
        name: meta.name.to_string(),
        state: R::KIND.state_name(meta.state).to_string(),
        labels: meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        spec_json: spec_json(r),
        revision: meta.revision,
    }
}

/// Appends `snake_case` as `lowerCamelCase`, as proto3 JSON names fields.
fn push_camel(out: &mut String, name: &str) {
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
}

/// The resource as proto3 JSON, as it is stored (without the etag and
/// revision, which the store keeps): written from the typed resource, with
/// no descriptor lookups or re-decoding, as every judged write needs it.
/// Fields at their default values are left out, as proto3 JSON does.
pub(crate) fn spec_json<R: Resource>(r: &R) -> String {
    use std::fmt::Write as _;
    let meta = r.meta();
    let mut out = String::with_capacity(256);
    out.push('{');
    // Every key is a plain ASCII field name: only values are escaped.
    let key = |out: &mut String, key: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        if key.bytes().any(|b| b == b'_') {
            push_camel(out, key);
        } else {
            out.push_str(key);
        }
        out.push_str("\":");
    };
    let text = |out: &mut String, name: &str, value: &str| {
        if !value.is_empty() {
            key(out, name);
            push_json_string(out, value);
        }
    };
    text(&mut out, "name", meta.name);
    text(&mut out, "uid", meta.uid);
    text(&mut out, "createdBy", meta.created_by);
    text(&mut out, "updatedBy", meta.updated_by);
    for field in R::KIND.fields {
        if let Some(value) = r.field(field.name) {
            text(&mut out, field.name, value);
        }
    }
    if !meta.labels.is_empty() {
        key(&mut out, "labels");
        out.push('{');
        for (i, (k, v)) in meta.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, k);
            out.push(':');
            push_json_string(&mut out, v);
        }
        out.push('}');
    }
    if meta.state != 0 {
        key(&mut out, "state");
        push_json_string(&mut out, R::KIND.state_name(meta.state));
    }
    // A create's two times are one: formatted once.
    let created = meta.create_time.map(|time| format!("\"{time}\""));
    if let Some(text) = &created {
        key(&mut out, "createTime");
        out.push_str(text);
    }
    if let Some(time) = meta.update_time {
        key(&mut out, "updateTime");
        match &created {
            Some(text) if meta.create_time == Some(time) => out.push_str(text),
            // Writing to a String cannot fail.
            _ => {
                let _ = write!(out, "\"{time}\"");
            }
        }
    }
    out.push('}');
    out
}

/// Appends `value` as a JSON string: quoted, with `"`, `\\` and control
/// characters escaped (RFC 8259, section 7).
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    let bytes = value.as_bytes();
    let mut plain = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        // Most text needs no escaping: skip it eight bytes at a time.
        if let Some(chunk) = bytes.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok())
            && !may_need_escaping(u64::from_le_bytes(chunk))
        {
            i += 8;
            continue;
        }
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&value[plain..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        i += 1;
        plain = i;
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

/// Whether any of the eight bytes in `word` may be `"`, `\\` or a control
/// character. Never false for a word that holds one; it may be true for a
/// word that does not (a borrow out of a byte that matched), and the
/// caller then looks byte by byte.
const fn may_need_escaping(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Bytes below `n` (for `n` ≤ 0x80) set their high bit.
    const fn below(word: u64, n: u64) -> u64 {
        word.wrapping_sub(ONES * n) & !word & HIGH
    }
    (below(word, 0x20) | below(word ^ (ONES * b'"' as u64), 1) | below(word ^ (ONES * b'\\' as u64), 1)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed JSON is the JSON the descriptors make of the stored
    /// encoding, field for field.
    #[test]
    fn spec_json_matches_proto3_json_of_the_stored_resource() {
        use arbiter_api::v1::{Prompt, User, VirtualMachine};
        fn same<R: Resource>(r: R) {
            let mut bare = r.clone();
            bare.meta_mut().etag.clear();
            *bare.meta_mut().revision = 0;
            let reflected = arbiter_api::json::to_json(R::KIND.type_name, &bare.encode_to_vec())
                .unwrap_or_else(|e| panic!("{e}"));
            let typed: serde_json::Value = serde_json::from_str(&spec_json(&r)).unwrap_or_default();
            let reflected: serde_json::Value = serde_json::from_str(&reflected).unwrap_or_default();
            assert_eq!(typed, reflected);
        }
        let time = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        same(VirtualMachine {
            name: "tenants/acme/vms/web-1".into(),
            uid: "u-1".into(),
            labels: [
                ("env".to_string(), "prod \"quoted\" é".to_string()),
                ("note".to_string(), "a\\b\u{1}\u{1f}\r\n\t".to_string()),
            ]
            .into(),
            state: 2,
            etag: "\"2a\"".into(),
            create_time: time(1_764_000_000, 0),
            update_time: time(1_764_000_001, 774_297_117),
            created_by: "alice".into(),
            updated_by: "bob".into(),
            revision: 42,
            display_name: "Web".into(),
            region: "us-east1".into(),
            machine_type: "e2-small".into(),
            image: "debian-12".into(),
        });
        same(VirtualMachine::default());
        same(User {
            name: "tenants/acme/users/ada".into(),
            email: "ada@acme.com".into(),
            state: 1,
            update_time: time(1_764_000_001, 120_000_000),
            ..Default::default()
        });
        same(Prompt {
            name: "tenants/acme/prompts/p".into(),
            template: "Summarize {{text}}\n".into(),
            model: "claude-3.5".into(),
            description: "d".into(),
            state: 3,
            create_time: time(1_764_000_000, 1_000),
            ..Default::default()
        });
        // A create: both times the same.
        same(VirtualMachine {
            name: "tenants/acme/vms/db".into(),
            create_time: time(1_764_000_002, 5),
            update_time: time(1_764_000_002, 5),
            ..Default::default()
        });
    }

    /// Every string comes back from a JSON parser as it went in, with every
    /// byte that must be escaped at every position of the eight-byte steps.
    #[test]
    fn json_strings_round_trip_wherever_the_escapes_fall() {
        let specials = [
            '"',
            '\\',
            '\n',
            '\r',
            '\t',
            '\0',
            '\u{1f}',
            '\u{8}',
            'é',
            '€',
            '\u{1f600}',
        ];
        let mut cases = vec![String::new(), "plain text of some length".to_string()];
        for len in 0..20 {
            for at in 0..=len {
                for special in specials {
                    let mut s: String = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                    s.insert(at, special);
                    cases.push(s);
                }
            }
        }
        cases.push((0u8..0x80).map(char::from).collect());
        for case in cases {
            let mut out = String::new();
            push_json_string(&mut out, &case);
            let back: String = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
            assert_eq!(back, case);
            assert!(!out.bytes().any(|b| b < 0x20), "{out:?}");
        }
    }

    #[test]
    fn words_with_a_byte_to_escape_are_never_passed_over() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..8 {
                for filler in [b'a', b' ', b'~', 0x80, 0xff] {
                    let mut word = [filler; 8];
                    word[at] = special;
                    assert!(may_need_escaping(u64::from_le_bytes(word)), "{word:?}");
                }
            }
        }
        assert!(!may_need_escaping(u64::from_le_bytes(*b"abc XYZ~")));
        assert!(!may_need_escaping(u64::from_le_bytes([
            0x80, 0xff, 0xc3, 0xa9, b'a', b'!', b'#', b'$'
        ])));
    }

    #[test]
    fn settings_numbers_that_are_integers_read_as_integers() {
        use prost_types::value::Kind;
        let number = |n: f64| prost_types::Value {
            kind: Some(Kind::NumberValue(n)),
        };
        let settings = prost_types::Struct {
            fields: [
                ("count".to_string(), number(17.0)),
                ("ratio".to_string(), number(0.5)),
                ("huge".to_string(), number(1e300)),
                ("nan".to_string(), number(f64::NAN)),
            ]
            .into(),
        };
        let json: serde_json::Value =
            serde_json::from_str(&settings_json(Some(&settings))).unwrap_or_default();
        assert_eq!(json["count"], serde_json::json!(17));
        assert_eq!(json["ratio"], serde_json::json!(0.5));
        assert_eq!(json["huge"], serde_json::json!(1e300));
        assert!(json["nan"].is_null());
        assert_eq!(&*settings_json(None), "{}");
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
