//! The state a write is decided on, and its one commit. A [`Stage`] lays
//! the operations of a request over the store: each operation reads the
//! objects, unique keys and counts as the operations before it left them,
//! and the commit writes every touched object once, at one revision, only
//! if the store still holds what the stage read. A single write is a stage
//! of one operation; a transaction is a stage of many. What a failed
//! commit means — a taken name, a stale etag, a quota reached, a retry — is
//! decided here once for both.

use arbiter_store::{
    Claim, Commit, Expect, IdempotencyMark, IdempotencyRecord, Read, Store, Versioned, Write,
};

use crate::changes::changed_fields;
use crate::engine::{Engine, current_of, decode};
use crate::error::{Current, Error};
use crate::kind::{Kind, Resource};
use crate::lookup::Looked;
use crate::names;
use crate::quota::{Counting, quota_exceeded};

/// A unique field value of a resource: its store key, field and raw value.
#[derive(Debug, Clone)]
pub(crate) struct UniqueValue {
    pub(crate) key: Vec<u8>,
    pub(crate) field: &'static str,
    pub(crate) value: String,
}

/// The unique field values `r` holds in `tenant`.
pub(crate) fn unique_values<R: Resource>(tenant: &str, r: &R) -> Vec<UniqueValue> {
    R::KIND
        .fields
        .iter()
        .filter_map(|f| {
            let normalize = f.unique?;
            let value = r.field(f.name)?;
            (!value.is_empty()).then(|| UniqueValue {
                key: names::unique_key(tenant, R::KIND, f.name, &normalize(value)),
                field: f.name,
                value: value.clone(),
            })
        })
        .collect()
}

/// What the untyped commit path needs of a kind: how to describe a stored
/// version in a conflict.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    pub(crate) kind: &'static Kind,
    pub(crate) current: fn(&[u8], &Versioned) -> Result<Current, Error>,
    pub(crate) changed: fn(&[u8], &Versioned, &Versioned) -> Option<Vec<String>>,
    /// The object a policy sees of a stored version.
    pub(crate) object: fn(&[u8], &Versioned) -> Result<crate::policy::Object, Error>,
}

fn current_stored<R: Resource>(key: &[u8], stored: &Versioned) -> Result<Current, Error> {
    decode::<R>(key, stored).map(|r| current_of(&r))
}

fn changed_stored<R: Resource>(key: &[u8], before: &Versioned, after: &Versioned) -> Option<Vec<String>> {
    let before = decode::<R>(key, before).ok()?;
    let after = decode::<R>(key, after).ok()?;
    Some(changed_fields(&before, &after))
}

fn object_stored<R: Resource>(key: &[u8], stored: &Versioned) -> Result<crate::policy::Object, Error> {
    decode::<R>(key, stored).map(|r| crate::policy::object_of(&r))
}

impl Codec {
    pub(crate) fn of<R: Resource>() -> Self {
        Self {
            kind: R::KIND,
            current: current_stored::<R>,
            changed: changed_stored::<R>,
            object: object_stored::<R>,
        }
    }
}

/// One object touched by the operations of a stage.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) key: Vec<u8>,
    /// Its full name.
    pub(crate) name: String,
    pub(crate) tenant: String,
    pub(crate) codec: Codec,
    /// What the store held when an operation first touched it; `None` when
    /// a create assumed it absent without reading (the commit checks).
    pub(crate) original: Option<Versioned>,
    /// The unique values of `original`.
    pub(crate) original_uniques: Vec<UniqueValue>,
    /// The object as the last operation left it; `None`: absent.
    pub(crate) value: Option<Vec<u8>>,
    /// Its unique values now, each with the operation that took it.
    pub(crate) uniques: Vec<(usize, UniqueValue)>,
    /// The first operation that touched it: the commit's expectation is
    /// that operation's.
    pub(crate) first_op: usize,
    /// The last operation that sent an etag for it, with that etag.
    pub(crate) etag_op: Option<(usize, String)>,
    /// The last operation's name in the change log.
    pub(crate) verb: &'static str,
}

impl Staged {
    /// The object as the stage sees it: the stored revision it was read at
    /// (0 for one created here) with its current value.
    pub(crate) fn version(&self) -> Option<Versioned> {
        self.value.as_ref().map(|value| Versioned {
            revision: self.original.as_ref().map_or(0, |o| o.revision),
            value: value.clone(),
        })
    }

    /// Its name in the change log: "create" when it did not exist, "delete"
    /// when it does not any more, else the last operation's verb.
    pub(crate) fn operation(&self) -> &'static str {
        match (&self.original, &self.value) {
            (None, _) => "create",
            (Some(_), None) => "delete",
            (Some(_), Some(_)) => self.verb,
        }
    }
}

