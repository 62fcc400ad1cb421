//! Arbiter clients: native gRPC (on `arbiter-client`, so that the client
//! library runs under load) and the HTTP/JSON API.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use arbiter_api::v1::{
    CreateVirtualMachineRequest, GetVirtualMachineRequest, ListVirtualMachinesRequest,
    UpdateVirtualMachineRequest, VirtualMachine, operation::Operation,
};
use arbiter_client::{Class, Error};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{OpResult, Outcome, Payload, bump};

/// Maps a failure to the benchmark's outcome: taken names and stale etags
/// (ALREADY_EXISTS, ABORTED) are conflicts, anything else an error.
fn outcome<T>(result: Result<T, Error>) -> OpResult {
    match result {
        Ok(_) => Ok(Outcome::Ok { retries: 0 }),
        Err(e @ (Error::AlreadyExists { .. } | Error::EtagMismatch { .. }))
            if e.class() == Class::Conflict =>
        {
            Ok(Outcome::Conflict { retries: 0 })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// One HTTP/2 connection to Arbiter's gRPC port.
#[derive(Clone)]
pub struct Grpc {
    client: arbiter_client::Client,
    payload: Arc<Payload>,
}

impl Grpc {
    pub async fn connect(target: &str, token: &str, payload: Arc<Payload>) -> anyhow::Result<Self> {
        let client = arbiter_client::Client::connect(target, Some(token))
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        Ok(Self { client, payload })
    }

    fn create_request(&self, tenant: &str, id: &str) -> CreateVirtualMachineRequest {
        CreateVirtualMachineRequest {
            parent: format!("tenants/{tenant}"),
            vm_id: id.to_string(),
            vm: Some(self.payload.vm(String::new())),
            ..Default::default()
        }
    }

    pub async fn create(&self, tenant: &str, id: &str) -> OpResult {
        let request = self.create_request(tenant, id);
        outcome(
            self.client
                .vms()
                .create_virtual_machine(request)
                .await
                .map_err(Error::from),
        )
    }

    /// Creates every VM of `ids` in one transaction.
    pub async fn create_all(&self, tenant: &str, ids: &[String]) -> OpResult {
        let operations = ids
            .iter()
            .map(|id| Operation::CreateVirtualMachine(self.create_request(tenant, id)))
            .collect();
        outcome(self.client.commit(&format!("tenants/{tenant}"), operations).await)
    }

    async fn fetch(&self, tenant: &str, id: &str) -> Result<VirtualMachine, Error> {
        let name = format!("tenants/{tenant}/vms/{id}");
        self.client
            .vms()
            .get_virtual_machine(GetVirtualMachineRequest { name })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from)
    }

    pub async fn get(&self, tenant: &str, id: &str) -> OpResult {
        outcome(self.fetch(tenant, id).await)
    }

    /// One read-modify-write of the counter; `Ok(false)` on a stale etag.
    pub async fn try_update(&self, tenant: &str, id: &str) -> Result<bool, String> {
        let mut vm = self.fetch(tenant, id).await.map_err(|e| e.to_string())?;
        bump(&mut vm.labels);
        let request = UpdateVirtualMachineRequest {
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
        };
        let result = self
            .client
            .vms()
            .update_virtual_machine(request)
            .await
            .map_err(Error::from);
        match outcome(result)? {
            Outcome::Ok { .. } => Ok(true),
            Outcome::Conflict { .. } => Ok(false),
        }
    }

    pub async fn list(&self, tenant: &str, page_size: i32) -> OpResult {
        let request = ListVirtualMachinesRequest {
            parent: format!("tenants/{tenant}"),
            page_size,
            ..Default::default()
        };
        outcome(
            self.client
                .vms()
                .list_virtual_machines(request)
                .await
                .map_err(Error::from),
        )
    }

    pub async fn noop(&self) -> OpResult {
        let check = HealthCheckRequest {
            service: String::new(),
        };
        outcome(
            HealthClient::new(self.client.channel())
                .check(check)
                .await
                .map_err(Error::from),
        )
    }

    pub async fn labels(&self, tenant: &str, id: &str) -> Result<BTreeMap<String, String>, String> {
        self.fetch(tenant, id)
            .await
            .map(|vm| vm.labels)
            .map_err(|e| e.to_string())
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
