//! The client commands of the `arbiter` binary (ARCHITECTURE.md section
//! 13), on `arbiter-client`: `arbiter vm|user|prompt|policy VERB`, `tx`,
//! `watch`, `history`, `edit`. Requests and responses are handled through
//! the API's descriptors, like the HTTP layer: a command builds its request
//! as proto JSON (proto field names), sends it to the method the kind and
//! verb name, and prints the response as a table, JSON or YAML. Errors
//! print their reason, what conflicted and the way out, and exit with the
//! code of their class.

mod edit;
mod kinds;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_client::{Client, Error, Options};
use clap::{Args, Subcommand, ValueEnum};
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value, json};

pub use kinds::{Fields, PolicyFields, PromptFields, UserFields, VmFields};
use kinds::{KIND_POLICY, KIND_PROMPT, KIND_USER, KIND_VM, Kind};
pub use output::Format;

/// Where the server is and who is asking.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// The server's gRPC endpoint as a URL (`https://` for TLS).
    #[arg(
        long,
        env = "ARBITER_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// The bearer token.
    #[arg(long, env = "ARBITER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https).
    #[arg(long, env = "ARBITER_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    pub output: Format,
}

/// Labels and idempotency of a write.
#[derive(Debug, Clone, Default, Args)]
pub struct WriteArgs {
    /// A label to set, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A UUID that makes a retry of this request safe.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Check the request without changing anything.
    #[arg(long)]
    pub validate_only: bool,
}

/// `arbiter policy preview`: what a policy would decide before it is
/// bound.
#[derive(Debug, Clone, Args)]
pub struct Preview {
    /// `tenants/{tenant}`.
    pub parent: String,
    /// The candidate policy, as for `policy create`.
    #[command(flatten)]
    pub policy: PolicyFields,
    /// Judge every current object of the bound kinds as if created now.
    #[arg(long)]
    pub current_objects: bool,
    /// Replay up to this many of the tenant's latest changes (at most
    /// 10000).
    #[arg(long, default_value_t = 0)]
    pub recent_changes: u32,
    /// Denials and faults to show (default 20, at most 100).
    #[arg(long, default_value_t = 0)]
    pub max_samples: u32,
}

/// `arbiter stats conflicts TENANT`: refused requests over a window.
#[derive(Debug, Clone, Args)]
pub struct ConflictStatsArgs {
    /// The tenant (`acme` or `tenants/acme`); `-` for every tenant (a
    /// token for every tenant only).
    pub tenant: String,
    /// How far back the window starts, e.g. 15m, 6h, 7d (at most 30d).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
    /// Bucket width: 1m, 1h or 1d (default: the narrowest that gives at
    /// most 1440 buckets).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub bucket: Option<std::time::Duration>,
    /// Only this collection (vms, users, prompts, policies, transactions).
    #[arg(long, default_value = "")]
    pub collection: String,
    /// Only this reason, e.g. ETAG_MISMATCH.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Only these gRPC codes, comma-separated; `conflicts` for
    /// ALREADY_EXISTS, ABORTED and FAILED_PRECONDITION.
    #[arg(long, value_delimiter = ',')]
    pub codes: Vec<String>,
    /// Most contended resources to show (at most 100).
    #[arg(long, default_value_t = 10)]
    pub top: i32,
    /// Latest refusals to show (at most 100).
    #[arg(long, default_value_t = 10)]
    pub recent: i32,
}

/// `arbiter stats policies TENANT`: evaluations per policy over a window.
#[derive(Debug, Clone, Args)]
pub struct PolicyStatsArgs {
    /// The tenant (`acme` or `tenants/acme`); `-` for every tenant.
    pub tenant: String,
    /// How far back the window starts, e.g. 15m, 6h, 7d (at most 30d).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
}

