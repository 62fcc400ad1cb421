//! Policy test cases: a YAML file of requests and the decision each should
//! get, run against a module (`arbiter policy test MODULE CASES`), like
//! `opa test` or `kwctl run`.
//!
//! ```yaml
//! defaults:              # merged into every request (optional)
//!   tenant: acme
//!   principal: alice
//!   kind: vm
//!   limits: {timeout_ms: 50, memory_bytes: 16777216}   # the server's defaults
//! cases:
//!   - name: a prod VM is not stopped without a change ticket
//!     request:
//!       operation: transition
//!       current: {name: tenants/acme/vms/web-1, state: RUNNING, labels: {env: prod}}
//!       proposed: {state: STOPPED}        # the rest is taken from current
//!     expect: {decision: deny, kind: conflict, reason: PROD_CHANGE_NEEDS_TICKET}
//!   - name: a loop is stopped at the time limit
//!     limits: {timeout_ms: 20}
//!     request: {operation: create, proposed: {name: tenants/acme/vms/x, labels: {hostile: loop}}}
//!     expect: {fault: timeout}
//! ```
//!
//! An object's `spec` is the resource's fields in proto3 JSON form
//! (`machineType: e2-small`); `name`, `state` and `labels` are added to it
//! as the server does. `expect` may also list `violations` (fields that
//! must be among the denial's) and `message_contains`.
//!
//! For modules of `arbiter:policy@0.2.0`, `settings` (in `defaults`, or
//! per case) are the binding's settings; they are checked with the
//! module's `validate-settings` first (`expect: {settings_rejected: true}`
//! expects a refusal). `objects` (in `defaults`, or per case, added to the
//! defaults') are what `lookup` finds, by `name`, within the request's
//! tenant, as the server would:
//!
//! ```yaml
//! defaults:
//!   settings: {machine_types: [e2-small]}
//!   objects:
//!     - {kind: user, name: tenants/acme/users/bob, state: ACTIVE}
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use std::sync::Arc;

use arbiter_core::policy::{
    BoxFuture, Call, DenialKind, Fault, FaultKind, Input, Limits, Lookup, NO_SETTINGS, Object, Operation,
    Verdict,
};
use serde::Deserialize;

use crate::host::Host;

