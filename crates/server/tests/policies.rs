//! Tenant policies end to end: the example policies, built from source,
//! uploaded through the Policies API and enforced on real requests, with
//! the codes, reasons and details of ARCHITECTURE.md section 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbiter_api::v1::{policy::FailurePolicy, policy::Mode, policy::Operation, *};
use arbiter_test_guests as guests;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

/// A policy of `kinds` running `module`.
fn policy(module: &str, kinds: &[&str]) -> Policy {
    Policy {
        kinds: kinds.iter().map(ToString::to_string).collect(),
        module: guests::read(module),
        ..Default::default()
    }
}

fn create(tenant: &str, id: &str, policy: Policy) -> CreatePolicyRequest {
    CreatePolicyRequest {
        parent: format!("tenants/{tenant}"),
        policy_id: id.into(),
        policy: Some(policy),
        ..Default::default()
    }
}

async fn upload(server: &TestServer, tenant: &str, id: &str, policy: Policy) -> Policy {
    server
        .policies("root")
        .create_policy(create(tenant, id, policy))
        .await
        .unwrap_or_else(|s| panic!("uploading {id}: {}", s.message()))
        .into_inner()
}

fn labelled(id: &str, labels: &[(&str, &str)]) -> CreateVirtualMachineRequest {
    labelled_in("acme", id, labels)
}

/// A create of a VM of a machine type vm-guard does not allow.
fn enormous(id: &str) -> CreateVirtualMachineRequest {
    let mut req = create_vm(id);
    req.vm.as_mut().unwrap().machine_type = "m9-enormous".into();
    req
}

