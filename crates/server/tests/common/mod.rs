//! Test harness: a real server on loopback port 0 with a tokens file, and
//! real tonic clients that send bearer tokens.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;

use arbiter_api::v1::{
    changes_client::ChangesClient, policies_client::PoliciesClient, prompts_client::PromptsClient,
    stats_client::StatsClient, transactions_client::TransactionsClient, users_client::UsersClient,
    virtual_machines_client::VirtualMachinesClient,
};
use arbiter_server::{Config, Running};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// The tokens every test server knows.
pub const TOKENS: &str = r#"
[[tokens]]
token = "acme-editor"
principal = "alice"
tenant = "acme"
role = "editor"

[[tokens]]
token = "acme-editor-2"
principal = "bob"
tenant = "acme"
role = "editor"

[[tokens]]
token = "acme-viewer"
principal = "victor"
tenant = "acme"
role = "viewer"

[[tokens]]
token = "globex-editor"
principal = "gina"
tenant = "globex"
role = "editor"

[[tokens]]
token = "root"
principal = "root"
tenant = "*"
role = "admin"
"#;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// A server started in-process for one test.
pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub channel: Channel,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let tokens = dir.join("tokens.toml");
    std::fs::write(&tokens, TOKENS).unwrap();
    Config {
        data_dir: dir.join("data"),
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tokens: Some(tokens),
        // Compiled policy modules are shared by every test server: a
        // module compiles once per machine, not once per test.
        policy_cache_dir: Some(std::env::temp_dir().join("arbiter-test-policy-cache")),
        ..Config::default()
    }
}

