//! How the engine combines policy verdicts, with a scripted runtime in
//! place of WebAssembly: modes, failure policies, binding, counting, and
//! the module store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arbiter_api::v1::{GetPolicyStatsRequest, Policy, PolicyEvaluationCounts, VirtualMachine, policy};
use arbiter_core::policy::{
    BoxFuture, Call, Denial, DenialKind, Fault, FaultKind, Input, Limits, LoadError, Verdict,
};
use arbiter_core::{Caller, CreateRequest, Engine, EngineConfig, Error, PolicyRuntime, RequestId, Role};
use arbiter_store::{RocksOptions, RocksStore};

/// Answers by the module's bytes: `allow`, `deny` or `fault`; `lookup`
/// looks up `tenants/acme/vms/other`, then allows — after waiting for the
/// test on the first request for `tenants/acme/vms/target`.
#[derive(Default)]
struct Scripted {
    loaded: std::sync::Mutex<std::collections::HashMap<String, String>>,
    evaluations: AtomicUsize,
    /// Taken by the first `lookup` evaluation of the target: it says that
    /// it looked up, then waits to be released.
    pause: std::sync::Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

use tokio::sync::oneshot;

impl PolicyRuntime for Scripted {
    fn load(&self, digest: String, module: Arc<[u8]>) -> BoxFuture<'_, Result<(), LoadError>> {
        let script = String::from_utf8_lossy(&module).to_string();
        Box::pin(async move {
            if !["allow", "deny", "fault", "lookup"].contains(&script.as_str()) {
                return Err("is not a script".into());
            }
            self.loaded.lock().unwrap().insert(digest, script);
            Ok(())
        })
    }

    fn is_loaded(&self, digest: &str) -> bool {
        self.loaded.lock().unwrap().contains_key(digest)
    }

    fn evaluate(&self, call: Call, input: Arc<Input>) -> BoxFuture<'_, Result<Verdict, Fault>> {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let script = self.loaded.lock().unwrap().get(&call.digest).cloned();
        Box::pin(async move {
            assert_eq!(input.tenant, "acme", "a tenant's policies run for it alone");
            match script.as_deref() {
                Some("lookup") => {
                    let lookup = call.lookup.clone().unwrap();
                    let found = lookup.lookup("tenants/acme/vms/other").await?;
                    assert!(found.is_some());
                    let target = input
                        .proposed
                        .as_ref()
                        .is_some_and(|o| o.name == "tenants/acme/vms/target");
                    let pause = if target {
                        self.pause.lock().unwrap().take()
                    } else {
                        None
                    };
                    if let Some((looked, release)) = pause {
                        looked.send(()).unwrap();
                        release.await.unwrap();
                    }
                    Ok(Verdict::Allow)
                }
                Some("allow") => Ok(Verdict::Allow),
                Some("deny") => Ok(Verdict::Deny(Denial {
                    kind: DenialKind::Conflict,
                    reason: "NO".into(),
                    message: "scripted denial".into(),
                    violations: Vec::new(),
                })),
                _ => Err(Fault::new(FaultKind::Trap, "scripted fault")),
            }
        })
    }

    fn validate_settings(
        &self,
        _: String,
        _: Limits,
        settings_json: String,
    ) -> BoxFuture<'_, Result<Result<(), String>, Fault>> {
        Box::pin(async move {
            if settings_json.contains("bad") {
                Ok(Err(format!("refused {settings_json}")))
            } else {
                Ok(Ok(()))
            }
        })
    }
}

fn admin() -> Caller {
    Caller {
        principal: "root".into(),
        tenant: "*".into(),
        role: Role::Admin,
    }
}

fn setup() -> (tempfile::TempDir, Arc<Scripted>, Engine<RocksStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), RocksOptions::default()).unwrap();
    let runtime = Arc::new(Scripted::default());
    let engine = Engine::with_runtime(Arc::new(store), EngineConfig::default(), runtime.clone());
    (dir, runtime, engine)
}

async fn add(
    engine: &Engine<RocksStore>,
    id: &str,
    script: &str,
    mode: policy::Mode,
    failure: policy::FailurePolicy,
) {
    let policy = Policy {
        kinds: vec!["vm".into()],
        mode: mode as i32,
        failure_policy: failure as i32,
        module: script.as_bytes().to_vec(),
        ..Default::default()
    };
    let req = CreateRequest {
        parent: "tenants/acme".into(),
        id: id.into(),
        resource: policy,
        request_id: RequestId::default(),
        validate_only: false,
    };
    engine.create_policy(&admin(), req).await.unwrap();
}

