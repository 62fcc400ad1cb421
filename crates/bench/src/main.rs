//! `arbiter-bench`: drives a running Arbiter (over gRPC or its HTTP/JSON
//! API) or etcd with a fixed number of concurrent clients, for a fixed time
//! or a fixed number of operations, and reports throughput, latency
//! percentiles, successes and conflicts as a table line or as JSON.
//!
//! Scenarios (the same semantics on every system):
//! - `create-unique`: every operation creates a VM with a fresh name.
//! - `create-contended`: groups of `--racers` consecutive operations race to
//!   create the same name; one wins, the others get a conflict.
//! - `update-cas`: read-modify-write of a counter label on `--keys` hot VMs,
//!   guarded by the etag (etcd: `mod_revision`), retried on conflict. After
//!   the run the counters are summed: every acknowledged update must be
//!   there (`lost_updates` is reported).
//! - `get`: reads of `--keys` VMs created beforehand.
//! - `list`: the first page (`--page-size`) of a tenant's VMs.
//! - `mixed`: 70% get, 20% update-cas, 10% create-unique.
//! - `noop`: the gRPC health check (`grpc.health.v1`, which etcd serves
//!   too; HTTP `/healthz`): the ceiling of a request on the same server.
//!
//! On etcd a VM is the protobuf encoding of the same `VirtualMachine` the
//! Arbiter client sends, under `/arbiter/tenants/{tenant}/vms/{id}`; create
//! is a transaction comparing `create_revision == 0` then putting, update
//! one comparing `mod_revision` then putting.

mod arbiter;
mod etcd;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arbiter_api::v1::VirtualMachine;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    /// An Arbiter server.
    Arbiter,
    /// An etcd server (v3 API).
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// Native gRPC (HTTP/2, protobuf).
    Grpc,
    /// Arbiter's HTTP/JSON API (HTTP/1.1 keep-alive, JSON).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Create VMs with fresh names.
    CreateUnique,
    /// Many clients racing to create the same names.
    CreateContended,
    /// Read-modify-write with an etag on a few hot keys, retried on conflict.
    UpdateCas,
    /// Get existing VMs.
    Get,
    /// The first page of a tenant's VMs.
    List,
    /// 70% get, 20% update-cas, 10% create-unique.
    Mixed,
    /// Health check: the ceiling of a unary call.
    Noop,
    /// Transactions of `--tx-size` creates of fresh names (gRPC only);
    /// one operation is one transaction.
    TxCreate,
}

impl Scenario {
    /// Keys created before the run when `--keys` is not given.
    fn default_keys(self) -> usize {
        match self {
            Self::UpdateCas => 8,
            Self::Get | Self::Mixed => 1000,
            Self::List => 100,
            Self::CreateUnique | Self::CreateContended | Self::Noop | Self::TxCreate => 0,
        }
    }
}

/// Load generator for Arbiter and etcd.
#[derive(Debug, Parser)]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// System under test.
    #[arg(long, value_enum, default_value = "arbiter")]
    system: System,
    /// gRPC address of the server (etcd: its client URL); several,
    /// comma-separated, spread the connections over replicas.
    #[arg(long, default_value = "http://127.0.0.1:50051", value_delimiter = ',')]
    target: Vec<String>,
    /// HTTP address of Arbiter, for `--protocol http`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_target: String,
    /// Protocol of Arbiter's measured requests.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// Bearer token for Arbiter (admin, or editor of the tenants).
    #[arg(long, env = "ARBITER_TOKEN", default_value = "")]
    token: String,
    /// Tenant to write into (with `--tenants N`, the prefix of N tenants).
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Spread the VMs over this many tenants, `{tenant}-0` to `{tenant}-{N-1}`.
    #[arg(long, default_value_t = 1)]
    tenants: u64,
    /// Concurrent operations in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run, in seconds (ignored with `--count`).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Run exactly this many operations instead of `--seconds`.
    #[arg(long)]
    count: Option<u64>,
    /// HTTP/2 connections to spread the clients over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Key space: VMs created before the run for get, list, update-cas and
    /// mixed (default 1000 for get and mixed, 100 for list, 8 hot keys for
    /// update-cas).
    #[arg(long)]
    keys: Option<usize>,
    /// For create-contended: how many consecutive operations race for one name.
    #[arg(long)]
    racers: Option<u64>,
    /// Bytes of user data per VM beyond its required fields, carried in its
    /// display name and labels (at most 4,200).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Page size of the list scenario.
    #[arg(long, default_value_t = 50)]
    page_size: i32,
    /// Attempts of one update-cas operation before it gives up.
    #[arg(long, default_value_t = 1000)]
    max_attempts: u32,
    /// Creates in one transaction of the tx-create scenario (1 to 100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    tx_size: u64,
    /// Names of this run's VMs start with this (default: `r` + process id).
    #[arg(long)]
    run_id: Option<String>,
    /// The key space exists already, created by an earlier run with the
    /// same `--run-id`, `--keys` and `--tenants`: do not create it.
    #[arg(long, requires = "run_id")]
    prepared: bool,
    /// Watch streams (Arbiter gRPC) to open on the written tenants before
    /// the run; the report adds what they received and how late.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How one operation ended, when the system answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done; `retries` conflicts were retried on the way (update-cas).
    Ok { retries: u32 },
    /// Refused as a conflict (name taken, or update-cas out of attempts
    /// after `retries` conflicts).
    Conflict { retries: u32 },
}

