//! Arbiter clients: native gRPC and the HTTP/JSON API.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use arbiter_api::v1::{
    CreateVirtualMachineRequest, GetVirtualMachineRequest, ListVirtualMachinesRequest,
    UpdateVirtualMachineRequest, VirtualMachine, virtual_machines_client::VirtualMachinesClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{OpResult, Outcome, Payload, bump};

/// Maps a gRPC status to the benchmark's outcome: ALREADY_EXISTS and
/// ABORTED are conflicts, anything else an error.
fn outcome(result: Result<(), tonic::Status>) -> OpResult {
    match result {
        Ok(()) => Ok(Outcome::Ok { retries: 0 }),
        Err(s) if matches!(s.code(), tonic::Code::AlreadyExists | tonic::Code::Aborted) => {
            Ok(Outcome::Conflict { retries: 0 })
        }
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// One HTTP/2 connection to Arbiter's gRPC port.
#[derive(Clone)]
pub struct Grpc {
    channel: Channel,
    token: MetadataValue<Ascii>,
    payload: Arc<Payload>,
}

impl Grpc {
    pub async fn connect(target: &str, token: &str, payload: Arc<Payload>) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(target.to_string())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        let token = format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?;
        Ok(Self {
            channel,
            token,
            payload,
        })
    }

    fn vms(&self) -> VirtualMachinesClient<Channel> {
        VirtualMachinesClient::new(self.channel.clone())
    }

    fn authed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.token.clone());
        request
    }

    pub async fn create(&self, tenant: &str, id: &str) -> OpResult {
        let request = self.authed(CreateVirtualMachineRequest {
            parent: format!("tenants/{tenant}"),
            vm_id: id.to_string(),
            vm: Some(self.payload.vm(String::new())),
            ..Default::default()
        });
        outcome(self.vms().create_virtual_machine(request).await.map(drop))
    }

    async fn fetch(&self, tenant: &str, id: &str) -> Result<VirtualMachine, tonic::Status> {
        let name = format!("tenants/{tenant}/vms/{id}");
        self.vms()
            .get_virtual_machine(self.authed(GetVirtualMachineRequest { name }))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> OpResult {
        outcome(self.fetch(tenant, id).await.map(drop))
    }

    /// One read-modify-write of the counter; `Ok(false)` on a stale etag.
    pub async fn try_update(&self, tenant: &str, id: &str) -> Result<bool, String> {
        let mut vm = self
            .fetch(tenant, id)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        bump(&mut vm.labels);
        let request = self.authed(UpdateVirtualMachineRequest {
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into()],
            }),
            vm: Some(VirtualMachine {
                name: vm.name,
                etag: vm.etag,
                labels: vm.labels,
                ..Default::default()
            }),
            ..Default::default()
        });
        match outcome(self.vms().update_virtual_machine(request).await.map(drop))? {
            Outcome::Ok { .. } => Ok(true),
            Outcome::Conflict { .. } => Ok(false),
        }
    }

    pub async fn list(&self, tenant: &str, page_size: i32) -> OpResult {
        let request = self.authed(ListVirtualMachinesRequest {
            parent: format!("tenants/{tenant}"),
            page_size,
            ..Default::default()
        });
        outcome(self.vms().list_virtual_machines(request).await.map(drop))
    }

    pub async fn noop(&self) -> OpResult {
        let check = HealthCheckRequest {
            service: String::new(),
        };
        outcome(
            HealthClient::new(self.channel.clone())
                .check(check)
                .await
                .map(drop),
        )
    }

    pub async fn labels(&self, tenant: &str, id: &str) -> Result<BTreeMap<String, String>, String> {
        self.fetch(tenant, id)
            .await
            .map(|vm| vm.labels)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}

/// Arbiter's HTTP/JSON API over a pool of HTTP/1.1 keep-alive connections.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
    authorization: String,
    /// The JSON body of every create, encoded once.
    create_body: bytes::Bytes,
}

