//! The proto3 JSON mapping of the API's messages, driven by the embedded
//! descriptors (prost-reflect): lowerCamelCase field names, enums by name,
//! 64-bit integers as strings, timestamps in RFC 3339, default values left
//! out.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::FILE_DESCRIPTOR_SET;

static POOL: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()));

/// Why a message could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptors did not load (a build defect).
    #[error("the embedded descriptors do not load: {0}")]
    Descriptors(String),
    /// The message type is not part of the API.
    #[error("{0} is not a message of the API")]
    UnknownType(String),
    /// The bytes are not a valid encoding of the type.
    #[error("cannot decode {type_name}: {reason}")]
    Decode {
        /// The message type.
        type_name: String,
        /// What went wrong.
        reason: String,
    },
    /// Serialization failed.
    #[error("cannot write JSON: {0}")]
    Write(String),
}

/// The descriptors of every API file and its imports.
pub fn pool() -> Result<&'static DescriptorPool, JsonError> {
    POOL.as_ref().map_err(|e| JsonError::Descriptors(e.clone()))
}

/// The proto3 JSON of `encoded`, a protobuf encoding of `type_name` (a full
/// name such as `arbiter.v1.VirtualMachine`).
pub fn to_json(type_name: &str, encoded: &[u8]) -> Result<String, JsonError> {
    let descriptor = pool()?
        .get_message_by_name(type_name)
        .ok_or_else(|| JsonError::UnknownType(type_name.to_string()))?;
    let message = DynamicMessage::decode(descriptor, encoded).map_err(|e| JsonError::Decode {
        type_name: type_name.to_string(),
        reason: e.to_string(),
    })?;
    serde_json::to_string(&message).map_err(|e| JsonError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::{VirtualMachine, virtual_machine::State};

    #[test]
    fn resources_map_to_proto3_json() {
        let vm = VirtualMachine {
            name: "tenants/acme/vms/web-1".into(),
            machine_type: "e2-small".into(),
            state: State::Running as i32,
            revision: 42,
            labels: [("env".to_string(), "prod".to_string())].into(),
            ..Default::default()
        };
        let json =
            to_json("arbiter.v1.VirtualMachine", &vm.encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["machineType"], "e2-small");
        assert_eq!(value["state"], "RUNNING");
        assert_eq!(value["revision"], "42");
        assert_eq!(value["labels"]["env"], "prod");
        assert!(value.get("region").is_none(), "defaults are left out");
    }

    #[test]
    fn unknown_types_and_bad_bytes_are_errors() {
        assert!(matches!(
            to_json("arbiter.v1.Nope", b""),
            Err(JsonError::UnknownType(_))
        ));
        assert!(matches!(
            to_json("arbiter.v1.VirtualMachine", b"\xff\xff"),
            Err(JsonError::Decode { .. })
        ));
    }
}
