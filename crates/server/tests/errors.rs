//! Every error row of ARCHITECTURE.md section 3 that the gRPC API produces,
//! against a real server with a real client: code, ErrorInfo reason and
//! domain, key metadata and detail types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbiter_api::v1::*;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn name_taken_is_already_exists_with_the_existing_resource() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let first = vms
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap()
        .into_inner();
    let f = expect_failure(
        server
            .vms("acme-editor-2")
            .create_virtual_machine(create_vm("web-1"))
            .await,
        Code::AlreadyExists,
        "RESOURCE_EXISTS",
    );
    let info = f
        .status
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("ResourceInfo");
    assert_eq!(info.resource_name, "tenants/acme/vms/web-1");
    assert_eq!(info.resource_type, "arbiter.v1.VirtualMachine");
    assert_eq!(f.metadata["current_etag"], first.etag);
    assert_eq!(f.metadata["current_state"], "STOPPED");
    assert!(f.message.contains("tenants/acme/vms/web-1"), "{}", f.message);
    server.stop().await;
}

#[tokio::test]
async fn email_taken_is_unique_field_taken_regardless_of_case() {
    let server = TestServer::start().await;
    let mut users = server.users("acme-editor");
    users
        .create_user(create_user("ada", "Ada@Example.com"))
        .await
        .unwrap();
    let f = expect_failure(
        users.create_user(create_user("ada2", "ada@example.COM")).await,
        Code::AlreadyExists,
        "UNIQUE_FIELD_TAKEN",
    );
    assert_eq!(f.metadata["field"], "email");
    assert_eq!(f.metadata["value"], "ada@example.COM");
    assert_eq!(f.metadata["existing"], "tenants/acme/users/ada");
    // Another tenant may use the same email.
    let mut globex = create_user("ada", "ada@example.com");
    globex.parent = "tenants/globex".into();
    server.users("globex-editor").create_user(globex).await.unwrap();
    // Updating another user to the taken email is refused too.
    let bob = users
        .create_user(create_user("bob", "bob@example.com"))
        .await
        .unwrap()
        .into_inner();
    let update = UpdateUserRequest {
        user: Some(User {
            name: bob.name.clone(),
            email: "ADA@example.com".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["email".into()],
        }),
        ..Default::default()
    };
    let f = expect_failure(
        users.update_user(update).await,
        Code::AlreadyExists,
        "UNIQUE_FIELD_TAKEN",
    );
    assert_eq!(f.metadata["existing"], "tenants/acme/users/ada");
    // Once ada is gone her email is free.
    users
        .delete_user(DeleteUserRequest {
            name: "tenants/acme/users/ada".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    users
        .create_user(create_user("ada3", "ada@example.com"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn stale_etag_is_aborted_with_the_current_etag() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let created = vms
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap()
        .into_inner();
    let mut bobs = server.vms("acme-editor-2");
    let mut change = created.clone();
    change.display_name = "Bob's".into();
    let updated = bobs
        .update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(updated.etag, created.etag);
    assert_eq!(updated.updated_by, "bob");
    let mut stale = created.clone();
    stale.display_name = "Alice's".into();
    let f = expect_failure(
        vms.update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(stale),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            ..Default::default()
        })
        .await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(f.metadata["expected_etag"], created.etag);
    assert_eq!(f.metadata["current_etag"], updated.etag);
    assert_eq!(f.metadata["updated_by"], "bob");
    assert!(!f.metadata["update_time"].is_empty());
    // Delete and custom methods honour etags too.
    let delete = DeleteVirtualMachineRequest {
        name: created.name.clone(),
        etag: created.etag.clone(),
        ..Default::default()
    };
    expect_failure(
        vms.delete_virtual_machine(delete).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    let start = StartVirtualMachineRequest {
        name: created.name.clone(),
        etag: created.etag.clone(),
        ..Default::default()
    };
    expect_failure(
        vms.start_virtual_machine(start).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    let start = StartVirtualMachineRequest {
        name: created.name,
        etag: updated.etag,
        ..Default::default()
    };
    assert_eq!(
        vms.start_virtual_machine(start).await.unwrap().into_inner().state,
        2
    );
    server.stop().await;
}

/// What a step of a lifecycle walk must answer.
enum Then {
    /// Success, with these fields of the resource in the answer.
    Ok(&'static [(&'static str, &'static str)]),
    /// This code and reason, with this metadata; `check` asserts more.
    Fails {
        code: Code,
        reason: &'static str,
        metadata: &'static [(&'static str, &'static str)],
        check: fn(&Failure),
    },
}

/// One call of a lifecycle walk: `method` of the kind's service with the
/// request `request(name)` (proto JSON).
struct Step {
    method: &'static str,
    request: fn(&str) -> serde_json::Value,
    then: Then,
}

fn named(name: &str) -> serde_json::Value {
    serde_json::json!({ "name": name })
}

const fn fails(code: Code, reason: &'static str, metadata: &'static [(&'static str, &'static str)]) -> Then {
    Then::Fails {
        code,
        reason,
        metadata,
        check: |_| {},
    }
}

/// Calls each step of `steps` on the resource `name` of `service`,
/// asserting what each must answer.
async fn walk(server: &TestServer, service: &str, name: &str, steps: &[Step]) {
    let pool = arbiter_api::json::pool().unwrap();
    let service = pool
        .get_service_by_name(&format!("arbiter.v1.{service}"))
        .unwrap();
    for (i, step) in steps.iter().enumerate() {
        let method = service.methods().find(|m| m.name() == step.method).unwrap();
        let request =
            prost_reflect::DynamicMessage::deserialize(method.input(), (step.request)(name)).unwrap();
        let path = format!("/{}/{}", service.full_name(), method.name());
        let result = raw_unary(
            server.channel.clone(),
            &path,
            prost::Message::encode_to_vec(&request),
        )
        .await;
        let what = format!("step {i}, {}", step.method);
        match &step.then {
            Then::Ok(fields) => {
                let body = result.unwrap_or_else(|s| panic!("{what}: {s:?}")).into_inner();
                let answer = prost_reflect::DynamicMessage::decode(method.output(), body.as_slice()).unwrap();
                let answer = serde_json::to_value(&answer).unwrap();
                for (field, value) in *fields {
                    assert_eq!(answer[field], *value, "{what}: {answer}");
                }
            }
            Then::Fails {
                code,
                reason,
                metadata,
                check,
            } => {
                let f = failure(result);
                assert_eq!(
                    (f.code, f.reason.as_str()),
                    (*code, *reason),
                    "{what}: {}",
                    f.message
                );
                assert_eq!(f.domain, "arbiter");
                for (key, value) in *metadata {
                    assert_eq!(f.metadata[*key], *value, "{what}: {key}");
                }
                check(&f);
            }
        }
    }
}

const VM: &str = "tenants/acme/vms/web-1";

fn resize(name: &str) -> serde_json::Value {
    serde_json::json!({"vm": {"name": name, "machineType": "e2-large"}, "updateMask": "machineType"})
}

/// A VM's lifecycle: transitions, deletion and a field locked while
/// RUNNING, each refusal FAILED_PRECONDITION with what conflicted.
const VM_LIFECYCLE: &[Step] = &[
    Step {
        method: "StopVirtualMachine",
        request: named,
        then: fails(
            Code::FailedPrecondition,
            "ALREADY_IN_STATE",
            &[("current_state", "STOPPED")],
        ),
    },
    Step {
        method: "StartVirtualMachine",
        request: named,
        then: Then::Ok(&[("state", "RUNNING")]),
    },
    Step {
        method: "DeleteVirtualMachine",
        request: named,
        then: Then::Fails {
            code: Code::FailedPrecondition,
            reason: "INVALID_TRANSITION",
            metadata: &[("current_state", "RUNNING"), ("allowed_from", "STOPPED")],
            check: |f| {
                assert!(
                    f.message.contains("stop the VM before deleting it"),
                    "{}",
                    f.message
                );
                let pf = f
                    .status
                    .get_error_details()
                    .precondition_failure()
                    .cloned()
                    .expect("PreconditionFailure");
                assert_eq!(pf.violations[0].subject, VM);
                assert_eq!(pf.violations[0].r#type, "STATE");
            },
        },
    },
    // machine_type changes only while STOPPED.
    Step {
        method: "UpdateVirtualMachine",
        request: resize,
        then: fails(
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
            &[("field", "machine_type"), ("allowed_from", "STOPPED")],
        ),
    },
    // display_name may change while RUNNING.
    Step {
        method: "UpdateVirtualMachine",
        request: |name| serde_json::json!({"vm": {"name": name, "displayName": "Renamed"}}),
        then: Then::Ok(&[]),
    },
    Step {
        method: "StopVirtualMachine",
        request: named,
        then: Then::Ok(&[("state", "STOPPED")]),
    },
    Step {
        method: "UpdateVirtualMachine",
        request: resize,
        then: Then::Ok(&[("machineType", "e2-large"), ("displayName", "Renamed")]),
    },
    Step {
        method: "DeleteVirtualMachine",
        request: named,
        then: Then::Ok(&[]),
    },
    Step {
        method: "GetVirtualMachine",
        request: named,
        then: fails(Code::NotFound, "RESOURCE_NOT_FOUND", &[]),
    },
];

/// A user's lifecycle.
const USER_LIFECYCLE: &[Step] = &[
    Step {
        method: "SuspendUser",
        request: named,
        then: fails(
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
            &[("allowed_from", "ACTIVE")],
        ),
    },
    Step {
        method: "ActivateUser",
        request: named,
        then: Then::Ok(&[("state", "ACTIVE")]),
    },
    Step {
        method: "DeleteUser",
        request: named,
        then: fails(
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
            &[("allowed_from", "PENDING,SUSPENDED")],
        ),
    },
    Step {
        method: "SuspendUser",
        request: named,
        then: Then::Ok(&[("state", "SUSPENDED")]),
    },
    Step {
        method: "ActivateUser",
        request: named,
        then: Then::Ok(&[("state", "ACTIVE")]),
    },
];

/// A prompt's lifecycle, with fields locked outside DRAFT.
const PROMPT_LIFECYCLE: &[Step] = &[
    Step {
        method: "ArchivePrompt",
        request: named,
        then: fails(
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
            &[("current_state", "DRAFT")],
        ),
    },
    Step {
        method: "PublishPrompt",
        request: named,
        then: Then::Ok(&[("state", "PUBLISHED")]),
    },
    Step {
        method: "PublishPrompt",
        request: named,
        then: fails(Code::FailedPrecondition, "ALREADY_IN_STATE", &[]),
    },
    Step {
        method: "UpdatePrompt",
        request: |name| serde_json::json!({"prompt": {"name": name, "template": "Hi"}}),
        then: fails(
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
            &[("field", "template")],
        ),
    },
    Step {
        method: "DeletePrompt",
        request: named,
        then: fails(Code::FailedPrecondition, "INVALID_TRANSITION", &[]),
    },
    Step {
        method: "ArchivePrompt",
        request: named,
        then: Then::Ok(&[("state", "ARCHIVED")]),
    },
    Step {
        method: "PublishPrompt",
        request: named,
        then: fails(
            Code::FailedPrecondition,
            "INVALID_TRANSITION",
            &[("current_state", "ARCHIVED")],
        ),
    },
    Step {
        method: "DeletePrompt",
        request: named,
        then: Then::Ok(&[]),
    },
];

#[tokio::test]
async fn lifecycle_conflicts_are_failed_precondition() {
    let server = TestServer::start().await;
    let vm = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vm.state, virtual_machine::State::Stopped as i32);
    walk(&server, "VirtualMachines", &vm.name, VM_LIFECYCLE).await;
    server.stop().await;
}

#[tokio::test]
async fn user_and_prompt_lifecycles_follow_the_table() {
    let server = TestServer::start().await;
    let u = server
        .users("acme-editor")
        .create_user(create_user("ada", "ada@example.com"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.state, user::State::Pending as i32);
    walk(&server, "Users", &u.name, USER_LIFECYCLE).await;
    let create = CreatePromptRequest {
        parent: "tenants/acme".into(),
        prompt_id: "greet".into(),
        prompt: Some(Prompt {
            template: "Hello {{name}}".into(),
            model: "gpt-4o".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = server
        .prompts("acme-editor")
        .create_prompt(create)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.state, prompt::State::Draft as i32);
    walk(&server, "Prompts", &p.name, PROMPT_LIFECYCLE).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_fields_are_invalid_argument_with_field_violations() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let mut bad = create_vm("Web_1");
    bad.vm = Some(VirtualMachine {
        region: "US East".into(),
        image: "debian-12".into(),
        ..Default::default()
    });
    bad.request_id = "not-a-uuid".into();
    let f = expect_failure(
        vms.create_virtual_machine(bad).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let violations = f
        .status
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("BadRequest")
        .field_violations;
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["vm_id", "vm.region", "vm.machine_type", "request_id"]);
    assert!(violations.iter().all(|v| !v.description.is_empty()));

    let f = expect_failure(
        vms.get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/users/x".into(),
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("tenants/{tenant}/vms/{vm}"), "{}", f.message);
    let list = ListVirtualMachinesRequest {
        parent: "tenants/acme".into(),
        filter: "color = red".into(),
        ..Default::default()
    };
    let f = expect_failure(
        vms.list_virtual_machines(list).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert_eq!(
        f.status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "filter"
    );
    let mask = UpdateVirtualMachineRequest {
        vm: Some(VirtualMachine {
            name: "tenants/acme/vms/x".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["uid".into()],
        }),
        ..Default::default()
    };
    let f = expect_failure(
        vms.update_virtual_machine(mask).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("output only"), "{}", f.message);
    server.stop().await;
}

#[tokio::test]
async fn missing_resources_are_not_found_with_resource_info() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let f = expect_failure(
        vms.get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/vms/ghost".into(),
        })
        .await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    let info = f
        .status
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("ResourceInfo");
    assert_eq!(info.resource_name, "tenants/acme/vms/ghost");
    expect_failure(
        vms.start_virtual_machine(StartVirtualMachineRequest {
            name: "tenants/acme/vms/ghost".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_checked_for_tenant_role_and_presence() {
    let server = TestServer::start().await;
    let f = expect_failure(
        server
            .anonymous_vms()
            .create_virtual_machine(create_vm("web-1"))
            .await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    assert!(f.message.contains("Bearer"), "{}", f.message);
    expect_failure(
        server
            .vms("wrong-token")
            .create_virtual_machine(create_vm("web-1"))
            .await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let f = expect_failure(
        server
            .vms("globex-editor")
            .create_virtual_machine(create_vm("web-1"))
            .await,
        Code::PermissionDenied,
        "TENANT_FORBIDDEN",
    );
    assert_eq!(f.metadata["tenant"], "acme");
    assert_eq!(f.metadata["principal"], "gina");
    let f = expect_failure(
        server
            .vms("acme-viewer")
            .create_virtual_machine(create_vm("web-1"))
            .await,
        Code::PermissionDenied,
        "ROLE_FORBIDDEN",
    );
    assert_eq!(f.metadata["required_role"], "editor");
    // Viewers read; the wildcard admin reaches every tenant.
    server
        .vms("root")
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap();
    let got = server
        .vms("acme-viewer")
        .get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/vms/web-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.created_by, "root");
    expect_failure(
        server
            .vms("globex-editor")
            .get_virtual_machine(GetVirtualMachineRequest {
                name: "tenants/acme/vms/web-1".into(),
            })
            .await,
        Code::PermissionDenied,
        "TENANT_FORBIDDEN",
    );
    server.stop().await;
}

#[tokio::test]
async fn request_ids_replay_the_first_outcome_and_refuse_reuse() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let id = uuid::Uuid::new_v4().to_string();
    let mut req = create_vm("web-1");
    req.request_id = id.clone();
    let first = vms
        .create_virtual_machine(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = vms
        .create_virtual_machine(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "a retry returns the first result, not a conflict");
    let mut other = create_vm("web-2");
    other.request_id = id.clone();
    let f = expect_failure(
        vms.create_virtual_machine(other).await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );
    assert_eq!(f.metadata["request_id"], id);
    // Without the id, the same create is a conflict.
    req.request_id.clear();
    expect_failure(
        vms.create_virtual_machine(req).await,
        Code::AlreadyExists,
        "RESOURCE_EXISTS",
    );
    // Deletes replay too: the second answer is success, not NOT_FOUND.
    let delete = DeleteVirtualMachineRequest {
        name: first.name.clone(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    vms.delete_virtual_machine(delete.clone()).await.unwrap();
    vms.delete_virtual_machine(delete).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_request_id_in_flight_is_aborted_request_in_progress() {
    let server = TestServer::start().await;
    let mut seen_in_progress = false;
    // Concurrent duplicates of one request overlap within a commit's fsync;
    // a few bursts make the overlap certain without timing assumptions.
    for burst in 0..20 {
        let id = uuid::Uuid::new_v4().to_string();
        let mut req = create_vm(&format!("vm-{burst}"));
        req.request_id = id;
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let mut client = server.vms("acme-editor");
                let req = req.clone();
                tokio::spawn(async move { client.create_virtual_machine(req).await })
            })
            .collect();
        let mut created = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(vm) => created.push(vm.into_inner()),
                Err(status) => {
                    let reason = status.get_error_details().error_info().map(|i| i.reason.clone());
                    assert_eq!(
                        (status.code(), reason.as_deref()),
                        (Code::Aborted, Some("REQUEST_IN_PROGRESS"))
                    );
                    seen_in_progress = true;
                }
            }
        }
        assert!(!created.is_empty());
        assert!(
            created.iter().all(|vm| *vm == created[0]),
            "every success is the same create"
        );
        if seen_in_progress {
            break;
        }
    }
    assert!(seen_in_progress, "no duplicate ever overlapped the first request");
    server.stop().await;
}

#[tokio::test]
async fn undecodable_requests_are_malformed_request_and_harmless() {
    let server = TestServer::start().await;
    let path = "/arbiter.v1.VirtualMachines/CreateVirtualMachine";
    // Field 1 (parent) holding bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    let f = expect_failure(
        raw_unary(server.channel.clone(), path, not_utf8).await,
        Code::InvalidArgument,
        "MALFORMED_REQUEST",
    );
    assert!(f.message.contains("UTF-8"), "{}", f.message);
    // A length that runs past the end of the message.
    let truncated = vec![0x0a, 0x7f, b'x'];
    expect_failure(
        raw_unary(server.channel.clone(), path, truncated).await,
        Code::InvalidArgument,
        "MALFORMED_REQUEST",
    );
    // An unknown enum value is not an error for proto3 open enums; unknown fields are skipped.
    let unknown_field = vec![0xf8, 0x07, 0x01];
    expect_failure(
        raw_unary(server.channel.clone(), path, unknown_field).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("still-up"))
        .await
        .unwrap();
    server.stop().await;
}
