//! Readiness: whether the store answers. A loop pings the store every
//! second; when that changes, gRPC health (every service and the whole
//! server) and `/readyz` change with it, so that a load balancer stops
//! sending requests to a replica whose etcd is out of reach and sends them
//! again when it is back, with no restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arbiter_core::Engine;
use arbiter_store::{AnyStore, Store};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often the store is pinged.
const EVERY: Duration = Duration::from_secs(1);
/// A ping slower than this counts as a failure.
const PATIENCE: Duration = Duration::from_secs(2);

/// The gRPC services whose health follows the store's.
pub const SERVICES: [&str; 7] = [
    "",
    "arbiter.v1.VirtualMachines",
    "arbiter.v1.Users",
    "arbiter.v1.Prompts",
    "arbiter.v1.Policies",
    "arbiter.v1.Changes",
    "arbiter.v1.Transactions",
];

/// Whether this replica can serve.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    /// Whether the store answered the last ping.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Sets every service's health.
pub async fn report(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Pings the store until the task is aborted, and reports changes.
pub async fn follow(engine: Arc<Engine<AnyStore>>, reporter: HealthReporter, readiness: Arc<Readiness>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        let outcome = tokio::time::timeout(PATIENCE, engine.store().ping()).await;
        let ready = matches!(outcome, Ok(Ok(())));
        let was = readiness.ready.swap(ready, Ordering::AcqRel);
        if was != ready || first {
            match outcome {
                Ok(Ok(())) => tracing::info!(store = engine.store().engine(), "the store answers: serving"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the store fails: not serving"),
                Err(_) => tracing::warn!("the store did not answer within {PATIENCE:?}: not serving"),
            }
            report(&reporter, ready).await;
            metrics::gauge!("arbiter_ready").set(if ready { 1.0 } else { 0.0 });
            first = false;
        }
    }
}
