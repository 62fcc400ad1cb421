//! Policies of `arbiter:policy@0.2.0` end to end: settings per binding,
//! settings refused at upload in the module's words, lookups confined to
//! the tenant and capped, and lookups as preconditions of the commit, so
//! that a rule over several objects cannot be raced — on RocksDB and
//! across two replicas on etcd.
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
    let revision = u64::from_str_radix(a.etag.trim_matches('"'), 16).unwrap();
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
    upload(
        servers[0],
        "one-primary",
        binding(
            guests::LOOKUPS,
            &["vm", "prompt"],
            serde_json::json!({"primary_registry": "primary"}),
        ),
    )
    .await
    .unwrap();
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
    assert_eq!(won, 1, "exactly one racer made its VM the primary");
    assert_eq!(
        listed.vms.len(),
        1,
        "{:?}",
        listed.vms.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
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
