//! Arbiter's HTTP/JSON API: the gRPC API transcoded by its own
//! `google.api.http` annotations, with RFC 9457 problem details and HTTP
//! conditional requests.
//!
//! # Layout
//! - [`rules`]: the routes, read from the descriptors at start; no handler
//!   is written per method, so an annotated RPC added to the protos is
//!   served over HTTP with no other change.
//! - [`template`]: path templates (`/v1/{vm.name=tenants/*/vms/*}:start`).
//! - [`transcode`]: body, path and query into a request message and a
//!   reply into JSON, by the proto3 JSON mapping (prost-reflect).
//! - [`grpc`]: the in-process call into the gRPC service stack, so HTTP
//!   requests share its authentication, policies and code path.
//! - [`gateway`]: the handler: routing, `ETag`/`Last-Modified`,
//!   `If-Match`, `If-None-Match`, `If-Unmodified-Since`,
//!   `Idempotency-Key`, body limits.
//! - [`problem`]: problem details and the `/problems/{reason}` pages.
//! - [`openapi`]: the OpenAPI 3.1 document, from the same routes.

pub mod gateway;
pub mod grpc;
pub mod openapi;
pub mod problem;
pub mod rules;
pub mod stream;
pub mod template;
pub mod transcode;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use prost_reflect::DescriptorPool;

pub use gateway::{Admission, Admit, Gateway, Limits};
pub use grpc::GrpcService;
pub use rules::{Route, RuleError};

/// Settings of the HTTP API.
#[derive(Clone, Default)]
pub struct Options {
    /// Body limits.
    pub limits: Limits,
    /// The public base URL of problem types (`https://api.example.com`);
    /// without it, they are built from the request's `Host`.
    pub base_url: Option<String>,
    /// The pattern of an id (one segment of a resource name) in the
    /// OpenAPI document; default: any segment.
    pub id_pattern: Option<String>,
    /// Authenticates each request on its headers before its body is read;
    /// without it every request is admitted with [`Admission::Uploads`]
    /// and authentication is left to the gRPC services.
    pub admit: Option<Admit>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("limits", &self.limits)
            .field("base_url", &self.base_url)
            .field("id_pattern", &self.id_pattern)
            .field("admit", &self.admit.is_some())
            .finish()
    }
}

/// The router of the API described by `pool`, served by `grpc`: every
/// annotated method, `/openapi.json` and `/problems/{reason}`.
pub fn router(pool: &DescriptorPool, grpc: GrpcService, options: Options) -> Result<Router, RuleError> {
    let routes = rules::routes(pool)?;
    let id_pattern = options.id_pattern.as_deref().unwrap_or("^[^/]+$");
    let document = openapi::document(&routes, id_pattern);
    let document = Arc::new(serde_json::to_vec_pretty(&document).unwrap_or_default());
    let gateway = Arc::new(Gateway::new(routes, grpc, options));
    Ok(Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { ([(header::CONTENT_TYPE, "application/json")], document.to_vec()) }
            }),
        )
        .route("/problems/{reason}", get(problem_page))
        .fallback(move |request: Request| {
            let gateway = Arc::clone(&gateway);
            async move { gateway.handle(request).await }
        }))
}

/// The page that explains a problem type.
async fn problem_page(Path(kebab): Path<String>) -> Response {
    let Some(reason) = problem::REASONS
        .iter()
        .find(|r| problem::kebab(r.reason) == kebab)
    else {
        let mut response = (StatusCode::NOT_FOUND, format!("no problem type {kebab}\n")).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    };
    let status = reason.status;
    Html(format!(
        "<!doctype html>\n<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n\
         <p>HTTP {code} {text} &middot; <code>ErrorInfo.reason</code> <code>{reason}</code></p>\n\
         <p>{resolve}</p>\n</body></html>\n",
        title = reason.title,
        code = status.as_u16(),
        text = status.canonical_reason().unwrap_or_default(),
        reason = reason.reason,
        resolve = reason.resolve,
    ))
    .into_response()
}
