//! The requests the engine serves, as the server hands them over: each
//! carries its idempotency key and the parsed fields of its API message.

use sha2::{Digest, Sha256};

/// A client's request id with a fingerprint of the request it came with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestId {
    /// The id as sent; empty when the client sent none.
    pub id: String,
    /// Digest of the method and the request.
    pub fingerprint: Vec<u8>,
}

impl RequestId {
    /// The id of `request` sent to `method`. Only a request with an id can
    /// be replayed, so only then is it encoded and fingerprinted.
    pub fn of(id: impl Into<String>, method: &str, request: &impl prost::Message) -> Self {
        let id = id.into();
        if id.is_empty() {
            return Self::default();
        }
        Self::new(id, method, &request.encode_to_vec())
    }

    /// Fingerprints `request` (its encoding) sent to `method`.
    pub fn new(id: impl Into<String>, method: &str, request: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(method.as_bytes());
        digest.update([0]);
        digest.update(request);
        Self {
            id: id.into(),
            fingerprint: digest.finalize().to_vec(),
        }
    }
}

/// A create (AIP-133).
#[derive(Debug, Clone)]
pub struct CreateRequest<R> {
    /// `tenants/{tenant}`.
    pub parent: String,
    /// The new resource's id.
    pub id: String,
    /// The resource; output-only fields are ignored.
    pub resource: R,
    /// Idempotency.
    pub request_id: RequestId,
    /// Check only.
    pub validate_only: bool,
}

/// An update (AIP-134).
#[derive(Debug, Clone)]
pub struct UpdateRequest<R> {
    /// The resource with its name, new values and optional etag.
    pub resource: R,
    /// The mask paths.
    pub update_mask: Vec<String>,
    /// Idempotency.
    pub request_id: RequestId,
    /// Check only.
    pub validate_only: bool,
}

/// A delete (AIP-135).
#[derive(Debug, Clone)]
pub struct DeleteRequest {
    /// The resource name.
    pub name: String,
    /// Optional etag precondition.
    pub etag: String,
    /// Idempotency.
    pub request_id: RequestId,
    /// Check only.
    pub validate_only: bool,
}

/// A state-changing custom method (AIP-136).
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    /// The resource name.
    pub name: String,
    /// Optional etag precondition.
    pub etag: String,
    /// Idempotency.
    pub request_id: RequestId,
    /// The custom verb, e.g. `start`.
    pub verb: &'static str,
}

/// A list (AIP-132).
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// `tenants/{tenant}`.
    pub parent: String,
    /// Requested page size.
    pub page_size: i32,
    /// Token of the previous page.
    pub page_token: String,
    /// Filter expression.
    pub filter: String,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<R> {
    /// The resources in name order.
    pub items: Vec<R>,
    /// Token of the next page, empty on the last.
    pub next_page_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_with_an_id_is_fingerprinted() {
        let request = prost_types::Duration { seconds: 7, nanos: 0 };
        assert_eq!(RequestId::of("", "create", &request), RequestId::default());
        let with_id = RequestId::of("r-1", "create", &request);
        assert_eq!(
            with_id,
            RequestId::new("r-1", "create", &prost::Message::encode_to_vec(&request))
        );
        assert_ne!(
            with_id.fingerprint,
            RequestId::of("r-1", "update", &request).fingerprint
        );
    }
}
