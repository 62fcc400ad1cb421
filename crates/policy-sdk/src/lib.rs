//! # Writing Arbiter policies in Rust
//!
//! An Arbiter policy is a WebAssembly component of the world `policy` in
//! `policies/wit/arbiter-policy.wit`: it exports `evaluate(request) ->
//! decision`, and Arbiter calls it for every create, update, delete and
//! state transition of the kinds the policy is bound to. This crate wraps
//! the `wit-bindgen` bindings of that world with what a policy author needs:
//!
//! - [`Request`] and [`Object`] helpers: which object is judged, its labels,
//!   the state it moves from and to, and its fields parsed from
//!   `spec-json` ([`Object::spec`], [`Spec`], [`Object::spec_as`]), or one
//!   string field read without parsing the rest ([`Object::spec_str`]).
//! - Decision builders: [`allow`], and [`conflict`], [`invalid`] and
//!   [`forbidden`] denials with [`Deny::violation`].
//! - [`log`], which goes to the server's log (rate-limited).
//!
//! ```ignore
//! use arbiter_policy_sdk::{Decision, Operation, Policy, Request, allow, conflict};
//!
//! struct NoFridayDeploys;
//!
//! impl Policy for NoFridayDeploys {
//!     fn evaluate(req: Request) -> Decision {
//!         if req.operation == Operation::Transition && req.is_moving_to("RUNNING") {
//!             return conflict("CHANGE_FREEZE", "no starts during the freeze").into();
//!         }
//!         allow()
//!     }
//! }
//!
//! arbiter_policy_sdk::export_policy!(NoFridayDeploys);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the
//! component is `target/wasm32-wasip2/release/<crate>.wasm`. The host
//! resets all of an instance's linear memory after every evaluation, so a
//! stack smaller than Rust's 1 MiB makes each evaluation cheaper: the
//! examples link with `-C link-arg=-zstack-size=65536` (see
//! `policies/.cargo/config.toml`). Policies see
//! only the request: no files, network, environment or clock (use
//! [`Request::now_unix_ms`]).
//!
//! # `no_std` policies
//!
//! With `default-features = false`, the SDK is `no_std` and supplies the
//! global allocator and the panic handler, so a `#![no_std]` policy (using
//! `alloc`) builds into a component without WASI's adapter: fewer core
//! instances and imports, and about half the cost per evaluation. The
//! examples `vm-guard`, `prompt-review` and `user-guard` are built this way.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
mod arena;
mod field;

/// The allocator of `no_std` policies: an arena that never frees. An
/// instance lives for one evaluation, so freeing would only cost time.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

/// The `no_std` runtime pieces that `std` would otherwise bring: `memcpy`,
/// `memcmp` and the like from wasi-libc (the target's self-contained
/// `libc.a`; they use no WASI imports), and the canonical ABI's
/// `cabi_realloc`, which the host calls to pass strings and lists in.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod no_std_runtime {
    #[link(name = "c")]
    unsafe extern "C" {}

    /// Allocates (or grows) guest memory for the host.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        use alloc::alloc::{Layout, alloc, realloc};
        if old_len == 0 && new_len == 0 {
            return align as *mut u8;
        }
        // SAFETY: the canonical ABI calls this with a pointer it got from
        // here (or null, with `old_len` 0), the length and alignment it was
        // allocated with, and a power-of-two alignment.
        let ptr = unsafe {
            if old_len == 0 {
                alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                realloc(
                    old_ptr,
                    Layout::from_size_align_unchecked(old_len, align),
                    new_len,
                )
            }
        };
        if ptr.is_null() {
            core::arch::wasm32::unreachable();
        }
        ptr
    }
}

/// A `no_std` policy that panics traps; the host reports a `trap` fault.
#[cfg(all(not(feature = "std"), target_arch = "wasm32"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The generated bindings of the `arbiter:policy/policy@0.1.0` world.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../policies/wit/0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "arbiter_policy_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

