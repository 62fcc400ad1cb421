//! Arbiter's WebAssembly policy host.
//!
//! Tenants upload WebAssembly components of the world `arbiter:policy/policy`
//! (`policies/wit/0.1.0` and `policies/wit/0.2.0`; the host accepts both); [`Host`] runs them for the engine as
//! its [`arbiter_core::PolicyRuntime`]. It narrows wasmtime to what running
//! untrusted, short-lived policies needs:
//!
//! - **One engine, compile once.** Components are compiled by one
//!   [`wasmtime::Engine`], kept in memory by content digest as a linked
//!   `PolicyPre` (an `InstancePre` with every import resolved), and cached
//!   on disk by wasmtime's content-addressed cache, so a restart loads
//!   compiled code instead of compiling again.
//! - **Cheap isolation.** Every evaluation gets a fresh `Store` and a fresh
//!   instance from the pooling allocator (memory slots reused
//!   copy-on-write), so no state survives from one request to the next.
//! - **Limits.** Epoch interruption stops a policy at its time limit; a
//!   [`limits::MemoryLimiter`] caps its linear memory; the wasm stack is
//!   bounded, so deep recursion traps instead of crashing the host.
//! - **No capabilities.** WASI is linked so that any language's standard
//!   library works, but with no files, sockets, environment or arguments;
//!   the wall clock reads the request's time; stdout and stderr go to the
//!   log. The host's `log` import goes to `tracing`, rate-limited.
//! - **On the request's task.** A policy that imports nothing
//!   asynchronous (no WASI, no `lookup`) starts inline, on the request's
//!   thread without a fiber, until the first epoch tick; one that runs
//!   past it, and every other policy, runs as an async fiber on the
//!   request's own task, yielding to the runtime at every tick, so a slow
//!   policy never holds a worker thread for more than a tick at a time;
//!   at most as many run at once as the pool has instance slots.
//! - **Made ahead.** For inline policies, a thread of the host makes
//!   instances ahead of their evaluations and drops the stores of finished
//!   ones, off the requests' path and in batches (`prepared.rs`): a request
//!   takes a never-called instance in its own fresh store and only calls it.
//!
//! [`cases`] runs a YAML file of request → expected decision cases against
//! a module: the engine of `arbiter policy test`.

pub mod cases;
mod convert;
mod guest;
mod host;
pub mod limits;
mod linked;
mod logs;
mod prepared;

pub use host::{Host, HostConfig, default_tenant_concurrency};

/// The generated host bindings of both versions of the
/// `arbiter:policy/policy` world.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    /// `arbiter:policy@0.1.0`: `evaluate` and `log`.
    pub mod v1 {
        wasmtime::component::bindgen!({
            world: "policy",
            path: "../../policies/wit/0.1.0",
            exports: { default: async },
        });
    }

    /// `arbiter:policy@0.2.0`: adds settings, `lookup` and
    /// `validate-settings`.
    pub mod v2 {
        wasmtime::component::bindgen!({
            world: "policy",
            path: "../../policies/wit/0.2.0",
            imports: { "lookup": async | trappable },
            exports: { default: async },
        });
    }
}
