//! `arbiter-bench` against a real server started in process: each
//! scenario keeps its promise (the count of operations, one winner per
//! raced name, no lost update) over gRPC and over HTTP/JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use arbiter_server::{Config, Running};
use serde_json::Value;

async fn server(dir: &std::path::Path) -> (Running, String) {
    let config = Config {
        data_dir: dir.join("data"),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    let running = arbiter_server::start(config).await.unwrap();
    let token = running.admin_token.clone().expect("a first-start admin token");
    (running, token)
}

/// Runs the bench binary with `args` and returns its JSON report.
async fn bench(running: &Running, token: &str, args: &[&str]) -> Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_arbiter-bench"));
    command
        .args(["--target", &format!("http://{}", running.grpc_addr)])
        .args(["--http-target", &format!("http://{}", running.http_addr)])
        .args(["--concurrency", "16", "--json"])
        .args(args)
        .env("ARBITER_TOKEN", token);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "arbiter-bench {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["errors"], 0, "{args:?}: {report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_keep_their_promises_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let (running, token) = server(dir.path()).await;
    let run = |protocol: &'static str, scenario: &'static str, extra: &'static [&'static str]| {
        let mut args = vec!["--protocol", protocol, "--scenario", scenario];
        args.extend_from_slice(extra);
        let (running, token) = (&running, token.as_str());
        async move { bench(running, token, &args).await }
    };

    for protocol in ["grpc", "http"] {
        let report = run(protocol, "create-unique", &["--count", "200"]).await;
        assert_eq!(report["ok"], 200, "{report}");

        // 16 consecutive operations race for each name: 20 names, 20 winners.
        let report = run(
            protocol,
            "create-contended",
            &["--count", "320", "--racers", "16"],
        )
        .await;
        assert_eq!(report["ok"], 20, "{report}");
        assert_eq!(report["conflicts"], 300, "{report}");

        // 4 hot keys, 16 writers: many stale etags, every update counted.
        let report = run(protocol, "update-cas", &["--count", "300", "--keys", "4"]).await;
        assert_eq!(report["ok"], 300, "{report}");
        assert_eq!(report["lost_updates"], 0, "{report}");
        assert_eq!(
            report["conflicts"], report["retries"],
            "no operation gave up: {report}"
        );

        for scenario in ["get", "list", "mixed", "noop"] {
            let report = run(protocol, scenario, &["--count", "200", "--keys", "50"]).await;
            assert_eq!(report["operations"], 200, "{scenario}: {report}");
        }
    }

    // Transactions of 10 creates: every one commits, and all 500 VMs exist.
    let report = run(
        "grpc",
        "tx-create",
        &["--count", "50", "--tx-size", "10", "--tenant", "tx"],
    )
    .await;
    assert_eq!(report["ok"], 50, "{report}");
    assert_eq!(
        report["tenant"], "tx",
        "the report names the tenant written: {report}"
    );
    let client = arbiter_client::Client::connect(&format!("http://{}", running.grpc_addr), Some(&token))
        .await
        .unwrap();
    let listed = client
        .vms()
        .list_virtual_machines(arbiter_api::v1::ListVirtualMachinesRequest {
            parent: "tenants/tx".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.vms.len(), 500);

    // A second run reads the first one's keys back with --prepared.
    let keys: &[&str] = &["--count", "50", "--keys", "10", "--run-id", "again"];
    run("grpc", "get", keys).await;
    let report = run(
        "grpc",
        "get",
        &["--count", "50", "--keys", "10", "--run-id", "again", "--prepared"],
    )
    .await;
    assert_eq!(report["ok"], 50, "{report}");

    // Watchers on the written tenant receive every create.
    let report = run(
        "grpc",
        "create-unique",
        &["--count", "200", "--watchers", "4", "--tenant", "watched"],
    )
    .await;
    assert_eq!(report["watch_events"], 800, "{report}");
    assert_eq!(report["watch_failures"], 0, "{report}");
    assert!(report["watch_delay_p99_ms"].as_f64().unwrap() > 0.0, "{report}");

    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_refused_with_the_flag_named() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_arbiter-bench"))
        .args([
            "--scenario",
            "create-unique",
            "--payload-bytes",
            "100000",
            "--token",
            "t",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--payload-bytes"), "{stderr}");
}
