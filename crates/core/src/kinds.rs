//! The three kinds of `arbiter.v1`, described as data.

use arbiter_api::v1::{Policy, Prompt, User, VirtualMachine, policy, prompt, user, virtual_machine};

use crate::auth::Access;
use crate::error::FieldViolation;
use crate::kind::{FieldSpec, Kind, Transition, resource};
use crate::validate::{check_email, check_model, check_reference, check_slug, check_text};

const STOPPED: i32 = virtual_machine::State::Stopped as i32;
const RUNNING: i32 = virtual_machine::State::Running as i32;

const fn field(name: &'static str, required: bool, check: crate::kind::Check) -> FieldSpec {
    FieldSpec {
        name,
        required,
        check,
        mutable_in: None,
        lock_hint: "",
        unique: None,
    }
}

/// Virtual machines: created STOPPED, started and stopped; resized, moved and
/// deleted only while STOPPED.
pub static VM: Kind = Kind {
    singular: "vm",
    collection: "vms",
    noun: "virtual machine",
    type_name: "arbiter.v1.VirtualMachine",
    states: &["STATE_UNSPECIFIED", "STOPPED", "RUNNING"],
    initial_state: STOPPED,
    fields: &[
        field("display_name", false, check_text::<256>),
        FieldSpec {
            mutable_in: Some(&[STOPPED]),
            lock_hint: "stop the VM before changing its region",
            ..field("region", true, check_slug)
        },
        FieldSpec {
            mutable_in: Some(&[STOPPED]),
            lock_hint: "stop the VM before changing its machine_type",
            ..field("machine_type", true, check_slug)
        },
        field("image", true, check_reference),
    ],
    transitions: &[
        Transition {
            verb: "start",
            from: &[STOPPED],
            to: RUNNING,
            hint: "only a STOPPED VM can be started",
        },
        Transition {
            verb: "stop",
            from: &[RUNNING],
            to: STOPPED,
            hint: "only a RUNNING VM can be stopped",
        },
    ],
    deletable_in: &[STOPPED],
    delete_hint: "stop the VM before deleting it",
    read: Access::Read,
    write: Access::Write,
};

const PENDING: i32 = user::State::Pending as i32;
const ACTIVE: i32 = user::State::Active as i32;
const SUSPENDED: i32 = user::State::Suspended as i32;

fn lowercase(email: &str) -> String {
    email.to_lowercase()
}

/// Users: created PENDING, activated and suspended; email unique per
/// tenant regardless of case; deleted only when not ACTIVE.
pub static USER: Kind = Kind {
    singular: "user",
    collection: "users",
    noun: "user",
    type_name: "arbiter.v1.User",
    states: &["STATE_UNSPECIFIED", "PENDING", "ACTIVE", "SUSPENDED"],
    initial_state: PENDING,
    fields: &[
        field("display_name", false, check_text::<256>),
        FieldSpec {
            unique: Some(lowercase),
            ..field("email", true, check_email)
        },
    ],
    transitions: &[
        Transition {
            verb: "activate",
            from: &[PENDING, SUSPENDED],
            to: ACTIVE,
            hint: "only a PENDING or SUSPENDED user can be activated",
        },
        Transition {
            verb: "suspend",
            from: &[ACTIVE],
            to: SUSPENDED,
            hint: "activate the user first; only an ACTIVE user can be suspended",
        },
    ],
    deletable_in: &[PENDING, SUSPENDED],
    delete_hint: "suspend the user before deleting it",
    read: Access::Read,
    write: Access::Write,
};

const DRAFT: i32 = prompt::State::Draft as i32;
const PUBLISHED: i32 = prompt::State::Published as i32;
const ARCHIVED: i32 = prompt::State::Archived as i32;

