//! How a kind of resource is described: a [`Kind`] table of data (fields,
//! lifecycle, unique fields) plus the [`Resource`] trait that gives the
//! generic engine access to a message's common and kind-specific fields.

use std::collections::BTreeMap;

use prost_types::Timestamp;

use crate::access::Access;
use crate::violation::FieldViolation;

/// Checks a field's value; the error says what is expected.
pub type Check = fn(&str) -> Result<(), String>;

/// A kind-specific string field.
#[derive(Debug)]
pub struct FieldSpec {
    /// The proto field name, e.g. `machine_type`.
    pub name: &'static str,
    /// Must be non-empty.
    pub required: bool,
    /// Checks a non-empty value.
    pub check: Check,
    /// States in which the field may change; `None` means any.
    pub mutable_in: Option<&'static [i32]>,
    /// How to get to a state where it may change.
    pub lock_hint: &'static str,
    /// Unique within the tenant after this normalization, if at all.
    pub unique: Option<fn(&str) -> String>,
}

/// A custom method that moves a resource between states.
#[derive(Debug)]
pub struct Transition {
    /// The custom verb, e.g. `start`.
    pub verb: &'static str,
    /// States it may start from.
    pub from: &'static [i32],
    /// The state it ends in.
    pub to: i32,
    /// What to do when the current state is not in `from`.
    pub hint: &'static str,
}

/// A kind of resource, described as data.
#[derive(Debug)]
pub struct Kind {
    /// Singular id, e.g. `vm` (as in `vm_id`).
    pub singular: &'static str,
    /// Collection id in names, e.g. `vms`.
    pub collection: &'static str,
    /// Human name, e.g. `virtual machine`.
    pub noun: &'static str,
    /// Full proto message name.
    pub type_name: &'static str,
    /// State names indexed by enum value.
    pub states: &'static [&'static str],
    /// The state of a new resource.
    pub initial_state: i32,
    /// Kind-specific fields.
    pub fields: &'static [FieldSpec],
    /// The custom methods.
    pub transitions: &'static [Transition],
    /// States in which the resource may be deleted.
    pub deletable_in: &'static [i32],
    /// What to do to make it deletable.
    pub delete_hint: &'static str,
    /// What reading it needs.
    pub read: Access,
    /// What writing it needs.
    pub write: Access,
}

impl Kind {
    /// The name of a state value.
    pub fn state_name(&self, state: i32) -> &'static str {
        usize::try_from(state)
            .ok()
            .and_then(|i| self.states.get(i))
            .copied()
            .unwrap_or("STATE_UNSPECIFIED")
    }

    /// The value of a state name.
    pub fn state_value(&self, name: &str) -> Option<i32> {
        let index = self.states.iter().position(|s| *s == name)?;
        i32::try_from(index).ok()
    }

    /// The names of several states.
    pub fn state_names(&self, states: &[i32]) -> Vec<&'static str> {
        states.iter().map(|s| self.state_name(*s)).collect()
    }

    /// The custom method with this verb.
    pub fn transition(&self, verb: &str) -> Option<&'static Transition> {
        self.transitions.iter().find(|t| t.verb == verb)
    }

    /// The kind-specific field with this name.
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Shared view of the fields every resource carries.
#[derive(Debug)]
pub struct Meta<'a> {
    /// Full resource name.
    pub name: &'a str,
    /// Unique id of this incarnation.
    pub uid: &'a str,
    /// User labels.
    pub labels: &'a BTreeMap<String, String>,
    /// State enum value.
    pub state: i32,
    /// Entity tag.
    pub etag: &'a str,
    /// Creation time.
    pub create_time: Option<&'a Timestamp>,
    /// Last change time.
    pub update_time: Option<&'a Timestamp>,
    /// Creator.
    pub created_by: &'a str,
    /// Last writer.
    pub updated_by: &'a str,
    /// Store revision of the last change.
    pub revision: u64,
}

