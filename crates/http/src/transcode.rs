//! Between HTTP/JSON and protobuf, by the descriptors: a request message
//! is assembled as one proto3 JSON object from the body, the path
//! variables and the query parameters, then decoded by prost-reflect (so
//! well-known types, enum names, 64-bit integers as strings, field masks
//! all follow the proto3 JSON mapping); a reply is encoded the same way.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
};
use serde::de::DeserializeSeed;
use serde_json::{Map, Value};

use crate::rules::{Body, Route};

/// A request that cannot be transcoded: the message says where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Parses a JSON body, saying where it broke.
pub fn parse_body(body: &[u8]) -> Result<Value, Malformed> {
    serde_json::from_slice(body).map_err(|e| {
        Malformed(format!(
            "the body is not valid JSON: {} (line {}, column {})",
            strip_position(&e.to_string()),
            e.line(),
            e.column()
        ))
    })
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// Sets `value` at the dotted `path` of `object`, creating objects on the way.
fn set(object: &mut Map<String, Value>, path: &str, value: Value) {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    if rest.is_empty() {
        object.insert(head.to_string(), value);
        return;
    }
    let child = object
        .entry(head.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    if let Value::Object(child) = child {
        set(child, rest, value);
    }
}

/// The field at a dotted path, following message fields.
pub fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let (head, rest) = path.split_once('.').unwrap_or((path, ""));
    let field = message
        .get_field_by_name(head)
        .or_else(|| message.get_field_by_json_name(head))?;
    if rest.is_empty() {
        return Some(field);
    }
    match field.kind() {
        Kind::Message(inner) if !field.is_list() && !field.is_map() => field_at(&inner, rest),
        _ => None,
    }
}

/// The JSON form of one query parameter value for `field`.
fn query_value(field: &FieldDescriptor, raw: &str) -> Value {
    match field.kind() {
        Kind::Bool => match raw {
            "true" | "1" | "" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        _ => Value::String(raw.to_string()),
    }
}

/// Fields a request's headers set: `If-Match` sets the etag,
/// `Idempotency-Key` the request id.
pub type Extra = Vec<(String, String)>;

/// The request message of `route`: the body where the rule puts it, then
/// fields set by headers, the path variables, and the query parameters.
pub fn request(
    route: &Route,
    variables: &[(String, String)],
    extra: &Extra,
    query: &str,
    body: Option<Value>,
) -> Result<Bytes, Malformed> {
    let input = route.rpc.input();
    let mut json = match (&route.body, body) {
        (Body::All, Some(Value::Object(object))) => object,
        (Body::All, Some(_)) => return Err(Malformed("the body must be a JSON object".into())),
        (Body::Field(field), Some(value)) => {
            let mut object = Map::new();
            object.insert(field.clone(), value);
            object
        }
        _ => Map::new(),
    };
    for (path, value) in extra.iter().chain(variables) {
        set(&mut json, path, Value::String(value.clone()));
    }
    let mut lists: Vec<(String, Vec<Value>)> = Vec::new();
    let mut masks: Vec<(FieldDescriptor, Vec<String>)> = Vec::new();
    for (key, raw) in form_urlencoded::parse(query.as_bytes()) {
        let field = field_at(&input, &key).ok_or_else(|| {
            Malformed(format!(
                "unknown query parameter {key:?} for {}",
                input.full_name()
            ))
        })?;
        let bound = match &route.body {
            Body::All => true,
            Body::Field(f) => key.split('.').next() == Some(f.as_str()),
            Body::None => false,
        };
        if bound || variables.iter().any(|(path, _)| *path == key) {
            return Err(Malformed(format!(
                "query parameter {key:?} is already set by the path or the body; send it there"
            )));
        }
        if is_field_mask(&field) && !key.contains('.') {
            masks.push((field, mask_paths(masked(route).as_ref(), &raw)));
            continue;
        }
        let value = query_value(&field, &raw);
        if field.is_list() {
            match lists.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => lists.push((key.to_string(), vec![value])),
            }
        } else {
            set(&mut json, &key, value);
        }
    }
    for (key, values) in lists {
        set(&mut json, &key, Value::Array(values));
    }
    let mut message = decode(&input, Value::Object(json))?;
    for (field, paths) in masks {
        set_mask(&mut message, &field, &paths);
    }
    Ok(Bytes::from(message.encode_to_vec()))
}

fn is_field_mask(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask")
        && !field.is_list()
}

/// The message a route's field mask is relative to: the resource in its
/// body (AIP-134), when the body is one field.
fn masked(route: &Route) -> Option<MessageDescriptor> {
    let Body::Field(body) = &route.body else {
        return None;
    };
    match route.rpc.input().get_field_by_name(body)?.kind() {
        Kind::Message(resource) => Some(resource),
        _ => None,
    }
}

/// A query parameter's comma-separated mask paths as field names. Each
/// path may be in the JSON form (`displayName`) or use the proto field
/// names (`display_name`); segments that name fields of `resource` are
/// turned to snake_case, while a map key after a map field
/// (`labels.app.tier`) stays as written.
fn mask_paths(resource: Option<&MessageDescriptor>, raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|path| {
            let mut message = resource.cloned();
            let mut out: Vec<String> = Vec::new();
            let mut verbatim = false;
            for segment in path.split('.') {
                if verbatim {
                    out.push(segment.to_string());
                    continue;
                }
                let field = message.as_ref().and_then(|m| {
                    m.get_field_by_name(segment)
                        .or_else(|| m.get_field_by_json_name(segment))
                });
                match field {
                    Some(field) => {
                        out.push(field.name().to_string());
                        verbatim = field.is_map();
                        message = match field.kind() {
                            Kind::Message(inner) if !field.is_map() && !field.is_list() => Some(inner),
                            _ => None,
                        };
                    }
                    // Unknown here: converted the JSON form's way, and the
                    // service names the path it does not know.
                    None => {
                        out.push(snake_case(segment));
                        message = None;
                    }
                }
            }
            out.join(".")
        })
        .collect()
}

