//! How the engine combines policy verdicts, with a scripted runtime in
//! place of WebAssembly: modes, failure policies, binding, counting, and
//! the module store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arbiter_api::v1::{Policy, VirtualMachine, policy};
use arbiter_core::policy::{
    BoxFuture, Denial, DenialKind, Fault, FaultKind, Input, Limits, LoadError, Outcome, Verdict,
};
use arbiter_core::{Caller, CreateRequest, Engine, EngineConfig, Error, PolicyRuntime, RequestId, Role};
use arbiter_store::{RocksOptions, RocksStore};

/// Answers by the module's bytes: `allow`, `deny` or `fault`.
#[derive(Default)]
struct Scripted {
    loaded: std::sync::Mutex<std::collections::HashMap<String, String>>,
    evaluations: AtomicUsize,
}

impl PolicyRuntime for Scripted {
    fn load(&self, digest: String, module: Arc<[u8]>) -> BoxFuture<'_, Result<(), LoadError>> {
        let script = String::from_utf8_lossy(&module).to_string();
        Box::pin(async move {
            if !["allow", "deny", "fault"].contains(&script.as_str()) {
                return Err("is not a script".into());
            }
            self.loaded.lock().unwrap().insert(digest, script);
            Ok(())
        })
    }

    fn is_loaded(&self, digest: &str) -> bool {
        self.loaded.lock().unwrap().contains_key(digest)
    }

    fn evaluate(
        &self,
        digest: String,
        _: String,
        _: Limits,
        input: Arc<Input>,
    ) -> BoxFuture<'_, Result<Verdict, Fault>> {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let script = self.loaded.lock().unwrap().get(&digest).cloned();
        Box::pin(async move {
            assert_eq!(input.tenant, "acme", "a tenant's policies run for it alone");
            match script.as_deref() {
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

#[tokio::test]
async fn audit_denials_and_ignored_faults_are_counted_and_never_block() {
    let (_dir, _, engine) = setup();
    add(&engine, "audit-deny", "deny", M::Audit, F::FailClosed).await;
    add(&engine, "audit-fault", "fault", M::Audit, F::FailClosed).await;
    add(&engine, "open-fault", "fault", M::Enforce, F::FailOpen).await;
    add(&engine, "allow", "allow", M::Enforce, F::FailClosed).await;
    create_vm(&engine, "acme", "web-1").await.unwrap();
    create_vm(&engine, "acme", "web-2").await.unwrap();
    let stats = engine.policy_stats();
    assert_eq!(
        stats.count("tenants/acme/policies/audit-deny", Outcome::AuditDeny),
        2
    );
    assert_eq!(
        stats.count("tenants/acme/policies/audit-fault", Outcome::FaultIgnored),
        2
    );
    assert_eq!(
        stats.count("tenants/acme/policies/open-fault", Outcome::FaultIgnored),
        2
    );
    assert_eq!(stats.count("tenants/acme/policies/allow", Outcome::Allow), 2);
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
    let stats = engine.policy_stats();
    assert_eq!(stats.count("tenants/acme/policies/a-deny", Outcome::Deny), 1);
    assert_eq!(stats.count("tenants/acme/policies/b-fault", Outcome::Fault), 2);
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
