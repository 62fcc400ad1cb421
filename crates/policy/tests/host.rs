//! The policy host against real components built from source: the example
//! policies pass their own cases files, hostile guests are stopped with the
//! right fault, and compiled modules are cached on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use arbiter_core::policy::{Call, FaultKind, Input, Limits, Object, Operation, Verdict};
use arbiter_policy::{Host, HostConfig, cases};
use arbiter_test_guests as guests;

fn host() -> Host {
    Host::new(&HostConfig::default()).unwrap()
}

/// A host with vm-guard (`arbiter:policy@0.2.0`) and user-guard (`0.1.0`)
/// loaded under their names.
fn host_with_both_guards() -> Host {
    let host = host();
    host.load_blocking("vm-guard", &guests::read(guests::VM_GUARD))
        .unwrap();
    host.load_blocking("user-guard", &guests::read(guests::USER_GUARD))
        .unwrap();
    host
}

fn cases_of(example: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(example)
        .join("cases.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_examples_pass_their_cases() {
    let host = host();
    for (module, example) in [
        (guests::VM_GUARD, "vm-guard"),
        (guests::PROMPT_REVIEW, "prompt-review"),
        (guests::USER_GUARD, "user-guard"),
        (guests::USER_MANAGER, "user-manager"),
        (guests::REQUIRE_LABELS_PY, "require-labels-py"),
    ] {
        let mut out = Vec::new();
        let report = cases::run(&host, &guests::read(module), &cases_of(example), &mut out).unwrap();
        let out = String::from_utf8_lossy(&out);
        assert_eq!(report.failed, 0, "{example}:\n{out}");
        assert!(report.passed >= 4, "{example}:\n{out}");
    }
}

fn vm_create(machine_type: &str, labels: &[(&str, &str)]) -> Input {
    let object = Object {
        kind: "vm".into(),
        name: "tenants/acme/vms/web-1".into(),
        state: "STOPPED".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        spec_json: format!(r#"{{"machineType":"{machine_type}"}}"#),
        revision: 0,
    };
    Input {
        operation: Operation::Create,
        tenant: "acme".into(),
        principal: "alice".into(),
        current: None,
        proposed: Some(object),
        now_unix_ms: 0,
    }
}

fn call(digest: &str, settings: &str) -> Call {
    Call {
        settings_json: settings.into(),
        ..Call::new(digest, "test", LIMITS)
    }
}

const LIMITS: Limits = Limits {
    timeout: Duration::from_millis(200),
    memory_bytes: 16 << 20,
};

#[test]
fn components_of_both_versions_run_side_by_side() {
    let host = host_with_both_guards();
    assert_eq!(host.version("vm-guard"), Some("0.2.0"));
    assert_eq!(host.version("user-guard"), Some("0.1.0"));
    let create = vm_create("m9-enormous", &[]);
    let denied = host.evaluate_blocking("vm-guard", "t", LIMITS, &create).unwrap();
    assert!(matches!(denied, Verdict::Deny(d) if d.reason == "MACHINE_TYPE_NOT_ALLOWED"));
    // user-guard (0.1.0) lets VMs through, whatever the settings say.
    let allowed = host
        .evaluate_blocking("user-guard", "t", LIMITS, &create)
        .unwrap();
    assert_eq!(allowed, Verdict::Allow);
}

/// The examples link with a 64 KiB stack (`policies/.cargo/config.toml`):
/// a spec nested as deep as serde_json parses (127 levels below the top)
/// is judged, not a stack overflow, whether the policy skips the nested
/// field (vm-guard) or builds a JSON value of the whole spec (user-guard).
#[test]
fn the_examples_stack_holds_the_deepest_json() {
    let host = host_with_both_guards();
    let nested = format!("{}{}", "[".repeat(127), "]".repeat(127));
    let mut vm = vm_create("e2-small", &[]);
    let mut user = vm_create("", &[]);
    if let (Some(vm), Some(user)) = (vm.proposed.as_mut(), user.proposed.as_mut()) {
        vm.spec_json = format!(r#"{{"machineType":"e2-small","deep":{nested}}}"#);
        user.kind = "user".into();
        user.spec_json = format!(r#"{{"email":"ann@example.com","deep":{nested}}}"#);
    }
    let judged = host.evaluate_blocking("vm-guard", "t", LIMITS, &vm);
    assert_eq!(judged, Ok(Verdict::Allow), "{judged:?}");
    let judged = host.evaluate_blocking("user-guard", "t", LIMITS, &user);
    assert!(
        matches!(judged, Ok(Verdict::Allow | Verdict::Deny(_))),
        "{judged:?}"
    );
}

#[test]
fn settings_decide_and_bad_settings_are_refused_in_the_modules_words() {
    let host = host_with_both_guards();
    let create = vm_create("n2-standard-2", &[]);
    let wide = call("vm-guard", "{}");
    let narrow = call("vm-guard", r#"{"machine_types":["e2-small"]}"#);
    assert_eq!(
        host.evaluate_call_blocking(&wide, &create).unwrap(),
        Verdict::Allow
    );
    let denied = host.evaluate_call_blocking(&narrow, &create).unwrap();
    assert!(
        matches!(&denied, Verdict::Deny(d) if d.message.contains("e2-small")),
        "{denied:?}"
    );

    assert_eq!(host.validate_settings_blocking(&narrow).unwrap(), Ok(()));
    let typo = host
        .validate_settings_blocking(&call("vm-guard", r#"{"machine_typo":["x"]}"#))
        .unwrap();
    assert!(
        typo.as_ref().is_err_and(|why| why.contains("machine_typo")),
        "{typo:?}"
    );
    // A 0.1.0 module takes no settings.
    assert_eq!(
        host.validate_settings_blocking(&call("user-guard", " { } "))
            .unwrap(),
        Ok(())
    );
    let refused = host
        .validate_settings_blocking(&call("user-guard", r#"{"a":1}"#))
        .unwrap();
    assert!(refused.is_err_and(|why| why.contains("0.1.0")));
}

/// Finds objects by name, and counts the calls.
struct Objects(Vec<Object>, std::sync::atomic::AtomicUsize);

impl arbiter_core::policy::Lookup for Objects {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
    ) -> arbiter_core::policy::BoxFuture<'a, Result<Option<Object>, arbiter_core::policy::Fault>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(self
            .0
            .iter()
            .find(|o| o.name == name)
            .cloned())))
    }
}

#[test]
fn lookups_read_through_the_host_and_are_capped_at_sixteen() {
    let host = host();
    host.load_blocking("lookups", &guests::read(guests::LOOKUPS))
        .unwrap();
    let bob = Object {
        kind: "user".into(),
        name: "tenants/acme/users/bob".into(),
        state: "ACTIVE".into(),
        labels: Vec::new(),
        spec_json: "{}".into(),
        revision: 7,
    };
    let objects = std::sync::Arc::new(Objects(vec![bob], Default::default()));
    let with = |settings: &str| Call {
        lookup: Some(objects.clone()),
        ..call("lookups", settings)
    };
    let report = vm_create("e2-small", &[("lookup", "users.bob_users.carol")]);
    let found = host
        .evaluate_call_blocking(&with(r#"{"report":true}"#), &report)
        .unwrap();
    let Verdict::Deny(denial) = found else {
        panic!("{found:?}")
    };
    assert_eq!(
        denial.message,
        "tenants/acme/users/bob=ACTIVE@7;tenants/acme/users/carol=none"
    );

    let sixteen = host.evaluate_call_blocking(&with(r#"{"lookups":16}"#), &report);
    assert_eq!(sixteen, Ok(Verdict::Allow));
    let seventeen = host
        .evaluate_call_blocking(&with(r#"{"lookups":17}"#), &report)
        .unwrap_err();
    assert_eq!(seventeen.kind, FaultKind::Trap);
    assert!(seventeen.detail.contains("more than 16"), "{}", seventeen.detail);
    // The 17th call never reached the store.
    assert_eq!(objects.1.load(std::sync::atomic::Ordering::Relaxed), 2 + 16 + 16);
    // Without a lookup source, lookups find nothing.
    let none = host
        .evaluate_call_blocking(&call("lookups", r#"{"report":true}"#), &report)
        .unwrap();
    assert!(
        matches!(none, Verdict::Deny(d) if d.message.ends_with("bob=none;tenants/acme/users/carol=none"))
    );
}

#[test]
fn policy_test_takes_settings_from_the_command_line() {
    let host = host();
    let cases = "cases:\n  - name: n2 is allowed by default\n    request: {operation: create, kind: vm, proposed: {name: tenants/a/vms/x, spec: {machineType: n2-standard-2}}}\n    expect: {decision: allow}\n";
    let module = guests::read(guests::VM_GUARD);
    let options = cases::Options {
        settings: Some(serde_json::json!({"machine_types": ["e2-small"]})),
        ..Default::default()
    };
    let mut out = Vec::new();
    let report = cases::run_with(&host, &module, cases, &options, &mut out).unwrap();
    assert_eq!(
        (report.passed, report.failed),
        (0, 1),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let report = cases::run_with(&host, &module, cases, &cases::Options::default(), &mut Vec::new()).unwrap();
    assert_eq!((report.passed, report.failed), (1, 0));
}

#[test]
fn a_failing_case_is_reported() {
    let host = host();
    let cases = "cases:\n  - name: wrongly expects allow\n    request: {operation: delete, kind: vm, current: {name: n, labels: {env: prod}}}\n    expect: {decision: allow}\n";
    let mut out = Vec::new();
    let report = cases::run(&host, &guests::read(guests::VM_GUARD), cases, &mut out).unwrap();
    assert_eq!((report.passed, report.failed), (0, 1));
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("FAIL  wrongly expects allow: expected allow, got deny/conflict"),
        "{out}"
    );
    assert!(cases::run(&host, b"not wasm", cases, &mut Vec::new()).is_err());
    assert!(
        cases::run(
            &host,
            &guests::read(guests::VM_GUARD),
            "cases: [{nme: x}]",
            &mut Vec::new()
        )
        .is_err()
    );
}

#[test]
fn reports_come_as_json_and_junit() {
    let host = host();
    let cases = "cases:\n  - name: a <failing> case\n    request: {operation: delete, kind: vm, current: {name: n, labels: {env: prod}}}\n    expect: {decision: allow}\n  - name: passes\n    request: {operation: create, kind: vm, proposed: {name: n, spec: {machineType: e2-small}}}\n    expect: {decision: allow}\n";
    let module = guests::read(guests::VM_GUARD);
    let mut out = Vec::new();
    let report = cases::run_as(&host, &module, cases, cases::Format::Json, &mut out).unwrap();
    assert_eq!((report.passed, report.failed), (1, 1));
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (json["passed"].as_u64(), json["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(json["cases"][0]["name"], "a <failing> case");
    assert_eq!(json["cases"][0]["result"], "fail");
    assert!(
        json["cases"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expected allow")
    );
    assert_eq!(json["cases"][1]["result"], "pass");

    let mut out = Vec::new();
    cases::run_as(&host, &module, cases, cases::Format::Junit, &mut out).unwrap();
    let xml = String::from_utf8(out).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="arbiter policy test" tests="2" failures="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="a &lt;failing&gt; case" classname="policy""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="expected allow, got deny/conflict"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="passes" classname="policy""#),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</testsuite>"), "{xml}");
}

fn hostile(behaviour: &str) -> Input {
    Input {
        operation: Operation::Create,
        tenant: "acme".into(),
        principal: "mallory".into(),
        current: None,
        proposed: Some(Object {
            kind: "vm".into(),
            name: "tenants/acme/vms/x".into(),
            state: "STOPPED".into(),
            labels: vec![("hostile".into(), behaviour.into())],
            spec_json: "{}".into(),
            revision: 0,
        }),
        now_unix_ms: 0,
    }
}

#[test]
fn hostile_guests_are_stopped_with_the_right_fault() {
    let host = host();
    host.load_blocking("hostile", &guests::read(guests::HOSTILE))
        .unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(50),
        memory_bytes: 16 << 20,
    };
    for (behaviour, kind) in [
        ("loop", FaultKind::Timeout),
        ("memory", FaultKind::Memory),
        ("recursion", FaultKind::Trap),
        ("trap", FaultKind::Trap),
    ] {
        let started = Instant::now();
        let fault = host
            .evaluate_blocking("hostile", "hostile", limits, &hostile(behaviour))
            .unwrap_err();
        assert_eq!(fault.kind, kind, "{behaviour}: {}", fault.detail);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{behaviour} took {:?}",
            started.elapsed()
        );
    }
    let fault = host
        .evaluate_blocking("hostile", "hostile", limits, &hostile("trap"))
        .unwrap_err();
    assert!(
        fault.detail.contains("panics on purpose"),
        "stderr is in the detail: {}",
        fault.detail
    );
    let fault = host
        .evaluate_blocking("hostile", "hostile", limits, &hostile("recursion"))
        .unwrap_err();
    assert!(fault.detail.contains("stack overflow"), "{}", fault.detail);
    // The host is still fine: a well-behaved request gets its answer.
    let allowed = host
        .evaluate_blocking("hostile", "hostile", limits, &hostile("none"))
        .unwrap();
    assert_eq!(allowed, Verdict::Allow);
    let patient = Limits {
        timeout: Duration::from_secs(1),
        ..limits
    };
    let flood = host
        .evaluate_blocking("hostile", "hostile", patient, &hostile("log-flood"))
        .unwrap();
    assert_eq!(flood, Verdict::Allow);
}

fn spin(label: Option<&str>) -> Input {
    let mut input = hostile("none");
    if let Some(object) = input.proposed.as_mut() {
        object.labels = label.map(|l| vec![("spin".into(), l.into())]).unwrap_or_default();
    }
    input
}

#[test]
fn policies_without_async_imports_run_inline_and_long_ones_go_on_a_fiber() {
    let host = host();
    for (name, module, inline) in [
        ("vm-guard", guests::VM_GUARD, true),
        ("prompt-review", guests::PROMPT_REVIEW, true),
        ("user-guard", guests::USER_GUARD, true),
        ("spin", guests::SPIN, true),
        // `lookup` and WASI are async in the host.
        ("user-manager", guests::USER_MANAGER, false),
        ("hostile", guests::HOSTILE, false),
        ("require-labels-py", guests::REQUIRE_LABELS_PY, false),
    ] {
        host.load_blocking(name, &guests::read(module)).unwrap();
        assert_eq!(host.runs_inline(name), Some(inline), "{name}");
    }
    let patient = Limits {
        timeout: Duration::from_secs(20),
        memory_bytes: 16 << 20,
    };
    // Runs `input` a few times, checking each result; whether any of the
    // runs ended inline (an epoch tick can land inside a short evaluation
    // too, and send it to a fiber: not in all of them).
    let some_inline = |limits: Limits, input: &Input, check: &dyn Fn(Result<Verdict, _>)| {
        let mut inline = false;
        for _ in 0..5 {
            let before = host.inline_overruns();
            check(host.evaluate_blocking("spin", "spin", limits, input));
            inline |= host.inline_overruns() == before;
        }
        inline
    };
    // A short evaluation ends inline.
    let allowed = |result| assert_eq!(result, Ok(Verdict::Allow));
    assert!(some_inline(patient, &spin(None), &allowed));
    // One that runs past an epoch tick (a few hundred milliseconds of
    // looping) is interrupted and runs again on a fiber, which decides.
    let before = host.inline_overruns();
    let long = host.evaluate_blocking("spin", "spin", patient, &spin(Some("300")));
    assert_eq!(long, Ok(Verdict::Allow));
    assert_eq!(host.inline_overruns(), before + 1);
    // One that never ends stops at its time limit, counted from the
    // inline start, with the fault of a timeout.
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..patient
    };
    let started = Instant::now();
    let fault = host
        .evaluate_blocking("spin", "spin", limits, &spin(Some("forever")))
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Timeout, "{}", fault.detail);
    assert!(fault.detail.contains("time limit of 50ms"), "{}", fault.detail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(host.inline_overruns(), before + 2);
    // Unbounded recursion on the caller's own stack traps at the wasm
    // stack limit, as on a fiber.
    let overflowed = |result: Result<Verdict, arbiter_core::policy::Fault>| {
        let fault = result.unwrap_err();
        assert_eq!(fault.kind, FaultKind::Trap, "{}", fault.detail);
        assert!(fault.detail.contains("stack overflow"), "{}", fault.detail);
    };
    assert!(some_inline(limits, &spin(Some("deep")), &overflowed));
    // And the host goes on.
    let after = host.evaluate_blocking("spin", "spin", patient, &spin(None));
    assert_eq!(after, Ok(Verdict::Allow));
}

/// Inline evaluations run in instances made ahead, off the request's
/// path, once the host has seen a module evaluated: each instance is still
/// fresh (called by no evaluation before), and each evaluation keeps the
/// memory and time limits of its own call.
#[test]
fn prepared_instances_are_fresh_and_keep_each_calls_limits() {
    let host = Host::new(&HostConfig {
        prepare_ahead: true,
        ..HostConfig::default()
    })
    .unwrap();
    host.load_blocking("spin", &guests::read(guests::SPIN)).unwrap();
    let patient = Limits {
        timeout: Duration::from_secs(20),
        memory_bytes: 16 << 20,
    };
    // `once` denies in an instance that ran an evaluation before.
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut evaluations = 0;
    while host.prepared_used() < 100 {
        assert!(
            Instant::now() < give_up,
            "{} of {evaluations} evaluations ran in prepared instances",
            host.prepared_used()
        );
        let verdict = host.evaluate_blocking("spin", "spin", patient, &spin(Some("once")));
        assert_eq!(verdict, Ok(Verdict::Allow), "evaluation {evaluations}");
        evaluations += 1;
    }
    // Prepared with the host's memory limit, an instance is not used by a
    // call whose limit is below what it already holds: the evaluation
    // faults as it would in an instance of its own.
    let tight = Limits {
        memory_bytes: 64 << 10,
        ..patient
    };
    for _ in 0..20 {
        let fault = host
            .evaluate_blocking("spin", "spin", tight, &spin(None))
            .unwrap_err();
        assert_eq!(fault.kind, FaultKind::Memory, "{}", fault.detail);
    }
    // The time limit counts from the call, not from when the instance was
    // made.
    let used = host.prepared_used();
    let brief = Limits {
        timeout: Duration::from_millis(50),
        ..patient
    };
    for _ in 0..3 {
        let started = Instant::now();
        let fault = host
            .evaluate_blocking("spin", "spin", brief, &spin(Some("forever")))
            .unwrap_err();
        assert_eq!(fault.kind, FaultKind::Timeout, "{}", fault.detail);
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        host.prepared_used() > used,
        "{} then {}",
        used,
        host.prepared_used()
    );
}

/// Many evaluations of one tenant at once, through the host's slots,
/// inline and (those that run past a tick) again on a fiber: each request
/// gets the answer to its own input from the module of its own call, and
/// none times out waiting for a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inline_evaluations_of_a_tenant_each_get_their_own_answer() {
    use arbiter_core::policy::PolicyRuntime;
    let host = host_with_both_guards();
    host.load_blocking("spin", &guests::read(guests::SPIN)).unwrap();
    let tasks: Vec<_> = (0..96)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                // vm-guard allows e2-small and denies m9-enormous; spin
                // allows both, now and then after running past a tick.
                let (digest, machine_type, spin) = match i % 4 {
                    0 => ("vm-guard", "e2-small", None),
                    1 => ("vm-guard", "m9-enormous", None),
                    2 => ("spin", "m9-enormous", None),
                    _ => ("spin", "m9-enormous", Some(if i % 12 == 3 { "20" } else { "0" })),
                };
                let mut input = vm_create(machine_type, &[]);
                if let (Some(label), Some(object)) = (spin, input.proposed.as_mut()) {
                    object.labels = vec![("spin".into(), label.into())];
                }
                let call = Call {
                    limits: Limits {
                        timeout: Duration::from_secs(10),
                        ..LIMITS
                    },
                    ..call(digest, "{}")
                };
                let verdict = host.evaluate(call, std::sync::Arc::new(input)).await;
                (digest, machine_type, verdict)
            })
        })
        .collect();
    for task in tasks {
        let (digest, machine_type, verdict) = task.await.unwrap();
        match (digest, machine_type) {
            ("vm-guard", "m9-enormous") => assert!(
                matches!(&verdict, Ok(Verdict::Deny(d)) if d.reason == "MACHINE_TYPE_NOT_ALLOWED"),
                "{digest} {machine_type}: {verdict:?}"
            ),
            _ => assert_eq!(verdict, Ok(Verdict::Allow), "{digest} {machine_type}"),
        }
    }
    assert!(host.inline_overruns() >= 8, "{}", host.inline_overruns());
}

#[test]
fn uploads_that_are_not_policies_say_why() {
    let host = host();
    let wrong = host
        .load_blocking("wrong", &guests::read(guests::WRONG_WORLD))
        .unwrap_err();
    assert!(wrong.contains("arbiter:policy/policy"), "{wrong}");
    let core = host.load_blocking("core", b"\0asm\x01\0\0\0").unwrap_err();
    assert!(core.contains("core WebAssembly module"), "{core}");
}

#[test]
fn compiled_modules_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    Host::new(&config)
        .unwrap()
        .load_blocking("g", &guests::read(guests::VM_GUARD))
        .unwrap();
    let cached = walk(dir.path());
    assert!(cached > 0, "the compiled module is in the cache dir");
}

#[test]
fn a_relative_cache_dir_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = Path::new(&up).join(dir.path().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let config = HostConfig {
        cache_dir: Some(relative),
        ..HostConfig::default()
    };
    Host::new(&config)
        .unwrap()
        .load_blocking("g", &guests::read(guests::PROMPT_REVIEW))
        .unwrap();
    assert!(walk(dir.path()) > 0);
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

/// Concurrent first uses of one module (as after a restart) compile it
/// once; a host keeps at most `max_loaded` modules, dropping the least
/// recently used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_compile_once_and_the_least_recently_used_are_dropped() {
    use arbiter_core::PolicyRuntime;
    let host = Host::new(&HostConfig {
        max_loaded: 2,
        ..HostConfig::default()
    })
    .unwrap();
    let guard: std::sync::Arc<[u8]> = guests::read(guests::VM_GUARD).into();
    let loads: Vec<_> = (0..8)
        .map(|_| {
            let (host, guard) = (host.clone(), std::sync::Arc::clone(&guard));
            tokio::spawn(async move { host.load("guard".into(), guard).await })
        })
        .collect();
    for load in loads {
        load.await.unwrap().unwrap();
    }
    assert_eq!(host.compiles(), 1, "eight first uses, one compile");

    for (digest, module) in [("review", guests::PROMPT_REVIEW), ("users", guests::USER_GUARD)] {
        host.load(digest.into(), guests::read(module).into())
            .await
            .unwrap();
    }
    assert!(!host.is_loaded("guard"), "the least recently used is dropped");
    assert!(host.is_loaded("review") && host.is_loaded("users"));
    host.load("guard".into(), guard).await.unwrap();
    assert_eq!(host.compiles(), 4);
}
