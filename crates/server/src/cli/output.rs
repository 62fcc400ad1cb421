//! How the CLI prints: tables for people, JSON and YAML for programs, and
//! errors with what conflicted and the way out.

use arbiter_client::Error;
use arbiter_client::v1::{Change, change};
use clap::ValueEnum;
use serde_json::Value;

use super::kinds::Kind;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// Proto JSON (proto field names), one document.
    Json,
    /// The same as YAML.
    Yaml,
}

fn document(format: Format, value: &Value) {
    match format {
        Format::Yaml => match serde_yaml::to_string(value) {
            Ok(text) => print!("{text}"),
            Err(e) => eprintln!("cannot write YAML: {e}"),
        },
        _ => match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot write JSON: {e}"),
        },
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(|v| text(Some(v))).collect::<Vec<_>>().join(","),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", text(Some(v))))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn resource_rows(kind: &Kind, items: &[Value]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec!["name", "state"];
    header.extend(kind.columns);
    header.extend(["labels", "etag"]);
    let rows = items
        .iter()
        .map(|item| header.iter().map(|column| text(item.get(*column))).collect())
        .collect();
    (header, rows)
}

/// Prints one resource.
pub fn one(format: Format, kind: &Kind, value: &Value) {
    if format == Format::Table {
        let (header, rows) = resource_rows(kind, std::slice::from_ref(value));
        table(&header, &rows);
    } else {
        document(format, value);
    }
}

/// Prints a list of resources.
pub fn list(format: Format, kind: &Kind, items: &[Value]) {
    if format == Format::Table {
        let (header, rows) = resource_rows(kind, items);
        table(&header, &rows);
    } else {
        document(format, &Value::Array(items.to_vec()));
    }
}

/// Prints that something was done.
pub fn done(format: Format, message: &str) {
    match format {
        Format::Table => println!("{message}"),
        _ => document(format, &serde_json::json!({ "done": message })),
    }
}

/// Prints a committed transaction.
pub fn transaction(format: Format, value: &Value) {
    if format != Format::Table {
        document(format, value);
        return;
    }
    println!("committed at revision {}", text(value.get("revision")));
    let results = value
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (kind, object) = r
                .as_object()
                .and_then(|o| o.iter().next())
                .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v));
            let name = if kind == "deleted" {
                "(deleted)".into()
            } else {
                text(object.get("name"))
            };
            vec![i.to_string(), name, text(object.get("state"))]
        })
        .collect();
    table(&["#", "name", "state"], &rows);
}

/// Prints what a policy preview found: the counts, then its samples.
pub fn preview(format: Format, value: &Value) {
    if format != Format::Table {
        document(format, value);
        return;
    }
    let count = |field: &str| {
        let n = text(value.get(field));
        if n.is_empty() { "0".to_string() } else { n }
    };
    println!(
        "judged {} at revision {}: {} allowed, {} denied, {} faulted{}",
        count("evaluated"),
        count("revision"),
        count("allowed"),
        count("denied"),
        count("faulted"),
        if value.get("truncated").and_then(Value::as_bool) == Some(true) {
            " (stopped early: time or object limit)"
        } else {
            ""
        }
    );
    const COLUMNS: [&str; 6] = ["name", "revision", "operation", "kind", "reason", "message"];
    let samples = value
        .get("samples")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if samples.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| COLUMNS.iter().map(|f| text(s.get(*f))).collect())
        .collect();
    table(&COLUMNS, &rows);
}

/// `arbiter stats conflicts`: the series, the hot resources and the
/// latest refusals as tables.
pub fn conflict_stats(format: Format, value: &Value) {
    if format != Format::Table {
        document(format, value);
        return;
    }
    let list = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let total = text(value.get("total"));
    println!(
        "{} refused from {} to {} in buckets of {}{}",
        if total.is_empty() { "0".into() } else { total },
        text(value.get("start_time")),
        text(value.get("end_time")),
        text(value.get("bucket")),
        if value.get("truncated").and_then(Value::as_bool) == Some(true) {
            " (truncated)"
        } else {
            ""
        }
    );
    let rows = |items: &[Value], columns: &[&str]| -> Vec<Vec<String>> {
        items
            .iter()
            .map(|s| columns.iter().map(|f| text(s.get(*f))).collect())
            .collect()
    };
    const SERIES: [&str; 6] = ["tenant", "collection", "method", "reason", "code", "total"];
    let series = list("series");
    if !series.is_empty() {
        table(&SERIES, &rows(&series, &SERIES));
    }
    let hot = list("hot_resources");
    if !hot.is_empty() {
        println!();
        let found = rows(&hot, &["name", "count", "top_reason", "last_time"]);
        table(&["hot resource", "count", "top reason", "last"], &found);
    }
    let recent = list("recent");
    if !recent.is_empty() {
        println!();
        const RECENT: [&str; 5] = ["time", "principal", "method", "resource", "reason"];
        table(&RECENT, &rows(&recent, &RECENT));
    }
}