/// Why a cases file could not be run.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// The YAML does not parse or has unknown fields.
    #[error("the cases file is not valid: {0}")]
    Parse(String),
    /// The module does not load.
    #[error("the module {0}")]
    Module(String),
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Write(#[from] std::io::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    cases: Vec<Case>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    tenant: Option<String>,
    principal: Option<String>,
    kind: Option<String>,
    now_unix_ms: Option<u64>,
    #[serde(default)]
    limits: CaseLimits,
    settings: Option<serde_json::Value>,
    #[serde(default)]
    objects: Vec<ObjectSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: Request,
    expect: Expect,
    #[serde(default)]
    limits: CaseLimits,
    settings: Option<serde_json::Value>,
    #[serde(default)]
    objects: Vec<ObjectSpec>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseLimits {
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    operation: Op,
    tenant: Option<String>,
    principal: Option<String>,
    kind: Option<String>,
    now_unix_ms: Option<u64>,
    current: Option<ObjectSpec>,
    proposed: Option<ObjectSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Create,
    Update,
    Delete,
    Transition,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectSpec {
    kind: Option<String>,
    name: Option<String>,
    state: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    spec: Option<serde_json::Map<String, serde_json::Value>>,
    revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Option<Expected>,
    kind: Option<Kind>,
    reason: Option<String>,
    #[serde(default)]
    violations: Vec<String>,
    message_contains: Option<String>,
    fault: Option<FaultName>,
    #[serde(default)]
    settings_rejected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Conflict,
    Invalid,
    Forbidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FaultName {
    Timeout,
    Memory,
    Trap,
}

/// What `lookup` finds in a case: its objects, within the request's
/// tenant, as the server's lookups do.
struct Fixtures {
    tenant: String,
    objects: Vec<Object>,
}

impl Lookup for Fixtures {
    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Object>, Fault>> {
        let mut parts = name.split('/');
        let readable = parts.next() == Some("tenants")
            && parts.next() == Some(self.tenant.as_str())
            && parts.next().and_then(judged_kind).is_some()
            && parts.next().is_some_and(|id| !id.is_empty())
            && parts.next().is_none();
        let found = readable
            .then(|| self.objects.iter().find(|o| o.name == name).cloned())
            .flatten();
        Box::pin(std::future::ready(Ok(found)))
    }
}

/// The judged kind whose collection is `collection`, e.g. `users`.
fn judged_kind(collection: &str) -> Option<&'static arbiter_core::kind::Kind> {
    arbiter_core::kinds::JUDGED_KINDS
        .into_iter()
        .find(|k| k.collection == collection)
}

/// The kind whose collection a name is in: `tenants/t/users/bob` → `user`
/// (`vm` when the name says none).
fn kind_of_name(name: &str) -> &'static str {
    name.split('/')
        .nth(2)
        .and_then(judged_kind)
        .map_or("vm", |k| k.singular)
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Cases that got the expected decision.
    pub passed: usize,
    /// Cases that did not.
    pub failed: usize,
}

impl ObjectSpec {
    /// This object with the gaps filled from `base`.
    fn over(self, base: Option<&ObjectSpec>) -> ObjectSpec {
        let Some(base) = base else { return self };
        ObjectSpec {
            kind: self.kind.or_else(|| base.kind.clone()),
            name: self.name.or_else(|| base.name.clone()),
            state: self.state.or_else(|| base.state.clone()),
            labels: self.labels.or_else(|| base.labels.clone()),
            spec: self.spec.or_else(|| base.spec.clone()),
            revision: self.revision.or(base.revision),
        }
    }

    fn object(&self, kind: &str) -> Object {
        let kind = self.kind.clone().unwrap_or_else(|| kind.to_string());
        let name = self.name.clone().unwrap_or_default();
        let state = self.state.clone().unwrap_or_default();
        let labels = self.labels.clone().unwrap_or_default();
        let mut spec = self.spec.clone().unwrap_or_default();
        spec.entry("name").or_insert_with(|| name.clone().into());
        if !state.is_empty() {
            spec.entry("state").or_insert_with(|| state.clone().into());
        }
        if !labels.is_empty() {
            let map = labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            spec.entry("labels").or_insert(serde_json::Value::Object(map));
        }
        Object {
            kind,
            name,
            state,
            labels: labels.into_iter().collect(),
            spec_json: serde_json::Value::Object(spec).to_string(),
            revision: self.revision.unwrap_or_default(),
        }
    }
}

fn input(request: Request, defaults: &Defaults) -> Input {
    let kind = request.kind.or_else(|| defaults.kind.clone()).unwrap_or_default();
    let current = request.current;
    let proposed = request.proposed.map(|p| p.over(current.as_ref()));
    Input {
        operation: match request.operation {
            Op::Create => Operation::Create,
            Op::Update => Operation::Update,
            Op::Delete => Operation::Delete,
            Op::Transition => Operation::Transition,
        },
        tenant: request
            .tenant
            .or_else(|| defaults.tenant.clone())
            .unwrap_or_default(),
        principal: request
            .principal
            .or_else(|| defaults.principal.clone())
            .unwrap_or_default(),
        current: current.map(|c| c.object(&kind)),
        proposed: proposed.map(|p| p.object(&kind)),
        now_unix_ms: request.now_unix_ms.or(defaults.now_unix_ms).unwrap_or_default(),
    }
}

fn describe(result: &Result<Verdict, Fault>) -> String {
    match result {
        Ok(Verdict::Allow) => "allow".into(),
        Ok(Verdict::Deny(d)) => format!("deny/{:?} {}: {}", d.kind, d.reason, d.message).to_lowercase(),
        Err(fault) => format!("fault {}: {}", fault.kind.as_str(), fault.detail),
    }
}

/// What is wrong with `result` given `expect`, if anything.
fn mismatch(expect: &Expect, result: &Result<Verdict, Fault>) -> Option<String> {
    if let Some(fault) = expect.fault {
        let want = match fault {
            FaultName::Timeout => FaultKind::Timeout,
            FaultName::Memory => FaultKind::Memory,
            FaultName::Trap => FaultKind::Trap,
        };
        return match result {
            Err(f) if f.kind == want => None,
            _ => Some(format!("expected fault {}", want.as_str())),
        };
    }
    match (expect.decision, result) {
        (Some(Expected::Allow) | None, Ok(Verdict::Allow)) if expect.kind.is_none() => None,
        (Some(Expected::Deny) | None, Ok(Verdict::Deny(d))) => {
            let kind = match d.kind {
                DenialKind::Conflict => Kind::Conflict,
                DenialKind::Invalid => Kind::Invalid,
                DenialKind::Forbidden => Kind::Forbidden,
            };
            if expect.kind.is_some_and(|k| k != kind) {
                return Some(format!("expected kind {:?}", expect.kind).to_lowercase());
            }
            if expect.reason.as_ref().is_some_and(|r| *r != d.reason) {
                return Some(format!(
                    "expected reason {}",
                    expect.reason.as_deref().unwrap_or_default()
                ));
            }
            if let Some(missing) = expect
                .violations
                .iter()
                .find(|f| !d.violations.iter().any(|v| v.field == **f))
            {
                return Some(format!("expected a violation of {missing}"));
            }
            if let Some(text) = &expect.message_contains
                && !d.message.contains(text.as_str())
            {
                return Some(format!("expected the message to contain {text:?}"));
            }
            None
        }
        (Some(Expected::Allow), _) => Some("expected allow".into()),
        _ => Some("expected deny".into()),
    }
}

/// How [`run_as`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A `PASS`/`FAIL` line per case and a summary line.
    #[default]
    Text,
    /// One JSON document: `passed`, `failed`, and each case's `name`,
    /// `result` (`pass` or `fail`) and `message`.
    Json,
    /// A JUnit XML `testsuite`, for CI systems that show test reports.
    Junit,
}

