//! Several real `arbiter serve --store etcd` processes on one real etcd
//! are one service: one winner per name and per email across replicas, no
//! lost update, policies that take effect on every replica within a
//! second; and faults: a replica killed with `kill -9`, an etcd member
//! killed, etcd stopped and started again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbiter_api::v1::{CreatePolicyRequest, DeletePolicyRequest, GetVirtualMachineRequest, Policy};
use arbiter_store::testing::{Etcd, unique_prefix};
use arbiter_test_guests as guests;
use common::process::{Process, TestClient, check_store, wait_health};
use common::*;
use tonic::Code;

/// Three replicas on `etcd`, under a fresh prefix, serving.
async fn replicas(etcd: &Etcd, dirs: &[tempfile::TempDir]) -> (Vec<Process>, Vec<TestClient>, String) {
    let prefix = unique_prefix();
    let endpoints = etcd.endpoints().join(",");
    let processes: Vec<Process> = dirs
        .iter()
        .map(|d| Process::start_on_etcd(d.path(), &endpoints, &prefix))
        .collect();
    let mut clients = Vec::new();
    for p in &processes {
        p.wait_serving().await;
        clients.push(p.client().await);
    }
    (processes, clients, prefix)
}

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
}

fn check_etcd(etcd: &Etcd, prefix: &str) {
    let endpoints = etcd.endpoints().join(",");
    check_store(&[
        "--store",
        "etcd",
        "--etcd-endpoints",
        &endpoints,
        "--etcd-prefix",
        prefix,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_names_emails_and_etags() {
    let etcd = Etcd::start();
    let dirs = dirs(3);
    let (_processes, clients, prefix) = replicas(&etcd, &dirs).await;
    let clients = Arc::new(clients);

    // 32 clients over three replicas race for the same 500 names.
    let wins: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let tasks: Vec<_> = (0..32)
        .map(|c| {
            let (clients, wins) = (Arc::clone(&clients), Arc::clone(&wins));
            tokio::spawn(async move {
                let mut vms = clients[c % 3].server().vms();
                for i in 0..500 {
                    let name = format!("race-{}", (i + c * 17) % 500);
                    match vms.create_virtual_machine(create_vm(&name)).await {
                        Ok(_) => *wins.lock().unwrap().entry(name).or_default() += 1,
                        Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let wins = wins.lock().unwrap().clone();
    assert_eq!(wins.len(), 500, "every name was created");
    assert!(wins.values().all(|n| *n == 1), "one winner per name");

    // The same email from every replica: one user gets it.
    let mut tasks = Vec::new();
    for c in 0..32 {
        let clients = Arc::clone(&clients);
        tasks.push(tokio::spawn(async move {
            let mut users = clients[c % 3].server().users();
            users
                .create_user(create_user(&format!("u-{c}"), "Shared@Example.com"))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(s) => {
                let f = failure::<()>(Err(s));
                assert_eq!(f.reason, "UNIQUE_FIELD_TAKEN");
            }
        }
    }
    assert_eq!(won, 1);

    // Read-modify-write with etags from all three replicas: no lost update.
    let vm = clients[0]
        .server()
        .vms()
        .create_virtual_machine(create_vm("counter"))
        .await
        .unwrap()
        .into_inner();
    let tasks: Vec<_> = (0..12)
        .map(|c| {
            let (clients, name) = (Arc::clone(&clients), vm.name.clone());
            tokio::spawn(async move {
                let mut vms = clients[c % 3].server().vms();
                let mut done = 0;
                while done < 10 {
                    let current = vms
                        .get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
                        .await
                        .unwrap()
                        .into_inner();
                    match vms.update_virtual_machine(increment_count(&current)).await {
                        Ok(_) => done += 1,
                        Err(s) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let last = clients[2]
        .server()
        .vms()
        .get_virtual_machine(GetVirtualMachineRequest {
            name: vm.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        last.labels["count"], "120",
        "every acknowledged increment is there"
    );

    // One request id sent to all three replicas at once: the first outcome
    // or REQUEST_IN_PROGRESS, never a second execution.
    for round in 0..20 {
        let request_id = uuid::Uuid::new_v4().to_string();
        let tasks: Vec<_> = (0..6)
            .map(|c| {
                let (clients, request_id) = (Arc::clone(&clients), request_id.clone());
                tokio::spawn(async move {
                    let mut req = create_vm(&format!("once-{round}"));
                    req.request_id = request_id;
                    clients[c % 3].server().vms().create_virtual_machine(req).await
                })
            })
            .collect();
        let mut uids = BTreeSet::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(vm) => {
                    uids.insert(vm.into_inner().uid);
                }
                Err(s) => assert_eq!(failure::<()>(Err(s)).reason, "REQUEST_IN_PROGRESS"),
            }
        }
        assert!(uids.len() <= 1, "one execution per request id: {uids:?}");
    }
    check_etcd(&etcd, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_changed_through_one_replica_judges_on_every_other_within_a_second() {
    let etcd = Etcd::start();
    let dirs = dirs(3);
    let (_processes, clients, _) = replicas(&etcd, &dirs).await;
    let big = |id: &str| {
        let mut req = create_vm(id);
        req.vm.as_mut().unwrap().machine_type = "m9-enormous".into();
        req
    };
    // Replica 3 has read (and cached) the tenant's policies: none.
    clients[2]
        .server()
        .vms()
        .create_virtual_machine(big("before"))
        .await
        .unwrap();
    clients[0]
        .server()
        .policies()
        .create_policy(CreatePolicyRequest {
            parent: "tenants/acme".into(),
            policy_id: "guard".into(),
            policy: Some(Policy {
                kinds: vec!["vm".into()],
                module: guests::read(guests::VM_GUARD),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let uploaded = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let sent = uploaded.elapsed();
        match clients[2]
            .server()
            .vms()
            .create_virtual_machine(big(&format!("after-{i}")))
            .await
        {
            Err(s) => {
                assert_eq!(failure::<()>(Err(s)).reason, "POLICY_REJECTED");
                assert!(
                    sent < Duration::from_secs(1),
                    "denied only by a request sent {sent:?} after the upload"
                );
                break;
            }
            Ok(_) => assert!(
                sent < Duration::from_secs(1),
                "still allowed {sent:?} after the upload"
            ),
        }
    }
    clients[1]
        .server()
        .policies()
        .delete_policy(DeletePolicyRequest {
            name: "tenants/acme/policies/guard".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deleted = Instant::now();
    loop {
        i += 1;
        let sent = deleted.elapsed();
        match clients[2]
            .server()
            .vms()
            .create_virtual_machine(big(&format!("after-{i}")))
            .await
        {
            Ok(_) => break,
            Err(s) => {
                assert_eq!(failure::<()>(Err(s)).reason, "POLICY_REJECTED");
                assert!(
                    sent < Duration::from_secs(1),
                    "still denied {sent:?} after the delete"
                );
            }
        }
    }
}

/// Creates VMs named `{tag}-{n}` through `client` until told to stop;
/// returns the names whose create was acknowledged.
fn writer(
    client: &TestClient,
    tag: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let mut vms = client.server().vms();
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let name = format!("{tag}-{n}");
            if vms.create_virtual_machine(create_vm(&name)).await.is_ok() {
                acked.push(name);
            }
        }
        acked
    })
}

async fn assert_all_there(client: &TestClient, names: &[String]) {
    let mut vms = client.server().vms();
    let mut missing = BTreeSet::new();
    for name in names {
        let full = format!("tenants/acme/vms/{name}");
        if vms
            .get_virtual_machine(GetVirtualMachineRequest { name: full })
            .await
            .is_err()
        {
            missing.insert(name.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_during_writes_loses_no_acknowledged_write() {
    let etcd = Etcd::start();
    let dirs = dirs(3);
    let (mut processes, clients, prefix) = replicas(&etcd, &dirs).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|w| writer(&clients[w % 3], format!("k{w}"), Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    processes.remove(1).kill9();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 50, "the load ran: {} writes", acked.len());
    assert_all_there(&clients[0], &acked).await;
    check_etcd(&etcd, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_etcd_member_killed_during_writes_loses_no_acknowledged_write() {
    let mut etcd = Etcd::cluster(3);
    let dirs = dirs(2);
    let (_processes, clients, prefix) = replicas(&etcd, &dirs).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| writer(&clients[w % 2], format!("m{w}"), Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    etcd.members[0].kill();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 50, "the load ran: {} writes", acked.len());
    assert_all_there(&clients[1], &acked).await;
    let after = clients[0]
        .server()
        .vms()
        .create_virtual_machine(create_vm("after-the-kill"))
        .await;
    assert!(after.is_ok(), "two of three members still serve: {after:?}");
    check_etcd(&etcd, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_down_is_store_unavailable_and_not_serving_until_it_is_back() {
    let mut etcd = Etcd::start();
    let dirs = dirs(1);
    let (processes, clients, _) = replicas(&etcd, &dirs).await;
    clients[0]
        .server()
        .vms()
        .create_virtual_machine(create_vm("before"))
        .await
        .unwrap();
    etcd.members[0].kill();
    let f = failure(
        clients[0]
            .server()
            .vms()
            .create_virtual_machine(create_vm("during"))
            .await,
    );
    assert_eq!(
        (f.code, f.reason.as_str()),
        (Code::Unavailable, "STORE_UNAVAILABLE"),
        "{}",
        f.message
    );
    wait_health(processes[0].grpc_addr, false).await;
    etcd.members[0].restart();
    wait_health(processes[0].grpc_addr, true).await;
    clients[0]
        .server()
        .vms()
        .create_virtual_machine(create_vm("after"))
        .await
        .unwrap();
    let got = clients[0]
        .server()
        .vms()
        .get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/vms/before".into(),
        })
        .await;
    assert!(got.is_ok());
}
