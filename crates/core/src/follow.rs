//! Keeps a replica's policy cache current with writes made through other
//! replicas. Every commit that changes a tenant's policies also writes the
//! marker `_policies/{tenant}` (no tenant id starts with `_`); the engine
//! watches that prefix and drops the tenant's cached policies when its
//! marker moves. While the watch is down the cache is off, so a replica
//! never judges with a policy list older than the store's.

use std::sync::Arc;
use std::time::Duration;

use arbiter_store::{Expect, Store, WatchItem, Write};
use futures::StreamExt;

use crate::engine::Engine;

/// The key prefix of the policy markers.
pub(crate) const POLICY_MARKERS: &str = "_policies/";

/// The marker write that goes with a change of `tenant`'s policies.
pub(crate) fn policy_marker(tenant: &str) -> Write {
    Write {
        key: format!("{POLICY_MARKERS}{tenant}").into_bytes(),
        expect: Expect::Any,
        value: Some(tenant.as_bytes().to_vec()),
        operation: "touch".into(),
    }
}

impl<S: Store> Engine<S> {
    /// Follows the policy markers until the returned future is dropped.
    /// The cache is off from this call until the watch is up.
    pub fn follow_policies(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        self.policies.set_cache_live(false);
        let engine = Arc::clone(self);
        async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match engine.store().watch(POLICY_MARKERS.as_bytes(), 0).await {
                    Ok(mut stream) => {
                        engine.policies.set_cache_live(true);
                        tracing::debug!("following policy changes");
                        backoff = Duration::from_millis(100);
                        while let Some(item) = stream.next().await {
                            match item {
                                Ok(WatchItem::Changes(events)) => {
                                    for event in events {
                                        let tenant = event.key.strip_prefix(POLICY_MARKERS.as_bytes());
                                        let tenant = String::from_utf8_lossy(tenant.unwrap_or_default());
                                        engine.policies.invalidate(&tenant);
                                    }
                                }
                                Ok(WatchItem::Progress(_)) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "the policy watch ended; policies are read from the store until it is back");
                                    break;
                                }
                            }
                        }
                        engine.policies.set_cache_live(false);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch policy changes; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
