//! Policies of `arbiter:policy@0.2.0`: settings, lookups and settings
//! validation, with the same helpers as 0.1.0.
//!
//! ```ignore
//! use arbiter_policy_sdk::v2::{Decision, Policy, Request, allow, conflict, parse_settings};
//!
//! #[derive(serde::Deserialize)]
//! struct Settings { max_running: u32 }
//!
//! struct Guard;
//!
//! impl Policy for Guard {
//!     fn evaluate(req: Request) -> Decision {
//!         let Ok(settings) = req.settings::<Settings>() else {
//!             return conflict("BAD_SETTINGS", "the policy's settings do not parse").into();
//!         };
//!         // ...
//!         allow()
//!     }
//!
//!     fn validate_settings(settings_json: String) -> Result<(), String> {
//!         parse_settings::<Settings>(&settings_json).map(drop)
//!     }
//! }
//!
//! arbiter_policy_sdk::v2::export_policy!(Guard);
//! ```

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;

/// The generated bindings of the `arbiter:policy/policy@0.2.0` world.
///
/// The SDK names its world `policy-v2` (it includes `policy` of 0.2.0 and
/// nothing else), so that the bindings of both versions live in one crate.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        inline: "
            package arbiter:sdk;
            world policy-v2 { include arbiter:policy/policy@0.2.0; }
        ",
        path: "../../policies/wit/0.2.0",
        world: "policy-v2",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "arbiter_policy_sdk::v2::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::Guest as Policy;
pub use bindings::arbiter::policy::types::{
    Decision, Denial, DenialKind, Object, Operation, Request, Violation,
};
pub use bindings::export_policy;

helpers!();

/// Writes a line to the server's log, tagged with the policy's name. The
/// server keeps at most a few lines per evaluation and per second.
pub fn log(message: &str) {
    bindings::log(message);
}

/// Reads an object of the request's tenant by its full name, e.g.
/// `tenants/acme/users/bob`: `None` when it does not exist, belongs to
/// another tenant, or is a policy. At most 16 lookups per evaluation; one
/// more stops the evaluation with a fault.
///
/// What a lookup reads is a precondition of the write: if the object
/// changes before the write commits, the request is judged again on the
/// new state (or fails with `ABORTED` when the client sent an etag).
pub fn lookup(name: &str) -> Option<Object> {
    bindings::lookup(name)
}

/// Settings that did not parse as the policy expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl core::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "invalid settings: {}", self.0)
    }
}

impl core::error::Error for SettingsError {}

impl From<SettingsError> for String {
    fn from(e: SettingsError) -> Self {
        e.to_string()
    }
}

/// Parses settings JSON into the policy's own type: what
/// `validate-settings` and [`Request::settings`] share, so that settings
/// accepted at upload parse the same way at every evaluation.
///
/// `T` may borrow from the JSON (`&'a str`, `Cow<'a, str>` with
/// `#[serde(borrow)]`), which spares copying strings that hold no escapes.
pub fn parse_settings<'a, T: Deserialize<'a>>(settings_json: &'a str) -> Result<T, SettingsError> {
    serde_json::from_str(settings_json).map_err(|e| SettingsError(e.to_string()))
}

impl Request {
    /// The binding's settings as the policy's own type.
    pub fn settings<'a, T: Deserialize<'a>>(&'a self) -> Result<T, SettingsError> {
        parse_settings(&self.settings_json)
    }

    /// The full name of a resource of the request's tenant, e.g.
    /// `name_in_tenant("users", "bob")` → `tenants/acme/users/bob`.
    pub fn name_in_tenant(&self, collection: &str, id: &str) -> String {
        let mut name = String::with_capacity(16 + self.tenant.len() + collection.len() + id.len());
        for part in ["tenants/", &self.tenant, "/", collection, "/", id] {
            name.push_str(part);
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        allowed: Vec<String>,
    }

    fn request(settings: &str) -> Request {
        Request {
            operation: Operation::Create,
            tenant: "acme".into(),
            principal: "alice".into(),
            current: None,
            proposed: None,
            now_unix_ms: 0,
            settings_json: settings.into(),
        }
    }

    #[test]
    fn settings_parse_as_the_policys_type() {
        let req = request(r#"{"allowed":["e2-small"]}"#);
        assert_eq!(
            req.settings::<Settings>(),
            Ok(Settings {
                allowed: ["e2-small".to_string()].into()
            })
        );
        let bad = request(r#"{"allowd":[]}"#).settings::<Settings>();
        assert!(bad.is_err_and(|e| e.0.contains("allowd")));
    }

    #[test]
    fn names_in_the_tenant() {
        assert_eq!(
            request("{}").name_in_tenant("users", "bob"),
            "tenants/acme/users/bob"
        );
    }

    #[test]
    fn helpers_work_on_both_versions() {
        let decision: Decision = conflict("NOPE", "no").violation("vm.labels", "missing").into();
        assert!(matches!(decision, Decision::Deny(d) if d.violations.len() == 1));
    }
}