/// Maps an HTTP status to the benchmark's outcome: 409 and 412 are
/// conflicts, anything but 2xx an error.
fn http_outcome(status: reqwest::StatusCode, body: &[u8]) -> OpResult {
    match status.as_u16() {
        200..=299 => Ok(Outcome::Ok { retries: 0 }),
        409 | 412 => Ok(Outcome::Conflict { retries: 0 }),
        code => Err(format!("HTTP {code}: {}", String::from_utf8_lossy(body))),
    }
}

impl Http {
    pub fn new(base: &str, token: &str, pool: usize, payload: Arc<Payload>) -> anyhow::Result<Self> {
        let vm = payload.vm(String::new());
        let create_body = serde_json::to_vec(&serde_json::json!({
            "region": vm.region,
            "machineType": vm.machine_type,
            "image": vm.image,
            "displayName": vm.display_name,
            "labels": vm.labels,
        }))?;
        Ok(Self {
            client: reqwest::Client::builder().pool_max_idle_per_host(pool).build()?,
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Bearer {token}"),
            create_body: create_body.into(),
        })
    }

    /// Sends `request`; returns the status, the ETag (if any) and the body.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Option<String>, bytes::Bytes), String> {
        let response = request
            .header("authorization", &self.authorization)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, etag, body))
    }

    fn vm_url(&self, tenant: &str, id: &str) -> String {
        format!("{}/v1/tenants/{tenant}/vms/{id}", self.base)
    }

    pub async fn create(&self, tenant: &str, id: &str) -> OpResult {
        let url = format!("{}/v1/tenants/{tenant}/vms?vm_id={id}", self.base);
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(self.create_body.clone());
        let (status, _, body) = self.send(request).await?;
        http_outcome(status, &body)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> OpResult {
        let (status, _, body) = self.send(self.client.get(self.vm_url(tenant, id))).await?;
        http_outcome(status, &body)
    }

    /// GET, then PATCH with `If-Match`; `Ok(false)` on 412.
    pub async fn try_update(&self, tenant: &str, id: &str) -> Result<bool, String> {
        let (status, etag, body) = self.send(self.client.get(self.vm_url(tenant, id))).await?;
        http_outcome(status, &body)?;
        let etag = etag.ok_or("the GET response has no ETag")?;
        let mut labels = labels_of(&body)?;
        bump(&mut labels);
        let request = self
            .client
            .patch(format!("{}?update_mask=labels", self.vm_url(tenant, id)))
            .header("if-match", etag)
            .json(&serde_json::json!({ "labels": labels }));
        let (status, _, body) = self.send(request).await?;
        match http_outcome(status, &body)? {
            Outcome::Ok { .. } => Ok(true),
            Outcome::Conflict { .. } => Ok(false),
        }
    }

    pub async fn list(&self, tenant: &str, page_size: i32) -> OpResult {
        let url = format!("{}/v1/tenants/{tenant}/vms?page_size={page_size}", self.base);
        let (status, _, body) = self.send(self.client.get(url)).await?;
        http_outcome(status, &body)
    }

    pub async fn noop(&self) -> OpResult {
        let (status, _, body) = self
            .send(self.client.get(format!("{}/healthz", self.base)))
            .await?;
        http_outcome(status, &body)
    }

    pub async fn labels(&self, tenant: &str, id: &str) -> Result<BTreeMap<String, String>, String> {
        let (status, _, body) = self.send(self.client.get(self.vm_url(tenant, id))).await?;
        http_outcome(status, &body)?;
        labels_of(&body)
    }
}

/// The labels of a VM in JSON (absent when it has none).
fn labels_of(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let vm: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match vm.get("labels") {
        None | Some(serde_json::Value::Null) => Ok(BTreeMap::new()),
        Some(labels) => serde_json::from_value(labels.clone()).map_err(|e| e.to_string()),
    }
}
