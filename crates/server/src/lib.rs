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
//!   `/metrics`; [`metrics`]: the Prometheus recorder.
//! - [`telemetry`]: `tracing` setup.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod server;
pub mod services;
pub mod status;
pub mod telemetry;

pub use config::Config;
pub use server::{Running, start};

/// Checks a stopped server's data dir: every unique index entry agrees
/// with the objects. Returns the disagreements.
pub async fn check(data_dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let store = arbiter_store::RocksStore::open(&data_dir.join("db"), arbiter_store::RocksOptions::default())
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let engine = arbiter_core::Engine::new(std::sync::Arc::new(store), arbiter_core::EngineConfig::default());
    engine
        .check_consistency()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
