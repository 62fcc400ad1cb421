//! The OpenAPI 3.1 document of the HTTP API, generated from the same
//! routes and descriptors that serve it: every route with its parameters,
//! request and response schemas (the proto3 JSON mapping), and the problem
//! responses it can answer with.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::problem::{CONTENT_TYPE as PROBLEM, REASONS};
use crate::rules::{Body, Route};

/// Statuses a read can answer with besides 200.
const READ: &[u16] = &[304, 400, 401, 403, 404, 422, 429, 500, 503];
/// Statuses a stream can answer with before it begins.
const STREAM: &[u16] = &[400, 401, 403, 404, 410, 422, 429, 500, 503];
/// Statuses a write can answer with besides 200.
const WRITE: &[u16] = &[400, 401, 403, 404, 409, 412, 413, 415, 422, 428, 429, 500, 503];

fn reference(message: &MessageDescriptor) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
}

/// The schema of a singular value of `kind`; collects referenced messages.
fn scalar(kind: &Kind, seen: &mut BTreeMap<String, MessageDescriptor>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
            json!({"type": "string", "enum": names})
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"}),
            "google.protobuf.FieldMask" => {
                json!({"type": "string", "description": "comma-separated field paths"})
            }
            "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
            "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
            _ => {
                seen.entry(m.full_name().to_string()).or_insert_with(|| m.clone());
                reference(m)
            }
        },
    }
}

/// `google.api.field_behavior` values of a field.
fn behaviors(field: &FieldDescriptor) -> Vec<i32> {
    let Some(ext) = field
        .parent_pool()
        .get_extension_by_name("google.api.field_behavior")
    else {
        return Vec::new();
    };
    let options = field.options();
    if !options.has_extension(&ext) {
        return Vec::new();
    }
    match options.get_extension(&ext).as_ref() {
        prost_reflect::Value::List(values) => values
            .iter()
            .filter_map(prost_reflect::Value::as_enum_number)
            .collect(),
        _ => Vec::new(),
    }
}

/// `OUTPUT_ONLY` and `INPUT_ONLY` of `google.api.FieldBehavior`.
const OUTPUT_ONLY: i32 = 3;
const INPUT_ONLY: i32 = 4;

fn field_schema(field: &FieldDescriptor, seen: &mut BTreeMap<String, MessageDescriptor>) -> Value {
    let mut schema = field_shape(field, seen);
    let behaviors = behaviors(field);
    if behaviors.contains(&OUTPUT_ONLY) && schema.get("$ref").is_none() {
        schema["readOnly"] = json!(true);
    }
    if behaviors.contains(&INPUT_ONLY) && schema.get("$ref").is_none() {
        schema["writeOnly"] = json!(true);
    }
    schema
}

fn field_shape(field: &FieldDescriptor, seen: &mut BTreeMap<String, MessageDescriptor>) -> Value {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": scalar(&value.kind(), seen)});
    }
    let one = scalar(&field.kind(), seen);
    if field.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

fn message_schema(message: &MessageDescriptor, seen: &mut BTreeMap<String, MessageDescriptor>) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        properties.insert(field.json_name().to_string(), field_schema(&field, seen));
    }
    json!({"type": "object", "properties": properties, "additionalProperties": false})
}

/// `tenants` → `tenant`, `policies` → `policy`.
fn singular(collection: &str) -> String {
    if let Some(stem) = collection.strip_suffix("ies") {
        format!("{stem}y")
    } else {
        collection.strip_suffix('s').unwrap_or(collection).to_string()
    }
}

