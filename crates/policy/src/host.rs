//! [`Host`]: the wasmtime engine, the loaded modules, and one evaluation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_core::policy::{
    BoxFuture, Call, Fault, FaultKind, Input, Limits, LoadError, Lookup, NO_SETTINGS, PolicyRuntime, Verdict,
};
use std::time::Instant;

use tokio::sync::{Semaphore, TryAcquireError};
use wasmtime::component::{Component, HasSelf, Instance, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    Trap, UpdateDeadline,
};

use crate::bindings::{v1, v2};
use crate::convert;
use crate::guest::GuestState;
use crate::linked;
use crate::logs::{LogLimiter, lines_of};
use crate::prepared::{self, Maker, Prepared};

/// How often the epoch advances: the resolution of time limits.
const TICK: Duration = Duration::from_millis(2);

/// Settings of the policy host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Where compiled modules are cached on disk; `None` compiles at every
    /// start.
    pub cache_dir: Option<PathBuf>,
    /// Largest linear memory any evaluation may have (the pool's slot size).
    pub max_memory_bytes: u64,
    /// Evaluations running at once; more wait for a slot.
    pub max_concurrent: u32,
    /// Evaluations of one tenant running at once: a tenant whose policies
    /// are slow, or who floods, waits for its own slots and leaves the
    /// others' free.
    pub tenant_concurrent: u32,
    /// How long an evaluation waits for a slot before the request is
    /// refused with `RATE_LIMITED`.
    pub slot_wait: Duration,
    /// Wasm stack of one evaluation.
    pub wasm_stack_bytes: usize,
    /// Modules compiled at once; more wait for their turn.
    pub compile_concurrency: u32,
    /// How long a module waits for its turn to compile.
    pub compile_wait: Duration,
    /// How long a compile may take before the request that asked for it
    /// fails (the compile finishes in the background, holding its turn).
    pub compile_timeout: Duration,
    /// Modules kept compiled in memory; the least recently used beyond
    /// are dropped (and compiled again from the disk cache when needed).
    pub max_loaded: usize,
    /// Whether a thread of the host makes instances of the modules in use
    /// ahead of their inline evaluations, and drops their stores after
    /// them, off the requests' path (see `prepared.rs`). Off by default:
    /// on a machine whose cores the requests keep busy it moves that work
    /// to another thread without saving any, and handing each store from
    /// one thread to another costs more than it saves (BENCHMARKS.md, "An
    /// eleventh look"); it shortens an evaluation where cores are idle.
    pub prepare_ahead: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_bytes: 256 << 20,
            max_concurrent: 64,
            tenant_concurrent: default_tenant_concurrency(),
            slot_wait: Duration::from_secs(1),
            wasm_stack_bytes: 512 << 10,
            compile_concurrency: default_tenant_concurrency(),
            compile_wait: Duration::from_secs(30),
            compile_timeout: Duration::from_secs(120),
            max_loaded: 512,
            prepare_ahead: false,
        }
    }
}

/// Half the cores, at least one: one tenant's evaluations never take every
/// core.
pub fn default_tenant_concurrency() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u32::try_from(cores / 2).unwrap_or(u32::MAX).max(1)
}

/// Most tenants whose slot counts are kept while idle.
const IDLE_TENANTS: usize = 1024;

/// Evaluation slots: each tenant's own, then the shared ones. A tenant
/// waits in its own queue first, so that in the shared queue no tenant has
/// more than its share of waiters ahead of another's.
struct Slots {
    shared: Arc<Semaphore>,
    total: usize,
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<TenantSlots>>>,
    wait: Duration,
}

/// One tenant's slots, and how many of its evaluations wait in the queue
/// for one.
struct TenantSlots {
    slots: Semaphore,
    queued: AtomicUsize,
}

/// A slot held for one evaluation: a permit of the tenant's semaphore and
/// one of the shared, returned when it drops.
struct Slot {
    tenant: Arc<TenantSlots>,
    shared: Arc<Semaphore>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tenant.slots.add_permits(1);
        self.shared.add_permits(1);
    }
}

/// One evaluation counted in its tenant's queue while it is there.
struct InQueue<'a>(&'a AtomicUsize);

impl<'a> InQueue<'a> {
    fn join(queued: &'a AtomicUsize) -> Self {
        queued.fetch_add(1, Ordering::Relaxed);
        Self(queued)
    }
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long an evaluation that runs inline waits on its own thread for a
/// slot that another inline evaluation holds. Such an evaluation holds its
/// slot only while it runs, on another thread, for a few microseconds; a
/// short wait here costs less than waiting as a task, which returns the
/// request to the runtime and polls it again through the whole service
/// stack, and hands the slot on in a queue that new requests then join.
const SPIN_AT_MOST: Duration = Duration::from_micros(40);

impl Slots {
    fn new(config: &HostConfig) -> Self {
        let shared = usize::try_from(config.max_concurrent.max(1)).unwrap_or(1);
        let per_tenant = usize::try_from(config.tenant_concurrent.max(1))
            .unwrap_or(1)
            .min(shared);
        Self {
            shared: Arc::new(Semaphore::new(shared)),
            total: shared,
            per_tenant,
            tenants: Mutex::new(HashMap::new()),
            wait: config.slot_wait,
        }
    }

