//! The one conversion from the domain [`Error`] to a gRPC status with
//! `google.rpc` details (ARCHITECTURE.md section 3). Exhaustive on purpose:
//! a new error variant does not compile until it has a mapping.

use std::collections::HashMap;

use arbiter_core::{Current, DenialKind, Error};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Arbiter error.
pub const DOMAIN: &str = "arbiter";

fn meta<const N: usize>(pairs: [(&str, String); N]) -> HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn current_meta(current: &Current) -> [(&'static str, String); 4] {
    [
        ("current_etag", current.etag.clone()),
        ("current_state", current.state.clone()),
        ("updated_by", current.updated_by.clone()),
        ("update_time", current.update_time.clone()),
    ]
}

/// Converts a domain error into the status the client sees.
pub fn to_status(error: &Error) -> Status {
    let message = error.to_string();
    let mut details = ErrorDetails::new();
    let code = match error {
        Error::InvalidField { violations } => {
            for v in violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            details.set_error_info("INVALID_FIELD", DOMAIN, HashMap::new());
            Code::InvalidArgument
        }
        Error::NotFound { kind, name } => {
            details.set_error_info("RESOURCE_NOT_FOUND", DOMAIN, meta([("resource", name.clone())]));
            details.set_resource_info(kind.type_name, name.clone(), owner(name), "not found");
            Code::NotFound
        }
        Error::Exists { kind, name, current } => {
            let mut m = meta([("resource", name.clone())]);
            m.extend(meta(current_meta(current)));
            details.set_error_info("RESOURCE_EXISTS", DOMAIN, m);
            details.set_resource_info(kind.type_name, name.clone(), owner(name), "already exists");
            Code::AlreadyExists
        }
        Error::UniqueTaken {
            kind,
            name,
            field,
            value,
            existing,
        } => {
            details.set_error_info(
                "UNIQUE_FIELD_TAKEN",
                DOMAIN,
                meta([
                    ("resource", name.clone()),
                    ("field", field.to_string()),
                    ("value", value.clone()),
                    ("existing", existing.clone()),
                ]),
            );
            details.set_resource_info(
                kind.type_name,
                existing.clone(),
                owner(existing),
                format!("holds {field} {value}"),
            );
            Code::AlreadyExists
        }
        Error::EtagMismatch {
            kind,
            name,
            expected,
            current,
            changed_fields,
        } => {
            let mut m = meta([("resource", name.clone()), ("expected_etag", expected.clone())]);
            m.extend(meta(current_meta(current)));
            if let Some(fields) = changed_fields {
                m.insert("changed_fields".into(), fields.join(","));
            }
            details.set_error_info("ETAG_MISMATCH", DOMAIN, m);
            details.set_resource_info(
                kind.type_name,
                name.clone(),
                owner(name),
                "changed since the etag was read",
            );
            Code::Aborted
        }
        Error::LookupChanged {
            kind,
            name,
            expected,
            looked_up,
        } => {
            details.set_error_info(
                "ETAG_MISMATCH",
                DOMAIN,
                meta([
                    ("resource", name.clone()),
                    ("expected_etag", expected.clone()),
                    ("looked_up", looked_up.clone()),
                ]),
            );
            details.set_resource_info(
                kind.type_name,
                looked_up.clone(),
                owner(looked_up),
                "changed after a policy looked it up",
            );
            Code::Aborted
        }
        Error::RequestInProgress { request_id } => {
            details.set_error_info(
                "REQUEST_IN_PROGRESS",
                DOMAIN,
                meta([("request_id", request_id.clone())]),
            );
            details.set_retry_info(Some(std::time::Duration::from_millis(100)));
            Code::Aborted
        }
        Error::RequestIdReused { request_id } => {
            details.set_error_info(
                "REQUEST_ID_REUSED",
                DOMAIN,
                meta([("request_id", request_id.clone())]),
            );
            details.add_bad_request_violation("request_id", "already used for a different request");
            Code::InvalidArgument
        }
        Error::InvalidTransition {
            kind,
            name,
            operation,
            current_state,
            allowed_from,
            field,
            hint,
        } => {
            let mut m = meta([
                ("resource", name.clone()),
                ("operation", operation.clone()),
                ("current_state", current_state.clone()),
                ("allowed_from", allowed_from.join(",")),
            ]);
            if let Some(field) = field {
                m.insert("field".into(), field.to_string());
            }
            details.set_error_info("INVALID_TRANSITION", DOMAIN, m);
            details.add_precondition_failure_violation(
                "STATE",
                name.clone(),
                format!("{} is {current_state}; {hint}", kind.noun),
            );
            Code::FailedPrecondition
        }
        Error::AlreadyInState { name, state, .. } => {
            details.set_error_info(
                "ALREADY_IN_STATE",
                DOMAIN,
                meta([("resource", name.clone()), ("current_state", state.clone())]),
            );
            Code::FailedPrecondition
        }
        Error::PreconditionRequired { name, operation, .. } => {
            details.set_error_info(
                "PRECONDITION_REQUIRED",
                DOMAIN,
                meta([("resource", name.clone()), ("operation", operation.to_string())]),
            );
            details.add_precondition_failure_violation(
                "ETAG",
                name.clone(),
                "this tenant requires the resource's current etag on updates and deletes",
            );
            Code::FailedPrecondition
        }
        Error::TenantForbidden { principal, tenant } => {
            details.set_error_info(
                "TENANT_FORBIDDEN",
                DOMAIN,
                meta([("principal", principal.clone()), ("tenant", tenant.clone())]),
            );
            Code::PermissionDenied
        }
        Error::RoleForbidden {
            principal,
            role,
            required,
        } => {
            details.set_error_info(
                "ROLE_FORBIDDEN",
                DOMAIN,
                meta([
                    ("principal", principal.clone()),
                    ("role", role.to_string()),
                    ("required_role", required.to_string()),
                ]),
            );
            Code::PermissionDenied
        }
        Error::PolicyDenied {
            policy,
            revision,
            resource,
            denial,
        } => {
            let (reason, code) = match denial.kind {
                DenialKind::Conflict => ("POLICY_DENIED", Code::FailedPrecondition),
                DenialKind::Invalid => ("POLICY_REJECTED", Code::InvalidArgument),
                DenialKind::Forbidden => ("POLICY_FORBIDDEN", Code::PermissionDenied),
            };
            details.set_error_info(
                reason,
                DOMAIN,
                meta([
                    ("resource", resource.clone()),
                    ("policy", policy.clone()),
                    ("policy_revision", revision.to_string()),
                    ("denial_reason", denial.reason.clone()),
                ]),
            );
            for v in &denial.violations {
                if denial.kind == DenialKind::Invalid {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                } else {
                    details.add_precondition_failure_violation(
                        denial.reason.clone(),
                        v.field.clone(),
                        v.description.clone(),
                    );
                }
            }
            code
        }
        Error::PolicyFault {
            policy,
            revision,
            resource,
            fault,
        } => {
            details.set_error_info(
                "POLICY_FAULT",
                DOMAIN,
                meta([
                    ("resource", resource.clone()),
                    ("policy", policy.clone()),
                    ("policy_revision", revision.to_string()),
                    ("fault", fault.kind.as_str().to_string()),
                ]),
            );
            Code::Internal
        }
        Error::Unauthenticated(_) => {
            details.set_error_info("UNAUTHENTICATED", DOMAIN, HashMap::new());
            Code::Unauthenticated
        }
        Error::Malformed(_) => {
            details.set_error_info("MALFORMED_REQUEST", DOMAIN, HashMap::new());
            Code::InvalidArgument
        }
        Error::RevisionCompacted { requested, oldest } => {
            details.set_error_info(
                "REVISION_COMPACTED",
                DOMAIN,
                meta([
                    ("requested_revision", requested.to_string()),
                    ("oldest_revision", oldest.to_string()),
                ]),
            );
            Code::OutOfRange
        }
        Error::WatchTooSlow { resume_revision } => {
            details.set_error_info(
                "WATCH_TOO_SLOW",
                DOMAIN,
                meta([("resume_revision", resume_revision.to_string())]),
            );
            Code::Aborted
        }
        Error::QuotaExceeded {
            tenant,
            collection,
            limit,
            usage,
        } => {
            details.set_error_info(
                "QUOTA_EXCEEDED",
                DOMAIN,
                meta([
                    ("collection", collection.to_string()),
                    ("limit", limit.to_string()),
                    ("usage", usage.to_string()),
                ]),
            );
            details.add_quota_failure_violation(
                format!("tenants/{tenant}/{collection}"),
                format!("{usage} of {limit} {collection} in use"),
            );
            Code::ResourceExhausted
        }
        Error::RateLimited {
            limit, retry_after, ..
        } => {
            details.set_error_info("RATE_LIMITED", DOMAIN, meta([("limit", limit.clone())]));
            details.set_retry_info(Some(*retry_after));
            Code::ResourceExhausted
        }
        Error::StoreUnavailable(_) => {
            details.set_error_info("STORE_UNAVAILABLE", DOMAIN, HashMap::new());
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            Code::Unavailable
        }
        Error::Internal(_) => {
            details.set_error_info("INTERNAL", DOMAIN, HashMap::new());
            Code::Internal
        }
        Error::InOperation { index, error } => {
            let inner = to_status(error);
            let mut details = inner.get_error_details();
            if let Some(info) = details.error_info().cloned() {
                let mut metadata = info.metadata;
                metadata.insert("operation_index".into(), index.to_string());
                details.set_error_info(info.reason, info.domain, metadata);
            }
            return Status::with_error_details(inner.code(), message, details);
        }
    };
    Status::with_error_details(code, message, details)
}

/// The tenant that owns a resource name.
fn owner(name: &str) -> String {
    name.splitn(3, '/').take(2).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons this file sets, from its source text.
    fn reasons_set_here() -> Vec<String> {
        let source = include_str!("status.rs");
        source
            .split("set_error_info(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_reason_has_a_problem_page_and_a_readme_row() {
        let readme = include_str!("../../../README.md");
        let errors_table = readme
            .split("## Errors")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        let set = reasons_set_here();
        assert!(set.len() >= 15, "found {set:?}");
        for reason in &set {
            assert!(
                arbiter_http::problem::REASONS.iter().any(|r| r.reason == reason),
                "{reason} has no problem type (arbiter_http::problem::REASONS)"
            );
            assert!(
                errors_table.contains(&format!("`{reason}`")),
                "{reason} has no row in the README's Errors table"
            );
        }
        for reason in arbiter_http::problem::REASONS {
            assert!(
                readme.contains(&format!("`{}`", reason.reason)),
                "{} is not documented in the README",
                reason.reason
            );
        }
    }

    #[test]
    fn owner_is_the_tenant() {
        assert_eq!(owner("tenants/acme/vms/web-1"), "tenants/acme");
    }

    #[test]
    fn internal_errors_say_what_failed_not_why() {
        let status = to_status(&Error::Internal("writing the resource".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("writing the resource"));
        assert_eq!(
            status.get_error_details().error_info().map(|i| i.reason.as_str()),
            Some("INTERNAL")
        );
    }
}
