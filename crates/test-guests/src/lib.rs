//! Paths of the guest policies that `build.rs` builds from source: the
//! examples in `policies/` and the hostile policy in `tests/guests/`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The bytes of a built guest.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read the guest {path}: {e}"))
}
