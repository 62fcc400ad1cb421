//! The three kinds of `arbiter.v1`, described as data.

use arbiter_api::v1::{Prompt, User, VirtualMachine, prompt, user, virtual_machine};

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
};

resource!(VirtualMachine, VM, [display_name, region, machine_type, image]);
resource!(User, USER, [display_name, email]);
resource!(Prompt, PROMPT, [description, template, model]);

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
