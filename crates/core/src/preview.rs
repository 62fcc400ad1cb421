//! `PreviewPolicy`: what a candidate policy would decide, before it is
//! bound. It judges the tenant's current objects as if created now and
//! replays its recent changes (each with lookups of the objects as they
//! were just before it), with the module and settings given, and stores
//! nothing. Its evaluations take the tenant's evaluation slots one
//! at a time, within the same limits as live ones, so a preview never
//! takes more than one of the tenant's slots; the preview as a whole is
//! bounded in time and in the work it does, and says when it stopped
//! early.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbiter_api::v1::{PreviewPolicyRequest, PreviewPolicyResponse, PreviewSample};
use arbiter_store::{ChangeEvent, ChangeStream, Scan, Store, StoreError, Versioned, WatchItem};
use futures::StreamExt;

use crate::access::Access;
use crate::auth::Caller;
use crate::engine::Engine;
use crate::error::{Error, invalid};
use crate::kind::Kind;
use crate::lookup::{StoreLookup, judged_codec};
use crate::names;
use crate::policy::{Binding, DenialKind, Fault, FaultKind, Input, Operation, Verdict, binds, settings_json};
use crate::stage::{Codec, Stage};
use crate::violation::FieldViolation;

/// Most recent changes a preview replays.
pub const MAX_RECENT_CHANGES: u32 = 10_000;
/// Samples returned when the request asks for none.
pub const DEFAULT_SAMPLES: u32 = 20;
/// Most samples returned.
pub const MAX_SAMPLES: u32 = 100;
/// Most current objects a preview judges.
pub const MAX_OBJECTS: u64 = 10_000;
/// How far back in the change log (in revisions) a preview looks for the
/// tenant's recent changes.
pub const LOG_WINDOW: u64 = 100_000;
/// How long a preview may run.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Objects read from the store at a time.
const PAGE: usize = 256;
/// How long a preview waits before asking again for a busy slot.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// The counts and samples of a preview as it goes.
struct Tally {
    response: PreviewPolicyResponse,
    max_samples: usize,
    deadline: Instant,
}

impl Tally {
    fn add(&mut self, name: &str, revision: u64, operation: &str, result: Result<Verdict, Fault>) {
        let r = &mut self.response;
        r.evaluated += 1;
        let (kind, reason, message) = match result {
            Ok(Verdict::Allow) => {
                r.allowed += 1;
                return;
            }
            Ok(Verdict::Deny(denial)) => {
                r.denied += 1;
                let denial = denial.bounded();
                let kind = match denial.kind {
                    DenialKind::Conflict => "conflict",
                    DenialKind::Invalid => "invalid",
                    DenialKind::Forbidden => "forbidden",
                };
                (kind, denial.reason, denial.message)
            }
            Err(fault) => {
                r.faulted += 1;
                ("fault", fault.kind.as_str().to_ascii_uppercase(), fault.detail)
            }
        };
        if r.samples.len() < self.max_samples {
            r.samples.push(PreviewSample {
                name: name.to_string(),
                revision,
                operation: operation.to_string(),
                kind: kind.to_string(),
                reason,
                message,
            });
        }
    }

    /// Whether the time is up; marks the preview as cut short if so.
    fn out_of_time(&mut self) -> bool {
        let over = Instant::now() >= self.deadline;
        self.response.truncated |= over;
        over
    }
}

/// The request's fields, checked.
fn check(req: &PreviewPolicyRequest) -> Result<(), Error> {
    let mut violations = Vec::new();
    if req.recent_changes > MAX_RECENT_CHANGES {
        violations.push(FieldViolation::new(
            "recent_changes",
            format!("must be at most {MAX_RECENT_CHANGES}"),
        ));
    }
    if req.max_samples > MAX_SAMPLES {
        violations.push(FieldViolation::new(
            "max_samples",
            format!("must be at most {MAX_SAMPLES} (0 for {DEFAULT_SAMPLES})"),
        ));
    }
    if !req.current_objects && req.recent_changes == 0 {
        violations.push(FieldViolation::new(
            "current_objects",
            "nothing to judge: set current_objects, recent_changes, or both",
        ));
    }
    if req.policy.is_none() {
        violations.push(FieldViolation::new("policy", "is required"));
    }
    invalid(violations)
}

/// The kind and name of a change log key of `tenant`'s objects of a kind
/// policies judge: `{tenant}/{collection}/{id}`.
fn object_of_key(tenant: &str, key: &[u8]) -> Option<Codec> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(collection), Some(id), None) if t == tenant && !id.is_empty() => {
            judged_codec(collection)
        }
        _ => None,
    }
}

/// The policy operation of a change log verb.
fn operation_of(verb: &str) -> Operation {
    match verb {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        _ => Operation::Transition,
    }
}

