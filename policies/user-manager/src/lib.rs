//! user-manager: a user is activated only while their manager is active
//! (`arbiter:policy@0.2.0`, with `lookup`).
//!
//! Activating a user needs a `manager` label naming another user of the
//! tenant (its id, e.g. `manager=bob`) who is ACTIVE; otherwise the request
//! conflicts (409) and the message says what to fix. The manager is read
//! with `lookup`, so the check holds even while the manager is being
//! suspended at the same moment: what the policy read is a precondition of
//! the activation, and a change to it makes the server judge again.

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use arbiter_policy_sdk::v2::{Decision, Policy, Request, allow, conflict, lookup};

struct UserManager;

impl Policy for UserManager {
    fn evaluate(req: Request) -> Decision {
        if req.kind() != "user" || !req.is_moving_to("ACTIVE") {
            return allow();
        }
        let manager = match req.label("manager") {
            None | Some("") => {
                return conflict(
                    "MANAGER_REQUIRED",
                    "a user is activated only with a manager: set the label manager=<user id of an active user>, then activate",
                )
                .violation("user.labels.manager", "required to activate")
                .into();
            }
            Some(manager) => manager,
        };
        let name = req.name_in_tenant("users", manager);
        if req.object().is_some_and(|o| o.name == name) {
            return conflict(
                "SELF_MANAGED",
                "a user cannot be their own manager; name another user in the label manager",
            )
            .violation("user.labels.manager", "names the user itself")
            .into();
        }
        match lookup(&name) {
            Some(user) if user.state == "ACTIVE" => allow(),
            Some(user) => conflict(
                "MANAGER_NOT_ACTIVE",
                &format!(
                    "manager {manager} is {}; activate {name} first, or name an active manager",
                    user.state
                ),
            )
            .violation("user.labels.manager", "must name an ACTIVE user")
            .into(),
            None => conflict(
                "MANAGER_NOT_FOUND",
                &format!(
                    "manager {manager} is not a user of this tenant; create {name} or fix the label manager"
                ),
            )
            .violation("user.labels.manager", "must name an existing user")
            .into(),
        }
    }

    fn validate_settings(settings_json: String) -> Result<(), String> {
        match settings_json.trim() {
            "{}" => Ok(()),
            _ => Err("user-manager takes no settings; send none (or {})".into()),
        }
    }
}

arbiter_policy_sdk::v2::export_policy!(UserManager);