/// A tenant's count of a collection, moved by the stage's creates and
/// deletes.
#[derive(Debug)]
pub(crate) struct StagedCount {
    pub(crate) tenant: String,
    pub(crate) kind: &'static Kind,
    pub(crate) counting: Counting,
    /// The count before the stage, when the stage checks each operation.
    pub(crate) usage: Option<i64>,
    /// Each operation's move, in order.
    pub(crate) moves: Vec<(usize, i64)>,
}

impl StagedCount {
    fn limit(&self) -> i64 {
        self.counting
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX))
    }

    /// The operation whose create takes the count past its quota when the
    /// count starts at `usage`.
    pub(crate) fn over(&self, usage: i64) -> Option<(usize, i64)> {
        let mut count = usage;
        for &(op, delta) in &self.moves {
            if delta > 0 && count.saturating_add(delta) > self.limit() {
                return Some((op, count));
            }
            count = count.saturating_add(delta);
        }
        None
    }
}

/// The operations of one request laid over the store.
#[derive(Debug, Default)]
pub(crate) struct Stage {
    pub(crate) objects: Vec<Staged>,
    pub(crate) counts: Vec<StagedCount>,
    /// What the operations' policies looked up in the store, each with
    /// the operation whose policies read it: preconditions of the commit.
    pub(crate) lookups: Vec<(usize, Looked)>,
    /// Whether each operation is checked against the store as it is
    /// staged — its name free, its unique values free, its quota not
    /// reached — so that the first operation to fail is the one reported
    /// (a transaction) or nothing is committed (`validate_only`). Without
    /// it, the commit alone checks these.
    pub(crate) exact: bool,
}

/// Who holds a unique key, as far as the stage knows.
pub(crate) enum Holder<'a> {
    /// A staged object holds it now.
    Object(&'a [u8]),
    /// A staged object gave it up.
    Released,
    /// The stage has not touched it: the store knows.
    Unknown,
}

/// Why a stage did not commit.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The store moved underneath writes that sent no etag: stage again.
    Retry,
    /// It failed; `op` is the operation at fault, when one is.
    Failed { op: Option<usize>, error: Error },
    /// The request id was recorded by an earlier commit.
    Recorded(IdempotencyRecord),
}

impl Failure {
    pub(crate) fn at(op: usize, error: Error) -> Self {
        Self::Failed { op: Some(op), error }
    }
}

impl Stage {
    pub(crate) fn new(exact: bool) -> Self {
        Self {
            exact,
            ..Self::default()
        }
    }

    /// The staged object at `key`, if an operation touched it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Staged> {
        self.objects.iter().find(|s| s.key == key)
    }

    /// Notes the first touch of an object: what the store held (`None`
    /// for a create that did not read).
    pub(crate) fn touch<R: Resource>(
        &mut self,
        op: usize,
        key: &[u8],
        name: &names::Name,
        original: Option<(Versioned, &R)>,
    ) {
        if self.get(key).is_some() {
            return;
        }
        let original_uniques = original
            .as_ref()
            .map(|(_, r)| unique_values(&name.tenant, *r))
            .unwrap_or_default();
        self.objects.push(Staged {
            key: key.to_vec(),
            name: name.full(R::KIND),
            tenant: name.tenant.clone(),
            codec: Codec::of::<R>(),
            value: original.as_ref().map(|(v, _)| v.value.clone()),
            original: original.map(|(v, _)| v),
            uniques: original_uniques.iter().map(|u| (op, u.clone())).collect(),
            original_uniques,
            first_op: op,
            etag_op: None,
            verb: "",
        });
    }

    /// Records what operation `op` left at `key` (touched before).
    pub(crate) fn set(
        &mut self,
        op: usize,
        key: &[u8],
        verb: &'static str,
        etag: &str,
        value: Option<Vec<u8>>,
        uniques: Vec<UniqueValue>,
    ) {
        let Some(s) = self.objects.iter_mut().find(|s| s.key == key) else {
            return;
        };
        let kept = std::mem::take(&mut s.uniques);
        s.uniques = uniques
            .into_iter()
            .map(|u| {
                let taken = kept.iter().find(|(_, k)| k.key == u.key).map_or(op, |(o, _)| *o);
                (taken, u)
            })
            .collect();
        s.value = value;
        s.verb = verb;
        if !etag.is_empty() {
            s.etag_op = Some((op, etag.to_string()));
        }
    }

    /// Who holds the unique key `key`.
    pub(crate) fn holder(&self, key: &[u8]) -> Holder<'_> {
        if let Some(s) = self
            .objects
            .iter()
            .find(|s| s.uniques.iter().any(|(_, u)| u.key == key))
        {
            return Holder::Object(&s.key);
        }
        if self
            .objects
            .iter()
            .any(|s| s.original_uniques.iter().any(|u| u.key == key))
        {
            return Holder::Released;
        }
        Holder::Unknown
    }

    /// The commit of everything staged.
    pub(crate) fn commit(
        &self,
        change: arbiter_store::ChangeMeta,
        idempotency: Option<IdempotencyMark>,
    ) -> Commit {
        let mut commit = Commit {
            change,
            idempotency,
            ..Commit::default()
        };
        for s in &self.objects {
            let expect = s
                .original
                .as_ref()
                .map_or(Expect::Absent, |o| Expect::Revision(o.revision));
            if s.original.is_none() && s.value.is_none() {
                // Created and deleted by the stage: it must still be absent.
                commit.reads.push(Read {
                    key: s.key.clone(),
                    expect,
                });
                continue;
            }
            commit.writes.push(Write {
                key: s.key.clone(),
                expect,
                value: s.value.clone(),
                operation: s.operation().into(),
            });
            for (_, u) in &s.uniques {
                if !s.original_uniques.iter().any(|o| o.key == u.key) {
                    commit.claims.push(Claim {
                        key: u.key.clone(),
                        owner: s.key.clone(),
                    });
                }
            }
            for o in &s.original_uniques {
                if !s.uniques.iter().any(|(_, u)| u.key == o.key) {
                    commit.releases.push(o.key.clone());
                }
            }
            if s.codec.kind == &crate::kinds::POLICY {
                let marker = crate::follow::policy_marker(&s.tenant);
                if !commit.writes.iter().any(|w| w.key == marker.key) {
                    commit.writes.push(marker);
                }
            }
        }
        for (_, looked) in &self.lookups {
            let staged = self.get(&looked.key);
            let covered = staged.is_some_and(|s| s.original.as_ref().map(|o| o.revision) == looked.revision)
                || commit.reads.iter().any(|r| r.key == looked.key);
            if !covered {
                commit.reads.push(Read {
                    key: looked.key.clone(),
                    expect: looked.revision.map_or(Expect::Absent, Expect::Revision),
                });
            }
        }
        for c in &self.counts {
            c.counting.apply(&mut commit);
        }
        commit
    }

    /// The operation whose policies looked up `key`, if one did.
    pub(crate) fn looked_up(&self, key: &[u8]) -> Option<usize> {
        self.lookups.iter().find(|(_, l)| l.key == key).map(|(op, _)| *op)
    }
}

