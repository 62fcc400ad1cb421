//! Statistics of refused requests (`GetConflictStats`): exact counts by
//! reason, hot resources and the latest refusals; tenant scope; bounds;
//! kept across a restart; added up across replicas on etcd. And policy
//! evaluations per policy (`GetPolicyStats`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use arbiter_api::v1::{
    ConflictStats, GetConflictStatsRequest, GetVirtualMachineRequest, StopVirtualMachineRequest,
    UpdateVirtualMachineRequest,
};
use arbiter_store::testing::Etcd;
use common::{TestServer, create_vm, reason, replicas_on_etcd};
use tonic::Code;

/// Makes refusals of three reasons in tenant acme, with `token`: 2
/// RESOURCE_EXISTS on `id`, 1 ETAG_MISMATCH and 1 ALREADY_IN_STATE on it.
async fn refuse(server: &TestServer, token: &str, id: &str) {
    let mut vms = server.vms(token);
    vms.create_virtual_machine(create_vm(id)).await.unwrap();
    for _ in 0..2 {
        let e = vms.create_virtual_machine(create_vm(id)).await.unwrap_err();
        assert_eq!(reason(&e), "RESOURCE_EXISTS");
    }
    let name = format!("tenants/acme/vms/{id}");
    let mut vm = vms
        .get_virtual_machine(GetVirtualMachineRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    vm.etag = "\"fffffff\"".into();
    vm.display_name = "stale".into();
    let e = vms
        .update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(vm),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "ETAG_MISMATCH");
    let e = vms
        .stop_virtual_machine(StopVirtualMachineRequest {
            name,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "ALREADY_IN_STATE");
}

fn request(parent: &str) -> GetConflictStatsRequest {
    GetConflictStatsRequest {
        parent: parent.into(),
        max_recent: 100,
        ..Default::default()
    }
}

async fn stats(server: &TestServer, token: &str, req: GetConflictStatsRequest) -> ConflictStats {
    server
        .stats(token)
        .get_conflict_stats(req)
        .await
        .unwrap()
        .into_inner()
}

/// The total of the series with `reason`.
fn by_reason(stats: &ConflictStats, reason: &str) -> i64 {
    stats
        .series
        .iter()
        .filter(|s| s.reason == reason)
        .map(|s| s.total)
        .sum()
}

#[tokio::test]
async fn refusals_are_counted_by_reason_resource_and_caller() {
    let server = TestServer::start().await;
    refuse(&server, "acme-editor", "web-1").await;
    let got = stats(&server, "acme-viewer", request("tenants/acme")).await;
    assert_eq!(by_reason(&got, "RESOURCE_EXISTS"), 2);
    assert_eq!(by_reason(&got, "ETAG_MISMATCH"), 1);
    assert_eq!(by_reason(&got, "ALREADY_IN_STATE"), 1);
    assert_eq!(got.total, 4);
    let exists = got.series.iter().find(|s| s.reason == "RESOURCE_EXISTS").unwrap();
    assert_eq!(
        (
            exists.tenant.as_str(),
            exists.collection.as_str(),
            exists.method.as_str(),
            exists.code.as_str()
        ),
        ("acme", "vms", "CreateVirtualMachine", "ALREADY_EXISTS")
    );
    // The last hour in minutes; every count in the series adds up.
    assert_eq!(got.bucket.as_ref().unwrap().seconds, 60);
    assert!(exists.counts.len() >= 60 && exists.counts.iter().sum::<i64>() == 2);
    // The hot resource is the VM, with its most frequent reason.
    let hot = &got.hot_resources[0];
    assert_eq!(
        (hot.name.as_str(), hot.count, hot.top_reason.as_str()),
        ("tenants/acme/vms/web-1", 4, "RESOURCE_EXISTS")
    );
    assert_eq!(got.recent.len(), 4);
    assert_eq!(got.recent[0].reason, "ALREADY_IN_STATE");
    assert_eq!(got.recent[0].principal, "alice");
    assert_eq!(got.recent[0].method, "StopVirtualMachine");
    // Filters: by code and by reason.
    let conflicts = stats(
        &server,
        "acme-viewer",
        GetConflictStatsRequest {
            codes: vec!["ABORTED".into()],
            ..request("tenants/acme")
        },
    )
    .await;
    assert_eq!((conflicts.total, conflicts.recent.len()), (1, 1));
    let exists = stats(
        &server,
        "acme-viewer",
        GetConflictStatsRequest {
            reason: "RESOURCE_EXISTS".into(),
            ..request("tenants/acme")
        },
    )
    .await;
    assert_eq!(exists.total, 2);
    server.stop().await;
}

#[tokio::test]
async fn stats_are_scoped_to_the_callers_tenant() {
    let server = TestServer::start().await;
    refuse(&server, "acme-editor", "web-1").await;
    // Refusals of globex's own requests are counted in globex.
    let e = server
        .vms("globex-editor")
        .get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/globex/vms/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A request into another tenant is refused but counted in neither.
    let e = server
        .vms("globex-editor")
        .get_virtual_machine(GetVirtualMachineRequest {
            name: "tenants/acme/vms/web-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let globex = stats(&server, "globex-editor", request("tenants/globex")).await;
    assert_eq!(globex.total, 1);
    assert_eq!(globex.recent[0].reason, "RESOURCE_NOT_FOUND");
    assert_eq!(
        stats(&server, "acme-viewer", request("tenants/acme")).await.total,
        4
    );
    // Another tenant's statistics are not for a viewer of acme.
    let e = server
        .stats("acme-viewer")
        .get_conflict_stats(request("tenants/globex"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Every tenant at once: only for a token of every tenant.
    let e = server
        .stats("acme-viewer")
        .get_conflict_stats(request("tenants/-"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let all = stats(&server, "root", request("tenants/-")).await;
    assert_eq!(all.total, 5);
    let mut tenants: Vec<_> = all.series.iter().map(|s| s.tenant.as_str()).collect();
    tenants.dedup();
    tenants.sort_unstable();
    tenants.dedup();
    assert_eq!(tenants, ["acme", "globex"]);
    server.stop().await;
}

#[tokio::test]
async fn stats_requests_are_bounded() {
    let server = TestServer::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let bucket = |seconds| Some(prost_types::Duration { seconds, nanos: 0 });
    let cases = [
        (
            GetConflictStatsRequest {
                start_time: at(now - 40 * 86_400),
                ..request("tenants/acme")
            },
            "start_time",
        ),
        (
            GetConflictStatsRequest {
                start_time: at(now),
                end_time: at(now - 60),
                ..request("tenants/acme")
            },
            "start_time",
        ),
        (
            GetConflictStatsRequest {
                bucket: bucket(7),
                ..request("tenants/acme")
            },
            "bucket",
        ),
        (
            GetConflictStatsRequest {
                start_time: at(now - 7 * 86_400),
                bucket: bucket(60),
                ..request("tenants/acme")
            },
            "bucket",
        ),
        (
            GetConflictStatsRequest {
                max_recent: 1000,
                ..request("tenants/acme")
            },
            "max_recent",
        ),
        (
            GetConflictStatsRequest {
                max_hot_resources: -1,
                ..request("tenants/acme")
            },
            "max_hot_resources",
        ),
        (request("tenants/Not_A_Tenant"), "parent"),
        (
            GetConflictStatsRequest {
                start_time: at(i64::MIN),
                ..request("tenants/acme")
            },
            "start_time",
        ),
        (
            GetConflictStatsRequest {
                end_time: at(i64::MAX),
                ..request("tenants/acme")
            },
            "end_time",
        ),
    ];
    for (req, field) in cases {
        let e = server
            .stats("root")
            .get_conflict_stats(req.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    // A week at most 1440 buckets wide by default: hours.
    let week = stats(
        &server,
        "root",
        GetConflictStatsRequest {
            start_time: at(now - 7 * 86_400),
            ..request("tenants/acme")
        },
    )
    .await;
    assert_eq!(week.bucket.unwrap().seconds, 3600);
    server.stop().await;
}

#[tokio::test]
async fn stats_survive_a_restart() {
    let mut server = TestServer::start().await;
    refuse(&server, "acme-editor", "web-1").await;
    server.restart().await;
    let after = stats(&server, "acme-viewer", request("tenants/acme")).await;
    assert_eq!(after.total, 4);
    assert_eq!(by_reason(&after, "ETAG_MISMATCH"), 1);
    assert_eq!(after.recent.len(), 4);
    // Counted after the restart adds to what was kept.
    refuse(&server, "acme-editor", "web-2").await;
    let both = stats(&server, "acme-viewer", request("tenants/acme")).await;
    assert_eq!(both.total, 8);
    // Days: the same refusals, added up over a day's record.
    let days = stats(
        &server,
        "acme-viewer",
        GetConflictStatsRequest {
            bucket: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            ..request("tenants/acme")
        },
    )
    .await;
    assert_eq!(days.total, 8);
    server.stop().await;
}

#[tokio::test]
async fn replicas_on_etcd_add_up() {
    let etcd = Etcd::start();
    let servers = replicas_on_etcd(&etcd, 2, |c| {
        c.stats_flush_interval = Duration::from_millis(200);
    })
    .await;
    refuse(&servers[0], "acme-editor", "web-1").await;
    refuse(&servers[1], "acme-editor-2", "web-2").await;
    // Each replica writes its counts within a flush interval; either one
    // answers with both.
    for server in &servers {
        let mut seen = 0;
        for _ in 0..200 {
            seen = stats(server, "acme-viewer", request("tenants/acme")).await.total;
            if seen == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, 8);
    }
    let got = stats(&servers[0], "acme-viewer", request("tenants/acme")).await;
    let principals: std::collections::BTreeSet<_> = got.recent.iter().map(|e| e.principal.as_str()).collect();
    assert_eq!(principals.into_iter().collect::<Vec<_>>(), ["alice", "bob"]);
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test]
async fn stats_are_served_over_http() {
    let server = TestServer::start().await;
    refuse(&server, "acme-editor", "web-1").await;
    let url = format!(
        "{}/v1/tenants/acme/conflictStats?codes=ALREADY_EXISTS&codes=ABORTED",
        server.http_base()
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth("acme-viewer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["total"], "3", "{body}");
    assert_eq!(body["hotResources"][0]["name"], "tenants/acme/vms/web-1");
    let forbidden = reqwest::Client::new()
        .get(format!("{}/v1/tenants/acme/conflictStats", server.http_base()))
        .bearer_auth("globex-editor")
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn policy_evaluations_are_counted_per_policy_and_survive_a_restart() {
    use arbiter_api::v1::{DeleteVirtualMachineRequest, GetPolicyStatsRequest, PolicyEvaluationStats};
    let mut server = TestServer::start().await;
    common::bind_vm_guard(&server, "acme", "guard").await;
    // Two creates allowed; deleting a VM labelled env=prod denied.
    let mut vms = server.vms("acme-editor");
    vms.create_virtual_machine(create_vm("web-1")).await.unwrap();
    let mut prod = create_vm("db-1");
    prod.vm
        .as_mut()
        .unwrap()
        .labels
        .insert("env".into(), "prod".into());
    vms.create_virtual_machine(prod).await.unwrap();
    let e = vms
        .delete_virtual_machine(DeleteVirtualMachineRequest {
            name: "tenants/acme/vms/db-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "POLICY_DENIED");
    let evaluations = || GetPolicyStatsRequest {
        parent: "tenants/acme".into(),
        ..Default::default()
    };
    async fn check(server: &TestServer, request: GetPolicyStatsRequest) {
        let stats: PolicyEvaluationStats = server
            .stats("acme-viewer")
            .get_policy_stats(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.policies.len(), 1, "{stats:?}");
        let guard = &stats.policies[0];
        assert_eq!(guard.policy, "tenants/acme/policies/guard");
        assert_eq!((guard.evaluations, guard.allowed, guard.denied), (3, 2, 1));
        assert_eq!((guard.warned, guard.faulted, guard.busy), (0, 0, 0));
        let p99 = guard.p99_latency.unwrap();
        assert!(p99.seconds < 3 && (p99.seconds > 0 || p99.nanos > 0), "{p99:?}");
    }
    check(&server, evaluations()).await;
    // The denial is also a refusal in the conflict statistics.
    assert_eq!(
        by_reason(
            &stats(&server, "acme-viewer", request("tenants/acme")).await,
            "POLICY_DENIED"
        ),
        1
    );
    server.restart().await;
    check(&server, evaluations()).await;
    let e = server
        .stats("globex-editor")
        .get_policy_stats(evaluations())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    server.stop().await;
}
