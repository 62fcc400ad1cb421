//! RFC 9457 problem details: every error of the HTTP layer, and every
//! `google.rpc.Status` of the gRPC services turned into one, with the HTTP
//! status of ARCHITECTURE.md section 3 and the details a client needs to
//! resolve it (`current`, `conflict`, `violations`, `policy`).

use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value, json};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The media type of problem details.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// What every reason means: HTTP status, title, and how to resolve it.
pub struct Reason {
    /// The `ErrorInfo.reason`, e.g. `RESOURCE_EXISTS`.
    pub reason: &'static str,
    /// Its HTTP status.
    pub status: StatusCode,
    /// The fixed title of its problem type.
    pub title: &'static str,
    /// What to do about it, for its `/problems/{reason}` page.
    pub resolve: &'static str,
}

/// Every reason Arbiter answers with.
pub const REASONS: &[Reason] = &[
    Reason {
        reason: "RESOURCE_EXISTS",
        status: StatusCode::CONFLICT,
        title: "Resource already exists",
        resolve: "The name is taken in this tenant. Choose another id, or get the existing resource (its etag and state are in `current`) and work with it. Retrying with the same request_id returns the first outcome instead.",
    },
    Reason {
        reason: "UNIQUE_FIELD_TAKEN",
        status: StatusCode::CONFLICT,
        title: "Unique field already taken",
        resolve: "Another resource (`conflict.existing`) holds this value of a field that is unique within the tenant (`conflict.field`). Choose another value, or change or delete the other resource first.",
    },
    Reason {
        reason: "ETAG_MISMATCH",
        status: StatusCode::CONFLICT,
        title: "Resource changed since it was read",
        resolve: "Someone changed the resource after you read it (`current` says who and when). Get it again, reapply your change to the new version, and retry with the new etag. Sent as If-Match or If-Unmodified-Since, this is 412 Precondition Failed.",
    },
    Reason {
        reason: "REQUEST_IN_PROGRESS",
        status: StatusCode::CONFLICT,
        title: "Request still in progress",
        resolve: "A request with the same request_id (Idempotency-Key) is still running. Retry after the Retry-After delay to get its outcome.",
    },
    Reason {
        reason: "INVALID_TRANSITION",
        status: StatusCode::CONFLICT,
        title: "Not allowed in the resource's current state",
        resolve: "The resource's lifecycle does not allow this in its current state (`current.state`). Move it to one of the states in `allowed_from` first, as the detail says (e.g. stop the VM before deleting it).",
    },
    Reason {
        reason: "ALREADY_IN_STATE",
        status: StatusCode::CONFLICT,
        title: "Resource already in the requested state",
        resolve: "Nothing to do: the resource is already in the state this method moves it to.",
    },
    Reason {
        reason: "POLICY_DENIED",
        status: StatusCode::CONFLICT,
        title: "Denied by a tenant policy",
        resolve: "A policy of the tenant (`policy.name`) refused the change because of the resource's current state. Its message and `violations` say what it needs, e.g. a label; meet that and retry.",
    },
    Reason {
        reason: "PRECONDITION_REQUIRED",
        status: StatusCode::PRECONDITION_REQUIRED,
        title: "Precondition required",
        resolve: "This tenant requires conditional updates and deletes. Send If-Match with the etag you read (or the etag field in the body).",
    },
    Reason {
        reason: "POLICY_REJECTED",
        status: StatusCode::UNPROCESSABLE_ENTITY,
        title: "Rejected by a tenant policy",
        resolve: "A policy of the tenant (`policy.name`) does not accept these values; `violations` names the fields. Fix them and retry.",
    },
    Reason {
        reason: "INVALID_FIELD",
        status: StatusCode::UNPROCESSABLE_ENTITY,
        title: "Invalid field values",
        resolve: "Some fields have values the API does not accept; each entry of `violations` names a field and what is expected.",
    },
    Reason {
        reason: "REQUEST_ID_REUSED",
        status: StatusCode::UNPROCESSABLE_ENTITY,
        title: "Request id reused for a different request",
        resolve: "This request_id (Idempotency-Key) was already used for a different request. Send a new UUID for a new request.",
    },
    Reason {
        reason: "MALFORMED_REQUEST",
        status: StatusCode::BAD_REQUEST,
        title: "Malformed request",
        resolve: "The request could not be read: the detail says where (bad JSON, an unknown field, a wrong type). Fix the request; see /openapi.json.",
    },
    Reason {
        reason: "POLICY_FORBIDDEN",
        status: StatusCode::FORBIDDEN,
        title: "Forbidden by a tenant policy",
        resolve: "A policy of the tenant (`policy.name`) does not let this principal make this change. Ask someone who may, as its message says.",
    },
    Reason {
        reason: "TENANT_FORBIDDEN",
        status: StatusCode::FORBIDDEN,
        title: "Tenant not granted",
        resolve: "The token does not grant this tenant. Use a token issued for it.",
    },
    Reason {
        reason: "ROLE_FORBIDDEN",
        status: StatusCode::FORBIDDEN,
        title: "Role too weak",
        resolve: "The token's role is too weak for this: viewers read, editors write resources, admins also manage policies.",
    },
    Reason {
        reason: "UNAUTHENTICATED",
        status: StatusCode::UNAUTHORIZED,
        title: "Authentication required",
        resolve: "Send `Authorization: Bearer <token>` with a valid token.",
    },
    Reason {
        reason: "RESOURCE_NOT_FOUND",
        status: StatusCode::NOT_FOUND,
        title: "Resource not found",
        resolve: "No resource has this name. Check the name, or list the collection to find it.",
    },
    Reason {
        reason: "QUOTA_EXCEEDED",
        status: StatusCode::TOO_MANY_REQUESTS,
        title: "Quota exceeded",
        resolve: "The tenant holds as many resources of this collection as its quota allows (`quota` has the collection, limit and usage). Delete resources it no longer needs, or ask an operator to raise the quota; retrying does not help until then.",
    },
    Reason {
        reason: "RATE_LIMITED",
        status: StatusCode::TOO_MANY_REQUESTS,
        title: "Rate limited",
        resolve: "The tenant (or principal) sent more requests than its rate limit, had too many requests in flight, or no policy evaluation slot was free in time (`limit` says which). Retry after the Retry-After delay, and slow down.",
    },
    Reason {
        reason: "REVISION_COMPACTED",
        status: StatusCode::GONE,
        title: "Revision no longer retained",
        resolve: "The watch asked for changes older than the change log keeps (`oldest_revision`). List the collection again (or watch with send_initial=true) and resume watching from the revision it returns.",
    },
    Reason {
        reason: "WATCH_TOO_SLOW",
        status: StatusCode::CONFLICT,
        title: "Watcher too slow",
        resolve: "The watch fell so far behind that it was ended. Watch again with start_revision = `resume_revision`, and read the stream faster.",
    },
    Reason {
        reason: "STORE_UNAVAILABLE",
        status: StatusCode::SERVICE_UNAVAILABLE,
        title: "Store unavailable",
        resolve: "The server cannot reach its store (etcd). Nothing was written. Retry after the Retry-After delay; the server recovers by itself when the store is back.",
    },
    Reason {
        reason: "POLICY_FAULT",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        title: "Tenant policy failed",
        resolve: "A fail-closed policy of the tenant could not decide (`fault`: timeout, memory, trap). Its owner should fix the policy or make it fail open.",
    },
    Reason {
        reason: "INTERNAL",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        title: "Internal error",
        resolve: "The server failed. Retry later, and report it if it persists.",
    },
    Reason {
        reason: "ROUTE_NOT_FOUND",
        status: StatusCode::NOT_FOUND,
        title: "No such route",
        resolve: "No API route has this path. See /openapi.json for the routes.",
    },
    Reason {
        reason: "METHOD_NOT_ALLOWED",
        status: StatusCode::METHOD_NOT_ALLOWED,
        title: "Method not allowed",
        resolve: "The path exists but not with this method; the Allow header lists the methods it has.",
    },
    Reason {
        reason: "PAYLOAD_TOO_LARGE",
        status: StatusCode::PAYLOAD_TOO_LARGE,
        title: "Body too large",
        resolve: "The body is larger than this route accepts.",
    },
    Reason {
        reason: "UNSUPPORTED_MEDIA_TYPE",
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        title: "Unsupported media type",
        resolve: "Send bodies as `Content-Type: application/json`.",
    },
];