    fn of_tenant(&self, tenant: &str) -> Arc<TenantSlots> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = tenants.get(tenant) {
            return Arc::clone(s);
        }
        if tenants.len() >= IDLE_TENANTS {
            // Forget the tenants that nothing holds or waits for.
            tenants.retain(|_, s| Arc::strong_count(s) > 1);
        }
        let s = Arc::new(TenantSlots {
            slots: Semaphore::new(self.per_tenant),
            queued: AtomicUsize::new(0),
        });
        tenants.insert(tenant.to_string(), Arc::clone(&s));
        s
    }

    /// A slot for `tenant`, or a `Busy` fault once the wait is over. An
    /// `inline` evaluation first waits briefly on this thread (see
    /// [`SPIN_AT_MOST`]) unless others of the tenant already wait in the
    /// queue, which it then joins behind them.
    async fn acquire(&self, tenant: &str, inline: bool) -> Result<Slot, Fault> {
        let own = self.of_tenant(tenant);
        if inline
            && own.queued.load(Ordering::Relaxed) == 0
            && let Some(slot) = self.take_soon(&own)
        {
            return Ok(slot);
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        let busy = || {
            Fault::new(
                FaultKind::Busy,
                format!(
                    "no evaluation slot was free within {}ms ({} per tenant, {} in all)",
                    self.wait.as_millis(),
                    self.per_tenant,
                    self.total
                ),
            )
        };
        let closed = |_| Fault::new(FaultKind::Unavailable, "the policy host is shutting down");
        let waited = {
            // Counted until it has a slot, or its request is dropped.
            let _queued = InQueue::join(&own.queued);
            tokio::time::timeout_at(deadline, own.slots.acquire()).await
        };
        // The tenant's permit goes back if no shared slot comes, or the
        // request is dropped while it waits for one.
        let permit = waited.map_err(|_| busy())?.map_err(closed)?;
        let shared = tokio::time::timeout_at(deadline, self.shared.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(closed)?;
        permit.forget();
        shared.forget();
        Ok(self.held(own))
    }

    /// The slot whose two permits (the tenant's and a shared one) were
    /// just taken and forgotten: its drop returns them.
    fn held(&self, own: Arc<TenantSlots>) -> Slot {
        Slot {
            tenant: own,
            shared: Arc::clone(&self.shared),
        }
    }

    /// A slot taken on this thread within [`SPIN_AT_MOST`], if one frees.
    fn take_soon(&self, own: &Arc<TenantSlots>) -> Option<Slot> {
        let started = Instant::now();
        loop {
            match own.slots.try_acquire() {
                Ok(permit) => match self.shared.try_acquire() {
                    Ok(shared) => {
                        permit.forget();
                        shared.forget();
                        return Some(self.held(Arc::clone(own)));
                    }
                    // The shared slots are all taken: those wait in the queue.
                    Err(_) => return None,
                },
                Err(TryAcquireError::Closed) => return None,
                Err(TryAcquireError::NoPermits) => {}
            }
            if started.elapsed() >= SPIN_AT_MOST {
                return None;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the policy host: {0}")]
pub struct HostError(String);

/// The policy host: compiles modules once and evaluates them in fresh
/// instances within their limits. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded = self
            .inner
            .modules
            .lock()
            .map(|m| m.loaded.len())
            .unwrap_or_default();
        f.debug_struct("Host").field("loaded", &loaded).finish()
    }
}

/// A linked module of either world version.
#[derive(Clone)]
enum Pre {
    V1(linked::V1<GuestState>),
    V2(linked::V2<GuestState>),
}

impl Pre {
    /// Instantiates the module inline (see [`Pre::inline`]).
    fn instantiate_inline(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Instance> {
        match self {
            Pre::V1(pre) => pre.instantiate_inline(store),
            Pre::V2(pre) => pre.instantiate_inline(store),
        }
    }

    /// Calls `evaluate` of `instance` inline (see [`Pre::inline`]).
    fn call_inline(
        &self,
        store: &mut Store<GuestState>,
        instance: &Instance,
        call: &Call,
        input: &Input,
    ) -> wasmtime::Result<Verdict> {
        match self {
            Pre::V1(pre) => pre
                .call_inline(store, instance, &convert::v1::request(input))
                .map(convert::v1::verdict),
            Pre::V2(pre) => pre
                .call_inline(store, instance, &convert::v2::request(input, &call.settings_json))
                .map(convert::v2::verdict),
        }
    }

    /// Whether evaluations of this module start inline (see
    /// [`Inner::evaluate`]).
    fn inline(&self) -> bool {
        match self {
            Pre::V1(pre) => pre.inline(),
            Pre::V2(pre) => pre.inline(),
        }
    }
}

struct Inner {
    engine: Engine,
    /// Links components of `arbiter:policy@0.1.0` and of `@0.2.0`.
    linker: Linker<GuestState>,
    modules: Mutex<Modules>,
    compiles: Compiles,
    slots: Slots,
    logs: LogLimiter,
    /// Inline evaluations that outran their slice and ran again on a fiber.
    overruns: std::sync::atomic::AtomicU64,
    /// Instances made ahead for inline evaluations, and spent stores.
    prepared: Arc<Prepared>,
    /// The memory limit a prepared instance is made with.
    max_memory_bytes: u64,
    stop_ticking: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticking.store(true, Ordering::Release);
        self.prepared.stop();
    }
}

/// Prepared instances: per module, and in all as a share of the pool.
const PREPARED_PER_MODULE: usize = 16;

/// How many prepared instances may wait, and how many spent stores: half
/// as many as evaluations may run at once, each. Each holds a slot of the
/// pool besides those of the evaluations.
fn prepared_room(config: &HostConfig) -> (usize, usize) {
    if !config.prepare_ahead {
        return (0, 0);
    }
    let half = usize::try_from(config.max_concurrent / 2).unwrap_or(0);
    (half, half)
}

fn pool(config: &HostConfig) -> PoolingAllocationConfig {
    let n = config.max_concurrent.max(1);
    let (ready, spent) = prepared_room(config);
    // Evaluations, and the instances prepared for them or spent.
    let instances = n.saturating_add(u32::try_from(ready + spent).unwrap_or(u32::MAX));
    let mut pool = PoolingAllocationConfig::new();
    // A component holds several core instances (its module, WASI adapter,
    // shims), each with its memory or tables.
    // Each component may take only its share of the pool, so that no
    // component (one with a hundred memories, say) can drain it and make
    // other tenants' policies fail to start; a component over its share
    // is refused at upload.
    pool.total_component_instances(instances)
        // Each evaluation on a fiber runs on a stack of its own.
        .total_stacks(n)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        .max_tables_per_module(8)
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(8 << 20)
        // A policy touches a few pages per evaluation. Resetting them with
        // memset (only the dirty ones, where the kernel can list them)
        // instead of madvise spares the page faults and TLB shootdowns
        // that otherwise dominate a short evaluation.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    pool
}

/// A component's share of the pool: core instances (its module, WASI
/// adapter, shims; more for interpreters linked from several modules),
/// linear memories and tables.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 32;

/// The compiled modules in memory, least recently used dropped first.
struct Modules {
    loaded: HashMap<String, (Pre, u64)>,
    clock: u64,
    max: usize,
}

impl Modules {
    fn get(&mut self, digest: &str) -> Option<Pre> {
        self.clock += 1;
        let clock = self.clock;
        self.loaded.get_mut(digest).map(|(pre, used)| {
            *used = clock;
            pre.clone()
        })
    }

    fn insert(&mut self, digest: String, pre: Pre) {
        while self.loaded.len() >= self.max.max(1) {
            let Some(oldest) = self
                .loaded
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            self.loaded.remove(&oldest);
        }
        self.clock += 1;
        self.loaded.insert(digest, (pre, self.clock));
    }
}

/// Compiles: a bounded number at once, one per module.
struct Compiles {
    turns: Arc<Semaphore>,
    /// One lock per module being compiled, so that concurrent first uses
    /// of one module compile it once.
    running: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    wait: Duration,
    timeout: Duration,
    done: std::sync::atomic::AtomicU64,
}

/// Bytes of each linear memory kept resident between evaluations.
const KEEP_RESIDENT: usize = 2 << 20;

fn engine(config: &HostConfig) -> Result<Engine, HostError> {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.wasm_stack_bytes)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool(config)));
    if let Some(dir) = &config.cache_dir {
        // wasmtime's cache wants an absolute path; the data dir is often
        // relative (`./arbiter-data`).
        let dir = std::path::absolute(dir)
            .map_err(|e| HostError(format!("module cache in {}: {e}", dir.display())))?;
        let mut cache = CacheConfig::new();
        cache.with_directory(&dir);
        let cache =
            Cache::new(cache).map_err(|e| HostError(format!("module cache in {}: {e}", dir.display())))?;
        wasm.cache(Some(cache));
    }
    Engine::new(&wasm).map_err(|e| HostError(e.to_string()))
}

/// Advances the engine's epoch every [`TICK`] until told to stop.
fn start_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), HostError> {
    std::thread::Builder::new()
        .name("arbiter-policy-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| HostError(format!("cannot start the epoch thread: {e}")))
}

/// The first line of an error chain, for messages that clients see.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Explains why bytes are not a policy component before wasmtime does.
fn check_header(module: &[u8]) -> Result<(), String> {
    match module.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(
            "is a core WebAssembly module, not a component; build the policy with `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err("is not WebAssembly: it does not start with the \\0asm header".into()),
    }
}

impl Host {
    /// Starts a host: one engine with the pooling allocator, a linker with
    /// capability-free WASI and the `log` import, and the epoch thread.
    pub fn new(config: &HostConfig) -> Result<Self, HostError> {
        let engine = engine(config)?;
        // One linker serves both versions: the imports of 0.2.0 are those
        // of 0.1.0 (`log`, the same function in both) plus `lookup`, and
        // a component may import the type-only `types` instances of both
        // (the SDK's components do).
        let host_error = |e: wasmtime::Error| HostError(e.to_string());
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(host_error)?;
        v1::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(host_error)?;
        linker.allow_shadowing(true);
        v2::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(host_error)?;
        linker.allow_shadowing(false);
        let stop_ticking = Arc::new(AtomicBool::new(false));
        start_ticker(engine.clone(), Arc::clone(&stop_ticking))?;
        // Exported from the start, at 0, so that a rate over it is defined
        // before the first overrun.
        metrics::counter!("arbiter_policy_inline_overruns_total").increment(0);
        let (ready, spent) = prepared_room(config);
        let prepared = Prepared::new(PREPARED_PER_MODULE, ready, spent);
        let host = Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                modules: Mutex::new(Modules {
                    loaded: HashMap::new(),
                    clock: 0,
                    max: config.max_loaded,
                }),
                compiles: Compiles {
                    turns: Arc::new(Semaphore::new(
                        usize::try_from(config.compile_concurrency.max(1)).unwrap_or(1),
                    )),
                    running: Mutex::new(HashMap::new()),
                    wait: config.compile_wait,
                    timeout: config.compile_timeout,
                    done: std::sync::atomic::AtomicU64::new(0),
                },
                slots: Slots::new(config),
                logs: LogLimiter::default(),
                overruns: std::sync::atomic::AtomicU64::new(0),
                prepared: Arc::clone(&prepared),
                max_memory_bytes: config.max_memory_bytes,
                stop_ticking,
            }),
        };
        prepared
            .start(Arc::downgrade(&host.inner))
            .map_err(|e| HostError(format!("cannot start the preparing thread: {e}")))?;
        Ok(host)
    }

    /// Compiles and links `module`, keeping it under `digest`. Blocking:
    /// compiling takes milliseconds to seconds (cached on disk after the
    /// first time).
    pub fn load_blocking(&self, digest: &str, module: &[u8]) -> Result<(), String> {
        if self.is_loaded(digest) {
            return Ok(());
        }
        let pre = self.inner.compile(module)?;
        self.inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string(), pre);
        Ok(())
    }

    /// How many modules this host has compiled (or read from the disk
    /// cache) since it started.
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.done.load(Ordering::Relaxed)
    }

    /// How many inline evaluations outran their slice and ran again on a
    /// fiber since the host started.
    pub fn inline_overruns(&self) -> u64 {
        self.inner.overruns.load(Ordering::Relaxed)
    }

    /// How many evaluations ran in an instance prepared ahead of them
    /// since the host started.
    pub fn prepared_used(&self) -> u64 {
        self.inner.prepared.used()
    }

    /// Whether evaluations of a loaded module start inline, on the
    /// caller's thread without a fiber: those of a component that imports
    /// neither WASI nor `lookup`.
    pub fn runs_inline(&self, digest: &str) -> Option<bool> {
        self.inner.loaded(digest).ok().map(|pre| pre.inline())
    }

    /// Instantiates a loaded module in a fresh store and drops it, without
    /// calling it: the fixed cost of an evaluation, for benchmarks.
    pub fn instantiate_blocking(&self, digest: &str, limits: Limits) -> Result<(), Fault> {
        let pre = self.inner.loaded(digest)?;
        let deadline = Instant::now() + limits.timeout;
        let mut store = self.inner.store(0, limits, None, deadline, pre.inline());
        let instantiated = match &pre {
            Pre::V1(pre) if pre.inline() => pre.instantiate_inline(&mut store).map(drop),
            Pre::V2(pre) if pre.inline() => pre.instantiate_inline(&mut store).map(drop),
            Pre::V1(pre) => futures::executor::block_on(pre.instantiate(&mut store)).map(drop),
            Pre::V2(pre) => futures::executor::block_on(pre.instantiate(&mut store)).map(drop),
        };
        instantiated.map_err(|e| classify(&e, store.data(), limits, &[]))
    }

    /// Evaluates a loaded module on this thread, with no settings and no
    /// lookups. Blocking.
    pub fn evaluate_blocking(
        &self,
        digest: &str,
        policy: &str,
        limits: Limits,
        input: &Input,
    ) -> Result<Verdict, Fault> {
        self.evaluate_call_blocking(&Call::new(digest, policy, limits), input)
    }

    /// Evaluates `call` on `input` on this thread. Blocking.
    pub fn evaluate_call_blocking(&self, call: &Call, input: &Input) -> Result<Verdict, Fault> {
        let pre = self.inner.loaded(&call.digest)?;
        futures::executor::block_on(self.inner.evaluate(&pre, call, input))
    }

    /// Asks a loaded module whether it accepts `call.settings_json`, on
    /// this thread. Blocking.
    pub fn validate_settings_blocking(&self, call: &Call) -> Result<Result<(), String>, Fault> {
        futures::executor::block_on(self.inner.validate_settings(call))
    }

    /// The world version of a loaded module: `"0.1.0"` or `"0.2.0"`.
    pub fn version(&self, digest: &str) -> Option<&'static str> {
        self.inner.loaded(digest).ok().map(|pre| match pre {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
        })
    }
}

