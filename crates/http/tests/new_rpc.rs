//! An annotated RPC that the HTTP layer has never heard of is served over
//! HTTP with no other change: the routes come from the descriptors alone.
//! A proto compiled here at test time adds `demo.v1.Echo/Shout`; a stand-in
//! gRPC service answers it; an HTTP request reaches it transcoded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tower::ServiceExt;

const DEMO: &str = r#"
syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";

service Echo {
  rpc Shout(ShoutRequest) returns (ShoutReply) {
    option (google.api.http) = { post: "/v1/{room=rooms/*}:shout" body: "*" };
  }
}
message ShoutRequest { string room = 1; string text = 2; int64 times = 3; }
message ShoutReply { string room = 1; string text = 2; }
"#;

fn pool() -> DescriptorPool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.proto"), DEMO).unwrap();
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut compiler = protox::Compiler::new([dir.path(), protos.as_path()]).unwrap();
    compiler.include_imports(true).open_files(["demo.proto"]).unwrap();
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
}

/// A gRPC service for `demo.v1.Echo` only: it repeats the text, louder.
fn echo(pool: DescriptorPool) -> arbiter_http::GrpcService {
    let service = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let pool = pool.clone();
        async move {
            assert_eq!(request.uri().path(), "/demo.v1.Echo/Shout");
            let mut body = request.into_body().collect().await.unwrap().to_bytes();
            body.advance(5);
            let input =
                DynamicMessage::decode(pool.get_message_by_name("demo.v1.ShoutRequest").unwrap(), body)
                    .unwrap();
            let text = input
                .get_field_by_name("text")
                .unwrap()
                .as_str()
                .unwrap()
                .to_uppercase();
            let times = input.get_field_by_name("times").unwrap().as_i64().unwrap();
            let mut reply = DynamicMessage::new(pool.get_message_by_name("demo.v1.ShoutReply").unwrap());
            reply.set_field_by_name("room", input.get_field_by_name("room").unwrap().into_owned());
            let repeated = vec![text; usize::try_from(times).unwrap()].join(" ");
            reply.set_field_by_name("text", Value::String(repeated));
            let encoded = reply.encode_to_vec();
            let mut framed = BytesMut::new();
            framed.put_u8(0);
            framed.put_u32(u32::try_from(encoded.len()).unwrap());
            framed.put_slice(&encoded);
            let body = tonic::body::Body::new(http_body_util::Full::new(framed.freeze()));
            Ok::<_, Infallible>(http::Response::new(body))
        }
    });
    tower::util::BoxCloneSyncService::new(service)
}

#[tokio::test]
async fn a_new_annotated_rpc_is_served_with_no_other_change() {
    let pool = pool();
    let app = arbiter_http::router(&pool, echo(pool.clone()), arbiter_http::Options::default()).unwrap();
    let request = http::Request::post("/v1/rooms/lobby:shout")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"text": "hello", "times": "2"}"#))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body: Bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"room": "rooms/lobby", "text": "HELLO HELLO"})
    );

    let document = app
        .oneshot(
            http::Request::get("/openapi.json")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let document: serde_json::Value =
        serde_json::from_slice(&document.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        document["paths"]["/v1/rooms/{room}:shout"]["post"]["operationId"],
        "Shout"
    );
}
