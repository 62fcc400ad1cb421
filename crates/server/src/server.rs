//! Wiring: open the store, build the services, bind, serve until told to
//! stop, then drain and close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arbiter_api::v1::{
    changes_server::ChangesServer, policies_server::PoliciesServer, prompts_server::PromptsServer,
    stats_server::StatsServer, transactions_server::TransactionsServer, users_server::UsersServer,
    virtual_machines_server::VirtualMachinesServer,
};
use arbiter_core::{Engine, EngineConfig};
use arbiter_store::{AnyStore, EtcdOptions, EtcdStore, RocksOptions, RocksStore, Store};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tower::Layer;

use crate::auth::{self, Tokens};
use crate::config::{Config, StoreKind};
use crate::limits::Limiter;
use crate::middleware::RequestLayer;
use crate::readiness::{self, Readiness};
use crate::services::{Api, Closing};

/// How often old changes and expired idempotency records are purged.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The first-start admin token, when no tokens file is configured.
    pub admin_token: Option<String>,
    /// The engine that serves (for tools and tests that work on the store
    /// directly, e.g. compacting the change log now).
    pub engine: Arc<Engine<AnyStore>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting requests, finishes the ones in flight, closes the
    /// store.
    pub async fn stop(self) -> anyhow::Result<()> {
        // The server may already have stopped on its own; then its result tells.
        let _ = self.stop.send(());
        self.task.await.context("the server task panicked")?
    }

    /// Waits until the server stops on its own (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("the server task panicked")?
    }
}

fn load_tokens(config: &Config) -> anyhow::Result<(Tokens, Option<String>)> {
    if let Some(path) = &config.tokens {
        return Ok((Tokens::load(path)?, None));
    }
    if config.store == StoreKind::Etcd {
        anyhow::bail!(
            "--store etcd needs --tokens FILE: replicas must accept the same tokens, and a first-start token is per process"
        );
    }
    let (token, path) = auth::bootstrap_admin(&config.data_dir)?;
    tracing::warn!(
        path = %path.display(),
        "no --tokens file: using the admin token stored at {}; pass --tokens FILE in production",
        path.display()
    );
    Ok((Tokens::admin(&token), Some(token)))
}

/// Opens the store, binds both addresses and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (tokens, admin_token) = load_tokens(&config)?;
    let quotas = config.quotas()?;
    let tls = config
        .tls()?
        .map(|files| crate::tls::Acceptors::new(&files))
        .transpose()?;
    let limiter = Arc::new(config.limiter()?);
    crate::metrics::install();
    let store = open_store(&config).await?;
    let host = arbiter_policy::Host::new(&config.policy_host())?;
    let engine_config = EngineConfig {
        policy: config.policy(),
        require_etag: config.require_preconditions.iter().cloned().collect(),
        list_scan_limit: config.list_scan_limit.max(1),
        quotas,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::with_runtime(
        Arc::new(store),
        engine_config,
        Arc::new(host),
    ));
    let unused = engine
        .forget_unused_quotas()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the quota counts: {e}"))?;
    if unused > 0 {
        tracing::info!(unused, "removed the counts of quotas no longer configured");
    }
    let max_upload = usize::try_from(config.policy_max_module_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let settings = Settings {
        max_upload,
        limiter,
        tls,
        http: arbiter_http::Options {
            limits: arbiter_http::Limits {
                // Modules travel base64-encoded in JSON: 4/3 of their size.
                upload_bytes: max_upload.saturating_mul(4) / 3,
                ..arbiter_http::Limits::default()
            },
            base_url: config.public_url.clone(),
            id_pattern: Some(arbiter_core::validate::ID_PATTERN.to_string()),
            admit: None,
        },
        retention: config.history_retention,
        stats_flush: config.stats_flush_interval,
    };
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (grpc_addr)", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (http_addr)", config.http_addr))?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(serve(Arc::clone(&engine), tokens, grpc, http, stopped, settings));
    tracing::info!(%grpc_addr, %http_addr, store = ?config.store, data_dir = %config.data_dir.display(), "serving");
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_token,
        engine,
        stop,
        task,
    })
}

