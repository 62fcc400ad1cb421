//! Arbitrary HTTP requests to the HTTP/JSON API: a method, a path and query
//! and a JSON-ish body, through routing, path templates, query and body
//! transcoding, the gRPC services and problem details. Whatever the
//! request, the answer is not a 5xx: bad input is the client's error.

#![no_main]

use arbiter_fuzz::{TOKEN, stack};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const METHODS: &[&str] = &["GET", "POST", "PATCH", "DELETE", "PUT"];
/// Prefixes that reach the routes, so that the fuzzer spends its time past
/// the router.
const PREFIXES: &[&str] = &[
    "/v1/tenants/t1/vms",
    "/v1/tenants/t1/users",
    "/v1/tenants/t1/prompts",
    "/v1/tenants/t1/policies",
    "/v1/tenants/",
    "/",
];

fuzz_target!(|data: &[u8]| {
    // Layout: method selector, prefix selector, then the rest of the path
    // (with its query) and the body, split at the first NUL byte.
    let [m, p, rest @ ..] = data else {
        return;
    };
    let (target, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let uri = format!("{}{target}", PREFIXES[usize::from(*p) % PREFIXES.len()]);
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let Ok(request) = http::Request::builder()
        .method(method)
        .uri(&uri)
        .header("host", "arbiter.test")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(axum::body::Body::from(body.to_vec()))
    else {
        return;
    };
    let stack = stack();
    let status = stack.runtime.block_on(async {
        let response = stack
            .http
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        status
    });
    assert!(!status.is_server_error(), "{method} {uri}: answered {status}");
});
