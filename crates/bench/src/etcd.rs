//! etcd through `etcd-client`, with the same semantics as Arbiter: a VM is
//! the protobuf encoding of the `VirtualMachine` a client would send,
//! creates fail when the key exists, updates when its `mod_revision` moved.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use arbiter_api::v1::VirtualMachine;
use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};
use prost::Message;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{OpResult, Outcome, Payload, bump};

/// One connection to etcd.
#[derive(Clone)]
pub struct Etcd {
    kv: KvClient,
    /// A separate channel for the health check: etcd serves
    /// `grpc.health.v1` on its client port.
    health: tonic::transport::Channel,
    payload: Arc<Payload>,
}

fn key(tenant: &str, id: &str) -> String {
    format!("/arbiter/tenants/{tenant}/vms/{id}")
}

fn error(e: etcd_client::Error) -> String {
    e.to_string()
}

impl Etcd {
    pub async fn connect(target: &str, payload: Arc<Payload>) -> anyhow::Result<Self> {
        let client = etcd_client::Client::connect([target], None)
            .await
            .with_context(|| format!("cannot connect to etcd at {target}"))?;
        let health = tonic::transport::Endpoint::from_shared(target.to_string())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        Ok(Self {
            kv: client.kv_client(),
            health,
            payload,
        })
    }

    /// Create: put only if the key was never created (`create_revision == 0`).
    pub async fn create(&self, tenant: &str, id: &str) -> OpResult {
        let key = key(tenant, id);
        let value = self
            .payload
            .vm(format!("tenants/{tenant}/vms/{id}"))
            .encode_to_vec();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = self.kv.clone().txn(txn).await.map_err(error)?;
        Ok(if response.succeeded() {
            Outcome::Ok { retries: 0 }
        } else {
            Outcome::Conflict { retries: 0 }
        })
    }

    /// The VM and its `mod_revision`, or an error when it is absent.
    async fn fetch(&self, tenant: &str, id: &str) -> Result<(VirtualMachine, i64), String> {
        let response = self.kv.clone().get(key(tenant, id), None).await.map_err(error)?;
        let kv = response
            .kvs()
            .first()
            .ok_or_else(|| format!("{tenant}/{id} does not exist"))?;
        let vm = VirtualMachine::decode(kv.value()).map_err(|e| e.to_string())?;
        Ok((vm, kv.mod_revision()))
    }

    pub async fn get(&self, tenant: &str, id: &str) -> OpResult {
        self.fetch(tenant, id).await.map(|_| Outcome::Ok { retries: 0 })
    }

    /// One read-modify-write of the counter; `Ok(false)` when the key was
    /// modified since it was read.
    pub async fn try_update(&self, tenant: &str, id: &str) -> Result<bool, String> {
        let (mut vm, revision) = self.fetch(tenant, id).await?;
        bump(&mut vm.labels);
        let key = key(tenant, id);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, vm.encode_to_vec(), None)]);
        let response = self.kv.clone().txn(txn).await.map_err(error)?;
        Ok(response.succeeded())
    }

    /// The first `page_size` VMs of a tenant, decoded.
    pub async fn list(&self, tenant: &str, page_size: i32) -> OpResult {
        let prefix = format!("/arbiter/tenants/{tenant}/vms/");
        let options = GetOptions::new().with_prefix().with_limit(i64::from(page_size));
        let response = self.kv.clone().get(prefix, Some(options)).await.map_err(error)?;
        for kv in response.kvs() {
            VirtualMachine::decode(kv.value()).map_err(|e| e.to_string())?;
        }
        Ok(Outcome::Ok { retries: 0 })
    }

    pub async fn noop(&self) -> OpResult {
        let check = HealthCheckRequest {
            service: String::new(),
        };
        HealthClient::new(self.health.clone())
            .check(check)
            .await
            .map(|_| Outcome::Ok { retries: 0 })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    pub async fn labels(&self, tenant: &str, id: &str) -> Result<BTreeMap<String, String>, String> {
        self.fetch(tenant, id).await.map(|(vm, _)| vm.labels)
    }
}