/// The result of one operation: an error is anything but success or conflict.
pub(crate) type OpResult = Result<Outcome, String>;

/// What a VM carries besides its name: the required fields plus
/// `--payload-bytes` of display name and labels.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    display_name: String,
    labels: BTreeMap<String, String>,
}

/// Label values are at most 63 characters.
const LABEL_VALUE_MAX: usize = 63;
/// Display names are at most 256 characters.
const DISPLAY_NAME_MAX: usize = 256;
/// Labels available for payload: 64 minus the update-cas counter.
const PAYLOAD_LABELS: usize = 63;
/// The label update-cas increments.
pub(crate) const COUNTER_LABEL: &str = "counter";

impl Payload {
    fn new(bytes: usize) -> anyhow::Result<Self> {
        let max = DISPLAY_NAME_MAX + PAYLOAD_LABELS * LABEL_VALUE_MAX;
        if bytes > max {
            bail!(
                "--payload-bytes {bytes} is too large: a VM carries at most {max} bytes of display name and labels"
            );
        }
        let display = bytes.min(DISPLAY_NAME_MAX);
        let mut rest = bytes - display;
        let mut labels = BTreeMap::new();
        let mut i = 0;
        while rest > 0 {
            let n = rest.min(LABEL_VALUE_MAX);
            labels.insert(format!("p{i:02}"), "x".repeat(n));
            rest -= n;
            i += 1;
        }
        Ok(Self {
            display_name: "x".repeat(display),
            labels,
        })
    }

    /// The VM a create sends.
    pub(crate) fn vm(&self, name: String) -> VirtualMachine {
        VirtualMachine {
            name,
            region: "us-east1".into(),
            machine_type: "e2-small".into(),
            image: "debian-12".into(),
            display_name: self.display_name.clone(),
            labels: self.labels.clone(),
            ..Default::default()
        }
    }
}

/// The counter label after one more increment.
pub(crate) fn bump(labels: &mut BTreeMap<String, String>) {
    let next = labels
        .get(COUNTER_LABEL)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    labels.insert(COUNTER_LABEL.into(), next.to_string());
}

/// A connection to the system under test; cheap to clone.
#[derive(Clone)]
pub(crate) enum Client {
    Grpc(arbiter::Grpc),
    Http(arbiter::Http),
    Etcd(Box<etcd::Etcd>),
}

impl Client {
    async fn create(&self, tenant: &str, id: &str) -> OpResult {
        match self {
            Self::Grpc(c) => c.create(tenant, id).await,
            Self::Http(c) => c.create(tenant, id).await,
            Self::Etcd(c) => c.create(tenant, id).await,
        }
    }

    async fn create_all(&self, tenant: &str, ids: &[String]) -> OpResult {
        match self {
            Self::Grpc(c) => c.create_all(tenant, ids).await,
            Self::Http(_) | Self::Etcd(_) => Err("tx-create runs on Arbiter over gRPC only".into()),
        }
    }

    async fn get(&self, tenant: &str, id: &str) -> OpResult {
        match self {
            Self::Grpc(c) => c.get(tenant, id).await,
            Self::Http(c) => c.get(tenant, id).await,
            Self::Etcd(c) => c.get(tenant, id).await,
        }
    }