/// The helpers of both world versions, over the generated types in scope
/// (`Request`, `Object`, `Decision`, `Denial`, `DenialKind`, `Violation`).
macro_rules! helpers {
    () => {
        impl Request {
            /// The object as it will be: the proposed one, or on delete the current
            /// one.
            pub fn object(&self) -> Option<&Object> {
                self.proposed.as_ref().or(self.current.as_ref())
            }

            /// The kind being changed: `vm`, `user` or `prompt`.
            pub fn kind(&self) -> &str {
                self.object().map_or("", |o| o.kind.as_str())
            }

            /// The state the object is in before the change (empty on create).
            pub fn current_state(&self) -> &str {
                self.current.as_ref().map_or("", |o| o.state.as_str())
            }

            /// Whether this is a transition into `state`, e.g. `"STOPPED"`.
            pub fn is_moving_to(&self, state: &str) -> bool {
                self.operation == Operation::Transition
                    && self.proposed.as_ref().is_some_and(|o| o.state == state)
            }

            /// A label of the object as it is before the change, falling back to
            /// the proposed object on create.
            pub fn label(&self, key: &str) -> Option<&str> {
                self.current
                    .as_ref()
                    .or(self.proposed.as_ref())
                    .and_then(|o| o.label(key))
            }
        }

        impl Object {
            /// The value of a label.
            pub fn label(&self, key: &str) -> Option<&str> {
                self.labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            }

            /// The object's fields, parsed from its proto3 JSON.
            pub fn spec(&self) -> Result<$crate::Spec, $crate::SpecError> {
                serde_json::from_str(&self.spec_json)
                    .map($crate::Spec)
                    .map_err(|e| $crate::SpecError(e.to_string()))
            }

            /// One top-level string field of the spec by its JSON name
            /// (`machineType`); `""` when absent, as proto3 JSON leaves out
            /// empty strings. It reads only as far as the field, without
            /// parsing the fields it passes: the cheapest way to read one
            /// or two fields. An error when the field holds something other
            /// than a string.
            pub fn spec_str(&self, field: &str) -> Result<alloc::borrow::Cow<'_, str>, $crate::SpecError> {
                $crate::field::top_level_str(&self.spec_json, field)
            }

            /// The object's fields as your own type; name the fields in
            /// lowerCamelCase (`#[serde(rename_all = "camelCase")]`), as proto3
            /// JSON does.
            pub fn spec_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, $crate::SpecError> {
                serde_json::from_str(&self.spec_json).map_err(|e| $crate::SpecError(e.to_string()))
            }
        }

        /// Lets the request go on.
        pub fn allow() -> Decision {
            Decision::Allow
        }

        /// A denial under construction; turn it into a [`Decision`] with `.into()`.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Deny(pub Denial);

        fn deny(kind: DenialKind, reason: &str, message: &str) -> Deny {
            Deny(Denial {
                kind,
                reason: reason.to_string(),
                message: message.to_string(),
                violations: Vec::new(),
            })
        }

        /// The object's current state conflicts with the request (gRPC
        /// `FAILED_PRECONDITION`, HTTP 409). `reason` is UPPER_SNAKE_CASE; the
        /// message says how to resolve it.
        pub fn conflict(reason: &str, message: &str) -> Deny {
            deny(DenialKind::Conflict, reason, message)
        }

        /// The request's values are not acceptable (gRPC `INVALID_ARGUMENT`, HTTP
        /// 422); add a [`Deny::violation`] per bad field.
        pub fn invalid(reason: &str, message: &str) -> Deny {
            deny(DenialKind::Invalid, reason, message)
        }

        /// The principal may not do this (gRPC `PERMISSION_DENIED`, HTTP 403).
        pub fn forbidden(reason: &str, message: &str) -> Deny {
            deny(DenialKind::Forbidden, reason, message)
        }

        impl Deny {
            /// Names a field (e.g. `vm.machine_type`) and what is wrong with it.
            pub fn violation(mut self, field: &str, description: &str) -> Self {
                self.0.violations.push(Violation {
                    field: field.to_string(),
                    description: description.to_string(),
                });
                self
            }
        }

        impl From<Deny> for Decision {
            fn from(deny: Deny) -> Self {
                Decision::Deny(deny.0)
            }
        }
    };
}

pub use bindings::Guest as Policy;
pub use bindings::arbiter::policy::types::{
    Decision, Denial, DenialKind, Object, Operation, Request, Violation,
};
pub use bindings::export_policy;
pub use serde_json::Value;

/// Writes a line to the server's log, tagged with the policy's name. The
/// server keeps at most a few lines per evaluation and per second.
pub fn log(message: &str) {
    bindings::log(message);
}

helpers!();

pub mod v2;

/// `spec-json` did not parse as expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cannot read the object's spec: {}", self.0)
    }
}

impl core::error::Error for SpecError {}

/// An object's fields as proto3 JSON: lowerCamelCase names
/// (`machineType`), enums by name, fields at their default value left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec(pub Value);

impl Spec {
    /// A field by its JSON name, e.g. `machineType`.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// A string field; `""` when it is absent (proto3 leaves out empty
    /// strings).
    pub fn str(&self, field: &str) -> &str {
        self.get(field).and_then(Value::as_str).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(state: &str, labels: &[(&str, &str)], spec: &str) -> Object {
        Object {
            kind: "vm".into(),
            name: "tenants/acme/vms/web-1".into(),
            state: state.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            spec_json: spec.into(),
            revision: 7,
        }
    }

    fn stop(labels: &[(&str, &str)]) -> Request {
        Request {
            operation: Operation::Transition,
            tenant: "acme".into(),
            principal: "alice".into(),
            current: Some(vm("RUNNING", labels, "{}")),
            proposed: Some(vm("STOPPED", labels, "{}")),
            now_unix_ms: 0,
        }
    }

    #[test]
    fn requests_tell_what_moves_where() {
        let req = stop(&[("env", "prod")]);
        assert!(req.is_moving_to("STOPPED"));
        assert!(!req.is_moving_to("RUNNING"));
        assert_eq!(req.kind(), "vm");
        assert_eq!(req.current_state(), "RUNNING");
        assert_eq!(req.label("env"), Some("prod"));
        assert_eq!(req.label("team"), None);
    }

    #[test]
    fn specs_parse_as_json_or_as_a_type() {
        let object = vm(
            "STOPPED",
            &[],
            r#"{"machineType":"e2-small","region":"eu-west1"}"#,
        );
        let spec = object.spec().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.str("machineType"), "e2-small");
        assert_eq!(spec.str("image"), "");

        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Vm {
            machine_type: String,
        }
        let typed: Vm = object.spec_as().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(typed.machine_type, "e2-small");
        assert_eq!(object.spec_str("machineType").as_deref(), Ok("e2-small"));
        assert_eq!(object.spec_str("image").as_deref(), Ok(""));
        assert!(vm("STOPPED", &[], "not json").spec_str("image").is_err());
        assert!(vm("STOPPED", &[], "not json").spec().is_err());
    }

    #[test]
    fn denials_carry_kind_reason_and_violations() {
        let decision: Decision = invalid("BAD_TYPE", "pick another type")
            .violation("vm.machine_type", "not allowed")
            .into();
        let Decision::Deny(denial) = decision else {
            panic!("expected a denial")
        };
        assert_eq!(denial.kind, DenialKind::Invalid);
        assert_eq!(denial.reason, "BAD_TYPE");
        assert_eq!(denial.violations.len(), 1);
        assert!(matches!(allow(), Decision::Allow));
    }
}
