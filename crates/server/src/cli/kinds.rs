//! The kinds the CLI works with: their service and method names, and their
//! fields as flags.

use clap::Args;
use serde_json::{Map, Value, json};

use super::{Failure, usage};

/// A kind of resource as the CLI addresses it.
#[derive(Debug)]
pub struct Kind {
    /// The gRPC service, e.g. `VirtualMachines`.
    pub service: &'static str,
    /// The message, e.g. `VirtualMachine`.
    pub type_name: &'static str,
    /// Its plural in method names, e.g. `VirtualMachines`.
    pub plural: &'static str,
    /// The resource field of its requests, e.g. `vm`.
    pub singular: &'static str,
    /// The id field of its create request, e.g. `vm_id`.
    pub id_field: &'static str,
    /// Its collection in names, e.g. `vms`.
    pub collection: &'static str,
    /// Its own fields, shown as table columns.
    pub columns: &'static [&'static str],
}

/// Virtual machines.
pub static KIND_VM: Kind = Kind {
    service: "VirtualMachines",
    type_name: "VirtualMachine",
    plural: "VirtualMachines",
    singular: "vm",
    id_field: "vm_id",
    collection: "vms",
    columns: &["region", "machine_type", "image"],
};

/// Users.
pub static KIND_USER: Kind = Kind {
    service: "Users",
    type_name: "User",
    plural: "Users",
    singular: "user",
    id_field: "user_id",
    collection: "users",
    columns: &["email", "display_name"],
};

/// Prompts.
pub static KIND_PROMPT: Kind = Kind {
    service: "Prompts",
    type_name: "Prompt",
    plural: "Prompts",
    singular: "prompt",
    id_field: "prompt_id",
    collection: "prompts",
    columns: &["model", "description"],
};

/// Policies.
pub static KIND_POLICY: Kind = Kind {
    service: "Policies",
    type_name: "Policy",
    plural: "Policies",
    singular: "policy",
    id_field: "policy_id",
    collection: "policies",
    columns: &["kinds", "mode", "failure_policy", "module_sha256"],
};

/// The kind a full resource name belongs to.
pub fn kind_of(name: &str) -> Option<&'static Kind> {
    let collection = name.split('/').nth(2)?;
    [&KIND_VM, &KIND_USER, &KIND_PROMPT, &KIND_POLICY]
        .into_iter()
        .find(|k| k.collection == collection)
}

/// A kind's fields as flags: the ones given, as proto JSON.
pub trait Fields: Args + Clone + std::fmt::Debug + Send + 'static {
    /// The fields given on the command line (proto field names).
    fn json(&self) -> Result<Map<String, Value>, Failure>;
}

fn put(out: &mut Map<String, Value>, field: &str, value: Option<&String>) {
    if let Some(value) = value {
        out.insert(field.to_string(), json!(value));
    }
}

/// The fields of a VM.
#[derive(Debug, Clone, Default, Args)]
pub struct VmFields {
    /// A human-readable name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// The region, e.g. `us-east1` (only while stopped).
    #[arg(long)]
    pub region: Option<String>,
    /// The machine type, e.g. `e2-small` (only while stopped).
    #[arg(long)]
    pub machine_type: Option<String>,
    /// The boot image, e.g. `debian-12`.
    #[arg(long)]
    pub image: Option<String>,
}

impl Fields for VmFields {
    fn json(&self) -> Result<Map<String, Value>, Failure> {
        let mut out = Map::new();
        put(&mut out, "display_name", self.display_name.as_ref());
        put(&mut out, "region", self.region.as_ref());
        put(&mut out, "machine_type", self.machine_type.as_ref());
        put(&mut out, "image", self.image.as_ref());
        Ok(out)
    }
}

/// The fields of a user.
#[derive(Debug, Clone, Default, Args)]
pub struct UserFields {
    /// A human-readable name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// The email address, unique within the tenant.
    #[arg(long)]
    pub email: Option<String>,
}

