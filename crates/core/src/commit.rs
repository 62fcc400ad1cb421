//! The commit of a stage, and what a failed commit means: a taken name or
//! unique value, a stale etag, a quota reached, or a retry on the new
//! state — decided here once for single writes and transactions alike.

use arbiter_store::{CommitError, Committed, IdempotencyMark, Store, Versioned};

use crate::engine::Engine;
use crate::error::Error;
use crate::quota::quota_exceeded;
use crate::stage::{Codec, Failure, Stage, Staged, mismatch, taken};

impl<S: Store> Engine<S> {
    /// Commits the stage and says what a failure means. `may_retry`: a
    /// conflict on writes without etags asks for another stage.
    pub(crate) async fn commit_stage(
        &self,
        stage: &Stage,
        change: arbiter_store::ChangeMeta,
        idempotency: Option<IdempotencyMark>,
        may_retry: bool,
    ) -> Result<Committed, Failure> {
        let failure = match self.store.commit(stage.commit(change, idempotency)).await {
            Ok(done) => {
                for s in &stage.objects {
                    if s.codec.kind == &crate::kinds::POLICY {
                        self.policies.invalidate(&s.tenant);
                    }
                }
                return Ok(done);
            }
            Err(e) => e,
        };
        Err(match failure {
            CommitError::Conflict { key, .. } if stage.counts.iter().any(|c| c.counting.is_marker(&key)) => {
                if may_retry {
                    Failure::Retry
                } else {
                    Failure::Failed {
                        op: None,
                        error: Error::storage("counting for a quota", "the count kept moving"),
                    }
                }
            }
            CommitError::Conflict { key, .. }
                if stage.get(&key).is_none() && stage.looked_up(&key).is_some() =>
            {
                self.lookup_moved(stage, &key, may_retry)
            }
            CommitError::Conflict { key, current } => {
                let Some(s) = stage.get(&key) else {
                    return Err(Failure::Failed {
                        op: None,
                        error: Error::storage("writing", "a commit conflicted on a key it did not write"),
                    });
                };
                match (&s.original, current) {
                    (None, Some(existing)) => self.exists(s, &existing),
                    (None, None) if may_retry => Failure::Retry,
                    (Some(_), None) | (None, None) => Failure::at(
                        s.first_op,
                        Error::NotFound {
                            kind: s.codec.kind,
                            name: s.name.clone(),
                        },
                    ),
                    (Some(original), Some(moved)) => match &s.etag_op {
                        None if may_retry => Failure::Retry,
                        Some((op, etag)) => Failure::at(*op, self.stale(s, etag, &moved).await),
                        None => {
                            let expected = crate::engine::etag_of(original.revision);
                            Failure::at(s.first_op, self.stale(s, &expected, &moved).await)
                        }
                    },
                }
            }
            CommitError::Taken { key, owner } => {
                let claim = stage.objects.iter().find_map(|s| {
                    s.uniques
                        .iter()
                        .find(|(_, u)| u.key == key)
                        .map(|(op, u)| (s, *op, u))
                });
                match claim {
                    Some((s, op, u)) => Failure::at(op, taken(s.codec.kind, &s.name, u, &owner)),
                    None => Failure::Failed {
                        op: None,
                        error: Error::storage("claiming a unique field", "unknown key"),
                    },
                }
            }
            CommitError::Limit { key, value, .. } => {
                let count = stage.counts.iter().find(|c| c.counting.is_marker(&key));
                match count {
                    Some(c) => {
                        let (op, usage) = c
                            .over(value)
                            .unwrap_or((c.moves.first().map_or(0, |m| m.0), value));
                        Failure::at(
                            op,
                            quota_exceeded(&c.tenant, c.kind, c.counting.limit.unwrap_or_default(), usage),
                        )
                    }
                    None => Failure::Failed {
                        op: None,
                        error: Error::storage("counting for a quota", "unknown counter"),
                    },
                }
            }
            CommitError::Recorded(record) => Failure::Recorded(record),
            CommitError::Store(e) => Failure::Failed {
                op: None,
                error: Error::storage("writing", e),
            },
        })
    }

    /// What it means that an object the policies of an operation looked
    /// up moved before the commit: judge again on the new state, unless
    /// the operation sent an etag (or retries ran out).
    fn lookup_moved(&self, stage: &Stage, key: &[u8], may_retry: bool) -> Failure {
        let op = stage.looked_up(key).unwrap_or_default();
        let etag = stage.objects.iter().find_map(|s| match &s.etag_op {
            Some((o, etag)) if *o == op => Some((s, etag.clone())),
            _ => None,
        });
        if etag.is_none() && may_retry {
            return Failure::Retry;
        }
        let written = etag
            .as_ref()
            .map(|(s, _)| *s)
            .or_else(|| stage.objects.iter().find(|s| s.first_op == op))
            .or_else(|| stage.objects.first());
        let Some(written) = written else {
            return Failure::Failed {
                op: None,
                error: Error::storage("writing", "a commit conflicted on a key it did not write"),
            };
        };
        Failure::at(
            op,
            Error::LookupChanged {
                kind: written.codec.kind,
                name: written.name.clone(),
                expected: etag.map(|(_, e)| e).unwrap_or_default(),
                looked_up: crate::names::name_of_key(key),
            },
        )
    }

    /// `RESOURCE_EXISTS` for a create of `s`, which the store holds as
    /// `existing`.
    fn exists(&self, s: &Staged, existing: &Versioned) -> Failure {
        let error = match (s.codec.current)(&s.key, existing) {
            Ok(current) => Error::Exists {
                kind: s.codec.kind,
                name: s.name.clone(),
                current,
            },
            Err(e) => e,
        };
        Failure::at(s.first_op, error)
    }

    /// `ETAG_MISMATCH` for `s`, expected at `etag` and now at `moved`.
    async fn stale(&self, s: &Staged, etag: &str, moved: &Versioned) -> Error {
        match (s.codec.current)(&s.key, moved) {
            Ok(current) => mismatch(s.codec.kind, &s.name, etag, current)
                .with_changed_fields(self.changed_since(&s.key, etag, s.codec, moved).await),
            Err(e) => e,
        }
    }

    /// The fields changed between the version an etag names and `current`,
    /// when that version is still retained.
    pub(crate) async fn changed_since(
        &self,
        key: &[u8],
        etag: &str,
        codec: Codec,
        current: &Versioned,
    ) -> Option<Vec<String>> {
        let revision = u64::from_str_radix(etag.trim().trim_matches('"'), 16).ok()?;
        let old = self.store.get_at(key, revision).await.ok()??;
        (codec.changed)(key, &old, current)
    }
}
