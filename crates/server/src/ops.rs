//! The HTTP address: the HTTP/JSON API (`arbiter-http`) plus the
//! operations endpoints `/healthz` (the process answers), `/readyz` (the
//! store is open and serving) and `/metrics` (Prometheus).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::readiness::Readiness;

/// Serves the API and the operations endpoints until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    api: Router,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(Arc::clone(&readiness))))
        .route("/metrics", get(metrics))
        .merge(api);
    // Responses go out in more than one write (head, then body): without
    // TCP_NODELAY, Nagle's algorithm holds the body until the client's
    // delayed ACK, about 40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
        }
    });
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the HTTP server failed");
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
