//! The reliability suite: the real binary killed with `kill -9` again and
//! again while writers create, update and delete; after every restart each
//! acknowledged write is there (and each acknowledged delete gone), nothing
//! in flight is half-applied, and the unique indexes agree with the objects.
//! Hostile inputs get clear errors and leave the server up.
//!
//! Bounded for CI (3 rounds); `ARBITER_RELIABILITY_ROUNDS=50` runs longer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arbiter_api::v1::*;
use common::process::*;
use common::*;
use tonic::Code;

/// What a writer was told, per VM name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Created (and maybe updated): it exists with at least this counter.
    Exists(u64),
    /// Deleted.
    Gone,
    /// A write was in flight when the server died: either outcome.
    Unsure,
}

#[derive(Debug, Clone, Default)]
struct Ledger {
    vms: BTreeMap<String, Known>,
    emails: BTreeMap<String, String>,
}

/// One writer: creates VMs and users, bumps a counter label with etags,
/// deletes every third VM. Stops at the first failed call (the server died).
async fn writer(channel: tonic::transport::Channel, w: usize, round: usize, ledger: Arc<Mutex<Ledger>>) {
    let client = ClientView(&channel);
    let (mut vms, mut users) = (client.vms(), client.users());
    for i in 0.. {
        let id = format!("r{round}-w{w}-{i}");
        let name = format!("tenants/acme/vms/{id}");
        ledger.lock().unwrap().vms.insert(name.clone(), Known::Unsure);
        let Ok(created) = vms.create_virtual_machine(create_vm(&id)).await else {
            return;
        };
        ledger.lock().unwrap().vms.insert(name.clone(), Known::Exists(0));
        let email = format!("{id}@example.com");
        let user = format!("tenants/acme/users/{id}");
        ledger.lock().unwrap().emails.insert(user.clone(), String::new());
        if users.create_user(create_user(&id, &email)).await.is_err() {
            return;
        }
        ledger.lock().unwrap().emails.insert(user, email);
        let mut vm = created.into_inner();
        for count in 1..=2u64 {
            vm.labels.insert("count".into(), count.to_string());
            ledger.lock().unwrap().vms.insert(name.clone(), Known::Unsure);
            let update = UpdateVirtualMachineRequest {
                vm: Some(vm.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.count".into()],
                }),
                ..Default::default()
            };
            let Ok(updated) = vms.update_virtual_machine(update).await else {
                return;
            };
            vm = updated.into_inner();
            ledger
                .lock()
                .unwrap()
                .vms
                .insert(name.clone(), Known::Exists(count));
        }
        if i % 3 == 0 {
            ledger.lock().unwrap().vms.insert(name.clone(), Known::Unsure);
            let delete = DeleteVirtualMachineRequest {
                name: name.clone(),
                etag: vm.etag.clone(),
                ..Default::default()
            };
            if vms.delete_virtual_machine(delete).await.is_err() {
                return;
            }
            ledger.lock().unwrap().vms.insert(name, Known::Gone);
        }
    }
}