/// Opens the configured store: RocksDB in the data dir, or etcd.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    if !config.fsync {
        tracing::warn!(
            "fsync is off: acknowledged writes can be lost on a crash; use this for benchmarks only"
        );
    }
    match config.store {
        StoreKind::Rocksdb => {
            let options = RocksOptions {
                fsync: config.fsync,
                ..RocksOptions::default()
            };
            let store = RocksStore::open(&config.data_dir.join("db"), options)
                .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
            Ok(AnyStore::Rocks(store))
        }
        StoreKind::Etcd => {
            let options = EtcdOptions {
                endpoints: config.etcd_endpoints.clone(),
                prefix: config.etcd_prefix.clone(),
                ..EtcdOptions::default()
            };
            let store = EtcdStore::connect(options)
                .await
                .with_context(|| format!("cannot use etcd at {}", config.etcd_endpoints.join(",")))?;
            Ok(AnyStore::Etcd(Box::new(store)))
        }
    }
}

/// Server reflection over the API, health and the error model, so that
/// grpcurl can call every method and decode error details.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(arbiter_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(arbiter_api::RPC_DESCRIPTOR_SET)
}

/// HTTP requests are authenticated on their headers before their bodies
/// are read; only admins may send the large bodies of policy uploads.
fn admit(tokens: Arc<Tokens>) -> arbiter_http::Admit {
    Arc::new(move |headers: &http::HeaderMap| {
        let header = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let caller = tokens
            .authenticate(header)
            .map_err(|e| crate::status::to_status(&e))?;
        Ok(if caller.role == arbiter_core::Role::Admin {
            arbiter_http::Admission::Uploads
        } else {
            arbiter_http::Admission::Ordinary
        })
    })
}

/// What `serve` needs beyond the engine and listeners.
struct Settings {
    /// Largest gRPC message of the Policies service.
    max_upload: usize,
    /// Per-tenant request limits.
    limiter: Arc<Limiter>,
    /// TLS, when on.
    tls: Option<crate::tls::Acceptors>,
    /// HTTP API settings.
    http: arbiter_http::Options,
    /// How long the change log keeps changes.
    retention: Duration,
    /// How often the statistics of refused requests are written.
    stats_flush: Duration,
}

/// The gRPC services of the API on `engine`, added to `routes` (which
/// holds health): what the server serves (behind [`RequestLayer`]) and
/// what the HTTP/JSON API calls in process; the fuzz targets drive the
/// same. Watches end when `closing` comes.
pub fn routes(
    routes: tonic::service::Routes,
    engine: &Arc<Engine<AnyStore>>,
    limiter: &Arc<Limiter>,
    max_upload: usize,
    closing: Closing,
) -> anyhow::Result<tonic::service::Routes> {
    let api = Api::new(Arc::clone(engine), Arc::clone(limiter), closing);
    Ok(routes
        .add_service(reflection_builder().build_v1()?)
        .add_service(reflection_builder().build_v1alpha()?)
        .add_service(VirtualMachinesServer::new(api.clone()))
        .add_service(UsersServer::new(api.clone()))
        .add_service(PromptsServer::new(api.clone()))
        .add_service(ChangesServer::new(api.clone()))
        .add_service(StatsServer::new(api.clone()))
        .add_service(TransactionsServer::new(api.clone()))
        .add_service(PoliciesServer::new(api).max_decoding_message_size(max_upload)))
}

