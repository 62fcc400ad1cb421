//! One tenant's hostile load costs another tenant at most a modest share
//! of its throughput (ARCHITECTURE.md section 9), against the real binary.
//! Alone in its test binary, so that no other test shares the machine
//! while it measures; bounded to a few seconds of load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arbiter_api::v1::policy::{FailurePolicy, Operation};
use arbiter_api::v1::{CreatePolicyRequest, Policy};
use arbiter_test_guests as guests;
use common::process::Process;
use common::*;
use tonic::Code;

/// How long each phase generates load.
const PHASE: Duration = Duration::from_secs(4);
/// Clients of the measured tenant.
const B_CLIENTS: usize = 4;
/// Clients of the flooding tenant.
const A_CLIENTS: usize = 32;

/// A spinning test policy on VM creates: it allows a VM without labels and
/// spins to its time limit (`millis`) on its label.
fn spinner(module: &str, failure: FailurePolicy, millis: i32) -> Policy {
    Policy {
        kinds: vec!["vm".into()],
        operations: vec![Operation::Create as i32],
        failure_policy: failure as i32,
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: millis * 1_000_000,
        }),
        module: guests::read(module),
        ..Default::default()
    }
}

fn client(channel: &tonic::transport::Channel, token: &str) -> VmsClient {
    arbiter_api::v1::virtual_machines_client::VirtualMachinesClient::with_interceptor(
        channel.clone(),
        Bearer(Some(format!("Bearer {token}").parse().unwrap())),
    )
}

type VmsClient = arbiter_api::v1::virtual_machines_client::VirtualMachinesClient<Authed>;

/// Creates in tenant globex from `B_CLIENTS` clients for one phase; how
/// many succeeded.
async fn measure_b(channel: &tonic::transport::Channel, phase: &str) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..B_CLIENTS)
        .map(|c| {
            let (mut vms, done) = (client(channel, "globex-editor"), Arc::clone(&done));
            let phase = phase.to_string();
            tokio::spawn(async move {
                let end = tokio::time::Instant::now() + PHASE;
                let mut i = 0;
                while tokio::time::Instant::now() < end {
                    let id = format!("b-{phase}-{c}-{i}");
                    vms.create_virtual_machine(labelled_in("globex", &id, &[]))
                        .await
                        .unwrap_or_else(|s| panic!("tenant B's create failed: {s:?}"));
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

/// `arbiter_policy_evaluations_total{result}` from `/metrics`.
async fn evaluations(base: &str, result: &str) -> u64 {
    let series = format!("arbiter_policy_evaluations_total{{result=\"{result}\"}}");
    metric_value(&metrics_text(base).await, &series)
}

/// Both ways the host runs a policy: hostile (with WASI) on a fiber from
/// the start; spin (without) inline until its first epoch tick, then on a
/// fiber. One after the other, each against a server of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_with_slow_policies_leaves_others_their_throughput() {
    flood_with("hostile", guests::HOSTILE, ("hostile", "loop")).await;
    flood_with("spin", guests::SPIN, ("spin", "forever")).await;
}

/// Tenant A floods with creates that `module` spins on to its time limit
/// (those labelled `spin`), while tenant B's creates (unlabelled, allowed
/// at once by the same module) are measured alone and beside A's.
async fn flood_with(name: &str, module: &str, spin: (&'static str, &'static str)) {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path());
    server.wait_serving().await;
    let channel = connect(server.grpc_addr).await;
    let base = format!("http://{}", server.http_addr);
    let mut policies = server.client().await.server().policies();
    // B's policy allows at once; its generous limit keeps a loaded machine
    // (the time limit is wall-clock) from failing B's requests.
    for (tenant, id, failure, millis) in [
        ("acme", "spinner", FailurePolicy::FailOpen, 100),
        ("globex", "cheap", FailurePolicy::FailClosed, 900),
    ] {
        policies
            .create_policy(CreatePolicyRequest {
                parent: format!("tenants/{tenant}"),
                policy_id: id.into(),
                policy: Some(spinner(module, failure, millis)),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Warm up: both modules loaded, both tenants' policy lists cached.
    measure_b(&channel, "warm").await;

    let alone = measure_b(&channel, "alone").await;

    let flooding = Arc::new(AtomicBool::new(true));
    let (a_done, a_limited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ignored_before = evaluations(&base, "fault_ignored").await;
    let flood: Vec<_> = (0..A_CLIENTS)
        .map(|c| {
            let mut vms = client(&channel, "acme-editor");
            let (flooding, done, limited) =
                (Arc::clone(&flooding), Arc::clone(&a_done), Arc::clone(&a_limited));
            tokio::spawn(async move {
                let mut i = 0;
                while flooding.load(Ordering::Relaxed) {
                    let id = format!("a-{c}-{i}");
                    match vms
                        .create_virtual_machine(labelled_in("acme", &id, &[spin]))
                        .await
                    {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(s) if s.code() == Code::ResourceExhausted => {
                            assert_eq!(reason(&s), "RATE_LIMITED", "{s:?}");
                            limited.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(s) => panic!("tenant A's create failed otherwise: {s:?}"),
                    };
                    i += 1;
                }
            })
        })
        .collect();
    let shared = measure_b(&channel, "shared").await;
    flooding.store(false, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let ignored = evaluations(&base, "fault_ignored").await - ignored_before;
    let (a_done, a_limited) = (a_done.load(Ordering::Relaxed), a_limited.load(Ordering::Relaxed));
    eprintln!(
        "{name}: tenant B alone: {alone} creates; with A flooding: {shared} ({:.2}); A: {a_done} created, {a_limited} RATE_LIMITED, {ignored} policy faults ignored (FAIL_OPEN)",
        shared as f64 / alone.max(1) as f64
    );
    assert!(
        shared * 2 >= alone,
        "{name}: tenant B kept {shared} of {alone} creates while A flooded"
    );
    // A's FAIL_OPEN policy ran (and timed out) for every create of A that
    // went through: none was let through unjudged.
    assert!(
        a_done <= ignored,
        "{a_done} creates of A but only {ignored} evaluations of its policy"
    );
    assert!(a_limited > 0, "A's flood waited past the slot wait");
}