impl Fields for UserFields {
    fn json(&self) -> Result<Map<String, Value>, Failure> {
        let mut out = Map::new();
        put(&mut out, "display_name", self.display_name.as_ref());
        put(&mut out, "email", self.email.as_ref());
        Ok(out)
    }
}

/// The fields of a prompt.
#[derive(Debug, Clone, Default, Args)]
pub struct PromptFields {
    /// What the prompt is for.
    #[arg(long)]
    pub description: Option<String>,
    /// The template text (only in DRAFT).
    #[arg(long)]
    pub template: Option<String>,
    /// The model it is for (only in DRAFT).
    #[arg(long)]
    pub model: Option<String>,
}

impl Fields for PromptFields {
    fn json(&self) -> Result<Map<String, Value>, Failure> {
        let mut out = Map::new();
        put(&mut out, "description", self.description.as_ref());
        put(&mut out, "template", self.template.as_ref());
        put(&mut out, "model", self.model.as_ref());
        Ok(out)
    }
}

/// The fields of a policy.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyFields {
    /// What the policy checks.
    #[arg(long)]
    pub description: Option<String>,
    /// The WebAssembly component to upload (.wasm).
    #[arg(long, value_name = "FILE")]
    pub module: Option<std::path::PathBuf>,
    /// Go back to a module uploaded before, by its hex SHA-256.
    #[arg(long)]
    pub module_sha256: Option<String>,
    /// The kinds it judges: vm, user, prompt (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// The operations it judges: CREATE, UPDATE, DELETE, TRANSITION
    /// (comma-separated; default every one).
    #[arg(long, value_delimiter = ',')]
    pub operations: Vec<String>,
    /// ENFORCE or AUDIT.
    #[arg(long)]
    pub mode: Option<String>,
    /// FAIL_CLOSED or FAIL_OPEN.
    #[arg(long)]
    pub failure_policy: Option<String>,
    /// Time limit of one evaluation, e.g. `50ms`.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Memory limit of one evaluation in bytes.
    #[arg(long)]
    pub memory_limit_bytes: Option<u64>,
    /// The binding's settings: a YAML or JSON file holding a mapping.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<std::path::PathBuf>,
}

impl Fields for PolicyFields {
    fn json(&self) -> Result<Map<String, Value>, Failure> {
        use base64::Engine as _;
        let mut out = Map::new();
        put(&mut out, "description", self.description.as_ref());
        put(&mut out, "module_sha256", self.module_sha256.as_ref());
        put(&mut out, "mode", self.mode.as_ref());
        put(&mut out, "failure_policy", self.failure_policy.as_ref());
        if let Some(path) = &self.module {
            let bytes = std::fs::read(path)
                .map_err(|e| usage(format!("--module: cannot read {}: {e}", path.display())))?;
            out.insert(
                "module".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
        if !self.kinds.is_empty() {
            out.insert("kinds".into(), json!(self.kinds));
        }
        if !self.operations.is_empty() {
            out.insert("operations".into(), json!(self.operations));
        }
        if let Some(timeout) = &self.timeout {
            let duration = humantime::parse_duration(timeout)
                .map_err(|e| usage(format!("--timeout {timeout:?}: {e}; write e.g. 50ms or 1s")))?;
            out.insert("timeout".into(), json!(format!("{}s", duration.as_secs_f64())));
        }
        if let Some(bytes) = self.memory_limit_bytes {
            out.insert("memory_limit_bytes".into(), json!(bytes.to_string()));
        }
        if let Some(path) = &self.settings {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--settings: cannot read {}: {e}", path.display())))?;
            let settings: Value = serde_yaml::from_str(&text)
                .map_err(|e| usage(format!("--settings: {} is not YAML or JSON: {e}", path.display())))?;
            if !settings.is_object() {
                return Err(usage(format!(
                    "--settings: {} must hold a mapping, like {{machine_types: [e2-small]}}",
                    path.display()
                )));
            }
            out.insert("settings".into(), settings);
        }
        Ok(out)
    }
}
