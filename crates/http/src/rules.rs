//! The HTTP routes of an API, read from the `google.api.http` annotations
//! of its descriptors: every annotated method (and each of its
//! `additional_bindings`) becomes a [`Route`]. Nothing here knows the
//! `arbiter.v1` methods by name.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

use crate::template::{Template, TemplateError};

/// Where the request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body (`GET`, `DELETE`).
    None,
    /// `body: "*"`: the whole request message.
    All,
    /// `body: "field"`: one top-level field of the request.
    Field(String),
}

/// One HTTP binding of a gRPC method.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path template.
    pub template: Template,
    /// Where the body goes.
    pub body: Body,
    /// The gRPC method.
    pub rpc: MethodDescriptor,
    /// The gRPC path, `/package.Service/Method`.
    pub grpc_path: String,
}

/// An annotation that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The descriptors do not define `google.api.http`.
    #[error("the descriptors do not include google/api/annotations.proto")]
    NoAnnotations,
    /// A template does not parse.
    #[error("{method}: {source}")]
    Template {
        /// The gRPC method.
        method: String,
        /// Why.
        source: TemplateError,
    },
    /// The rule names no pattern, or a body field the request lacks.
    #[error("{method}: {reason}")]
    Rule {
        /// The gRPC method.
        method: String,
        /// Why.
        reason: String,
    },
}

fn text(rule: &DynamicMessage, field: &str) -> String {
    rule.get_field_by_name(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The routes of every annotated method in `pool`, in declaration order.
pub fn routes(pool: &DescriptorPool) -> Result<Vec<Route>, RuleError> {
    let http = pool
        .get_extension_by_name("google.api.http")
        .ok_or(RuleError::NoAnnotations)?;
    let mut routes = Vec::new();
    for service in pool.services() {
        for rpc in service.methods() {
            let options = rpc.options();
            if !options.has_extension(&http) {
                continue;
            }
            if let Value::Message(rule) = options.get_extension(&http).as_ref() {
                add(&mut routes, &rpc, rule)?;
                if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
                    for binding in more.iter().filter_map(Value::as_message) {
                        add(&mut routes, &rpc, binding)?;
                    }
                }
            }
        }
    }
    Ok(routes)
}

fn add(routes: &mut Vec<Route>, rpc: &MethodDescriptor, rule: &DynamicMessage) -> Result<(), RuleError> {
    let name = rpc.full_name().to_string();
    let error = |reason: String| RuleError::Rule {
        method: name.clone(),
        reason,
    };
    let pattern = ["get", "put", "post", "delete", "patch"]
        .iter()
        .find_map(|verb| {
            let path = text(rule, verb);
            (!path.is_empty()).then(|| (Method::from_bytes(verb.to_uppercase().as_bytes()), path))
        })
        .or_else(|| {
            let custom = rule.get_field_by_name("custom")?;
            let custom = custom.as_message()?;
            let (kind, path) = (text(custom, "kind"), text(custom, "path"));
            (!kind.is_empty()).then(|| (Method::from_bytes(kind.as_bytes()), path))
        });
    let Some((Ok(method), path)) = pattern else {
        return Err(error("the http rule has no method and path".into()));
    };
    let template = Template::parse(&path).map_err(|source| RuleError::Template {
        method: name.clone(),
        source,
    })?;
    let body = match text(rule, "body").as_str() {
        "" => Body::None,
        "*" => Body::All,
        field => {
            if rpc.input().get_field_by_name(field).is_none() {
                return Err(error(format!(
                    "body field {field:?} is not in {}",
                    rpc.input().full_name()
                )));
            }
            Body::Field(field.to_string())
        }
    };
    routes.push(Route {
        method,
        template,
        body,
        grpc_path: format!("/{}/{}", rpc.parent_service().full_name(), rpc.name()),
        rpc: rpc.clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arbiter_method_has_a_route() {
        let pool = arbiter_api::json::pool().unwrap_or_else(|e| panic!("{e}"));
        let routes = routes(pool).unwrap_or_else(|e| panic!("{e}"));
        let methods: usize = pool.services().map(|s| s.methods().len()).sum();
        assert_eq!(routes.len(), methods);
        let start = routes
            .iter()
            .find(|r| r.grpc_path == "/arbiter.v1.VirtualMachines/StartVirtualMachine")
            .unwrap_or_else(|| panic!("no start route"));
        assert_eq!(start.method, Method::POST);
        assert_eq!(start.body, Body::All);
        assert_eq!(start.template.to_string(), "/v1/{name=tenants/*/vms/*}:start");
        let update = routes
            .iter()
            .find(|r| r.rpc.name() == "UpdateVirtualMachine")
            .unwrap_or_else(|| panic!("no update route"));
        assert_eq!(
            (update.method.clone(), update.body.clone()),
            (Method::PATCH, Body::Field("vm".into()))
        );
    }
}
