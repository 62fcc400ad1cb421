//! A real etcd for tests: Debian's `etcd` binary started on free loopback
//! ports in a temporary directory, polled until it answers, killed when
//! dropped. One member, or a cluster of several.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `ARBITER_ETCD_BIN`, else `etcd` on the PATH.
fn binary() -> String {
    std::env::var("ARBITER_ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    child: Option<Child>,
    /// Kills `child` and deletes its data when this process ends however
    /// it ends (even without dropping the member, as a `static` never is):
    /// a shell that waits for end-of-file on its stdin, whose other end
    /// only we hold.
    watchdog: Option<Child>,
    args: Vec<String>,
    /// The member's data dir, inside the cluster's temporary dir.
    data: std::path::PathBuf,
}

impl Member {
    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({}): {e}; install etcd-server", binary()));
        // After the kill it waits for etcd to be gone, then deletes the
        // member's data and, once the last member's is gone, the cluster's
        // dir (a cluster's TempDir would do it on drop, a static's never).
        let script = "read _ignored; kill -9 \"$1\" 2>/dev/null; \
            while kill -0 \"$1\" 2>/dev/null; do sleep 0.05; done; \
            rm -rf \"$2\"; rmdir \"$3\" 2>/dev/null";
        let parent = self
            .data
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let watchdog = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(child.id().to_string())
            .arg(self.data.display().to_string())
            .arg(parent)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the watchdog shell of etcd: {e}"));
        self.child = Some(child);
        self.watchdog = Some(watchdog);
    }

    /// Kills the member at once (SIGKILL).
    pub fn kill(&mut self) {
        // The watchdog first, so that it never signals a reused pid.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again on its data.
    pub fn restart(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running etcd cluster on loopback.
#[derive(Debug)]
pub struct Etcd {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// One member.
    pub fn start() -> Self {
        Self::cluster(1)
    }

    /// A cluster of `size` members, ready when every member answers.
    pub fn cluster(size: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
                watchdog: None,
                args: Vec::new(),
                data: dir.path().join(format!("m{i}")),
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let initial = initial.join(",");
        for m in &mut members {
            let data = m.data.clone();
            m.args = vec![
                "--name".into(),
                m.name.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen-client-urls".into(),
                m.client_url.clone(),
                "--advertise-client-urls".into(),
                m.client_url.clone(),
                "--listen-peer-urls".into(),
                m.peer_url.clone(),
                "--initial-advertise-peer-urls".into(),
                m.peer_url.clone(),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--max-txn-ops".into(),
                "1024".into(),
                "--log-level".into(),
                "error".into(),
            ];
            m.spawn();
        }
        let etcd = Self { members, _dir: dir };
        etcd.wait_ready(Duration::from_secs(30));
        etcd
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Polls until every running member answers a linearizable read.
    /// Works from inside an async test too: it polls on a thread of its own.
    pub fn wait_ready(&self, within: Duration) {
        let urls: Vec<(String, String)> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| (m.name.clone(), m.client_url.clone()))
            .collect();
        std::thread::spawn(move || wait_answering(&urls, within))
            .join()
            .unwrap();
    }
}

fn wait_answering(urls: &[(String, String)], within: Duration) {
    let deadline = Instant::now() + within;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, url) in urls {
        loop {
            let answered = runtime.block_on(async {
                let options = etcd_client::ConnectOptions::new()
                    .with_timeout(Duration::from_secs(1))
                    .with_connect_timeout(Duration::from_millis(500));
                match etcd_client::Client::connect([url], Some(options)).await {
                    Ok(mut client) => client.get("ready", None).await.is_ok(),
                    Err(_) => false,
                }
            });
            if answered {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {name} did not answer within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("/test-{}-{n}", std::process::id())
}
