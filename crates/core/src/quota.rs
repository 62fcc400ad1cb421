//! Per-tenant quotas (ARCHITECTURE.md section 9): how many resources of a
//! collection a tenant may hold, enforced inside the commit.
//!
//! A tenant's usage of a collection is a store counter that moves in the
//! same commit as the objects, with the quota as its maximum, so that the
//! store refuses the create that would pass it however many race. Counting
//! costs a contended counter per create (on etcd, a compare on one key), so
//! it happens only where a quota applies. Whether a count is kept is the
//! marker object `_quota/{tenant}/{collection}` (no tenant id starts with
//! `_`): every commit that moves the counter reads the marker at its
//! revision, and the first create or delete after a quota appears counts
//! the collection once and writes the marker (any other commit that raced
//! it fails on the marker and runs again). Markers of quotas that are no
//! longer configured are removed at start ([`Engine::forget_unused_quotas`]),
//! so that a quota added back later counts afresh.

use arbiter_store::{CounterDelta, Expect, Read, Scan, Store, Write};
use serde::Deserialize;

use crate::engine::Engine;
use crate::error::Error;
use crate::kind::Kind;
use crate::names;
use crate::validate::check_id;

/// The key prefix of the quota markers (and counters).
const MARKERS: &str = "_quota/";

/// One `[[quotas]]` row: the most resources of `collection` a tenant holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// A tenant id, or `*` for every tenant without a row of its own.
    pub tenant: String,
    /// `vms`, `users`, `prompts` or `policies`.
    pub collection: String,
    /// The most resources of the collection the tenant may hold.
    pub max: u64,
}

/// The configured quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    rules: Vec<QuotaRule>,
}

/// The collections a quota can name.
const COLLECTIONS: [&str; 4] = ["vms", "users", "prompts", "policies"];

impl Quotas {
    /// Checks the rows: known collections, valid tenants, no row twice.
    pub fn new(rules: Vec<QuotaRule>) -> Result<Self, String> {
        for (i, rule) in rules.iter().enumerate() {
            if !COLLECTIONS.contains(&rule.collection.as_str()) {
                return Err(format!(
                    "quotas[{i}].collection {:?} is not one of {}",
                    rule.collection,
                    COLLECTIONS.join(", ")
                ));
            }
            if rule.tenant != "*" {
                check_id(&rule.tenant).map_err(|e| format!("quotas[{i}].tenant: {e}, or \"*\""))?;
            }
            if i64::try_from(rule.max).is_err() {
                return Err(format!("quotas[{i}].max is too large"));
            }
            if rules[..i]
                .iter()
                .any(|r| r.tenant == rule.tenant && r.collection == rule.collection)
            {
                return Err(format!(
                    "quotas[{i}]: tenant {:?} has a second row for {}",
                    rule.tenant, rule.collection
                ));
            }
        }
        Ok(Self { rules })
    }

    /// The quota of `tenant` on `collection`: its own row, else the `*` row.
    pub fn limit(&self, tenant: &str, collection: &str) -> Option<u64> {
        let row = |t: &str| {
            self.rules
                .iter()
                .find(|r| r.tenant == t && r.collection == collection)
                .map(|r| r.max)
        };
        row(tenant).or_else(|| row("*"))
    }

    /// Whether any quota is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The store key of a tenant's count of a collection (a marker object and
/// a counter of the same name).
fn marker(tenant: &str, collection: &str) -> Vec<u8> {
    format!("{MARKERS}{tenant}/{collection}").into_bytes()
}

/// What a commit adds to move a tenant's count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counting {
    /// The marker, read (counting) or written (the first count).
    pub(crate) read: Option<Read>,
    pub(crate) write: Option<Write>,
    /// The counter's move, bounded by the quota.
    pub(crate) counter: Option<CounterDelta>,
    /// The quota, when one applies.
    pub(crate) limit: Option<u64>,
    /// The count before the commit, when counting it found it (a first
    /// count scans the collection).
    pub(crate) held: Option<i64>,
}

impl Counting {
    /// Whether `key` is the marker of this count: a commit that failed on
    /// it raced a first count and runs again.
    pub(crate) fn is_marker(&self, key: &[u8]) -> bool {
        self.read.as_ref().is_some_and(|r| r.key == key) || self.write.as_ref().is_some_and(|w| w.key == key)
    }

    /// Adds the count's parts to a commit.
    pub(crate) fn apply(&self, commit: &mut arbiter_store::Commit) {
        commit.reads.extend(self.read.clone());
        commit.writes.extend(self.write.clone());
        commit.counters.extend(self.counter.clone());
    }
}

