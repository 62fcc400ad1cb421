//! The real `arbiter` binary as a child process, for crash and restart
//! tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{Authed, Bearer, TOKENS, connect};

/// The real `arbiter serve` as a child process.
pub struct Process {
    pub child: Child,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// A replica on etcd: `endpoints` comma-separated, keys under `prefix`.
    pub fn start_on_etcd(dir: &Path, endpoints: &str, prefix: &str) -> Self {
        let args = [
            "--store",
            "etcd",
            "--etcd-endpoints",
            endpoints,
            "--etcd-prefix",
            prefix,
        ];
        Self::start_with(dir, &args)
    }

    /// `arbiter serve` with `extra` flags.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let tokens = dir.join("tokens.toml");
        std::fs::write(&tokens, TOKENS).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_arbiter"))
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--tokens")
            .arg(&tokens)
            .arg("--policy-cache-dir")
            .arg(std::env::temp_dir().join("arbiter-test-policy-cache"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(grpc) = json["fields"]["grpc_addr"].as_str()
                    && let Some(http) = json["fields"]["http_addr"].as_str()
                {
                    let _ = addr_tx.send((
                        grpc.parse::<SocketAddr>().unwrap(),
                        http.parse::<SocketAddr>().unwrap(),
                    ));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (grpc_addr, http_addr) = addr_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server logs its addresses when it serves");
        Self {
            child,
            grpc_addr,
            http_addr,
            logs,
        }
    }

    /// Waits until gRPC health says SERVING (the store answers).
    pub async fn wait_serving(&self) {
        wait_health(self.grpc_addr, true).await;
    }

    pub async fn client(&self) -> TestClient {
        TestClient {
            channel: connect(self.grpc_addr).await,
        }
    }

    /// Resident memory of the server, in bytes (Linux `/proc`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

/// A test that ends without killing its server, or panics, still stops it.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TestClient {
    pub channel: tonic::transport::Channel,
}

impl TestClient {
    pub fn server(&self) -> ClientView<'_> {
        ClientView(&self.channel)
    }
}

pub struct ClientView<'a>(pub &'a tonic::transport::Channel);

impl ClientView<'_> {
    pub fn vms(&self) -> arbiter_api::v1::virtual_machines_client::VirtualMachinesClient<Authed> {
        arbiter_api::v1::virtual_machines_client::VirtualMachinesClient::with_interceptor(
            self.0.clone(),
            Bearer(Some("Bearer acme-editor".parse().unwrap())),
        )
    }
    pub fn users(&self) -> arbiter_api::v1::users_client::UsersClient<Authed> {
        arbiter_api::v1::users_client::UsersClient::with_interceptor(
            self.0.clone(),
            Bearer(Some("Bearer acme-editor".parse().unwrap())),
        )
    }
    pub fn policies(&self) -> arbiter_api::v1::policies_client::PoliciesClient<Authed> {
        arbiter_api::v1::policies_client::PoliciesClient::with_interceptor(
            self.0.clone(),
            Bearer(Some("Bearer root".parse().unwrap())),
        )
        .max_encoding_message_size(128 << 20)
    }
}

/// Polls gRPC health until it is SERVING (`true`) or not (`false`), for
/// at most 30 s.
pub async fn wait_health(addr: SocketAddr, serving: bool) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let want = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    let mut client = HealthClient::new(connect(addr).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.as_ref().ok() == Some(&(want as i32)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never became {want:?}: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn check_data_dir(dir: &Path) {
    let data = dir.join("data");
    check_store(&["--data-dir", data.to_str().unwrap()]);
}

/// Runs `arbiter check` with `args` and asserts that it finds nothing wrong.
pub fn check_store(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "arbiter check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