/// One case's result.
struct Outcome {
    name: String,
    failure: Option<String>,
    took: Duration,
}

/// `text` with the five XML special characters escaped.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn write_report(
    format: Format,
    outcomes: &[Outcome],
    report: &Report,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            for o in outcomes {
                match &o.failure {
                    None => writeln!(out, "PASS  {}", o.name)?,
                    Some(why) => writeln!(out, "FAIL  {}: {why}", o.name)?,
                }
            }
            writeln!(out, "{} passed, {} failed", report.passed, report.failed)
        }
        Format::Json => {
            let cases: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "name": o.name,
                        "result": if o.failure.is_none() { "pass" } else { "fail" },
                        "message": o.failure.clone().unwrap_or_default(),
                        "seconds": o.took.as_secs_f64(),
                    })
                })
                .collect();
            let document =
                serde_json::json!({"passed": report.passed, "failed": report.failed, "cases": cases});
            writeln!(out, "{document}")
        }
        Format::Junit => {
            let total: f64 = outcomes.iter().map(|o| o.took.as_secs_f64()).sum();
            writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
            writeln!(
                out,
                r#"<testsuite name="arbiter policy test" tests="{}" failures="{}" time="{total:.6}">"#,
                outcomes.len(),
                report.failed
            )?;
            for o in outcomes {
                let name = xml(&o.name);
                let time = o.took.as_secs_f64();
                match &o.failure {
                    None => writeln!(
                        out,
                        r#"  <testcase name="{name}" classname="policy" time="{time:.6}"/>"#
                    )?,
                    Some(why) => {
                        writeln!(
                            out,
                            r#"  <testcase name="{name}" classname="policy" time="{time:.6}">"#
                        )?;
                        writeln!(out, r#"    <failure message="{}"/>"#, xml(why))?;
                        writeln!(out, "  </testcase>")?;
                    }
                }
            }
            writeln!(out, "</testsuite>")
        }
    }
}

/// Runs every case of `cases` (YAML) against `module`, writing one line per
/// case and a summary to `out`.
pub fn run(host: &Host, module: &[u8], cases: &str, out: &mut impl Write) -> Result<Report, CasesError> {
    run_as(host, module, cases, Format::Text, out)
}

/// Runs every case of `cases` (YAML) against `module`, writing the results
/// to `out` as `format` says.
pub fn run_as(
    host: &Host,
    module: &[u8],
    cases: &str,
    format: Format,
    out: &mut impl Write,
) -> Result<Report, CasesError> {
    run_with(
        host,
        module,
        cases,
        &Options {
            format,
            settings: None,
        },
        out,
    )
}

/// How [`run_with`] runs and reports.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The report's format.
    pub format: Format,
    /// Settings for the cases that give none, over the file's defaults
    /// (`arbiter policy test --settings FILE`).
    pub settings: Option<serde_json::Value>,
}

