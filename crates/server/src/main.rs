//! The `arbiter` binary: parses the command line and hands over to the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use arbiter_server::config::{Config, ServeArgs};
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
    Serve(ServeArgs),
    /// Check a stopped server's data dir: unique indexes agree with objects.
    Check {
        /// The data directory to check.
        #[arg(long, env = "ARBITER_DATA_DIR", default_value = "./arbiter-data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arbiter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Check { data_dir } => check(data_dir).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arbiter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::layered(&args)?;
    arbiter_server::telemetry::init(config.log_format);
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

async fn check(data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let problems = arbiter_server::check(&data_dir).await?;
    if problems.is_empty() {
        println!(
            "ok: unique indexes agree with the objects in {}",
            data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(ExitCode::FAILURE)
}
