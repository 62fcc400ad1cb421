//! Crash safety of the real binary: acknowledged writes survive `kill -9`,
//! nothing is half-applied, unique indexes agree with the objects after
//! recovery, and a SIGTERM stops the server cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use arbiter_api::v1::*;
use common::process::*;
use common::*;
use tonic::Code;

/// What the writers were told succeeded.
#[derive(Default)]
struct Acked {
    vms: Vec<String>,
    users: Vec<(String, String)>,
    counters: Vec<(String, u64)>,
}

async fn writer(client: ClientView<'_>, w: usize, acked: Arc<Mutex<Acked>>, stop_after: usize) {
    let (mut vms, mut users) = (client.vms(), client.users());
    let counter = format!("tenants/acme/vms/counter-{w}");
    let mut count = 0u64;
    for i in 0..stop_after {
        let id = format!("w{w}-{i}");
        if vms.create_virtual_machine(create_vm(&id)).await.is_err() {
            return;
        }
        acked.lock().unwrap().vms.push(format!("tenants/acme/vms/{id}"));
        let email = format!("{id}@example.com");
        if users.create_user(create_user(&id, &email)).await.is_err() {
            return;
        }
        acked
            .lock()
            .unwrap()
            .users
            .push((format!("tenants/acme/users/{id}"), email));
        let Ok(current) = vms
            .get_virtual_machine(GetVirtualMachineRequest {
                name: counter.clone(),
            })
            .await
        else {
            return;
        };
        let mut next = current.into_inner();
        count += 1;
        next.labels.insert("count".into(), count.to_string());
        let update = UpdateVirtualMachineRequest {
            vm: Some(next),
            ..Default::default()
        };
        if vms.update_virtual_machine(update).await.is_err() {
            return;
        }
        acked.lock().unwrap().counters.push((counter.clone(), count));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    const WRITERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path());
    let client = server.client().await;
    for w in 0..WRITERS {
        client
            .server()
            .vms()
            .create_virtual_machine(create_vm(&format!("counter-{w}")))
            .await
            .unwrap();
    }
    let acked = Arc::new(Mutex::new(Acked::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let acked = Arc::clone(&acked);
            let channel = client.channel.clone();
            tokio::spawn(async move { writer(ClientView(&channel), w, acked, usize::MAX).await })
        })
        .collect();
    // Kill while the writers are mid-flight, once enough has been acknowledged.
    loop {
        if acked.lock().unwrap().counters.len() >= 200 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    check_data_dir(dir.path());

    let server = Process::start(dir.path());
    let client = server.client().await;
    let (mut vms, mut users) = (client.server().vms(), client.server().users());
    let acked = Arc::into_inner(acked).unwrap().into_inner().unwrap();
    for name in &acked.vms {
        vms.get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
            .await
            .unwrap();
    }
    for (name, email) in &acked.users {
        let user = users
            .get_user(GetUserRequest { name: name.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&user.email, email);
        // The recovered unique index still guards the email.
        let thief = create_user(&format!("x{}", &name[name.rfind('/').unwrap() + 2..]), email);
        let f = expect_failure(
            users.create_user(thief).await,
            Code::AlreadyExists,
            "UNIQUE_FIELD_TAKEN",
        );
        assert_eq!(&f.metadata["existing"], name);
    }
    for (name, count) in &acked.counters {
        let vm = vms
            .get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
            .await
            .unwrap()
            .into_inner();
        let stored: u64 = vm.labels["count"].parse().unwrap();
        assert!(
            stored >= *count,
            "{name}: acknowledged count {count} but found {stored}"
        );
    }
    // Whatever was in flight is either absent or whole.
    let all = vms
        .list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .vms;
    assert!(all.len() >= acked.vms.len() + WRITERS);
    for vm in &all {
        assert!(
            !vm.uid.is_empty() && !vm.machine_type.is_empty() && vm.revision > 0,
            "{vm:?}"
        );
    }
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path());
    let client = server.client().await;
    client
        .server()
        .vms()
        .create_virtual_machine(create_vm("counter-0"))
        .await
        .unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    writer(client.server(), 0, Arc::clone(&acked), 20).await;
    let logs = Arc::clone(&server.logs);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    // Request logs carry the span fields, as JSON.
    let logs = logs.lock().unwrap().clone();
    let finished: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["fields"]["message"] == "rpc finished")
        .collect();
    assert!(!finished.is_empty());
    let span = &finished[0]["span"];
    assert_eq!(span["principal"], "alice");
    assert_eq!(span["tenant"], "acme");
    assert_eq!(span["code"], "Ok");
    assert!(span["method"].as_str().unwrap().starts_with("/arbiter.v1."));
    assert!(span["latency_ms"].is_number());
    assert!(logs.iter().any(|l| l.contains("stopped")));
    check_data_dir(dir.path());

    let server = Process::start(dir.path());
    let client = server.client().await;
    let acked = Arc::into_inner(acked).unwrap().into_inner().unwrap();
    assert_eq!(acked.vms.len(), 20);
    for name in &acked.vms {
        client
            .server()
            .vms()
            .get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
            .await
            .unwrap();
    }
    let counter = client
        .server()
        .vms()
        .get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/vms/counter-0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counter.labels["count"], "20");
    assert!(server.terminate().success());
}
