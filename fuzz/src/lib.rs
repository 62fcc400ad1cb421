//! The server's service stack for the fuzz targets: the gRPC services on an
//! engine over a real RocksDB store in a temporary directory (fsync off),
//! behind the same authentication layer, plus the HTTP/JSON router that
//! calls them in process. Built once per fuzzing process.

use std::sync::{Arc, OnceLock};

use arbiter_core::{Engine, EngineConfig};
use arbiter_http::GrpcService;
use arbiter_server::auth::Tokens;
use arbiter_server::middleware::RequestLayer;
use arbiter_store::{AnyStore, RocksOptions, RocksStore};
use tower::Layer;

/// The bearer token the stack accepts (an admin of every tenant).
pub const TOKEN: &str = "fuzz-admin-token";

/// What the targets call.
pub struct Stack {
    /// Runs the services' futures.
    pub runtime: tokio::runtime::Runtime,
    /// The gRPC services behind the authentication layer.
    pub grpc: GrpcService,
    /// The HTTP/JSON API.
    pub http: axum::Router,
    _dir: tempfile::TempDir,
}

/// The process-wide stack, built on first use.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| build().unwrap_or_else(|e| panic!("cannot build the fuzzing stack: {e}")))
}

fn build() -> Result<Stack, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let options = RocksOptions {
        fsync: false,
        ..RocksOptions::default()
    };
    let (grpc, http) = runtime.block_on(async {
        let store = RocksStore::open(dir.path(), options)?;
        // A real policy host, so that uploads go through compilation.
        let host = arbiter_policy::Host::new(&arbiter_policy::HostConfig {
            max_concurrent: 4,
            ..arbiter_policy::HostConfig::default()
        })?;
        let engine = Arc::new(Engine::with_runtime(
            Arc::new(AnyStore::Rocks(store)),
            EngineConfig::default(),
            Arc::new(host),
        ));
        let (_, health) = tonic_health::server::health_reporter();
        let routes = arbiter_server::server::routes(
            tonic::service::Routes::new(health),
            &engine,
            &std::sync::Arc::new(arbiter_server::limits::Limiter::unlimited()),
            1 << 20,
            arbiter_server::services::Closing::never(),
        )?;
        let layer = RequestLayer::new(Arc::new(Tokens::admin(TOKEN)));
        let grpc = GrpcService::new(layer.layer(routes));
        let http = arbiter_http::router(arbiter_api::json::pool()?, grpc.clone(), Default::default())?;
        Ok::<_, Box<dyn std::error::Error>>((grpc, http))
    })?;
    Ok(Stack {
        runtime,
        grpc,
        http,
        _dir: dir,
    })
}

/// Calls the gRPC `method` with the encoded `message` through the stack,
/// as an admin; the status code of the reply.
pub fn call(method: &str, message: &[u8]) -> tonic::Code {
    use bytes::{BufMut, Bytes, BytesMut};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    let request = http::Request::post(method)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(tonic::body::Body::new(http_body_util::Full::new(Bytes::from(
            frame,
        ))))
        .unwrap_or_else(|e| panic!("{method}: cannot build the request: {e}"));
    let stack = stack();
    let code = stack.runtime.block_on(async {
        let response = stack
            .grpc
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(
            response.status(),
            http::StatusCode::OK,
            "{method}: gRPC answers 200"
        );
        let mut code = response.headers().get("grpc-status").cloned();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{method}: the reply body is unreadable: {e}"));
        if let Some(trailers) = body.trailers() {
            code = code.or_else(|| trailers.get("grpc-status").cloned());
        }
        code
    });
    let code = code.unwrap_or_else(|| panic!("{method}: a reply without grpc-status"));
    tonic::Code::from_bytes(code.as_bytes())
}
