//! `arbiter-bench`: drives a running Arbiter over gRPC with a fixed number
//! of concurrent clients for a fixed time and reports throughput, latency
//! percentiles, successes and conflicts.
//!
//! Scenarios:
//! - `create-unique`: every request creates a VM with a fresh name.
//! - `get`: reads VMs created beforehand.
//! - `noop`: the gRPC health check, the ceiling of a unary call on the
//!   same server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arbiter_api::v1::{
    CreateVirtualMachineRequest, GetVirtualMachineRequest, VirtualMachine,
    virtual_machines_client::VirtualMachinesClient,
};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Create VMs with fresh names.
    CreateUnique,
    /// Get existing VMs.
    Get,
    /// gRPC health check.
    Noop,
}

/// Load generator for Arbiter.
#[derive(Debug, Parser)]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// gRPC address of the server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Bearer token (admin or editor of the tenant).
    #[arg(long, env = "ARBITER_TOKEN")]
    token: String,
    /// Tenant to write into.
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// HTTP/2 connections to spread the clients over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Keys prepared for `get`.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What one worker saw.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    conflicts: u64,
    errors: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            ok: 0,
            conflicts: 0,
            errors: 0,
        })
    }
}

#[derive(Clone)]
struct Ctx {
    channel: Channel,
    token: MetadataValue<Ascii>,
    tenant: String,
    scenario: Scenario,
    keys: usize,
    run: String,
    next: Arc<AtomicU64>,
}

impl Ctx {
    fn vms(&self) -> VirtualMachinesClient<Channel> {
        VirtualMachinesClient::new(self.channel.clone())
    }

    fn authed<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.token.clone());
        request
    }

    fn create(&self, id: String) -> tonic::Request<CreateVirtualMachineRequest> {
        self.authed(CreateVirtualMachineRequest {
            parent: format!("tenants/{}", self.tenant),
            vm_id: id,
            vm: Some(VirtualMachine {
                region: "us-east1".into(),
                machine_type: "e2-small".into(),
                image: "debian-12".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn once(&self) -> Result<(), tonic::Status> {
        match self.scenario {
            Scenario::CreateUnique => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                self.vms()
                    .create_virtual_machine(self.create(format!("{}-{n}", self.run)))
                    .await
                    .map(drop)
            }
            Scenario::Get => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) % self.keys as u64;
                let name = format!("tenants/{}/vms/{}-k{n}", self.tenant, self.run);
                self.vms()
                    .get_virtual_machine(self.authed(GetVirtualMachineRequest { name }))
                    .await
                    .map(drop)
            }
            Scenario::Noop => {
                let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
                let check = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                health.check(check).await.map(drop)
            }
        }
    }
}

async fn worker(ctx: Ctx, until: Instant) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    while Instant::now() < until {
        let start = Instant::now();
        let result = ctx.once().await;
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.latency.saturating_record(micros.max(1));
        match result {
            Ok(()) => tally.ok += 1,
            Err(s) if matches!(s.code(), tonic::Code::AlreadyExists | tonic::Code::Aborted) => {
                tally.conflicts += 1
            }
            Err(_) => tally.errors += 1,
        }
    }
    Ok(tally)
}

async fn prepare(ctx: &Ctx) -> anyhow::Result<()> {
    if ctx.scenario != Scenario::Get {
        return Ok(());
    }
    for n in 0..ctx.keys {
        ctx.vms()
            .create_virtual_machine(ctx.create(format!("{}-k{n}", ctx.run)))
            .await
            .with_context(|| format!("preparing key {n}"))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoint = Endpoint::from_shared(args.target.clone())?;
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", args.target))?,
        );
    }
    let run = format!("r{}", std::process::id());
    let base = Ctx {
        channel: channels[0].clone(),
        token: format!("Bearer {}", args.token).parse()?,
        tenant: args.tenant.clone(),
        scenario: args.scenario,
        keys: args.keys.max(1),
        run,
        next: Arc::new(AtomicU64::new(0)),
    };
    prepare(&base).await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let ctx = Ctx {
                channel: channels[i % channels.len()].clone(),
                ..base.clone()
            };
            tokio::spawn(worker(ctx, until))
        })
        .collect();
    let mut total = Tally::new()?;
    for w in workers {
        let t = w.await??;
        total.latency.add(&t.latency)?;
        total.ok += t.ok;
        total.conflicts += t.conflicts;
        total.errors += t.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = total.ok + total.conflicts + total.errors;
    let ms = |q: f64| total.latency.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "scenario": format!("{:?}", args.scenario),
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "requests": requests,
        "throughput_per_s": requests as f64 / elapsed,
        "ok": total.ok,
        "conflicts": total.conflicts,
        "errors": total.errors,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{:<14} conc={:<4} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  ok {} conflicts {} errors {}",
            report["scenario"].as_str().unwrap_or_default(),
            args.concurrency,
            requests as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            total.ok,
            total.conflicts,
            total.errors
        );
    }
    Ok(())
}
