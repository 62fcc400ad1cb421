//! Between the engine's policy types and the generated WIT types.

use arbiter_core::FieldViolation;
use arbiter_core::policy::{Denial, DenialKind, Input, Object, Operation, Verdict};

use crate::bindings::arbiter::policy::types as wit;

fn operation(op: Operation) -> wit::Operation {
    match op {
        Operation::Create => wit::Operation::Create,
        Operation::Update => wit::Operation::Update,
        Operation::Delete => wit::Operation::Delete,
        Operation::Transition => wit::Operation::Transition,
    }
}

fn object(o: &Object) -> wit::Object {
    wit::Object {
        kind: o.kind.clone(),
        name: o.name.clone(),
        state: o.state.clone(),
        labels: o.labels.clone(),
        spec_json: o.spec_json.clone(),
        revision: o.revision,
    }
}

/// The WIT request of an input.
pub fn request(input: &Input) -> wit::Request {
    wit::Request {
        operation: operation(input.operation),
        tenant: input.tenant.clone(),
        principal: input.principal.clone(),
        current: input.current.as_ref().map(object),
        proposed: input.proposed.as_ref().map(object),
        now_unix_ms: input.now_unix_ms,
    }
}

/// The engine's verdict of a WIT decision.
pub fn verdict(decision: wit::Decision) -> Verdict {
    match decision {
        wit::Decision::Allow => Verdict::Allow,
        wit::Decision::Deny(d) => Verdict::Deny(Denial {
            kind: match d.kind {
                wit::DenialKind::Conflict => DenialKind::Conflict,
                wit::DenialKind::Invalid => DenialKind::Invalid,
                wit::DenialKind::Forbidden => DenialKind::Forbidden,
            },
            reason: d.reason,
            message: d.message,
            violations: d
                .violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect(),
        }),
    }
}
