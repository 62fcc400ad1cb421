//! Field checks. Each returns a sentence that says what is expected, so
//! that the client can fix the field without reading documentation.

use std::collections::BTreeMap;

use crate::error::FieldViolation;

/// Longest resource or tenant id.
const MAX_ID: usize = 63;
/// Most labels on one resource.
const MAX_LABELS: usize = 64;

/// The pattern [`check_id`] checks.
pub const ID_PATTERN: &str = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Checks an RFC 1123 label: `^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`.
pub fn check_id(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_ID
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid id: use 1 to 63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (e.g. \"web-1\")"
        ))
    }
}

/// Checks free text of at most `N` characters without control characters.
pub fn check_text<const N: usize>(text: &str) -> Result<(), String> {
    if text.chars().count() > N {
        return Err(format!("must be at most {N} characters"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Checks a lowercase slug such as a region or machine type (`us-east1`,
/// `e2-small`).
pub fn check_slug(slug: &str) -> Result<(), String> {
    check_id(slug).map_err(|_| {
        format!("{slug:?} must be 1 to 63 lowercase letters, digits and hyphens, starting with a letter (e.g. \"e2-small\")")
    })
}

/// Checks a reference such as an image (`debian-12`, `registry/img:tag`).
pub fn check_reference(reference: &str) -> Result<(), String> {
    if reference.len() > 1024 || reference.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 1024 characters with no whitespace".into());
    }
    Ok(())
}

/// Checks a model name (`gpt-4o`, `claude-3.5`).
pub fn check_model(model: &str) -> Result<(), String> {
    if model.len() > 256 || model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 256 characters with no whitespace".into());
    }
    Ok(())
}

/// Checks the shape of an email address.
pub fn check_email(email: &str) -> Result<(), String> {
    let shape = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    if email.len() > 254 || !shape || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{email:?} is not an email address like \"ada@example.com\""
        ));
    }
    Ok(())
}

fn label_key_ok(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

fn label_value_ok(value: &str) -> bool {
    value.len() <= MAX_ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks labels; `prefix` is the path of the resource in the request
/// (`vm`), so violations name `vm.labels` and `vm.labels["key"]`. The
/// paths are built only for violations: valid labels cost no formatting.
pub fn check_labels(prefix: &str, labels: &BTreeMap<String, String>, out: &mut Vec<FieldViolation>) {
    if labels.len() > MAX_LABELS {
        out.push(FieldViolation::new(
            format!("{prefix}.labels"),
            format!("at most {MAX_LABELS} labels are allowed, got {}", labels.len()),
        ));
    }
    for (key, value) in labels {
        if !label_key_ok(key) {
            out.push(FieldViolation::new(
                format!("{prefix}.labels[{key:?}]"),
                "label keys are 1 to 63 lowercase letters, digits, '-', '_' or '.', starting with a letter",
            ));
        } else if !label_value_ok(value) {
            out.push(FieldViolation::new(
                format!("{prefix}.labels[{key:?}]"),
                "label values are at most 63 letters, digits, '-', '_' or '.'",
            ));
        }
    }
}

/// Checks that `request_id` is empty or a UUID (AIP-155).
pub fn check_request_id(request_id: &str) -> Result<(), FieldViolation> {
    if request_id.is_empty() || uuid::Uuid::try_parse(request_id).is_ok() {
        Ok(())
    } else {
        Err(FieldViolation::new(
            "request_id",
            format!(
                "{request_id:?} is not a UUID; send a fresh UUID such as \"0b6f4b3e-5c8e-4f3a-9d55-2c1f0f3b8a11\" per logical request"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_rfc_1123() {
        for ok in ["a", "web-1", "a1", &"a".repeat(63)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "A", "web-", "web_1", "we b", &"a".repeat(64), "é"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_domain() {
        assert!(check_email("ada@example.com").is_ok());
        for bad in ["ada", "@x.io", "ada@x", "a@b@c.io", "ada @x.io", "ada@.io"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked_per_entry() {
        let mut out = Vec::new();
        let labels = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("Bad".to_string(), "x".to_string()),
            ("ok".to_string(), "has space".to_string()),
        ]);
        check_labels("vm", &labels, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].field, "vm.labels[\"Bad\"]");
    }
}