/// The reason entry of `reason`.
pub fn reason(reason: &str) -> Option<&'static Reason> {
    REASONS.iter().find(|r| r.reason == reason)
}

/// `RESOURCE_EXISTS` → `resource-exists`.
pub fn kebab(reason: &str) -> String {
    reason.to_ascii_lowercase().replace('_', "-")
}

/// A problem, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body members.
    pub body: Map<String, Value>,
    /// `Retry-After` seconds, for 409 in-progress and 429.
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `reason` about `instance` with `detail`.
    pub fn new(reason_name: &str, code: Code, detail: &str, instance: &str, base: &str) -> Self {
        let known = reason(reason_name);
        let status = known.map_or_else(|| status_of(code), |r| r.status);
        let title = known.map_or("Error", |r| r.title);
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("{base}/problems/{}", kebab(reason_name))),
        );
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(status.as_u16()));
        body.insert("detail".into(), json!(detail));
        body.insert("instance".into(), json!(instance));
        body.insert("code".into(), json!(code_name(code)));
        body.insert("reason".into(), json!(reason_name));
        Self {
            status,
            body,
            retry_after: None,
        }
    }

    /// The problem of a gRPC status, with its details mapped to members.
    pub fn from_status(status: &tonic::Status, instance: &str, base: &str) -> Self {
        let details = status.get_error_details();
        let info = details.error_info();
        let reason_name = info.map_or_else(|| fallback_reason(status.code()), |i| i.reason.clone());
        let mut problem = Self::new(&reason_name, status.code(), status.message(), instance, base);
        if let Some(info) = info {
            problem.add_metadata(&info.metadata);
        }
        problem.add_details(&details);
        if matches!(
            reason_name.as_str(),
            "RATE_LIMITED" | "REQUEST_IN_PROGRESS" | "STORE_UNAVAILABLE"
        ) {
            // Whole seconds, rounded up: a client that waits this long passes.
            let delay = details
                .retry_info()
                .and_then(|r| r.retry_delay)
                .map_or(1, |d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1));
            problem.retry_after = Some(delay);
        }
        problem
    }

    fn add_metadata(&mut self, metadata: &std::collections::HashMap<String, String>) {
        let get = |key: &str| metadata.get(key).cloned();
        if let Some(resource) = get("resource") {
            self.body.insert("resource".into(), json!(resource));
        }
        let mut current = Map::new();
        for (member, key) in [
            ("etag", "current_etag"),
            ("state", "current_state"),
            ("updated_by", "updated_by"),
            ("update_time", "update_time"),
        ] {
            if let Some(value) = get(key) {
                current.insert(member.into(), json!(value));
            }
        }
        if !current.is_empty() {
            self.body.insert("current".into(), Value::Object(current));
        }
        if let (Some(field), Some(value), Some(existing)) = (get("field"), get("value"), get("existing")) {
            self.body.insert(
                "conflict".into(),
                json!({"field": field, "value": value, "existing": existing}),
            );
        }
        if let Some(changed) = get("changed_fields") {
            let fields: Vec<&str> = changed.split(',').filter(|s| !s.is_empty()).collect();
            self.body
                .insert("conflict".into(), json!({ "changed_fields": fields }));
        }
        for (key, member) in [
            ("requested_revision", "requested_revision"),
            ("oldest_revision", "oldest_revision"),
            ("resume_revision", "resume_revision"),
            ("operation_index", "operation_index"),
        ] {
            if let Some(value) = get(key).and_then(|v| v.parse::<u64>().ok()) {
                self.body.insert(member.into(), json!(value));
            }
        }
        if let (Some(collection), Some(limit), Some(usage)) = (get("collection"), get("limit"), get("usage"))
        {
            let number = |v: &str| v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n));
            self.body.insert(
                "quota".into(),
                json!({"collection": collection, "limit": number(&limit), "usage": number(&usage)}),
            );
        } else if let Some(limit) = get("limit") {
            self.body.insert("limit".into(), json!(limit));
        }
        if let Some(allowed) = get("allowed_from") {
            let states: Vec<&str> = allowed.split(',').filter(|s| !s.is_empty()).collect();
            self.body.insert("allowed_from".into(), json!(states));
        }
        for key in [
            "expected_etag",
            "operation",
            "request_id",
            "principal",
            "tenant",
            "required_role",
        ] {
            if let Some(value) = get(key) {
                self.body.insert(key.into(), json!(value));
            }
        }
        if let Some(policy) = get("policy") {
            let mut p = json!({"name": policy});
            for (member, key) in [
                ("revision", "policy_revision"),
                ("reason", "denial_reason"),
                ("fault", "fault"),
            ] {
                if let Some(value) = get(key) {
                    p[member] = json!(value);
                }
            }
            self.body.insert("policy".into(), p);
        }
    }

    fn add_details(&mut self, details: &ErrorDetails) {
        let mut violations = Vec::new();
        if let Some(bad) = details.bad_request() {
            for v in &bad.field_violations {
                violations.push(json!({"field": v.field, "description": v.description}));
            }
        }
        if let Some(failure) = details.precondition_failure() {
            for v in &failure.violations {
                violations.push(json!({"type": v.r#type, "field": v.subject, "description": v.description}));
            }
        }
        if let Some(quota) = details.quota_failure() {
            for v in &quota.violations {
                violations.push(json!({"field": v.subject, "description": v.description}));
            }
        }
        if !violations.is_empty() {
            self.body.insert("violations".into(), Value::Array(violations));
        }
        if !self.body.contains_key("resource")
            && let Some(info) = details.resource_info()
        {
            self.body.insert("resource".into(), json!(info.resource_name));
        }
    }

    /// Turns the problem into a response with the headers its status needs.
    pub fn into_response(self) -> http::Response<axum::body::Body> {
        let body = serde_json::to_vec(&Value::Object(self.body)).unwrap_or_default();
        let mut response = http::Response::new(axum::body::Body::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"arbiter\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The reason for a status that carries no `ErrorInfo`.
fn fallback_reason(code: Code) -> String {
    match code {
        Code::InvalidArgument | Code::OutOfRange => "MALFORMED_REQUEST",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::NotFound => "RESOURCE_NOT_FOUND",
        Code::ResourceExhausted => "RATE_LIMITED",
        _ => "INTERNAL",
    }
    .to_string()
}

/// The HTTP status of a gRPC code, for reasons this layer does not know:
/// Google's mapping, except that FAILED_PRECONDITION is a conflict (409)
/// in this API.
fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => StatusCode::CONFLICT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `ALREADY_EXISTS`, the name of a code in `google.rpc.Code`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