/// Prompts: created DRAFT, published, archived; template and model change
/// only in DRAFT.
pub static PROMPT: Kind = Kind {
    singular: "prompt",
    collection: "prompts",
    noun: "prompt",
    type_name: "arbiter.v1.Prompt",
    states: &["STATE_UNSPECIFIED", "DRAFT", "PUBLISHED", "ARCHIVED"],
    initial_state: DRAFT,
    fields: &[
        field("description", false, check_text::<1024>),
        FieldSpec {
            mutable_in: Some(&[DRAFT]),
            lock_hint: "the template of a published prompt is fixed; create a new prompt for a new version",
            ..field("template", true, check_text::<65536>)
        },
        FieldSpec {
            mutable_in: Some(&[DRAFT]),
            lock_hint: "the model of a published prompt is fixed; create a new prompt for a new version",
            ..field("model", true, check_model)
        },
    ],
    transitions: &[
        Transition {
            verb: "publish",
            from: &[DRAFT],
            to: PUBLISHED,
            hint: "an archived prompt cannot be published again; create a new prompt",
        },
        Transition {
            verb: "archive",
            from: &[PUBLISHED],
            to: ARCHIVED,
            hint: "publish the prompt before archiving it, or delete the draft",
        },
    ],
    deletable_in: &[DRAFT, ARCHIVED],
    delete_hint: "archive the prompt before deleting it",
    read: Access::Read,
    write: Access::Write,
};

/// Accepts any value of a field that is not a string; the kind's
/// `check_more` checks it.
fn checked_elsewhere(_: &str) -> Result<(), String> {
    Ok(())
}

const ACTIVE_POLICY: i32 = policy::State::Active as i32;

/// The kinds a policy can judge.
pub const JUDGED_KINDS: [&Kind; 3] = [&VM, &USER, &PROMPT];

/// Tenant policies: WebAssembly modules bound to kinds and operations.
/// Only admins read or write them.
pub static POLICY: Kind = Kind {
    singular: "policy",
    collection: "policies",
    noun: "policy",
    type_name: "arbiter.v1.Policy",
    states: &["STATE_UNSPECIFIED", "ACTIVE"],
    initial_state: ACTIVE_POLICY,
    fields: &[
        field("description", false, check_text::<1024>),
        field("kinds", false, checked_elsewhere),
        field("operations", false, checked_elsewhere),
        field("mode", false, checked_elsewhere),
        field("failure_policy", false, checked_elsewhere),
        field("timeout", false, checked_elsewhere),
        field("memory_limit_bytes", false, checked_elsewhere),
        field("module_sha256", false, checked_elsewhere),
        field("settings", false, checked_elsewhere),
    ],
    transitions: &[],
    deletable_in: &[ACTIVE_POLICY],
    delete_hint: "",
    read: Access::Admin,
    write: Access::Admin,
};

resource!(VirtualMachine, VM, [display_name, region, machine_type, image]);
resource!(User, USER, [display_name, email]);
resource!(Prompt, PROMPT, [description, template, model]);
resource!(Policy, POLICY, [description, module_sha256] {
    fn is_set(&self, name: &str) -> bool {
        match name {
            "kinds" => !self.kinds.is_empty(),
            "operations" => !self.operations.is_empty(),
            "mode" => self.mode != 0,
            "failure_policy" => self.failure_policy != 0,
            "timeout" => self.timeout.is_some(),
            "memory_limit_bytes" => self.memory_limit_bytes != 0,
            "settings" => self.settings.is_some(),
            _ => self.field(name).is_some_and(|v| !v.is_empty()),
        }
    }

    fn copy_field(&mut self, from: &Self, name: &str) {
        match name {
            "kinds" => self.kinds.clone_from(&from.kinds),
            "operations" => self.operations.clone_from(&from.operations),
            "mode" => self.mode = from.mode,
            "failure_policy" => self.failure_policy = from.failure_policy,
            "timeout" => self.timeout = from.timeout,
            "memory_limit_bytes" => self.memory_limit_bytes = from.memory_limit_bytes,
            "module_sha256" => {
                self.module_sha256.clone_from(&from.module_sha256);
                self.module_size_bytes = from.module_size_bytes;
            }
            "description" => self.description.clone_from(&from.description),
            "settings" => self.settings.clone_from(&from.settings),
            _ => {}
        }
    }

    fn differs(&self, other: &Self, name: &str) -> bool {
        let mut copy = other.clone();
        copy.copy_field(self, name);
        copy != *other
    }

    fn check_more(&self, prefix: &str, out: &mut Vec<FieldViolation>) {
        check_policy(self, prefix, out);
    }
});