/// `arbiter stats policies`: a row per policy.
pub fn policy_stats(format: Format, value: &Value) {
    if format != Format::Table {
        document(format, value);
        return;
    }
    const COLUMNS: [&str; 9] = [
        "policy",
        "evaluations",
        "allowed",
        "denied",
        "warned",
        "audit_denied",
        "faulted",
        "faults_ignored",
        "p99_latency",
    ];
    let policies = value
        .get("policies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| COLUMNS.iter().map(|f| text(p.get(*f))).collect())
        .collect();
    table(&COLUMNS, &rows);
}

fn change_json(change: &Change) -> Value {
    let encoded = prost::Message::encode_to_vec(change);
    super::message("arbiter.v1.Change")
        .ok()
        .and_then(|descriptor| prost_reflect::DynamicMessage::decode(descriptor, encoded.as_slice()).ok())
        .map_or(Value::Null, |message| super::to_json(&message, false))
}

fn change_row(c: &Change) -> Vec<String> {
    let kind = change::Type::try_from(c.r#type).map_or("?", |t| t.as_str_name());
    vec![
        c.revision.to_string(),
        kind.to_string(),
        c.name.clone(),
        c.operation.clone(),
        c.principal.clone(),
        c.time.map(|t| t.to_string()).unwrap_or_default(),
        c.changed_fields.join(","),
    ]
}

const CHANGE_HEADER: [&str; 7] = [
    "revision",
    "type",
    "name",
    "operation",
    "principal",
    "time",
    "changed",
];

/// Prints one change of a watch as it arrives: a line, or a JSON document
/// per line.
pub fn change(format: Format, c: &Change) {
    match format {
        Format::Table => println!("{}", change_row(c).join("  ").trim_end()),
        Format::Json => println!("{}", change_json(c)),
        Format::Yaml => {
            println!("---");
            document(Format::Yaml, &change_json(c));
        }
    }
}

/// Prints a resource's history.
pub fn history(format: Format, changes: &[Change]) {
    if format == Format::Table {
        let rows: Vec<Vec<String>> = changes.iter().map(change_row).collect();
        table(&CHANGE_HEADER, &rows);
    } else {
        document(format, &Value::Array(changes.iter().map(change_json).collect()));
    }
}

/// An error as the CLI prints it: the reason and the server's message
/// (which names the way out), then what conflicted.
pub fn describe(e: &Error) -> String {
    let mut out = format!("error: {e}");
    let mut more = |line: String| {
        out.push_str("\n  ");
        out.push_str(&line);
    };
    if let Some(index) = e.info().and_then(|i| i.operation_index) {
        more(format!(
            "in operation {index} of the transaction; nothing was written"
        ));
    }
    match e {
        Error::AlreadyExists { current, .. } => more(format!(
            "existing: state {}, etag {}, last changed by {} at {}",
            current.state, current.etag, current.updated_by, current.update_time
        )),
        Error::UniqueFieldTaken {
            field,
            value,
            existing,
            ..
        } => more(format!("{field} {value:?} is held by {existing}")),
        Error::EtagMismatch {
            current_etag,
            updated_by,
            update_time,
            changed_fields,
            ..
        } => {
            more(format!(
                "now at etag {current_etag}, changed by {updated_by} at {update_time}"
            ));
            if let Some(fields) = changed_fields {
                more(format!("changed since your version: {}", fields.join(", ")));
            }
            more("`arbiter edit NAME` re-applies your change on the current version".into());
        }
        Error::InvalidTransition {
            current_state,
            allowed_from,
            ..
        } => more(format!(
            "state {current_state}; allowed from {}",
            allowed_from.join(", ")
        )),
        Error::InvalidField { violations, .. } | Error::PolicyDenied { violations, .. } => {
            for v in violations {
                more(format!("{}: {}", v.field, v.description));
            }
        }
        Error::QuotaExceeded {
            collection,
            limit,
            usage,
            ..
        } => more(format!("{usage} of {limit} {collection} in use")),
        Error::RateLimited {
            retry_after: Some(wait),
            ..
        } => more(format!("retry after {:.1}s", wait.as_secs_f64())),
        _ => {}
    }
    out
}
