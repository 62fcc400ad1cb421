//! Path templates of `google.api.http` rules:
//!
//! ```text
//! Template = "/" Segments [ ":" Verb ]
//! Segment  = "*" | "**" | LITERAL | "{" FieldPath [ "=" Segments ] "}"
//! ```
//!
//! e.g. `/v1/{vm.name=tenants/*/vms/*}:start`. A variable without a pattern
//! matches one segment; `**` matches the rest of the path.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches itself.
    Literal(String),
    /// `*`: one segment.
    Any,
    /// `**`: the rest of the path.
    Rest,
}

/// A variable: the request field it fills and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Dotted field path, e.g. `vm.name`.
    pub field: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    text: String,
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits a path into segments and the custom verb after the last `:`
/// of the last segment.
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    match path[last..].rfind(':') {
        Some(colon) => (&path[..last + colon], Some(&path[last + colon + 1..])),
        None => (path, None),
    }
}

impl Template {
    /// Parses a template.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let error = |reason: &str| TemplateError {
            template: text.to_string(),
            reason: reason.to_string(),
        };
        let path = text.strip_prefix('/').ok_or_else(|| error("must start with /"))?;
        // The verb follows the last segment, outside any variable.
        let (path, verb) = match path.rfind('}') {
            Some(close) if path[close..].contains(':') => {
                let (head, verb) = split_verb(&path[close..]);
                (&path[..close + head.len()], verb)
            }
            Some(_) => (path, None),
            None => split_verb(path),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| error("unclosed {"))?;
                let (field, pattern) = match inner[..close].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..close], "*"),
                };
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(Self::segment(part).map_err(|r| error(&r))?);
                }
                variables.push(Variable {
                    field: field.to_string(),
                    start,
                    end: segments.len(),
                });
                rest = inner[close + 1..]
                    .strip_prefix('/')
                    .unwrap_or(&inner[close + 1..]);
            } else {
                let (part, tail) = rest.split_once('/').unwrap_or((rest, ""));
                segments.push(Self::segment(part).map_err(|r| error(&r))?);
                rest = tail;
            }
        }
        if segments.iter().rev().skip(1).any(|s| *s == Segment::Rest) {
            return Err(error("** may only end the path"));
        }
        Ok(Self {
            segments,
            variables,
            verb: verb.map(str::to_string),
            text: text.to_string(),
        })
    }

    fn segment(part: &str) -> Result<Segment, String> {
        match part {
            "" => Err("empty segment".into()),
            "*" => Ok(Segment::Any),
            "**" => Ok(Segment::Rest),
            literal if literal.contains(['{', '}', '=']) => Err(format!("bad segment {literal:?}")),
            literal => Ok(Segment::Literal(literal.to_string())),
        }
    }

    /// The variables, in order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The segments in order: each literal, or `(_, true)` for a wildcard.
    pub fn segments(&self) -> impl Iterator<Item = (String, bool)> + '_ {
        self.segments.iter().map(|s| match s {
            Segment::Literal(l) => (l.clone(), false),
            Segment::Any | Segment::Rest => (String::new(), true),
        })
    }

    /// The custom verb, e.g. `start`.
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// Matches a request path; returns each variable's field and value.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        // A colon in the last segment always starts a custom verb, so a
        // template without one does not match `.../web-1:start`.
        let (path, verb) = split_verb(path);
        if verb != self.verb.as_deref() {
            return None;
        }
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut spans = Vec::with_capacity(self.segments.len());
        let mut at = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) if parts.get(at) == Some(&l.as_str()) => {}
                Segment::Any if parts.get(at).is_some_and(|p| !p.is_empty()) => {}
                Segment::Rest if at < parts.len() => {
                    spans.push((at, parts.len()));
                    at = parts.len();
                    continue;
                }
                _ => return None,
            }
            spans.push((at, at + 1));
            at += 1;
        }
        if at != parts.len() {
            return None;
        }
        let values = self.variables.iter().map(|v| {
            let (from, to) = (spans[v.start].0, spans[v.end - 1].1);
            let value = parts[from..to]
                .iter()
                .map(|p| percent_decode(p))
                .collect::<Vec<_>>()
                .join("/");
            (v.field.clone(), value)
        });
        Some(values.collect())
    }
}

/// Decodes `%XX` escapes; malformed ones are kept as they are.
fn percent_decode(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Template {
        Template::parse(t).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn nested_fields_and_multi_segment_variables() {
        let t = parse("/v1/{vm.name=tenants/*/vms/*}");
        assert_eq!(
            t.matches("/v1/tenants/acme/vms/web-1"),
            Some(vec![("vm.name".into(), "tenants/acme/vms/web-1".into())])
        );
        assert_eq!(t.matches("/v1/tenants/acme/users/web-1"), None);
        assert_eq!(t.matches("/v1/tenants/acme/vms"), None);
        assert_eq!(t.matches("/v1/tenants/acme/vms/web-1/x"), None);
    }

    #[test]
    fn custom_verbs_are_part_of_the_match() {
        let t = parse("/v1/{name=tenants/*/vms/*}:start");
        assert_eq!(t.verb(), Some("start"));
        assert_eq!(
            t.matches("/v1/tenants/acme/vms/web-1:start"),
            Some(vec![("name".into(), "tenants/acme/vms/web-1".into())])
        );
        assert_eq!(t.matches("/v1/tenants/acme/vms/web-1:stop"), None);
        assert_eq!(t.matches("/v1/tenants/acme/vms/web-1"), None);
        assert_eq!(
            parse("/v1/{name=tenants/*/vms/*}").matches("/v1/tenants/acme/vms/web-1:start"),
            None
        );
    }

    #[test]
    fn collections_single_variables_and_rest() {
        let t = parse("/v1/{parent=tenants/*}/vms");
        assert_eq!(
            t.matches("/v1/tenants/acme/vms"),
            Some(vec![("parent".into(), "tenants/acme".into())])
        );
        let one = parse("/v1/things/{id}");
        assert_eq!(
            one.matches("/v1/things/a%20b"),
            Some(vec![("id".into(), "a b".into())])
        );
        let rest = parse("/files/{path=**}");
        assert_eq!(
            rest.matches("/files/a/b/c"),
            Some(vec![("path".into(), "a/b/c".into())])
        );
        assert!(Template::parse("/a/**/b").is_err());
        assert!(Template::parse("a").is_err());
        assert!(Template::parse("/a/{b").is_err());
    }
}
