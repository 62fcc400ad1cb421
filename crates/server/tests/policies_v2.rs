//! Policies of `arbiter:policy@0.2.0` end to end: settings per binding,
//! settings refused at upload in the module's words, lookups confined to
//! the tenant and capped, lookups as preconditions of the commit, so that
//! a rule over several objects cannot be raced — on RocksDB and across two
//! replicas on etcd — previews of a policy before it is bound, and where
//! policies run among a write's other checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbiter_api::v1::*;
use arbiter_store::testing::Etcd;
use arbiter_test_guests as guests;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

/// Settings of a policy as a `Struct`, from JSON.
fn settings(json: serde_json::Value) -> prost_types::Struct {
    fn value(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(value).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
                fields: o.into_iter().map(|(k, v)| (k, value(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match value(json).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        other => panic!("settings must be an object, not {other:?}"),
    }
}

fn binding(module: &str, kinds: &[&str], with: serde_json::Value) -> Policy {
    Policy {
        kinds: kinds.iter().map(ToString::to_string).collect(),
        module: guests::read(module),
        settings: Some(settings(with)),
        ..Default::default()
    }
}

async fn upload(server: &TestServer, id: &str, policy: Policy) -> Result<Policy, tonic::Status> {
    server
        .policies("root")
        .create_policy(CreatePolicyRequest {
            parent: "tenants/acme".into(),
            policy_id: id.into(),
            policy: Some(policy),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn bindings_of_one_module_take_their_own_settings_beside_a_0_1_policy() {
    let server = TestServer::start().await;
    // One 0.2.0 module bound twice with different settings, and a 0.1.0
    // module beside them.
    upload(
        &server,
        "no-vms",
        binding(guests::LOOKUPS, &["vm"], serde_json::json!({"deny": "NO_VMS"})),
    )
    .await
    .unwrap();
    upload(
        &server,
        "no-users",
        binding(
            guests::LOOKUPS,
            &["user"],
            serde_json::json!({"deny": "NO_USERS"}),
        ),
    )
    .await
    .unwrap();
    let guard = Policy {
        settings: None,
        ..binding(guests::USER_GUARD, &["user"], serde_json::json!({}))
    };
    // Named to judge before `no-users`: the first refusal, in name
    // order, is the answer.
    upload(&server, "a-user-guard", guard).await.unwrap();

    let f = expect_failure(
        server
            .vms("acme-editor")
            .create_virtual_machine(create_vm("a"))
            .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    assert_eq!(f.metadata["denial_reason"], "NO_VMS");
    let f = expect_failure(
        server
            .users("acme-editor")
            .create_user(create_user("ada", "ada@evil.example"))
            .await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
    );
    assert_eq!(f.metadata["policy"], "tenants/acme/policies/a-user-guard");
    let f = expect_failure(
        server
            .users("acme-editor")
            .create_user(create_user("ada", "ada@acme.com"))
            .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    assert_eq!(f.metadata["denial_reason"], "NO_USERS");

    // Settings come back as they were set.
    let got = server
        .policies("root")
        .get_policy(GetPolicyRequest {
            name: "tenants/acme/policies/no-vms".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.settings,
        Some(settings(serde_json::json!({"deny": "NO_VMS"})))
    );

    // Changing the settings changes the decision.
    server
        .policies("root")
        .update_policy(UpdatePolicyRequest {
            policy: Some(Policy {
                name: got.name.clone(),
                settings: Some(settings(serde_json::json!({}))),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["settings".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("a"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn bad_settings_are_refused_at_upload_with_the_modules_message() {
    let server = TestServer::start().await;
    let refused = |result: Result<Policy, tonic::Status>| {
        let f = expect_failure(
            result.map(tonic::Response::new),
            Code::InvalidArgument,
            "INVALID_FIELD",
        );
        let bad = f.status.get_error_details().bad_request().cloned().unwrap();
        assert_eq!(bad.field_violations[0].field, "policy.settings");
        bad.field_violations[0].description.clone()
    };
    let why = refused(
        upload(
            &server,
            "p",
            binding(guests::LOOKUPS, &["vm"], serde_json::json!({"deny": "lower"})),
        )
        .await,
    );
    assert!(why.contains("UPPER_SNAKE_CASE"), "{why}");
    let why = refused(
        upload(
            &server,
            "p",
            binding(
                guests::VM_GUARD,
                &["vm"],
                serde_json::json!({"machine_typez": []}),
            ),
        )
        .await,
    );
    assert!(why.contains("machine_typez"), "{why}");
    // A 0.1.0 module takes no settings.
    let why = refused(
        upload(
            &server,
            "p",
            binding(guests::USER_GUARD, &["user"], serde_json::json!({"a": 1})),
        )
        .await,
    );
    assert!(why.contains("0.1.0"), "{why}");
    // Nothing was created.
    let listed = server
        .policies("root")
        .list_policies(ListPoliciesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.policies.is_empty());
    server.stop().await;
}

/// How many times the tenant's policy `id` was evaluated.
async fn evaluations(server: &TestServer, id: &str) -> i64 {
    policy_stats(server, id).await.map_or(0, |p| p.evaluations)
}

#[tokio::test]
async fn policies_judge_before_the_commit_and_after_the_current_object_is_read() {
    let server = TestServer::start().await;
    server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("a"))
        .await
        .unwrap();
    let bob = server
        .users("acme-editor")
        .create_user(create_user("bob", "bob@acme.com"))
        .await
        .unwrap()
        .into_inner();
    // From now on the tenant's policies refuse every change.
    let deny =
        |kind: &str, reason: &str| binding(guests::LOOKUPS, &[kind], serde_json::json!({ "deny": reason }));
    upload(&server, "no-vms", deny("vm", "NO_VMS")).await.unwrap();
    upload(&server, "no-users", deny("user", "NO_USERS"))
        .await
        .unwrap();

    // A create of a taken name is judged first: the policy's refusal is
    // the answer, as README's "Policies" says.
    let f = expect_failure(
        server
            .vms("acme-editor")
            .create_virtual_machine(create_vm("a"))
            .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    assert_eq!(f.metadata["denial_reason"], "NO_VMS");
    assert_eq!(evaluations(&server, "no-vms").await, 1);

    // An update reads the current object first: a missing user or a stale
    // etag is answered without an evaluation.
    let update = |name: &str, etag: &str| UpdateUserRequest {
        user: Some(User {
            name: name.into(),
            etag: etag.into(),
            display_name: "Bob".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
        ..Default::default()
    };
    expect_failure(
        server
            .users("acme-editor")
            .update_user(update("tenants/acme/users/zed", ""))
            .await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    let stale = format!("\"{}\"", bob.revision + 100);
    expect_failure(
        server
            .users("acme-editor")
            .update_user(update(&bob.name, &stale))
            .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(evaluations(&server, "no-users").await, 0);
    // With the current etag the update is judged, and refused.
    expect_failure(
        server
            .users("acme-editor")
            .update_user(update(&bob.name, &bob.etag))
            .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    assert_eq!(evaluations(&server, "no-users").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_see_only_the_tenants_resources_and_are_capped() {
    let server = TestServer::start().await;
    let mut vms = server.vms("root");
    let a = vms
        .create_virtual_machine(create_vm("a"))
        .await
        .unwrap()
        .into_inner();
    vms.create_virtual_machine(labelled_in("other", "a", &[]))
        .await
        .unwrap();
    upload(
        &server,
        "report",
        binding(guests::LOOKUPS, &["vm"], serde_json::json!({"report": true})),
    )
    .await
    .unwrap();
    let f = expect_failure(
        vms.create_virtual_machine(labelled(
            "b",
            &[("lookup", "vms.a_other.vms.a_policies.report_users.nobody_vms.b")],
        ))
        .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
    );
    let revision = revision_of(&a.etag);
    assert!(
        f.message.ends_with(&format!(
            "tenants/acme/vms/a=STOPPED@{revision};tenants/other/vms/a=none;tenants/acme/policies/report=none;tenants/acme/users/nobody=none;tenants/acme/vms/b=none"
        )),
        "{}",
        f.message
    );

    server
        .policies("root")
        .delete_policy(DeletePolicyRequest {
            name: "tenants/acme/policies/report".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    upload(
        &server,
        "greedy",
        binding(guests::LOOKUPS, &["vm"], serde_json::json!({"lookups": 17})),
    )
    .await
    .unwrap();
    let f = expect_failure(
        vms.create_virtual_machine(create_vm("c")).await,
        Code::Internal,
        "POLICY_FAULT",
    );
    assert_eq!(f.metadata["fault"], "trap");
    server.stop().await;
}

fn labelled(id: &str, labels: &[(&str, &str)]) -> CreateVirtualMachineRequest {
    labelled_in("acme", id, labels)
}

/// 32 clients race to make their own VM the tenant's primary: each points
/// the registry at its VM, then creates it labelled `primary=true`. The
/// policy reads the registry and the VM it names with `lookup`; only
/// because those reads are preconditions of each commit does exactly one
/// primary VM come out.
async fn one_primary(servers: &[&TestServer]) {
    // Its lookups are reads of the store (etcd's network round trips on
    // replicas) on a machine busy with 32 racers: the default 50ms time
    // limit would make some racers fail on time, which is not what this
    // test is about.
    let policy = Policy {
        timeout: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
        ..binding(
            guests::LOOKUPS,
            &["vm", "prompt"],
            serde_json::json!({"primary_registry": "primary"}),
        )
    };
    upload(servers[0], "one-primary", policy).await.unwrap();
    servers[0]
        .prompts("acme-editor")
        .create_prompt(labelled_prompt("primary", &[]))
        .await
        .unwrap();
    let mut racers = Vec::new();
    for i in 0..32 {
        let server = servers[i % servers.len()];
        let (mut prompts, mut vms) = (server.prompts("acme-editor"), server.vms("acme-editor"));
        racers.push(tokio::spawn(async move {
            let id = format!("vm-{i}");
            let point = prompts
                .update_prompt(UpdatePromptRequest {
                    prompt: Some(Prompt {
                        name: "tenants/acme/prompts/primary".into(),
                        labels: [("vm".to_string(), id.clone())].into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["labels.vm".into()],
                    }),
                    ..Default::default()
                })
                .await;
            // A racer loses when the policy denies it, when the objects
            // it wrote or read kept moving past the server's retries
            // (ABORTED), or when the tenant's evaluation slots stayed
            // busy (RATE_LIMITED): a client would retry the last two.
            let lost = |status: tonic::Status| {
                let why = reason(&status);
                assert!(
                    ["POLICY_DENIED", "ETAG_MISMATCH", "RATE_LIMITED"].contains(&why.as_str()),
                    "{status:?}"
                );
                false
            };
            if let Err(status) = point {
                return lost(status);
            }
            vms.create_virtual_machine(labelled(&id, &[("primary", "true")]))
                .await
                .map_or_else(lost, |_| true)
        }));
    }
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    let listed = servers[0]
        .vms("acme-editor")
        .list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            filter: "labels.primary = \"true\"".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Never two. (Normally exactly one: the last racer to point the
    // registry wins, unless the server turned it away as busy.)
    let names: Vec<&String> = listed.vms.iter().map(|v| &v.name).collect();
    assert!(listed.vms.len() <= 1, "more than one primary VM: {names:?}");
    assert_eq!(won, listed.vms.len(), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_over_lookups_cannot_be_raced_on_rocksdb() {
    let server = TestServer::start().await;
    one_primary(&[&server]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_over_lookups_cannot_be_raced_across_replicas_on_etcd() {
    let etcd = Etcd::start();
    let servers = replicas_on_etcd(&etcd, 2, |_| {}).await;
    one_primary(&[&servers[0], &servers[1]]).await;
    for server in servers {
        server.stop().await;
    }
}

fn vm_of_type(id: &str, machine_type: &str) -> CreateVirtualMachineRequest {
    let mut req = create_vm(id);
    req.vm.as_mut().unwrap().machine_type = machine_type.into();
    req
}

fn preview(policy: &Policy, current_objects: bool, recent_changes: u32) -> PreviewPolicyRequest {
    PreviewPolicyRequest {
        parent: "tenants/acme".into(),
        policy: Some(policy.clone()),
        current_objects,
        recent_changes,
        max_samples: 0,
    }
}

fn counts(r: &PreviewPolicyResponse) -> (u64, u64, u64, u64) {
    (r.evaluated, r.allowed, r.denied, r.faulted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_counts_exactly_names_the_resources_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    // Five objects, seven changes in tenant acme; one more in another.
    for (id, machine_type) in [
        ("a", "e2-small"),
        ("b", "e2-small"),
        ("c", "e2-small"),
        ("d", "n2-standard-2"),
        ("e", "n2-standard-2"),
    ] {
        vms.create_virtual_machine(vm_of_type(id, machine_type))
            .await
            .unwrap();
    }
    let mut elsewhere = vm_of_type("x", "n2-standard-2");
    elsewhere.parent = "tenants/other".into();
    server
        .vms("root")
        .create_virtual_machine(elsewhere)
        .await
        .unwrap();
    vms.start_virtual_machine(StartVirtualMachineRequest {
        name: "tenants/acme/vms/a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    vms.update_virtual_machine(UpdateVirtualMachineRequest {
        vm: Some(VirtualMachine {
            name: "tenants/acme/vms/b".into(),
            labels: [("team".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels.team".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();

    let candidate = binding(
        guests::VM_GUARD,
        &["vm"],
        serde_json::json!({"machine_types": ["e2-small"]}),
    );
    let mut policies = server.policies("root");
    let objects = policies
        .preview_policy(preview(&candidate, true, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&objects), (5, 3, 2, 0));
    let samples: Vec<(&str, &str, &str, &str)> = objects
        .samples
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.operation.as_str(),
                s.kind.as_str(),
                s.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        samples,
        [
            (
                "tenants/acme/vms/d",
                "create",
                "invalid",
                "MACHINE_TYPE_NOT_ALLOWED"
            ),
            (
                "tenants/acme/vms/e",
                "create",
                "invalid",
                "MACHINE_TYPE_NOT_ALLOWED"
            ),
        ]
    );
    assert!(!objects.truncated);

    // Every change: five creates (two denied), a start, an update.
    let changes = policies
        .preview_policy(preview(&candidate, false, 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&changes), (7, 5, 2, 0));
    // The latest three: the create of e, the start of a, the update of b.
    let latest = policies
        .preview_policy(preview(&candidate, false, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&latest), (3, 2, 1, 0));
    assert_eq!(latest.samples[0].name, "tenants/acme/vms/e");
    let both = policies
        .preview_policy(preview(&candidate, true, 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&both), (12, 8, 4, 0));
    let mut few = preview(&candidate, true, 100);
    few.max_samples = 1;
    let few = policies.preview_policy(few).await.unwrap().into_inner();
    assert_eq!((counts(&few), few.samples.len()), ((12, 8, 4, 0), 1));

    // Nothing was stored: no policy, and the next commit follows the
    // revision the previews judged.
    let listed = policies
        .list_policies(ListPoliciesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.policies.is_empty());
    let next = vms
        .create_virtual_machine(create_vm("f"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revision_of(&next.etag), few.revision + 1);

    // Bounded requests, and admins only.
    let mut too_many = preview(&candidate, false, 10_001);
    too_many.max_samples = 101;
    let f = expect_failure(
        policies.preview_policy(too_many).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(
        f.message.contains("recent_changes") && f.message.contains("max_samples"),
        "{}",
        f.message
    );
    expect_failure(
        server
            .policies("acme-editor")
            .preview_policy(preview(&candidate, true, 0))
            .await,
        Code::PermissionDenied,
        "ROLE_FORBIDDEN",
    );
    let bad = binding(
        guests::VM_GUARD,
        &["vm"],
        serde_json::json!({"machine_types": []}),
    );
    expect_failure(
        policies.preview_policy(preview(&bad, true, 0)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    server.stop().await;
}

/// The revision an etag names.
fn revision_of(etag: &str) -> u64 {
    u64::from_str_radix(etag.trim_matches('"'), 16).unwrap()
}

/// A preview replays a change with its lookups reading the objects as
/// they were just before it, and judges current objects on the store as it
/// is: the `lookups` test policy reports what it read.
async fn previews_look_up_the_past(server: &TestServer) {
    let mut vms = server.vms("acme-editor");
    let gone = vms
        .create_virtual_machine(create_vm("gone"))
        .await
        .unwrap()
        .into_inner();
    let referenced = vms
        .create_virtual_machine(create_vm("ref"))
        .await
        .unwrap()
        .into_inner();
    vms.create_virtual_machine(labelled("probe", &[("lookup", "vms.ref_vms.later_vms.gone")]))
        .await
        .unwrap();
    // After the probe's create: ref starts, later appears, gone goes.
    let started = vms
        .start_virtual_machine(StartVirtualMachineRequest {
            name: "tenants/acme/vms/ref".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let later = vms
        .create_virtual_machine(create_vm("later"))
        .await
        .unwrap()
        .into_inner();
    vms.delete_virtual_machine(DeleteVirtualMachineRequest {
        name: "tenants/acme/vms/gone".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let reporter = binding(guests::LOOKUPS, &["vm"], serde_json::json!({"report": true}));
    let mut policies = server.policies("root");
    let probe = |response: &PreviewPolicyResponse| {
        let samples: Vec<&str> = response
            .samples
            .iter()
            .filter(|s| s.name == "tenants/acme/vms/probe")
            .map(|s| s.message.as_str())
            .collect();
        match samples[..] {
            [message] => message.to_string(),
            _ => panic!("one sample of the probe, not {samples:?}"),
        }
    };
    let replayed = policies
        .preview_policy(preview(&reporter, false, 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        probe(&replayed),
        format!(
            "tenants/acme/vms/ref={}@{};tenants/acme/vms/later=none;tenants/acme/vms/gone={}@{}",
            referenced.state().as_str_name(),
            revision_of(&referenced.etag),
            gone.state().as_str_name(),
            revision_of(&gone.etag),
        )
    );
    let current = policies
        .preview_policy(preview(&reporter, true, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        probe(&current),
        format!(
            "tenants/acme/vms/ref={}@{};tenants/acme/vms/later={}@{};tenants/acme/vms/gone=none",
            started.state().as_str_name(),
            revision_of(&started.etag),
            later.state().as_str_name(),
            revision_of(&later.etag),
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_replays_changes_with_lookups_as_they_were_on_rocksdb() {
    let server = TestServer::start().await;
    previews_look_up_the_past(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_replays_changes_with_lookups_as_they_were_on_etcd() {
    let etcd = Etcd::start();
    let servers = replicas_on_etcd(&etcd, 1, |_| {}).await;
    previews_look_up_the_past(&servers[0]).await;
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_module_in_a_preview_faults_within_its_limits() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    vms.create_virtual_machine(create_vm("calm")).await.unwrap();
    vms.create_virtual_machine(labelled("spinner", &[("hostile", "loop")]))
        .await
        .unwrap();
    vms.create_virtual_machine(labelled("hog", &[("hostile", "memory")]))
        .await
        .unwrap();
    // Limits small enough that the hog meets its memory limit long before
    // its time limit, however busy the machine: at the default 16 MiB it
    // writes 16 MiB first, which on a loaded machine can take it past
    // 20ms and make it fault on time instead.
    let hostile = Policy {
        kinds: vec!["vm".into()],
        module: guests::read(guests::HOSTILE),
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 20_000_000,
        }),
        memory_limit_bytes: 4 << 20,
        ..Default::default()
    };
    let result = server
        .policies("root")
        .preview_policy(preview(&hostile, true, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&result), (3, 1, 0, 2));
    let mut faults: Vec<(&str, &str, &str)> = result
        .samples
        .iter()
        .map(|s| (s.name.as_str(), s.kind.as_str(), s.reason.as_str()))
        .collect();
    faults.sort_unstable();
    assert_eq!(
        faults,
        [
            ("tenants/acme/vms/hog", "fault", "MEMORY"),
            ("tenants/acme/vms/spinner", "fault", "TIMEOUT"),
        ]
    );
    // The server goes on.
    vms.create_virtual_machine(create_vm("after")).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_preview_over_http_by_an_uploaded_modules_digest() {
    let server = TestServer::start().await;
    server
        .vms("acme-editor")
        .create_virtual_machine(vm_of_type("big", "n2-standard-4"))
        .await
        .unwrap();
    // Uploaded for prompts only, so that it judges no VM; previewed for VMs.
    let uploaded = upload(
        &server,
        "guard",
        binding(guests::VM_GUARD, &["prompt"], serde_json::json!({})),
    )
    .await
    .unwrap();
    let body = serde_json::json!({
        "policy": {
            "kinds": ["vm"],
            "module_sha256": uploaded.module_sha256,
            "settings": {"machine_types": ["e2-small"]},
        },
        "current_objects": true,
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/policies:preview", server.http_base()))
        .bearer_auth("root")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["evaluated"], "1");
    assert_eq!(answer["denied"], "1");
    assert_eq!(answer["samples"][0]["name"], "tenants/acme/vms/big");
    server.stop().await;
}
