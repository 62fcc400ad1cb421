//! Instances made ahead of their evaluations, and spent stores dropped, on
//! a thread of their own.
//!
//! An inline evaluation (see `Inner::evaluate`) is mostly wasmtime's work
//! around the call: a fresh store, the instance, and afterwards the store's
//! drop, which resets the memory the guest wrote. None of that depends on
//! the request, so the preparing thread does it off the request's path and
//! in batches: it keeps a few never-used instances of each module that was
//! evaluated lately, and drops the stores of finished evaluations. A
//! request takes one of those instances (still a fresh store, and an
//! instance that has run nothing but its own initialisation), sets its
//! limits and deadline, and calls it; when none is ready, it makes its own
//! as before.
//!
//! Everything here is bounded: at most [`Prepared::per_module`] instances
//! wait per module and [`Prepared::ready_max`] in all, at most
//! [`Prepared::spent_max`] stores wait to be dropped (a request drops its
//! own store past that), so the pool's slots for them are counted in
//! advance (see `host::pool`) and a live evaluation always finds one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::Instance;

use crate::guest::GuestState;

/// How long a module's prepared instances wait unused before they are
/// dropped.
const IDLE: Duration = Duration::from_secs(5);

/// Most modules remembered as not to be prepared.
const MAX_REFUSED: usize = 1024;

/// How long a module that could not be prepared is not tried again.
const REFUSED_FOR: Duration = Duration::from_secs(30);

/// Most CPU time an instantiation off the request's path may take (CPU
/// time, not the wall clock: on a busy machine the thread may wait for a
/// core in the middle of one). Instances of the policies this is for take
/// a few microseconds; one that takes longer (a large memory image, a long
/// start function) is made by its requests, within their tenant's
/// evaluation slots, so that no tenant has this thread work for it beyond
/// what its slots allow. (Builds without optimisations, the tests',
/// instantiate some twenty times slower.)
pub const MAKE_AT_MOST: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(5)
} else {
    Duration::from_micros(200)
};

/// Largest linear memory (of all the store's memories together) whose
/// store is dropped off the request's path: dropping resets the pages the
/// guest wrote, which for a large memory is the request's own cost.
const RETIRE_AT_MOST: usize = 4 << 20;

/// A never-called instance in its fresh store.
pub struct Ready {
    pub store: Store<GuestState>,
    pub instance: Instance,
    made: Instant,
}

/// What the preparing thread is asked to do, and what it made.
#[derive(Default)]
struct State {
    ready: HashMap<String, VecDeque<Ready>>,
    /// Modules whose prepared instances ran low, in the order asked.
    wanted: Vec<String>,
    spent: Vec<Store<GuestState>>,
    /// Instances that are ready, or being made.
    ready_held: usize,
    /// Stores waiting to be dropped, or being dropped.
    spent_held: usize,
    /// Modules whose instantiation off the request's path failed or took
    /// longer than [`MAKE_AT_MOST`], and until when: their requests
    /// instantiate for themselves (and report why it fails).
    refused: HashMap<String, Instant>,
    stop: bool,
}

/// The shared side of the preparing thread.
pub struct Prepared {
    state: Mutex<State>,
    wake: Condvar,
    per_module: usize,
    ready_max: usize,
    spent_max: usize,
    /// Prepared instances taken by evaluations.
    used: AtomicU64,
    /// `arbiter_policy_prepared_total`: the same, exported.
    used_metric: metrics::Counter,
}

/// What the preparing thread needs of the host: a fresh instance of a
/// loaded module.
pub trait Maker: Send + Sync + 'static {
    /// A fresh store holding a new instance of `digest`; `None` when the
    /// module is no longer loaded (or is not one to prepare), `Err` when
    /// its instantiation failed or took longer than [`MAKE_AT_MOST`].
    fn make(&self, digest: &str) -> Option<Result<(Store<GuestState>, Instance), ()>>;
}

