//! The transcoding handler: finds the route of an HTTP request, applies
//! the conditional-request headers (RFC 9110 §13), transcodes it, calls the
//! gRPC service in-process and answers with JSON or problem details.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use prost_reflect::{DynamicMessage, Kind, ReflectMessage};
use serde_json::Value;
use tonic::Code;

use crate::grpc::{self, GrpcService};
use crate::problem::Problem;
use crate::rules::{Body as BodyRule, Route};
use crate::stream;
use crate::transcode::{self, Extra, Malformed};

/// The values of a route's path variables, by field path.
type Variables = Vec<(String, String)>;

/// Body limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body of an ordinary request.
    pub body_bytes: usize,
    /// Largest body of a request that carries bytes (policy modules,
    /// base64-encoded in JSON).
    pub upload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            upload_bytes: 96 << 20,
        }
    }
}

/// What a request's headers entitle it to, decided before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Bodies up to [`Limits::body_bytes`].
    Ordinary,
    /// Also bodies up to [`Limits::upload_bytes`] on the routes that carry
    /// bytes (policy uploads).
    Uploads,
}

/// Authenticates a request on its headers alone. An error ends the request
/// before a byte of its body is read, so that a caller without a valid
/// token cannot make the server buffer or parse anything.
pub type Admit = Arc<dyn Fn(&HeaderMap) -> Result<Admission, tonic::Status> + Send + Sync>;

/// The routes and where to send them.
pub struct Gateway {
    pub(crate) routes: Vec<Route>,
    grpc: GrpcService,
    limits: Limits,
    base_url: Option<String>,
    admit: Option<Admit>,
}

/// What the headers ask of a request.
#[derive(Debug, Default)]
struct Conditions {
    /// `If-Match` or `If-Unmodified-Since` was given: an etag mismatch is 412.
    precondition: bool,
    /// `If-None-Match: *` on a create: an existing name is 412.
    create_only: bool,
    /// `If-None-Match` on a read: the etags that make it 304.
    not_modified_for: Vec<String>,
}

