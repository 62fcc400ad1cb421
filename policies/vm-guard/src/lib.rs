//! vm-guard: protects production VMs, keeps machine types to a list and
//! makes labels required, as its settings say (`arbiter:policy@0.2.0`).
//!
//! - A VM labelled `env=prod` is not stopped or deleted unless it carries a
//!   `change-ticket` label: a conflict (409), resolved by adding the label.
//! - A VM's `machine_type` must be one of `machine_types`: anything else is
//!   invalid (422), on create and on update.
//! - A VM must carry every label of `required_labels` on create and update
//!   (422).
//!
//! Settings (all optional; `{}` keeps the defaults):
//!
//! ```json
//! {"machine_types": ["e2-small", "e2-medium"], "required_labels": ["team"]}
//! ```

#![no_std]

extern crate alloc;

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use arbiter_policy_sdk::v2::{
    Decision, Operation, Policy, Request, SettingsError, allow, conflict, invalid, parse_settings,
};

/// The machine types allowed when the settings name none.
const DEFAULT_MACHINE_TYPES: &[&str] = &[
    "e2-micro",
    "e2-small",
    "e2-medium",
    "n2-standard-2",
    "n2-standard-4",
];

/// The binding's settings, borrowing their strings from the settings JSON
/// (settings are parsed at every evaluation: a fresh instance each time).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings<'a> {
    /// The machine types this tenant may use.
    #[serde(borrow, default = "default_machine_types")]
    machine_types: Vec<Cow<'a, str>>,
    /// Labels every VM must carry.
    #[serde(borrow, default)]
    required_labels: Vec<Cow<'a, str>>,
}

fn default_machine_types<'a>() -> Vec<Cow<'a, str>> {
    DEFAULT_MACHINE_TYPES.iter().map(|t| Cow::Borrowed(*t)).collect()
}

/// Parses and checks settings: what `validate-settings` refuses, no
/// evaluation ever sees. A binding without settings (`{}`) takes the
/// defaults without parsing.
fn settings(json: &str) -> Result<Settings<'_>, SettingsError> {
    let settings: Settings<'_> = if json == "{}" {
        Settings {
            machine_types: default_machine_types(),
            required_labels: Vec::new(),
        }
    } else {
        parse_settings(json)?
    };
    if settings.machine_types.is_empty() {
        return Err(SettingsError(
            "machine_types is empty, which would refuse every VM; list at least one machine type, or leave it out for the defaults".into(),
        ));
    }
    if let Some(bad) = settings
        .required_labels
        .iter()
        .find(|l| l.is_empty() || l.len() > 63)
    {
        return Err(SettingsError(format!(
            "required_labels holds {bad:?}; label keys are 1 to 63 characters"
        )));
    }
    Ok(settings)
}

struct VmGuard;

impl Policy for VmGuard {
    fn evaluate(req: Request) -> Decision {
        if req.kind() != "vm" {
            return allow();
        }
        let settings = match settings(&req.settings_json) {
            Ok(settings) => settings,
            Err(e) => return conflict("BAD_SETTINGS", &e.to_string()).into(),
        };
        match req.operation {
            Operation::Delete => protect_prod(&req, "delete"),
            Operation::Transition if req.is_moving_to("STOPPED") => protect_prod(&req, "stop"),
            Operation::Create | Operation::Update => check_vm(&req, &settings),
            Operation::Transition => allow(),
        }
    }

    fn validate_settings(settings_json: String) -> Result<(), String> {
        settings(&settings_json).map(drop).map_err(String::from)
    }
}

fn protect_prod(req: &Request, verb: &str) -> Decision {
    if req.label("env") != Some("prod") || req.label("change-ticket").is_some() {
        return allow();
    }
    let message = format!(
        "production VMs need a change ticket to {verb}: add the label change-ticket=<ticket id> to the VM, then retry"
    );
    conflict("PROD_CHANGE_NEEDS_TICKET", &message)
        .violation("vm.labels.change-ticket", "required on env=prod VMs")
        .into()
}

fn check_vm(req: &Request, settings: &Settings<'_>) -> Decision {
    let Some(vm) = req.proposed.as_ref() else {
        return allow();
    };
    if let Some(missing) = settings.required_labels.iter().find(|l| vm.label(l).is_none()) {
        return invalid(
            "REQUIRED_LABEL_MISSING",
            &format!("every VM in this tenant needs the label {missing}; add it and retry"),
        )
        .violation(&format!("vm.labels.{missing}"), "required by the tenant's policy")
        .into();
    }
    // Only the field this policy reads is read out of the spec, and
    // nothing after it.
    let machine_type = match vm.spec_str("machineType") {
        Ok(machine_type) => machine_type,
        Err(e) => return invalid("UNREADABLE_SPEC", &e.to_string()).into(),
    };
    let machine_type = machine_type.as_ref();
    if settings.machine_types.iter().any(|t| t == machine_type) {
        return allow();
    }
    let allowed = settings.machine_types.join(", ");
    invalid(
        "MACHINE_TYPE_NOT_ALLOWED",
        &format!("machine type {machine_type:?} is not allowed in this tenant; use one of {allowed}"),
    )
    .violation("vm.machine_type", &format!("must be one of {allowed}"))
    .into()
}

arbiter_policy_sdk::v2::export_policy!(VmGuard);