/// The verbs every kind has.
#[derive(Debug, Clone, Subcommand)]
pub enum Verb<F: Fields> {
    /// Create a resource: `NAME` is its full name, e.g. `tenants/acme/vms/web-1`.
    Create {
        /// The new resource's full name.
        name: String,
        /// The kind's fields.
        #[command(flatten)]
        fields: F,
        /// Labels and idempotency.
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Show one resource.
    Get {
        /// Its full name.
        name: String,
    },
    /// List a tenant's resources, every page.
    List {
        /// `tenants/{tenant}`.
        parent: String,
        /// `labels.KEY = "VALUE"` and `state = NAME` terms joined by ` AND `.
        #[arg(long, default_value = "")]
        filter: String,
    },
    /// Change the fields given; nothing else.
    Update {
        /// Its full name.
        name: String,
        /// The fields to change.
        #[command(flatten)]
        fields: F,
        /// Labels and idempotency.
        #[command(flatten)]
        write: WriteArgs,
        /// A label to remove (repeatable).
        #[arg(long = "remove-label", value_name = "KEY")]
        remove_labels: Vec<String>,
        /// Only if the resource still has this etag.
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete a resource.
    Delete {
        /// Its full name.
        name: String,
        /// Only if the resource still has this etag.
        #[arg(long)]
        etag: Option<String>,
        /// A UUID that makes a retry of this request safe.
        #[arg(long)]
        request_id: Option<String>,
    },
}

/// A custom method that moves a resource to another state.
#[derive(Debug, Clone, Args)]
pub struct Move {
    /// The resource's full name.
    pub name: String,
    /// Only if the resource still has this etag.
    #[arg(long)]
    pub etag: Option<String>,
    /// A UUID that makes a retry of this request safe.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// `arbiter vm ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum VmCommand {
    /// The verbs every kind has.
    #[command(flatten)]
    Verb(Verb<VmFields>),
    /// Start a stopped VM.
    Start(Move),
    /// Stop a running VM.
    Stop(Move),
}

/// `arbiter user ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// The verbs every kind has.
    #[command(flatten)]
    Verb(Verb<UserFields>),
    /// Activate a pending or suspended user.
    Activate(Move),
    /// Suspend an active user.
    Suspend(Move),
}

/// `arbiter prompt ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum PromptCommand {
    /// The verbs every kind has.
    #[command(flatten)]
    Verb(Verb<PromptFields>),
    /// Publish a draft.
    Publish(Move),
    /// Archive a published prompt.
    Archive(Move),
}

/// How `arbiter edit` resolves a conflict without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    /// Re-apply your changed fields on the current version; fails when
    /// they overlap the fields changed on the server.
    Merge,
    /// Write your version over the current one.
    Overwrite,
    /// Give up, exiting 3.
    Fail,
}

/// A client command of the `arbiter` binary.
#[derive(Debug, Clone)]
pub enum ClientCommand {
    /// `arbiter vm ...`.
    Vm(VmCommand),
    /// `arbiter user ...`.
    User(UserCommand),
    /// `arbiter prompt ...`.
    Prompt(PromptCommand),
    /// `arbiter policy ...`.
    Policy(Verb<PolicyFields>),
    /// `arbiter policy preview PARENT`.
    PolicyPreview(Preview),
    /// `arbiter tx FILE`.
    Tx {
        /// A `CommitTransactionRequest` as YAML (proto field names).
        file: PathBuf,
    },
    /// `arbiter watch PARENT`.
    Watch {
        /// `tenants/{tenant}`.
        parent: String,
        /// Collections to follow (default: every one the token may read).
        collections: Vec<String>,
        /// First revision to show (default: from now on).
        start_revision: u64,
        /// First every current object, then changes.
        send_initial: bool,
        /// Only changes whose object matches this filter.
        filter: String,
    },
    /// `arbiter stats conflicts TENANT`.
    ConflictStats(ConflictStatsArgs),
    /// `arbiter stats policies TENANT`.
    PolicyStats(PolicyStatsArgs),
    /// `arbiter history NAME`.
    History {
        /// The resource's full name.
        name: String,
    },
    /// `arbiter edit NAME`.
    Edit {
        /// The resource's full name.
        name: String,
        /// Resolve a conflict without asking.
        on_conflict: Option<OnConflict>,
    },
}

