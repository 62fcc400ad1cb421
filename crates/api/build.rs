//! Build script of arbiter-api.
//! Compiles `proto/` with protox (no system `protoc`), writes the
//! FileDescriptorSet that the crate embeds, and generates prost/tonic code.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "arbiter/v1/vms.proto",
    "arbiter/v1/users.proto",
    "arbiter/v1/prompts.proto",
    "arbiter/v1/policies.proto",
    "arbiter/v1/changes.proto",
    "arbiter/v1/transactions.proto",
    "arbiter/v1/stats.proto",
];

const RPC_PROTOS: &[&str] = &[
    "google/rpc/code.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not compiled in: the same build script binary may
    // serve another checkout of the workspace (cargo shares it by hash).
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself: prost_types would drop the option
    // extensions (google.api.http) that the HTTP layer reads.
    std::fs::write(
        out.join("arbiter_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    // The google.rpc error model is described (for reflection, so that
    // grpcurl and other dynamic clients can decode error details) but not
    // generated: tonic-types provides those types.
    let rpc = protox::Compiler::new([&root])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(RPC_PROTOS)?
        .file_descriptor_set();
    std::fs::write(out.join("rpc_descriptor.bin"), rpc.encode_to_vec())?;
    tonic_prost_build::configure()
        // Maps encode in key order, so equal requests encode to equal bytes
        // (request_id fingerprints) and labels come back sorted.
        .btree_map(".")
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
