//! The gRPC services of `arbiter.v1`. Every handler does the same four
//! steps — take the caller, convert the request, call the generic
//! [`Engine`], map the error — so one macro writes them for all kinds.

mod changes;
mod stats;
mod transactions;

use std::sync::Arc;

use arbiter_api::v1::{
    policies_server::Policies, prompts_server::Prompts, users_server::Users,
    virtual_machines_server::VirtualMachines, *,
};
use arbiter_core::names::{collection_of, tenant_of};
use arbiter_core::stats::Refusal;
use arbiter_core::warnings::collect;
use arbiter_core::{
    Caller, CreateRequest, DeleteRequest, Engine, Error, ListRequest, RequestId, Resource, TransitionRequest,
    UpdateRequest,
};
use arbiter_store::Store;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::limits::{Limiter, Permit};
use crate::status::to_status;

/// Tells the streams the API serves (watches) that the server is
/// shutting down, so that they end at once and their clients resume on
/// another replica instead of holding the shutdown up.
#[derive(Debug, Clone)]
pub struct Closing(Option<tokio::sync::watch::Receiver<bool>>);

impl Closing {
    /// A signal and its sender: send `true` to close.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Self(Some(rx)))
    }

    /// A signal that never comes.
    pub fn never() -> Self {
        Self(None)
    }

    /// Resolves when the server starts shutting down.
    pub async fn closed(self) {
        if let Some(mut rx) = self.0
            && rx.wait_for(|closing| *closing).await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// The API handlers over an engine.
#[derive(Debug)]
pub struct Api<S> {
    engine: Arc<Engine<S>>,
    limiter: Arc<Limiter>,
    closing: Closing,
}

impl<S> Api<S> {
    /// Handlers over `engine`, each request within `limiter`'s limits;
    /// their streams end when `closing` comes.
    pub fn new(engine: Arc<Engine<S>>, limiter: Arc<Limiter>, closing: Closing) -> Self {
        Self {
            engine,
            limiter,
            closing,
        }
    }

    /// Splits a request into the authenticated caller and the message,
    /// notes the tenant on the request span, and lets the request in
    /// within its tenant's limits (the permit is its place in flight).
    /// A request turned away by the limits is counted as refused.
    fn parts<T>(
        &self,
        request: Request<T>,
        resource: &str,
        asked: Asked,
    ) -> Result<(Caller, T, Permit), Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| to_status(&Error::Unauthenticated("missing credentials".into())))?;
        let tenant = tenant_of(resource);
        if !tenant.is_empty() {
            tracing::Span::current().record("tenant", tenant);
        }
        let permit = self
            .limiter
            .admit(&caller, tenant)
            .map_err(|e| self.refused(&caller, asked, resource, to_status(&e)))?;
        Ok((caller, request.into_inner(), permit))
    }

    /// The response with the warnings the request raised, or the error's
    /// status; refusals are counted (conflicts also by kind and reason in
    /// the metrics).
    fn reply<T>(
        &self,
        caller: &Caller,
        asked: Asked,
        resource: &str,
        (result, warnings): (Result<T, Error>, Vec<String>),
    ) -> Result<Response<T>, Status> {
        result
            .map(|message| {
                let mut response = Response::new(message);
                for warning in &warnings {
                    if let Some(value) = warning_value(warning) {
                        response
                            .metadata_mut()
                            .append(arbiter_api::WARNING_METADATA, value);
                    }
                }
                response
            })
            .map_err(|e| self.refused(caller, asked, resource, to_status(&e)))
    }

    /// Counts a refused request (the 4xx class) in the statistics.
    fn refused(&self, caller: &Caller, asked: Asked, resource: &str, status: Status) -> Status {
        let code = status.code();
        if !REFUSALS.contains(&code) {
            return status;
        }
        let reason = status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default();
        if matches!(
            code,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition
        ) {
            let labels = [("kind", asked.kind.to_string()), ("reason", reason.clone())];
            metrics::counter!("arbiter_conflicts_total", &labels).increment(1);
        }
        let method = method_name(asked.method);
        let collection = match asked.collection {
            "" => Some(collection_of(resource))
                .filter(|c| arbiter_core::changes::kind_of_collection(c).is_some())
                .unwrap_or_default(),
            known => known,
        };
        self.engine.conflict_counter().count(
            caller,
            &Refusal {
                tenant: tenant_of(resource),
                collection,
                method: &method,
                resource,
                reason: &reason,
                code: arbiter_http::problem::code_name(code),
            },
        );
        status
    }
}

