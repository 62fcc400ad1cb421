//! A policy of `arbiter:policy@0.2.0` for tests: its settings pick what it
//! does.
//!
//! - `{"deny": "REASON"}`: denies every change with that reason (two
//!   bindings of this one module with different settings decide
//!   differently).
//! - `{"report": true}`: looks up every name in the object's label
//!   `lookup` (tokens joined by `_`: `collection.id` in the request's
//!   tenant, `tenant.collection.id` in any) and denies with reason
//!   `LOOKED_UP` and a message listing `name=STATE@revision` or
//!   `name=none`.
//! - `{"lookups": n}`: calls `lookup` n times, then allows (the cap).
//! - `{"primary_registry": "ID"}`: at most one VM labelled
//!   `primary=true`. The prompt `ID` is the registry: its label `vm`
//!   names the tenant's primary VM. A VM may carry `primary=true` only
//!   while the registry names it; the registry may name another VM only
//!   while the VM it names now is absent or not primary. Both checks read
//!   with `lookup`, so concurrent writes cannot both pass.
//!
//! `validate-settings` refuses unknown fields and a `deny` that is not
//! UPPER_SNAKE_CASE, with a message naming the field.

use arbiter_policy_sdk::v2::{
    Decision, Object, Operation, Policy, Request, allow, conflict, lookup, parse_settings,
};

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    deny: Option<String>,
    #[serde(default)]
    report: bool,
    lookups: Option<u32>,
    primary_registry: Option<String>,
}

fn settings(json: &str) -> Result<Settings, String> {
    let settings: Settings = parse_settings(json).map_err(String::from)?;
    if let Some(reason) = &settings.deny
        && !reason.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    {
        return Err(format!("deny must be UPPER_SNAKE_CASE, not {reason:?}"));
    }
    Ok(settings)
}

/// The name a token of the label `lookup` stands for: `collection.id` in
/// the request's tenant, `tenant.collection.id` in any, or a name as is.
fn name_of(req: &Request, token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    match parts[..] {
        [collection, id] => req.name_in_tenant(collection, id),
        [tenant, collection, id] => format!("tenants/{tenant}/{collection}/{id}"),
        _ => token.to_string(),
    }
}

fn describe(name: &str, found: Option<Object>) -> String {
    match found {
        Some(o) => format!("{name}={}@{}", o.state, o.revision),
        None => format!("{name}=none"),
    }
}

fn primary(req: &Request, registry_id: &str) -> Decision {
    let registry = req.name_in_tenant("prompts", registry_id);
    let Some(object) = req.proposed.as_ref() else {
        return allow();
    };
    match req.kind() {
        "vm" if object.label("primary") == Some("true") => {
            let id = object.name.rsplit('/').next().unwrap_or_default();
            let registered = lookup(&registry).and_then(|r| r.label("vm").map(str::to_string));
            if registered.as_deref() == Some(id) {
                allow()
            } else {
                conflict(
                    "PRIMARY_NOT_REGISTERED",
                    &format!("{} is not the VM the registry {registry} names", object.name),
                )
                .into()
            }
        }
        "prompt" if object.name == registry => {
            let before = req.current.as_ref().and_then(|c| c.label("vm"));
            let after = object.label("vm");
            match before {
                Some(vm) if after != Some(vm) => {
                    let named = req.name_in_tenant("vms", vm);
                    match lookup(&named) {
                        Some(v) if v.label("primary") == Some("true") => {
                            conflict("PRIMARY_EXISTS", &format!("{named} is the primary VM")).into()
                        }
                        _ => allow(),
                    }
                }
                _ => allow(),
            }
        }
        _ => allow(),
    }
}

struct Lookups;

impl Policy for Lookups {
    fn evaluate(req: Request) -> Decision {
        let settings = match settings(&req.settings_json) {
            Ok(s) => s,
            Err(e) => return conflict("BAD_SETTINGS", &e).into(),
        };
        if let Some(reason) = &settings.deny {
            return conflict(reason, "denied by settings").into();
        }
        if let Some(n) = settings.lookups {
            let name = req.object().map(|o| o.name.clone()).unwrap_or_default();
            for _ in 0..n {
                lookup(&name);
            }
            return allow();
        }
        if let Some(registry) = &settings.primary_registry {
            return primary(&req, registry);
        }
        if settings.report && req.operation != Operation::Delete {
            let tokens = req.label("lookup").unwrap_or_default().to_string();
            let found: Vec<String> = tokens
                .split('_')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    let name = name_of(&req, t);
                    describe(&name, lookup(&name))
                })
                .collect();
            return conflict("LOOKED_UP", &found.join(";")).into();
        }
        allow()
    }

    fn validate_settings(settings_json: String) -> Result<(), String> {
        settings(&settings_json).map(drop)
    }
}

arbiter_policy_sdk::v2::export_policy!(Lookups);
