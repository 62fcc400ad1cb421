//! Read-modify-write with retries: the client side of optimistic
//! concurrency, like client-go's `RetryOnConflict`.

use std::time::Duration;

use rand::Rng;

use crate::{Client, Error, Resource};

/// How [`Client::update_with`] waits between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Most attempts, the first included.
    pub attempts: u32,
    /// The wait after the first conflict; it doubles with each one.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            attempts: 10,
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` after a conflict: a random
    /// duration up to the exponential bound ("full jitter"), so that
    /// writers who collided do not collide again in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let bound = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let micros = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=micros))
    }
}

impl Client {
    /// Reads `name`, lets `change` modify it, and writes the `mask` fields
    /// back with the etag it read. When someone else wrote in between
    /// (`ETAG_MISMATCH`), reads the new version and applies `change` again,
    /// after a jittered exponential backoff; when the server asks to wait
    /// (`RATE_LIMITED`, `STORE_UNAVAILABLE`, `REQUEST_IN_PROGRESS`), waits
    /// as long as its `RetryInfo` says. Other errors, and the last
    /// conflict after [`Backoff::attempts`], are returned.
    pub async fn update_with<R: Resource>(
        &self,
        name: &str,
        mask: &[&str],
        mut change: impl FnMut(&mut R),
    ) -> Result<R, Error> {
        let mut attempt = 0;
        loop {
            let outcome = match R::get(self, name).await {
                Ok(mut current) => {
                    change(&mut current);
                    current.update(self, mask).await
                }
                Err(e) => Err(e),
            };
            attempt += 1;
            let wait = match &outcome {
                Err(Error::EtagMismatch { .. }) => self.backoff.delay(attempt - 1),
                Err(e) => match e.retry_after() {
                    Some(wait) => wait,
                    None => return outcome,
                },
                Ok(_) => return outcome,
            };
            if attempt >= self.backoff.attempts {
                return outcome;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_maximum() {
        let backoff = Backoff {
            attempts: 10,
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        for _ in 0..100 {
            assert!(backoff.delay(0) <= Duration::from_millis(10));
            assert!(backoff.delay(2) <= Duration::from_millis(40));
            assert!(backoff.delay(30) <= Duration::from_millis(100));
        }
        let spread: std::collections::HashSet<Duration> = (0..100).map(|_| backoff.delay(5)).collect();
        assert!(spread.len() > 10, "jittered, not fixed: {spread:?}");
    }
}