/// The codes of refused requests (HTTP 4xx), counted in the statistics.
/// `UNAUTHENTICATED` is not: without a caller there is no tenant to trust.
const REFUSALS: [Code; 8] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
];

/// What a handler serves, for the statistics of refusals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    /// The handler's name, `update_virtual_machine`.
    pub method: &'static str,
    /// The kind's singular name, `vm`, as the metrics label it.
    pub kind: &'static str,
    /// The collection, `vms`; "" for requests of no one collection.
    pub collection: &'static str,
}

impl Asked {
    /// A handler of no one kind: the collection is the one the resource
    /// names, if it is one of the API's.
    pub(crate) fn any(method: &'static str) -> Self {
        Self {
            method,
            kind: "",
            collection: "",
        }
    }

    fn of<R: Resource>(method: &'static str) -> Self {
        Self {
            method,
            kind: R::KIND.singular,
            collection: R::KIND.collection,
        }
    }
}

/// `update_virtual_machine` as its RPC is named, `UpdateVirtualMachine`.
fn method_name(handler: &str) -> String {
    handler
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
            limiter: Arc::clone(&self.limiter),
            closing: self.closing.clone(),
        }
    }
}

/// Most bytes of one warning in metadata.
const MAX_WARNING_BYTES: usize = 1024;

/// A warning as printable ASCII, which gRPC metadata requires: other
/// characters become `?`.
fn warning_value(text: &str) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    let ascii: String = text
        .chars()
        .take(MAX_WARNING_BYTES)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    ascii.parse().ok()
}

fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

macro_rules! resource_service {
    (
        $service:ident for $ty:ty, field $field:ident, id $id:ident, items $items:ident,
        engine ($create_with:ident, $update_with:ident);
        create $create:ident($create_req:ty);
        get $get:ident($get_req:ty);
        list $list:ident($list_req:ty) -> $list_resp:ident;
        update $update:ident($update_req:ty);
        delete $delete:ident($delete_req:ty);
        $(transition $verb_fn:ident($verb_req:ty) = $verb:literal;)*
        $(more { $($more:tt)* })?
    ) => {
        #[tonic::async_trait]
        impl<S: Store> $service for Api<S> {
            async fn $create(&self, request: Request<$create_req>) -> Result<Response<$ty>, Status> {
                let parent = request.get_ref().parent.clone();
                let asked = Asked::of::<$ty>(stringify!($create));
                let (caller, req, _permit) = self.parts(request, &parent, asked)?;
                // The resource a refusal is counted on: the one to be
                // created, or the parent when the server picks the id.
                let target = match req.$id.as_str() {
                    "" => parent.clone(),
                    id => format!("{parent}/{}/{id}", asked.collection),
                };
                let request_id = RequestId::of(req.request_id.clone(), stringify!($create), &req);
                let create = CreateRequest {
                    parent: req.parent,
                    id: req.$id,
                    resource: req.$field.unwrap_or_default(),
                    request_id,
                    validate_only: req.validate_only,
                };
                self.reply(&caller, asked, &target, collect(self.engine.$create_with(&caller, create)).await)
            }

            async fn $get(&self, request: Request<$get_req>) -> Result<Response<$ty>, Status> {
                let name = request.get_ref().name.clone();
                let asked = Asked::of::<$ty>(stringify!($get));
                let (caller, _, _permit) = self.parts(request, &name, asked)?;
                self.reply(&caller, asked, &name, collect(self.engine.get(&caller, &name)).await)
            }

            async fn $list(&self, request: Request<$list_req>) -> Result<Response<$list_resp>, Status> {
                let parent = request.get_ref().parent.clone();
                let asked = Asked::of::<$ty>(stringify!($list));
                let (caller, req, _permit) = self.parts(request, &parent, asked)?;
                let list = ListRequest {
                    parent: req.parent,
                    page_size: req.page_size,
                    page_token: req.page_token,
                    filter: req.filter,
                };
                let (page, warnings) = collect(self.engine.list::<$ty>(&caller, list)).await;
                self.reply(&caller, asked, &parent, (page.map(|p| $list_resp { $items: p.items, next_page_token: p.next_page_token }), warnings))
            }

            async fn $update(&self, request: Request<$update_req>) -> Result<Response<$ty>, Status> {
                let name = request.get_ref().$field.as_ref().map(|r| r.name.clone()).unwrap_or_default();
                let asked = Asked::of::<$ty>(stringify!($update));
                let (caller, req, _permit) = self.parts(request, &name, asked)?;
                let request_id = RequestId::of(req.request_id.clone(), stringify!($update), &req);
                let update = UpdateRequest {
                    resource: req.$field.unwrap_or_default(),
                    update_mask: mask_paths(req.update_mask),
                    request_id,
                    validate_only: req.validate_only,
                };
                self.reply(&caller, asked, &name, collect(self.engine.$update_with(&caller, update)).await)
            }

            async fn $delete(&self, request: Request<$delete_req>) -> Result<Response<()>, Status> {
                let name = request.get_ref().name.clone();
                let asked = Asked::of::<$ty>(stringify!($delete));
                let (caller, req, _permit) = self.parts(request, &name, asked)?;
                let request_id = RequestId::of(req.request_id.clone(), stringify!($delete), &req);
                let delete = DeleteRequest {
                    name: req.name,
                    etag: req.etag,
                    request_id,
                    validate_only: req.validate_only,
                };
                self.reply(&caller, asked, &name, collect(self.engine.delete::<$ty>(&caller, delete)).await)
            }

            $(
            async fn $verb_fn(&self, request: Request<$verb_req>) -> Result<Response<$ty>, Status> {
                let name = request.get_ref().name.clone();
                let asked = Asked::of::<$ty>(stringify!($verb_fn));
                let (caller, req, _permit) = self.parts(request, &name, asked)?;
                let request_id = RequestId::of(req.request_id.clone(), stringify!($verb_fn), &req);
                let transition = TransitionRequest { name: req.name, etag: req.etag, request_id, verb: $verb };
                self.reply(&caller, asked, &name, collect(self.engine.transition(&caller, transition)).await)
            }
            )*

            $($($more)*)?
        }
    };
}