fn header_text<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The entity tags of a list header; `*` stays `*`.
fn etags(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn has_field(message: &prost_reflect::MessageDescriptor, name: &str) -> bool {
    message.get_field_by_name(name).is_some()
}

impl Gateway {
    /// A gateway over `routes` that calls `grpc`. `base_url` makes problem
    /// types absolute; without it they are built from the `Host` header.
    pub fn new(routes: Vec<Route>, grpc: GrpcService, options: crate::Options) -> Self {
        Self {
            routes,
            grpc,
            limits: options.limits,
            base_url: options.base_url,
            admit: options.admit,
        }
    }

    fn base(&self, headers: &HeaderMap) -> String {
        if let Some(base) = &self.base_url {
            return base.trim_end_matches('/').to_string();
        }
        let host = header_text(headers, &header::HOST).unwrap_or("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http");
        format!("{scheme}://{host}")
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, request: http::Request<Body>) -> http::Response<Body> {
        let started = std::time::Instant::now();
        let method = request.method().clone();
        let route = self
            .routes
            .iter()
            .find(|r| r.method == method && r.template.matches(request.uri().path()).is_some())
            .map_or("-", |r| r.rpc.name())
            .to_string();
        let response = self.respond(request).await;
        // Only the methods HTTP defines: a made-up method adds no series.
        let method = match method {
            Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::OPTIONS
            | Method::CONNECT
            | Method::TRACE => method.to_string(),
            _ => "other".to_string(),
        };
        let labels = [
            ("method", method),
            ("route", route),
            ("status", response.status().as_str().to_string()),
        ];
        metrics::counter!("arbiter_http_requests_total", &labels).increment(1);
        metrics::histogram!("arbiter_http_request_seconds", &labels[1..2])
            .record(started.elapsed().as_secs_f64());
        response
    }

    async fn respond(&self, request: http::Request<Body>) -> http::Response<Body> {
        let base = self.base(request.headers());
        let instance = request.uri().path().to_string();
        match self.answer(request, &base).await {
            Ok(response) => response,
            Err(Failure::Status(status)) => Problem::from_status(&status, &instance, &base).into_response(),
            Err(Failure::Precondition(status)) => {
                let mut problem = Problem::from_status(&status, &instance, &base);
                problem.status = StatusCode::PRECONDITION_FAILED;
                problem.body.insert("status".into(), Value::from(412));
                problem.into_response()
            }
            Err(Failure::Malformed(m)) => {
                Problem::new("MALFORMED_REQUEST", Code::InvalidArgument, &m.0, &instance, &base)
                    .into_response()
            }
            Err(Failure::Http(reason, detail, allow)) => {
                let code = match reason {
                    "ROUTE_NOT_FOUND" => Code::NotFound,
                    "METHOD_NOT_ALLOWED" => Code::Unimplemented,
                    "PAYLOAD_TOO_LARGE" => Code::ResourceExhausted,
                    _ => Code::InvalidArgument,
                };
                let mut response = Problem::new(reason, code, &detail, &instance, &base).into_response();
                if let Some(allow) = allow
                    && let Ok(value) = HeaderValue::from_str(&allow)
                {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            }
        }
    }

    fn find(&self, method: &Method, path: &str) -> Result<(&Route, Variables), Failure> {
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            if let Some(variables) = route.template.matches(path) {
                if route.method == method {
                    return Ok((route, variables));
                }
                allowed.push(route.method.as_str());
            }
        }
        if allowed.is_empty() {
            return Err(Failure::Http(
                "ROUTE_NOT_FOUND",
                format!("no API route has the path {path}"),
                None,
            ));
        }
        allowed.sort_unstable();
        allowed.dedup();
        let allow = allowed.join(", ");
        Err(Failure::Http(
            "METHOD_NOT_ALLOWED",
            format!("{path} does not take {method}; it takes {allow}"),
            Some(allow),
        ))
    }

    async fn answer(
        &self,
        request: http::Request<Body>,
        base: &str,
    ) -> Result<http::Response<Body>, Failure> {
        let (parts, body) = request.into_parts();
        let (route, variables) = self.find(&parts.method, parts.uri.path())?;
        let admission = match &self.admit {
            Some(admit) => admit(&parts.headers).map_err(Failure::Status)?,
            None => Admission::Uploads,
        };
        let body = self.read_body(route, admission, &parts.headers, body).await?;
        let authorization = parts.headers.get(header::AUTHORIZATION);
        let (mut extra, conditions) = self.conditions(route, &parts, authorization).await?;
        if route.rpc.is_server_streaming() {
            resume_after_last_event(route, &parts.headers, &mut extra)?;
            let message =
                transcode::request(route, &variables, &extra, parts.uri.query().unwrap_or(""), body)?;
            let (_, stream) = grpc::call(&self.grpc, &route.grpc_path, authorization, message)
                .await
                .map_err(Failure::Status)?;
            let origin = stream::Origin {
                instance: parts.uri.path().to_string(),
                base: base.to_string(),
            };
            let format = stream::Format::of(&parts.headers);
            return Ok(stream::response(format, route.rpc.output(), stream, origin));
        }
        let message = transcode::request(route, &variables, &extra, parts.uri.query().unwrap_or(""), body)?;
        let (metadata, reply) = match grpc::unary(&self.grpc, &route.grpc_path, authorization, message).await
        {
            Ok(reply) => reply,
            Err(status) => return Err(conditions.failure(status)),
        };
        let (decoded, json) = transcode::reply(&route.rpc.output(), reply)
            .map_err(|e| Failure::Status(tonic::Status::internal(e)))?;
        let etag = text_field(&decoded, "etag");
        if etag.as_deref().is_some_and(|e| {
            conditions
                .not_modified_for
                .iter()
                .any(|t| t == "*" || weak_eq(t, e))
        }) {
            return Ok(with_validators(empty(StatusCode::NOT_MODIFIED), &decoded));
        }
        let mut response = http::Response::new(Body::from(json));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        add_warnings(response.headers_mut(), &metadata);
        Ok(with_validators(response, &decoded))
    }

    async fn read_body(
        &self,
        route: &Route,
        admission: Admission,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Option<Value>, Failure> {
        if route.body == BodyRule::None {
            return Ok(None);
        }
        let uploads = carries_bytes(&route.rpc.input());
        let limit = if uploads && admission == Admission::Uploads {
            self.limits.upload_bytes
        } else {
            self.limits.body_bytes
        };
        let too_large = || {
            let who = if uploads && admission == Admission::Ordinary {
                " for callers without the admin role (uploads take an admin token)"
            } else {
                ""
            };
            Failure::Http(
                "PAYLOAD_TOO_LARGE",
                format!("the body is larger than this route's limit of {limit} bytes{who}"),
                None,
            )
        };
        let declared = header_text(headers, &header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let media = header_text(headers, &header::CONTENT_TYPE).unwrap_or_default();
        let essence = media
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Failure::Http(
                "UNSUPPORTED_MEDIA_TYPE",
                format!("the body is {media:?}; send it as application/json"),
                None,
            ));
        }
        transcode::parse_body(&bytes)
            .map(Some)
            .map_err(Failure::Malformed)
    }

    /// Turns the conditional headers and `Idempotency-Key` into request
    /// fields and expectations.
    async fn conditions(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        authorization: Option<&HeaderValue>,
    ) -> Result<(Extra, Conditions), Failure> {
        let headers = &parts.headers;
        let input = route.rpc.input();
        let mut extra = Extra::new();
        let mut conditions = Conditions::default();
        if let Some(key) = header_text(
            headers,
            &"idempotency-key".parse().map_err(|_| Failure::internal())?,
        ) && has_field(&input, "request_id")
        {
            extra.push(("request_id".into(), key.to_string()));
        }
        let none_match = header_text(headers, &header::IF_NONE_MATCH).map(etags);
        if parts.method == Method::GET || parts.method == Method::HEAD {
            conditions.not_modified_for = none_match.unwrap_or_default();
            return Ok((extra, conditions));
        }
        if none_match.is_some_and(|t| t == ["*"]) {
            conditions.create_only = true;
        }
        let Some(etag_field) = etag_field(route) else {
            return Ok((extra, conditions));
        };
        let if_match = header_text(headers, &header::IF_MATCH).map(etags);
        let since = header_text(headers, &header::IF_UNMODIFIED_SINCE);
        match (if_match, since) {
            (Some(tags), _) if tags == ["*"] => {}
            (Some(tags), _) if tags.len() == 1 => {
                conditions.precondition = true;
                extra.push((etag_field, tags[0].clone()));
            }
            (Some(tags), _) => {
                conditions.precondition = true;
                let current = self.current(route, parts, authorization).await?;
                let etag = text_field(&current, "etag").unwrap_or_default();
                if !tags.contains(&etag) {
                    return Err(Failure::Precondition(mismatch(&current, &tags.join(", "))));
                }
                extra.push((etag_field, etag));
            }
            (None, Some(since)) => {
                conditions.precondition = true;
                let since = httpdate::parse_http_date(since).map_err(|_| {
                    Failure::Malformed(Malformed(format!(
                        "If-Unmodified-Since {since:?} is not an HTTP date"
                    )))
                })?;
                let current = self.current(route, parts, authorization).await?;
                let etag = text_field(&current, "etag").unwrap_or_default();
                if update_time(&current).is_some_and(|changed| truncate_secs(changed) > since) {
                    let given = format!("unmodified since {}", httpdate::fmt_http_date(since));
                    return Err(Failure::Precondition(mismatch(&current, &given)));
                }
                extra.push((etag_field, etag));
            }
            (None, None) => {}
        }
        Ok((extra, conditions))
    }

    /// The resource as it is now, through the `GET` route of its path.
    async fn current(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        authorization: Option<&HeaderValue>,
    ) -> Result<DynamicMessage, Failure> {
        let path = parts.uri.path();
        let path = match route.template.verb() {
            Some(verb) => path.strip_suffix(&format!(":{verb}")).unwrap_or(path),
            None => path,
        };
        let (get, get_vars) = self.find(&Method::GET, path).map_err(|_| {
            Failure::Malformed(Malformed(format!(
                "{path} cannot be read to check the precondition"
            )))
        })?;
        let message = transcode::request(get, &get_vars, &Extra::new(), "", None)?;
        let (_, reply) = grpc::unary(&self.grpc, &get.grpc_path, authorization, message)
            .await
            .map_err(Failure::Status)?;
        let (decoded, _) = transcode::reply(&get.rpc.output(), reply)
            .map_err(|e| Failure::Status(tonic::Status::internal(e)))?;
        Ok(decoded)
    }
}

impl Conditions {
    /// A failed header precondition is 412, not the 409 of a stale body etag.
    fn failure(&self, status: tonic::Status) -> Failure {
        let header_failed = match status.code() {
            Code::Aborted => self.precondition && reason_of(&status) == "ETAG_MISMATCH",
            Code::AlreadyExists => self.create_only,
            _ => false,
        };
        if header_failed {
            Failure::Precondition(status)
        } else {
            Failure::Status(status)
        }
    }
}

/// The gRPC metadata key of the warnings an answer carries (the HTTP layer
/// depends on no API crate; `arbiter_api::WARNING_METADATA` is the same).
const WARNING_METADATA: &str = "arbiter-warning";

/// Each warning of a gRPC answer as an HTTP `Warning: 299 - "text"`
/// header (RFC 7234 §5.5, "miscellaneous persistent warning").
fn add_warnings(headers: &mut HeaderMap, metadata: &HeaderMap) {
    for value in metadata.get_all(WARNING_METADATA) {
        let Ok(text) = value.to_str() else { continue };
        let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(warning) = HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            headers.append(header::WARNING, warning);
        }
    }
}