/// Runs every case of `cases` (YAML) against `module` as `options` say.
pub fn run_with(
    host: &Host,
    module: &[u8],
    cases: &str,
    options: &Options,
    out: &mut impl Write,
) -> Result<Report, CasesError> {
    let format = options.format;
    let mut file: File = serde_yaml::from_str(cases).map_err(|e| CasesError::Parse(e.to_string()))?;
    if let Some(settings) = &options.settings {
        file.defaults.settings = Some(settings.clone());
    }
    let digest = arbiter_core::policy_admin::module_digest(module);
    let digest = digest.as_str();
    host.load_blocking(digest, module).map_err(CasesError::Module)?;
    let mut report = Report::default();
    let mut outcomes = Vec::with_capacity(file.cases.len());
    for case in file.cases {
        let given = (&case.limits, &file.defaults.limits);
        let limits = Limits {
            timeout: Duration::from_millis(given.0.timeout_ms.or(given.1.timeout_ms).unwrap_or(50)),
            memory_bytes: given.0.memory_bytes.or(given.1.memory_bytes).unwrap_or(16 << 20),
        };
        let settings_json: Arc<str> = match case.settings.as_ref().or(file.defaults.settings.as_ref()) {
            Some(settings) => settings.to_string().into(),
            None => NO_SETTINGS.into(),
        };
        let objects = file
            .defaults
            .objects
            .iter()
            .chain(&case.objects)
            .map(|o| {
                o.object(
                    o.kind
                        .as_deref()
                        .unwrap_or_else(|| kind_of_name(o.name.as_deref().unwrap_or_default())),
                )
            })
            .collect();
        let input = input(case.request, &file.defaults);
        let call = Call {
            settings_json: Arc::clone(&settings_json),
            lookup: Some(Arc::new(Fixtures {
                tenant: input.tenant.clone(),
                objects,
            })),
            ..Call::new(digest, &case.name, limits)
        };
        let started = std::time::Instant::now();
        let refused = match host.validate_settings_blocking(&call) {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(fault) => Some(format!("validate-settings failed: {}", fault.detail)),
        };
        let (failure, took) = match (refused, case.expect.settings_rejected) {
            (Some(why), true) => {
                let failure = case
                    .expect
                    .message_contains
                    .as_ref()
                    .filter(|text| !why.contains(text.as_str()))
                    .map(|text| format!("expected the refusal to contain {text:?}, got {why:?}"));
                (failure, started.elapsed())
            }
            (Some(why), false) => (
                Some(format!("the module refuses the settings: {why}")),
                started.elapsed(),
            ),
            (None, true) => (
                Some("expected the settings to be refused, but the module accepts them".into()),
                started.elapsed(),
            ),
            (None, false) => {
                let result = host.evaluate_call_blocking(&call, &input);
                let took = started.elapsed();
                (
                    mismatch(&case.expect, &result).map(|why| format!("{why}, got {}", describe(&result))),
                    took,
                )
            }
        };
        if failure.is_none() {
            report.passed += 1;
        } else {
            report.failed += 1;
        }
        outcomes.push(Outcome {
            name: case.name,
            failure,
            took,
        });
    }
    write_report(format, &outcomes, &report, out)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposed_objects_inherit_from_current() {
        let request: Request = serde_yaml::from_str(
            "operation: transition\nkind: vm\ncurrent: {name: tenants/a/vms/x, state: RUNNING, labels: {env: prod}, spec: {machineType: e2-small}}\nproposed: {state: STOPPED}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let input = input(request, &Defaults::default());
        let proposed = input.proposed.unwrap_or_else(|| panic!("no proposed object"));
        assert_eq!(proposed.state, "STOPPED");
        assert_eq!(proposed.labels, [("env".to_string(), "prod".to_string())]);
        let spec: serde_json::Value = serde_json::from_str(&proposed.spec_json).unwrap_or_default();
        assert_eq!(spec["machineType"], "e2-small");
        assert_eq!(spec["state"], "STOPPED");
        assert_eq!(proposed.kind, "vm");
    }

    #[test]
    fn expectations_compare_kind_reason_and_violations() {
        let expect: Expect =
            serde_yaml::from_str("{decision: deny, kind: invalid, reason: BAD, violations: [vm.x]}")
                .unwrap_or_else(|e| panic!("{e}"));
        let denial = |kind, field: &str| {
            Ok(Verdict::Deny(arbiter_core::policy::Denial {
                kind,
                reason: "BAD".into(),
                message: String::new(),
                violations: vec![arbiter_core::FieldViolation::new(field, "")],
            }))
        };
        assert_eq!(mismatch(&expect, &denial(DenialKind::Invalid, "vm.x")), None);
        assert!(mismatch(&expect, &denial(DenialKind::Conflict, "vm.x")).is_some());
        assert!(mismatch(&expect, &denial(DenialKind::Invalid, "vm.y")).is_some());
        assert!(mismatch(&expect, &Ok(Verdict::Allow)).is_some());
        let fault: Expect = serde_yaml::from_str("{fault: timeout}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mismatch(&fault, &Err(Fault::new(FaultKind::Timeout, ""))), None);
        assert!(mismatch(&fault, &Ok(Verdict::Allow)).is_some());
    }
}
