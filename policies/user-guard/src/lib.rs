//! user-guard: users' emails belong to the tenant's own domains.
//!
//! An email outside [`DOMAINS`] (or their subdomains) is invalid (422), on
//! create and on update. Edit [`DOMAINS`] for your tenant and rebuild.

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::ToString;

use arbiter_policy_sdk::{Decision, Operation, Policy, Request, allow, invalid};

/// The tenant's email domains; subdomains are allowed too.
const DOMAINS: &[&str] = &["acme.com", "acme.example"];

struct UserGuard;

fn in_domains(email: &str) -> bool {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    DOMAINS
        .iter()
        .any(|d| domain == *d || domain.strip_suffix(d).is_some_and(|sub| sub.ends_with('.')))
}

impl Policy for UserGuard {
    fn evaluate(req: Request) -> Decision {
        if req.kind() != "user" || !matches!(req.operation, Operation::Create | Operation::Update) {
            return allow();
        }
        let Some(user) = req.proposed.as_ref() else {
            return allow();
        };
        let email = match user.spec() {
            Ok(spec) => spec.str("email").to_string(),
            Err(e) => return invalid("UNREADABLE_SPEC", &e.to_string()).into(),
        };
        if in_domains(&email) {
            return allow();
        }
        let domains = DOMAINS.join(", ");
        invalid(
            "EMAIL_DOMAIN_NOT_ALLOWED",
            &format!("{email:?} is outside this tenant's domains; use an address at {domains}"),
        )
        .violation(
            "user.email",
            &format!("must be an address at {domains} or a subdomain"),
        )
        .into()
    }
}

arbiter_policy_sdk::export_policy!(UserGuard);