impl<S: Store> Engine<S> {
    /// How a commit that adds `delta` (+1 create, -1 delete) resources of
    /// `kind` to `tenant` moves its count; nothing without a quota.
    pub(crate) async fn counting(&self, tenant: &str, kind: &Kind, delta: i64) -> Result<Counting, Error> {
        let Some(limit) = self.config.quotas.limit(tenant, kind.collection) else {
            return Ok(Counting::default());
        };
        let key = marker(tenant, kind.collection);
        let max = i64::try_from(limit).unwrap_or(i64::MAX);
        let stored = self
            .store
            .get(&key)
            .await
            .map_err(|e| Error::storage("reading a quota count", e))?;
        if let Some(stored) = stored {
            return Ok(Counting {
                read: Some(Read {
                    key: key.clone(),
                    expect: Expect::Revision(stored.revision),
                }),
                write: None,
                counter: Some(CounterDelta {
                    key,
                    delta,
                    max: Some(max),
                }),
                limit: Some(limit),
                held: None,
            });
        }
        // The first count: while the marker is absent nothing moves the
        // counter, so its value (left from an earlier quota) is stable.
        let held = self.count(tenant, kind).await?;
        let left = self
            .store
            .counter(&key)
            .await
            .map_err(|e| Error::storage("reading a quota count", e))?;
        let usage = held.saturating_add(delta).max(0);
        if delta > 0 && usage > max {
            return Err(quota_exceeded(tenant, kind, limit, held));
        }
        Ok(Counting {
            read: None,
            write: Some(Write {
                key: key.clone(),
                expect: Expect::Absent,
                value: Some(b"counted".to_vec()),
                operation: "count".into(),
            }),
            counter: Some(CounterDelta {
                key,
                delta: usage - left,
                max: Some(max),
            }),
            limit: Some(limit),
            held: Some(held),
        })
    }

    /// The tenant's usage of `kind` now, for a check without a commit.
    pub(crate) async fn usage(&self, tenant: &str, kind: &Kind) -> Result<i64, Error> {
        let key = marker(tenant, kind.collection);
        let counted = self
            .store
            .get(&key)
            .await
            .map_err(|e| Error::storage("reading a quota count", e))?;
        if counted.is_none() {
            return self.count(tenant, kind).await;
        }
        self.store
            .counter(&key)
            .await
            .map_err(|e| Error::storage("reading a quota count", e))
    }

    /// Counts the tenant's stored resources of `kind`.
    async fn count(&self, tenant: &str, kind: &Kind) -> Result<i64, Error> {
        let mut held = 0i64;
        self.store
            .scan(&names::collection_prefix(tenant, kind), None, &mut |_, _| {
                held += 1;
                Scan::Continue
            })
            .await
            .map_err(|e| Error::storage("counting resources for a quota", e))?;
        Ok(held)
    }

    /// Removes the counts of quotas no longer configured, so that a quota
    /// configured again later counts afresh. Run at start; replicas must
    /// share one quota configuration. Returns how many were removed.
    pub async fn forget_unused_quotas(&self) -> Result<usize, Error> {
        let mut unused = Vec::new();
        self.store
            .scan(MARKERS.as_bytes(), None, &mut |key, stored| {
                let text = String::from_utf8_lossy(key);
                let configured = text
                    .strip_prefix(MARKERS)
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(tenant, collection)| {
                        self.config.quotas.limit(tenant, collection).is_some()
                    });
                if !configured {
                    unused.push((key.to_vec(), stored.revision));
                }
                Scan::Continue
            })
            .await
            .map_err(|e| Error::storage("reading quota counts", e))?;
        let mut removed = 0;
        for (key, revision) in unused {
            let write = Write {
                key,
                expect: Expect::Revision(revision),
                value: None,
                operation: "uncount".into(),
            };
            // A marker that moved meanwhile is in use again: keep it.
            match self
                .store
                .commit(arbiter_store::Commit::of(write, Default::default()))
                .await
            {
                Ok(_) => removed += 1,
                Err(arbiter_store::CommitError::Conflict { .. }) => {}
                Err(e) => return Err(Error::storage("removing a quota count", e)),
            }
        }
        Ok(removed)
    }
}

/// `QUOTA_EXCEEDED` for a create in `tenant` that holds `usage` of `limit`.
pub(crate) fn quota_exceeded(tenant: &str, kind: &Kind, limit: u64, usage: i64) -> Error {
    Error::QuotaExceeded {
        tenant: tenant.to_string(),
        collection: kind.collection,
        limit,
        usage: u64::try_from(usage).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(tenant: &str, collection: &str, max: u64) -> QuotaRule {
        QuotaRule {
            tenant: tenant.into(),
            collection: collection.into(),
            max,
        }
    }

    #[test]
    fn the_most_specific_row_wins() {
        let q = Quotas::new(vec![rule("*", "vms", 10), rule("acme", "vms", 3)]).unwrap_or_default();
        assert_eq!(q.limit("acme", "vms"), Some(3));
        assert_eq!(q.limit("other", "vms"), Some(10));
        assert_eq!(q.limit("acme", "users"), None);
    }

    #[test]
    fn bad_rows_are_refused_with_their_index() {
        let e = Quotas::new(vec![rule("*", "vm", 1)]).unwrap_err();
        assert!(e.contains("quotas[0].collection"), "{e}");
        let e = Quotas::new(vec![rule("Acme!", "vms", 1)]).unwrap_err();
        assert!(e.contains("quotas[0].tenant"), "{e}");
        let e = Quotas::new(vec![rule("*", "vms", 1), rule("*", "vms", 2)]).unwrap_err();
        assert!(e.contains("quotas[1]"), "{e}");
    }
}
