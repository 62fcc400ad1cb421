//! Rate-limited logging of what policies write: their `log` import, stdout
//! and stderr. A policy cannot flood the server's log: each evaluation keeps
//! a few lines, and each policy has a token bucket of lines per second;
//! what is dropped is counted and reported with the next line that passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Longest line kept.
pub const MAX_LINE: usize = 512;
/// Most lines one evaluation may log.
pub const PER_EVALUATION: usize = 8;
/// Lines per second each policy may log, and its burst.
const RATE: f64 = 10.0;
const BURST: f64 = 50.0;
/// Most policies tracked at once.
const MAX_POLICIES: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

/// One token bucket per policy.
#[derive(Debug, Default)]
pub struct LogLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LogLimiter {
    /// Logs `lines` of `policy` as far as its budget allows.
    pub fn emit(&self, policy: &str, source: &str, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_POLICIES && !buckets.contains_key(policy) {
            buckets.clear();
        }
        let now = Instant::now();
        let bucket = buckets.entry(policy.to_string()).or_insert(Bucket {
            tokens: BURST,
            refilled: now,
            dropped: 0,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * RATE).min(BURST);
        bucket.refilled = now;
        for line in lines {
            if bucket.tokens < 1.0 {
                bucket.dropped += 1;
                continue;
            }
            bucket.tokens -= 1.0;
            let dropped = std::mem::take(&mut bucket.dropped);
            let line = arbiter_core::policy::truncate(line, MAX_LINE);
            tracing::info!(policy, source, dropped_before = dropped, "policy log: {line}");
        }
    }
}

/// Splits captured output into lines for [`LogLimiter::emit`], keeping at
/// most [`PER_EVALUATION`].
pub fn lines_of(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(PER_EVALUATION)
        .map(str::to_string)
        .collect()
}
