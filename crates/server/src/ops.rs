//! The operations endpoints on the HTTP address: `/healthz` (the process
//! answers) and `/readyz` (the store is open and serving).

use std::future::Future;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

/// Serves the operations endpoints until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the HTTP server failed");
    }
}
