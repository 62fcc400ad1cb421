//! The tower layer in front of every gRPC service: one `tracing` span per
//! request (method, tenant, principal, code, latency) and bearer-token
//! authentication. The resolved [`Caller`](arbiter_core::Caller) travels to
//! the handlers as a request extension. Health checks and reflection are
//! open, so probes and `grpcurl list` need no token.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

use arbiter_core::Error;

use crate::auth::Tokens;
use crate::status::to_status;

const OPEN_PREFIXES: [&str; 2] = ["/grpc.health.v1.", "/grpc.reflection."];

/// The gRPC methods served besides the API's own.
const OPEN_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Every method path the server serves: the only values the `method`
/// label of the request metrics takes, besides `unknown`, so that a client
/// sending made-up paths cannot add series.
static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut methods: HashSet<String> = OPEN_METHODS.iter().map(|m| (*m).to_string()).collect();
    if let Ok(pool) = arbiter_api::json::pool() {
        for service in pool.services() {
            for method in service.methods() {
                methods.insert(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
    }
    methods
});

/// The `method` label of a request path.
fn method_label(path: &str) -> String {
    if METHODS.contains(path) {
        path.to_string()
    } else {
        "unknown".to_string()
    }
}

/// Health `Watch` streams open at once: they need no token, so they are
/// bounded for the whole server, not only per connection.
pub const MAX_HEALTH_WATCHES: usize = 1024;
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// Adds the request span and authentication.
#[derive(Debug, Clone)]
pub struct RequestLayer {
    tokens: Arc<Tokens>,
    health_watches: Arc<Semaphore>,
}

impl RequestLayer {
    /// A layer that authenticates against `tokens`.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self {
            tokens,
            health_watches: Arc::new(Semaphore::new(MAX_HEALTH_WATCHES)),
        }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            tokens: Arc::clone(&self.tokens),
            health_watches: Arc::clone(&self.health_watches),
        }
    }
}

/// The service [`RequestLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct RequestService<S> {
    inner: S,
    tokens: Arc<Tokens>,
    health_watches: Arc<Semaphore>,
}

/// A response body that holds a permit until the stream ends.
struct Held {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The names of the client certificate a TLS connection presented.
fn certificate_names<B>(request: &http::Request<B>) -> Option<Vec<String>> {
    let info = request
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(crate::tls::names_of)
}

fn grpc_code(response: &http::Response<Body>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

impl<S, B> Service<http::Request<B>> for RequestService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_string();
        // The span is made once the caller is known, so that the principal
        // is one of its fields from the start: every field recorded later
        // makes the JSON log format write the span's fields out again.
        let rpc_span = |principal: Option<&str>| {
            tracing::info_span!(
                "rpc",
                method = %method,
                tenant = tracing::field::Empty,
                principal = principal,
                code = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        };
        let span = if OPEN_PREFIXES.iter().any(|p| method.starts_with(p)) {
            rpc_span(None)
        } else {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            // A bearer token, when sent, wins over a client certificate.
            let authenticated = match (header, certificate_names(&request)) {
                (None, Some(names)) => self.tokens.identify(&names).ok_or_else(|| {
                    Error::Unauthenticated(format!(
                        "the client certificate ({}) is not mapped to a principal; send a bearer token, or map it with [[identities]] in the tokens file",
                        names.first().map_or("no name", String::as_str)
                    ))
                }),
                _ => self.tokens.authenticate(header),
            };
            match authenticated {
                Ok(caller) => {
                    let span = rpc_span(Some(caller.principal.as_str()));
                    request.extensions_mut().insert(caller);
                    span
                }
                Err(e) => {
                    let status = to_status(&e);
                    let span = rpc_span(None);
                    span.record("code", tracing::field::debug(status.code()));
                    span.in_scope(|| tracing::info!(latency_ms = 0, "rpc refused: {}", status.message()));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        };
        let mut watch_permit = None;
        if method == HEALTH_WATCH {
            match Arc::clone(&self.health_watches).try_acquire_owned() {
                Ok(permit) => watch_permit = Some(permit),
                Err(_) => {
                    let status = to_status(&Error::RateLimited {
                        what: format!("{MAX_HEALTH_WATCHES} health watches are open on this server"),
                        limit: format!("{MAX_HEALTH_WATCHES} health watches"),
                        retry_after: std::time::Duration::from_secs(1),
                    });
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        }
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = span.in_scope(|| inner.call(request));
        Box::pin(
            async move {
                let mut response = future.await?;
                if let Some(permit) = watch_permit {
                    response = response.map(|inner| {
                        Body::new(Held {
                            inner,
                            _permit: permit,
                        })
                    });
                }
                let span = tracing::Span::current();
                let code = grpc_code(&response);
                let took = started.elapsed().as_secs_f64();
                span.record("code", tracing::field::debug(code));
                span.record("latency_ms", took * 1000.0);
                let labels = [("method", method_label(&method)), ("code", format!("{code:?}"))];
                metrics::counter!("arbiter_grpc_requests_total", &labels).increment(1);
                metrics::histogram!("arbiter_grpc_request_seconds", &labels[..1]).record(took);
                tracing::info!("rpc finished");
                Ok(response)
            }
            .instrument(span),
        )
    }
}