/// Connects to `addr`, retrying until the server accepts (no sleeps
/// beyond the retry back-off).
pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..200 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("server at {addr} never accepted a connection");
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server whose config `adjust` changes first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let running = arbiter_server::start(config).await.unwrap();
        let channel = connect(running.grpc_addr).await;
        Self {
            running: Some(running),
            dir,
            channel,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn bearer(token: &str) -> Bearer {
        Bearer(Some(format!("Bearer {token}").parse().unwrap()))
    }

    pub fn vms(&self, token: &str) -> VirtualMachinesClient<Authed> {
        VirtualMachinesClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn users(&self, token: &str) -> UsersClient<Authed> {
        UsersClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn prompts(&self, token: &str) -> PromptsClient<Authed> {
        PromptsClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn changes(&self, token: &str) -> ChangesClient<Authed> {
        ChangesClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn stats(&self, token: &str) -> StatsClient<Authed> {
        StatsClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn transactions(&self, token: &str) -> TransactionsClient<Authed> {
        TransactionsClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn http_base(&self) -> String {
        format!("http://{}", self.running.as_ref().unwrap().http_addr)
    }

    pub fn policies(&self, token: &str) -> PoliciesClient<Authed> {
        PoliciesClient::with_interceptor(self.channel.clone(), Self::bearer(token))
            .max_encoding_message_size(128 << 20)
    }

    /// Stops the server and starts it again on the same data dir.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Stops the server and starts it again with the test config that
    /// `adjust` changes (the same data dir unless it moves it).
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
        let mut config = test_config(self.dir.path());
        adjust(&mut config);
        let running = arbiter_server::start(config).await.unwrap();
        self.channel = connect(running.grpc_addr).await;
        self.running = Some(running);
    }

    pub fn anonymous_vms(&self) -> VirtualMachinesClient<Authed> {
        VirtualMachinesClient::with_interceptor(self.channel.clone(), Bearer(None))
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }
}

/// The etag-guarded update that adds one to the label `count` of `current`
/// (read-modify-write: it fails with ABORTED when the VM moved since).
pub fn increment_count(
    current: &arbiter_api::v1::VirtualMachine,
) -> arbiter_api::v1::UpdateVirtualMachineRequest {
    let count: u64 = current.labels.get("count").map_or(0, |v| v.parse().unwrap());
    let mut next = current.clone();
    next.labels.insert("count".into(), (count + 1).to_string());
    arbiter_api::v1::UpdateVirtualMachineRequest {
        vm: Some(next),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels.count".into()],
        }),
        ..Default::default()
    }
}

/// `count` replicas sharing one fresh prefix of `etcd`, each with the
/// config `adjust` changes.
pub async fn replicas_on_etcd(
    etcd: &arbiter_store::testing::Etcd,
    count: usize,
    adjust: impl Fn(&mut Config),
) -> Vec<TestServer> {
    let prefix = arbiter_store::testing::unique_prefix();
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        let server = TestServer::start_with(|c| {
            c.store = arbiter_server::config::StoreKind::Etcd;
            c.etcd_endpoints = etcd.endpoints();
            c.etcd_prefix = prefix.clone();
            adjust(c);
        })
        .await;
        servers.push(server);
    }
    servers
}

/// Compacts the server's change log up to now, as if the retention had
/// passed; returns the oldest revision still retained.
pub async fn compact_all(server: &TestServer) -> u64 {
    use arbiter_store::Store;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let engine = &server.running.as_ref().unwrap().engine;
    engine.store().compact(now + 1, now).await.unwrap()
}

/// The `ErrorInfo` reason of a status, empty without one.
pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The code, `ErrorInfo` reason and metadata of a failed call.
pub struct Failure {
    pub code: Code,
    pub reason: String,
    pub domain: String,
    pub metadata: std::collections::HashMap<String, String>,
    pub message: String,
    pub status: Status,
}

pub fn failure<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> Failure {
    let status = result.expect_err("the call should have failed");
    let details = status.get_error_details();
    let info = details.error_info().expect("every error carries ErrorInfo");
    Failure {
        code: status.code(),
        reason: info.reason.clone(),
        domain: info.domain.clone(),
        metadata: info.metadata.clone(),
        message: status.message().to_string(),
        status: status.clone(),
    }
}

/// Asserts the code and reason of a failed call and returns it.
pub fn expect_failure<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
    reason: &str,
) -> Failure {
    let f = failure(result);
    assert_eq!(
        (f.code, f.reason.as_str()),
        (code, reason),
        "message: {}",
        f.message
    );
    assert_eq!(f.domain, "arbiter");
    f
}

pub fn vm(region: &str) -> arbiter_api::v1::VirtualMachine {
    arbiter_api::v1::VirtualMachine {
        display_name: "Web".into(),
        region: region.into(),
        machine_type: "e2-small".into(),
        image: "debian-12".into(),
        ..Default::default()
    }
}

pub fn create_vm(id: &str) -> arbiter_api::v1::CreateVirtualMachineRequest {
    arbiter_api::v1::CreateVirtualMachineRequest {
        parent: "tenants/acme".into(),
        vm_id: id.into(),
        vm: Some(vm("us-east1")),
        ..Default::default()
    }
}

/// A create of VM `id` in `tenant` with `labels`.
pub fn labelled_in(
    tenant: &str,
    id: &str,
    labels: &[(&str, &str)],
) -> arbiter_api::v1::CreateVirtualMachineRequest {
    let mut req = create_vm(id);
    req.parent = format!("tenants/{tenant}");
    if let Some(vm) = req.vm.as_mut() {
        vm.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    req
}

/// A create of prompt `id` in tenant `acme` with `labels`.
pub fn labelled_prompt(id: &str, labels: &[(&str, &str)]) -> arbiter_api::v1::CreatePromptRequest {
    arbiter_api::v1::CreatePromptRequest {
        parent: "tenants/acme".into(),
        prompt_id: id.into(),
        prompt: Some(arbiter_api::v1::Prompt {
            template: "Summarize {{text}}".into(),
            model: "claude-3.5".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn create_user(id: &str, email: &str) -> arbiter_api::v1::CreateUserRequest {
    arbiter_api::v1::CreateUserRequest {
        parent: "tenants/acme".into(),
        user_id: id.into(),
        user: Some(arbiter_api::v1::User {
            email: email.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sends raw bytes as the request of a unary method and returns the
/// response bytes, for malformed-input tests.
pub async fn raw_unary(
    channel: Channel,
    path: &str,
    body: Vec<u8>,
) -> Result<tonic::Response<Vec<u8>>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", "Bearer root".parse().unwrap());
    let path = http::uri::PathAndQuery::try_from(path.to_string())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    grpc.unary(request, path, RawCodec).await
}

/// Passes bytes through unchanged.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Binds vm-guard to the VMs of `tenant` as policy `id` (as root).
pub async fn bind_vm_guard(server: &TestServer, tenant: &str, id: &str) {
    server
        .policies("root")
        .create_policy(arbiter_api::v1::CreatePolicyRequest {
            parent: format!("tenants/{tenant}"),
            policy_id: id.into(),
            policy: Some(arbiter_api::v1::Policy {
                kinds: vec!["vm".into()],
                module: arbiter_test_guests::read(arbiter_test_guests::VM_GUARD),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// How the policy `tenants/acme/policies/{id}` judged in the last hour,
/// as `GetPolicyStats` tells a viewer; `None` if it never ran.
pub async fn policy_stats(server: &TestServer, id: &str) -> Option<arbiter_api::v1::PolicyEvaluationCounts> {
    let stats = server
        .stats("acme-viewer")
        .get_policy_stats(arbiter_api::v1::GetPolicyStatsRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let name = format!("tenants/acme/policies/{id}");
    stats.policies.into_iter().find(|p| p.policy == name)
}

/// The value of one series (a metric's name with its labels) in a
/// `/metrics` text; 0 if it is not there.
pub fn metric_value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The text of a server's `/metrics`, from its HTTP base address.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
