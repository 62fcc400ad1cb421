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
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(dir: &Path) -> Self {
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
                    && let Some(addr) = json["fields"]["grpc_addr"].as_str()
                {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let grpc_addr = addr_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server logs its address when it serves");
        Self {
            child,
            grpc_addr,
            logs,
        }
    }

    pub async fn client(&self) -> TestClient {
        TestClient {
            channel: connect(self.grpc_addr).await,
        }
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
}

pub fn check_data_dir(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .arg("check")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "arbiter check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
