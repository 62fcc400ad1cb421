//! Runs the store conformance suite against a real etcd started for this
//! test binary: every test on a prefix of its own. Compaction, which is
//! etcd-wide, gets an etcd of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use arbiter_store::conformance as suite;
use arbiter_store::testing::{Etcd, unique_prefix};
use arbiter_store::{EtcdOptions, EtcdStore};

fn shared() -> &'static Etcd {
    static ETCD: OnceLock<Etcd> = OnceLock::new();
    ETCD.get_or_init(Etcd::start)
}

async fn connect(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(EtcdOptions {
        endpoints: etcd.endpoints(),
        prefix: unique_prefix(),
        ..EtcdOptions::default()
    })
    .await
    .unwrap()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            suite::$name(&connect(shared()).await).await;
        }
    )*};
}

macro_rules! conformance_shared {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            suite::$name(Arc::new(connect(shared()).await)).await;
        }
    )*};
}

arbiter_store::conformance_behaviours!(conformance, conformance_shared);

#[tokio::test]
async fn compaction_bounds_history() {
    let etcd = Etcd::start();
    suite::compaction_bounds_history(&connect(&etcd).await).await;
}
