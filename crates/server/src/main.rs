//! The `arbiter` binary: parses the command line and hands over to the
//! library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use arbiter_server::cli::{
    ClientCommand, Connection, OnConflict, PolicyFields, PromptCommand, UserCommand, Verb, VmCommand,
};
use arbiter_server::config::{Config, ServeArgs, StoreKind};
use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc instead of glibc's allocator: a request allocates and frees
/// many small buffers on several threads, and every policy evaluation a
/// store of a few kilobytes, which made glibc consolidate its free lists
/// on the request path. With mimalloc, a create costs 10–25% less server
/// CPU (BENCHMARKS.md, "The policy path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arbiter: a gRPC control plane for uniquely named resources.
#[derive(Debug, Parser)]
#[command(name = "arbiter", version, about)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
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
    /// Virtual machines: create, get, list, update, delete, start, stop.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// Users: create, get, list, update, delete, activate, suspend.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Prompts: create, get, list, update, delete, publish, archive.
    Prompt {
        #[command(subcommand)]
        command: PromptCommand,
    },
    /// Policies: create, get, list, update, delete; test a module locally.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Commit a transaction: a CommitTransactionRequest as YAML (proto
    /// field names).
    Tx {
        /// The YAML file.
        file: PathBuf,
    },
    /// Follow a tenant's changes as they happen (resumes by itself).
    Watch {
        /// `tenants/{tenant}`.
        parent: String,
        /// Collections to follow, comma-separated (default: every one).
        #[arg(long, value_delimiter = ',')]
        collections: Vec<String>,
        /// First revision to show (default: from now on).
        #[arg(long, default_value_t = 0)]
        start_revision: u64,
        /// First every current object, then the changes.
        #[arg(long)]
        send_initial: bool,
        /// Only changes whose object matches this filter.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Statistics of refused requests.
    Stats {
        #[command(subcommand)]
        command: StatsCommand,
    },
    /// A resource's history: who changed what, when, newest first.
    History {
        /// The resource's full name.
        name: String,
    },
    /// Edit a resource in $EDITOR as YAML; on a conflict, merge,
    /// overwrite, edit again or discard.
    Edit {
        /// The resource's full name.
        name: String,
        /// Resolve a conflict without asking.
        #[arg(long, value_enum)]
        on_conflict: Option<OnConflict>,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum StatsCommand {
    /// Refused requests of a tenant over a window (default: the last
    /// hour): counts by collection, method and reason, the most contended
    /// resources and the latest refusals.
    Conflicts(arbiter_server::cli::ConflictStatsArgs),
    /// Evaluations of a tenant's policies over a window (default: the last
    /// hour): counts by outcome and p99 latency per policy.
    Policies(arbiter_server::cli::PolicyStatsArgs),
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum PolicyCommand {
    #[command(flatten)]
    Verb(Verb<PolicyFields>),
    /// Show what a policy would decide before binding it: judge the
    /// tenant's current objects and replay its recent changes; nothing is
    /// stored.
    Preview(arbiter_server::cli::Preview),
    /// Run a YAML file of request -> expected decision cases against a
    /// module; exits non-zero if any case fails.
    Test {
        /// The policy component (.wasm).
        module: PathBuf,
        /// The cases file (.yaml).
        cases: PathBuf,
        /// How to report: a line per case, one JSON document, or JUnit XML.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// The binding's settings (YAML or JSON) for the cases that give
        /// none.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
}

/// The report formats of `arbiter policy test`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    /// `PASS`/`FAIL` lines and a summary.
    Text,
    /// One JSON document.
    Json,
    /// JUnit XML.
    Junit,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are answers; anything else is a usage error.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let client =
        |command| block_on(async { Ok(arbiter_server::cli::run(cli.connection.clone(), command).await) });
    match cli.command {
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
            command:
                PolicyCommand::Test {
                    module,
                    cases,
                    format,
                    settings,
                },
        } => {
            let format = match format {
                ReportFormat::Text => arbiter_policy::cases::Format::Text,
                ReportFormat::Json => arbiter_policy::cases::Format::Json,
                ReportFormat::Junit => arbiter_policy::cases::Format::Junit,
            };
            report(policy_test(&module, &cases, format, settings.as_deref()))
        }
        Command::Policy {
            command: PolicyCommand::Verb(verb),
        } => client(ClientCommand::Policy(verb)),
        Command::Policy {
            command: PolicyCommand::Preview(preview),
        } => client(ClientCommand::PolicyPreview(preview)),
        Command::Vm { command } => client(ClientCommand::Vm(command)),
        Command::User { command } => client(ClientCommand::User(command)),
        Command::Prompt { command } => client(ClientCommand::Prompt(command)),
        Command::Tx { file } => client(ClientCommand::Tx { file }),
        Command::Watch {
            parent,
            collections,
            start_revision,
            send_initial,
            filter,
        } => client(ClientCommand::Watch {
            parent,
            collections,
            start_revision,
            send_initial,
            filter,
        }),
        Command::History { name } => client(ClientCommand::History { name }),
        Command::Stats {
            command: StatsCommand::Conflicts(args),
        } => client(ClientCommand::ConflictStats(args)),
        Command::Stats {
            command: StatsCommand::Policies(args),
        } => client(ClientCommand::PolicyStats(args)),
        Command::Edit { name, on_conflict } => client(ClientCommand::Edit { name, on_conflict }),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "arbiter", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Stack of each runtime worker thread. Policies without async imports
/// run inline on the request's worker, wasm frames on its stack, up to the
/// policy host's wasm stack limit (512 KiB) below whatever the request
/// already uses: twice tokio's default leaves room for both. Only the
/// pages touched are resident.
const WORKER_STACK_BYTES: usize = 4 << 20;

/// Runs an async command on a fresh runtime.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build();
    match runtime {
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
fn policy_test(
    module: &Path,
    cases: &Path,
    format: arbiter_policy::cases::Format,
    settings: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let settings = settings
        .map(|path| -> anyhow::Result<serde_json::Value> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the settings {}", path.display()))?;
            let value: serde_json::Value = serde_yaml::from_str(&text)
                .with_context(|| format!("the settings {} are not YAML or JSON", path.display()))?;
            anyhow::ensure!(
                value.is_object(),
                "the settings {} must be a mapping (an object), like {{machine_types: [e2-small]}}",
                path.display()
            );
            Ok(value)
        })
        .transpose()?;
    let bytes =
        std::fs::read(module).with_context(|| format!("cannot read the module {}", module.display()))?;
    let text = std::fs::read_to_string(cases)
        .with_context(|| format!("cannot read the cases {}", cases.display()))?;
    let host = arbiter_policy::Host::new(&arbiter_policy::HostConfig {
        max_concurrent: 1,
        ..Default::default()
    })?;
    let options = arbiter_policy::cases::Options { format, settings };
    let report =
        arbiter_policy::cases::run_with(&host, &bytes, &text, &options, &mut std::io::stdout().lock())
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
