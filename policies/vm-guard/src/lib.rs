//! vm-guard: protects production VMs and keeps machine types to a list.
//!
//! - A VM labelled `env=prod` is not stopped or deleted unless it carries a
//!   `change-ticket` label: a conflict (409), resolved by adding the label.
//! - A VM's `machine_type` must be one of [`MACHINE_TYPES`]: anything else is
//!   invalid (422), on create and on update.

#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::ToString;

use arbiter_policy_sdk::{Decision, Operation, Policy, Request, allow, conflict, invalid};

/// The machine types this tenant may use.
const MACHINE_TYPES: &[&str] = &[
    "e2-micro",
    "e2-small",
    "e2-medium",
    "n2-standard-2",
    "n2-standard-4",
];

struct VmGuard;

impl Policy for VmGuard {
    fn evaluate(req: Request) -> Decision {
        if req.kind() != "vm" {
            return allow();
        }
        match req.operation {
            Operation::Delete => protect_prod(&req, "delete"),
            Operation::Transition if req.is_moving_to("STOPPED") => protect_prod(&req, "stop"),
            Operation::Create | Operation::Update => check_machine_type(&req),
            Operation::Transition => allow(),
        }
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

fn check_machine_type(req: &Request) -> Decision {
    let Some(vm) = req.proposed.as_ref() else {
        return allow();
    };
    let spec = match vm.spec() {
        Ok(spec) => spec,
        Err(e) => return invalid("UNREADABLE_SPEC", &e.to_string()).into(),
    };
    let machine_type = spec.str("machineType");
    if MACHINE_TYPES.contains(&machine_type) {
        return allow();
    }
    let allowed = MACHINE_TYPES.join(", ");
    invalid(
        "MACHINE_TYPE_NOT_ALLOWED",
        &format!("machine type {machine_type:?} is not allowed in this tenant; use one of {allowed}"),
    )
    .violation("vm.machine_type", &format!("must be one of {allowed}"))
    .into()
}

arbiter_policy_sdk::export_policy!(VmGuard);