async fn serve(
    engine: Arc<Engine<AnyStore>>,
    tokens: Tokens,
    grpc: TcpListener,
    http: TcpListener,
    stopped: impl Future<Output = Result<(), oneshot::error::RecvError>> + Send + 'static,
    settings: Settings,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    readiness::report(&reporter, false).await;
    let ready = Arc::new(Readiness::default());
    let follow = tokio::spawn(readiness::follow(
        Arc::clone(&engine),
        reporter.clone(),
        Arc::clone(&ready),
    ));
    let follow_abort = follow.abort_handle();
    let (close_streams, closing) = Closing::new();
    let routes = routes(
        tonic::service::Routes::new(health),
        &engine,
        &settings.limiter,
        settings.max_upload,
        closing,
    )?;
    let sweep = tokio::spawn(Arc::clone(&settings.limiter).sweep());
    let tokens = Arc::new(tokens);
    let layer = RequestLayer::new(Arc::clone(&tokens));
    let in_process = tower::util::BoxCloneSyncService::new(layer.clone().layer(routes.clone()));
    let pool = arbiter_api::json::pool()?;
    let mut http_options = settings.http;
    http_options.admit = Some(admit(Arc::clone(&tokens)));
    let api = arbiter_http::router(pool, in_process, http_options)?;
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let http_tls = settings.tls.as_ref().map(|t| crate::ops::HttpTls {
        acceptor: t.http.clone(),
        tokens: Arc::clone(&tokens),
    });
    let http_task = tokio::spawn(crate::ops::serve(
        http,
        api,
        Arc::clone(&ready),
        http_tls,
        async {
            let _ = http_stopped.await;
        },
    ));
    let compact = tokio::spawn(compact_loop(Arc::clone(&engine), settings.retention));
    let policies = tokio::spawn(engine.follow_policies());
    let stats = tokio::spawn(stats_loop(Arc::clone(&engine), settings.stats_flush));
    let router = tonic::transport::Server::builder()
        // Streams one connection may hold open at once, and pings that
        // find connections whose peer is gone.
        .max_concurrent_streams(crate::ops::MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(layer)
        .add_routes(routes);
    let draining = Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let draining = Arc::clone(&draining);
        async move {
            let _ = stopped.await;
            let _ = close_streams.send(true);
            follow_abort.abort();
            readiness::report(&reporter, false).await;
            tracing::info!("shutting down: finishing requests in flight");
            draining.notify_one();
        }
    };
    // TCP_NODELAY: a response's frames go out in separate writes, which
    // Nagle's algorithm would hold until the client's delayed ACK.
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let serving: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match settings.tls {
            None => Box::pin(router.serve_with_incoming_shutdown(incoming, shutdown)),
            Some(tls) => Box::pin(
                router.serve_with_incoming_shutdown(crate::tls::incoming(incoming, tls.grpc), shutdown),
            ),
        };
    // Streams that never end by themselves (watches, health watches) do
    // not hold a shutdown up for longer than the drain time.
    let result = tokio::select! {
        result = serving => result,
        () = async {
            draining.notified().await;
            tokio::time::sleep(crate::ops::DRAIN).await;
        } => {
            tracing::warn!("gRPC streams still open after {:?} of shutdown were dropped", crate::ops::DRAIN);
            Ok(())
        }
    };
    let _ = http_stop.send(());
    let _ = http_task.await;
    // The background tasks hold the engine: wait until they are gone, so
    // that the store is closed when this returns (a restart in the same
    // process opens it again).
    for task in [compact, policies, sweep, follow, stats] {
        task.abort();
        let _ = task.await;
    }
    // What was counted since the last flush.
    if let Err(e) = engine.flush_conflict_stats().await {
        tracing::warn!(error = %e, "writing conflict statistics at shutdown failed");
    }
    drop(engine);
    tracing::info!("stopped");
    result.context("the gRPC server failed")
}

/// Writes the statistics of refused requests every `every`, and deletes
/// those past their retention every hour.
async fn stats_loop(engine: Arc<Engine<AnyStore>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Err(e) = engine.flush_conflict_stats().await {
            tracing::warn!(error = %e, "writing conflict statistics failed; retrying at the next flush");
        }
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_STATS_EVERY) {
            pruned = Some(tokio::time::Instant::now());
            if let Err(e) = engine.prune_conflict_stats().await {
                tracing::warn!(error = %e, "deleting old conflict statistics failed");
            }
        }
    }
}

/// How often statistics past their retention are deleted.
const PRUNE_STATS_EVERY: Duration = Duration::from_secs(3600);

/// Forgets changes older than `retention` and expired request records,
/// every minute.
async fn compact_loop(engine: Arc<Engine<AnyStore>>, retention: Duration) {
    let mut tick = tokio::time::interval(COMPACT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match engine.store().compact(now.saturating_sub(keep), now).await {
            Ok(oldest) => {
                metrics::gauge!("arbiter_history_oldest_revision").set(oldest as f64);
            }
            Err(e) => tracing::warn!(error = %e, "compacting the change log failed"),
        }
    }
}
