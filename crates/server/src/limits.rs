//! Per-tenant request limits (ARCHITECTURE.md section 9): token-bucket
//! rate limits per tenant or per principal (`[[rate_limits]]`, with
//! `governor`), and the number of one tenant's requests served at once
//! (`[limits] max_inflight_per_tenant`). Both answer `RATE_LIMITED` with
//! the time to wait. Rate limits are per replica.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbiter_core::{Caller, Error};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

/// One `[[rate_limits]]` row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// A tenant id, or `*`: each tenant separately.
    pub tenant: String,
    /// A principal, or `*`: each principal of the tenant separately;
    /// absent: the tenant's principals share the limit.
    #[serde(default)]
    pub principal: Option<String>,
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests that may come at once after a quiet spell; default: one
    /// second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The `[limits]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimits {
    /// Requests of one tenant being served at once; 0: no limit.
    pub max_inflight_per_tenant: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_inflight_per_tenant: 256,
        }
    }
}

/// How long a client waits after the in-flight limit refused it.
const INFLIGHT_RETRY: Duration = Duration::from_millis(100);
/// How often idle buckets are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A rule with its buckets.
struct Bucket {
    rule: RateLimitRule,
    limiter: DefaultKeyedRateLimiter<(String, String)>,
}

/// The limits every API request passes, after authentication.
pub struct Limiter {
    buckets: Vec<Bucket>,
    max_inflight: u32,
    inflight: Arc<Mutex<HashMap<String, u32>>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rules", &self.buckets.len())
            .field("max_inflight", &self.max_inflight)
            .finish()
    }
}

/// A request's place among its tenant's requests in flight; dropping it
/// frees the place.
#[derive(Debug)]
pub struct Permit {
    tenant: String,
    inflight: Option<Arc<Mutex<HashMap<String, u32>>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(inflight) = &self.inflight else { return };
        let mut inflight = inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = inflight.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inflight.remove(&self.tenant);
            }
        }
    }
}