/// The checks of a policy's non-string fields.
fn check_policy(p: &Policy, prefix: &str, out: &mut Vec<FieldViolation>) {
    let judged: Vec<&str> = JUDGED_KINDS.iter().map(|k| k.singular).collect();
    if p.kinds.is_empty() {
        out.push(FieldViolation::new(
            format!("{prefix}.kinds"),
            format!(
                "is required: list the kinds the policy judges ({})",
                judged.join(", ")
            ),
        ));
    }
    for (i, kind) in p.kinds.iter().enumerate() {
        if !judged.contains(&kind.as_str()) {
            out.push(FieldViolation::new(
                format!("{prefix}.kinds[{i}]"),
                format!(
                    "{kind:?} is not a kind policies judge; use one of {}",
                    judged.join(", ")
                ),
            ));
        } else if p.kinds[..i].contains(kind) {
            out.push(FieldViolation::new(
                format!("{prefix}.kinds[{i}]"),
                format!("{kind:?} is listed twice"),
            ));
        }
    }
    for (i, op) in p.operations.iter().enumerate() {
        if matches!(
            policy::Operation::try_from(*op),
            Err(_) | Ok(policy::Operation::Unspecified)
        ) {
            out.push(FieldViolation::new(
                format!("{prefix}.operations[{i}]"),
                "must be CREATE, UPDATE, DELETE or TRANSITION",
            ));
        }
    }
    if policy::Mode::try_from(p.mode).is_err() {
        out.push(FieldViolation::new(
            format!("{prefix}.mode"),
            "must be ENFORCE or AUDIT",
        ));
    }
    if policy::FailurePolicy::try_from(p.failure_policy).is_err() {
        out.push(FieldViolation::new(
            format!("{prefix}.failure_policy"),
            "must be FAIL_CLOSED or FAIL_OPEN",
        ));
    }
    let digest = &p.module_sha256;
    if digest.is_empty() {
        out.push(FieldViolation::new(
            format!("{prefix}.module"),
            "is required: the policy's WebAssembly component (cargo build --target wasm32-wasip2)",
        ));
    } else if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        out.push(FieldViolation::new(
            format!("{prefix}.module_sha256"),
            "must be the 64 lowercase hex digits of a module's SHA-256",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Resource;

    #[test]
    fn state_tables_match_the_generated_enums() {
        for (i, name) in VM.states.iter().enumerate() {
            let value = virtual_machine::State::from_str_name(name).map(|s| s as usize);
            assert_eq!(value, Some(i));
        }
        for (i, name) in USER.states.iter().enumerate() {
            assert_eq!(user::State::from_str_name(name).map(|s| s as usize), Some(i));
        }
        for (i, name) in PROMPT.states.iter().enumerate() {
            assert_eq!(prompt::State::from_str_name(name).map(|s| s as usize), Some(i));
        }
    }

    #[test]
    fn every_described_field_is_reachable() {
        let mut vm = VirtualMachine::default();
        for f in VM.fields {
            assert!(vm.field_mut(f.name).is_some(), "{}", f.name);
        }
        let user = User::default();
        for f in USER.fields {
            assert!(user.field(f.name).is_some(), "{}", f.name);
        }
        let prompt = Prompt::default();
        for f in PROMPT.fields {
            assert!(prompt.field(f.name).is_some(), "{}", f.name);
        }
    }
}