/// Whether `settings_json` is an empty JSON object: the settings a module
/// of `arbiter:policy@0.1.0` accepts.
fn no_settings(settings_json: &str) -> bool {
    let trimmed: String = settings_json.chars().filter(|c| !c.is_whitespace()).collect();
    trimmed == NO_SETTINGS
}

/// Whether a component was built against `arbiter:policy@0.2.0`: it
/// exports `validate-settings`. (Its imports do not tell: a component of
/// 0.1.0 built with the SDK imports the type-only `types` of both.)
fn is_v2(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == "validate-settings")
}

impl Inner {
    fn compile(&self, module: &[u8]) -> Result<Pre, String> {
        check_header(module)?;
        self.compiles.done.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("arbiter_policy_compiles_total").increment(1);
        let component = Component::new(&self.engine, module)
            .map_err(|e| format!("is not a valid component: {}", first_line(&format!("{e:#}"))))?;
        let (version, exports) = if is_v2(&self.engine, &component) {
            (
                "0.2.0",
                "`evaluate: func(req: request) -> decision` and `validate-settings: func(settings-json: string) -> result<_, string>`",
            )
        } else {
            ("0.1.0", "`evaluate: func(req: request) -> decision`")
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!(
                "imports what policies cannot use ({}); a policy may import only WASI and the imports of arbiter:policy (`log`, and `lookup` since 0.2.0)",
                first_line(&format!("{e:#}"))
            )
        })?;
        let wrong_world = |e: wasmtime::Error| {
            format!(
                "is not of the world arbiter:policy/policy@{version} ({}); it must export {exports}",
                first_line(&format!("{e:#}"))
            )
        };
        if version == "0.2.0" {
            linked::V2::new(pre).map(Pre::V2).map_err(wrong_world)
        } else {
            linked::V1::new(pre).map(Pre::V1).map_err(wrong_world)
        }
    }

    fn loaded(&self, digest: &str) -> Result<Pre, Fault> {
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .ok_or_else(|| Fault::new(FaultKind::Unavailable, format!("module {digest} is not loaded")))
    }

    /// A fresh store for one evaluation, with its limits and deadline
    /// (see [`arm`]).
    fn store(
        &self,
        now_unix_ms: u64,
        limits: Limits,
        lookup: Option<Arc<dyn Lookup>>,
        deadline: Instant,
        inline: bool,
    ) -> Store<GuestState> {
        let mut store =
            self.bare_store(GuestState::new(now_unix_ms, limits.memory_bytes).with_lookup(lookup));
        arm(&mut store, deadline, inline);
        store
    }

    /// A fresh store holding `state`, its memory limited by the state's
    /// limiter; no deadline yet.
    fn bare_store(&self, state: GuestState) -> Store<GuestState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store
    }

    /// One inline evaluation in a prepared instance if one is ready, else
    /// in a fresh store and instance made here; the store, for
    /// [`Prepared::retire`].
    fn evaluate_inline(
        &self,
        pre: &Pre,
        call: &Call,
        input: &Input,
        deadline: Instant,
    ) -> (Store<GuestState>, wasmtime::Result<Verdict>) {
        if let Some(mut ready) = self.prepared.take(&call.digest) {
            if ready
                .store
                .data_mut()
                .ready_for(input.now_unix_ms, call.limits.memory_bytes)
            {
                arm(&mut ready.store, deadline, true);
                let result = pre.call_inline(&mut ready.store, &ready.instance, call, input);
                return (ready.store, result);
            }
            self.prepared.retire(ready.store);
        }
        let mut store = self.store(input.now_unix_ms, call.limits, None, deadline, true);
        let result = pre
            .instantiate_inline(&mut store)
            .and_then(|instance| pre.call_inline(&mut store, &instance, call, input));
        (store, result)
    }

    /// One evaluation. A module that imports nothing asynchronous starts
    /// inline: instantiated and called on this thread, without a fiber,
    /// which is what most evaluations need and the cheapest way to run
    /// them. The first epoch tick ends an inline evaluation (so that it
    /// holds the thread no longer than one on a fiber holds it between
    /// yields); if its time limit has not passed, it runs again from the
    /// start on a fiber, in a fresh store, within what is left of the
    /// limit. A policy sees only its request, so the second run decides
    /// what the first would have.
    async fn evaluate(&self, pre: &Pre, call: &Call, input: &Input) -> Result<Verdict, Fault> {
        let deadline = Instant::now() + call.limits.timeout;
        if pre.inline() {
            let (store, result) = self.evaluate_inline(pre, call, input, deadline);
            let outran = result.is_err() && store.data().outran_slice;
            let verdict = (!outran).then(|| self.finish(&call.policy, call.limits, store.data(), result));
            self.prepared.retire(store);
            if let Some(verdict) = verdict {
                return verdict;
            }
            self.overruns.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("arbiter_policy_inline_overruns_total").increment(1);
        }
        let mut store = self.store(
            input.now_unix_ms,
            call.limits,
            call.lookup.clone(),
            deadline,
            false,
        );
        let result = match pre {
            Pre::V1(pre) => {
                let request = convert::v1::request(input);
                pre.evaluate(&mut store, &request).await.map(convert::v1::verdict)
            }
            Pre::V2(pre) => {
                let request = convert::v2::request(input, &call.settings_json);
                pre.evaluate(&mut store, &request).await.map(convert::v2::verdict)
            }
        };
        let verdict = self.finish(&call.policy, call.limits, store.data(), result);
        self.prepared.retire(store);
        verdict
    }

    async fn validate_settings(&self, call: &Call) -> Result<Result<(), String>, Fault> {
        let pre = self.loaded(&call.digest)?;
        let Pre::V2(pre) = pre else {
            return Ok(if no_settings(&call.settings_json) {
                Ok(())
            } else {
                Err("the module is a component of arbiter:policy@0.1.0, which takes no settings; build it against arbiter:policy@0.2.0 to use settings".into())
            });
        };
        let mut store = self.store(0, call.limits, None, Instant::now() + call.limits.timeout, false);
        let result = async {
            let instance = pre.instantiate(&mut store).await?;
            v2::Policy::new(&mut store, &instance)?
                .call_validate_settings(&mut store, &call.settings_json)
                .await
        }
        .await;
        self.finish(&call.policy, call.limits, store.data(), result)
    }

    /// Logs what an evaluation wrote and names what stopped it, if
    /// anything did.
    fn finish<T>(
        &self,
        policy: &str,
        limits: Limits,
        state: &GuestState,
        result: wasmtime::Result<T>,
    ) -> Result<T, Fault> {
        self.logs.emit(policy, "log", &state.logged);
        let (stdout, stderr) = state.output();
        let (stdout, stderr) = (lines_of(&stdout), lines_of(&stderr));
        self.logs.emit(policy, "stdout", &stdout);
        self.logs.emit(policy, "stderr", &stderr);
        result.map_err(|e| classify(&e, state, limits, &stderr))
    }
}

