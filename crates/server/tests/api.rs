//! The standard methods' behaviour beyond errors: field ownership, update
//! masks, validate_only, paging and filters, health and reflection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbiter_api::v1::*;
use common::*;
use tonic::Code;

#[tokio::test]
async fn create_sets_every_server_field_and_ignores_client_values() {
    let server = TestServer::start().await;
    let mut req = create_vm("web-1");
    let vm = req.vm.as_mut().unwrap();
    vm.uid = "forged".into();
    vm.state = virtual_machine::State::Running as i32;
    vm.created_by = "mallory".into();
    vm.revision = 99;
    let created = server
        .vms("acme-editor")
        .create_virtual_machine(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.name, "tenants/acme/vms/web-1");
    assert_ne!(created.uid, "forged");
    assert!(uuid::Uuid::try_parse(&created.uid).is_ok());
    assert_eq!(created.state, virtual_machine::State::Stopped as i32);
    assert_eq!(
        (created.created_by.as_str(), created.updated_by.as_str()),
        ("alice", "alice")
    );
    assert!(created.create_time.is_some() && created.create_time == created.update_time);
    assert!(created.revision > 0 && created.revision != 99);
    assert!(
        created.etag.starts_with('"') && created.etag.ends_with('"'),
        "{}",
        created.etag
    );
    let got = server
        .vms("acme-viewer")
        .get_virtual_machine(GetVirtualMachineRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
    server.stop().await;
}

#[tokio::test]
async fn update_masks_choose_the_fields() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    let mut req = create_vm("web-1");
    req.vm
        .as_mut()
        .unwrap()
        .labels
        .insert("team".into(), "blue".into());
    let created = vms.create_virtual_machine(req).await.unwrap().into_inner();
    // No mask: the fields set in the request change, the rest stay.
    let partial = VirtualMachine {
        name: created.name.clone(),
        image: "debian-13".into(),
        ..Default::default()
    };
    let updated = vms
        .update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(partial),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (updated.image.as_str(), updated.region.as_str()),
        ("debian-13", "us-east1")
    );
    assert_eq!(updated.labels["team"], "blue");
    assert_eq!(updated.create_time, created.create_time);
    assert!(updated.revision > created.revision);
    // "*" replaces every mutable field: an empty display_name clears it,
    // a missing required field is refused.
    let full = VirtualMachine {
        name: created.name.clone(),
        ..vm("eu-west1")
    };
    let replaced = vms
        .update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(VirtualMachine {
                display_name: String::new(),
                ..full.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["*".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.display_name, "");
    assert!(replaced.labels.is_empty());
    let f = expect_failure(
        vms.update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(VirtualMachine {
                image: String::new(),
                ..full
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["image".into()],
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("vm.image"), "{}", f.message);
    server.stop().await;
}

#[tokio::test]
async fn validate_only_checks_conflicts_without_writing() {
    let server = TestServer::start().await;
    let mut users = server.users("acme-editor");
    let mut dry = create_user("ada", "ada@example.com");
    dry.validate_only = true;
    let would_be = users.create_user(dry.clone()).await.unwrap().into_inner();
    assert_eq!(would_be.name, "tenants/acme/users/ada");
    expect_failure(
        users
            .get_user(GetUserRequest {
                name: would_be.name.clone(),
            })
            .await,
        Code::NotFound,
        "RESOURCE_NOT_FOUND",
    );
    users
        .create_user(create_user("bob", "ADA@example.com"))
        .await
        .unwrap();
    expect_failure(
        users.create_user(dry).await,
        Code::AlreadyExists,
        "UNIQUE_FIELD_TAKEN",
    );
    let mut vms = server.vms("acme-editor");
    let vm = vms
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap()
        .into_inner();
    vms.delete_virtual_machine(DeleteVirtualMachineRequest {
        name: vm.name.clone(),
        validate_only: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let still = vms
        .get_virtual_machine(GetVirtualMachineRequest { name: vm.name })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.etag, vm.etag);
    server.stop().await;
}

#[tokio::test]
async fn lists_page_in_name_order_and_filter() {
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    for i in 0..25 {
        let mut req = create_vm(&format!("vm-{i:02}"));
        let env = if i % 5 == 0 { "prod" } else { "dev" };
        req.vm.as_mut().unwrap().labels.insert("env".into(), env.into());
        vms.create_virtual_machine(req).await.unwrap();
    }
    for i in [0, 10] {
        vms.start_virtual_machine(StartVirtualMachineRequest {
            name: format!("tenants/acme/vms/vm-{i:02}"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = vms
            .list_virtual_machines(ListVirtualMachinesRequest {
                parent: "tenants/acme".into(),
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        names.extend(page.vms.into_iter().map(|v| v.name));
        // A resource created mid-listing after the cursor shows up; paging is by name, not offset.
        if pages == 1 {
            vms.create_virtual_machine(create_vm("vm-99")).await.unwrap();
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 26);
    let filtered = vms
        .list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            filter: r#"labels.env = "prod" AND state = RUNNING"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<&str> = filtered.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(got, ["tenants/acme/vms/vm-00", "tenants/acme/vms/vm-10"]);
    // Tokens are bound to their list.
    let first = vms
        .list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let f = expect_failure(
        vms.list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            page_token: first.next_page_token,
            filter: "state = RUNNING".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(f.message.contains("page_token"), "{}", f.message);
    // Another tenant's list is empty, not shared.
    let other = server
        .vms("globex-editor")
        .list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/globex".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.vms.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_token() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    for service in [
        "",
        "arbiter.v1.VirtualMachines",
        "arbiter.v1.Users",
        "arbiter.v1.Prompts",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "arbiter.v1.VirtualMachines",
        "arbiter.v1.Users",
        "arbiter.v1.Prompts",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn http_health_endpoints_answer() {
    let server = TestServer::start().await;
    let addr = server.running.as_ref().unwrap().http_addr;
    for path in ["/healthz", "/readyz"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
    server.stop().await;
}