/// `ETAG_MISMATCH` for `name`, whose current version is `current`.
pub(crate) fn mismatch(kind: &'static Kind, name: &str, expected: &str, current: Current) -> Error {
    Error::EtagMismatch {
        kind,
        name: name.to_string(),
        expected: expected.to_string(),
        current,
        changed_fields: None,
    }
}

/// `UNIQUE_FIELD_TAKEN` for `name`, whose `u` is held by `owner`.
pub(crate) fn taken(kind: &'static Kind, name: &str, u: &UniqueValue, owner: &[u8]) -> Error {
    Error::UniqueTaken {
        kind,
        name: name.to_string(),
        field: u.field,
        value: u.value.clone(),
        existing: names::name_of_key(owner),
    }
}

impl<S: Store> Engine<S> {
    /// Moves the tenant's count of `kind` by `delta` for operation `op`,
    /// when a quota applies; checks the operation against the quota when
    /// the stage is exact.
    pub(crate) async fn stage_count(
        &self,
        stage: &mut Stage,
        op: usize,
        tenant: &str,
        kind: &'static Kind,
        delta: i64,
    ) -> Result<(), Error> {
        if self.config.quotas.limit(tenant, kind.collection).is_none() {
            return Ok(());
        }
        let found = stage
            .counts
            .iter()
            .position(|c| c.tenant == tenant && c.kind == kind);
        let index = match found {
            Some(i) => {
                if let Some(counter) = stage.counts[i].counting.counter.as_mut() {
                    counter.delta = counter.delta.saturating_add(delta);
                }
                i
            }
            None => {
                let counting = self.counting(tenant, kind, delta).await?;
                // A first count found the usage already; otherwise the
                // counter holds it.
                let usage = match (stage.exact, counting.held, counting.counter.as_ref()) {
                    (false, _, _) => None,
                    (true, Some(held), _) => Some(held),
                    (true, None, Some(counter)) => Some(
                        self.store
                            .counter(&counter.key)
                            .await
                            .map_err(|e| Error::storage("reading a quota count", e))?,
                    ),
                    (true, None, None) => Some(self.usage(tenant, kind).await?),
                };
                stage.counts.push(StagedCount {
                    tenant: tenant.to_string(),
                    kind,
                    counting,
                    usage,
                    moves: Vec::new(),
                });
                stage.counts.len() - 1
            }
        };
        let count = &mut stage.counts[index];
        count.moves.push((op, delta));
        if let Some(usage) = count.usage
            && let Some((_, before)) = count.over(usage)
        {
            return Err(quota_exceeded(
                tenant,
                kind,
                count.counting.limit.unwrap_or_default(),
                before,
            ));
        }
        Ok(())
    }
}
