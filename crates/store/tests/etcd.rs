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

conformance!(
    create_is_exclusive,
    writes_are_conditional,
    unique_keys_have_one_owner,
    unique_keys_move_within_one_commit,
    scans_are_ordered,
    large_scans_are_complete,
    commits_are_atomic,
    reads_are_preconditions,
    counters_respect_limits,
    idempotency_records_outcomes,
    request_ids_commit_once,
    blobs_round_trip,
    watch_delivers_commits,
    idle_watch_reports_progress,
    history_lists_changes,
);

conformance_shared!(
    concurrent_creates_have_one_winner,
    concurrent_counters_are_exact,
    watch_resumes_without_gaps,
);

#[tokio::test]
async fn compaction_bounds_history() {
    let etcd = Etcd::start();
    suite::compaction_bounds_history(&connect(&etcd).await).await;
}
