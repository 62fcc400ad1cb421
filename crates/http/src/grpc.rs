//! Unary gRPC calls in-process: a transcoded request is framed as gRPC and
//! handed to the same tower service the gRPC server runs (auth, tracing,
//! handlers), and the framed reply and its trailers are read back. No
//! socket, no second code path.

use std::convert::Infallible;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use tonic::Status;
use tonic::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// The gRPC server's service stack, callable in-process.
pub type GrpcService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Calls the unary method at `path` (`/package.Service/Method`) with the
/// encoded `message`, forwarding `authorization`; returns the encoded reply.
pub async fn unary(
    service: &GrpcService,
    path: &str,
    authorization: Option<&HeaderValue>,
    message: Bytes,
) -> Result<(HeaderMap, Bytes), Status> {
    let (headers, body) = call(service, path, authorization, message).await?;
    let collected = body
        .collect()
        .await
        .map_err(|e| Status::internal(format!("reading the reply: {e}")))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    if let Some(status) = failure(&trailers) {
        return Err(status);
    }
    Ok((headers, unframe(collected.to_bytes())?))
}

/// Calls the method at `path` and returns the reply's headers (its
/// metadata) and body once the headers say the call was accepted (for a
/// server stream: the framed messages, then trailers). A call refused at
/// once is its status.
pub async fn call(
    service: &GrpcService,
    path: &str,
    authorization: Option<&HeaderValue>,
    message: Bytes,
) -> Result<(HeaderMap, Body), Status> {
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).map_err(|_| Status::invalid_argument("message too large"))?);
    framed.put_slice(&message);
    let mut request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::new(http_body_util::Full::new(framed.freeze())))
        .map_err(|e| Status::internal(format!("building the call: {e}")))?;
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value.clone());
    }
    let response = match service.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    if let Some(status) = failure(&parts.headers) {
        return Err(status);
    }
    Ok((parts.headers, body))
}

/// The status in trailers (or trailers-only headers), unless it is OK.
pub(crate) fn failure(headers: &HeaderMap) -> Option<Status> {
    let status = Status::from_header_map(headers)?;
    (status.code() != tonic::Code::Ok).then_some(status)
}

/// The single message of a unary reply.
fn unframe(mut body: Bytes) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::internal("the reply has no message"));
    }
    let compressed = body.get_u8();
    let len = usize::try_from(body.get_u32()).unwrap_or(usize::MAX);
    if compressed != 0 || body.len() < len {
        return Err(Status::internal("the reply is not one plain message"));
    }
    Ok(body.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_unframed() {
        let mut framed = BytesMut::new();
        framed.put_u8(0);
        framed.put_u32(3);
        framed.put_slice(b"abc");
        assert_eq!(unframe(framed.freeze()).ok(), Some(Bytes::from_static(b"abc")));
        assert!(unframe(Bytes::from_static(b"\x01\0\0\0\x01a")).is_err());
        assert!(unframe(Bytes::new()).is_err());
    }
}