impl Limiter {
    /// Checks the rows and builds their buckets.
    pub fn new(rules: &[RateLimitRule], limits: RequestLimits) -> Result<Self, String> {
        let mut buckets = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let rate = NonZeroU32::new(rule.requests_per_second)
                .ok_or_else(|| format!("rate_limits[{i}].requests_per_second must be at least 1"))?;
            let burst = match rule.burst {
                None => rate,
                Some(b) => NonZeroU32::new(b)
                    .ok_or_else(|| format!("rate_limits[{i}].burst must be at least 1 (or left out)"))?,
            };
            if rules[..i]
                .iter()
                .any(|r| r.tenant == rule.tenant && r.principal == rule.principal)
            {
                return Err(format!(
                    "rate_limits[{i}]: tenant {:?} and principal {:?} have a second row",
                    rule.tenant, rule.principal
                ));
            }
            let quota = Quota::per_second(rate).allow_burst(burst);
            buckets.push(Bucket {
                rule: rule.clone(),
                limiter: RateLimiter::keyed(quota),
            });
        }
        Ok(Self {
            buckets,
            max_inflight: limits.max_inflight_per_tenant,
            inflight: Arc::default(),
        })
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self {
            buckets: Vec::new(),
            max_inflight: 0,
            inflight: Arc::default(),
        }
    }

    /// The most specific row for `tenant` and `principal`: a named tenant
    /// beats `*`, then a named principal beats `*` beats none.
    fn rule_for(&self, tenant: &str, principal: &str) -> Option<&Bucket> {
        self.buckets
            .iter()
            .filter(|b| b.rule.tenant == tenant || b.rule.tenant == "*")
            .filter(|b| match b.rule.principal.as_deref() {
                None | Some("*") => true,
                Some(p) => p == principal,
            })
            .max_by_key(|b| {
                let tenant_named = u8::from(b.rule.tenant != "*") * 4;
                let principal = match b.rule.principal.as_deref() {
                    None => 0,
                    Some("*") => 1,
                    Some(_) => 2,
                };
                tenant_named + principal
            })
    }

    /// Lets a request of `caller` to `tenant` in, or says how long to wait.
    /// Requests to a tenant the caller may not use are not counted (the
    /// engine refuses them), so callers cannot fill the tables with made-up
    /// tenants.
    pub fn admit(&self, caller: &Caller, tenant: &str) -> Result<Permit, Error> {
        let free = Permit {
            tenant: String::new(),
            inflight: None,
        };
        if caller.tenant != "*" && caller.tenant != tenant {
            return Ok(free);
        }
        if let Some(bucket) = self.rule_for(tenant, &caller.principal) {
            let who = if bucket.rule.principal.is_some() {
                caller.principal.clone()
            } else {
                String::new()
            };
            if let Err(not_until) = bucket.limiter.check_key(&(tenant.to_string(), who)) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let scope = match bucket.rule.principal {
                    Some(_) => format!("principal {} in tenant {tenant}", caller.principal),
                    None => format!("tenant {tenant}"),
                };
                metrics::counter!("arbiter_rate_limited_total", "limit" => "rate").increment(1);
                return Err(Error::RateLimited {
                    what: format!(
                        "{scope} sent more than {} requests per second",
                        bucket.rule.requests_per_second
                    ),
                    limit: format!("{}/s", bucket.rule.requests_per_second),
                    retry_after: wait.max(Duration::from_millis(1)),
                });
            }
        }
        if self.max_inflight == 0 {
            return Ok(free);
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let n = inflight.entry(tenant.to_string()).or_default();
        if *n >= self.max_inflight {
            metrics::counter!("arbiter_rate_limited_total", "limit" => "inflight").increment(1);
            return Err(Error::RateLimited {
                what: format!(
                    "tenant {tenant} already has {} requests being served",
                    self.max_inflight
                ),
                limit: format!("{} in flight", self.max_inflight),
                retry_after: INFLIGHT_RETRY,
            });
        }
        *n += 1;
        Ok(Permit {
            tenant: tenant.to_string(),
            inflight: Some(Arc::clone(&self.inflight)),
        })
    }

    /// Forgets idle buckets every minute, so that their number stays with
    /// the tenants and principals that are active.
    pub async fn sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            for bucket in &self.buckets {
                bucket.limiter.retain_recent();
                bucket.limiter.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter_core::Role;

    fn caller(principal: &str, tenant: &str) -> Caller {
        Caller {
            principal: principal.into(),
            tenant: tenant.into(),
            role: Role::Editor,
        }
    }

    fn rule(tenant: &str, principal: Option<&str>, rps: u32, burst: u32) -> RateLimitRule {
        RateLimitRule {
            tenant: tenant.into(),
            principal: principal.map(str::to_string),
            requests_per_second: rps,
            burst: Some(burst),
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let limiter = Limiter::new(
            &[
                rule("*", None, 1, 1),
                rule("acme", Some("*"), 1, 2),
                rule("acme", Some("bot"), 1, 3),
            ],
            RequestLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let count =
            |who: &Caller, tenant: &str| (0..10).take_while(|_| limiter.admit(who, tenant).is_ok()).count();
        assert_eq!(count(&caller("bot", "acme"), "acme"), 3);
        assert_eq!(count(&caller("alice", "acme"), "acme"), 2);
        assert_eq!(
            count(&caller("bob", "acme"), "acme"),
            2,
            "each principal has its own bucket"
        );
        assert_eq!(count(&caller("x", "other"), "other"), 1);
        let Err(Error::RateLimited {
            retry_after, limit, ..
        }) = limiter.admit(&caller("x", "other"), "other")
        else {
            panic!("limited");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        assert_eq!(limit, "1/s");
        // A tenant the caller may not use is not counted.
        assert_eq!(count(&caller("x", "other"), "acme"), 10);
    }

    #[test]
    fn inflight_places_are_freed_on_drop() {
        let limiter = Limiter::new(
            &[],
            RequestLimits {
                max_inflight_per_tenant: 2,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let who = caller("p", "*");
        let first = limiter.admit(&who, "acme");
        let second = limiter.admit(&who, "acme");
        assert!(first.is_ok() && second.is_ok());
        assert!(matches!(
            limiter.admit(&who, "acme"),
            Err(Error::RateLimited { .. })
        ));
        assert!(limiter.admit(&who, "other").is_ok(), "per tenant");
        drop(first);
        assert!(limiter.admit(&who, "acme").is_ok());
    }

    #[test]
    fn bad_rows_are_refused() {
        let e = Limiter::new(&[rule("*", None, 0, 1)], RequestLimits::default()).unwrap_err();
        assert!(e.contains("rate_limits[0].requests_per_second"), "{e}");
        let e = Limiter::new(
            &[rule("*", None, 1, 1), rule("*", None, 2, 1)],
            RequestLimits::default(),
        )
        .unwrap_err();
        assert!(e.contains("rate_limits[1]"), "{e}");
    }
}