impl<S: Store> Engine<S> {
    /// Judges the tenant's current objects and recent changes with a
    /// candidate policy; stores nothing.
    pub async fn preview_policy(
        &self,
        caller: &Caller,
        req: PreviewPolicyRequest,
    ) -> Result<PreviewPolicyResponse, Error> {
        let tenant = names::parse_parent("parent", &req.parent)?;
        caller.authorize(&tenant, Access::Admin)?;
        check(&req)?;
        let mut policy = req.policy.clone().unwrap_or_default();
        let mut violations = Vec::new();
        self.policies.config.check(&policy, &mut violations);
        invalid(violations)?;
        self.attach_module(&mut policy, true).await?;
        let mut violations = Vec::new();
        crate::decide::validate_resource(&policy, "policy", &mut violations);
        invalid(violations)?;
        self.check_settings(&policy.module_sha256, &policy, policy.settings.as_ref())
            .await?;
        policy.name = format!("tenants/{tenant}/policies/preview");
        let binding = Binding {
            settings_json: settings_json(policy.settings.as_ref()),
            policy,
        };
        let revision = self
            .store
            .revision()
            .await
            .map_err(|e| Error::storage("reading the store's revision", e))?;
        let samples = match req.max_samples {
            0 => DEFAULT_SAMPLES,
            n => n,
        };
        let mut tally = Tally {
            response: PreviewPolicyResponse {
                revision,
                ..Default::default()
            },
            max_samples: usize::try_from(samples).unwrap_or(usize::MAX),
            deadline: Instant::now() + DEADLINE,
        };
        if req.current_objects {
            self.preview_objects(&tenant, &binding, &mut tally).await?;
        }
        if req.recent_changes > 0 {
            let want = usize::try_from(req.recent_changes).unwrap_or(usize::MAX);
            self.preview_changes(&tenant, &binding, want, revision, &mut tally)
                .await?;
        }
        Ok(tally.response)
    }