/// Checks every acknowledged write against the restarted server.
async fn verify(client: &TestClient, ledger: &Ledger) {
    let (mut vms, mut users) = (client.server().vms(), client.server().users());
    for (name, known) in &ledger.vms {
        let got = vms
            .get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
            .await;
        match (known, got) {
            (Known::Exists(count), Ok(vm)) => {
                let vm = vm.into_inner();
                let stored: u64 = vm.labels.get("count").map_or(0, |c| c.parse().unwrap());
                assert!(
                    stored >= *count,
                    "{name}: acknowledged count {count}, found {stored}"
                );
                assert!(
                    !vm.uid.is_empty() && vm.machine_type == "e2-small",
                    "half-applied: {vm:?}"
                );
            }
            (Known::Gone, Err(status)) | (Known::Unsure, Err(status)) => {
                assert_eq!(status.code(), Code::NotFound, "{name}: {status:?}");
            }
            (Known::Unsure, Ok(vm)) => {
                let vm = vm.into_inner();
                assert!(
                    !vm.uid.is_empty() && vm.machine_type == "e2-small",
                    "half-applied: {vm:?}"
                );
            }
            (known, got) => panic!("{name}: acknowledged {known:?}, found {got:?}"),
        }
    }
    for (name, email) in ledger.emails.iter().filter(|(_, e)| !e.is_empty()) {
        let user = users
            .get_user(GetUserRequest { name: name.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&user.email, email);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_loses_no_acknowledged_write() {
    const WRITERS: usize = 6;
    let rounds: usize = std::env::var("ARBITER_RELIABILITY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..rounds {
        let server = Process::start(dir.path());
        let client = server.client().await;
        let snapshot = ledger.lock().unwrap().clone();
        verify(&client, &snapshot).await;
        let before = ledger.lock().unwrap().vms.len();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(client.channel.clone(), w, round, Arc::clone(&ledger))))
            .collect();
        // Kill mid-flight, once this round has written a fair amount.
        while ledger.lock().unwrap().vms.len() < before + 60 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        server.kill9();
        for writer in writers {
            writer.await.unwrap();
        }
        check_data_dir(dir.path());
    }
    let server = Process::start(dir.path());
    let client = server.client().await;
    let ledger = ledger.lock().unwrap().clone();
    verify(&client, &ledger).await;
    let acknowledged = ledger
        .vms
        .values()
        .filter(|k| matches!(k, Known::Exists(_) | Known::Gone))
        .count();
    assert!(
        acknowledged >= rounds * 50,
        "only {acknowledged} acknowledged writes were checked"
    );
    server.kill9();
}

#[tokio::test]
async fn hostile_inputs_get_clear_errors_and_leave_the_server_up() {
    let server = TestServer::start().await;
    let path = "/arbiter.v1.VirtualMachines/CreateVirtualMachine";

    // 5 MiB in one field: over the 4 MiB message limit.
    let mut huge = vec![0x0a];
    let len = 5usize << 20;
    let mut n = len;
    while n >= 0x80 {
        huge.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    huge.push(n as u8);
    huge.extend(std::iter::repeat_n(b'a', len));
    let status = raw_unary(server.channel.clone(), path, huge).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(status.message().contains("too large"), "{}", status.message());

    // Groups nested 1,000 deep in an unknown field: past the decoder's depth limit.
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend([0x9b, 0x06]); // field 99, start group
    }
    for _ in 0..1000 {
        deep.extend([0x9c, 0x06]); // field 99, end group
    }
    expect_failure(
        raw_unary(server.channel.clone(), path, deep).await,
        Code::InvalidArgument,
        "MALFORMED_REQUEST",
    );

    // Thousands of labels and a display name full of control characters.
    let mut req = create_vm("crowded");
    let vm = req.vm.as_mut().unwrap();
    vm.labels = (0..5000).map(|i| (format!("k{i}"), "v".to_string())).collect();
    vm.display_name = "\u{0}\u{7}bell".into();
    let f = expect_failure(
        server.vms("acme-editor").create_virtual_machine(req).await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    let fields: Vec<String> = tonic_types::StatusExt::get_error_details(&f.status)
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert!(
        fields.contains(&"vm.labels".to_string()) && fields.contains(&"vm.display_name".to_string()),
        "{fields:?}"
    );

    // An enum value the API does not define.
    let mut policy = Policy {
        kinds: vec!["vm".into()],
        mode: 42,
        module: arbiter_test_guests::read(arbiter_test_guests::PROMPT_REVIEW),
        ..Default::default()
    };
    policy.failure_policy = -1;
    let f = expect_failure(
        server
            .policies("root")
            .create_policy(CreatePolicyRequest {
                parent: "tenants/acme".into(),
                policy_id: "odd".into(),
                policy: Some(policy),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(
        f.message.contains("policy.mode") && f.message.contains("policy.failure_policy"),
        "{}",
        f.message
    );

    // Still serving.
    server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("still-up"))
        .await
        .unwrap();
    server.stop().await;
}

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` where mounting is not allowed (not root, no CAP_SYS_ADMIN).
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `path` with a file there; returns the file.
fn fill(path: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = path.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&chunk[..4096]).is_ok() {}
    let _ = file.sync_all();
    filler
}

async fn readyz(base: &str) -> u16 {
    reqwest::get(format!("{base}/readyz"))
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_server_unready_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = SmallDisk::mount(&dir.path().join("disk"), "64m") else {
        eprintln!("skipped: this test mounts a tmpfs, which needs root");
        return;
    };
    let data = dir.path().join("disk/data");
    let server = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    let base = server.http_base();
    let mut vms = server.vms("acme-editor");
    vms.create_virtual_machine(create_vm("before")).await.unwrap();
    assert_eq!(readyz(&base).await, 200);

    let filler = fill(&dir.path().join("disk"));
    let mut failed = None;
    for i in 0..500 {
        if let Err(status) = vms.create_virtual_machine(create_vm(&format!("full-{i}"))).await {
            failed = Some((i, status));
            break;
        }
    }
    let (failed_at, status) = failed.expect("a create fails once the disk is full");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while readyz(&base).await != 503 {
        assert!(tokio::time::Instant::now() < deadline, "/readyz still says ready");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    wait_health(server.running.as_ref().unwrap().grpc_addr, false).await;

    // RocksDB stays read-only after a failed write: free the space and
    // restart. The acknowledged write is there, the failed one is not.
    std::fs::remove_file(filler).unwrap();
    let mut server = server;
    server.restart_with(|c| c.data_dir = data).await;
    wait_health(server.running.as_ref().unwrap().grpc_addr, true).await;
    let mut vms = server.vms("acme-editor");
    vms.get_virtual_machine(GetVirtualMachineRequest {
        name: "tenants/acme/vms/before".into(),
    })
    .await
    .unwrap();
    let missing = vms
        .get_virtual_machine(GetVirtualMachineRequest {
            name: format!("tenants/acme/vms/full-{failed_at}"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "the failed create left nothing");
    vms.create_virtual_machine(create_vm("after")).await.unwrap();
    server.stop().await;
}
