//! Transactions (ARCHITECTURE.md section 8) against a real server: all or
//! nothing at one revision, each operation judged on the state the ones
//! before it leave, the failing operation's own error with its index, and
//! no lost or doubled update among concurrent transactions — on RocksDB
//! and across two replicas on etcd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use arbiter_api::v1::{operation::Operation as Op, operation_result::Result as Outcome, *};
use arbiter_core::QuotaRule;
use arbiter_store::testing::Etcd;
use arbiter_test_guests as guests;
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

fn tx(ops: Vec<Op>) -> CommitTransactionRequest {
    CommitTransactionRequest {
        parent: "tenants/acme".into(),
        operations: ops
            .into_iter()
            .map(|op| Operation { operation: Some(op) })
            .collect(),
        ..Default::default()
    }
}

/// Asserts that a transaction failed with `code` and `reason` at operation
/// `index`.
fn failed_at(
    result: Result<tonic::Response<CommitTransactionResponse>, tonic::Status>,
    code: Code,
    reason: &str,
    index: usize,
) -> Failure {
    let f = expect_failure(result, code, reason);
    assert_eq!(f.metadata["operation_index"], index.to_string(), "{}", f.message);
    f
}

fn vm_name(id: &str) -> String {
    format!("tenants/acme/vms/{id}")
}

fn start(id: &str) -> Op {
    Op::StartVirtualMachine(StartVirtualMachineRequest {
        name: vm_name(id),
        ..Default::default()
    })
}

