//! The `arbiter` binary: parses the command line and hands over to the
//! library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use arbiter_server::config::{Config, ServeArgs, StoreKind};
use clap::{Parser, Subcommand};

/// Arbiter: a gRPC control plane for uniquely named resources.
#[derive(Debug, Parser)]
#[command(name = "arbiter", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Check a store: unique indexes agree with objects (RocksDB: a
    /// stopped server's data dir; etcd: a running service's prefix).
    Check {
        /// The data directory to check.
        #[arg(long, env = "ARBITER_DATA_DIR", default_value = "./arbiter-data")]
        data_dir: PathBuf,
        /// Storage engine.
        #[arg(long, env = "ARBITER_STORE", value_enum, default_value = "rocksdb")]
        store: StoreKind,
        /// etcd client URLs, comma-separated.
        #[arg(
            long,
            env = "ARBITER_ETCD_ENDPOINTS",
            value_delimiter = ',',
            default_value = "http://127.0.0.1:2379"
        )]
        etcd_endpoints: Vec<String>,
        /// Prefix of Arbiter's keys in etcd.
        #[arg(long, env = "ARBITER_ETCD_PREFIX", default_value = "/arbiter")]
        etcd_prefix: String,
    },
    /// Work with policy modules.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run a YAML file of request -> expected decision cases against a
    /// module; exits non-zero if any case fails.
    Test {
        /// The policy component (.wasm).
        module: PathBuf,
        /// The cases file (.yaml).
        cases: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => block_on(serve(*args)),
        Command::Check {
            data_dir,
            store,
            etcd_endpoints,
            etcd_prefix,
        } => block_on(check(Config {
            data_dir,
            store,
            etcd_endpoints,
            etcd_prefix,
            ..Config::default()
        })),
        Command::Policy {
            command: PolicyCommand::Test { module, cases },
        } => report(policy_test(&module, &cases)),
    }
}

/// Runs an async command on a fresh runtime.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => report(runtime.block_on(command)),
        Err(e) => {
            eprintln!("arbiter: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arbiter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `arbiter policy test MODULE CASES`.
fn policy_test(module: &Path, cases: &Path) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(module).with_context(|| format!("cannot read the module {}", module.display()))?;
    let text = std::fs::read_to_string(cases)
        .with_context(|| format!("cannot read the cases {}", cases.display()))?;
    let host = arbiter_policy::Host::new(&arbiter_policy::HostConfig {
        max_concurrent: 1,
        ..Default::default()
    })?;
    let report = arbiter_policy::cases::run(&host, &bytes, &text, &mut std::io::stdout().lock())
        .with_context(|| format!("in {}", cases.display()))?;
    Ok(if report.failed == 0 && report.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::layered(&args)?;
    let _log_writer = arbiter_server::telemetry::init(config.log_format);
    let mut running = arbiter_server::start(config).await?;
    tokio::select! {
        result = running.wait() => {
            result?;
            return Ok(ExitCode::FAILURE);
        }
        signal = shutdown_signal() => signal?,
    }
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    tracing::info!("signal received");
    Ok(())
}

async fn check(config: Config) -> anyhow::Result<ExitCode> {
    let problems = arbiter_server::check(&config).await?;
    if problems.is_empty() {
        let place = match config.store {
            StoreKind::Rocksdb => config.data_dir.display().to_string(),
            StoreKind::Etcd => format!("{} under {}", config.etcd_endpoints.join(","), config.etcd_prefix),
        };
        println!("ok: unique indexes agree with the objects in {place}");
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}
