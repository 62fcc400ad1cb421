//! Arbiter's domain core: resource kinds, validation, lifecycles and the one
//! generic apply pipeline that serves every kind.
//!
//! # Layout
//! - [`kind`]: the [`Resource`] trait and the [`Kind`] table that describe a
//!   kind as data (fields, lifecycle, unique fields); [`kinds`] holds the
//!   three kinds of `arbiter.v1`.
//! - [`engine`]: [`Engine`], the pipeline behind every create, get, list,
//!   update, delete, state transition and transaction, over any
//!   [`arbiter_store::Store`]; [`requests`]: what it is asked.
//! - [`error`]: [`Error`], the domain error that the server maps to
//!   `google.rpc.Status` in one place.
//! - [`policy`]: tenant policies in the pipeline: what a policy sees and
//!   answers, the [`PolicyRuntime`] that runs modules, binding, modes and
//!   failure policies; [`policy_admin`]: module upload around policy CRUD.
//! - [`auth`]: callers, roles and tenant access.
//! - [`stats`]: statistics of refused requests, kept in the store.
//! - [`names`], [`validate`], [`mask`], [`filter`], [`page`]: request parsing.

mod access;
pub mod auth;
pub mod changes;
mod commit;
mod consistency;
mod decide;
pub mod engine;
pub mod error;
pub mod filter;
mod follow;
mod idempotency;
pub mod kind;
pub mod kinds;
mod lookup;
pub mod mask;
pub mod names;
pub mod page;
pub mod policy;
pub mod policy_admin;
pub mod preview;
pub mod quota;
pub mod requests;
mod stage;
pub mod stats;
mod transaction;
pub mod validate;
mod violation;
pub mod warnings;
mod write;

pub use auth::{Access, Caller, Role};
pub use changes::{ChangeFeed, RevisionsPage, WatchRequest};
pub use engine::{Engine, EngineConfig};
pub use error::{Current, Error, FieldViolation};
pub use kind::{Kind, Resource};
pub use policy::{
    Denial, DenialKind, Fault, FaultKind, Input, Limits, LoadError, Object, Operation, Outcome, PolicyConfig,
    PolicyRuntime, Verdict,
};
pub use quota::{QuotaRule, Quotas};
pub use requests::{
    CreateRequest, DeleteRequest, ListPage, ListRequest, RequestId, TransitionRequest, UpdateRequest,
};