/// The OpenAPI path of a route, with one parameter per wildcard segment,
/// since an OpenAPI parameter cannot span segments. A wildcard is named
/// after the collection before it (`tenants/*` → `{tenant}`); wildcards that
/// follow a wildcard stand for a collection and a resource of any kind
/// (`tenants/*/*/*` → `{tenant}/{collection}/{resource}`).
fn path_of(route: &Route, id_pattern: &str) -> (String, Vec<Value>) {
    let mut path = String::new();
    let mut parameters = Vec::new();
    let mut previous = "id".to_string();
    let mut run = 0;
    for (literal, wildcard) in route.template.segments() {
        path.push('/');
        if wildcard {
            let mut name = match run {
                0 => singular(&previous),
                1 => "collection".to_string(),
                _ => "resource".to_string(),
            };
            run += 1;
            if parameters.iter().any(|p: &Value| p["name"] == json!(name)) {
                name = format!("{name}_{}", parameters.len());
            }
            path.push_str(&format!("{{{name}}}"));
            parameters.push(json!({
                "name": name, "in": "path", "required": true,
                "schema": {"type": "string", "pattern": id_pattern}
            }));
        } else {
            path.push_str(&literal);
            previous = literal;
            run = 0;
        }
    }
    if let Some(verb) = route.template.verb() {
        path.push(':');
        path.push_str(verb);
    }
    (path, parameters)
}

/// Query parameters: the top-level fields the path and body do not set.
fn query_parameters(route: &Route, seen: &mut BTreeMap<String, MessageDescriptor>) -> Vec<Value> {
    if route.body == Body::All {
        return Vec::new();
    }
    let bound: Vec<String> = route
        .template
        .variables()
        .iter()
        .map(|v| v.field.split('.').next().unwrap_or_default().to_string())
        .collect();
    route
        .rpc
        .input()
        .fields()
        .filter(|f| !bound.iter().any(|b| b == f.name()))
        .filter(|f| !matches!(&route.body, Body::Field(b) if b == f.name()))
        .filter(|f| match f.kind() {
            Kind::Message(m) => m.full_name() == "google.protobuf.FieldMask",
            _ => !f.is_map(),
        })
        .map(|f| {
            let mut parameter =
                json!({"name": f.name(), "in": "query", "required": false, "schema": field_schema(&f, seen)});
            if matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask") {
                parameter["description"] = json!(format!(
                    "Comma-separated paths of the fields to change, in the JSON form (displayName) \
                     or as proto field names (display_name); a label as labels.KEY. \
                      The parameter may also be spelled {}.",
                    f.json_name()
                ));
            }
            parameter
        })
        .collect()
}

fn header(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "description": description, "schema": {"type": "string"}})
}

