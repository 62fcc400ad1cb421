//! Contention: many clients racing for the same names, the same email, and
//! read-modify-write cycles on one resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use arbiter_api::v1::*;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_have_exactly_one_winner_per_name() {
    const CLIENTS: usize = 32;
    const NAMES: usize = 500;
    let server = TestServer::start().await;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = server.vms("acme-editor");
            tokio::spawn(async move {
                let mut wins = Vec::new();
                // Each client walks the names from a different start, so
                // every name is contended by clients at different times.
                for i in 0..NAMES {
                    let n = (i + c * NAMES / CLIENTS) % NAMES;
                    match client.create_virtual_machine(create_vm(&format!("vm-{n}"))).await {
                        Ok(_) => wins.push(n),
                        Err(status) => {
                            assert_eq!(
                                (status.code(), reason(&status).as_str()),
                                (Code::AlreadyExists, "RESOURCE_EXISTS")
                            )
                        }
                    }
                }
                wins
            })
        })
        .collect();
    let mut winners: HashMap<usize, usize> = HashMap::new();
    for task in tasks {
        for n in task.await.unwrap() {
            *winners.entry(n).or_default() += 1;
        }
    }
    assert_eq!(winners.len(), NAMES, "every name was created");
    assert!(winners.values().all(|w| *w == 1), "no name was created twice");
    // The store agrees: one object per name, listed once.
    let mut vms = server.vms("acme-editor");
    let (mut seen, mut token) = (0, String::new());
    loop {
        let page = vms
            .list_virtual_machines(ListVirtualMachinesRequest {
                parent: "tenants/acme".into(),
                page_size: 200,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen += page.vms.len();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, NAMES);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_users_claim_one_email_once() {
    const CLIENTS: usize = 32;
    let server = TestServer::start().await;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = server.users("acme-editor");
            // Same address, different capitalisation per client.
            let email = if c % 2 == 0 {
                "Shared@Example.com"
            } else {
                "shared@example.com"
            };
            tokio::spawn(async move { client.create_user(create_user(&format!("user-{c}"), email)).await })
        })
        .collect();
    let mut winner = None;
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(user) => {
                assert!(winner.is_none(), "two users got the same email");
                winner = Some(user.into_inner().name);
            }
            Err(status) => losers.push(status),
        }
    }
    let winner = winner.expect("one user gets the email");
    assert_eq!(losers.len(), CLIENTS - 1);
    for status in losers {
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::AlreadyExists, "UNIQUE_FIELD_TAKEN")
        );
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.metadata["existing"], winner);
    }
    let users = server
        .users("acme-editor")
        .list_users(ListUsersRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len(), 1, "losers left nothing behind");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_read_modify_write_loses_no_update() {
    const CLIENTS: usize = 16;
    const INCREMENTS: usize = 15;
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let mut create = create_vm("counter");
    create
        .vm
        .as_mut()
        .unwrap()
        .labels
        .insert("count".into(), "0".into());
    let vm = vms.create_virtual_machine(create).await.unwrap().into_inner();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = server.vms("acme-editor");
            let name = vm.name.clone();
            tokio::spawn(async move {
                let (mut done, mut aborted) = (0, 0);
                while done < INCREMENTS {
                    let current = client
                        .get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
                        .await
                        .unwrap()
                        .into_inner();
                    match client.update_virtual_machine(increment_count(&current)).await {
                        Ok(_) => done += 1,
                        Err(status) => {
                            assert_eq!(
                                (status.code(), reason(&status).as_str()),
                                (Code::Aborted, "ETAG_MISMATCH")
                            );
                            aborted += 1;
                        }
                    }
                }
                (done, aborted)
            })
        })
        .collect();
    let (mut successes, mut aborts) = (0, 0);
    for task in tasks {
        let (done, aborted) = task.await.unwrap();
        successes += done;
        aborts += aborted;
    }
    let last = vms
        .get_virtual_machine(GetVirtualMachineRequest { name: vm.name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        last.labels["count"],
        successes.to_string(),
        "every acknowledged increment counts"
    );
    assert_eq!(successes, CLIENTS * INCREMENTS);
    assert!(
        aborts > 0,
        "16 writers on one key must have collided at least once"
    );
    server.stop().await;
}
