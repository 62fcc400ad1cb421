//! A field at fault in a request, bounded in size: the leaf type that
//! errors, validation and policy denials all carry.

/// One bad request field: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `vm.machine_type`.
    pub field: String,
    /// What is wrong and what is expected.
    pub description: String,
}

/// Longest field path of a violation, in bytes (it may quote input).
pub(crate) const MAX_FIELD_BYTES: usize = 128;
/// Longest description of a violation, in bytes (it may quote input).
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 320;

/// `text` cut to at most `max` bytes at a character boundary.
fn clip(text: String, max: usize) -> String {
    if text.len() <= max {
        text
    } else {
        truncate(&text, max)
    }
}

impl FieldViolation {
    /// A violation of `field`; both texts are cut to a bounded size, since
    /// they may quote what the client sent.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: clip(field.into(), MAX_FIELD_BYTES),
            description: clip(description.into(), MAX_DESCRIPTION_BYTES),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
