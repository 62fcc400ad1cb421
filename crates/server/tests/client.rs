//! The client library (`arbiter-client`) against the server: every
//! reason the server answers with decodes into its typed error, with its
//! details; `update_with` resolves concurrent writes without losing one;
//! the watch resumes across a restart of the server without gaps or
//! repeats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use arbiter_client::merge::{Merge, merge};
use arbiter_client::{Class, Client, Error, Resource as _, v1};
use arbiter_core::kinds::VM;
use arbiter_core::{Current, Denial, DenialKind, Fault, FaultKind, FieldViolation};
use arbiter_server::status::to_status;
use common::*;

fn current() -> Current {
    Current {
        etag: "\"7\"".into(),
        state: "RUNNING".into(),
        updated_by: "bob".into(),
        update_time: "2026-12-01T10:00:00Z".into(),
    }
}

/// What a decoded error must be.
type Check = fn(&Error) -> bool;

fn decoded(error: arbiter_core::Error) -> Error {
    Error::from_status(&to_status(&error))
}

/// Every reason of ARCHITECTURE.md section 3, as the server maps it,
/// decodes into its variant with its details.
#[test]
fn every_reason_decodes_into_its_typed_error() {
    use arbiter_core::Error as E;
    let name = || "tenants/acme/vms/web-1".to_string();
    let cases: Vec<(E, &str, Check)> = vec![
        (
            E::Exists {
                kind: &VM,
                name: name(),
                current: current(),
            },
            "RESOURCE_EXISTS",
            |e| matches!(e, Error::AlreadyExists { resource, current, .. } if resource == "tenants/acme/vms/web-1" && current.etag == "\"7\"" && current.state == "RUNNING"),
        ),
        (
            E::UniqueTaken {
                kind: &VM,
                name: name(),
                field: "email",
                value: "a@b.c".into(),
                existing: "tenants/acme/users/ann".into(),
            },
            "UNIQUE_FIELD_TAKEN",
            |e| matches!(e, Error::UniqueFieldTaken { field, value, existing, .. } if field == "email" && value == "a@b.c" && existing == "tenants/acme/users/ann"),
        ),
        (
            E::EtagMismatch {
                kind: &VM,
                name: name(),
                expected: "\"5\"".into(),
                current: current(),
                changed_fields: Some(vec!["labels.env".into(), "state".into()]),
            },
            "ETAG_MISMATCH",
            |e| {
                matches!(e, Error::EtagMismatch { expected_etag, current_etag, updated_by, update_time, changed_fields: Some(f), .. }
                if expected_etag == "\"5\"" && current_etag == "\"7\"" && updated_by == "bob" && update_time == "2026-12-01T10:00:00Z" && f == &["labels.env", "state"])
            },
        ),
        (
            E::EtagMismatch {
                kind: &VM,
                name: name(),
                expected: "\"5\"".into(),
                current: current(),
                changed_fields: None,
            },
            "ETAG_MISMATCH",
            |e| {
                matches!(
                    e,
                    Error::EtagMismatch {
                        changed_fields: None,
                        ..
                    }
                )
            },
        ),
        (
            E::RequestInProgress {
                request_id: "r".into(),
            },
            "REQUEST_IN_PROGRESS",
            |e| matches!(e, Error::RequestInProgress { .. }) && e.retry_after().is_some(),
        ),
        (
            E::RequestIdReused {
                request_id: "r".into(),
            },
            "REQUEST_ID_REUSED",
            |e| matches!(e, Error::RequestIdReused { .. }),
        ),
        (
            E::InvalidTransition {
                kind: &VM,
                name: name(),
                operation: "delete".into(),
                current_state: "RUNNING".into(),
                allowed_from: vec!["STOPPED"],
                field: None,
                hint: "stop it first".into(),
            },
            "INVALID_TRANSITION",
            |e| matches!(e, Error::InvalidTransition { current_state, allowed_from, field: None, .. } if current_state == "RUNNING" && allowed_from == &["STOPPED"]),
        ),
        (
            E::AlreadyInState {
                kind: &VM,
                name: name(),
                state: "RUNNING".into(),
            },
            "ALREADY_IN_STATE",
            |e| matches!(e, Error::AlreadyInState { current_state, .. } if current_state == "RUNNING"),
        ),
        (
            E::PreconditionRequired {
                kind: &VM,
                name: name(),
                operation: "update",
            },
            "PRECONDITION_REQUIRED",
            |e| matches!(e, Error::PreconditionRequired { resource, .. } if resource == "tenants/acme/vms/web-1"),
        ),
        (
            E::TenantForbidden {
                principal: "alice".into(),
                tenant: "globex".into(),
            },
            "TENANT_FORBIDDEN",
            |e| {
                matches!(
                    e,
                    Error::Forbidden {
                        required_role: None,
                        ..
                    }
                )
            },
        ),
        (
            E::RoleForbidden {
                principal: "victor".into(),
                role: "viewer",
                required: "editor",
            },
            "ROLE_FORBIDDEN",
            |e| matches!(e, Error::Forbidden { required_role: Some(r), .. } if r == "editor"),
        ),
        (
            E::PolicyFault {
                policy: "tenants/acme/policies/p".into(),
                revision: 3,
                resource: name(),
                fault: Fault::new(FaultKind::Timeout, "slow"),
            },
            "POLICY_FAULT",
            |e| matches!(e, Error::PolicyFault { policy, fault, .. } if policy == "tenants/acme/policies/p" && fault == "timeout"),
        ),
        (
            E::InvalidField {
                violations: vec![FieldViolation::new("vm.region", "is required")],
            },
            "INVALID_FIELD",
            |e| matches!(e, Error::InvalidField { violations, .. } if violations[0].field == "vm.region"),
        ),
        (E::Malformed("bad".into()), "MALFORMED_REQUEST", |e| {
            matches!(e, Error::Malformed { .. })
        }),
        (E::Unauthenticated("no token".into()), "UNAUTHENTICATED", |e| {
            matches!(e, Error::Unauthenticated { .. })
        }),
        (
            E::NotFound {
                kind: &VM,
                name: name(),
            },
            "RESOURCE_NOT_FOUND",
            |e| matches!(e, Error::NotFound { resource, .. } if resource == "tenants/acme/vms/web-1"),
        ),
        (
            E::RevisionCompacted {
                requested: 3,
                oldest: 40,
            },
            "REVISION_COMPACTED",
            |e| {
                matches!(
                    e,
                    Error::RevisionCompacted {
                        requested_revision: 3,
                        oldest_revision: 40,
                        ..
                    }
                )
            },
        ),
        (E::WatchTooSlow { resume_revision: 99 }, "WATCH_TOO_SLOW", |e| {
            matches!(
                e,
                Error::WatchTooSlow {
                    resume_revision: 99,
                    ..
                }
            )
        }),
        (
            E::QuotaExceeded {
                tenant: "acme".into(),
                collection: "vms",
                limit: 10,
                usage: 10,
            },
            "QUOTA_EXCEEDED",
            |e| matches!(e, Error::QuotaExceeded { collection, limit: 10, usage: 10, .. } if collection == "vms"),
        ),
        (
            E::RateLimited {
                what: "the tenant's rate".into(),
                limit: "200/s".into(),
                retry_after: Duration::from_millis(1500),
            },
            "RATE_LIMITED",
            |e| matches!(e, Error::RateLimited { retry_after: Some(d), limit, .. } if *d == Duration::from_millis(1500) && limit == "200/s"),
        ),
        (E::StoreUnavailable("writing".into()), "STORE_UNAVAILABLE", |e| {
            matches!(
                e,
                Error::StoreUnavailable {
                    retry_after: Some(_),
                    ..
                }
            )
        }),
        (E::Internal("writing".into()), "INTERNAL", |e| {
            matches!(e, Error::Server { .. })
        }),
    ];
    let mut policy_cases = Vec::new();
    for (kind, reason) in [
        (DenialKind::Conflict, "POLICY_DENIED"),
        (DenialKind::Invalid, "POLICY_REJECTED"),
        (DenialKind::Forbidden, "POLICY_FORBIDDEN"),
    ] {
        policy_cases.push((
            E::PolicyDenied {
                policy: "tenants/acme/policies/guard".into(),
                revision: 4,
                resource: name(),
                denial: Denial {
                    kind,
                    reason: "NEEDS_TICKET".into(),
                    message: "add a ticket".into(),
                    violations: vec![FieldViolation::new("vm.labels.ticket", "is required")],
                },
            },
            reason,
        ));
    }
    for (error, reason, check) in cases {
        let decoded = decoded(error.clone());
        assert_eq!(decoded.reason(), reason);
        assert!(check(&decoded), "{reason}: {decoded:?}");
        assert_eq!(decoded.info().unwrap().message, error.to_string());
    }
    for (error, reason) in policy_cases {
        let decoded = decoded(error);
        assert_eq!(decoded.reason(), reason);
        let Error::PolicyDenied {
            policy,
            policy_revision,
            denial_reason,
            violations,
            ..
        } = &decoded
        else {
            panic!("{reason}: {decoded:?}");
        };
        assert_eq!(
            (policy.as_str(), policy_revision.as_str(), denial_reason.as_str()),
            ("tenants/acme/policies/guard", "4", "NEEDS_TICKET")
        );
        assert_eq!(violations[0].field, "vm.labels.ticket", "{reason}");
    }
    // A transaction's failure keeps its operation's type and adds the index.
    let e = decoded(
        E::NotFound {
            kind: &VM,
            name: name(),
        }
        .clone(),
    );
    assert_eq!(e.info().unwrap().operation_index, None);
    let status = to_status(&E::InOperation {
        index: 3,
        error: Box::new(E::NotFound {
            kind: &VM,
            name: name(),
        }),
    });
    let e = Error::from_status(&status);
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert_eq!(e.info().unwrap().operation_index, Some(3));
}

