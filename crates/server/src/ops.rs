//! The HTTP address: the HTTP/JSON API (`arbiter-http`) plus the
//! operations endpoints `/healthz` (the process answers), `/readyz` (the
//! store is open and serving) and `/metrics` (Prometheus), and the
//! console at `/ui/`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::Tokens;
use crate::readiness::Readiness;

/// A client must send a request's whole header within this time, or its
/// connection is closed (slowloris); it also bounds how long an idle
/// HTTP/1.1 connection is kept for its next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further clients wait in the kernel's
/// accept queue.
pub const MAX_CONNECTIONS: usize = 4096;
/// HTTP/2 streams (requests, watches) one connection may hold open at
/// once, on both listeners.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest request header (the request line and header fields): 431 past it.
const MAX_HEADER_BYTES: usize = 64 << 10;
/// How long a shutdown waits for open requests before it drops them.
pub const DRAIN: Duration = Duration::from_secs(10);

/// TLS on the HTTP listener: the acceptor, and the tokens whose
/// identities map client certificates to callers.
#[derive(Clone)]
pub struct HttpTls {
    /// Handshakes with clients.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Maps a client certificate to the in-process token of its identity.
    pub tokens: Arc<Tokens>,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTls").finish_non_exhaustive()
    }
}

/// Serves the API and the operations endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    api: Router,
    readiness: Arc<Readiness>,
    tls: Option<HttpTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(Arc::clone(&readiness))))
        .route("/metrics", get(metrics))
        .merge(crate::console::router())
        .merge(api);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses go out in more than one write (head, then body):
        // without TCP_NODELAY, Nagle's algorithm holds the body until the
        // client's delayed ACK, about 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
        }
        let (builder, app, watcher, tls) = (builder.clone(), app.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(&builder, watcher, TokioIo::new(tcp), app, None).await,
                Some(tls) => {
                    let Some(stream) = crate::tls::handshake(&tls.acceptor, tcp).await else {
                        return;
                    };
                    // A mapped client certificate stands for a token; a
                    // bearer token sent with a request wins over it.
                    let token = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(crate::tls::names_of)
                        .and_then(|names| tls.tokens.identity_token(&names).map(str::to_string));
                    serve_connection(&builder, watcher, TokioIo::new(stream), app, token).await;
                }
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still open after {DRAIN:?} of shutdown were dropped");
    }
}

/// Serves one connection; requests without an `authorization` header
/// carry `identity`'s token.
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: TokioIo<I>,
    app: Router,
    identity: Option<String>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let bearer = identity.and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok());
    let app = tower::util::MapRequest::new(app, move |mut request: http::Request<hyper::body::Incoming>| {
        if let Some(bearer) = &bearer
            && !request.headers().contains_key(header::AUTHORIZATION)
        {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, bearer.clone());
        }
        request
    });
    let connection = builder
        .serve_connection_with_upgrades(io, TowerToHyperService::new(app))
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

async fn ready(readiness: Arc<Readiness>) -> impl IntoResponse {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store does not answer\n",
        )
    }
}

async fn metrics() -> impl IntoResponse {
    match crate::metrics::render() {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "another metrics recorder is installed in this process\n".to_string(),
        ),
    }
}