/// Mutable view of the fields every resource carries.
#[derive(Debug)]
pub struct MetaMut<'a> {
    /// Full resource name.
    pub name: &'a mut String,
    /// Unique id of this incarnation.
    pub uid: &'a mut String,
    /// User labels.
    pub labels: &'a mut BTreeMap<String, String>,
    /// State enum value.
    pub state: &'a mut i32,
    /// Entity tag.
    pub etag: &'a mut String,
    /// Creation time.
    pub create_time: &'a mut Option<Timestamp>,
    /// Last change time.
    pub update_time: &'a mut Option<Timestamp>,
    /// Creator.
    pub created_by: &'a mut String,
    /// Last writer.
    pub updated_by: &'a mut String,
    /// Store revision of the last change.
    pub revision: &'a mut u64,
}

/// A resource message the generic engine can handle.
pub trait Resource: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static {
    /// The kind's description.
    const KIND: &'static Kind;
    /// The common fields.
    fn meta(&self) -> Meta<'_>;
    /// The common fields, mutable.
    fn meta_mut(&mut self) -> MetaMut<'_>;
    /// A kind-specific string field by name.
    fn field(&self, name: &str) -> Option<&String>;
    /// A kind-specific string field by name, mutable.
    fn field_mut(&mut self, name: &str) -> Option<&mut String>;

    /// Whether a kind-specific field holds a value (an empty update mask
    /// takes the fields that do).
    fn is_set(&self, name: &str) -> bool {
        self.field(name).is_some_and(|v| !v.is_empty())
    }

    /// Copies a kind-specific field from `from`.
    fn copy_field(&mut self, from: &Self, name: &str) {
        if let (Some(src), Some(dst)) = (from.field(name), self.field_mut(name)) {
            dst.clone_from(src);
        }
    }

    /// Whether a kind-specific field differs between `self` and `other`.
    fn differs(&self, other: &Self, name: &str) -> bool {
        self.field(name) != other.field(name)
    }

    /// Checks that the per-field checks of [`Kind::fields`] cannot express
    /// (fields that are not strings); `prefix` is the resource's request field.
    fn check_more(&self, _prefix: &str, _out: &mut Vec<FieldViolation>) {}
}

/// Implements [`Resource`] for a generated message with the common fields
/// and the listed kind-specific string fields; trait methods for other
/// fields may follow in braces.
macro_rules! resource {
    ($ty:ty, $kind:expr, [$($field:ident),* $(,)?] $({ $($more:tt)* })?) => {
        impl $crate::kind::Resource for $ty {
            const KIND: &'static $crate::kind::Kind = &$kind;

            fn meta(&self) -> $crate::kind::Meta<'_> {
                $crate::kind::Meta {
                    name: &self.name,
                    uid: &self.uid,
                    labels: &self.labels,
                    state: self.state,
                    etag: &self.etag,
                    create_time: self.create_time.as_ref(),
                    update_time: self.update_time.as_ref(),
                    created_by: &self.created_by,
                    updated_by: &self.updated_by,
                    revision: self.revision,
                }
            }

            fn meta_mut(&mut self) -> $crate::kind::MetaMut<'_> {
                $crate::kind::MetaMut {
                    name: &mut self.name,
                    uid: &mut self.uid,
                    labels: &mut self.labels,
                    state: &mut self.state,
                    etag: &mut self.etag,
                    create_time: &mut self.create_time,
                    update_time: &mut self.update_time,
                    created_by: &mut self.created_by,
                    updated_by: &mut self.updated_by,
                    revision: &mut self.revision,
                }
            }

            fn field(&self, name: &str) -> Option<&String> {
                match name {
                    $(stringify!($field) => Some(&self.$field),)*
                    _ => None,
                }
            }

            fn field_mut(&mut self, name: &str) -> Option<&mut String> {
                match name {
                    $(stringify!($field) => Some(&mut self.$field),)*
                    _ => None,
                }
            }

            $($($more)*)?
        }
    };
}

pub(crate) use resource;

/// Kinds are singletons; two are equal when they describe the same message.
impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.type_name == other.type_name
    }
}

impl Eq for Kind {}