fn reason_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The `ETAG_MISMATCH` of a header precondition found failed before the
/// call, with the resource as it is now.
/// The `ETAG_MISMATCH` of a header precondition the gateway checks itself
/// (several `If-Match` tags, `If-Unmodified-Since`), with the same
/// members as the service's own: the current etag, state, author and time
/// (RFC 3339, as in the resource), and the resource's `ResourceInfo`.
fn mismatch(current: &DynamicMessage, expected: &str) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let name = text_field(current, "name").unwrap_or_default();
    let etag = text_field(current, "etag").unwrap_or_default();
    // The proto3 JSON form names the state and writes the time in RFC 3339.
    let json = serde_json::to_value(current).unwrap_or_default();
    let text = |key: &str| {
        json.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (updated_by, update_time) = (text("updatedBy"), text("updateTime"));
    let metadata = std::collections::HashMap::from([
        ("resource".to_string(), name.clone()),
        ("expected_etag".to_string(), expected.to_string()),
        ("current_etag".to_string(), etag.clone()),
        ("current_state".to_string(), text("state")),
        ("updated_by".to_string(), updated_by.clone()),
        ("update_time".to_string(), update_time.clone()),
    ]);
    let mut details = ErrorDetails::with_error_info("ETAG_MISMATCH", "arbiter", metadata);
    let owner = name.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
    details.set_resource_info(
        current.descriptor().full_name(),
        name.clone(),
        owner,
        "changed since the etag was read",
    );
    tonic::Status::with_error_details(
        Code::Aborted,
        format!(
            "{name} was changed by {updated_by} at {update_time} and does not meet the precondition ({expected}): its etag is now {etag}; get it again, reapply your change and retry with the new etag"
        ),
        details,
    )
}