impl Prepared {
    /// Room for `ready_max` prepared instances (at most `per_module` of one
    /// module) and `spent_max` stores waiting to be dropped.
    pub fn new(per_module: usize, ready_max: usize, spent_max: usize) -> Arc<Self> {
        let used_metric = metrics::counter!("arbiter_policy_prepared_total");
        // Exported from the start, at 0, so that a rate over it is defined
        // before the first use.
        used_metric.increment(0);
        Arc::new(Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            per_module: per_module.min(ready_max),
            ready_max,
            spent_max,
            used: AtomicU64::new(0),
            used_metric,
        })
    }

    /// How many evaluations have taken a prepared instance.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the preparing thread, which makes instances through `maker`
    /// for as long as it lives.
    pub fn start<M: Maker>(self: &Arc<Self>, maker: Weak<M>) -> std::io::Result<()> {
        if self.ready_max == 0 && self.spent_max == 0 {
            return Ok(());
        }
        let shared = Arc::clone(self);
        std::thread::Builder::new()
            .name("arbiter-policy-prepare".into())
            .spawn(move || shared.run(&maker))
            .map(drop)
    }

    /// Tells the preparing thread to drop what it holds and end.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    /// A prepared instance of `digest`, if one is ready; asks for more when
    /// they run low.
    pub fn take(&self, digest: &str) -> Option<Ready> {
        if self.per_module == 0 {
            return None;
        }
        let mut state = self.lock();
        if state
            .refused
            .get(digest)
            .is_some_and(|until| Instant::now() < *until)
        {
            return None;
        }
        let (taken, left) = match state.ready.get_mut(digest) {
            Some(ready) => (ready.pop_front(), ready.len()),
            None => (None, 0),
        };
        if taken.is_some() {
            state.ready_held -= 1;
            self.used.fetch_add(1, Ordering::Relaxed);
            self.used_metric.increment(1);
        }
        // Asked again only once it ran below half, so that the thread wakes
        // once per several evaluations and makes a batch.
        let wake = left < self.per_module / 2 && !state.wanted.iter().any(|d| d == digest);
        if wake {
            state.wanted.push(digest.to_string());
        }
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        taken
    }

    /// Hands over the store of a finished evaluation to be dropped off the
    /// request's path, or drops it here when too many wait. What the store
    /// reads through is let go of here, so that nothing of the caller's
    /// (its storage engine, say) outlives the evaluation.
    pub fn retire(&self, mut store: Store<GuestState>) {
        store.data_mut().release();
        if self.spent_max == 0 || store.data().limiter.used() > RETIRE_AT_MOST {
            drop(store);
            return;
        }
        let mut state = self.lock();
        if state.spent_held >= self.spent_max || state.stop {
            drop(state);
            drop(store);
            return;
        }
        state.spent.push(store);
        state.spent_held += 1;
        let wake = state.spent.len() == (self.spent_max / 2).max(1);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    fn run<M: Maker>(&self, maker: &Weak<M>) {
        let mut state = self.lock();
        loop {
            if state.stop {
                let ready = std::mem::take(&mut state.ready);
                let spent = std::mem::take(&mut state.spent);
                drop(state);
                drop((ready, spent));
                return;
            }
            let spent = std::mem::take(&mut state.spent);
            if !spent.is_empty() {
                drop(state);
                let dropped = spent.len();
                drop(spent);
                state = self.lock();
                state.spent_held -= dropped;
                continue;
            }
            if let Some(digest) = state.wanted.first().cloned() {
                let have = state.ready.get(&digest).map_or(0, VecDeque::len);
                let room = self.ready_max - state.ready_held;
                let make = self.per_module.saturating_sub(have).min(room);
                state.ready_held += make;
                drop(state);
                let (made, refused) = self.make(maker, &digest, make);
                state = self.lock();
                state.ready_held -= make - made.len();
                state.wanted.retain(|d| d != &digest);
                if refused {
                    // Forgetting them all now and then bounds the set; a
                    // forgotten module fails once more off the path.
                    if state.refused.len() >= MAX_REFUSED {
                        state.refused.clear();
                    }
                    state.refused.insert(digest.clone(), Instant::now() + REFUSED_FOR);
                }
                if !made.is_empty() {
                    state.ready.entry(digest).or_default().extend(made);
                }
                continue;
            }
            let idle = self.sweep(&mut state);
            if !idle.is_empty() {
                drop(state);
                drop(idle);
                state = self.lock();
                continue;
            }
            let (next, _) = self
                .wake
                .wait_timeout(state, IDLE)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
        }
    }

    /// Makes up to `count` instances of `digest`; whether its
    /// instantiation failed.
    fn make<M: Maker>(&self, maker: &Weak<M>, digest: &str, count: usize) -> (Vec<Ready>, bool) {
        let mut made = Vec::with_capacity(count);
        let Some(maker) = maker.upgrade() else {
            return (made, false);
        };
        for _ in 0..count {
            match maker.make(digest) {
                Some(Ok((store, instance))) => made.push(Ready {
                    store,
                    instance,
                    made: Instant::now(),
                }),
                Some(Err(())) => return (made, true),
                None => break,
            }
        }
        (made, false)
    }

    /// Takes out the instances that waited longer than [`IDLE`].
    fn sweep(&self, state: &mut State) -> Vec<Ready> {
        let now = Instant::now();
        let mut idle = Vec::new();
        state.ready.retain(|_, ready| {
            // The oldest are in front: each request takes the oldest.
            while ready.front().is_some_and(|r| now.duration_since(r.made) >= IDLE) {
                idle.extend(ready.pop_front());
            }
            !ready.is_empty()
        });
        state.ready_held -= idle.len();
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A maker whose instantiations all fail or take too long, counting
    /// what it is asked for.
    #[derive(Default)]
    struct Refusing {
        asked: Mutex<Vec<String>>,
    }

    impl Maker for Refusing {
        fn make(&self, digest: &str) -> Option<Result<(Store<GuestState>, Instance), ()>> {
            self.asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(digest.to_string());
            Some(Err(()))
        }
    }

    fn asked(maker: &Refusing) -> Vec<String> {
        maker.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Polls `done` until it holds, for at most ten seconds.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_module_refused_off_the_path_is_left_to_its_requests_for_a_while() {
        let prepared = Prepared::new(4, 8, 0);
        let maker = Arc::new(Refusing::default());
        prepared.start(Arc::downgrade(&maker)).expect("preparing thread");

        // The first request finds nothing ready and asks for instances;
        // the one attempt fails, and the module is refused.
        assert!(prepared.take("slow").is_none());
        until("the refusal", || prepared.lock().refused.contains_key("slow"));
        assert_eq!(asked(&maker), ["slow"], "one failed attempt ends the batch");

        // Its next requests make their own instances without asking again.
        for _ in 0..10 {
            assert!(prepared.take("slow").is_none());
        }
        assert!(prepared.lock().wanted.is_empty());

        // Another module is still prepared for; by the time the thread has
        // tried it, it has not tried "slow" again.
        assert!(prepared.take("other").is_none());
        until("the other module's attempt", || asked(&maker).len() == 2);
        assert_eq!(asked(&maker), ["slow", "other"]);
        assert_eq!(prepared.used(), 0);

        // The refusal ends: the module is tried again after REFUSED_FOR.
        prepared
            .lock()
            .refused
            .insert("slow".into(), Instant::now() - Duration::from_millis(1));
        assert!(prepared.take("slow").is_none());
        until("the new attempt", || asked(&maker).len() == 3);
        assert_eq!(asked(&maker)[2], "slow");
        prepared.stop();
    }
}
