//! Server-streaming methods over HTTP: each message of the gRPC stream as
//! one line of newline-delimited JSON (`application/x-ndjson`), or, when
//! the client asks for `text/event-stream`, as a server-sent event whose
//! `id` is the message's `revision` and whose `event` is its `type`. A
//! failure after the stream began ends it with one last line
//! `{"error": <problem details>}` or an `event: error`.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions};
use serde_json::json;

use crate::grpc::failure;
use crate::problem::Problem;

/// Largest message of a stream; a larger frame ends the stream.
const MAX_MESSAGE: usize = 16 << 20;

/// How a stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Newline-delimited JSON.
    Ndjson,
    /// Server-sent events.
    Sse,
}

impl Format {
    /// SSE when `Accept` names `text/event-stream`, else NDJSON.
    pub fn of(headers: &HeaderMap) -> Self {
        let sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
        if sse { Self::Sse } else { Self::Ndjson }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Sse => "text/event-stream",
        }
    }
}

/// Where problem details of a failure mid-stream point.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request path.
    pub instance: String,
    /// The base URL of problem types.
    pub base: String,
}

struct State {
    body: tonic::body::Body,
    buffer: BytesMut,
    output: MessageDescriptor,
    format: Format,
    origin: Origin,
    done: bool,
}

/// The `200` response that streams `body`'s messages as `format`.
pub fn response(
    format: Format,
    output: MessageDescriptor,
    body: tonic::body::Body,
    origin: Origin,
) -> http::Response<Body> {
    let state = State {
        body,
        buffer: BytesMut::new(),
        output,
        format,
        origin,
        done: false,
    };
    let chunks = futures::stream::unfold(state, |mut state| async move {
        let chunk = state.next().await?;
        Some((Ok::<Bytes, Infallible>(chunk), state))
    });
    let mut response = http::Response::new(Body::from_stream(chunks));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells proxies such as nginx to pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

impl State {
    /// The next chunk to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.take_message() {
                Ok(Some(message)) => return Some(self.message(&message)),
                Ok(None) => {}
                Err(e) => return self.fail(tonic::Status::internal(e)),
            }
            if self.done {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        self.done = true;
                        let trailers = frame.into_trailers().unwrap_or_default();
                        if let Some(status) = failure(&trailers) {
                            return self.fail(status);
                        }
                    }
                },
                Some(Err(e)) => {
                    return self.fail(tonic::Status::internal(format!("reading the stream: {e}")));
                }
                None => self.done = true,
            }
        }
    }

    /// A whole message from the buffer, if one is there.
    fn take_message(&mut self) -> Result<Option<Bytes>, String> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buffer[0];
        let len = u32::from_be_bytes([self.buffer[1], self.buffer[2], self.buffer[3], self.buffer[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if compressed != 0 || len > MAX_MESSAGE {
            return Err("the stream carries a message this gateway cannot read".into());
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    fn message(&mut self, encoded: &[u8]) -> Bytes {
        let decoded = match DynamicMessage::decode(self.output.clone(), encoded) {
            Ok(decoded) => decoded,
            Err(e) => {
                return self
                    .fail(tonic::Status::internal(format!(
                        "decoding a streamed message: {e}"
                    )))
                    .unwrap_or_default();
            }
        };
        let mut json = Vec::new();
        let mut serializer = serde_json::Serializer::new(&mut json);
        if let Err(e) = decoded.serialize_with_options(&mut serializer, &SerializeOptions::new()) {
            return self
                .fail(tonic::Status::internal(format!(
                    "encoding a streamed message: {e}"
                )))
                .unwrap_or_default();
        }
        match self.format {
            Format::Ndjson => {
                json.push(b'\n');
                Bytes::from(json)
            }
            Format::Sse => {
                let mut event = String::new();
                if let Some(id) = decoded.get_field_by_name("revision").and_then(|v| v.as_u64()) {
                    event.push_str(&format!("id: {id}\n"));
                }
                if let Some(kind) = enum_name(&decoded, "type") {
                    event.push_str(&format!("event: {kind}\n"));
                }
                event.push_str("data: ");
                let mut out = event.into_bytes();
                out.extend_from_slice(&json);
                out.extend_from_slice(b"\n\n");
                Bytes::from(out)
            }
        }
    }

    /// The last chunk: the failure as problem details.
    fn fail(&mut self, status: tonic::Status) -> Option<Bytes> {
        self.done = true;
        self.buffer.clear();
        let problem = Problem::from_status(&status, &self.origin.instance, &self.origin.base);
        let body = serde_json::Value::Object(problem.body);
        Some(match self.format {
            Format::Ndjson => Bytes::from(format!("{}\n", json!({ "error": body }))),
            Format::Sse => Bytes::from(format!("event: error\ndata: {body}\n\n")),
        })
    }
}

/// The name of an enum field's value, e.g. `ADDED`.
fn enum_name(message: &DynamicMessage, field: &str) -> Option<String> {
    let descriptor = message.descriptor().get_field_by_name(field)?;
    let prost_reflect::Kind::Enum(kind) = descriptor.kind() else {
        return None;
    };
    let number = message.get_field(&descriptor).as_enum_number()?;
    kind.get_value(number).map(|v| v.name().to_string())
}