    /// One evaluation of the candidate: its lookups read the store as it
    /// is, or as it was just before revision `before` (a replayed change),
    /// and are not kept; a busy slot is asked for again until the
    /// deadline.
    async fn preview_one(
        &self,
        tenant: &str,
        binding: &Binding,
        input: Input,
        before: Option<u64>,
        tally: &mut Tally,
    ) -> Option<Result<Verdict, Fault>> {
        let input = Arc::new(input);
        loop {
            let lookup = StoreLookup::new(Arc::clone(&self.store), tenant, &Stage::default());
            let lookup = Arc::new(match before {
                Some(revision) => lookup.before(revision),
                None => lookup,
            });
            let (result, _) = self
                .policies
                .run(&*self.store, binding, Arc::clone(&input), Some(lookup))
                .await;
            match result {
                Err(fault) if fault.kind == FaultKind::Busy => {
                    if tally.out_of_time() {
                        return None;
                    }
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                other => return Some(other),
            }
        }
    }

    /// Judges every current object of the bound kinds as if created now,
    /// by the principal who last wrote it.
    async fn preview_objects(&self, tenant: &str, binding: &Binding, tally: &mut Tally) -> Result<(), Error> {
        let kinds: Vec<&'static Kind> = crate::kinds::JUDGED_KINDS
            .into_iter()
            .filter(|k| binds(&binding.policy, k.singular, Operation::Create))
            .collect();
        let mut judged = 0u64;
        for kind in kinds {
            let Some(codec) = judged_codec(kind.collection) else {
                continue;
            };
            let prefix = names::collection_prefix(tenant, kind);
            let mut after: Option<Vec<u8>> = None;
            loop {
                let mut page: Vec<(Vec<u8>, Versioned)> = Vec::with_capacity(PAGE);
                self.store
                    .scan(&prefix, after.as_deref(), &mut |key, stored| {
                        page.push((key.to_vec(), stored));
                        if page.len() >= PAGE {
                            Scan::Stop
                        } else {
                            Scan::Continue
                        }
                    })
                    .await
                    .map_err(|e| Error::storage("reading the tenant's objects", e))?;
                for (key, stored) in &page {
                    if judged >= MAX_OBJECTS || tally.out_of_time() {
                        tally.response.truncated = true;
                        return Ok(());
                    }
                    judged += 1;
                    let object = (codec.object)(key, stored)?;
                    let principal = (codec.current)(key, stored)?.updated_by;
                    let (name, revision) = (object.name.clone(), stored.revision);
                    let input = Input {
                        operation: Operation::Create,
                        tenant: tenant.to_string(),
                        principal,
                        current: None,
                        proposed: Some(object),
                        now_unix_ms: crate::engine::now_ms(),
                    };
                    let Some(result) = self.preview_one(tenant, binding, input, None, tally).await else {
                        return Ok(());
                    };
                    tally.add(&name, revision, "create", result);
                }
                if page.len() < PAGE {
                    break;
                }
                after = page.last().map(|(key, _)| key.clone());
            }
        }
        Ok(())
    }

    /// Replays the tenant's latest `want` changes of the bound kinds and
    /// operations, up to `revision`, as they were made: each with the
    /// lookups reading the objects as they were just before it.
    async fn preview_changes(
        &self,
        tenant: &str,
        binding: &Binding,
        want: usize,
        revision: u64,
        tally: &mut Tally,
    ) -> Result<(), Error> {
        let changes = self
            .recent_changes(tenant, binding, want, revision, tally)
            .await?;
        for (codec, change) in changes {
            let version = |value: &Option<Vec<u8>>, revision: u64| -> Result<_, Error> {
                value
                    .as_ref()
                    .map(|v| {
                        (codec.object)(
                            &change.key,
                            &Versioned {
                                revision,
                                value: v.clone(),
                            },
                        )
                    })
                    .transpose()
            };
            let input = Input {
                operation: operation_of(&change.operation),
                tenant: tenant.to_string(),
                principal: change.principal.clone(),
                current: version(&change.before, 0)?,
                proposed: version(&change.after, change.revision)?,
                now_unix_ms: u64::try_from(change.time_unix_ms).unwrap_or_default(),
            };
            let name = names::name_of_key(&change.key);
            let before = Some(change.revision);
            let Some(result) = self.preview_one(tenant, binding, input, before, tally).await else {
                return Ok(());
            };
            tally.add(&name, change.revision, &change.operation, result);
        }
        Ok(())
    }

    /// The tenant's latest `want` changes that the policy binds, each with
    /// its kind's codec, oldest first, among the last [`LOG_WINDOW`] revisions up to `revision`.
    /// The whole log is followed (not only the tenant's part), so that the
    /// change at `revision` itself marks the end.
    async fn recent_changes(
        &self,
        tenant: &str,
        binding: &Binding,
        want: usize,
        revision: u64,
        tally: &mut Tally,
    ) -> Result<VecDeque<(Codec, ChangeEvent)>, Error> {
        let mut kept = VecDeque::with_capacity(want.min(1024));
        if revision == 0 {
            return Ok(kept);
        }
        let unreadable = |e: StoreError| Error::storage("reading the change log", e);
        let start = revision.saturating_sub(LOG_WINDOW).max(1);
        let mut stream: ChangeStream = match self.store.watch(b"", start).await {
            Err(StoreError::Compacted { oldest, .. }) => {
                self.store.watch(b"", oldest).await.map_err(unreadable)?
            }
            other => other.map_err(unreadable)?,
        };
        let mut restarted = false;
        loop {
            let item = match tokio::time::timeout_at(tally.deadline.into(), stream.next()).await {
                Err(_) => {
                    tally.response.truncated = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            let batch = match item {
                Ok(WatchItem::Progress(reached)) if reached >= revision => break,
                Ok(WatchItem::Progress(_)) => continue,
                Ok(WatchItem::Changes(batch)) => batch,
                Err(StoreError::Compacted { oldest, .. }) if !restarted => {
                    // Compacted while this preview read: start again from
                    // what is left.
                    restarted = true;
                    kept.clear();
                    stream = self.store.watch(b"", oldest).await.map_err(unreadable)?;
                    continue;
                }
                Err(e) => return Err(unreadable(e)),
            };
            let mut done = false;
            for change in batch {
                if change.revision > revision {
                    done = true;
                    break;
                }
                done |= change.revision == revision;
                let bound = object_of_key(tenant, &change.key)
                    .filter(|c| binds(&binding.policy, c.kind.singular, operation_of(&change.operation)));
                if let Some(codec) = bound {
                    if kept.len() == want {
                        kept.pop_front();
                    }
                    kept.push_back((codec, change));
                }
            }
            if done {
                break;
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter_api::v1::Policy;

    #[test]
    fn change_log_keys_name_the_tenants_objects_only() {
        assert_eq!(
            object_of_key("acme", b"acme/vms/web-1").map(|c| c.kind.singular),
            Some("vm")
        );
        assert_eq!(
            object_of_key("acme", b"acme/users/bob").map(|c| c.kind.singular),
            Some("user")
        );
        assert!(object_of_key("acme", b"other/vms/web-1").is_none());
        assert!(object_of_key("acme", b"acme/policies/p").is_none());
        assert!(object_of_key("acme", b"acme/users/email/bob@acme.com").is_none());
        assert!(object_of_key("acme", b"acme/vms/").is_none());
    }

    #[test]
    fn verbs_become_operations() {
        assert_eq!(operation_of("create"), Operation::Create);
        assert_eq!(operation_of("update"), Operation::Update);
        assert_eq!(operation_of("delete"), Operation::Delete);
        assert_eq!(operation_of("stop"), Operation::Transition);
    }

    #[test]
    fn requests_are_bounded() {
        let base = PreviewPolicyRequest {
            parent: "tenants/acme".into(),
            policy: Some(Policy {
                kinds: vec!["vm".into()],
                ..Default::default()
            }),
            current_objects: true,
            ..Default::default()
        };
        assert!(check(&base).is_ok());
        let fields = |req: PreviewPolicyRequest| match check(&req) {
            Err(Error::InvalidField { violations }) => {
                violations.into_iter().map(|v| v.field).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fields(PreviewPolicyRequest {
                recent_changes: 10_001,
                max_samples: 101,
                ..base.clone()
            }),
            ["recent_changes", "max_samples"]
        );
        assert_eq!(
            fields(PreviewPolicyRequest {
                current_objects: false,
                ..base.clone()
            }),
            ["current_objects"]
        );
        assert_eq!(fields(PreviewPolicyRequest { policy: None, ..base }), ["policy"]);
    }
}