async fn get_vm(server: &TestServer, id: &str) -> Result<VirtualMachine, tonic::Status> {
    server
        .vms("acme-editor")
        .get_virtual_machine(GetVirtualMachineRequest { name: vm_name(id) })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_vm_is_created_and_started_with_a_user_at_one_revision_seen_as_one_group() {
    let server = TestServer::start().await;
    let mut changes = server
        .changes("acme-editor")
        .watch_changes(WatchChangesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let done = server
        .transactions("acme-editor")
        .commit_transaction(tx(vec![
            Op::CreateVirtualMachine(create_vm("web-1")),
            start("web-1"),
            Op::CreateUser(create_user("ann", "ann@example.com")),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.results.len(), 3);
    let Some(Outcome::Vm(created)) = &done.results[0].result else {
        panic!("a VM: {:?}", done.results[0]);
    };
    let Some(Outcome::Vm(started)) = &done.results[1].result else {
        panic!("a VM: {:?}", done.results[1]);
    };
    let Some(Outcome::User(user)) = &done.results[2].result else {
        panic!("a user: {:?}", done.results[2]);
    };
    assert_eq!(created.state, virtual_machine::State::Stopped as i32);
    assert_eq!(started.state, virtual_machine::State::Running as i32);
    for revision in [created.revision, started.revision, user.revision] {
        assert_eq!(revision, done.revision);
    }
    let stored = get_vm(&server, "web-1").await.unwrap();
    assert_eq!(stored.state, virtual_machine::State::Running as i32);
    assert_eq!(stored.etag, started.etag);

    // One change per resource, both at the transaction's revision.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("a change within 10 s")
            .unwrap()
            .unwrap();
        if change.r#type != change::Type::Bookmark as i32 {
            seen.push(change);
        }
    }
    assert!(seen.iter().all(|c| c.revision == done.revision), "{seen:?}");
    let names: Vec<&str> = seen.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["tenants/acme/users/ann", "tenants/acme/vms/web-1"]);
    assert!(seen.iter().all(|c| c.r#type == change::Type::Added as i32));
    drop(changes);
    server.stop().await;
}

#[tokio::test]
async fn a_failing_third_operation_writes_nothing_and_names_index_2() {
    let server = TestServer::start().await;
    let mut txs = server.transactions("acme-editor");
    let f = failed_at(
        txs.commit_transaction(tx(vec![
            Op::CreateVirtualMachine(create_vm("web-1")),
            Op::CreateUser(create_user("ann", "ann@example.com")),
            Op::CreateVirtualMachine(create_vm("web-1")),
        ]))
        .await,
        Code::AlreadyExists,
        "RESOURCE_EXISTS",
        2,
    );
    assert_eq!(f.metadata["resource"], vm_name("web-1"));
    assert!(f.message.contains("operation 2"), "{}", f.message);
    assert_eq!(get_vm(&server, "web-1").await.unwrap_err().code(), Code::NotFound);
    let user = server
        .users("acme-editor")
        .get_user(GetUserRequest {
            name: "tenants/acme/users/ann".into(),
        })
        .await;
    assert_eq!(user.unwrap_err().code(), Code::NotFound);

    // An operation's own error, as if alone: an email taken earlier in the
    // same transaction, a transition the lifecycle does not allow, a bad
    // field (prefixed with its operation).
    let f = failed_at(
        txs.commit_transaction(tx(vec![
            Op::CreateUser(create_user("ann", "ann@example.com")),
            Op::CreateUser(create_user("bob", "ANN@example.com")),
        ]))
        .await,
        Code::AlreadyExists,
        "UNIQUE_FIELD_TAKEN",
        1,
    );
    assert_eq!(f.metadata["existing"], "tenants/acme/users/ann");
    failed_at(
        txs.commit_transaction(tx(vec![
            Op::CreateVirtualMachine(create_vm("web-2")),
            Op::StopVirtualMachine(StopVirtualMachineRequest {
                name: vm_name("web-2"),
                ..Default::default()
            }),
        ]))
        .await,
        Code::FailedPrecondition,
        "ALREADY_IN_STATE",
        1,
    );
    let mut bad = create_vm("web-3");
    bad.vm.as_mut().unwrap().image.clear();
    let f = failed_at(
        txs.commit_transaction(tx(vec![
            Op::CreateVirtualMachine(create_vm("web-4")),
            Op::CreateVirtualMachine(bad),
        ]))
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
        1,
    );
    let fields: Vec<String> = f
        .status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["operations[1].vm.image"]);
    server.stop().await;
}

#[tokio::test]
async fn deletes_and_re_creates_within_one_transaction_follow_the_lifecycle() {
    let server = TestServer::start().await;
    let mut txs = server.transactions("acme-editor");
    server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("old"))
        .await
        .unwrap();
    let done = txs
        .commit_transaction(tx(vec![
            Op::DeleteVirtualMachine(DeleteVirtualMachineRequest {
                name: vm_name("old"),
                ..Default::default()
            }),
            Op::CreateVirtualMachine(create_vm("old")),
            start("old"),
            Op::CreateVirtualMachine(create_vm("tmp")),
            Op::DeleteVirtualMachine(DeleteVirtualMachineRequest {
                name: vm_name("tmp"),
                ..Default::default()
            }),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(done.results[0].result, Some(Outcome::Deleted(()))));
    assert!(matches!(done.results[4].result, Some(Outcome::Deleted(()))));
    let old = get_vm(&server, "old").await.unwrap();
    assert_eq!(old.state, virtual_machine::State::Running as i32);
    assert_eq!(old.revision, done.revision);
    assert_eq!(get_vm(&server, "tmp").await.unwrap_err().code(), Code::NotFound);

    // A running VM cannot be deleted, in a transaction as alone.
    failed_at(
        txs.commit_transaction(tx(vec![Op::DeleteVirtualMachine(DeleteVirtualMachineRequest {
            name: vm_name("old"),
            ..Default::default()
        })]))
        .await,
        Code::FailedPrecondition,
        "INVALID_TRANSITION",
        0,
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_transactions_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    let mut txs = server.transactions("acme-editor");
    let many = (0..101)
        .map(|i| Op::CreateVirtualMachine(create_vm(&format!("vm-{i}"))))
        .collect();
    let f = expect_failure(
        txs.commit_transaction(tx(many)).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("operations"), "{}", f.message);
    expect_failure(
        txs.commit_transaction(tx(vec![])).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let mut inner = create_vm("a");
    inner.request_id = uuid::Uuid::new_v4().to_string();
    let f = expect_failure(
        txs.commit_transaction(tx(vec![Op::CreateVirtualMachine(inner)]))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("operations[0].request_id"), "{}", f.message);
    let f = expect_failure(
        txs.commit_transaction(CommitTransactionRequest {
            operations: vec![Operation::default()],
            ..tx(vec![])
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("operations[0].operation"), "{}", f.message);
    // Another tenant's resource, even for a caller who may write there.
    let mut elsewhere = create_vm("b");
    elsewhere.parent = "tenants/globex".into();
    let f = expect_failure(
        server
            .transactions("root")
            .commit_transaction(tx(vec![Op::CreateVirtualMachine(elsewhere)]))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("operations[0].parent"), "{}", f.message);
    // Viewers cannot write, in a transaction as alone.
    failed_at(
        server
            .transactions("acme-viewer")
            .commit_transaction(tx(vec![Op::CreateVirtualMachine(create_vm("c"))]))
            .await,
        Code::PermissionDenied,
        "ROLE_FORBIDDEN",
        0,
    );
    server.stop().await;
}

#[tokio::test]
async fn a_retried_transaction_returns_its_first_outcome() {
    let server = TestServer::start().await;
    let mut txs = server.transactions("acme-editor");
    let mut req = tx(vec![Op::CreateVirtualMachine(create_vm("web-1")), start("web-1")]);
    req.request_id = uuid::Uuid::new_v4().to_string();
    let first = txs.commit_transaction(req.clone()).await.unwrap().into_inner();
    let again = txs.commit_transaction(req.clone()).await.unwrap().into_inner();
    assert_eq!(first, again);
    req.operations.pop();
    expect_failure(
        txs.commit_transaction(req).await,
        Code::InvalidArgument,
        "REQUEST_ID_REUSED",
    );
    // validate_only checks without writing.
    let mut check = tx(vec![Op::CreateVirtualMachine(create_vm("web-2")), start("web-2")]);
    check.validate_only = true;
    let checked = txs.commit_transaction(check.clone()).await.unwrap().into_inner();
    assert_eq!(checked.results.len(), 2);
    assert_eq!(get_vm(&server, "web-2").await.unwrap_err().code(), Code::NotFound);
    // The first operation to fail is the one reported, though the
    // commit would find it too.
    check.operations[0] = Operation {
        operation: Some(Op::CreateVirtualMachine(create_vm("web-1"))),
    };
    check.operations[1] = Operation {
        operation: Some(Op::StartVirtualMachine(StartVirtualMachineRequest {
            name: vm_name("nowhere"),
            ..Default::default()
        })),
    };
    failed_at(
        txs.commit_transaction(check).await,
        Code::AlreadyExists,
        "RESOURCE_EXISTS",
        0,
    );
    server.stop().await;
}

#[tokio::test]
async fn quotas_count_each_operation() {
    let server = TestServer::start_with(|c| {
        c.quotas = vec![QuotaRule {
            tenant: "acme".into(),
            collection: "vms".into(),
            max: 3,
        }]
    })
    .await;
    let mut txs = server.transactions("acme-editor");
    server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("first"))
        .await
        .unwrap();
    let creates = |ids: &[&str]| {
        tx(ids
            .iter()
            .map(|id| Op::CreateVirtualMachine(create_vm(id)))
            .collect())
    };
    let f = failed_at(
        txs.commit_transaction(creates(&["a", "b", "c"])).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
        2,
    );
    assert_eq!(f.metadata["usage"], "3");
    assert_eq!(get_vm(&server, "a").await.unwrap_err().code(), Code::NotFound);
    // A delete earlier in the transaction frees a slot for a later create.
    let mut freeing = creates(&["a", "b"]);
    freeing.operations.insert(
        0,
        Operation {
            operation: Some(Op::DeleteVirtualMachine(DeleteVirtualMachineRequest {
                name: vm_name("first"),
                ..Default::default()
            })),
        },
    );
    freeing.operations.push(Operation {
        operation: Some(Op::CreateVirtualMachine(create_vm("c"))),
    });
    txs.commit_transaction(freeing).await.unwrap();
    expect_failure(
        server
            .vms("acme-editor")
            .create_virtual_machine(create_vm("d"))
            .await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );
    server.stop().await;
}

#[tokio::test]
async fn a_policy_denial_of_the_second_operation_names_the_policy() {
    let server = TestServer::start().await;
    server
        .policies("root")
        .create_policy(CreatePolicyRequest {
            parent: "tenants/acme".into(),
            policy_id: "vm-guard".into(),
            policy: Some(Policy {
                kinds: vec!["vm".into()],
                module: guests::read(guests::VM_GUARD),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut big = create_vm("big");
    big.vm.as_mut().unwrap().machine_type = "m9-enormous".into();
    let f = failed_at(
        server
            .transactions("acme-editor")
            .commit_transaction(tx(vec![
                Op::CreateVirtualMachine(create_vm("small")),
                Op::CreateVirtualMachine(big),
            ]))
            .await,
        Code::InvalidArgument,
        "POLICY_REJECTED",
        1,
    );
    assert_eq!(f.metadata["policy"], "tenants/acme/policies/vm-guard");
    assert_eq!(get_vm(&server, "small").await.unwrap_err().code(), Code::NotFound);

    // The policy judges a later operation on the state the earlier ones
    // leave: a prod VM created and started in one transaction cannot be
    // stopped in the same one without a change ticket.
    let f = failed_at(
        server
            .transactions("acme-editor")
            .commit_transaction(tx(vec![
                Op::CreateVirtualMachine(labelled_in("acme", "prod-1", &[("env", "prod")])),
                start("prod-1"),
                Op::StopVirtualMachine(StopVirtualMachineRequest {
                    name: vm_name("prod-1"),
                    ..Default::default()
                }),
            ]))
            .await,
        Code::FailedPrecondition,
        "POLICY_DENIED",
        2,
    );
    assert_eq!(f.metadata["denial_reason"], "PROD_CHANGE_NEEDS_TICKET");
    server.stop().await;
}

/// Moves the `token` label from whichever of two VMs holds it to the
/// other, in one transaction with both etags, retrying on `ABORTED`;
/// `moves` on the receiver counts the moves.
async fn move_token(server: &TestServer) {
    let mut txs = server.transactions("acme-editor");
    loop {
        let a = get_vm(server, "a").await.unwrap();
        let b = get_vm(server, "b").await.unwrap();
        let (mut from, mut to) = if a.labels.contains_key("token") {
            (a, b)
        } else {
            (b, a)
        };
        let moves: u64 = from.labels["moves"].parse::<u64>().unwrap() + 1;
        from.labels.remove("token");
        to.labels.insert("token".into(), "held".into());
        to.labels.insert("moves".into(), moves.to_string());
        from.labels.insert("moves".into(), moves.to_string());
        let update = |vm: VirtualMachine| {
            Op::UpdateVirtualMachine(UpdateVirtualMachineRequest {
                vm: Some(vm),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels".into()],
                }),
                ..Default::default()
            })
        };
        match txs.commit_transaction(tx(vec![update(from), update(to)])).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::Aborted => {
                assert_eq!(reason(&status), "ETAG_MISMATCH", "{status:?}");
            }
            Err(status) => panic!("moving the token: {status:?}"),
        }
    }
}

/// 32 concurrent transactions (spread over `servers`) each move the token
/// once: none is lost or doubled.
async fn token_moves(servers: &[&TestServer]) {
    let mut vms = servers[0].vms("acme-editor");
    vms.create_virtual_machine(labelled_in("acme", "a", &[("token", "held"), ("moves", "0")]))
        .await
        .unwrap();
    vms.create_virtual_machine(labelled_in("acme", "b", &[("moves", "0")]))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let server = servers[i % servers.len()];
            move_token(server)
        })
        .collect();
    futures::future::join_all(tasks).await;
    let a = get_vm(servers[0], "a").await.unwrap();
    let b = get_vm(servers[0], "b").await.unwrap();
    assert!(
        a.labels.contains_key("token"),
        "32 moves bring it back: {a:?} {b:?}"
    );
    assert!(!b.labels.contains_key("token"), "{b:?}");
    assert_eq!(a.labels["moves"], "32");
    assert_eq!(b.labels["moves"], "32");
    assert_eq!(a.revision, b.revision, "the last move wrote both");
}

#[tokio::test]
async fn concurrent_transactions_lose_and_double_no_move() {
    let server = TestServer::start().await;
    token_moves(&[&server]).await;
    server.stop().await;
}

#[tokio::test]
async fn on_etcd_across_replicas_transactions_are_atomic_and_exact() {
    let etcd = Etcd::start();
    let servers = replicas_on_etcd(&etcd, 2, |_| {}).await;
    let (first, second) = (&servers[0], &servers[1]);
    token_moves(&[first, second]).await;
    failed_at(
        second
            .transactions("acme-editor")
            .commit_transaction(tx(vec![
                Op::CreateVirtualMachine(create_vm("c")),
                Op::CreateVirtualMachine(create_vm("a")),
            ]))
            .await,
        Code::AlreadyExists,
        "RESOURCE_EXISTS",
        1,
    );
    assert_eq!(get_vm(first, "c").await.unwrap_err().code(), Code::NotFound);
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test]
async fn over_http_a_transaction_commits_or_answers_the_operation_s_problem() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/acme:commit", server.http_base());
    let vm = serde_json::json!({"displayName": "x", "machineType": "e2-small", "region": "us-east1", "image": "debian-12"});
    let body = serde_json::json!({"operations": [
        {"createVirtualMachine": {"parent": "tenants/acme", "vmId": "web-1", "vm": vm}},
        {"startVirtualMachine": {"name": "tenants/acme/vms/web-1"}},
    ]});
    let done = client
        .post(&url)
        .bearer_auth("acme-editor")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let done: serde_json::Value = done.json().await.unwrap();
    assert_eq!(done["results"][1]["vm"]["state"], "RUNNING", "{done}");
    assert_eq!(done["results"][0]["vm"]["revision"], done["revision"]);

    let conflict = client
        .post(&url)
        .bearer_auth("acme-editor")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);
    let problem: serde_json::Value = conflict.json().await.unwrap();
    assert_eq!(problem["reason"], "RESOURCE_EXISTS", "{problem}");
    assert_eq!(problem["operation_index"], 0);
    assert_eq!(problem["resource"], "tenants/acme/vms/web-1");
    server.stop().await;
}