#[test]
fn classes_give_the_cli_its_exit_codes() {
    use arbiter_core::Error as E;
    let code = |e: E| decoded(e).class().exit_code();
    assert_eq!(code(E::Malformed("x".into())), 1);
    assert_eq!(
        code(E::NotFound {
            kind: &VM,
            name: "n".into()
        }),
        2
    );
    assert_eq!(
        code(E::AlreadyInState {
            kind: &VM,
            name: "n".into(),
            state: "RUNNING".into()
        }),
        3
    );
    assert_eq!(code(E::Unauthenticated("x".into())), 4);
    assert_eq!(
        code(E::QuotaExceeded {
            tenant: "t".into(),
            collection: "vms",
            limit: 1,
            usage: 1
        }),
        5
    );
    assert_eq!(code(E::Internal("x".into())), 6);
    assert_eq!(Error::Transport("down".into()).class(), Class::Server);
}

async fn client(server: &TestServer, token: &str) -> Client {
    let url = format!("http://{}", server.running.as_ref().unwrap().grpc_addr);
    Client::connect(&url, Some(token)).await.unwrap()
}

#[tokio::test]
async fn update_with_from_16_tasks_loses_no_increment() {
    let server = TestServer::start().await;
    let client = client(&server, "acme-editor").await;
    client
        .vms()
        .create_virtual_machine(labelled_in("acme", "counter", &[("count", "0")]))
        .await
        .unwrap();
    let calls_per_task = 4;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..calls_per_task {
                    client
                        .update_with(
                            "tenants/acme/vms/counter",
                            &["labels.count"],
                            |vm: &mut v1::VirtualMachine| {
                                let count: u64 = vm.labels["count"].parse().unwrap();
                                vm.labels.insert("count".into(), (count + 1).to_string());
                            },
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let vm: v1::VirtualMachine = client.get("tenants/acme/vms/counter").await.unwrap();
    assert_eq!(vm.labels["count"], (16 * calls_per_task).to_string());
    server.stop().await;
}

#[tokio::test]
async fn errors_from_the_server_carry_what_conflicted() {
    let server = TestServer::start().await;
    let alice = client(&server, "acme-editor").await;
    let bob = client(&server, "acme-editor-2").await;
    let created = alice
        .vms()
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap()
        .into_inner();
    let again = alice.vms().create_virtual_machine(create_vm("web-1")).await;
    let e = Error::from(again.unwrap_err());
    assert!(
        matches!(&e, Error::AlreadyExists { current, .. } if current.etag == created.etag),
        "{e:?}"
    );
    assert_eq!(e.class(), Class::Conflict);

    // Bob changes a label; Alice's stale write learns what he changed.
    bob.update_with(
        "tenants/acme/vms/web-1",
        &["labels.env"],
        |vm: &mut v1::VirtualMachine| {
            vm.labels.insert("env".into(), "prod".into());
        },
    )
    .await
    .unwrap();
    let mut stale = created.clone();
    stale.display_name = "Mine".into();
    let e = stale.update(&alice, &["display_name"]).await.unwrap_err();
    let Error::EtagMismatch {
        updated_by,
        changed_fields,
        ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(updated_by, "bob");
    assert_eq!(changed_fields.as_deref(), Some(&["labels.env".to_string()][..]));

    let e = Error::from(
        alice
            .vms()
            .start_virtual_machine(v1::StartVirtualMachineRequest {
                name: "tenants/acme/vms/nope".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let anonymous = Client::connect(
        &format!("http://{}", server.running.as_ref().unwrap().grpc_addr),
        None,
    )
    .await
    .unwrap();
    let e = anonymous
        .get::<v1::VirtualMachine>("tenants/acme/vms/web-1")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert_eq!(e.class().exit_code(), 4);
    server.stop().await;
}

#[tokio::test]
async fn the_watch_resumes_across_a_server_restart_without_gaps_or_repeats() {
    let mut server = TestServer::start().await;
    let addr = server.running.as_ref().unwrap().grpc_addr;
    let client = client(&server, "acme-editor").await;
    let mut watch = client.watch(v1::WatchChangesRequest {
        parent: "tenants/acme".into(),
        send_initial: true,
        ..Default::default()
    });
    // The initial listing of nothing ends with a bookmark.
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, v1::change::Type::Bookmark as i32);
    client.vms().create_virtual_machine(create_vm("a")).await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(a.name, "tenants/acme/vms/a");

    // The server goes away and comes back on the same address; changes
    // made while the watch was cut arrive once, in order.
    server.restart_with(|c| c.grpc_addr = addr).await;
    let mut writer = server.vms("acme-editor");
    for id in ["b", "c"] {
        writer.create_virtual_machine(create_vm(id)).await.unwrap();
    }
    let mut names = Vec::new();
    while names.len() < 2 {
        let change = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("the watch resumes")
            .unwrap()
            .unwrap();
        if change.r#type != v1::change::Type::Bookmark as i32 {
            names.push(change.name);
        }
    }
    assert_eq!(names, ["tenants/acme/vms/b", "tenants/acme/vms/c"]);
    drop(watch);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_fields_are_exact_and_merges_are_decided_after_compaction_too() {
    let server = TestServer::start().await;
    let alice = client(&server, "acme-editor").await;
    let bob = client(&server, "acme-editor-2").await;
    let base = alice
        .vms()
        .create_virtual_machine(labelled_in("acme", "web", &[("env", "dev")]))
        .await
        .unwrap()
        .into_inner();
    // Bob changes a scalar field and a label, then starts the VM.
    bob.update_with(
        &base.name,
        &["display_name", "labels.env"],
        |vm: &mut v1::VirtualMachine| {
            vm.display_name = "Bob's".into();
            vm.labels.insert("env".into(), "prod".into());
        },
    )
    .await
    .unwrap();
    bob.vms()
        .start_virtual_machine(v1::StartVirtualMachineRequest {
            name: base.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Alice's write from the base version learns exactly what changed.
    let mut mine = base.clone();
    mine.labels.insert("owner".into(), "alice".into());
    let e = mine.clone().update(&alice, &["labels.owner"]).await.unwrap_err();
    let Error::EtagMismatch {
        changed_fields: Some(changed),
        ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(changed, &["display_name", "state", "labels.env"]);
    let theirs: v1::VirtualMachine = alice.get(&base.name).await.unwrap();
    let Merge::Merged { resource, mask } = merge(&base, &mine, &theirs, Some(changed)).unwrap() else {
        panic!("disjoint changes merge");
    };
    let masks: Vec<&str> = mask.iter().map(String::as_str).collect();
    let merged = resource.update(&alice, &masks).await.unwrap();
    assert_eq!(merged.labels["owner"], "alice");
    assert_eq!(merged.labels["env"], "prod");
    assert_eq!(merged.display_name, "Bob's");
    assert_eq!(merged.state, v1::virtual_machine::State::Running as i32);

    // Once the base revision is compacted away, the server cannot say what
    // changed; comparing the versions decides the same way.
    compact_all(&server).await;
    let mut mine = base.clone();
    mine.labels.insert("env".into(), "staging".into());
    let e = mine.clone().update(&alice, &["labels.env"]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::EtagMismatch {
                changed_fields: None,
                ..
            }
        ),
        "{e:?}"
    );
    let theirs: v1::VirtualMachine = alice.get(&base.name).await.unwrap();
    assert_eq!(
        merge(&base, &mine, &theirs, None).unwrap(),
        Merge::Overlap(vec!["labels.env".into()])
    );
    let mut disjoint = base.clone();
    disjoint.image = "debian-13".into();
    assert!(matches!(
        merge(&base, &disjoint, &theirs, None).unwrap(),
        Merge::Merged { .. }
    ));
    server.stop().await;
}