/// `displayName` → `display_name`.
fn snake_case(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() + 4);
    for c in segment.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Sets a top-level `FieldMask` to `paths`.
fn set_mask(message: &mut DynamicMessage, field: &FieldDescriptor, paths: &[String]) {
    let Kind::Message(mask) = field.kind() else { return };
    let mut value = DynamicMessage::new(mask);
    let list = paths
        .iter()
        .map(|p| prost_reflect::Value::String(p.clone()))
        .collect();
    value.set_field_by_name("paths", prost_reflect::Value::List(list));
    message.set_field(field, prost_reflect::Value::Message(value));
}

/// Decodes proto3 JSON into `message`, rejecting unknown fields and naming
/// the place of any error.
fn decode(message: &MessageDescriptor, json: Value) -> Result<DynamicMessage, Malformed> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&json, &mut track);
    let seed = Seed {
        message: message.clone(),
        options: &options,
    };
    seed.deserialize(deserializer).map_err(|e: serde_json::Error| {
        let path = track.path().to_string();
        let at = if path == "." || path.is_empty() {
            String::new()
        } else {
            format!(" at {path}")
        };
        Malformed(format!(
            "the request does not fit {}{at}: {e}",
            message.full_name()
        ))
    })
}

struct Seed<'a> {
    message: MessageDescriptor,
    options: &'a DeserializeOptions,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = DynamicMessage;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        DynamicMessage::deserialize_with_options(self.message, deserializer, self.options)
    }
}

/// The proto3 JSON of a reply.
pub fn reply(message: &MessageDescriptor, encoded: Bytes) -> Result<(DynamicMessage, Vec<u8>), String> {
    let decoded = DynamicMessage::decode(message.clone(), encoded).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    decoded
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|e| e.to_string())?;
    Ok((decoded, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::routes;
    use arbiter_api::v1::{ListVirtualMachinesRequest, UpdateVirtualMachineRequest};

    fn route(name: &str) -> Route {
        let pool = arbiter_api::json::pool().unwrap_or_else(|e| panic!("{e}"));
        routes(pool)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .find(|r| r.rpc.name() == name)
            .unwrap_or_else(|| panic!("no route {name}"))
    }

    #[test]
    fn body_field_path_and_query_meet_in_one_message() {
        let update = route("UpdateVirtualMachine");
        let body = parse_body(br#"{"displayName": "Front", "labels": {"env": "prod"}}"#).ok();
        let vars = vec![("vm.name".to_string(), "tenants/acme/vms/web-1".to_string())];
        let bytes = request(
            &update,
            &vars,
            &Vec::new(),
            "update_mask=display_name,labels&requestId=r-1",
            body,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let decoded = UpdateVirtualMachineRequest::decode(bytes).unwrap_or_default();
        let vm = decoded.vm.unwrap_or_default();
        assert_eq!(vm.name, "tenants/acme/vms/web-1");
        assert_eq!(vm.display_name, "Front");
        assert_eq!(vm.labels["env"], "prod");
        assert_eq!(
            decoded.update_mask.unwrap_or_default().paths,
            ["display_name", "labels"]
        );
        assert_eq!(decoded.request_id, "r-1");
    }

    #[test]
    fn query_parameters_are_typed() {
        let list = route("ListVirtualMachines");
        let vars = vec![("parent".to_string(), "tenants/acme".to_string())];
        let bytes = request(
            &list,
            &vars,
            &Vec::new(),
            "page_size=5&filter=state%20%3D%20RUNNING",
            None,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let decoded = ListVirtualMachinesRequest::decode(bytes).unwrap_or_default();
        assert_eq!(decoded.page_size, 5);
        assert_eq!(decoded.filter, "state = RUNNING");
        let bad = request(&list, &vars, &Vec::new(), "page_size=many", None).unwrap_err();
        assert!(bad.0.contains("page_size"), "{}", bad.0);
        let unknown = request(&list, &vars, &Vec::new(), "colour=red", None).unwrap_err();
        assert!(unknown.0.contains("\"colour\""), "{}", unknown.0);
    }

    #[test]
    fn unknown_body_fields_and_bad_json_say_where() {
        let update = route("UpdateVirtualMachine");
        let body = parse_body(br#"{"displayName": "x", "colour": "red"}"#).ok();
        let err = request(&update, &[], &Vec::new(), "", body).unwrap_err();
        assert!(err.0.contains("colour"), "{}", err.0);
        let broken = parse_body(b"{\"a\": 1,,}").unwrap_err();
        assert!(broken.0.contains("line 1, column 9"), "{}", broken.0);
        let typed = parse_body(br#"{"labels": "not a map"}"#).ok();
        let err = request(&update, &[], &Vec::new(), "", typed).unwrap_err();
        assert!(err.0.contains("vm.labels"), "{}", err.0);
    }
}