fn stop(name: &str) -> StopVirtualMachineRequest {
    StopVirtualMachineRequest {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn vm_guard_denies_conflicts_and_invalid_machine_types() {
    let server = TestServer::start().await;
    let guard = upload(&server, "acme", "vm-guard", policy(guests::VM_GUARD, &["vm"])).await;
    assert_eq!(guard.name, "tenants/acme/policies/vm-guard");
    assert_eq!(guard.module_sha256.len(), 64);
    assert!(guard.module.is_empty(), "module bytes are never returned");
    let mut vms = server.vms("acme-editor");

    let vm = vms
        .create_virtual_machine(labelled("web-1", &[("env", "prod")]))
        .await
        .unwrap()
        .into_inner();
    vms.start_virtual_machine(StartVirtualMachineRequest {
        name: vm.name.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let f = expect_failure(
        vms.stop_virtual_machine(stop(&vm.name)).await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    assert_eq!(f.metadata["policy"], "tenants/acme/policies/vm-guard");
    assert_eq!(f.metadata["policy_revision"], guard.revision.to_string());
    assert_eq!(f.metadata["denial_reason"], "PROD_CHANGE_NEEDS_TICKET");
    assert_eq!(f.metadata["resource"], vm.name);
    assert!(f.message.contains("change-ticket"), "{}", f.message);
    let violations = f
        .status
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("PreconditionFailure");
    assert_eq!(violations.violations[0].subject, "vm.labels.change-ticket");

    // The way out the denial names works.
    let mut ticketed = vm.clone();
    ticketed.etag.clear();
    ticketed.labels.insert("change-ticket".into(), "CHG-1".into());
    vms.update_virtual_machine(UpdateVirtualMachineRequest {
        vm: Some(ticketed),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels.change-ticket".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    vms.stop_virtual_machine(stop(&vm.name)).await.unwrap();

    let big = enormous("big-1");
    let f = expect_failure(
        vms.create_virtual_machine(big).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    let bad = f
        .status
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "vm.machine_type");
    assert_eq!(f.metadata["denial_reason"], "MACHINE_TYPE_NOT_ALLOWED");

    // validate_only runs the policies too, and writes nothing.
    let mut dry = enormous("big-2");
    dry.validate_only = true;
    expect_failure(
        vms.create_virtual_machine(dry).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );

    // Another tenant has no policies: the same request passes there.
    let mut other = enormous("big-1");
    other.parent = "tenants/globex".into();
    server
        .vms("globex-editor")
        .create_virtual_machine(other)
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn prompt_review_forbids_unreviewed_and_self_reviewed_publishing() {
    let server = TestServer::start().await;
    upload(
        &server,
        "acme",
        "prompt-review",
        policy(guests::PROMPT_REVIEW, &["prompt"]),
    )
    .await;
    let mut prompts = server.prompts("acme-editor");
    let create = labelled_prompt;
    let publish = |id: &str| PublishPromptRequest {
        name: format!("tenants/acme/prompts/{id}"),
        ..Default::default()
    };
    prompts.create_prompt(create("unreviewed", &[])).await.unwrap();
    let f = expect_failure(
        prompts.publish_prompt(publish("unreviewed")).await,
        Code::PermissionDenied,
        "POLICY_FORBIDDEN",
    );
    assert_eq!(f.metadata["denial_reason"], "REVIEW_REQUIRED");
    prompts
        .create_prompt(create("self", &[("reviewed-by", "alice")]))
        .await
        .unwrap();
    let f = expect_failure(
        prompts.publish_prompt(publish("self")).await,
        Code::PermissionDenied,
        "POLICY_FORBIDDEN",
    );
    assert_eq!(f.metadata["denial_reason"], "SELF_REVIEW");
    prompts
        .create_prompt(create("reviewed", &[("reviewed-by", "bob")]))
        .await
        .unwrap();
    let published = prompts
        .publish_prompt(publish("reviewed"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.state, prompt::State::Published as i32);
    server.stop().await;
}

#[tokio::test]
async fn user_guard_and_the_python_policy_reject_invalid_values() {
    let server = TestServer::start().await;
    upload(
        &server,
        "acme",
        "user-guard",
        policy(guests::USER_GUARD, &["user"]),
    )
    .await;
    let mut labels_policy = policy(guests::REQUIRE_LABELS_PY, &["user"]);
    labels_policy.memory_limit_bytes = 128 << 20;
    labels_policy.timeout = Some(prost_types::Duration { seconds: 1, nanos: 0 });
    upload(&server, "acme", "require-labels", labels_policy).await;
    let mut users = server.users("acme-editor");
    let with_labels = |id: &str, email: &str| {
        let mut req = create_user(id, email);
        let user = req.user.as_mut().unwrap();
        user.labels.insert("owner".into(), "it".into());
        user.labels.insert("cost-center".into(), "cc-1042".into());
        req
    };

    let f = expect_failure(
        users
            .create_user(with_labels("mallory", "mallory@evil.example"))
            .await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    assert_eq!(f.metadata["policy"], "tenants/acme/policies/user-guard");
    let bad = f
        .status
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "user.email");

    let f = expect_failure(
        users.create_user(create_user("ada", "ada@eng.acme.com")).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    assert_eq!(f.metadata["policy"], "tenants/acme/policies/require-labels");
    assert_eq!(f.metadata["denial_reason"], "LABELS_REQUIRED");
    let bad = f
        .status
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("BadRequest");
    let fields: Vec<&str> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["user.labels.owner", "user.labels.cost-center"]);

    users
        .create_user(with_labels("ada", "ada@eng.acme.com"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn audit_policies_never_block() {
    let server = TestServer::start().await;
    let mut audit = policy(guests::HOSTILE, &["vm"]);
    audit.mode = Mode::Audit as i32;
    upload(&server, "acme", "audit", audit).await;
    let mut vms = server.vms("acme-editor");
    for behaviour in ["deny", "trap"] {
        let id = format!("audited-{behaviour}");
        let created = vms
            .create_virtual_machine(labelled(&id, &[("hostile", behaviour)]))
            .await
            .unwrap_or_else(|s| panic!("{behaviour}: {}", s.message()));
        assert_eq!(created.into_inner().name, format!("tenants/acme/vms/{id}"));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_new_revision_takes_effect_at_once_and_rolls_back_by_digest() {
    let mut server = TestServer::start().await;
    let guard = upload(&server, "acme", "guard", policy(guests::VM_GUARD, &["vm"])).await;
    let mut vms = server.vms("acme-editor");
    let mut big = enormous("big");
    expect_failure(
        vms.create_virtual_machine(big.clone()).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );

    // A new module: the hostile policy allows what carries no label.
    let mut admin = server.policies("root");
    let replaced = admin
        .update_policy(UpdatePolicyRequest {
            policy: Some(Policy {
                name: guard.name.clone(),
                etag: guard.etag.clone(),
                module: guests::read(guests::HOSTILE),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["module".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(replaced.module_sha256, guard.module_sha256);
    assert!(replaced.revision > guard.revision);
    vms.create_virtual_machine(big.clone()).await.unwrap();

    // A stale etag is refused like any other resource's.
    let stale = admin
        .update_policy(UpdatePolicyRequest {
            policy: Some(Policy {
                name: guard.name.clone(),
                etag: guard.etag.clone(),
                description: "stale".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    expect_failure(stale, Code::Aborted, "ETAG_MISMATCH");

    // Roll back by digest, without uploading the module again.
    let rolled = admin
        .update_policy(UpdatePolicyRequest {
            policy: Some(Policy {
                name: guard.name.clone(),
                module_sha256: guard.module_sha256.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["module_sha256".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rolled.module_sha256, guard.module_sha256);
    assert_eq!(rolled.module_size_bytes, guard.module_size_bytes);
    big.vm_id = "big-2".into();
    let f = expect_failure(
        vms.create_virtual_machine(big.clone()).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    assert_eq!(f.metadata["policy_revision"], rolled.revision.to_string());

    // Policies survive a restart and are enforced at once.
    server.restart().await;
    let mut vms = server.vms("acme-editor");
    big.vm_id = "big-3".into();
    expect_failure(
        vms.create_virtual_machine(big.clone()).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    let listed = server
        .policies("root")
        .list_policies(ListPoliciesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.policies.len(), 1);
    assert_eq!(listed.policies[0].revision, rolled.revision);

    // Deleting the policy stops it at once.
    server
        .policies("root")
        .delete_policy(DeletePolicyRequest {
            name: guard.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    vms.create_virtual_machine(big).await.unwrap();
    server.stop().await;
}

/// A component header followed by more bytes than the test server accepts.
fn oversized() -> Vec<u8> {
    let mut module = b"\0asm\x0d\0\x01\0".to_vec();
    module.resize(200_000, 0);
    module
}

#[tokio::test]
async fn uploads_are_validated_and_admin_only() {
    let server = TestServer::start_with(|c| c.policy_max_module_bytes = 100_000).await;
    let mut admin = server.policies("root");
    let field_of = |f: &Failure| {
        let bad = f
            .status
            .get_error_details()
            .bad_request()
            .cloned()
            .expect("BadRequest");
        (
            bad.field_violations[0].field.clone(),
            bad.field_violations[0].description.clone(),
        )
    };
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        (
            "garbage",
            b"#!/bin/sh\necho allow".to_vec(),
            "policy.module",
            "not WebAssembly",
        ),
        (
            "core",
            b"\0asm\x01\0\0\0".to_vec(),
            "policy.module",
            "core WebAssembly module",
        ),
        (
            "wrong-world",
            guests::read(guests::WRONG_WORLD),
            "policy.module",
            "arbiter:policy/policy",
        ),
        ("too-big", oversized(), "policy.module", "at most 100000 bytes"),
        ("empty", Vec::new(), "policy.module", "is required"),
    ];
    for (id, module, field, says) in cases {
        let mut p = policy(guests::PROMPT_REVIEW, &["vm"]);
        p.module = module;
        let f = expect_failure(
            admin.create_policy(create("acme", id, p)).await,
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
        let (got_field, description) = field_of(&f);
        assert_eq!(got_field, field, "{id}");
        assert!(description.contains(says), "{id}: {description}");
    }
    let mut bad_fields = policy(guests::PROMPT_REVIEW, &["vm", "planet"]);
    bad_fields.timeout = Some(prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    });
    bad_fields.operations = vec![Operation::Create as i32, 42];
    let f = expect_failure(
        admin.create_policy(create("acme", "bad", bad_fields)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(field_of(&f).0, "policy.timeout");
    let mut bad_kinds = policy(guests::PROMPT_REVIEW, &["vm", "planet"]);
    bad_kinds.operations = vec![42];
    let f = expect_failure(
        admin.create_policy(create("acme", "bad", bad_kinds)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let bad = f.status.get_error_details().bad_request().cloned().unwrap();
    let fields: Vec<&str> = bad.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["policy.kinds[1]", "policy.operations[0]"]);

    // Editors and viewers may not touch policies, not even read them.
    let p = policy(guests::PROMPT_REVIEW, &["prompt"]);
    let f = expect_failure(
        server
            .policies("acme-editor")
            .create_policy(create("acme", "mine", p))
            .await,
        Code::PermissionDenied,
        "ROLE_FORBIDDEN",
    );
    assert_eq!(f.metadata["required_role"], "admin");
    expect_failure(
        server
            .policies("acme-viewer")
            .list_policies(ListPoliciesRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "ROLE_FORBIDDEN",
    );
    server.stop().await;
}

/// A hostile policy, bound to VM creates, with a 100ms time limit and an
/// 8 MiB memory limit (small, so that the memory bomb reaches it well
/// within the time limit even on a loaded machine).
fn hostile(failure: FailurePolicy) -> Policy {
    let mut p = policy(guests::HOSTILE, &["vm"]);
    p.operations = vec![Operation::Create as i32];
    p.failure_policy = failure as i32;
    p.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 100_000_000,
    });
    p.memory_limit_bytes = 8 << 20;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policies_fault_within_their_limits_and_hurt_no_one_else() {
    let server = TestServer::start().await;
    upload(&server, "acme", "hostile", hostile(FailurePolicy::FailClosed)).await;
    upload(
        &server,
        "initech",
        "hostile-open",
        hostile(FailurePolicy::FailOpen),
    )
    .await;

    // Meanwhile another tenant creates VMs without pause.
    let (done, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let mut globex = server.vms("globex-editor");
    let bystander = tokio::spawn(async move {
        let mut created = 0;
        loop {
            let mut req = create_vm(&format!("bystander-{created}"));
            req.parent = "tenants/globex".into();
            globex
                .create_virtual_machine(req)
                .await
                .expect("the other tenant is unaffected");
            created += 1;
            if stopped.try_recv().is_ok() {
                return created;
            }
        }
    });

    let mut vms = server.vms("acme-editor");
    let limit = std::time::Duration::from_millis(100);
    // Generous slack: CI machines are noisy; an unbounded guest never ends.
    let slack = std::time::Duration::from_secs(2);
    for (behaviour, fault) in [
        ("loop", "timeout"),
        ("memory", "memory"),
        ("recursion", "trap"),
        ("trap", "trap"),
    ] {
        let started = std::time::Instant::now();
        let result = vms
            .create_virtual_machine(labelled(&format!("h-{behaviour}"), &[("hostile", behaviour)]))
            .await;
        let took = started.elapsed();
        let f = expect_failure(result, Code::Internal, "POLICY_FAULT");
        assert_eq!(f.metadata["fault"], fault, "{behaviour}: {}", f.message);
        assert_eq!(f.metadata["policy"], "tenants/acme/policies/hostile");
        assert!(took < limit + slack, "{behaviour} took {took:?}");
        assert!(f.message.len() < 2048, "{behaviour}: {}", f.message);
        // What the guest wrote (its panic message) stays in the server log.
        assert!(!f.message.contains("on purpose"), "{behaviour}: {}", f.message);
        assert!(!f.message.contains("src/lib.rs"), "{behaviour}: {}", f.message);
    }

    // A huge denial is cut to size and still reaches the client.
    let f = expect_failure(
        vms.create_virtual_machine(labelled("h-huge", &[("hostile", "huge")]))
            .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    assert!(f.message.len() < 2048, "{} bytes", f.message.len());
    let kept = f
        .status
        .get_error_details()
        .precondition_failure()
        .cloned()
        .unwrap();
    assert!(kept.violations.len() <= 8);

    // A log flood is dropped, not stored, and the request goes on.
    vms.create_virtual_machine(labelled("h-logs", &[("hostile", "log-flood")]))
        .await
        .unwrap();

    // Fail-open: the fault is logged and the request goes on.
    let mut open = labelled("h-open", &[("hostile", "loop")]);
    open.parent = "tenants/initech".into();
    server.vms("root").create_virtual_machine(open).await.unwrap();

    done.send(()).unwrap();
    let created = bystander.await.unwrap();
    assert!(created > 0);
    let health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_lets_a_denied_change_through_with_a_warning() {
    let server = TestServer::start().await;
    let mut guard = policy(guests::VM_GUARD, &["vm"]);
    guard.mode = Mode::Warn as i32;
    upload(&server, "acme", "vm-guard", guard).await;
    let big = enormous("big-1");

    // gRPC: created, with the denial as `arbiter-warning` metadata.
    let created = server
        .vms("acme-editor")
        .create_virtual_machine(big)
        .await
        .unwrap();
    let warnings: Vec<String> = created
        .metadata()
        .get_all("arbiter-warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("tenants/acme/policies/vm-guard: "),
        "{warnings:?}"
    );
    assert_eq!(created.into_inner().machine_type, "m9-enormous");
    // An allowed change carries none.
    let plain = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("small-1"))
        .await
        .unwrap();
    assert!(plain.metadata().get("arbiter-warning").is_none());

    // HTTP: 200 with `Warning: 299 - "<the same text>"`.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/vms?vm_id=big-2", server.http_base()))
        .bearer_auth("acme-editor")
        .json(&serde_json::json!({"machineType": "m9-enormous", "region": "us-east1", "image": "debian-12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let warning = response.headers()["warning"].to_str().unwrap().to_string();
    // The text as an RFC 9110 quoted-string.
    let quoted = warnings[0].replace('\\', "\\\\").replace('"', "\\\"");
    assert_eq!(warning, format!("299 - \"{quoted}\""));

    // The CLI prints it and succeeds.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .args([
            "vm",
            "create",
            "tenants/acme/vms/big-3",
            "--region",
            "us-east1",
            "--machine-type",
            "m9-enormous",
            "--image",
            "debian-12",
        ])
        .env(
            "ARBITER_SERVER",
            format!("http://{}", server.running.as_ref().unwrap().grpc_addr),
        )
        .env("ARBITER_TOKEN", "acme-editor")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("warning: {}", warnings[0])),
        "{stderr}"
    );

    // Counted as would-denials, apart from enforced denials.
    let guard = policy_stats(&server, "vm-guard").await.unwrap();
    assert_eq!((guard.warned, guard.denied), (3, 0), "{guard:?}");
    server.stop().await;
}

/// With `--policy-prepare-ahead true`, evaluations of an inline policy run
/// in instances made ahead of them, and decide as they would without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_made_ahead_serve_evaluations_when_asked() {
    let server = TestServer::start_with(|c| c.policy_prepare_ahead = true).await;
    upload(&server, "acme", "vm-guard", policy(guests::VM_GUARD, &["vm"])).await;
    let mut vms = server.vms("acme-editor");
    let base = server.http_base();
    // The preparing thread makes instances of the modules it has seen
    // evaluated: creates go on until one ran in an instance made ahead.
    let mut created = 0;
    while metric_value(&metrics_text(&base).await, "arbiter_policy_prepared_total") == 0 {
        vms.create_virtual_machine(create_vm(&format!("ahead-{created}")))
            .await
            .unwrap();
        created += 1;
        assert!(created < 2_000, "no evaluation ran in an instance made ahead");
    }
    let big = enormous("big-ahead");
    let f = expect_failure(
        vms.create_virtual_machine(big).await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    assert_eq!(f.metadata["denial_reason"], "MACHINE_TYPE_NOT_ALLOWED");
    server.stop().await;
}
