//! A policy upload (CreatePolicy, check only) with arbitrary module bytes
//! and settings (kinds, operations, mode, failure policy, limits), through
//! the service stack to the policy host's compiler. Half the inputs start
//! with a component header, so that they get past the first check into
//! wasmtime's parser and validator. Whatever the bytes, the answer is a
//! clear refusal or an acceptance, never UNKNOWN or INTERNAL.

#![no_main]

use arbiter_api::v1::{CreatePolicyRequest, Policy};
use arbiter_fuzz::call;
use libfuzzer_sys::fuzz_target;
use prost::Message;

const KINDS: &[&str] = &["vm", "user", "prompt", "policy", "", "VM"];

fuzz_target!(|data: &[u8]| {
    let Some((settings, module)) = data.split_at_checked(4) else {
        return;
    };
    let [flags, kind, limits, mode] = [settings[0], settings[1], settings[2], settings[3]];
    let mut bytes = Vec::with_capacity(module.len() + 8);
    if flags & 1 == 1 {
        bytes.extend_from_slice(b"\0asm\x0d\0\x01\0");
    }
    bytes.extend_from_slice(module);
    let policy = Policy {
        kinds: vec![KINDS[usize::from(kind) % KINDS.len()].to_string()],
        operations: vec![i32::from(flags >> 1) % 6],
        mode: i32::from(mode % 4),
        failure_policy: i32::from(mode >> 2) % 4,
        timeout: (limits & 1 == 1).then(|| prost_types_duration(limits)),
        memory_limit_bytes: u64::from(limits) << 16,
        module: bytes,
        ..Default::default()
    };
    let request = CreatePolicyRequest {
        parent: "tenants/fuzz".into(),
        policy_id: "p".into(),
        policy: Some(policy),
        validate_only: true,
        ..Default::default()
    };
    let code = call("/arbiter.v1.Policies/CreatePolicy", &request.encode_to_vec());
    assert!(
        !matches!(code, tonic::Code::Unknown | tonic::Code::Internal),
        "an upload answered {code:?}"
    );
});

fn prost_types_duration(limits: u8) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::from(limits >> 6) - 1,
        nanos: i32::from(limits) * 1_000_000,
    }
}
