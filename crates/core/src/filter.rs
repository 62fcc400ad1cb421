//! The list `filter` (a subset of AIP-160): `labels.KEY = "VALUE"` and
//! `state = NAME` terms joined by ` AND `.

use crate::error::Error;
use crate::kind::{Kind, Resource};

/// One equality term.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Label(String, String),
    State(i32),
}

/// A parsed filter; the empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
}

fn bad(reason: String) -> Error {
    Error::field(
        "filter",
        format!("{reason}; write terms like labels.env = \"prod\" or state = RUNNING, joined by AND"),
    )
}

fn unquote(value: &str) -> Result<String, Error> {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if inner.contains('"') || inner.contains(char::is_whitespace) {
        return Err(bad(format!("{value} is not a single value")));
    }
    Ok(inner.to_string())
}

/// Longest filter, in bytes.
pub const MAX_FILTER_BYTES: usize = 1024;
/// Most terms in one filter.
pub const MAX_FILTER_TERMS: usize = 16;

impl Filter {
    /// Parses a filter for `kind`.
    pub fn parse(kind: &Kind, text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        if text.len() > MAX_FILTER_BYTES {
            return Err(bad(format!(
                "the filter is {} bytes; at most {MAX_FILTER_BYTES} are allowed",
                text.len()
            )));
        }
        let count = text.split(" AND ").count();
        if count > MAX_FILTER_TERMS {
            return Err(bad(format!(
                "the filter has {count} terms; at most {MAX_FILTER_TERMS} are allowed"
            )));
        }
        let mut terms = Vec::new();
        for term in text.split(" AND ") {
            let (lhs, rhs) = term
                .split_once('=')
                .ok_or_else(|| bad(format!("term {:?} has no \"=\"", term.trim())))?;
            let (lhs, rhs) = (lhs.trim(), rhs.trim());
            if rhs.is_empty() {
                return Err(bad(format!("term {:?} has no value", term.trim())));
            }
            if lhs == "state" {
                let name = unquote(rhs)?;
                let value = kind.state_value(&name).filter(|v| *v != 0).ok_or_else(|| {
                    bad(format!(
                        "{name:?} is not a state of {}; use one of {}",
                        kind.type_name,
                        kind.states[1..].join(", ")
                    ))
                })?;
                terms.push(Term::State(value));
            } else if let Some(key) = lhs.strip_prefix("labels.").filter(|k| !k.is_empty()) {
                terms.push(Term::Label(key.to_string(), unquote(rhs)?));
            } else {
                return Err(bad(format!("cannot filter on {lhs:?}")));
            }
        }
        Ok(Self { terms })
    }

    /// Whether a resource matches every term.
    pub fn matches<R: Resource>(&self, resource: &R) -> bool {
        let meta = resource.meta();
        self.terms.iter().all(|term| match term {
            Term::Label(key, value) => meta.labels.get(key) == Some(value),
            Term::State(state) => meta.state == *state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::VM;
    use arbiter_api::v1::VirtualMachine;

    #[test]
    fn terms_combine_with_and() {
        let f = Filter::parse(&VM, r#"labels.env = "prod" AND state=RUNNING"#).unwrap_or_default();
        let mut vm = VirtualMachine {
            state: 2,
            labels: [("env".to_string(), "prod".to_string())].into(),
            ..Default::default()
        };
        assert!(f.matches(&vm));
        vm.state = 1;
        assert!(!f.matches(&vm));
    }

    #[test]
    fn bad_filters_say_how_to_write_one() {
        for bad in [
            "env=prod",
            "state = FLYING",
            "labels.env",
            "labels.env = \"a b\"",
            "uid = x",
        ] {
            assert!(
                matches!(Filter::parse(&VM, bad), Err(Error::InvalidField { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_are_bounded_in_size_and_terms() {
        let message = |text: &str| {
            Filter::parse(&VM, text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let long = format!("labels.env = \"{}\"", "x".repeat(MAX_FILTER_BYTES));
        assert!(message(&long).contains("at most 1024"), "{}", message(&long));
        assert!(message(&long).len() < 1024, "the error does not echo the filter");
        let many = vec!["state = RUNNING"; MAX_FILTER_TERMS + 1].join(" AND ");
        assert!(message(&many).contains("17 terms"), "{}", message(&many));
        let most = vec!["state = RUNNING"; MAX_FILTER_TERMS].join(" AND ");
        assert!(Filter::parse(&VM, &most).is_ok());
    }
}