/// Sets `store`'s epoch deadline for an evaluation that must end by
/// `deadline`: it is interrupted at the first tick past it. Before that,
/// at every tick, an evaluation on a fiber yields to the runtime; an
/// `inline` one is interrupted and marked as having outrun its slice.
fn arm(store: &mut Store<GuestState>, deadline: Instant, inline: bool) {
    store.set_epoch_deadline(1);
    if inline {
        store.epoch_deadline_callback(move |mut store| {
            if Instant::now() < deadline {
                store.data_mut().outran_slice = true;
            }
            Ok(UpdateDeadline::Interrupt)
        });
    } else {
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                // tokio's yield: the evaluation goes on after the
                // runtime has polled its I/O and timers, so a long
                // evaluation never keeps a worker from new requests.
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
    }
}

/// Names what stopped an evaluation.
/// `stderr` holds the first lines the policy wrote there: a panic message,
/// say, which tells the policy's owner what went wrong.
fn classify(error: &wasmtime::Error, state: &GuestState, limits: Limits, stderr: &[String]) -> Fault {
    if let Some(fault) = &state.fault {
        return fault.clone();
    }
    if state.limiter.exceeded() {
        return Fault::new(
            FaultKind::Memory,
            format!(
                "it needed more than its memory limit of {} bytes; raise memory_limit_bytes or use less memory",
                state.limiter.limit()
            ),
        );
    }
    let said = match stderr {
        [] => String::new(),
        lines => format!("; it wrote: {}", lines[..lines.len().min(2)].join(" ")),
    };
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::new(
            FaultKind::Timeout,
            format!("it ran past its time limit of {}ms", limits.timeout.as_millis()),
        ),
        Some(Trap::StackOverflow) => {
            Fault::new(FaultKind::Trap, "wasm stack overflow (unbounded recursion?)")
        }
        Some(trap) => Fault::new(FaultKind::Trap, format!("{trap}{said}")),
        None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => Fault::new(
                FaultKind::Trap,
                format!(
                    "it exited with code {} instead of returning a decision{said}",
                    exit.0
                ),
            ),
            None => Fault::new(
                FaultKind::Unavailable,
                first_line(&format!("{error:#}")).to_string(),
            ),
        },
    }
}