/// Runs a client command; the exit code says how it ended.
pub async fn run(connection: Connection, command: ClientCommand) -> ExitCode {
    match execute(&connection, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Why a command failed. Built once, at the end of a command, so its
/// size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Failure {
    /// The server answered with an error (or could not be reached).
    Api(Error),
    /// The input was wrong: a file, a flag value.
    Usage(String),
    /// A conflict the user chose not to resolve.
    Conflict(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Api(e)
    }
}

impl Failure {
    fn report(&self) -> ExitCode {
        match self {
            Self::Api(e) => {
                eprintln!("{}", output::describe(e));
                ExitCode::from(u8::try_from(e.class().exit_code()).unwrap_or(6))
            }
            Self::Usage(message) => {
                eprintln!("error: {message}");
                ExitCode::from(1)
            }
            Self::Conflict(message) => {
                eprintln!("error: {message}");
                ExitCode::from(3)
            }
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

async fn connect(connection: &Connection) -> Result<Client, Failure> {
    let ca_pem = match &connection.ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| usage(format!("cannot read the CA file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let options = Options {
        token: connection.token.clone(),
        ca_pem,
        ..Options::default()
    };
    Ok(Client::connect_with(&connection.server, options).await?)
}

/// The descriptor of a message of the API.
fn message(name: &str) -> Result<MessageDescriptor, Failure> {
    arbiter_api::json::pool()
        .map_err(|e| usage(e.to_string()))?
        .get_message_by_name(name)
        .ok_or_else(|| usage(format!("{name} is not in the API")))
}

/// A message of type `name` from proto JSON.
fn from_json(name: &str, value: Value) -> Result<DynamicMessage, Failure> {
    let descriptor = message(name)?;
    DynamicMessage::deserialize_with_options(descriptor, value, &DeserializeOptions::new())
        .map_err(|e| usage(format!("not a valid {name}: {e}")))
}

/// Proto JSON of `message`, with proto field names and every field.
fn to_json(message: &DynamicMessage, defaults: bool) -> Value {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(!defaults);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(Value::Null)
}

/// Calls `method` of `service` with `request` (proto JSON); returns the
/// response.
async fn call(
    client: &Client,
    service: &str,
    method: &str,
    request: Value,
) -> Result<DynamicMessage, Failure> {
    call_masked(client, service, method, request, &[]).await
}

/// [`call`] with the request's `update_mask` set to `mask` (proto field
/// paths such as `display_name` and `labels.env`, which the JSON form of a
/// field mask cannot carry).
async fn call_masked(
    client: &Client,
    service: &str,
    method: &str,
    request: Value,
    mask: &[String],
) -> Result<DynamicMessage, Failure> {
    let pool = arbiter_api::json::pool().map_err(|e| usage(e.to_string()))?;
    let descriptor = pool
        .get_service_by_name(&format!("arbiter.v1.{service}"))
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .ok_or_else(|| usage(format!("arbiter.v1.{service} has no method {method}")))?;
    let mut request = from_json(descriptor.input().full_name(), request)?;
    if !mask.is_empty() {
        let mut paths = DynamicMessage::new(message("google.protobuf.FieldMask")?);
        let list = mask
            .iter()
            .map(|p| prost_reflect::Value::String(p.clone()))
            .collect();
        paths.set_field_by_name("paths", prost_reflect::Value::List(list));
        request.set_field_by_name("update_mask", prost_reflect::Value::Message(paths));
    }
    let path = format!("/arbiter.v1.{service}/{method}");
    let response = client.call_raw(&path, request.encode_to_vec()).await?;
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    DynamicMessage::decode(descriptor.output(), response.message.as_slice())
        .map_err(|e| Failure::Api(Error::Transport(format!("cannot read the answer: {e}"))))
}

/// `tenants/{t}/{collection}/{id}` split into parent and id.
fn split_name<'a>(kind: &Kind, name: &'a str) -> Result<(&'a str, &'a str), Failure> {
    let mut parts = name.rsplitn(3, '/');
    let (id, collection, parent) = (parts.next(), parts.next(), parts.next());
    match (parent, collection, id) {
        (Some(parent), Some(collection), Some(id))
            if collection == kind.collection && parent.starts_with("tenants/") =>
        {
            Ok((parent, id))
        }
        _ => Err(usage(format!(
            "{name:?} is not a {} name; expected tenants/TENANT/{}/ID",
            kind.singular, kind.collection
        ))),
    }
}

fn labels(write: &WriteArgs) -> Result<Map<String, Value>, Failure> {
    let mut labels = Map::new();
    for label in &write.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| usage(format!("--label {label:?}: write KEY=VALUE")))?;
        labels.insert(key.to_string(), json!(value));
    }
    Ok(labels)
}

fn optional(value: Option<&String>) -> Value {
    value.map_or(json!(""), |v| json!(v))
}

async fn execute(connection: &Connection, command: ClientCommand) -> Result<(), Failure> {
    let client = connect(connection).await?;
    let format = connection.output;
    match command {
        ClientCommand::Vm(VmCommand::Verb(verb)) => resource(&client, format, &KIND_VM, verb).await,
        ClientCommand::Vm(VmCommand::Start(m)) => transition(&client, format, &KIND_VM, "Start", m).await,
        ClientCommand::Vm(VmCommand::Stop(m)) => transition(&client, format, &KIND_VM, "Stop", m).await,
        ClientCommand::User(UserCommand::Verb(verb)) => resource(&client, format, &KIND_USER, verb).await,
        ClientCommand::User(UserCommand::Activate(m)) => {
            transition(&client, format, &KIND_USER, "Activate", m).await
        }
        ClientCommand::User(UserCommand::Suspend(m)) => {
            transition(&client, format, &KIND_USER, "Suspend", m).await
        }
        ClientCommand::Prompt(PromptCommand::Verb(verb)) => {
            resource(&client, format, &KIND_PROMPT, verb).await
        }
        ClientCommand::Prompt(PromptCommand::Publish(m)) => {
            transition(&client, format, &KIND_PROMPT, "Publish", m).await
        }
        ClientCommand::Prompt(PromptCommand::Archive(m)) => {
            transition(&client, format, &KIND_PROMPT, "Archive", m).await
        }
        ClientCommand::Policy(verb) => resource(&client, format, &KIND_POLICY, verb).await,
        ClientCommand::PolicyPreview(preview) => policy_preview(&client, format, preview).await,
        ClientCommand::Tx { file } => transaction(&client, format, &file).await,
        ClientCommand::Watch {
            parent,
            collections,
            start_revision,
            send_initial,
            filter,
        } => {
            let request = arbiter_client::v1::WatchChangesRequest {
                parent,
                collections,
                start_revision,
                send_initial,
                filter,
            };
            watch(&client, format, request).await
        }
        ClientCommand::History { name } => history(&client, format, &name).await,
        ClientCommand::ConflictStats(args) => conflict_stats(&client, format, args).await,
        ClientCommand::PolicyStats(args) => policy_stats(&client, format, args).await,
        ClientCommand::Edit { name, on_conflict } => edit::edit(&client, &name, on_conflict).await,
    }
}

async fn resource<F: Fields>(
    client: &Client,
    format: Format,
    kind: &Kind,
    verb: Verb<F>,
) -> Result<(), Failure> {
    let service = kind.service;
    let ty = kind.type_name;
    let response = match verb {
        Verb::Create { name, fields, write } => {
            let (parent, id) = split_name(kind, &name)?;
            let mut body = fields.json()?;
            body.insert("labels".into(), Value::Object(labels(&write)?));
            let request = json!({
                "parent": parent,
                kind.id_field: id,
                kind.singular: body,
                "request_id": optional(write.request_id.as_ref()),
                "validate_only": write.validate_only,
            });
            call(client, service, &format!("Create{ty}"), request).await?
        }
        Verb::Get { name } => {
            split_name(kind, &name)?;
            call(client, service, &format!("Get{ty}"), json!({ "name": name })).await?
        }
        Verb::List { parent, filter } => {
            let mut items = Vec::new();
            let mut token = String::new();
            loop {
                let request =
                    json!({"parent": parent, "filter": filter, "page_size": 1000, "page_token": token});
                let page = to_json(
                    &call(client, service, &format!("List{}", kind.plural), request).await?,
                    false,
                );
                if let Some(Value::Array(found)) = page.get(kind.collection) {
                    items.extend(found.iter().cloned());
                }
                match page.get("next_page_token").and_then(Value::as_str) {
                    Some(next) if !next.is_empty() => token = next.to_string(),
                    _ => break,
                }
            }
            output::list(format, kind, &items);
            return Ok(());
        }
        Verb::Update {
            name,
            fields,
            write,
            remove_labels,
            etag,
        } => {
            split_name(kind, &name)?;
            let mut body = fields.json()?;
            let mut mask: Vec<String> = body.keys().cloned().collect();
            let set = labels(&write)?;
            mask.extend(set.keys().map(|k| format!("labels.{k}")));
            mask.extend(remove_labels.iter().map(|k| format!("labels.{k}")));
            if mask.is_empty() {
                return Err(usage(
                    "nothing to update: give the fields to change, --label or --remove-label",
                ));
            }
            body.insert("labels".into(), Value::Object(set));
            body.insert("name".into(), json!(name));
            body.insert("etag".into(), optional(etag.as_ref()));
            let request = json!({
                kind.singular: body,
                "request_id": optional(write.request_id.as_ref()),
                "validate_only": write.validate_only,
            });
            call_masked(client, service, &format!("Update{ty}"), request, &mask).await?
        }
        Verb::Delete {
            name,
            etag,
            request_id,
        } => {
            split_name(kind, &name)?;
            let request = json!({"name": name, "etag": optional(etag.as_ref()), "request_id": optional(request_id.as_ref())});
            call(client, service, &format!("Delete{ty}"), request).await?;
            output::done(format, &format!("deleted {name}"));
            return Ok(());
        }
    };
    output::one(format, kind, &to_json(&response, true));
    Ok(())
}

async fn transition(
    client: &Client,
    format: Format,
    kind: &Kind,
    verb: &str,
    m: Move,
) -> Result<(), Failure> {
    split_name(kind, &m.name)?;
    let request = json!({"name": m.name, "etag": optional(m.etag.as_ref()), "request_id": optional(m.request_id.as_ref())});
    let response = call(
        client,
        kind.service,
        &format!("{verb}{}", kind.type_name),
        request,
    )
    .await?;
    output::one(format, kind, &to_json(&response, true));
    Ok(())
}

async fn transaction(client: &Client, format: Format, file: &std::path::Path) -> Result<(), Failure> {
    let text =
        std::fs::read_to_string(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let value: Value =
        serde_yaml::from_str(&text).map_err(|e| usage(format!("{} is not YAML: {e}", file.display())))?;
    let response = call(client, "Transactions", "CommitTransaction", value).await?;
    output::transaction(format, &to_json(&response, false));
    Ok(())
}

async fn watch(
    client: &Client,
    format: Format,
    request: arbiter_client::v1::WatchChangesRequest,
) -> Result<(), Failure> {
    let mut watch = client.watch(request);
    while let Some(change) = watch.next().await {
        match change {
            Ok(change) => output::change(format, &change),
            Err(Error::RevisionCompacted { .. }) => {
                eprintln!("-- the resume point was compacted: listing afresh")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn policy_preview(client: &Client, format: Format, preview: Preview) -> Result<(), Failure> {
    let request = json!({
        "parent": preview.parent,
        "policy": preview.policy.json()?,
        "current_objects": preview.current_objects,
        "recent_changes": preview.recent_changes,
        "max_samples": preview.max_samples,
    });
    let answer = call(client, "Policies", "PreviewPolicy", request).await?;
    output::preview(format, &to_json(&answer, true));
    Ok(())
}

/// The parent and the start of a stats window: `tenant` as `acme`,
/// `tenants/acme` or `-`, and `since` back from now.
fn stats_window(tenant: &str, since: std::time::Duration) -> Result<(String, String), Failure> {
    let parent = format!("tenants/{}", tenant.strip_prefix("tenants/").unwrap_or(tenant));
    let start = std::time::SystemTime::now()
        .checked_sub(since)
        .ok_or_else(|| usage(format!("--since {since:?} reaches before 1970")))?;
    Ok((parent, humantime::format_rfc3339(start).to_string()))
}

async fn policy_stats(client: &Client, format: Format, args: PolicyStatsArgs) -> Result<(), Failure> {
    let (parent, start) = stats_window(&args.tenant, args.since)?;
    let request = json!({"parent": parent, "start_time": start});
    let answer = call(client, "Stats", "GetPolicyStats", request).await?;
    output::policy_stats(format, &to_json(&answer, true));
    Ok(())
}

async fn conflict_stats(client: &Client, format: Format, args: ConflictStatsArgs) -> Result<(), Failure> {
    let (parent, start) = stats_window(&args.tenant, args.since)?;
    let codes: Vec<String> = args
        .codes
        .iter()
        .flat_map(|c| match c.as_str() {
            "conflicts" => vec![
                "ALREADY_EXISTS".into(),
                "ABORTED".into(),
                "FAILED_PRECONDITION".into(),
            ],
            other => vec![other.to_ascii_uppercase()],
        })
        .collect();
    let mut request = json!({
        "parent": parent,
        "start_time": start,
        "collection": args.collection,
        "reason": args.reason,
        "codes": codes,
        "max_hot_resources": args.top,
        "max_recent": args.recent,
    });
    if let Some(bucket) = args.bucket {
        request["bucket"] = json!(format!("{}s", bucket.as_secs()));
    }
    let answer = call(client, "Stats", "GetConflictStats", request).await?;
    output::conflict_stats(format, &to_json(&answer, true));
    Ok(())
}

async fn history(client: &Client, format: Format, name: &str) -> Result<(), Failure> {
    let mut token = String::new();
    let mut changes = Vec::new();
    loop {
        let page = client
            .changes()
            .list_revisions(arbiter_client::v1::ListRevisionsRequest {
                name: name.to_string(),
                page_size: 1000,
                page_token: token.clone(),
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        changes.extend(page.revisions);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    output::history(format, &changes);
    Ok(())
}
