//! Arbitrary bytes as the message of a gRPC call to any method of the
//! resource services, through tonic's decoding, the authentication layer,
//! the services' request conversion and the engine's validation on a real
//! store. Whatever the bytes, the answer is a gRPC status other than
//! UNKNOWN or INTERNAL: bad input is the client's error, never a crash.

#![no_main]

use arbiter_fuzz::{TOKEN, stack};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const METHODS: &[&str] = &[
    "/arbiter.v1.VirtualMachines/CreateVirtualMachine",
    "/arbiter.v1.VirtualMachines/GetVirtualMachine",
    "/arbiter.v1.VirtualMachines/ListVirtualMachines",
    "/arbiter.v1.VirtualMachines/UpdateVirtualMachine",
    "/arbiter.v1.VirtualMachines/DeleteVirtualMachine",
    "/arbiter.v1.VirtualMachines/StartVirtualMachine",
    "/arbiter.v1.VirtualMachines/StopVirtualMachine",
    "/arbiter.v1.Users/CreateUser",
    "/arbiter.v1.Users/ListUsers",
    "/arbiter.v1.Users/UpdateUser",
    "/arbiter.v1.Prompts/CreatePrompt",
    "/arbiter.v1.Prompts/ListPrompts",
    "/arbiter.v1.Prompts/UpdatePrompt",
    "/arbiter.v1.Policies/ListPolicies",
    "/arbiter.v1.Policies/UpdatePolicy",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    let Ok(request) = http::Request::post(method)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(tonic::body::Body::new(http_body_util::Full::new(Bytes::from(
            frame,
        ))))
    else {
        return;
    };
    let stack = stack();
    let code = stack.runtime.block_on(async {
        let response = stack
            .grpc
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(
            response.status(),
            http::StatusCode::OK,
            "{method}: gRPC answers 200"
        );
        let mut code = response.headers().get("grpc-status").cloned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the reply body is readable");
        if let Some(trailers) = body.trailers() {
            code = code.or_else(|| trailers.get("grpc-status").cloned());
        }
        code
    });
    let code = code.expect("every reply carries a grpc-status");
    let code = tonic::Code::from_bytes(code.as_bytes());
    assert!(
        !matches!(code, tonic::Code::Unknown | tonic::Code::Internal),
        "{method}: bad input answered {code:?}"
    );
});
