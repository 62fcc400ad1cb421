//! A policy without WASI that runs as long as it is told: the object's
//! `spin` label is `forever` (it never returns), `deep` (it recurses
//! without end, on the wasm stack rather than in linear memory) or a
//! number of million loop iterations after which it allows; `once` allows
//! only the first evaluation in an instance (a global counter tells), so
//! that a test sees whether an instance was called before. Without the
//! label it allows at once.

#![no_std]

extern crate alloc;

use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};

use arbiter_policy_sdk::{Decision, Policy, Request, allow, conflict};

/// Evaluations this instance has run.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Spin;

#[inline(never)]
#[allow(unconditional_recursion)]
fn dive(depth: u64) -> u64 {
    black_box(dive(black_box(depth + 1))) + depth
}

impl Policy for Spin {
    fn evaluate(req: Request) -> Decision {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed);
        match req.label("spin") {
            Some("once") if calls > 0 => conflict(
                "CALLED_BEFORE",
                &alloc::format!("this instance ran {calls} evaluations before"),
            )
            .into(),
            Some("once") => allow(),
            Some("forever") => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Some("deep") => {
                black_box(dive(0));
                allow()
            }
            Some(millions) => {
                let rounds = millions.parse::<u64>().unwrap_or(0).saturating_mul(1_000_000);
                let mut n: u64 = 0;
                for _ in 0..rounds {
                    n = black_box(n.wrapping_add(1));
                }
                allow()
            }
            None => allow(),
        }
    }
}

arbiter_policy_sdk::export_policy!(Spin);
