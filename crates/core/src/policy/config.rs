//! Server-wide policy settings, and the counts of how evaluations ended.

use std::sync::OnceLock;
use std::time::Duration;

use arbiter_api::v1::Policy;

use super::verdict::Limits;
use crate::violation::FieldViolation;

/// Server-wide policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Time limit of a policy that sets none.
    pub default_timeout: Duration,
    /// Highest time limit a policy may set.
    pub max_timeout: Duration,
    /// Memory limit of a policy that sets none.
    pub default_memory_bytes: u64,
    /// Highest memory limit a policy may set.
    pub max_memory_bytes: u64,
    /// Largest module accepted.
    pub max_module_bytes: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_millis(50),
            max_timeout: Duration::from_secs(2),
            default_memory_bytes: 16 << 20,
            max_memory_bytes: 256 << 20,
            max_module_bytes: 64 << 20,
        }
    }
}

impl PolicyConfig {
    /// The limits a policy runs with: its own, or the defaults (never more
    /// than the server allows).
    pub fn limits(&self, policy: &Policy) -> Limits {
        let timeout = policy
            .timeout
            .and_then(|t| Duration::try_from(t).ok())
            .filter(|t| !t.is_zero())
            .unwrap_or(self.default_timeout)
            .min(self.max_timeout);
        let memory = match policy.memory_limit_bytes {
            0 => self.default_memory_bytes,
            n => n,
        };
        Limits {
            timeout,
            memory_bytes: memory.min(self.max_memory_bytes),
        }
    }

    /// Checks the limits a policy asks for against the server's.
    pub fn check(&self, policy: &Policy, out: &mut Vec<FieldViolation>) {
        if let Some(timeout) = policy.timeout {
            match Duration::try_from(timeout) {
                Ok(t) if t.is_zero() => {}
                Ok(t) if t <= self.max_timeout => {}
                _ => out.push(FieldViolation::new(
                    "policy.timeout",
                    format!(
                        "must be a positive duration of at most {}ms (the server's limit)",
                        self.max_timeout.as_millis()
                    ),
                )),
            }
        }
        if let Some(settings) = &policy.settings {
            let size = prost::Message::encoded_len(settings);
            if size > MAX_SETTINGS_BYTES {
                out.push(FieldViolation::new(
                    "policy.settings",
                    format!("is {size} bytes encoded; settings may be at most {MAX_SETTINGS_BYTES} bytes"),
                ));
            }
        }
        if policy.memory_limit_bytes > self.max_memory_bytes {
            out.push(FieldViolation::new(
                "policy.memory_limit_bytes",
                format!("must be at most {} (the server's limit)", self.max_memory_bytes),
            ));
        } else if policy.memory_limit_bytes != 0 && policy.memory_limit_bytes < MIN_MEMORY {
            out.push(FieldViolation::new(
                "policy.memory_limit_bytes",
                format!("must be at least {MIN_MEMORY} (one MiB), or 0 for the default"),
            ));
        }
    }
}

/// Largest `Policy.settings`, encoded.
pub const MAX_SETTINGS_BYTES: usize = 64 << 10;

/// Smallest memory limit a policy may set.
const MIN_MEMORY: u64 = 1 << 20;

/// The evaluations' Prometheus metrics. The counts per policy are the
/// engine's statistics (`GetPolicyStats`).
#[derive(Debug, Default)]
pub struct EvaluationMetrics {
    /// The metrics' handles, looked up once rather than per evaluation
    /// (at the first evaluation, when the recorder is in place).
    metrics: OnceLock<Metrics>,
}

/// `arbiter_policy_evaluations_total` by outcome, and
/// `arbiter_policy_evaluation_seconds`.
struct Metrics {
    evaluations: [metrics::Counter; Outcome::ALL.len()],
    seconds: metrics::Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// How one evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It allowed.
    Allow,
    /// It denied and the request was refused.
    Deny,
    /// It denied in AUDIT mode; the request went on.
    AuditDeny,
    /// It denied in WARN mode; the request went on with a warning.
    Warn,
    /// It faulted and the request failed (fail-closed).
    Fault,
    /// It faulted and the request went on (fail-open, AUDIT or WARN).
    FaultIgnored,
    /// It could not run for want of a slot; the request was refused with
    /// `RATE_LIMITED`, whatever the policy's failure policy.
    Busy,
}

impl Outcome {
    /// Every outcome, in the order of their discriminants.
    pub const ALL: [Outcome; 7] = [
        Outcome::Allow,
        Outcome::Deny,
        Outcome::AuditDeny,
        Outcome::Warn,
        Outcome::Fault,
        Outcome::FaultIgnored,
        Outcome::Busy,
    ];

    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::AuditDeny => "audit_deny",
            Outcome::Warn => "warn",
            Outcome::Fault => "fault",
            Outcome::FaultIgnored => "fault_ignored",
            Outcome::Busy => "busy",
        }
    }
}

impl EvaluationMetrics {
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        // No policy name in the labels: `/metrics` is open to anyone who can
        // reach it and must not list tenants or their policies (the counts
        // per policy are in `GetPolicyStats`).
        let metrics = self.metrics.get_or_init(|| Metrics {
            evaluations: Outcome::ALL.map(
                |outcome| metrics::counter!("arbiter_policy_evaluations_total", "result" => outcome.as_str()),
            ),
            seconds: metrics::histogram!("arbiter_policy_evaluation_seconds"),
        });
        if let Some(counter) = metrics.evaluations.get(outcome as usize) {
            counter.increment(1);
        }
        metrics.seconds.record(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics index their counters by discriminant.
    #[test]
    fn every_outcome_sits_at_its_discriminant() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?}");
        }
    }

    #[test]
    fn limits_default_and_cap() {
        let config = PolicyConfig::default();
        let mut p = Policy::default();
        assert_eq!(config.limits(&p).timeout, Duration::from_millis(50));
        assert_eq!(config.limits(&p).memory_bytes, 16 << 20);
        p.timeout = Some(prost_types::Duration { seconds: 1, nanos: 0 });
        p.memory_limit_bytes = 32 << 20;
        assert_eq!(config.limits(&p).timeout, Duration::from_secs(1));
        assert_eq!(config.limits(&p).memory_bytes, 32 << 20);
        let mut violations = Vec::new();
        p.timeout = Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        });
        p.memory_limit_bytes = 1 << 40;
        config.check(&p, &mut violations);
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["policy.timeout", "policy.memory_limit_bytes"]);
    }
}
