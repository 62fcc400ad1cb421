//! A hostile policy: each behaviour is one a host must survive. The object's
//! `hostile` label picks it:
//!
//! - `loop`: spins forever (the time limit must stop it);
//! - `memory`: allocates until the memory limit stops it;
//! - `recursion`: recurses without end (the wasm stack limit stops it);
//! - `trap`: panics, which traps;
//! - `huge`: denies with a 1 MiB message and 10,000 violations;
//! - `log-flood`: logs 5,000 lines, then allows;
//! - `deny`: a well-behaved conflict denial.

use std::hint::black_box;

use arbiter_policy_sdk::{Decision, Policy, Request, allow, conflict, log};

struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: [u64; 16]) -> u64 {
    let next = black_box([depth; 16]);
    black_box(recurse(depth + 1, next)) + pad[0]
}

impl Policy for Hostile {
    fn evaluate(req: Request) -> Decision {
        match req.label("hostile").unwrap_or_default() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recursion" => {
                black_box(recurse(0, [0; 16]));
                allow()
            }
            "trap" => panic!("the hostile policy panics on purpose"),
            "huge" => {
                let mut deny = conflict("HUGE", &"x".repeat(1 << 20));
                for i in 0..10_000 {
                    deny = deny.violation(&format!("field-{i}"), "a violation among very many");
                }
                deny.into()
            }
            "log-flood" => {
                for i in 0..5_000 {
                    log(&format!("flood line {i}"));
                }
                allow()
            }
            "deny" => conflict("HOSTILE_SAYS_NO", "the hostile policy denies politely").into(),
            _ => allow(),
        }
    }
}

arbiter_policy_sdk::export_policy!(Hostile);
