//! The HTTP/JSON API end to end, with a real HTTP client against a real
//! server: every row of ARCHITECTURE.md section 3 that HTTP can produce
//! (status, `Content-Type`, problem members), conditional requests, and the
//! HTTP-level problems.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arbiter_test_guests as guests;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &TestServer) -> Self {
        let addr = server.running.as_ref().unwrap().http_addr;
        Self {
            client: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    fn request(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        if token.is_empty() {
            builder
        } else {
            builder.bearer_auth(token)
        }
    }

    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = builder.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, body)
    }

    /// Creates the VM `web-1` of tenant acme as an editor.
    async fn create_web1(&self) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.json(
            Method::POST,
            &format!("{VMS}?vm_id=web-1"),
            "acme-editor",
            vm_body(),
        )
        .await
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.send(self.request(method, path, token).json(&body)).await
    }
}

/// Asserts a problem response: status, media type, the members every
/// problem has, and its reason; returns the body.
fn problem(answer: (StatusCode, reqwest::header::HeaderMap, Value), status: u16, reason: &str) -> Value {
    let (got, headers, body) = answer;
    assert_eq!(got.as_u16(), status, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json", "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let kebab = reason.to_ascii_lowercase().replace('_', "-");
    assert!(
        body["type"].as_str().unwrap().starts_with("http://")
            && body["type"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/problems/{kebab}")),
        "{body}"
    );
    for member in ["title", "detail", "instance", "code"] {
        assert!(body[member].is_string(), "{member} in {body}");
    }
    body
}

fn vm_body() -> Value {
    json!({"region": "us-east1", "machineType": "e2-small", "image": "debian-12"})
}

const VMS: &str = "/v1/tenants/acme/vms";
const WEB1: &str = "/v1/tenants/acme/vms/web-1";

#[tokio::test]
async fn conflicts_are_409_problems_with_what_conflicted() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let (status, headers, vm) = http.create_web1().await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(headers["etag"], vm["etag"].as_str().unwrap());
    assert!(headers.contains_key("last-modified"));
    assert_eq!(vm["state"], "STOPPED");
    assert_eq!(vm["machineType"], "e2-small");

    let taken = problem(
        http.json(
            Method::POST,
            &format!("{VMS}?vm_id=web-1"),
            "acme-editor",
            vm_body(),
        )
        .await,
        409,
        "RESOURCE_EXISTS",
    );
    assert_eq!(taken["code"], "ALREADY_EXISTS");
    assert_eq!(taken["resource"], "tenants/acme/vms/web-1");
    assert_eq!(taken["current"]["etag"], vm["etag"]);
    assert_eq!(taken["instance"], VMS);

    let user = |id: &str, email: &str| json!({"email": email, "displayName": id});
    http.json(
        Method::POST,
        "/v1/tenants/acme/users?user_id=ada",
        "acme-editor",
        user("ada", "ada@example.com"),
    )
    .await;
    let email = problem(
        http.json(
            Method::POST,
            "/v1/tenants/acme/users?user_id=ada2",
            "acme-editor",
            user("ada2", "ADA@example.com"),
        )
        .await,
        409,
        "UNIQUE_FIELD_TAKEN",
    );
    assert_eq!(
        email["conflict"],
        json!({"field": "email", "value": "ADA@example.com", "existing": "tenants/acme/users/ada"})
    );

    let stale = problem(
        http.json(
            Method::PATCH,
            WEB1,
            "acme-editor",
            json!({"etag": "\"99\"", "displayName": "x"}),
        )
        .await,
        409,
        "ETAG_MISMATCH",
    );
    assert_eq!(stale["code"], "ABORTED");
    assert_eq!(stale["current"]["etag"], vm["etag"]);
    assert_eq!(stale["expected_etag"], "\"99\"");

    let (status, _, _) = http
        .json(Method::POST, &format!("{WEB1}:start"), "acme-editor", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let again = problem(
        http.json(Method::POST, &format!("{WEB1}:start"), "acme-editor", json!({}))
            .await,
        409,
        "ALREADY_IN_STATE",
    );
    assert_eq!(again["current"]["state"], "RUNNING");
    let running = problem(
        http.send(http.request(Method::DELETE, WEB1, "acme-editor")).await,
        409,
        "INVALID_TRANSITION",
    );
    assert_eq!(running["code"], "FAILED_PRECONDITION");
    assert_eq!(running["allowed_from"], json!(["STOPPED"]));
    assert!(
        running["detail"]
            .as_str()
            .unwrap()
            .contains("stop the VM before deleting it")
    );
    assert_eq!(running["violations"][0]["type"], "STATE");
    server.stop().await;
}

#[tokio::test]
async fn client_errors_are_4xx_problems() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let invalid = problem(
        http.json(
            Method::POST,
            &format!("{VMS}?vm_id=Bad_Id"),
            "acme-editor",
            json!({}),
        )
        .await,
        422,
        "INVALID_FIELD",
    );
    let fields: Vec<&str> = invalid["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"vm_id") && fields.contains(&"vm.region"),
        "{invalid}"
    );
    problem(
        http.send(http.request(Method::GET, "/v1/tenants/acme/vms/nope", "acme-editor"))
            .await,
        404,
        "RESOURCE_NOT_FOUND",
    );
    let (status, headers, _) = http.send(http.request(Method::GET, WEB1, "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    problem(
        http.send(http.request(Method::GET, "/v1/tenants/globex/vms", "acme-editor"))
            .await,
        403,
        "TENANT_FORBIDDEN",
    );
    problem(
        http.json(Method::POST, &format!("{VMS}?vm_id=x"), "acme-viewer", vm_body())
            .await,
        403,
        "ROLE_FORBIDDEN",
    );
    let key = "0f0e0d0c-0b0a-4908-8706-050403020100";
    let with_key = |body: Value| {
        http.request(Method::POST, &format!("{VMS}?vm_id=keyed"), "acme-editor")
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let (first, _, created) = http.send(with_key(vm_body())).await;
    let (second, _, replayed) = http.send(with_key(vm_body())).await;
    assert_eq!((first, second), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        created, replayed,
        "a retry with the same Idempotency-Key returns the first outcome"
    );
    let mut other = vm_body();
    other["image"] = json!("debian-13");
    problem(http.send(with_key(other)).await, 422, "REQUEST_ID_REUSED");
    server.stop().await;
}

#[tokio::test]
async fn http_level_problems_say_what_is_wrong() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    problem(
        http.send(http.request(Method::GET, "/v2/nothing", "acme-editor"))
            .await,
        404,
        "ROUTE_NOT_FOUND",
    );
    let (status, headers, body) = http.send(http.request(Method::PUT, WEB1, "acme-editor")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(headers["allow"], "DELETE, GET, PATCH");
    let broken = http
        .request(Method::POST, &format!("{VMS}?vm_id=x"), "acme-editor")
        .header("content-type", "application/json")
        .body("{\"region\": }");
    let malformed = problem(http.send(broken).await, 400, "MALFORMED_REQUEST");
    assert!(
        malformed["detail"]
            .as_str()
            .unwrap()
            .contains("line 1, column 12"),
        "{malformed}"
    );
    let unknown = problem(
        http.json(
            Method::POST,
            &format!("{VMS}?vm_id=x"),
            "acme-editor",
            json!({"colour": "red"}),
        )
        .await,
        400,
        "MALFORMED_REQUEST",
    );
    assert!(
        unknown["detail"].as_str().unwrap().contains("colour"),
        "{unknown}"
    );
    let query = problem(
        http.send(http.request(Method::GET, &format!("{VMS}?page_size=lots"), "acme-editor"))
            .await,
        400,
        "MALFORMED_REQUEST",
    );
    assert!(query["detail"].as_str().unwrap().contains("page_size"), "{query}");
    let text = http
        .request(Method::POST, &format!("{VMS}?vm_id=x"), "acme-editor")
        .header("content-type", "text/plain")
        .body("hi");
    problem(http.send(text).await, 415, "UNSUPPORTED_MEDIA_TYPE");
    let huge = format!("{{\"displayName\": \"{}\"}}", "a".repeat(2 << 20));
    let big = http
        .request(Method::POST, &format!("{VMS}?vm_id=x"), "acme-editor")
        .header("content-type", "application/json")
        .body(huge);
    problem(http.send(big).await, 413, "PAYLOAD_TOO_LARGE");

    let (status, headers, page) = http
        .send(http.request(Method::GET, "/problems/etag-mismatch", ""))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.as_str().unwrap().contains("reapply your change"));
    let (status, _, _) = http
        .send(http.request(Method::GET, "/problems/no-such-thing", ""))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn conditional_requests_follow_rfc_9110() {
    let server = TestServer::start_with(|c| c.require_preconditions = vec!["strict".into()]).await;
    let http = Http::new(&server);
    let (_, _, vm) = http.create_web1().await;
    let etag = vm["etag"].as_str().unwrap().to_string();

    let (status, headers, body) = http
        .send(
            http.request(Method::GET, WEB1, "acme-editor")
                .header("If-None-Match", &etag),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(body, Value::Null);
    assert_eq!(headers["etag"], etag.as_str());
    let (status, _, _) = http
        .send(
            http.request(Method::GET, WEB1, "acme-editor")
                .header("If-None-Match", "\"other\""),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let stale = http
        .request(Method::PATCH, WEB1, "acme-editor")
        .header("If-Match", "\"99\"")
        .json(&json!({"displayName": "x"}));
    let failed = problem(http.send(stale).await, 412, "ETAG_MISMATCH");
    assert_eq!(
        failed["current"]["etag"],
        etag.as_str(),
        "412 carries the current etag"
    );
    let fresh = http
        .request(Method::PATCH, WEB1, "acme-editor")
        .header("If-Match", &etag)
        .json(&json!({"displayName": "x"}));
    let (status, headers, updated) = http.send(fresh).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_ne!(headers["etag"], etag.as_str());
    let several = http
        .request(Method::PATCH, WEB1, "acme-editor")
        .header(
            "If-Match",
            format!("\"1\", {}", updated["etag"].as_str().unwrap()),
        )
        .json(&json!({"displayName": "y"}));
    assert_eq!(http.send(several).await.0, StatusCode::OK);

    let past = http
        .request(Method::DELETE, WEB1, "acme-editor")
        .header("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT");
    let past = problem(http.send(past).await, 412, "ETAG_MISMATCH");
    // Checked by the gateway itself, it says what the service says.
    for member in ["etag", "state", "updated_by", "update_time"] {
        assert!(past["current"][member].is_string(), "{member}: {past}");
    }
    assert_eq!(past["current"]["state"], "STOPPED");
    let time = past["current"]["update_time"].as_str().unwrap_or_default();
    assert!(time.contains('T') && time.ends_with('Z'), "RFC 3339: {time}");
    assert_eq!(past["resource"], "tenants/acme/vms/web-1");
    let future = http
        .request(Method::POST, &format!("{WEB1}:start"), "acme-editor")
        .header("If-Unmodified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")
        .json(&json!({}));
    assert_eq!(http.send(future).await.0, StatusCode::OK);
    let bad_date = http
        .request(Method::DELETE, WEB1, "acme-editor")
        .header("If-Unmodified-Since", "yesterday");
    problem(http.send(bad_date).await, 400, "MALFORMED_REQUEST");

    let create_only = http
        .request(Method::POST, &format!("{VMS}?vm_id=web-1"), "acme-editor")
        .header("If-None-Match", "*")
        .json(&vm_body());
    problem(http.send(create_only).await, 412, "RESOURCE_EXISTS");
    let create_new = http
        .request(Method::POST, &format!("{VMS}?vm_id=web-2"), "acme-editor")
        .header("If-None-Match", "*")
        .json(&vm_body());
    assert_eq!(http.send(create_new).await.0, StatusCode::OK);

    // The tenant "strict" requires a precondition on update and delete.
    let strict = "/v1/tenants/strict/vms";
    let (_, _, vm) = http
        .json(Method::POST, &format!("{strict}?vm_id=db"), "root", vm_body())
        .await;
    let required = problem(
        http.json(
            Method::PATCH,
            &format!("{strict}/db"),
            "root",
            json!({"displayName": "x"}),
        )
        .await,
        428,
        "PRECONDITION_REQUIRED",
    );
    assert_eq!(required["code"], "FAILED_PRECONDITION");
    problem(
        http.send(http.request(Method::DELETE, &format!("{strict}/db"), "root"))
            .await,
        428,
        "PRECONDITION_REQUIRED",
    );
    let conditional = http
        .request(Method::DELETE, &format!("{strict}/db"), "root")
        .header("If-Match", vm["etag"].as_str().unwrap());
    assert_eq!(http.send(conditional).await.0, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn policies_answer_over_http_with_their_status() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    use base64::Engine as _;
    let upload = |id: &str, module: &str, extra: Value| {
        let mut policy = json!({"kinds": ["vm", "prompt"], "module": base64::engine::general_purpose::STANDARD.encode(guests::read(module))});
        if let (Some(p), Some(e)) = (policy.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        let path = format!("/v1/tenants/acme/policies?policy_id={id}");
        http.send(http.request(Method::POST, &path, "root").json(&policy))
    };
    let (status, _, guard) = upload("vm-guard", guests::VM_GUARD, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{guard}");
    let (status, _, _) = upload("prompt-review", guests::PROMPT_REVIEW, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = upload(
        "hostile",
        guests::HOSTILE,
        json!({"timeout": "0.200s", "operations": ["CREATE"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let mut prod = vm_body();
    prod["labels"] = json!({"env": "prod"});
    http.json(Method::POST, &format!("{VMS}?vm_id=web-1"), "acme-editor", prod)
        .await;
    http.json(Method::POST, &format!("{WEB1}:start"), "acme-editor", json!({}))
        .await;
    let denied = problem(
        http.json(Method::POST, &format!("{WEB1}:stop"), "acme-editor", json!({}))
            .await,
        409,
        "POLICY_DENIED",
    );
    assert_eq!(denied["policy"]["name"], "tenants/acme/policies/vm-guard");
    assert_eq!(denied["policy"]["reason"], "PROD_CHANGE_NEEDS_TICKET");
    assert_eq!(denied["policy"]["revision"], guard["revision"]);
    assert_eq!(denied["violations"][0]["field"], "vm.labels.change-ticket");

    let mut big = vm_body();
    big["machineType"] = json!("m9-enormous");
    let rejected = problem(
        http.json(Method::POST, &format!("{VMS}?vm_id=big"), "acme-editor", big)
            .await,
        422,
        "POLICY_REJECTED",
    );
    assert_eq!(rejected["violations"][0]["field"], "vm.machine_type");

    let prompt = json!({"template": "Summarize {{text}}", "model": "claude-3.5"});
    http.json(
        Method::POST,
        "/v1/tenants/acme/prompts?prompt_id=p",
        "acme-editor",
        prompt,
    )
    .await;
    problem(
        http.json(
            Method::POST,
            "/v1/tenants/acme/prompts/p:publish",
            "acme-editor",
            json!({}),
        )
        .await,
        403,
        "POLICY_FORBIDDEN",
    );

    let mut looping = vm_body();
    looping["labels"] = json!({"hostile": "loop"});
    let fault = problem(
        http.json(
            Method::POST,
            &format!("{VMS}?vm_id=l"),
            "acme-editor",
            looping.clone(),
        )
        .await,
        500,
        "POLICY_FAULT",
    );
    assert_eq!(fault["policy"]["fault"], "timeout");

    // The same request twice at once: one waits on the slow policy, the
    // other is told it is in progress.
    let key = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let send = || {
        http.request(Method::POST, &format!("{VMS}?vm_id=l2"), "acme-editor")
            .header("Idempotency-Key", key)
            .json(&looping)
            .send()
    };
    let (a, b) = tokio::join!(send(), send());
    let mut statuses = [a.unwrap(), b.unwrap()];
    statuses.sort_by_key(|r| r.status());
    assert_eq!(statuses[0].status(), StatusCode::CONFLICT);
    assert_eq!(statuses[1].status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(statuses[0].headers().contains_key("retry-after"));
    let [in_progress, _] = statuses;
    let body: Value = in_progress.json().await.unwrap();
    assert_eq!(body["reason"], "REQUEST_IN_PROGRESS");
    server.stop().await;
}

#[tokio::test]
async fn openapi_and_metrics_are_served() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    http.json(
        Method::POST,
        &format!("{VMS}?vm_id=web-1"),
        "acme-editor",
        vm_body(),
    )
    .await;
    http.json(
        Method::POST,
        &format!("{VMS}?vm_id=web-1"),
        "acme-editor",
        vm_body(),
    )
    .await;
    let (status, headers, doc) = http.send(http.request(Method::GET, "/openapi.json", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(doc["openapi"], "3.1.0");
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, 32, "every annotated method is documented");
    assert!(
        doc["paths"]["/v1/tenants/{tenant}/conflictStats"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
    let (status, _, metrics) = http.send(http.request(Method::GET, "/metrics", "")).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    for family in [
        "arbiter_http_requests_total",
        "arbiter_grpc_requests_total",
        "arbiter_conflicts_total",
        "arbiter_store_commit_batch_size",
        "arbiter_store_sync_seconds",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert!(
        text.contains("arbiter_conflicts_total{kind=\"vm\",reason=\"RESOURCE_EXISTS\"}"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn field_masks_take_the_json_form_and_field_names() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let (status, _, _) = http.create_web1().await;
    assert!(status.is_success());
    let change = json!({"displayName": "Web one", "machineType": "e2-large", "labels": {"env": "v"}});
    // The JSON form, as Google's REST APIs write it.
    let (status, _, vm) = http
        .json(
            Method::PATCH,
            &format!("{WEB1}?updateMask=displayName,labels.env"),
            "acme-editor",
            change.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{vm}");
    assert_eq!(vm["displayName"], "Web one");
    assert_eq!(vm["machineType"], "e2-small", "not in the mask");
    assert_eq!(vm["labels"], json!({"env": "v"}));
    // Proto field names, under either spelling of the parameter.
    for query in ["update_mask=machine_type", "updateMask=machine_type"] {
        let (status, _, vm) = http
            .json(
                Method::PATCH,
                &format!("{WEB1}?{query}"),
                "acme-editor",
                change.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {vm}");
        assert_eq!(vm["machineType"], "e2-large");
    }
    // A path that is no field is still named in the error.
    let bad = problem(
        http.json(
            Method::PATCH,
            &format!("{WEB1}?updateMask=diskSize"),
            "acme-editor",
            change,
        )
        .await,
        422,
        "INVALID_FIELD",
    );
    assert!(
        bad["detail"].as_str().unwrap_or_default().contains("disk_size"),
        "{bad}"
    );
    server.stop().await;
}
