//! Calls by method path with encoded messages: for generic tools (the
//! `arbiter` CLI) that find methods and messages in the API's descriptors
//! instead of the generated types.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Status, codegen::http::uri::PathAndQuery};

use crate::{Client, Error};

/// Passes encoded messages through unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// The answer of [`Client::call_raw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The encoded response message.
    pub message: Vec<u8>,
    /// The warnings it carried (`arbiter-warning`: WARN-mode policies that
    /// would have denied the change).
    pub warnings: Vec<String>,
}

impl Client {
    /// Calls the unary method at `path` (`/arbiter.v1.VirtualMachines/GetVirtualMachine`)
    /// with an encoded request; returns the encoded response and its
    /// warnings.
    pub async fn call_raw(&self, path: &str, request: Vec<u8>) -> Result<RawReply, Error> {
        let path = PathAndQuery::try_from(path.to_string())
            .map_err(|e| Error::Transport(format!("{path:?} is not a method path: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(
            self.channel.clone(),
            self.bearer.clone(),
        ))
        .max_encoding_message_size(64 << 20);
        grpc.ready().await.map_err(|e| Error::Transport(e.to_string()))?;
        let response = grpc.unary(tonic::Request::new(request), path, Raw).await?;
        let warnings = response
            .metadata()
            .get_all(arbiter_api::WARNING_METADATA)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        Ok(RawReply {
            message: response.into_inner(),
            warnings,
        })
    }
}
