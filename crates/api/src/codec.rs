//! The protobuf codec of the generated services: prost's, except that a
//! request that does not decode is `INVALID_ARGUMENT` with reason
//! `MALFORMED_REQUEST` (the API's error contract) instead of `INTERNAL`.

use std::collections::HashMap;

use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// Prost encoding with contract-conforming decode errors.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MalformedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MalformedDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Decodes with prost; a failure is `MALFORMED_REQUEST`.
#[derive(Debug)]
pub struct MalformedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for MalformedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|e| malformed(e.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The status of a message that does not decode.
pub fn malformed(why: &str) -> Status {
    let details = ErrorDetails::with_error_info("MALFORMED_REQUEST", "arbiter", HashMap::new());
    Status::with_error_details(
        Code::InvalidArgument,
        format!(
            "the request is not a valid protobuf message of this method ({why}); check the client's generated code against proto/arbiter/v1"
        ),
        details,
    )
}
