//! The Arbiter server: gRPC services over the generic engine, with auth,
//! configuration, logging and health.
//!
//! # Layout
//! - [`config`]: layered settings of `arbiter serve`.
//! - [`auth`]: the tokens file and the first-start admin token.
//! - [`middleware`]: per-request span and authentication.
//! - [`services`]: the `arbiter.v1` handlers, one macro for all kinds.
//! - [`status`]: the one mapping from domain errors to `google.rpc.Status`.
//! - [`server`]: wiring, [`start`] and graceful stop.
//! - [`ops`]: the HTTP address: the HTTP/JSON API, `/healthz`, `/readyz`,
//!   `/metrics`, the console at `/ui/` ([`console`]); [`metrics`]: the
//!   Prometheus recorder.
//! - [`readiness`]: whether the store answers, for gRPC health and `/readyz`.
//! - [`telemetry`]: `tracing` setup.

pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod readiness;
pub mod server;
pub mod services;
pub mod status;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use server::{Running, start};

/// Checks a store: every unique index entry agrees with the objects.
/// With RocksDB, the data dir of a stopped server; with etcd, the cluster
/// and prefix of a running service. Returns the disagreements.
pub async fn check(config: &Config) -> anyhow::Result<Vec<String>> {
    let store = server::open_store(config).await?;
    let engine = arbiter_core::Engine::new(std::sync::Arc::new(store), arbiter_core::EngineConfig::default());
    engine
        .check_consistency()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
