//! The store state of one evaluation: a WASI context with no capabilities,
//! the memory limiter, and what the policy logged.

use std::sync::Arc;
use std::time::Duration;

use arbiter_core::policy::{Fault, FaultKind, Lookup, MAX_LOOKUPS};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::limits::MemoryLimiter;
use crate::logs::{MAX_LINE, PER_EVALUATION};

/// Bytes of stdout and of stderr kept per evaluation.
const CAPTURE: usize = 4096;

/// A wall clock stopped at the request's time: a policy that reads the
/// clock sees when the request was made, so its decision depends on the
/// request alone.
struct RequestClock(Duration);

impl HostWallClock for RequestClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that does not move during an evaluation.
struct StoppedClock;

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Everything one evaluation's store holds.
pub struct GuestState {
    /// Built when the policy first calls WASI: many never do, and building
    /// it is a good part of what an evaluation costs.
    wasi: Option<WasiCtx>,
    now_unix_ms: u64,
    table: ResourceTable,
    /// Caps linear memory.
    pub limiter: MemoryLimiter,
    /// Lines from the `log` import.
    pub logged: Vec<String>,
    /// Captured stdout and stderr, once WASI is in use.
    output: Option<(MemoryOutputPipe, MemoryOutputPipe)>,
    /// What `lookup` reads, if anything.
    lookup: Option<Arc<dyn Lookup>>,
    /// `lookup` calls so far.
    lookups: usize,
    /// Why a host call stopped the evaluation, when one did.
    pub fault: Option<Fault>,
    /// Whether an inline evaluation was interrupted at an epoch tick
    /// before its time limit (and is to run again on a fiber).
    pub outran_slice: bool,
}

/// Most WASI resources (streams, pollables, ...) one evaluation may hold:
/// a policy needs a handful; wasmtime's default (a million) would let one
/// evaluation take host memory far outside its memory limit.
pub const MAX_RESOURCES: usize = 4096;

fn bounded_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    table
}

impl GuestState {
    /// A state for an evaluation of a request made at `now_unix_ms` with
    /// `memory_bytes` of linear memory.
    pub fn new(now_unix_ms: u64, memory_bytes: u64) -> Self {
        Self {
            wasi: None,
            now_unix_ms,
            table: bounded_table(),
            limiter: MemoryLimiter::new(memory_bytes),
            logged: Vec::new(),
            output: None,
            lookup: None,
            lookups: 0,
            fault: None,
            outran_slice: false,
        }
    }

    /// The state with `lookup` reading through `lookup`.
    pub fn with_lookup(mut self, lookup: Option<Arc<dyn Lookup>>) -> Self {
        self.lookup = lookup;
        self
    }

    /// Readies the state of a prepared instance for a request made at
    /// `now_unix_ms` with `memory_bytes` of linear memory, or says that
    /// the instance already holds more than that.
    pub fn ready_for(&mut self, now_unix_ms: u64, memory_bytes: u64) -> bool {
        if u64::try_from(self.limiter.used()).unwrap_or(u64::MAX) > memory_bytes {
            return false;
        }
        self.now_unix_ms = now_unix_ms;
        self.limiter.set_limit(memory_bytes);
        true
    }

    /// Lets go of what the state reads through (the store behind
    /// `lookup`), before the store is dropped elsewhere, later.
    pub fn release(&mut self) {
        self.lookup = None;
    }

    /// What the policy wrote to stdout and to stderr.
    pub fn output(&self) -> (Vec<u8>, Vec<u8>) {
        match &self.output {
            Some((out, err)) => (out.contents().to_vec(), err.contents().to_vec()),
            None => (Vec::new(), Vec::new()),
        }
    }
}

/// A WASI context with no capabilities, whose output goes to `output`.
fn capability_free(now_unix_ms: u64, output: &mut Option<(MemoryOutputPipe, MemoryOutputPipe)>) -> WasiCtx {
    let stdout = MemoryOutputPipe::new(CAPTURE);
    let stderr = MemoryOutputPipe::new(CAPTURE);
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .wall_clock(RequestClock(Duration::from_millis(now_unix_ms)))
        .monotonic_clock(StoppedClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    *output = Some((stdout, stderr));
    wasi
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (now, output) = (self.now_unix_ms, &mut self.output);
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| capability_free(now, output)),
            table: &mut self.table,
        }
    }
}

impl crate::bindings::v1::arbiter::policy::types::Host for GuestState {}
impl crate::bindings::v2::arbiter::policy::types::Host for GuestState {}

impl GuestState {
    /// Keeps the first few lines of an evaluation, each cut to the length
    /// the server log takes: a guest's string may be as large as its memory.
    fn keep_line(&mut self, message: &str) {
        if self.logged.len() < PER_EVALUATION {
            self.logged
                .push(arbiter_core::policy::truncate(message, MAX_LINE));
        }
    }

    /// Stops the evaluation with `fault`.
    fn stop(&mut self, fault: Fault) -> wasmtime::Error {
        let error = wasmtime::Error::msg(fault.detail.clone());
        self.fault = Some(fault);
        error
    }
}

impl crate::bindings::v1::PolicyImports for GuestState {
    fn log(&mut self, message: String) {
        self.keep_line(&message);
    }
}

/// Longest name `lookup` reads: longer ones name nothing.
const MAX_LOOKUP_NAME: usize = 512;

impl crate::bindings::v2::PolicyImports for GuestState {
    fn log(&mut self, message: String) {
        self.keep_line(&message);
    }

    /// Reads an object of the request's tenant; the 17th call of an
    /// evaluation stops it with a fault.
    async fn lookup(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Option<crate::bindings::v2::arbiter::policy::types::Object>> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(self.stop(Fault::new(
                FaultKind::Trap,
                format!("it called lookup more than {MAX_LOOKUPS} times in one evaluation"),
            )));
        }
        let Some(lookup) = self.lookup.clone() else {
            return Ok(None);
        };
        if name.len() > MAX_LOOKUP_NAME {
            return Ok(None);
        }
        match lookup.lookup(&name).await {
            Ok(found) => Ok(found.as_ref().map(crate::convert::v2::object)),
            Err(fault) => Err(self.stop(fault)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::v1::PolicyImports;

    #[test]
    fn logged_lines_are_few_and_short() {
        let mut state = GuestState::new(0, 1 << 20);
        for _ in 0..100 {
            state.log("x".repeat(1 << 20));
        }
        assert_eq!(state.logged.len(), PER_EVALUATION);
        assert!(state.logged.iter().all(|l| l.len() <= MAX_LINE));
    }

    #[test]
    fn the_resource_table_is_bounded() {
        let state = GuestState::new(0, 1 << 20);
        assert_eq!(state.table.max_capacity(), MAX_RESOURCES);
    }
}
