//! `arbiter-bench`: drives a running Arbiter over gRPC with a fixed number
//! of concurrent clients for a fixed time and reports throughput, latency
//! percentiles, successes and conflicts.
//!
//! Scenarios:
//! - `create-unique`: every request creates a VM with a fresh name.
//! - `get`: reads VMs created beforehand.
//! - `noop`: the health check (gRPC `Health/Check`, HTTP `/healthz`), the
//!   ceiling of a request on the same server.
//!
//! `--protocol http` sends the same requests to the HTTP/JSON API instead
//! of gRPC, to compare the two on one server.

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
enum Protocol {
    /// Native gRPC (HTTP/2, protobuf).
    Grpc,
    /// The HTTP/JSON API (HTTP/1.1 keep-alive, JSON).
    Http,
}

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
    /// HTTP address of the server, for `--protocol http`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_target: String,
    /// Protocol of the measured requests.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
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
    protocol: Protocol,
    http: reqwest::Client,
    http_target: String,
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
        match self.protocol {
            Protocol::Grpc => self.once_grpc().await,
            Protocol::Http => self.once_http().await,
        }
    }

    /// The HTTP form of the scenario's request; a 409 counts as a conflict.
    async fn once_http(&self) -> Result<(), tonic::Status> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let request = match self.scenario {
            Scenario::CreateUnique => self
                .http
                .post(format!("{}/v1/tenants/{}/vms?vm_id={}-{n}", self.http_target, self.tenant, self.run))
                .json(&serde_json::json!({"region": "us-east1", "machineType": "e2-small", "image": "debian-12"})),
            Scenario::Get => self.http.get(format!(
                "{}/v1/tenants/{}/vms/{}-k{}",
                self.http_target,
                self.tenant,
                self.run,
                n % self.keys as u64
            )),
            Scenario::Noop => self.http.get(format!("{}/healthz", self.http_target)),
        };
        let token = self.token.to_str().unwrap_or_default();
        let response = request
            .header("authorization", token)
            .send()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let status = response.status();
        response
            .bytes()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        match status.as_u16() {
            200..=299 => Ok(()),
            409 | 412 => Err(tonic::Status::already_exists("conflict")),
            code => Err(tonic::Status::unknown(format!("HTTP {code}"))),
        }
    }

    async fn once_grpc(&self) -> Result<(), tonic::Status> {
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
        protocol: args.protocol,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?,
        http_target: args.http_target.clone(),
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
        "protocol": format!("{:?}", args.protocol),
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
            "{:<5} {:<14} conc={:<4} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  ok {} conflicts {} errors {}",
            report["protocol"].as_str().unwrap_or_default(),
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
