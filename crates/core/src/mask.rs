//! `update_mask` (AIP-134, AIP-161): which fields of the request's resource
//! replace the stored ones.

use crate::error::{Error, FieldViolation};
use crate::kind::Resource;

/// Common fields that only the server sets.
const OUTPUT_ONLY: &[&str] = &[
    "uid",
    "create_time",
    "update_time",
    "created_by",
    "updated_by",
    "revision",
];

/// One path of a checked mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// A kind-specific field.
    Field(&'static str),
    /// The whole labels map.
    Labels,
    /// One label (`labels.KEY`): set, or removed when absent in the request.
    Label(String),
}

/// Checks the mask paths against the kind. An empty mask means every field
/// set in the request; `*` means every mutable field.
pub fn parse<R: Resource>(paths: &[String], request: &R) -> Result<Vec<Path>, Error> {
    let kind = R::KIND;
    let prefix = kind.singular;
    if paths.is_empty() {
        let mut out: Vec<Path> = kind
            .fields
            .iter()
            .filter(|f| request.is_set(f.name))
            .map(|f| Path::Field(f.name))
            .collect();
        if !request.meta().labels.is_empty() {
            out.push(Path::Labels);
        }
        return Ok(out);
    }
    if paths.iter().any(|p| p == "*") {
        if paths.len() > 1 {
            return Err(Error::field("update_mask", "\"*\" must be the only path"));
        }
        let mut out: Vec<Path> = kind.fields.iter().map(|f| Path::Field(f.name)).collect();
        out.push(Path::Labels);
        return Ok(out);
    }
    let mut out = Vec::with_capacity(paths.len());
    let mut violations = Vec::new();
    for path in paths {
        match path.as_str() {
            "labels" => out.push(Path::Labels),
            p if p.starts_with("labels.") => out.push(Path::Label(p["labels.".len()..].to_string())),
            "state" => violations.push(FieldViolation::new(
                "update_mask",
                format!("state is changed only by the custom methods ({}); remove it from the mask", verbs(kind)),
            )),
            "name" | "etag" => violations.push(FieldViolation::new(
                "update_mask",
                format!("{path} cannot be updated; put it in {prefix}.{path} to identify or condition the write, not in the mask"),
            )),
            p if OUTPUT_ONLY.contains(&p) => violations.push(FieldViolation::new(
                "update_mask",
                format!("{p} is output only and set by the server; remove it from the mask"),
            )),
            p => match kind.field(p) {
                Some(f) => out.push(Path::Field(f.name)),
                None => violations.push(FieldViolation::new(
                    "update_mask",
                    format!("{p:?} is not a field of {}; updatable fields are {}, labels", kind.type_name, field_list(kind)),
                )),
            },
        }
    }
    crate::error::invalid(violations).map(|()| out)
}

fn verbs(kind: &crate::kind::Kind) -> String {
    let verbs: Vec<String> = kind.transitions.iter().map(|t| format!(":{}", t.verb)).collect();
    verbs.join(", ")
}

fn field_list(kind: &crate::kind::Kind) -> String {
    let names: Vec<&str> = kind.fields.iter().map(|f| f.name).collect();
    names.join(", ")
}

/// Copies the masked fields of `from` onto `to`.
pub fn apply<R: Resource>(paths: &[Path], from: &R, to: &mut R) {
    for path in paths {
        match path {
            Path::Field(name) => to.copy_field(from, name),
            Path::Labels => to.meta_mut().labels.clone_from(from.meta().labels),
            Path::Label(key) => match from.meta().labels.get(key) {
                Some(value) => {
                    to.meta_mut().labels.insert(key.clone(), value.clone());
                }
                None => {
                    to.meta_mut().labels.remove(key);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter_api::v1::VirtualMachine;

    fn vm() -> VirtualMachine {
        VirtualMachine {
            display_name: "new".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_mask_takes_the_set_fields() {
        let paths = parse(&[], &vm()).unwrap_or_default();
        assert_eq!(paths, vec![Path::Field("display_name"), Path::Labels]);
    }

    #[test]
    fn label_paths_set_and_remove_single_labels() {
        let mut stored = VirtualMachine {
            labels: [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let paths = parse(&["labels.env".into(), "labels.a".into()], &vm()).unwrap_or_default();
        apply(&paths, &vm(), &mut stored);
        let keys: Vec<&String> = stored.labels.keys().collect();
        assert_eq!(keys, ["b", "env"]);
    }

    #[test]
    fn output_only_and_unknown_paths_are_rejected() {
        let err = parse(&["uid".into(), "state".into(), "nope".into()], &vm());
        match err {
            Err(Error::InvalidField { violations }) => assert_eq!(violations.len(), 3),
            other => panic!("{other:?}"),
        }
    }
}
