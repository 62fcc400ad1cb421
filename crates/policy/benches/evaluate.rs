//! One policy evaluation of vm-guard: a fresh store, instantiation from the
//! pre-linked component, the `evaluate` call and the decision lifted back;
//! and the floor, an evaluation whose policy decides at once.
//!
//!     cargo bench -p arbiter-policy --bench evaluate
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use arbiter_core::policy::{Input, Limits, Object, Operation, Verdict};
use arbiter_policy::{Host, HostConfig};
use criterion::{Criterion, criterion_group, criterion_main};

/// The server's allocator, so that the numbers are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn vm(state: &str, labels: &[(&str, &str)]) -> Object {
    Object {
        kind: "vm".into(),
        name: "tenants/acme/vms/web-1".into(),
        state: state.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        spec_json: r#"{"name":"tenants/acme/vms/web-1","state":"RUNNING","region":"us-east1","machineType":"e2-small","image":"debian-12","labels":{"env":"prod"}}"#.into(),
        revision: 42,
    }
}

fn input(operation: Operation, current: Option<Object>, proposed: Option<Object>) -> Input {
    Input {
        operation,
        tenant: "acme".into(),
        principal: "alice".into(),
        current,
        proposed,
        now_unix_ms: 1_764_000_000_000,
    }
}

fn evaluate(c: &mut Criterion) {
    // `ARBITER_BENCH_SLOTS=2` shrinks the pool of instance slots (64 by
    // default, as in the server) so that the benchmark runs under
    // `valgrind --tool=callgrind`, whose address space cannot hold the
    // default pool's reservations.
    let slots = std::env::var("ARBITER_BENCH_SLOTS")
        .ok()
        .map(|s| s.parse().expect("ARBITER_BENCH_SLOTS is a number of slots"));
    let config = HostConfig {
        max_concurrent: slots.unwrap_or(HostConfig::default().max_concurrent),
        prepare_ahead: true,
        ..HostConfig::default()
    };
    let host = Host::new(&config).unwrap();
    let module = std::fs::read(arbiter_test_guests::VM_GUARD).unwrap();
    host.load_blocking("vm-guard", &module).unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(50),
        memory_bytes: 16 << 20,
    };
    let stop = input(
        Operation::Transition,
        Some(vm("RUNNING", &[("env", "prod")])),
        Some(vm("STOPPED", &[("env", "prod")])),
    );
    let create = input(Operation::Create, None, Some(vm("STOPPED", &[("env", "prod")])));
    assert!(matches!(
        host.evaluate_blocking("vm-guard", "bench", limits, &stop),
        Ok(Verdict::Deny(_))
    ));
    assert!(matches!(
        host.evaluate_blocking("vm-guard", "bench", limits, &create),
        Ok(Verdict::Allow)
    ));
    let mut group = c.benchmark_group("vm-guard");
    group.bench_function("instantiate only (fixed cost)", |b| {
        b.iter(|| host.instantiate_blocking("vm-guard", limits))
    });
    group.bench_function("stop prod VM (deny, labels only)", |b| {
        b.iter(|| host.evaluate_blocking("vm-guard", "bench", limits, &stop))
    });
    group.bench_function("create VM (allow, parses spec JSON)", |b| {
        b.iter(|| host.evaluate_blocking("vm-guard", "bench", limits, &create))
    });
    group.finish();

    // The same without instances prepared ahead: each evaluation makes its
    // instance and drops its store itself, on the caller's thread.
    let on_path = Host::new(&HostConfig {
        prepare_ahead: false,
        ..config.clone()
    })
    .unwrap();
    on_path.load_blocking("vm-guard", &module).unwrap();
    let mut group = c.benchmark_group("vm-guard, nothing prepared ahead");
    group.bench_function("stop prod VM (deny, labels only)", |b| {
        b.iter(|| on_path.evaluate_blocking("vm-guard", "bench", limits, &stop))
    });
    group.bench_function("create VM (allow, parses spec JSON)", |b| {
        b.iter(|| on_path.evaluate_blocking("vm-guard", "bench", limits, &create))
    });
    group.finish();
    drop(on_path);

    // The least an evaluation can cost: prompt-review allows anything that
    // is not a prompt as soon as it has read the kind. What is left is the
    // fresh store, the instance, the call and the decision.
    host.load_blocking(
        "prompt-review",
        &std::fs::read(arbiter_test_guests::PROMPT_REVIEW).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        host.evaluate_blocking("prompt-review", "bench", limits, &create),
        Ok(Verdict::Allow)
    ));
    c.bench_function("floor/prompt-review on a VM (allow at once)", |b| {
        b.iter(|| host.evaluate_blocking("prompt-review", "bench", limits, &create))
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
