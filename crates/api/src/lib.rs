//! Generated code of the `arbiter.v1` API and its embedded descriptors.
//!
//! Everything here is produced by `build.rs` from `proto/`; nothing is
//! written by hand except this module layout. [`FILE_DESCRIPTOR_SET`] holds
//! every file of the API with its imports and comments, for server
//! reflection and the HTTP transcoding layer.
#![allow(missing_docs, clippy::all)]

/// The `arbiter.v1` package: resource messages and gRPC services.
pub mod arbiter {
    /// Version 1 of the API.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/arbiter.v1.rs"));
    }
}

/// Google API annotations used by the `arbiter.v1` protos.
pub mod google {
    /// `google.api`: HTTP rules and field behaviour.
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

pub mod codec;
pub mod json;

pub use arbiter::v1;

/// The gRPC metadata key of each warning an answer carries (a WARN-mode
/// policy's denial, ARCHITECTURE.md section 12); one value per warning.
pub const WARNING_METADATA: &str = "arbiter-warning";

/// The encoded `FileDescriptorSet` of the API, imports and comments
/// included.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arbiter_descriptor.bin"));

/// The encoded `FileDescriptorSet` of the `google.rpc` error model
/// (`Status`, `ErrorInfo`, `BadRequest`, ...), for reflection.
pub const RPC_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rpc_descriptor.bin"));
