//! Arbitrary bytes as the message of a gRPC call to any method of the
//! resource services, to transactions and to statistics, through tonic's decoding, the authentication layer,
//! the services' request conversion and the engine's validation on a real
//! store. Whatever the bytes, the answer is a gRPC status other than
//! UNKNOWN or INTERNAL: bad input is the client's error, never a crash.

#![no_main]

use arbiter_fuzz::call;
use libfuzzer_sys::fuzz_target;

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
    "/arbiter.v1.Policies/PreviewPolicy",
    "/arbiter.v1.Transactions/CommitTransaction",
    "/arbiter.v1.Stats/GetConflictStats",
    "/arbiter.v1.Stats/GetPolicyStats",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let code = call(method, message);
    assert!(
        !matches!(code, tonic::Code::Unknown | tonic::Code::Internal),
        "{method}: bad input answered {code:?}"
    );
});