async fn create_vm(engine: &Engine<RocksStore>, tenant: &str, id: &str) -> Result<VirtualMachine, Error> {
    let req = CreateRequest {
        parent: format!("tenants/{tenant}"),
        id: id.into(),
        resource: VirtualMachine {
            region: "us-east1".into(),
            machine_type: "e2-small".into(),
            image: "debian-12".into(),
            ..Default::default()
        },
        request_id: RequestId::default(),
        validate_only: false,
    };
    engine.create(&admin(), req).await
}

use policy::{FailurePolicy as F, Mode as M};

/// How the evaluations of tenant acme's policy `id` ended, as
/// `GetPolicyStats` reports them.
async fn evaluations(engine: &Engine<RocksStore>, id: &str) -> PolicyEvaluationCounts {
    let stats = engine
        .policy_evaluation_stats(
            &admin(),
            GetPolicyStatsRequest {
                parent: "tenants/acme".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let name = format!("tenants/acme/policies/{id}");
    stats
        .policies
        .into_iter()
        .find(|p| p.policy == name)
        .unwrap_or_default()
}

#[tokio::test]
async fn audit_denials_and_ignored_faults_are_counted_and_never_block() {
    let (_dir, _, engine) = setup();
    add(&engine, "audit-deny", "deny", M::Audit, F::FailClosed).await;
    add(&engine, "audit-fault", "fault", M::Audit, F::FailClosed).await;
    add(&engine, "open-fault", "fault", M::Enforce, F::FailOpen).await;
    add(&engine, "allow", "allow", M::Enforce, F::FailClosed).await;
    create_vm(&engine, "acme", "web-1").await.unwrap();
    create_vm(&engine, "acme", "web-2").await.unwrap();
    assert_eq!(evaluations(&engine, "audit-deny").await.audit_denied, 2);
    assert_eq!(evaluations(&engine, "audit-fault").await.faults_ignored, 2);
    assert_eq!(evaluations(&engine, "open-fault").await.faults_ignored, 2);
    let allow = evaluations(&engine, "allow").await;
    assert_eq!((allow.allowed, allow.evaluations), (2, 2));
}

#[tokio::test]
async fn an_enforced_denial_or_a_closed_fault_refuses_and_writes_nothing() {
    let (_dir, runtime, engine) = setup();
    add(&engine, "b-fault", "fault", M::Enforce, F::FailClosed).await;
    let err = create_vm(&engine, "acme", "web-1").await.unwrap_err();
    assert!(
        matches!(&err, Error::PolicyFault { fault, .. } if fault.kind == FaultKind::Trap),
        "{err:?}"
    );
    add(&engine, "a-deny", "deny", M::Enforce, F::FailClosed).await;
    let err = create_vm(&engine, "acme", "web-1").await.unwrap_err();
    match err {
        Error::PolicyDenied { policy, denial, .. } => {
            assert_eq!(
                policy, "tenants/acme/policies/a-deny",
                "the first refusal in name order"
            );
            assert_eq!(denial.reason, "NO");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(evaluations(&engine, "a-deny").await.denied, 1);
    assert_eq!(evaluations(&engine, "b-fault").await.faulted, 2);
    assert!(
        engine
            .get::<VirtualMachine>(&admin(), "tenants/acme/vms/web-1")
            .await
            .is_err()
    );
    // Another tenant has no policies: nothing runs for it.
    let before = runtime.evaluations.load(Ordering::Relaxed);
    create_vm(&engine, "globex", "web-1").await.unwrap();
    assert_eq!(runtime.evaluations.load(Ordering::Relaxed), before);
}

#[tokio::test]
async fn modules_the_runtime_refuses_are_invalid_fields() {
    let (_dir, _, engine) = setup();
    let req = CreateRequest {
        parent: "tenants/acme".into(),
        id: "bad".into(),
        resource: Policy {
            kinds: vec!["vm".into()],
            module: b"rm -rf /".to_vec(),
            ..Default::default()
        },
        request_id: RequestId::default(),
        validate_only: false,
    };
    match engine.create_policy(&admin(), req).await.unwrap_err() {
        Error::InvalidField { violations } => {
            assert_eq!(violations[0].field, "policy.module");
            assert!(violations[0].description.contains("not a script"));
        }
        other => panic!("{other:?}"),
    }
}

/// Updates the label `rev` of `tenants/acme/vms/{id}`, with `etag` if any.
async fn relabel(
    engine: &Engine<RocksStore>,
    id: &str,
    value: &str,
    etag: &str,
) -> Result<VirtualMachine, Error> {
    let req = arbiter_core::UpdateRequest {
        resource: VirtualMachine {
            name: format!("tenants/acme/vms/{id}"),
            labels: [("rev".to_string(), value.to_string())].into(),
            etag: etag.into(),
            ..Default::default()
        },
        update_mask: vec!["labels".into()],
        request_id: RequestId::default(),
        validate_only: false,
    };
    engine.update(&admin(), req).await
}

/// Starts an update of the target whose policy looked up `other` and
/// waits; changes `other`; lets the policy answer. Returns the update's
/// result and the evaluations it took.
async fn race_a_lookup(etag: bool) -> (Result<VirtualMachine, Error>, usize) {
    let (_dir, runtime, engine) = setup();
    let engine = Arc::new(engine);
    let target = create_vm(&engine, "acme", "target").await.unwrap();
    create_vm(&engine, "acme", "other").await.unwrap();
    add(&engine, "looks-up", "lookup", M::Enforce, F::FailClosed).await;
    let (looked_tx, looked) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    *runtime.pause.lock().unwrap() = Some((looked_tx, release_rx));
    let before = runtime.evaluations.load(Ordering::Relaxed);
    let update = {
        let engine = Arc::clone(&engine);
        let etag = if etag { target.etag.clone() } else { String::new() };
        tokio::spawn(async move { relabel(&engine, "target", "1", &etag).await })
    };
    looked.await.unwrap();
    relabel(&engine, "other", "moved", "").await.unwrap();
    release.send(()).unwrap();
    let result = update.await.unwrap();
    (result, runtime.evaluations.load(Ordering::Relaxed) - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_judged_again_when_what_its_policy_looked_up_moved() {
    let (result, evaluations) = race_a_lookup(false).await;
    let updated = result.unwrap();
    assert_eq!(updated.labels.get("rev").map(String::as_str), Some("1"));
    // One evaluation of the update of `other`, two of the target's: the
    // first judged a state that moved before the commit.
    assert_eq!(evaluations, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_an_etag_is_aborted_when_what_its_policy_looked_up_moved() {
    let (result, evaluations) = race_a_lookup(true).await;
    match result {
        Err(Error::LookupChanged {
            name,
            looked_up,
            expected,
            ..
        }) => {
            assert_eq!(name, "tenants/acme/vms/target");
            assert_eq!(looked_up, "tenants/acme/vms/other");
            assert!(!expected.is_empty());
        }
        other => panic!("expected LookupChanged, got {other:?}"),
    }
    assert_eq!(evaluations, 2);
}

#[tokio::test]
async fn settings_are_checked_by_the_module_at_create_and_update() {
    let (_dir, _, engine) = setup();
    let policy = |settings: &str| Policy {
        kinds: vec!["vm".into()],
        module: b"allow".to_vec(),
        settings: Some(prost_types::Struct {
            fields: [(
                "x".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(settings.into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let create = |id: &str, settings: &str| CreateRequest {
        parent: "tenants/acme".into(),
        id: id.into(),
        resource: policy(settings),
        request_id: RequestId::default(),
        validate_only: false,
    };
    match engine.create_policy(&admin(), create("p", "bad")).await {
        Err(Error::InvalidField { violations }) => {
            assert_eq!(violations[0].field, "policy.settings");
            assert!(
                violations[0].description.contains(r#"refused {"x":"bad"}"#),
                "{violations:?}"
            );
        }
        other => panic!("expected INVALID_FIELD, got {other:?}"),
    }
    let created = engine.create_policy(&admin(), create("p", "good")).await.unwrap();
    let update = |settings: &str, mask: &str| arbiter_core::UpdateRequest {
        resource: Policy {
            name: created.name.clone(),
            ..policy(settings)
        },
        update_mask: vec![mask.into()],
        request_id: RequestId::default(),
        validate_only: false,
    };
    // Settings alone are checked against the module the policy has.
    let refused = engine.update_policy(&admin(), update("bad", "settings")).await;
    assert!(matches!(refused, Err(Error::InvalidField { .. })), "{refused:?}");
    let updated = engine
        .update_policy(&admin(), update("fine", "settings"))
        .await
        .unwrap();
    let x = &updated.settings.unwrap().fields["x"];
    assert_eq!(x.kind, Some(prost_types::value::Kind::StringValue("fine".into())));
    // Settings over 64 KiB are refused before the module sees them.
    let huge = engine
        .update_policy(&admin(), update(&"y".repeat(70_000), "settings"))
        .await;
    assert!(
        matches!(&huge, Err(Error::InvalidField { violations }) if violations[0].description.contains("at most 65536")),
        "{huge:?}"
    );
}
