//! A [`Commit`] as one etcd transaction. Its guards are the commit's
//! preconditions; when a guard fails, the `else` branch reads back every
//! key it guarded, which tells the caller's conflict apart from a counter
//! that merely moved (then the commit is rebuilt and tried again).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use prost::Message;

use super::{EtcdStore, etcd_error, etcd_revision, not_sent, revision_of};
use crate::{ChangeEvent, Commit, CommitError, Committed, Expect, IdempotencyRecord, StoreError, Versioned};

/// How often a commit whose counters moved underneath is rebuilt (by
/// another replica: this one's commits on a counter take turns).
const MAX_ATTEMPTS: usize = 64;
/// Locks that a replica's commits on one counter take turns on.
pub(crate) const COUNTER_STRIPES: usize = 64;
/// Idempotency records share leases that end on the hour after they expire.
const LEASE_BUCKET_MS: i64 = 60 * 60 * 1000;

/// Leases of idempotency records, by the hour they end.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    by_bucket: HashMap<i64, i64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

pub(crate) fn parse_counter(raw: &[u8]) -> i64 {
    raw.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

pub(crate) fn decode_record(kv: &etcd_client::KeyValue) -> Result<IdempotencyRecord, StoreError> {
    let mut record = IdempotencyRecord::decode(kv.value()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })?;
    // Written in the commit it records: its revision is the commit's.
    record.revision = revision_of(kv.mod_revision());
    Ok(record)
}

fn guard(key: Vec<u8>, expect: Expect) -> Option<Compare> {
    match expect {
        Expect::Absent => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
        Expect::Revision(r) => Some(Compare::mod_revision(key, CompareOp::Equal, etcd_revision(r))),
        Expect::Any => None,
    }
}

/// Counter values and the `mod_revision` they were read at.
type Counters = Vec<(i64, i64)>;

impl EtcdStore {
    /// A lease that outlives a record expiring at `expires_at_ms`.
    async fn lease_for(&self, expires_at_ms: i64) -> Result<i64, StoreError> {
        let bucket = expires_at_ms / LEASE_BUCKET_MS + 1;
        if let Some(id) = self.leases_lock().by_bucket.get(&bucket) {
            return Ok(*id);
        }
        let ttl_ms = (bucket * LEASE_BUCKET_MS).saturating_sub(now_ms()).max(1000);
        let granted = self
            .client()
            .1
            .lease_client()
            .grant(ttl_ms / 1000 + 1, None)
            .await
            .map_err(etcd_error)?;
        let mut leases = self.leases_lock();
        leases.by_bucket.retain(|b, _| *b >= bucket - 48);
        Ok(*leases.by_bucket.entry(bucket).or_insert(granted.id()))
    }

    fn leases_lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn read_counters(&self, c: &Commit) -> Result<Counters, StoreError> {
        let mut out = Vec::with_capacity(c.counters.len());
        for counter in &c.counters {
            let kv = self.get_one(self.keys.counter(&counter.key), None).await?;
            out.push(kv.map_or((0, 0), |kv| (parse_counter(kv.value()), kv.mod_revision())));
        }
        Ok(out)
    }

    fn build(&self, c: &Commit, counters: &Counters, lease: Option<i64>) -> Txn {
        let keys = &self.keys;
        let claimed_free = || c.claims.iter().filter(|claim| !c.releases.contains(&claim.key));
        let mut when = Vec::new();
        let mut then = Vec::new();
        let mut otherwise = Vec::new();
        for w in &c.writes {
            when.extend(guard(keys.object(&w.key), w.expect));
            otherwise.push(TxnOp::get(keys.object(&w.key), None));
            match &w.value {
                Some(value) => then.push(TxnOp::put(keys.object(&w.key), value.clone(), None)),
                None => then.push(TxnOp::delete(keys.object(&w.key), None)),
            }
            let record = ChangeEvent {
                revision: 0,
                key: w.key.clone(),
                before: None,
                after: w.value.clone(),
                principal: c.change.principal.clone(),
                request_id: c.change.request_id.clone(),
                time_unix_ms: c.change.time_unix_ms,
                operation: w.operation.clone(),
            };
            then.push(TxnOp::put(keys.history(&w.key), record.encode_to_vec(), None));
        }
        for r in &c.reads {
            when.extend(guard(keys.object(&r.key), r.expect));
            otherwise.push(TxnOp::get(keys.object(&r.key), None));
        }
        for claim in claimed_free() {
            when.push(Compare::create_revision(
                keys.unique(&claim.key),
                CompareOp::Equal,
                0,
            ));
            otherwise.push(TxnOp::get(keys.unique(&claim.key), None));
        }
        for key in c
            .releases
            .iter()
            .filter(|k| !c.claims.iter().any(|claim| &claim.key == *k))
        {
            then.push(TxnOp::delete(keys.unique(key), None));
        }
        for claim in &c.claims {
            then.push(TxnOp::put(keys.unique(&claim.key), claim.owner.clone(), None));
        }
        for (counter, (value, seen)) in c.counters.iter().zip(counters) {
            when.push(Compare::mod_revision(
                keys.counter(&counter.key),
                CompareOp::Equal,
                *seen,
            ));
            let next = value.saturating_add(counter.delta);
            then.push(TxnOp::put(
                keys.counter(&counter.key),
                next.to_be_bytes().to_vec(),
                None,
            ));
        }
        if let Some(mark) = &c.idempotency {
            when.push(Compare::create_revision(
                keys.request(&mark.key),
                CompareOp::Equal,
                0,
            ));
            otherwise.push(TxnOp::get(keys.request(&mark.key), None));
            let record = IdempotencyRecord {
                fingerprint: mark.fingerprint.clone(),
                revision: 0,
                value: mark.outcome.clone(),
                expires_at_ms: mark.expires_at_ms,
            };
            let options = lease.map(|id| PutOptions::new().with_lease(id));
            then.push(TxnOp::put(
                keys.request(&mark.key),
                record.encode_to_vec(),
                options,
            ));
        }
        Txn::new().when(when).and_then(then).or_else(otherwise)
    }