    async fn update_cas(&self, tenant: &str, id: &str, max_attempts: u32) -> OpResult {
        let mut retries = 0;
        for _ in 0..max_attempts.max(1) {
            let done = match self {
                Self::Grpc(c) => c.try_update(tenant, id).await?,
                Self::Http(c) => c.try_update(tenant, id).await?,
                Self::Etcd(c) => c.try_update(tenant, id).await?,
            };
            if done {
                return Ok(Outcome::Ok { retries });
            }
            retries += 1;
        }
        Ok(Outcome::Conflict { retries })
    }

    async fn list(&self, tenant: &str, page_size: i32) -> OpResult {
        match self {
            Self::Grpc(c) => c.list(tenant, page_size).await,
            Self::Http(c) => c.list(tenant, page_size).await,
            Self::Etcd(c) => c.list(tenant, page_size).await,
        }
    }

    async fn noop(&self) -> OpResult {
        match self {
            Self::Grpc(c) => c.noop().await,
            Self::Http(c) => c.noop().await,
            Self::Etcd(c) => c.noop().await,
        }
    }

    /// The counter label of a VM (0 when absent).
    async fn counter(&self, tenant: &str, id: &str) -> anyhow::Result<u64> {
        let labels = match self {
            Self::Grpc(c) => c.labels(tenant, id).await,
            Self::Http(c) => c.labels(tenant, id).await,
            Self::Etcd(c) => c.labels(tenant, id).await,
        }
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading the counter of {tenant}/{id}"))?;
        Ok(labels
            .get(COUNTER_LABEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

/// Hands out operation numbers until the time or the count runs out.
struct Budget {
    next: AtomicU64,
    count: Option<u64>,
    until: Instant,
}

impl Budget {
    fn take(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.count {
            Some(count) => (n < count).then_some(n),
            None => (Instant::now() < self.until).then_some(n),
        }
    }
}

/// The run's parameters shared by every worker.
struct Plan {
    scenario: Scenario,
    tenant: String,
    tenants: u64,
    run: String,
    keys: u64,
    racers: u64,
    page_size: i32,
    max_attempts: u32,
    tx_size: u64,
    /// Numbers fresh creates of the mixed scenario.
    fresh: AtomicU64,
}

impl Plan {
    fn tenant(&self, n: u64) -> String {
        if self.tenants > 1 {
            format!("{}-{}", self.tenant, n % self.tenants)
        } else {
            self.tenant.clone()
        }
    }

    fn key(&self, k: u64) -> (String, String) {
        (self.tenant(k), format!("{}-k{k}", self.run))
    }

    /// Operation `n` of the run.
    async fn run_one(&self, client: &Client, n: u64, rng: &mut fastrand::Rng) -> OpResult {
        match self.scenario {
            Scenario::CreateUnique => client.create(&self.tenant(n), &format!("{}-{n}", self.run)).await,
            Scenario::CreateContended => {
                let group = n / self.racers;
                client
                    .create(&self.tenant(group), &format!("{}-c{group}", self.run))
                    .await
            }
            Scenario::UpdateCas => {
                let (tenant, id) = self.key(rng.u64(0..self.keys));
                client.update_cas(&tenant, &id, self.max_attempts).await
            }
            Scenario::Get => {
                let (tenant, id) = self.key(rng.u64(0..self.keys));
                client.get(&tenant, &id).await
            }
            Scenario::List => client.list(&self.tenant(n), self.page_size).await,
            Scenario::Mixed => match rng.u8(0..10) {
                0 => {
                    let fresh = self.fresh.fetch_add(1, Ordering::Relaxed);
                    client
                        .create(&self.tenant(fresh), &format!("{}-m{fresh}", self.run))
                        .await
                }
                1 | 2 => {
                    let (tenant, id) = self.key(rng.u64(0..self.keys));
                    client.update_cas(&tenant, &id, self.max_attempts).await
                }
                _ => {
                    let (tenant, id) = self.key(rng.u64(0..self.keys));
                    client.get(&tenant, &id).await
                }
            },
            Scenario::Noop => client.noop().await,
            Scenario::TxCreate => {
                let ids: Vec<String> = (0..self.tx_size)
                    .map(|i| format!("{}-{n}-t{i}", self.run))
                    .collect();
                client.create_all(&self.tenant(n), &ids).await
            }
        }
    }
}

/// What one worker saw.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    /// Operations refused as conflicts (taken names, update-cas out of
    /// attempts); the report's conflicts are these plus `retries`.
    refused: u64,
    /// Conflicts retried inside update-cas operations.
    retries: u64,
    /// Update-cas operations that succeeded (to check for lost updates).
    updates: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
            ok: 0,
            refused: 0,
            retries: 0,
            updates: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn add(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.ok += other.ok;
        self.refused += other.refused;
        self.retries += other.retries;
        self.updates += other.updates;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        Ok(())
    }
}

async fn worker(client: Client, plan: Arc<Plan>, budget: Arc<Budget>, seed: u64) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut rng = fastrand::Rng::with_seed(seed);
    while let Some(n) = budget.take() {
        let start = Instant::now();
        let result = plan.run_one(&client, n, &mut rng).await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.latency.saturating_record(micros.max(1));
        match result {
            Ok(Outcome::Ok { retries }) => {
                tally.ok += 1;
                tally.retries += u64::from(retries);
                // Mixed runs do not check for lost updates: their creates
                // and gets also end in Ok.
                if plan.scenario == Scenario::UpdateCas {
                    tally.updates += 1;
                }
            }
            Ok(Outcome::Conflict { retries }) => {
                tally.refused += 1;
                tally.retries += u64::from(retries);
            }
            Err(e) => {
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(e);
                }
            }
        }
    }
    Ok(tally)
}

/// Creates the key space the scenario reads and updates, with every
/// worker's connection in parallel.
async fn prepare(clients: &[Client], plan: &Arc<Plan>) -> anyhow::Result<()> {
    if plan.keys == 0
        || matches!(
            plan.scenario,
            Scenario::CreateUnique | Scenario::CreateContended | Scenario::Noop | Scenario::TxCreate
        )
    {
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    let lanes = clients.len() as u64;
    for (lane, client) in clients.iter().enumerate() {
        let (client, plan) = (client.clone(), plan.clone());
        tasks.spawn(async move {
            let mut k = lane as u64;
            while k < plan.keys {
                let (tenant, id) = plan.key(k);
                match client.create(&tenant, &id).await {
                    Ok(Outcome::Ok { .. }) => {}
                    Ok(Outcome::Conflict { .. }) => {
                        bail!("key {tenant}/{id} already exists: pass a fresh --run-id")
                    }
                    Err(e) => bail!("preparing key {tenant}/{id}: {e}"),
                }
                k += lanes;
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Sums the counters of the update-cas keys.
async fn counted_updates(client: &Client, plan: &Plan) -> anyhow::Result<u64> {
    let mut sum = 0;
    for k in 0..plan.keys {
        let (tenant, id) = plan.key(k);
        sum += client.counter(&tenant, &id).await?;
    }
    Ok(sum)
}

async fn connect(args: &Args, payload: &Arc<Payload>) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    if args.target.is_empty() {
        bail!("--target needs at least one address");
    }
    for i in 0..args.connections.max(1) {
        let target = &args.target[i % args.target.len()];
        let client = match (args.system, args.protocol) {
            (System::Arbiter, Protocol::Grpc) => {
                Client::Grpc(arbiter::Grpc::connect(target, &args.token, payload.clone()).await?)
            }
            (System::Arbiter, Protocol::Http) => Client::Http(arbiter::Http::new(
                &args.http_target,
                &args.token,
                args.concurrency,
                payload.clone(),
            )?),
            (System::Etcd, Protocol::Grpc) => {
                Client::Etcd(Box::new(etcd::Etcd::connect(target, payload.clone()).await?))
            }
            (System::Etcd, Protocol::Http) => {
                bail!("--protocol http is Arbiter's HTTP/JSON API: use it with --system arbiter")
            }
        };
        clients.push(client);
    }
    Ok(clients)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tenants == 0 {
        bail!("--tenants must be at least 1");
    }
    let payload = Arc::new(Payload::new(args.payload_bytes)?);
    let clients = connect(&args, &payload).await?;
    let keys = args.keys.unwrap_or(args.scenario.default_keys());
    if keys == 0
        && matches!(
            args.scenario,
            Scenario::Get | Scenario::UpdateCas | Scenario::Mixed
        )
    {
        bail!("--keys must be at least 1 for {:?}", args.scenario);
    }
    let plan = Arc::new(Plan {
        scenario: args.scenario,
        tenant: args.tenant.clone(),
        tenants: args.tenants,
        run: args
            .run_id
            .clone()
            .unwrap_or_else(|| format!("r{}", std::process::id())),
        keys: keys as u64,
        racers: args.racers.unwrap_or(args.concurrency as u64).max(1),
        page_size: args.page_size,
        max_attempts: args.max_attempts,
        tx_size: args.tx_size,
        fresh: AtomicU64::new(0),
    });
    if !args.prepared {
        prepare(&clients, &plan).await?;
    }

    let watchers = if args.watchers > 0 {
        if (args.system, args.protocol) != (System::Arbiter, Protocol::Grpc) {
            bail!("--watchers watches Arbiter over gRPC: use it with --system arbiter --protocol grpc");
        }
        let tenants: Vec<String> = (0..args.tenants).map(|n| plan.tenant(n)).collect();
        Some(watch::start(&args.target, &args.token, &tenants, args.watchers).await?)
    } else {
        None
    };

    let started = Instant::now();
    let budget = Arc::new(Budget {
        next: AtomicU64::new(0),
        count: args.count,
        until: started + Duration::from_secs(args.seconds),
    });
    let seed = fastrand::u64(..);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(worker(
                client,
                plan.clone(),
                budget.clone(),
                seed.wrapping_add(i as u64),
            ))
        })
        .collect();
    let mut total = Tally::new()?;
    for w in workers {
        total.add(&w.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let watched = match watchers {
        Some(w) => {
            let expected = total.ok * args.watchers as u64 / args.tenants.max(1);
            Some(w.finish(expected, Duration::from_secs(15)).await)
        }
        None => None,
    };

    let lost_updates = if args.scenario == Scenario::UpdateCas {
        let counted = counted_updates(&clients[0], &plan).await?;
        Some(total.updates as i64 - counted as i64)
    } else {
        None
    };
    let operations = total.ok + total.refused + total.errors;
    let conflicts = total.refused + total.retries;
    let ms = |q: f64| total.latency.value_at_quantile(q) as f64 / 1000.0;
    let system = match (args.system, args.protocol) {
        (System::Etcd, _) => "etcd",
        (System::Arbiter, Protocol::Grpc) => "arbiter-grpc",
        (System::Arbiter, Protocol::Http) => "arbiter-http",
    };
    let scenario = args
        .scenario
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let report = serde_json::json!({
        "system": system,
        "scenario": scenario,
        "tenant": args.tenant,
        "concurrency": args.concurrency,
        "payload_bytes": args.payload_bytes,
        "keys": keys,
        "seconds": elapsed,
        "operations": operations,
        "throughput_per_s": operations as f64 / elapsed,
        "ok": total.ok,
        "ok_per_s": total.ok as f64 / elapsed,
        "conflicts": conflicts,
        "retries": total.retries,
        "errors": total.errors,
        "first_error": total.first_error,
        "lost_updates": lost_updates,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
    });
    let mut report = report;
    if let Some(w) = &watched {
        let delay = w.delay.lock().await;
        let events = w.events.load(Ordering::Relaxed);
        report["watchers"] = args.watchers.into();
        report["watch_events"] = events.into();
        report["watch_events_per_s"] = (events as f64 / elapsed).into();
        report["watch_delay_p50_ms"] = (delay.value_at_quantile(0.5) as f64 / 1000.0).into();
        report["watch_delay_p99_ms"] = (delay.value_at_quantile(0.99) as f64 / 1000.0).into();
        report["watch_failures"] = w.failures.load(Ordering::Relaxed).into();
    }
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{system:<13} {scenario:<16} conc={:<4} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  ok {} conflicts {} errors {}{}",
            args.concurrency,
            operations as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            total.ok,
            conflicts,
            total.errors,
            lost_updates
                .map(|l| format!(" lost updates {l}"))
                .unwrap_or_default(),
        );
        if let Some(e) = &total.first_error {
            println!("  first error: {e}");
        }
        if watched.is_some() {
            println!(
                "  watchers {}: {} changes, {:.0}/s, delay p50 {:.2} ms p99 {:.2} ms, failed streams {}",
                args.watchers,
                report["watch_events"],
                report["watch_events_per_s"].as_f64().unwrap_or_default(),
                report["watch_delay_p50_ms"].as_f64().unwrap_or_default(),
                report["watch_delay_p99_ms"].as_f64().unwrap_or_default(),
                report["watch_failures"],
            );
        }
    }
    if lost_updates.is_some_and(|l| l != 0) {
        bail!("lost updates: {lost_updates:?} acknowledged updates are missing from the counters");
    }
    Ok(())
}
