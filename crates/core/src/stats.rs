//! Statistics of refused requests (the 4xx class) and of policy
//! evaluations: counted in memory per minute, hour and day, written to the
//! store every few seconds, kept 30 days, and read back by
//! `GetConflictStats` and `GetPolicyStats`.
//!
//! Each replica writes only its own records (`{grain}/{tenant}/{period
//! start, Unix s}/{replica}`, overwritten with the period's running
//! totals), so that replicas never contend and a reader adds them up. A
//! restart starts a new replica id: what the old process wrote stays and
//! adds up too. What was counted but not yet written is lost with a
//! `kill -9` (at most one flush interval); a graceful stop flushes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use arbiter_api::v1::{
    ConflictEvent, ConflictSeries, ConflictStats, GetConflictStatsRequest, GetPolicyStatsRequest,
    HotResource, PolicyEvaluationCounts, PolicyEvaluationStats,
};
use arbiter_store::Store;
use prost::Message;
use prost_types::Timestamp;

use crate::access::Access;
use crate::auth::Caller;
use crate::engine::Engine;
use crate::error::Error;
use crate::names::{collection_of, tenant_of};
use crate::policy::Outcome;
use crate::validate::check_id;

/// How long statistics are kept.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Most buckets one request may ask for.
pub const MAX_BUCKETS: i64 = 1440;
/// Most series in an answer.
pub const MAX_SERIES: usize = 500;
/// Most hot resources or latest refusals one request may ask for.
pub const MAX_LISTED: i32 = 100;
/// Most stored records one request reads; past it the answer is
/// `truncated`.
pub const MAX_RECORDS: usize = 20_000;
/// Resources counted per tenant and period in memory; refusals of further
/// resources are still counted in the series.
const MAX_RESOURCES: usize = 1000;
/// Resources and latest refusals kept per stored record.
const KEPT_RESOURCES: usize = 50;
const KEPT_RECENT: usize = 20;
/// Periods (tenant, minute/hour/day) counted at once in memory; what
/// would need more is dropped (and counted in
/// `arbiter_conflict_stats_dropped_total`).
const MAX_PERIODS: usize = 30_000;
/// Most tenants one `tenants/-` request adds up; past it the answer is
/// `truncated`.
const MAX_TENANTS_LISTED: usize = 1000;

/// The widths of the periods counted: minute, hour, day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    fn seconds(self) -> i64 {
        match self {
            Grain::Minute => 60,
            Grain::Hour => 3600,
            Grain::Day => 86_400,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Grain::Minute => "m",
            Grain::Hour => "h",
            Grain::Day => "d",
        }
    }

    fn of_seconds(seconds: i64) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.seconds() == seconds)
    }
}

/// One refused request, as the server saw it.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    /// The tenant the request named.
    pub tenant: &'a str,
    /// Its collection ("vms", ...), or "" when it named none.
    pub collection: &'a str,
    /// The RPC method, e.g. "UpdateVirtualMachine".
    pub method: &'a str,
    /// The resource the request named.
    pub resource: &'a str,
    /// The `ErrorInfo` reason.
    pub reason: &'a str,
    /// The gRPC code's name, e.g. "ABORTED".
    pub code: &'a str,
}

/// A stored record: one replica's counts of one tenant in one period.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(message, repeated, tag = "1")]
    counts: Vec<CountRecord>,
    #[prost(message, repeated, tag = "2")]
    resources: Vec<ResourceRecord>,
    #[prost(message, repeated, tag = "3")]
    recent: Vec<EventRecord>,
    #[prost(message, repeated, tag = "4")]
    policies: Vec<PolicyRecord>,
}

/// One policy's evaluations in a period.
#[derive(Clone, PartialEq, prost::Message)]
struct PolicyRecord {
    #[prost(string, tag = "1")]
    name: String,
    /// Per outcome ("allow", "deny", ... as the metrics name them).
    #[prost(message, repeated, tag = "2")]
    outcomes: Vec<OutcomeRecord>,
    /// Evaluations per latency bucket of [`LATENCY_BUCKETS_US`], the last
    /// one for longer.
    #[prost(int64, repeated, tag = "3")]
    latency: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OutcomeRecord {
    #[prost(string, tag = "1")]
    outcome: String,
    #[prost(int64, tag = "2")]
    count: i64,
}

/// Upper bounds of the latency buckets of policy evaluations, in µs.
const LATENCY_BUCKETS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];
/// Policies counted per tenant and period.
const MAX_POLICIES: usize = 1000;

/// One policy's evaluations in a period, in memory.
#[derive(Debug, Default)]
struct PolicyTally {
    outcomes: HashMap<&'static str, i64>,
    latency: [i64; LATENCY_BUCKETS_US.len() + 1],
}