    /// Why the guards failed: the caller's conflict, or `None` when only a
    /// counter moved or an expired record was in the way (try again).
    async fn diagnose(&self, c: &Commit, response: &TxnResponse) -> Result<Option<CommitError>, StoreError> {
        let mut reads = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let objects: Vec<_> = c
            .writes
            .iter()
            .map(|w| (&w.key, w.expect))
            .chain(c.reads.iter().map(|r| (&r.key, r.expect)))
            .map(|(key, expect)| (key, expect, reads.next().flatten()))
            .collect();
        let claims: Vec<_> = c
            .claims
            .iter()
            .filter(|claim| !c.releases.contains(&claim.key))
            .map(|claim| (&claim.key, reads.next().flatten()))
            .collect();
        if let (Some(mark), Some(Some(kv))) = (&c.idempotency, reads.next()) {
            let record = decode_record(&kv)?;
            if record.expires_at_ms > now_ms() {
                return Ok(Some(CommitError::Recorded(record)));
            }
            // Expired, its lease not yet ended: clear it out of the way.
            let clear = Txn::new()
                .when([Compare::mod_revision(
                    kv.key().to_vec(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::delete(self.keys.request(&mark.key), None)]);
            self.kv().txn(clear).await.map_err(etcd_error)?;
            return Ok(None);
        }
        for (key, expect, kv) in objects {
            let current = kv.map(|kv| Versioned {
                revision: revision_of(kv.mod_revision()),
                value: kv.value().to_vec(),
            });
            let matches = match (expect, &current) {
                (Expect::Absent, None) => true,
                (Expect::Revision(want), Some(have)) => have.revision == want,
                (Expect::Any, _) => true,
                _ => false,
            };
            if !matches {
                return Ok(Some(CommitError::Conflict {
                    key: key.clone(),
                    current,
                }));
            }
        }
        for (key, kv) in claims {
            if let Some(kv) = kv {
                return Ok(Some(CommitError::Taken {
                    key: key.clone(),
                    owner: kv.value().to_vec(),
                }));
            }
        }
        Ok(None)
    }
}

/// Applies `c` in one etcd transaction.
pub(crate) async fn run(store: &EtcdStore, c: Commit) -> Result<Committed, CommitError> {
    c.check_shape()?;
    let mut stripes: Vec<usize> = c
        .counters
        .iter()
        .map(|counter| {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&counter.key, &mut hasher);
            usize::try_from(std::hash::Hasher::finish(&hasher) % COUNTER_STRIPES as u64).unwrap_or_default()
        })
        .collect();
    // In one order, so that two commits never wait for each other.
    stripes.sort_unstable();
    stripes.dedup();
    let mut turns = Vec::with_capacity(stripes.len());
    for stripe in stripes {
        turns.push(store.counter_stripes[stripe].lock().await);
    }
    for _ in 0..MAX_ATTEMPTS {
        let counters = store.read_counters(&c).await?;
        for (counter, (value, _)) in c.counters.iter().zip(&counters) {
            if let (Some(max), true) = (counter.max, counter.delta > 0)
                && value.saturating_add(counter.delta) > max
            {
                return Err(CommitError::Limit {
                    key: counter.key.clone(),
                    value: *value,
                    max,
                });
            }
        }
        let lease = match &c.idempotency {
            Some(mark) => Some(store.lease_for(mark.expires_at_ms).await?),
            None => None,
        };
        let txn = store.build(&c, &counters, lease);
        let sent = store
            .again(
                |mut kv| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                },
                not_sent,
            )
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.to_string().contains("lease not found") => {
                store.leases_lock().by_bucket.clear();
                continue;
            }
            Err(e) => return Err(etcd_error(e).into()),
        };
        if response.succeeded() {
            let revision = response.header().map_or(0, |h| revision_of(h.revision()));
            return Ok(Committed { revision });
        }
        if let Some(e) = store.diagnose(&c, &response).await? {
            return Err(e);
        }
    }
    Err(StoreError::Engine("a commit's counters kept moving; try again".into()).into())
}
