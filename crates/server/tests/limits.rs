//! Quotas and rate limits (ARCHITECTURE.md section 9) against real
//! servers: the last quota slot goes to exactly one of many racing creates
//! on RocksDB and across two replicas on etcd; a quota configured over
//! existing resources counts them; 429 over HTTP, with `Retry-After` for
//! rate limits and without for quotas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use arbiter_api::v1::{DeleteVirtualMachineRequest, GetVirtualMachineRequest};
use arbiter_core::QuotaRule;
use arbiter_server::limits::RateLimitRule;
use arbiter_store::testing::Etcd;
use common::*;
use tonic::Code;
use tonic_types::StatusExt;

fn quota(tenant: &str, max: u64) -> QuotaRule {
    QuotaRule {
        tenant: tenant.into(),
        collection: "vms".into(),
        max,
    }
}

/// Fills `max - 1` slots, then races 64 creates (spread over `servers`)
/// for the last one: exactly one wins, the rest get QUOTA_EXCEEDED.
async fn race_for_the_last_slot(servers: &[&TestServer], max: u64) {
    let mut vms = servers[0].vms("acme-editor");
    for i in 0..max - 1 {
        vms.create_virtual_machine(create_vm(&format!("held-{i}")))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let mut vms = servers[i % servers.len()].vms("acme-editor");
            tokio::spawn(async move { vms.create_virtual_machine(create_vm(&format!("racer-{i}"))).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "QUOTA_EXCEEDED");
                let details = status.get_error_details();
                let info = details.error_info().unwrap();
                assert_eq!(info.metadata["collection"], "vms");
                assert_eq!(info.metadata["limit"], max.to_string());
                assert_eq!(info.metadata["usage"], max.to_string());
                let failure = details.quota_failure().unwrap();
                assert_eq!(failure.violations[0].subject, "tenants/acme/vms");
                assert!(details.retry_info().is_none(), "waiting does not help");
            }
        }
    }
    assert_eq!(won, 1, "exactly one create takes the last slot");

    // A check-only create is refused too; a delete frees a slot.
    let mut check = create_vm("checked");
    check.validate_only = true;
    let status = vms.create_virtual_machine(check).await.unwrap_err();
    assert_eq!(reason(&status), "QUOTA_EXCEEDED");
    vms.delete_virtual_machine(DeleteVirtualMachineRequest {
        name: "tenants/acme/vms/held-0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    vms.create_virtual_machine(create_vm("after-delete"))
        .await
        .unwrap();
    let status = vms
        .create_virtual_machine(create_vm("one-too-many"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "QUOTA_EXCEEDED");
    // Another tenant has a quota of its own.
    servers[0]
        .vms("globex-editor")
        .create_virtual_machine(arbiter_api::v1::CreateVirtualMachineRequest {
            parent: "tenants/globex".into(),
            ..create_vm("elsewhere")
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_quota_slot_goes_to_exactly_one_of_64_creates() {
    let server = TestServer::start_with(|c| c.quotas = vec![quota("*", 100), quota("acme", 12)]).await;
    race_for_the_last_slot(&[&server], 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_quota_slot_goes_to_exactly_one_across_replicas_on_etcd() {
    let etcd = Etcd::start();
    let servers = replicas_on_etcd(&etcd, 2, |c| c.quotas = vec![quota("*", 100), quota("acme", 12)]).await;
    race_for_the_last_slot(&[&servers[0], &servers[1]], 12).await;
}

#[tokio::test]
async fn a_quota_counts_what_the_tenant_already_holds() {
    let mut server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    for i in 0..5 {
        vms.create_virtual_machine(create_vm(&format!("old-{i}")))
            .await
            .unwrap();
    }
    server.restart_with(|c| c.quotas = vec![quota("acme", 6)]).await;
    let mut vms = server.vms("acme-editor");
    vms.create_virtual_machine(create_vm("sixth")).await.unwrap();
    let status = vms
        .create_virtual_machine(create_vm("seventh"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "QUOTA_EXCEEDED", "{status:?}");

    // Without the quota nothing is counted; configured again, it counts
    // afresh rather than from the count it left.
    server.restart_with(|c| c.quotas = Vec::new()).await;
    let mut vms = server.vms("acme-editor");
    for i in 0..3 {
        vms.create_virtual_machine(create_vm(&format!("free-{i}")))
            .await
            .unwrap();
    }
    vms.delete_virtual_machine(DeleteVirtualMachineRequest {
        name: "tenants/acme/vms/old-0".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    server.restart_with(|c| c.quotas = vec![quota("acme", 9)]).await;
    let mut vms = server.vms("acme-editor");
    vms.create_virtual_machine(create_vm("ninth")).await.unwrap();
    let status = vms.create_virtual_machine(create_vm("tenth")).await.unwrap_err();
    assert_eq!(reason(&status), "QUOTA_EXCEEDED", "{status:?}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.metadata["usage"], "9");
}

#[tokio::test]
async fn over_http_a_quota_is_429_without_retry_after() {
    let server = TestServer::start_with(|c| c.quotas = vec![quota("acme", 1)]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/acme/vms?vm_id=only", server.http_base());
    let body = serde_json::json!({"displayName": "x", "machineType": "e2-small", "region": "us-east1", "image": "debian-12"});
    let created = client
        .post(&url)
        .bearer_auth("acme-editor")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{:?}", created.text().await);
    let refused = client
        .post(format!("{}/v1/tenants/acme/vms?vm_id=second", server.http_base()))
        .bearer_auth("acme-editor")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_none());
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["reason"], "QUOTA_EXCEEDED");
    assert_eq!(problem["quota"]["collection"], "vms");
    assert_eq!(problem["quota"]["limit"], 1);
    assert_eq!(problem["quota"]["usage"], 1);
}

#[tokio::test]
async fn a_rate_limited_client_gets_429_and_passes_after_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = vec![RateLimitRule {
            tenant: "acme".into(),
            principal: None,
            requests_per_second: 1,
            burst: Some(3),
        }];
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/acme/vms", server.http_base());
    let get = || client.get(&url).bearer_auth("acme-editor").send();
    let mut passed = 0;
    let refused = loop {
        let response = get().await.unwrap();
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        passed += 1;
        assert!(passed <= 3, "the burst is 3");
    };
    assert!(passed >= 2, "the burst lets the first requests through");
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["reason"], "RATE_LIMITED");
    assert_eq!(problem["limit"], "1/s");

    // Over gRPC the same limit, with RetryInfo; another tenant is not held up.
    let status = server
        .vms("acme-editor-2")
        .get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/vms/x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "RATE_LIMITED");
    let delay = status
        .get_error_details()
        .retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(1));
    let elsewhere = client
        .get(format!("{}/v1/tenants/globex/vms", server.http_base()))
        .bearer_auth("globex-editor")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 200);

    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(get().await.unwrap().status(), 200, "passes after Retry-After");
}