/// An instantiation off the request's path is interrupted at the next
/// epoch tick (and its module is not prepared ahead for a while).
const PREPARE_TICKS: u64 = 1;

/// CPU time this thread has used: what an instantiation costs, which the
/// wall clock overstates whenever the thread waits for a core.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Maker for Inner {
    fn make(&self, digest: &str) -> Option<Result<(Store<GuestState>, Instance), ()>> {
        let pre = self.loaded(digest).ok().filter(Pre::inline)?;
        let mut store = self.bare_store(GuestState::new(0, self.max_memory_bytes));
        store.set_epoch_deadline(PREPARE_TICKS);
        let started = thread_cpu_time();
        let instance = pre.instantiate_inline(&mut store);
        let quick = thread_cpu_time().saturating_sub(started) <= prepared::MAKE_AT_MOST;
        Some(match instance {
            Ok(instance) if quick && store.data().fault.is_none() => Ok((store, instance)),
            _ => Err(()),
        })
    }
}

impl PolicyRuntime for Host {
    fn load(&self, digest: String, module: Arc<[u8]>) -> BoxFuture<'_, Result<(), LoadError>> {
        let host = self.clone();
        Box::pin(async move {
            if host.is_loaded(&digest) {
                return Ok(());
            }
            let compiles = &host.inner.compiles;
            // One compile per module: later callers wait for the first.
            let lock = {
                let mut running = compiles.running.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(running.entry(digest.clone()).or_default())
            };
            let deadline = tokio::time::Instant::now() + compiles.wait;
            let busy = |what: &str| {
                LoadError::Busy(format!(
                    "could not be compiled now: {what}; retry in a few seconds"
                ))
            };
            let result = async {
                let _same = tokio::time::timeout_at(deadline, lock.lock())
                    .await
                    .map_err(|_| busy("another compile of it is still running"))?;
                if host.is_loaded(&digest) {
                    return Ok(());
                }
                let turn = tokio::time::timeout_at(deadline, Arc::clone(&compiles.turns).acquire_owned())
                    .await
                    .map_err(|_| busy("the server is compiling other modules"))?
                    .map_err(|_| busy("the policy host is shutting down"))?;
                let worker = host.clone();
                let digest = digest.clone();
                let compile = tokio::task::spawn_blocking(move || {
                    // The turn is held until the compile ends, even after
                    // the caller stopped waiting for it.
                    let _turn = turn;
                    worker.load_blocking(&digest, &module)
                });
                match tokio::time::timeout(compiles.timeout, compile).await {
                    Ok(Ok(result)) => result.map_err(LoadError::Invalid),
                    Ok(Err(e)) => Err(LoadError::Invalid(format!("could not be compiled: {e}"))),
                    Err(_) => Err(busy(&format!(
                        "compiling took longer than {}s",
                        compiles.timeout.as_secs()
                    ))),
                }
            }
            .await;
            let mut running = compiles.running.lock().unwrap_or_else(|p| p.into_inner());
            if Arc::strong_count(&lock) <= 2 {
                running.remove(&digest);
            }
            result
        })
    }

    fn is_loaded(&self, digest: &str) -> bool {
        self.inner
            .modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .loaded
            .contains_key(digest)
    }

    fn evaluate(&self, call: Call, input: Arc<Input>) -> BoxFuture<'_, Result<Verdict, Fault>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let pre = inner.loaded(&call.digest)?;
            let _slot = inner.slots.acquire(&input.tenant, pre.inline()).await?;
            inner.evaluate(&pre, &call, &input).await
        })
    }

    fn validate_settings(
        &self,
        digest: String,
        limits: Limits,
        settings_json: String,
    ) -> BoxFuture<'_, Result<Result<(), String>, Fault>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            // Validations share the slots of evaluations: an admin's
            // uploads never take more than one tenant's share.
            let _slot = inner.slots.acquire(VALIDATIONS, false).await?;
            let call = Call {
                settings_json: settings_json.into(),
                ..Call::new(digest, "settings validation", limits)
            };
            inner.validate_settings(&call).await
        })
    }
}

