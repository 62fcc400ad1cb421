//! Which fields of a resource changed between two versions, and the merge
//! of one's own edit onto someone else's newer version: what
//! `arbiter edit` and other conflict-resolving clients decide by. Field
//! names are the server's (`display_name`, `state`, `labels.env`), so they
//! compare with `ETAG_MISMATCH`'s `changed_fields`.

use std::collections::BTreeSet;

use prost::Message;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

use crate::{Error, Resource};

/// Fields the server sets, never the client: they are not compared.
const OUTPUT_ONLY: [&str; 8] = [
    "name",
    "uid",
    "etag",
    "create_time",
    "update_time",
    "created_by",
    "updated_by",
    "revision",
];

fn descriptor<R: Resource>() -> Result<MessageDescriptor, Error> {
    let pool =
        arbiter_api::json::pool().map_err(|e| Error::Transport(format!("the API descriptors: {e}")))?;
    pool.get_message_by_name(R::TYPE_NAME)
        .ok_or_else(|| Error::Transport(format!("{} is not in the API descriptors", R::TYPE_NAME)))
}

fn dynamic<R: Resource>(descriptor: &MessageDescriptor, r: &R) -> Result<DynamicMessage, Error> {
    DynamicMessage::decode(descriptor.clone(), r.encode_to_vec().as_slice())
        .map_err(|e| Error::Transport(format!("re-reading a {}: {e}", R::TYPE_NAME)))
}

/// The fields that differ between `before` and `after`, in field order:
/// each scalar field by name, `state`, and each label as `labels.KEY`.
pub fn changed_fields<R: Resource>(before: &R, after: &R) -> Result<Vec<String>, Error> {
    let descriptor = descriptor::<R>()?;
    Ok(changed_messages(
        &dynamic(&descriptor, before)?,
        &dynamic(&descriptor, after)?,
    ))
}

/// [`changed_fields`] of two messages of one resource type.
pub fn changed_messages(before: &DynamicMessage, after: &DynamicMessage) -> Vec<String> {
    let mut changed = Vec::new();
    for field in before.descriptor().fields() {
        if OUTPUT_ONLY.contains(&field.name()) {
            continue;
        }
        let (x, y) = (before.get_field(&field), after.get_field(&field));
        match (x.as_map(), y.as_map()) {
            (Some(x), Some(y)) => {
                let keys: BTreeSet<&MapKey> = x.keys().chain(y.keys()).collect();
                for key in keys {
                    if x.get(key) != y.get(key) {
                        let key = key.as_str().map_or_else(|| format!("{key:?}"), str::to_string);
                        changed.push(format!("{}.{key}", field.name()));
                    }
                }
            }
            _ if x != y => changed.push(field.name().to_string()),
            _ => {}
        }
    }
    changed
}

/// The outcome of [`merge`].
#[derive(Debug, Clone, PartialEq)]
pub enum Merge<R> {
    /// `theirs` with my changes applied; `mask` are my changed fields, the
    /// update mask to write them with.
    Merged {
        /// The merged version (with `theirs`'s etag).
        resource: R,
        /// The fields I changed.
        mask: Vec<String>,
    },
    /// We both changed these fields: a person has to choose.
    Overlap(Vec<String>),
}

/// Applies the changes I made from `base` to `mine` onto `theirs`, a newer
/// version someone else wrote. `their_changes` are the fields they changed
/// since `base` as the server reported them (`changed_fields`); without
/// them (the server no longer retains `base`) they are found by comparing
/// `base` with `theirs`.
pub fn merge<R: Resource>(
    base: &R,
    mine: &R,
    theirs: &R,
    their_changes: Option<&[String]>,
) -> Result<Merge<R>, Error> {
    let my_changes = changed_fields(base, mine)?;
    let their_changes = match their_changes {
        Some(fields) => fields.to_vec(),
        None => changed_fields(base, theirs)?,
    };
    let overlap: Vec<String> = my_changes
        .iter()
        .filter(|f| their_changes.contains(f))
        .cloned()
        .collect();
    if !overlap.is_empty() {
        return Ok(Merge::Overlap(overlap));
    }
    Ok(Merge::Merged {
        resource: apply(&my_changes, mine, theirs)?,
        mask: my_changes,
    })
}