/// `Last-Event-ID` (a reconnecting event source) resumes a stream after
/// that revision: `start_revision` is set to the one after it.
fn resume_after_last_event(route: &Route, headers: &HeaderMap, extra: &mut Extra) -> Result<(), Failure> {
    let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if !has_field(&route.rpc.input(), "start_revision") {
        return Ok(());
    }
    let last: u64 = last.trim().parse().map_err(|_| {
        Failure::Malformed(Malformed(format!(
            "Last-Event-ID {last:?} is not a revision; send the id of the last event received"
        )))
    })?;
    extra.push(("start_revision".into(), last.saturating_add(1).to_string()));
    Ok(())
}

/// Where a route's request takes an etag: a top-level `etag`, or the
/// `etag` of the body's resource.
fn etag_field(route: &Route) -> Option<String> {
    let input = route.rpc.input();
    if has_field(&input, "etag") {
        return Some("etag".into());
    }
    let BodyRule::Field(body) = &route.body else {
        return None;
    };
    match input.get_field_by_name(body)?.kind() {
        Kind::Message(resource) if has_field(&resource, "etag") => Some(format!("{body}.etag")),
        _ => None,
    }
}

/// Whether a message has a `bytes` field, directly or nested.
fn carries_bytes(message: &prost_reflect::MessageDescriptor) -> bool {
    fn walk(message: &prost_reflect::MessageDescriptor, depth: usize) -> bool {
        depth < 4
            && message.fields().any(|f| match f.kind() {
                Kind::Bytes => true,
                Kind::Message(inner) => walk(&inner, depth + 1),
                _ => false,
            })
    }
    walk(message, 0)
}

fn text_field(message: &DynamicMessage, name: &str) -> Option<String> {
    let value = message.get_field_by_name(name)?;
    value.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// The `update_time` of a resource.
fn update_time(message: &DynamicMessage) -> Option<SystemTime> {
    let value = message.get_field_by_name("update_time")?;
    let ts = value
        .as_message()?
        .transcode_to::<prost_types::Timestamp>()
        .ok()?;
    let secs = u64::try_from(ts.seconds).ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs)
            + Duration::from_nanos(u64::try_from(ts.nanos).ok()?),
    )
}

/// HTTP dates have whole seconds.
fn truncate_secs(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Weak comparison (RFC 9110 §8.8.3.2), for `If-None-Match`.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

fn empty(status: StatusCode) -> http::Response<Body> {
    let mut response = http::Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Adds `ETag` and `Last-Modified` from the resource in the reply.
fn with_validators(mut response: http::Response<Body>, message: &DynamicMessage) -> http::Response<Body> {
    if message.descriptor().full_name() == "google.protobuf.Empty" {
        return response;
    }
    if let Some(etag) = text_field(message, "etag").and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    if let Some(time) = update_time(message)
        && let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(time))
    {
        response.headers_mut().insert(header::LAST_MODIFIED, value);
    }
    response
}

/// Why a request was not answered with a reply.
enum Failure {
    /// A status from the gRPC service.
    Status(tonic::Status),
    /// A status that a header precondition caused: 412.
    Precondition(tonic::Status),
    /// The request could not be transcoded.
    Malformed(Malformed),
    /// An HTTP-level problem: reason, detail, and an `Allow` header.
    Http(&'static str, String, Option<String>),
}

impl Failure {
    fn internal() -> Self {
        Failure::Status(tonic::Status::internal("building the request"))
    }
}

impl From<Malformed> for Failure {
    fn from(m: Malformed) -> Self {
        Failure::Malformed(m)
    }
}