fn operation(
    route: &Route,
    id_pattern: &str,
    seen: &mut BTreeMap<String, MessageDescriptor>,
) -> (String, Value) {
    let (path, mut parameters) = path_of(route, id_pattern);
    parameters.extend(query_parameters(route, seen));
    let read = route.method == http::Method::GET;
    let streaming = route.rpc.is_server_streaming();
    if streaming {
        parameters.push(header(
            "Last-Event-ID",
            "resume after this revision (server-sent events)",
        ));
    } else if read {
        parameters.push(header(
            "If-None-Match",
            "answer 304 if the resource still has one of these etags",
        ));
    } else {
        parameters.push(header(
            "If-Match",
            "apply only if the resource still has this etag (else 412)",
        ));
        parameters.push(header(
            "If-Unmodified-Since",
            "apply only if unchanged since this HTTP date (else 412)",
        ));
        parameters.push(header(
            "If-None-Match",
            "`*` on a create: 412 if the name is taken",
        ));
        parameters.push(header(
            "Idempotency-Key",
            "the request_id: a retry returns the first outcome",
        ));
    }
    let output = route.rpc.output();
    let mut responses = Map::new();
    if streaming {
        let schema = scalar(&Kind::Message(output), seen);
        responses.insert(
            "200".into(),
            json!({
                "description": "A stream: one message per line (NDJSON), or server-sent events with `Accept: text/event-stream`. A failure after the stream began ends it with a line {\"error\": <problem details>} or an `error` event.",
                "content": {
                    "application/x-ndjson": {"schema": schema},
                    "text/event-stream": {"schema": {"type": "string"}}
                }
            }),
        );
    } else {
        responses.insert(
        "200".into(),
        json!({
            "description": "OK",
            "headers": {
                "ETag": {"schema": {"type": "string"}, "description": "the resource's etag"},
                "Last-Modified": {"schema": {"type": "string"}, "description": "the resource's update_time"}
            },
            "content": {"application/json": {"schema": scalar(&Kind::Message(output), seen)}}
        }),
    );
    }
    for status in if streaming {
        STREAM
    } else if read {
        READ
    } else {
        WRITE
    } {
        let description = http::StatusCode::from_u16(*status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let response = if *status == 304 {
            json!({"description": description})
        } else {
            json!({"description": description, "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}})
        };
        responses.insert(status.to_string(), response);
    }
    let mut op = json!({
        "operationId": route.rpc.name(),
        "tags": [route.rpc.parent_service().name()],
        "parameters": parameters,
        "responses": responses,
    });
    let body = match &route.body {
        Body::None => None,
        Body::All => Some(scalar(&Kind::Message(route.rpc.input()), seen)),
        Body::Field(f) => route
            .rpc
            .input()
            .get_field_by_name(f)
            .map(|f| field_schema(&f, seen)),
    };
    if let Some(schema) = body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    (path, op)
}

fn problem_schema() -> Value {
    let reasons: Vec<&str> = REASONS.iter().map(|r| r.reason).collect();
    json!({
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail", "instance", "code", "reason"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "code": {"type": "string"},
            "reason": {"type": "string", "enum": reasons},
            "resource": {"type": "string"},
            "current": {"type": "object", "properties": {
                "etag": {"type": "string"}, "state": {"type": "string"},
                "updated_by": {"type": "string"}, "update_time": {"type": "string"}}},
            "conflict": {"type": "object", "properties": {
                "field": {"type": "string"}, "value": {"type": "string"}, "existing": {"type": "string"}}},
            "violations": {"type": "array", "items": {"type": "object", "properties": {
                "type": {"type": "string"}, "field": {"type": "string"}, "description": {"type": "string"}}}},
            "allowed_from": {"type": "array", "items": {"type": "string"}},
            "policy": {"type": "object", "properties": {
                "name": {"type": "string"}, "revision": {"type": "string"},
                "reason": {"type": "string"}, "fault": {"type": "string"}}}
        }
    })
}

/// The document. `id_pattern` is the pattern of one path segment of a
/// resource name (an id).
pub fn document(routes: &[Route], id_pattern: &str) -> Value {
    let mut seen = BTreeMap::new();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes {
        let (path, op) = operation(route, id_pattern, &mut seen);
        paths
            .entry(path)
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), op);
    }
    let mut schemas = Map::new();
    let mut done = std::collections::BTreeSet::new();
    while let Some((name, message)) = seen
        .iter()
        .find(|(n, _)| !done.contains(*n))
        .map(|(n, m)| (n.clone(), m.clone()))
    {
        let schema = message_schema(&message, &mut seen);
        schemas.insert(name.clone(), schema);
        done.insert(name);
    }
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Arbiter",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The arbiter.v1 API over HTTP/JSON, transcoded from gRPC. Errors are RFC 9457 problem details."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_problems() {
        let pool = arbiter_api::json::pool().unwrap_or_else(|e| panic!("{e}"));
        let routes = crate::rules::routes(pool).unwrap_or_else(|e| panic!("{e}"));
        let doc = document(&routes, "^[^/]+$");
        let start = &doc["paths"]["/v1/tenants/{tenant}/vms/{vm}:start"]["post"];
        assert_eq!(start["operationId"], "StartVirtualMachine");
        assert!(start["responses"]["409"]["content"][PROBLEM].is_object());
        let update = &doc["paths"]["/v1/tenants/{tenant}/vms/{vm}"]["patch"];
        let params: Vec<&str> = update["parameters"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(params.contains(&"update_mask") && params.contains(&"tenant") && params.contains(&"vm"));
        let vm = &doc["components"]["schemas"]["arbiter.v1.VirtualMachine"]["properties"];
        assert_eq!(vm["revision"]["type"], "string");
        assert_eq!(vm["state"]["enum"][1], "STOPPED");
        assert_eq!(vm["createTime"]["format"], "date-time");
        assert_eq!(vm["labels"]["additionalProperties"]["type"], "string");
        let revisions = &doc["paths"]["/v1/tenants/{tenant}/{collection}/{resource}/revisions"]["get"];
        assert_eq!(revisions["operationId"], "ListRevisions");
    }
}