impl PolicyTally {
    fn add(&mut self, outcome: &'static str, took: Duration) {
        *self.outcomes.entry(outcome).or_default() += 1;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[bucket] += 1;
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountRecord {
    #[prost(string, tag = "1")]
    collection: String,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(string, tag = "3")]
    reason: String,
    #[prost(string, tag = "4")]
    code: String,
    #[prost(int64, tag = "5")]
    count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceRecord {
    #[prost(string, tag = "1")]
    name: String,
    /// Per (reason, code).
    #[prost(message, repeated, tag = "2")]
    reasons: Vec<CountRecord>,
    #[prost(int64, tag = "3")]
    last_unix_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventRecord {
    #[prost(int64, tag = "1")]
    unix_ms: i64,
    #[prost(string, tag = "2")]
    principal: String,
    #[prost(string, tag = "3")]
    method: String,
    #[prost(string, tag = "4")]
    resource: String,
    #[prost(string, tag = "5")]
    reason: String,
    #[prost(string, tag = "6")]
    code: String,
    #[prost(string, tag = "7")]
    collection: String,
}

/// (collection, method, reason, code)
type SeriesKey = (String, String, String, String);

/// A resource's refusals: (reason, code) → count, and the last one's time
/// in Unix ms.
type ResourceTally = (HashMap<(String, String), i64>, i64);

/// The running totals of one tenant in one period, in memory.
#[derive(Debug, Default)]
struct Totals {
    counts: HashMap<SeriesKey, i64>,
    /// name → ((reason, code) → count, last ms)
    resources: HashMap<String, ResourceTally>,
    recent: VecDeque<EventRecord>,
    policies: HashMap<String, PolicyTally>,
    /// Changed since the last flush.
    dirty: bool,
}

impl Totals {
    fn add(&mut self, r: &Refusal<'_>, principal: &str, unix_ms: i64) {
        *self
            .counts
            .entry((
                r.collection.into(),
                r.method.into(),
                r.reason.into(),
                r.code.into(),
            ))
            .or_default() += 1;
        if !r.resource.is_empty()
            && (self.resources.len() < MAX_RESOURCES || self.resources.contains_key(r.resource))
        {
            let (reasons, last) = self.resources.entry(r.resource.to_string()).or_default();
            *reasons.entry((r.reason.into(), r.code.into())).or_default() += 1;
            *last = unix_ms;
        }
        if self.recent.len() == KEPT_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(EventRecord {
            unix_ms,
            principal: principal.into(),
            method: r.method.into(),
            resource: r.resource.into(),
            reason: r.reason.into(),
            code: r.code.into(),
            collection: r.collection.into(),
        });
    }

    fn record(&self) -> Record {
        let counts = self
            .counts
            .iter()
            .map(|((collection, method, reason, code), count)| CountRecord {
                collection: collection.clone(),
                method: method.clone(),
                reason: reason.clone(),
                code: code.clone(),
                count: *count,
            })
            .collect();
        let mut resources: Vec<ResourceRecord> = self
            .resources
            .iter()
            .map(|(name, (reasons, last))| ResourceRecord {
                name: name.clone(),
                reasons: reasons
                    .iter()
                    .map(|((reason, code), count)| CountRecord {
                        reason: reason.clone(),
                        code: code.clone(),
                        count: *count,
                        ..CountRecord::default()
                    })
                    .collect(),
                last_unix_ms: *last,
            })
            .collect();
        let total = |r: &ResourceRecord| r.reasons.iter().map(|c| c.count).sum::<i64>();
        resources.sort_by(|a, b| total(b).cmp(&total(a)).then_with(|| a.name.cmp(&b.name)));
        resources.truncate(KEPT_RESOURCES);
        let policies = self
            .policies
            .iter()
            .map(|(name, tally)| PolicyRecord {
                name: name.clone(),
                outcomes: tally
                    .outcomes
                    .iter()
                    .map(|(outcome, count)| OutcomeRecord {
                        outcome: (*outcome).to_string(),
                        count: *count,
                    })
                    .collect(),
                latency: tally.latency.to_vec(),
            })
            .collect();
        Record {
            counts,
            resources,
            recent: self.recent.iter().cloned().collect(),
            policies,
        }
    }
}

/// (grain, period start in Unix seconds)
type Period = (Grain, i64);

/// What this replica counted and has not forgotten: by tenant, so that
/// counting (on every refusal and evaluation) looks a tenant up without
/// allocating.
#[derive(Debug, Default)]
struct Pending {
    tenants: HashMap<String, HashMap<Period, Totals>>,
    /// Periods in all tenants.
    count: usize,
}

impl Pending {
    /// Every (tenant, period, totals).
    fn periods(&self) -> impl Iterator<Item = (&str, Period, &Totals)> {
        self.tenants
            .iter()
            .flat_map(|(tenant, periods)| periods.iter().map(move |(p, t)| (tenant.as_str(), *p, t)))
    }
}

/// Counts refusals and keeps them in the store.
#[derive(Debug)]
pub struct ConflictCounter {
    replica: String,
    pending: Mutex<Pending>,
}

impl Default for ConflictCounter {
    fn default() -> Self {
        Self::new()
    }
}

fn now_unix_ms() -> i64 {
    crate::engine::now().0
}

fn key(grain: Grain, tenant: &str, start: i64, replica: &str) -> Vec<u8> {
    format!("{}/{tenant}/{start:012}/{replica}", grain.tag()).into_bytes()
}

/// The first key after every key of `tenant` in `grain`.
fn tenant_end(grain: Grain, tenant: &str) -> Vec<u8> {
    // '0' follows '/'.
    format!("{}/{tenant}0", grain.tag()).into_bytes()
}

/// The first key of `grain`'s records.
fn grain_start(grain: Grain) -> Vec<u8> {
    format!("{}/", grain.tag()).into_bytes()
}

/// The first tenant with records in `grain` from key `from` on: one store
/// read, which jumps over every record of the tenants before.
async fn next_tenant<S: Store>(store: &S, grain: Grain, from: &[u8]) -> Result<Option<String>, Error> {
    // '0' follows '/': the first key after every key of the grain.
    let end = format!("{}0", grain.tag()).into_bytes();
    let first = store
        .scan_stats(from, &end, 1)
        .await
        .map_err(|e| Error::storage("reading statistics", e))?;
    Ok(first
        .first()
        .and_then(|(k, _)| parse_key(k))
        .map(|(tenant, _, _)| tenant))
}

/// Splits a record key into (tenant, period start, replica).
fn parse_key(key: &[u8]) -> Option<(String, i64, String)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.splitn(4, '/');
    let (_grain, tenant, start, replica) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((tenant.to_string(), start.parse().ok()?, replica.to_string()))
}

impl ConflictCounter {
    /// A counter with a fresh replica id.
    pub fn new() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Unique per process start: the time and a random part.
        let replica = format!("{:x}{:08x}", since.as_secs(), rand_u32());
        Self {
            replica,
            pending: Mutex::new(Pending::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a refusal of `caller`'s request. Only refusals in a tenant
    /// the caller belongs to are counted, so that no caller can make
    /// statistics (and keys) for tenants of others.
    pub fn count(&self, caller: &Caller, refusal: &Refusal<'_>) {
        if refusal.tenant.is_empty() || (caller.tenant != "*" && caller.tenant != refusal.tenant) {
            return;
        }
        let now = now_unix_ms();
        self.tally(refusal.tenant, now, |totals| {
            totals.add(refusal, &caller.principal, now)
        });
    }

    /// Counts an evaluation of `policy` (its full name) that ended with
    /// `outcome` after `took`.
    pub fn evaluated(&self, policy: &str, outcome: &'static str, took: Duration) {
        self.tally(tenant_of(policy), now_unix_ms(), |totals| {
            if let Some(tally) = totals.policies.get_mut(policy) {
                tally.add(outcome, took);
            } else if totals.policies.len() < MAX_POLICIES {
                let mut tally = PolicyTally::default();
                tally.add(outcome, took);
                totals.policies.insert(policy.to_string(), tally);
            }
        });
    }

    /// Applies `add` to the totals of `tenant` in the minute, hour and day
    /// of `now_ms`, within the bound of periods in memory.
    fn tally(&self, tenant: &str, now_ms: i64, add: impl Fn(&mut Totals)) {
        if check_id(tenant).is_err() {
            return;
        }
        let mut pending = self.lock();
        let Pending { tenants, count } = &mut *pending;
        let periods = match tenants.get_mut(tenant) {
            Some(periods) => periods,
            None => tenants.entry(tenant.to_string()).or_default(),
        };
        for grain in Grain::ALL {
            let start = (now_ms / 1000).div_euclid(grain.seconds()) * grain.seconds();
            let totals = match periods.get_mut(&(grain, start)) {
                Some(totals) => totals,
                None if *count >= MAX_PERIODS => {
                    metrics::counter!("arbiter_conflict_stats_dropped_total").increment(1);
                    continue;
                }
                None => {
                    *count += 1;
                    periods.entry((grain, start)).or_default()
                }
            };
            add(totals);
            totals.dirty = true;
        }
    }

    /// Writes every period counted since the last flush, and forgets
    /// periods that ended and are written.
    async fn flush<S: Store>(&self, store: &S) -> Result<(), Error> {
        self.flush_with(|records| store.put_stats(records)).await
    }

    /// [`Self::flush`], writing through `write`. What `write` was given
    /// stays to be written at the next flush until `write` has succeeded,
    /// also when this future is dropped mid-write (at shutdown, the task
    /// that flushes now and then is aborted wherever it is).
    async fn flush_with<W, F>(&self, write: W) -> Result<(), Error>
    where
        W: FnOnce(arbiter_store::StatsRecords) -> F,
        F: Future<Output = Result<(), arbiter_store::StoreError>>,
    {
        let (records, written) = {
            let mut pending = self.lock();
            let mut records = Vec::new();
            let mut written = Vec::new();
            for (tenant, periods) in &mut pending.tenants {
                for ((grain, start), totals) in periods.iter_mut().filter(|(_, t)| t.dirty) {
                    totals.dirty = false;
                    records.push((
                        key(*grain, tenant, *start, &self.replica),
                        totals.record().encode_to_vec(),
                    ));
                    written.push((tenant.clone(), (*grain, *start)));
                }
            }
            (records, written)
        };
        if !records.is_empty() {
            let mut unwritten = Unwritten {
                counter: self,
                periods: written,
            };
            write(records)
                .await
                .map_err(|e| Error::storage("writing conflict statistics", e))?;
            unwritten.periods.clear();
        }
        let now_s = now_unix_ms() / 1000;
        let mut pending = self.lock();
        let Pending { tenants, count } = &mut *pending;
        // A period is kept one more of its widths after it ends, for
        // refusals counted late.
        for periods in tenants.values_mut() {
            periods.retain(|(grain, start), totals| {
                let keep = totals.dirty || start + 2 * grain.seconds() > now_s;
                *count -= usize::from(!keep);
                keep
            });
        }
        tenants.retain(|_, periods| !periods.is_empty());
        Ok(())
    }

    /// Deletes statistics older than [`RETENTION`].
    async fn prune<S: Store>(&self, store: &S) -> Result<(), Error> {
        let cutoff = (now_unix_ms() / 1000).saturating_sub(RETENTION.as_secs() as i64);
        for grain in Grain::ALL {
            let mut from = grain_start(grain);
            while let Some(tenant) = next_tenant(store, grain, &from).await? {
                let old_from = format!("{}/{tenant}/", grain.tag()).into_bytes();
                let old_to = key(grain, &tenant, cutoff, "");
                store
                    .delete_stats(&old_from, &old_to)
                    .await
                    .map_err(|e| Error::storage("deleting old conflict statistics", e))?;
                from = tenant_end(grain, &tenant);
            }
        }
        Ok(())
    }
}

/// A random number from the standard library's hasher seed.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish() as u32
}

/// The tenant(s) and time a stats request covers, checked and aligned to
/// its buckets.
#[derive(Debug)]
struct Span {
    grain: Grain,
    start: i64,
    end: i64,
    /// `None`: every tenant.
    tenant: Option<String>,
}

/// What a `GetConflictStats` request asks for, checked.
struct Window {
    span: Span,
    collection: String,
    reason: String,
    codes: HashSet<String>,
    max_hot: usize,
    max_recent: usize,
}

fn timestamp(unix_s: i64) -> Timestamp {
    Timestamp {
        seconds: unix_s,
        nanos: 0,
    }
}

fn timestamp_ms(unix_ms: i64) -> Timestamp {
    Timestamp {
        seconds: unix_ms.div_euclid(1000),
        nanos: i32::try_from(unix_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn listed(field: &str, value: i32, default: i32) -> Result<usize, Error> {
    match value {
        0 => Ok(default as usize),
        1..=MAX_LISTED => Ok(value as usize),
        _ => Err(Error::field(
            field,
            format!("{value} is out of range; ask for 1 to {MAX_LISTED} (0: {default})"),
        )),
    }
}

impl Span {
    /// Checks `parent` (`tenants/{t}` or `tenants/-`) against the caller,
    /// and the window and bucket.
    fn of(
        caller: &Caller,
        parent: &str,
        (start_time, end_time): (Option<&Timestamp>, Option<&Timestamp>),
        bucket: Option<&prost_types::Duration>,
        now_s: i64,
    ) -> Result<Span, Error> {
        let tenant = if parent == "tenants/-" {
            if caller.tenant != "*" {
                return Err(Error::TenantForbidden {
                    principal: caller.principal.clone(),
                    tenant: "-".into(),
                });
            }
            caller.authorize("-", Access::Read)?;
            None
        } else {
            let tenant = crate::names::parse_parent("parent", parent)?;
            caller.authorize(&tenant, Access::Read)?;
            Some(tenant)
        };
        // Bounded first, so that the arithmetic below cannot overflow.
        let bounded = |field: &str, ts: &Timestamp| {
            if (0..=now_s + 86_400).contains(&ts.seconds) {
                Ok(ts.seconds)
            } else {
                Err(Error::field(
                    field,
                    format!("{} is not between 1970 and now", ts.seconds),
                ))
            }
        };
        let end = match end_time {
            Some(ts) => bounded("end_time", ts)?,
            // The end is exclusive: one second on, so that the second
            // under way is in the window even when it starts a bucket.
            None => now_s + 1,
        };
        let start = match start_time {
            Some(ts) => bounded("start_time", ts)?,
            None => end - 3600,
        };
        if start >= end {
            return Err(Error::field(
                "start_time",
                "must be before end_time; leave it out for the hour before end_time",
            ));
        }
        let oldest = now_s - RETENTION.as_secs() as i64;
        if end - start > RETENTION.as_secs() as i64 + 86_400 || end <= oldest {
            return Err(Error::field(
                "start_time",
                "statistics are kept 30 days; ask for a window within the last 30 days",
            ));
        }
        let start = start.max(oldest - 86_400);
        let grain = match bucket {
            Some(bucket) => Grain::of_seconds(bucket.seconds)
                .filter(|_| bucket.nanos == 0)
                .ok_or_else(|| Error::field("bucket", "must be 60s, 3600s or 86400s"))?,
            None => Grain::ALL
                .into_iter()
                .find(|g| buckets(*g, start, end) <= MAX_BUCKETS)
                .unwrap_or(Grain::Day),
        };
        if buckets(grain, start, end) > MAX_BUCKETS {
            return Err(Error::field(
                "bucket",
                format!(
                    "{} buckets of {}s would cover the window; ask for at most {MAX_BUCKETS}: a wider bucket or a shorter window",
                    buckets(grain, start, end),
                    grain.seconds()
                ),
            ));
        }
        let width = grain.seconds();
        Ok(Span {
            grain,
            start: start.div_euclid(width) * width,
            end: (end + width - 1).div_euclid(width) * width,
            tenant,
        })
    }

    fn bucket_count(&self) -> usize {
        usize::try_from((self.end - self.start) / self.grain.seconds()).unwrap_or(0)
    }
}

impl Window {
    fn of(caller: &Caller, req: &GetConflictStatsRequest, now_s: i64) -> Result<Window, Error> {
        let times = (req.start_time.as_ref(), req.end_time.as_ref());
        Ok(Window {
            span: Span::of(caller, &req.parent, times, req.bucket.as_ref(), now_s)?,
            collection: req.collection.clone(),
            reason: req.reason.clone(),
            codes: req.codes.iter().cloned().collect(),
            max_hot: listed("max_hot_resources", req.max_hot_resources, 10)?,
            max_recent: listed("max_recent", req.max_recent, 20)?,
        })
    }

    fn admits(&self, collection: &str, reason: &str, code: &str) -> bool {
        (self.collection.is_empty() || self.collection == collection)
            && (self.reason.is_empty() || self.reason == reason)
            && (self.codes.is_empty() || self.codes.contains(code))
    }
}

fn buckets(grain: Grain, start: i64, end: i64) -> i64 {
    let width = grain.seconds();
    (end + width - 1).div_euclid(width) - start.div_euclid(width)
}

impl<S: Store> Engine<S> {
    /// The statistics of refused requests over a window
    /// (`GetConflictStats`).
    pub async fn conflict_stats(
        &self,
        caller: &Caller,
        req: GetConflictStatsRequest,
    ) -> Result<ConflictStats, Error> {
        let window = Window::of(caller, &req, now_unix_ms() / 1000)?;
        let (records, truncated) = self.stats_records(&window.span).await?;
        Ok(answer(&window, records, truncated))
    }

    /// The evaluations of a tenant's policies over a window
    /// (`GetPolicyStats`).
    pub async fn policy_evaluation_stats(
        &self,
        caller: &Caller,
        req: GetPolicyStatsRequest,
    ) -> Result<PolicyEvaluationStats, Error> {
        let times = (req.start_time.as_ref(), req.end_time.as_ref());
        let span = Span::of(caller, &req.parent, times, None, now_unix_ms() / 1000)?;
        let (records, truncated) = self.stats_records(&span).await?;
        Ok(policy_answer(&span, records, truncated))
    }

    /// Every record of the span: (tenant, period start, replica) → record,
    /// this replica's unwritten totals in place of what it wrote; and
    /// whether a bound cut the reading short.
    async fn stats_records(&self, span: &Span) -> Result<(Records, bool), Error> {
        let mut records = Records::new();
        let mut truncated = false;
        let tenants = match &span.tenant {
            Some(tenant) => vec![tenant.clone()],
            None => {
                let (tenants, more) = self.stats_tenants(span.grain).await?;
                truncated |= more;
                tenants
            }
        };
        for tenant in &tenants {
            let left = MAX_RECORDS.saturating_sub(records.len());
            if left == 0 {
                truncated = true;
                break;
            }
            let from = key(span.grain, tenant, span.start, "");
            let to = key(span.grain, tenant, span.end, "");
            let found = self
                .store
                .scan_stats(&from, &to, left)
                .await
                .map_err(|e| Error::storage("reading statistics", e))?;
            truncated |= found.len() == left;
            for (k, v) in found {
                let Some(id) = parse_key(&k) else { continue };
                match Record::decode(v.as_slice()) {
                    Ok(record) => {
                        records.insert(id, record);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, key = %String::from_utf8_lossy(&k), "a statistics record does not decode")
                    }
                }
            }
        }
        let counter = &self.conflicts;
        let pending = counter.lock();
        for (tenant, (grain, start), totals) in pending.periods() {
            let wanted = span.tenant.as_ref().is_none_or(|t| t == tenant);
            if grain == span.grain && wanted && (span.start..span.end).contains(&start) {
                records.insert(
                    (tenant.to_string(), start, counter.replica.clone()),
                    totals.record(),
                );
            }
        }
        Ok((records, truncated))
    }

    /// The tenants with statistics in `grain`, at most
    /// [`MAX_TENANTS_LISTED`] (one store read each), and whether there are
    /// more.
    async fn stats_tenants(&self, grain: Grain) -> Result<(Vec<String>, bool), Error> {
        let mut tenants = Vec::new();
        let mut from = grain_start(grain);
        while let Some(tenant) = next_tenant(&*self.store, grain, &from).await? {
            if tenants.len() == MAX_TENANTS_LISTED {
                return Ok((tenants, true));
            }
            from = tenant_end(grain, &tenant);
            tenants.push(tenant);
        }
        let mut seen: HashSet<String> = tenants.iter().cloned().collect();
        for (tenant, (g, _), _) in self.conflicts.lock().periods() {
            if g == grain && seen.insert(tenant.to_string()) {
                tenants.push(tenant.to_string());
            }
        }
        Ok((tenants, false))
    }

    /// Writes what was counted since the last flush.
    pub async fn flush_conflict_stats(&self) -> Result<(), Error> {
        self.conflicts.flush(&*self.store).await
    }

    /// Deletes statistics past their retention.
    pub async fn prune_conflict_stats(&self) -> Result<(), Error> {
        self.conflicts.prune(&*self.store).await
    }
}

impl<S> Engine<S> {
    /// The counter of refused requests.
    pub fn conflict_counter(&self) -> &ConflictCounter {
        &self.conflicts
    }
}

/// Stored records by (tenant, period start, replica).
type Records = BTreeMap<(String, i64, String), Record>;

/// Adds the records up into the answer.
fn answer(window: &Window, records: Records, mut truncated: bool) -> ConflictStats {
    let span = &window.span;
    let n = span.bucket_count();
    let width = span.grain.seconds();
    // (tenant, collection, method, reason, code) → counts per bucket
    let mut series: HashMap<(String, SeriesKey), Vec<i64>> = HashMap::new();
    // (tenant, name) → ((reason, code) → count, last ms)
    let mut hot: HashMap<(String, String), ResourceTally> = HashMap::new();
    let mut recent: Vec<ConflictEvent> = Vec::new();
    for ((tenant, start, _), record) in records {
        let Ok(index) = usize::try_from((start - span.start) / width) else {
            continue;
        };
        if index >= n {
            continue;
        }
        for c in record.counts {
            if !window.admits(&c.collection, &c.reason, &c.code) {
                continue;
            }
            let counts = series
                .entry((tenant.clone(), (c.collection, c.method, c.reason, c.code)))
                .or_insert_with(|| vec![0; n]);
            counts[index] += c.count;
        }
        for r in record.resources {
            let collection = collection_of(&r.name).to_string();
            let entry = hot.entry((tenant.clone(), r.name)).or_default();
            for c in r.reasons {
                if window.admits(&collection, &c.reason, &c.code) {
                    *entry.0.entry((c.reason, c.code)).or_default() += c.count;
                }
            }
            entry.1 = entry.1.max(r.last_unix_ms);
        }
        for e in record.recent {
            if window.admits(&e.collection, &e.reason, &e.code) {
                recent.push(ConflictEvent {
                    time: Some(timestamp_ms(e.unix_ms)),
                    tenant: tenant.clone(),
                    principal: e.principal,
                    method: e.method,
                    resource: e.resource,
                    reason: e.reason,
                    code: e.code,
                    collection: e.collection,
                });
            }
        }
    }
    let mut series: Vec<ConflictSeries> = series
        .into_iter()
        .map(
            |((tenant, (collection, method, reason, code)), counts)| ConflictSeries {
                total: counts.iter().sum(),
                tenant,
                collection,
                method,
                reason,
                code,
                counts,
            },
        )
        .collect();
    series.sort_by(|a, b| {
        b.total.cmp(&a.total).then_with(|| {
            (&a.tenant, &a.collection, &a.method, &a.reason).cmp(&(
                &b.tenant,
                &b.collection,
                &b.method,
                &b.reason,
            ))
        })
    });
    let total = series.iter().map(|s| s.total).sum();
    if series.len() > MAX_SERIES {
        series.truncate(MAX_SERIES);
        truncated = true;
    }
    let mut hot_resources: Vec<HotResource> = hot
        .into_iter()
        .filter_map(|((tenant, name), (reasons, last))| {
            let count: i64 = reasons.values().sum();
            let top_reason = reasons
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|((reason, _), _)| reason.clone())?;
            (count > 0).then(|| HotResource {
                tenant,
                name,
                count,
                top_reason,
                last_time: Some(timestamp_ms(last)),
            })
        })
        .collect();
    hot_resources.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    hot_resources.truncate(window.max_hot);
    recent.sort_by(|a, b| {
        let t = |e: &ConflictEvent| e.time.as_ref().map(|t| (t.seconds, t.nanos));
        t(b).cmp(&t(a))
    });
    recent.truncate(window.max_recent);
    ConflictStats {
        start_time: Some(timestamp(span.start)),
        end_time: Some(timestamp(span.end)),
        bucket: Some(prost_types::Duration {
            seconds: width,
            nanos: 0,
        }),
        series,
        hot_resources,
        recent,
        total,
        truncated,
    }
}

/// The latency below which a share `q` of `latency` (counts per bucket of
/// [`LATENCY_BUCKETS_US`]) falls: the upper bound of its bucket.
fn percentile(latency: &[i64], q: f64) -> Option<prost_types::Duration> {
    let total: i64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil() as i64;
    let mut seen = 0;
    for (i, count) in latency.iter().enumerate() {
        seen += count;
        if seen >= rank {
            // Past the last bound: no more precise than "longer".
            let us = LATENCY_BUCKETS_US
                .get(i)
                .or(LATENCY_BUCKETS_US.last())
                .copied()
                .unwrap_or_default();
            return Some(prost_types::Duration {
                seconds: (us / 1_000_000) as i64,
                nanos: ((us % 1_000_000) * 1000) as i32,
            });
        }
    }
    None
}

/// Adds the records' policy evaluations up, per policy.
fn policy_answer(span: &Span, records: Records, truncated: bool) -> PolicyEvaluationStats {
    let mut tallies: BTreeMap<String, (HashMap<String, i64>, Vec<i64>)> = BTreeMap::new();
    for record in records.into_values() {
        for p in record.policies {
            let (outcomes, latency) = tallies.entry(p.name).or_default();
            for o in p.outcomes {
                *outcomes.entry(o.outcome).or_default() += o.count;
            }
            if latency.len() < p.latency.len() {
                latency.resize(p.latency.len(), 0);
            }
            for (i, n) in p.latency.into_iter().enumerate() {
                latency[i] += n;
            }
        }
    }
    let policies = tallies
        .into_iter()
        .map(|(policy, (outcomes, latency))| {
            let of = |o: Outcome| outcomes.get(o.as_str()).copied().unwrap_or_default();
            PolicyEvaluationCounts {
                evaluations: outcomes.values().sum(),
                allowed: of(Outcome::Allow),
                denied: of(Outcome::Deny),
                audit_denied: of(Outcome::AuditDeny),
                warned: of(Outcome::Warn),
                faulted: of(Outcome::Fault),
                faults_ignored: of(Outcome::FaultIgnored),
                busy: of(Outcome::Busy),
                p50_latency: percentile(&latency, 0.5),
                p99_latency: percentile(&latency, 0.99),
                policy,
            }
        })
        .collect();
    PolicyEvaluationStats {
        start_time: Some(timestamp(span.start)),
        end_time: Some(timestamp(span.end)),
        policies,
        truncated,
    }
}

/// Periods taken out for a write that has not succeeded (yet): dropped,
/// it marks them to be written at the next flush again.
struct Unwritten<'a> {
    counter: &'a ConflictCounter,
    periods: Vec<(String, (Grain, i64))>,
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        if self.periods.is_empty() {
            return;
        }
        let mut pending = self.counter.lock();
        for (tenant, period) in self.periods.drain(..) {
            if let Some(totals) = pending.tenants.get_mut(&tenant).and_then(|p| p.get_mut(&period)) {
                totals.dirty = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_tenant_then_period() {
        let a = key(Grain::Minute, "acme", 60, "r1");
        let b = key(Grain::Minute, "acme", 120, "r0");
        let end = tenant_end(Grain::Minute, "acme");
        assert!(a < b && b < end);
        // No other tenant's keys fall between a tenant's and its end.
        assert!(key(Grain::Minute, "acme0", 0, "r0") > end);
        assert!(key(Grain::Minute, "acme-2", 999_999, "r9") < a);
        assert_eq!(parse_key(&a), Some(("acme".into(), 60, "r1".into())));
    }

    /// A flush dropped while it writes (at shutdown the flushing task is
    /// aborted wherever it is) leaves what it took to the next flush.
    #[test]
    fn a_flush_dropped_mid_write_loses_nothing() {
        use futures::FutureExt;
        let counter = ConflictCounter::new();
        counter.evaluated("tenants/acme/policies/guard", "allow", Duration::from_micros(9));
        let dropped = counter
            .flush_with(|_| std::future::pending::<Result<(), arbiter_store::StoreError>>())
            .now_or_never();
        assert!(dropped.is_none());
        // One record per grain: minute, hour and day.
        assert_eq!(flush_now(&counter).len(), Grain::ALL.len());
        // Written: nothing is left for the next flush.
        assert!(flush_now(&counter).is_empty());
    }

    /// Flushes through a write that succeeds at once; what it was given.
    fn flush_now(counter: &ConflictCounter) -> arbiter_store::StatsRecords {
        use futures::FutureExt;
        let mut given = Vec::new();
        let flushed = counter
            .flush_with(|records| {
                given = records;
                std::future::ready(Ok(()))
            })
            .now_or_never();
        assert!(matches!(flushed, Some(Ok(()))), "{flushed:?}");
        given
    }

    #[test]
    fn memory_is_bounded_by_periods() {
        let counter = ConflictCounter::new();
        let root = Caller {
            principal: "root".into(),
            tenant: "*".into(),
            role: crate::auth::Role::Admin,
        };
        let tenants: Vec<String> = (0..MAX_PERIODS / 3 + 1).map(|i| format!("t{i}")).collect();
        for tenant in &tenants {
            let refusal = Refusal {
                tenant,
                collection: "vms",
                method: "CreateVirtualMachine",
                resource: "",
                reason: "RESOURCE_EXISTS",
                code: "ALREADY_EXISTS",
            };
            counter.count(&root, &refusal);
            counter.count(&root, &refusal);
        }
        let pending = counter.lock();
        assert_eq!(pending.count, MAX_PERIODS);
        assert_eq!(pending.periods().count(), MAX_PERIODS);
        let first = &pending.tenants["t0"];
        assert!(
            first
                .values()
                .all(|t| t.dirty && t.counts.values().sum::<i64>() == 2)
        );
        assert!(pending.tenants[tenants.last().unwrap().as_str()].is_empty());
        // A caller of one tenant counts in that tenant only.
        drop(pending);
        let acme = Caller {
            tenant: "acme".into(),
            ..root
        };
        counter.count(
            &acme,
            &Refusal {
                tenant: "globex",
                collection: "",
                method: "GetVirtualMachine",
                resource: "",
                reason: "TENANT_FORBIDDEN",
                code: "PERMISSION_DENIED",
            },
        );
        assert!(!counter.lock().tenants.contains_key("globex"));
    }

    #[test]
    fn percentiles_are_bucket_bounds() {
        let mut tally = PolicyTally::default();
        for _ in 0..98 {
            tally.add("allow", Duration::from_micros(30));
        }
        tally.add("deny", Duration::from_micros(700));
        tally.add("fault", Duration::from_secs(9));
        let us =
            |d: Option<prost_types::Duration>| d.map(|d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000);
        assert_eq!(us(percentile(&tally.latency, 0.5)), Some(50));
        assert_eq!(us(percentile(&tally.latency, 0.99)), Some(1_000));
        assert_eq!(us(percentile(&tally.latency, 1.0)), Some(2_500_000));
        assert_eq!(percentile(&[0; 16], 0.5), None);
    }

    /// By default a window ends now, and what was counted in the second
    /// under way is in it, also when that second starts a minute (the
    /// bucket it counts in).
    #[test]
    fn the_default_window_holds_the_second_under_way() {
        let viewer = Caller {
            principal: "viewer".into(),
            tenant: "acme".into(),
            role: crate::auth::Role::Viewer,
        };
        // 2025-11-24 16:00:00 UTC.
        let on_a_minute = 1_764_000_000;
        assert_eq!(on_a_minute % 60, 0);
        for now_s in [on_a_minute, on_a_minute + 1, on_a_minute + 59] {
            let span = Span::of(&viewer, "tenants/acme", (None, None), None, now_s).unwrap();
            assert_eq!(span.grain, Grain::Minute);
            let counted_in = now_s.div_euclid(60) * 60;
            assert!((span.start..span.end).contains(&counted_in), "{now_s}: {span:?}");
        }
    }

    #[test]
    fn default_buckets_fit_the_window() {
        assert_eq!(buckets(Grain::Minute, 0, 86_400), 1440);
        assert_eq!(buckets(Grain::Minute, 30, 90), 2);
        let g = Grain::ALL
            .into_iter()
            .find(|g| buckets(*g, 0, 7 * 86_400) <= MAX_BUCKETS);
        assert_eq!(g, Some(Grain::Hour));
    }
}
