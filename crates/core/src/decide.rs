//! What a write request must be and what it does to a resource: the
//! checks of a create's or a change's request, and the decisions of
//! update, delete and each state transition on the current version.

use crate::auth::Caller;
use crate::error::{Error, FieldViolation, invalid};
use crate::kind::{Kind, Resource, Transition};
use crate::mask::{self, Path};
use crate::names::{self, Name};
use crate::validate::{check_id, check_labels, check_request_id};

/// The checked parts of a create.
pub(crate) struct Creation<R> {
    pub(crate) name: Name,
    pub(crate) resource: R,
}

/// Checks a create's parent, id and fields and the caller's right to it.
pub(crate) fn check_create<R: Resource>(
    caller: &Caller,
    parent: &str,
    id: &str,
    resource: &R,
    request_id: &str,
) -> Result<Creation<R>, Error> {
    let kind = R::KIND;
    let tenant = names::parse_parent("parent", parent)?;
    caller.authorize(&tenant, kind.write)?;
    let mut violations = Vec::new();
    if let Err(e) = check_id(id) {
        violations.push(FieldViolation::new(format!("{}_id", kind.singular), e));
    }
    validate_resource(resource, kind.singular, &mut violations);
    violations.extend(check_request_id(request_id).err());
    invalid(violations)?;
    Ok(Creation {
        name: Name {
            tenant,
            id: id.to_string(),
        },
        resource: resource.clone(),
    })
}

/// Checks the name of a modified resource, found at request field `field`,
/// and the caller's right to change it.
pub(crate) fn check_target<R: Resource>(
    caller: &Caller,
    field: &str,
    name: &str,
    request_id: &str,
) -> Result<Name, Error> {
    let name = names::parse_name(field, R::KIND, name)?;
    caller.authorize(&name.tenant, R::KIND.write)?;
    invalid(check_request_id(request_id).err().into_iter().collect())?;
    Ok(name)
}

/// The custom method `verb` of `R`.
pub(crate) fn transition_of<R: Resource>(verb: &str) -> Result<&'static Transition, Error> {
    R::KIND
        .transition(verb)
        .ok_or_else(|| Error::Malformed(format!("{} has no custom method :{verb}", R::KIND.type_name)))
}

/// An update's decision: the masked fields of `resource` on the current
/// version, valid and allowed in its state.
pub(crate) fn updating<'a, R: Resource>(
    name: &'a Name,
    paths: &'a [Path],
    resource: &'a R,
) -> impl FnMut(&R) -> Result<Option<R>, Error> + 'a {
    move |current| {
        let mut next = current.clone();
        mask::apply(paths, resource, &mut next);
        let mut violations = Vec::new();
        validate_resource(&next, R::KIND.singular, &mut violations);
        invalid(violations)?;
        check_field_locks(name, current, &next)?;
        Ok(Some(next))
    }
}

/// A delete's decision: allowed in the current state.
pub(crate) fn deleting<R: Resource>(name: &Name) -> impl FnMut(&R) -> Result<Option<R>, Error> + '_ {
    move |current| {
        let kind = R::KIND;
        let state = current.meta().state;
        if kind.deletable_in.contains(&state) {
            Ok(None)
        } else {
            Err(Error::InvalidTransition {
                kind,
                name: name.full(kind),
                operation: "delete".into(),
                current_state: kind.state_name(state).into(),
                allowed_from: kind.state_names(kind.deletable_in),
                field: None,
                hint: kind.delete_hint.into(),
            })
        }
    }
}

/// A transition's decision: the lifecycle allows it from the current state.
pub(crate) fn moving<'a, R: Resource>(
    name: &'a Name,
    transition: &'static Transition,
) -> impl FnMut(&R) -> Result<Option<R>, Error> + 'a {
    move |current| {
        let kind = R::KIND;
        let state = current.meta().state;
        if state == transition.to {
            return Err(Error::AlreadyInState {
                kind,
                name: name.full(kind),
                state: kind.state_name(state).into(),
            });
        }
        if !transition.from.contains(&state) {
            return Err(Error::InvalidTransition {
                kind,
                name: name.full(kind),
                operation: transition.verb.into(),
                current_state: kind.state_name(state).into(),
                allowed_from: kind.state_names(transition.from),
                field: None,
                hint: transition.hint.into(),
            });
        }
        let mut next = current.clone();
        *next.meta_mut().state = transition.to;
        Ok(Some(next))
    }
}

/// Collects the violations of a resource's fields under `prefix`.
pub(crate) fn validate_resource<R: Resource>(r: &R, prefix: &str, out: &mut Vec<FieldViolation>) {
    for f in R::KIND.fields {
        let value = r.field(f.name).map(String::as_str).unwrap_or_default();
        // The path is built only for a violation.
        let path = || format!("{prefix}.{}", f.name);
        if value.is_empty() {
            if f.required {
                out.push(FieldViolation::new(path(), "is required"));
            }
        } else if let Err(e) = (f.check)(value) {
            out.push(FieldViolation::new(path(), e));
        }
    }
    check_labels(prefix, r.meta().labels, out);
    r.check_more(prefix, out);
}

/// Refuses changes to fields that are locked in the current state.
fn check_field_locks<R: Resource>(name: &Name, current: &R, next: &R) -> Result<(), Error> {
    let kind: &Kind = R::KIND;
    let state = current.meta().state;
    for f in kind.fields {
        let Some(allowed) = f.mutable_in else { continue };
        if current.differs(next, f.name) && !allowed.contains(&state) {
            return Err(Error::InvalidTransition {
                kind,
                name: name.full(kind),
                operation: format!("change the {} of", f.name),
                current_state: kind.state_name(state).into(),
                allowed_from: kind.state_names(allowed),
                field: Some(f.name),
                hint: f.lock_hint.into(),
            });
        }
    }
    Ok(())
}
