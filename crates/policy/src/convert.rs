//! Between the engine's policy types and the generated WIT types of both
//! world versions, whose records differ only in `request.settings-json`.

use arbiter_core::FieldViolation;
use arbiter_core::policy::{Denial, DenialKind, Input, Object, Operation, Verdict};

/// The conversions for one version's generated `types` module; `$extra`
/// names the request fields of that version beyond 0.1.0's, passed to
/// `request` as strings.
macro_rules! conversions {
    ($wit:path $(, $extra:ident)*) => {
        use $wit as wit;

        /// The WIT request of an input.
        pub fn request(input: &Input $(, $extra: &str)*) -> wit::Request {
            wit::Request {
                operation: operation(input.operation),
                tenant: input.tenant.clone(),
                principal: input.principal.clone(),
                current: input.current.as_ref().map(object),
                proposed: input.proposed.as_ref().map(object),
                now_unix_ms: input.now_unix_ms,
                $($extra: $extra.to_string(),)*
            }
        }

        fn operation(op: Operation) -> wit::Operation {
            match op {
                Operation::Create => wit::Operation::Create,
                Operation::Update => wit::Operation::Update,
                Operation::Delete => wit::Operation::Delete,
                Operation::Transition => wit::Operation::Transition,
            }
        }

        /// The WIT object of an engine object.
        pub fn object(o: &Object) -> wit::Object {
            wit::Object {
                kind: o.kind.clone(),
                name: o.name.clone(),
                state: o.state.clone(),
                labels: o.labels.clone(),
                spec_json: o.spec_json.clone(),
                revision: o.revision,
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
    };
}

/// `arbiter:policy@0.1.0`.
pub mod v1 {
    use super::*;
    conversions!(crate::bindings::v1::arbiter::policy::types);
}

/// `arbiter:policy@0.2.0`.
pub mod v2 {
    use super::*;
    conversions!(crate::bindings::v2::arbiter::policy::types, settings_json);
}