/// `onto` with the `fields` of `from`.
pub fn apply<R: Resource>(fields: &[String], from: &R, onto: &R) -> Result<R, Error> {
    let descriptor = descriptor::<R>()?;
    let mut target = dynamic(&descriptor, onto)?;
    apply_messages(fields, &dynamic(&descriptor, from)?, &mut target);
    R::decode(target.encode_to_vec().as_slice())
        .map_err(|e| Error::Transport(format!("merging a {}: {e}", R::TYPE_NAME)))
}

/// [`apply`] on two messages of one resource type: sets the `fields` of
/// `target` (names as [`changed_messages`] gives them) to those of `source`.
pub fn apply_messages(fields: &[String], source: &DynamicMessage, target: &mut DynamicMessage) {
    let descriptor = target.descriptor();
    for path in fields {
        let (name, key) = match path.split_once('.') {
            Some((name, key)) => (name, Some(key)),
            None => (path.as_str(), None),
        };
        let Some(field) = descriptor.get_field_by_name(name) else {
            continue;
        };
        match key {
            Some(key) => {
                let key = MapKey::String(key.to_string());
                let value = source
                    .get_field(&field)
                    .as_map()
                    .and_then(|m| m.get(&key).cloned());
                if let Value::Map(map) = target.get_field_mut(&field) {
                    match value {
                        Some(value) => map.insert(key, value),
                        None => map.remove(&key),
                    };
                }
            }
            None => target.set_field(&field, source.get_field(&field).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter_api::v1::VirtualMachine;

    fn vm(labels: &[(&str, &str)], display_name: &str, state: i32) -> VirtualMachine {
        VirtualMachine {
            name: "tenants/acme/vms/web".into(),
            etag: "\"1\"".into(),
            display_name: display_name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state,
            ..Default::default()
        }
    }

    #[test]
    fn changed_fields_name_labels_scalars_and_state_exactly() -> Result<(), Error> {
        let base = vm(&[("env", "dev"), ("team", "a")], "Web", 1);
        let mut after = vm(&[("env", "prod"), ("owner", "ops")], "Web 2", 2);
        after.etag = "\"9\"".into();
        assert_eq!(
            changed_fields(&base, &after)?,
            [
                "labels.env",
                "labels.owner",
                "labels.team",
                "state",
                "display_name"
            ]
        );
        assert!(changed_fields(&base, &base)?.is_empty());
        Ok(())
    }

    #[test]
    fn disjoint_edits_merge_and_overlapping_ones_do_not() -> Result<(), Error> {
        let base = vm(&[("env", "dev")], "Web", 1);
        let mine = vm(&[("env", "dev"), ("owner", "me")], "Web", 1);
        let mut theirs = vm(&[("env", "prod")], "Theirs", 1);
        theirs.etag = "\"5\"".into();
        let Merge::Merged { resource, mask } = merge(&base, &mine, &theirs, None)? else {
            panic!("disjoint edits merge");
        };
        assert_eq!(mask, ["labels.owner"]);
        assert_eq!(resource.labels["env"], "prod");
        assert_eq!(resource.labels["owner"], "me");
        assert_eq!(resource.display_name, "Theirs");
        assert_eq!(resource.etag, "\"5\"");
        let mine = vm(&[("env", "staging")], "Web", 1);
        assert_eq!(
            merge(&base, &mine, &theirs, None)?,
            Merge::Overlap(vec!["labels.env".into()])
        );
        // The server's own list decides when it has one.
        let told = ["display_name".to_string()];
        assert!(matches!(
            merge(&base, &mine, &theirs, Some(&told))?,
            Merge::Merged { .. }
        ));
        Ok(())
    }

    #[test]
    fn a_removed_label_is_removed_by_the_merge() -> Result<(), Error> {
        let base = vm(&[("env", "dev"), ("tmp", "1")], "Web", 1);
        let mine = vm(&[("env", "dev")], "Web", 1);
        let theirs = vm(&[("env", "dev"), ("tmp", "1"), ("new", "x")], "Web", 1);
        let Merge::Merged { resource, mask } = merge(&base, &mine, &theirs, None)? else {
            panic!("disjoint edits merge");
        };
        assert_eq!(mask, ["labels.tmp"]);
        assert!(!resource.labels.contains_key("tmp"));
        assert_eq!(resource.labels["new"], "x");
        Ok(())
    }
}