/// The slot key of settings validations: not a tenant id (ids are RFC 1123
/// labels), so it never shares a tenant's slots.
const VALIDATIONS: &str = "#validations";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert!(
            check_header(b"\0asm\x01\0\0\0rest")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(
            check_header(b"#!/bin/sh")
                .unwrap_err()
                .contains("not WebAssembly")
        );
        assert!(check_header(b"").is_err());
    }

    fn slots(per_tenant: u32, in_all: u32, wait: Duration) -> Slots {
        Slots::new(&HostConfig {
            max_concurrent: in_all,
            tenant_concurrent: per_tenant,
            slot_wait: wait,
            ..HostConfig::default()
        })
    }

    fn free(slots: &Slots, tenant: &str) -> (usize, usize) {
        (
            slots.of_tenant(tenant).slots.available_permits(),
            slots.shared.available_permits(),
        )
    }

    #[tokio::test]
    async fn a_slot_is_returned_to_both_queues_when_it_drops() {
        let slots = slots(1, 2, Duration::from_secs(1));
        let held = slots.acquire("a", true).await.unwrap();
        assert_eq!(free(&slots, "a"), (0, 1));
        // An inline evaluation of the same tenant does not take a second
        // slot while the first is held.
        assert!(slots.take_soon(&slots.of_tenant("a")).is_none());
        drop(held);
        assert_eq!(free(&slots, "a"), (1, 2));
        let queued = slots.acquire("a", false).await.unwrap();
        assert_eq!(free(&slots, "a"), (0, 1));
        drop(queued);
        assert_eq!(free(&slots, "a"), (1, 2));
    }

    #[tokio::test]
    async fn a_tenant_that_waited_in_vain_for_a_shared_slot_keeps_its_own() {
        let slots = slots(1, 1, Duration::from_millis(20));
        let held = slots.acquire("a", true).await.unwrap();
        for inline in [true, false] {
            let fault = slots.acquire("b", inline).await.err().unwrap();
            assert_eq!(fault.kind, FaultKind::Busy, "{}", fault.detail);
            assert_eq!(free(&slots, "b"), (1, 0));
        }
        drop(held);
        assert_eq!(free(&slots, "b"), (1, 1));
        assert!(slots.acquire("b", true).await.is_ok());
    }

    #[tokio::test]
    async fn a_request_dropped_while_it_waits_for_a_shared_slot_gives_back_its_tenants() {
        use futures::FutureExt;
        let slots = slots(1, 1, Duration::from_secs(5));
        let held = slots.acquire("a", false).await.unwrap();
        let mut waiting = Box::pin(slots.acquire("b", false));
        assert!((&mut waiting).now_or_never().is_none());
        assert_eq!(free(&slots, "b"), (0, 0), "b's request holds b's slot");
        drop(waiting);
        assert_eq!(free(&slots, "b"), (1, 0));
        drop(held);
        assert_eq!(free(&slots, "b"), (1, 1));
    }

    #[tokio::test]
    async fn inline_evaluations_wait_behind_the_queue_not_before_it() {
        use futures::FutureExt;
        let slots = slots(1, 4, Duration::from_secs(5));
        let held = slots.acquire("a", true).await.unwrap();
        let mut first = Box::pin(slots.acquire("a", false));
        assert!((&mut first).now_or_never().is_none());
        let mut second = Box::pin(slots.acquire("a", true));
        assert!((&mut second).now_or_never().is_none());
        drop(held);
        let first = first.await.unwrap();
        assert!(
            (&mut second).now_or_never().is_none(),
            "the later request took the slot first"
        );
        drop(first);
        let held = second.await.unwrap();
        // A request dropped while it waits leaves the queue.
        let mut gone = Box::pin(slots.acquire("a", false));
        assert!((&mut gone).now_or_never().is_none());
        assert_eq!(slots.of_tenant("a").queued.load(Ordering::Relaxed), 1);
        drop(gone);
        assert_eq!(slots.of_tenant("a").queued.load(Ordering::Relaxed), 0);
        drop(held);
        assert_eq!(free(&slots, "a"), (1, 4));
    }
}
