//! The Grafana dashboard and the Prometheus alert rules in `deploy/` query
//! only metrics the server really exports: a real server is driven through
//! every kind of work they watch (conflicts, policy evaluations, HTTP and
//! gRPC requests, rate limiting, watches, store syncs) and its `/metrics`
//! is compared with every `arbiter_*` name in their queries. (promtool
//! checks the rules' syntax and tests their logic: tests/e2e/monitoring.sh.)
//! And the console's files are served as built into the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use arbiter_api::v1::WatchChangesRequest;
use arbiter_server::limits::RateLimitRule;
use common::{TestServer, create_vm, metrics_text};

const DASHBOARD: &str = include_str!("../../../deploy/kubernetes/monitoring/grafana/arbiter-dashboard.json");
const ALERTS: &str = include_str!("../../../deploy/kubernetes/monitoring/prometheus/arbiter-alerts.yaml");

/// Every `arbiter_*` metric name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("arbiter_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The family of a series name: a histogram's `_bucket`, `_sum` and
/// `_count` series belong to it.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The queries of every panel, checking the panels' shape on the way.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(dashboard["uid"], "arbiter-overview");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the dashboard", panel["title"]);
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("arbiter_"), "{}: {expr}", panel["title"]);
            queries.push(expr.to_string());
        }
    }
    queries
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_exported_metrics() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = vec![RateLimitRule {
            tenant: "globex".into(),
            principal: None,
            requests_per_second: 1,
            burst: Some(1),
        }];
    })
    .await;
    // A policy, so that creates are evaluated.
    common::bind_vm_guard(&server, "acme", "guard").await;
    // A watch stays open while the metrics are read.
    let _watch = server
        .changes("acme-viewer")
        .watch_changes(WatchChangesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A create and a conflict.
    let mut vms = server.vms("acme-editor");
    vms.create_virtual_machine(create_vm("web-1")).await.unwrap();
    vms.create_virtual_machine(create_vm("web-1")).await.unwrap_err();
    // HTTP requests, until globex's rate limit refuses one.
    let http = reqwest::Client::new();
    let mut limited = false;
    for _ in 0..10 {
        let status = http
            .get(format!("{}/v1/tenants/globex/vms", server.http_base()))
            .bearer_auth("globex-editor")
            .send()
            .await
            .unwrap()
            .status();
        if status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "globex's rate limit never refused a request");
    let text = metrics_text(&server.http_base()).await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard = names_in(&dashboard_queries().join("\n"));
    let alerts = names_in(ALERTS);
    assert!(
        dashboard.len() >= 10 && alerts.len() >= 5,
        "{dashboard:?} {alerts:?}"
    );
    for (source, names) in [("dashboard", &dashboard), ("alert rules", &alerts)] {
        for name in names {
            assert!(
                exported.contains(family(name)),
                "the {source} query {name}, which /metrics does not export; it has {exported:?}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.http_base())).send();
    for (path, kind, needle) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui/app.js", "text/javascript", "conflictStats"),
        ("/ui/style.css", "text/css", "@media"),
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(response.text().await.unwrap().contains(needle), "{path}");
    }
    // No token is needed for the files (they hold none); every call they
    // make needs one.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui", server.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/ui/");
    assert_eq!(get("/ui/nothing.js").await.unwrap().status(), 404);
    server.stop().await;
}