resource_service! {
    VirtualMachines for VirtualMachine, field vm, id vm_id, items vms, engine (create, update);
    create create_virtual_machine(CreateVirtualMachineRequest);
    get get_virtual_machine(GetVirtualMachineRequest);
    list list_virtual_machines(ListVirtualMachinesRequest) -> ListVirtualMachinesResponse;
    update update_virtual_machine(UpdateVirtualMachineRequest);
    delete delete_virtual_machine(DeleteVirtualMachineRequest);
    transition start_virtual_machine(StartVirtualMachineRequest) = "start";
    transition stop_virtual_machine(StopVirtualMachineRequest) = "stop";
}

resource_service! {
    Users for User, field user, id user_id, items users, engine (create, update);
    create create_user(CreateUserRequest);
    get get_user(GetUserRequest);
    list list_users(ListUsersRequest) -> ListUsersResponse;
    update update_user(UpdateUserRequest);
    delete delete_user(DeleteUserRequest);
    transition activate_user(ActivateUserRequest) = "activate";
    transition suspend_user(SuspendUserRequest) = "suspend";
}

resource_service! {
    Prompts for Prompt, field prompt, id prompt_id, items prompts, engine (create, update);
    create create_prompt(CreatePromptRequest);
    get get_prompt(GetPromptRequest);
    list list_prompts(ListPromptsRequest) -> ListPromptsResponse;
    update update_prompt(UpdatePromptRequest);
    delete delete_prompt(DeletePromptRequest);
    transition publish_prompt(PublishPromptRequest) = "publish";
    transition archive_prompt(ArchivePromptRequest) = "archive";
}

resource_service! {
    Policies for Policy, field policy, id policy_id, items policies, engine (create_policy, update_policy);
    create create_policy(CreatePolicyRequest);
    get get_policy(GetPolicyRequest);
    list list_policies(ListPoliciesRequest) -> ListPoliciesResponse;
    update update_policy(UpdatePolicyRequest);
    delete delete_policy(DeletePolicyRequest);
    more {
        async fn preview_policy(
            &self,
            request: Request<PreviewPolicyRequest>,
        ) -> Result<Response<PreviewPolicyResponse>, Status> {
            let parent = request.get_ref().parent.clone();
            let asked = Asked::of::<Policy>("preview_policy");
            let (caller, req, _permit) = self.parts(request, &parent, asked)?;
            self.reply(&caller, asked, &parent, collect(self.engine.preview_policy(&caller, req)).await)
        }
    }
}
