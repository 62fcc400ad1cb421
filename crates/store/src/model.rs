//! Records the engines persist besides the objects themselves, encoded as
//! protobuf so that their layout can grow compatibly.

/// One entry of the change log: what a commit did to one object, for
/// watch, history and audit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangeEvent {
    /// The revision the mutation was assigned.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// The object's key.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    /// The value before, if the object existed.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub before: Option<Vec<u8>>,
    /// The value after, unless the object was deleted.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub after: Option<Vec<u8>>,
    /// The principal that made the change.
    #[prost(string, tag = "5")]
    pub principal: String,
    /// The client's request id, if any.
    #[prost(string, tag = "6")]
    pub request_id: String,
    /// When, in Unix milliseconds.
    #[prost(int64, tag = "7")]
    pub time_unix_ms: i64,
    /// What the change was ("create", "update", "start", ...).
    #[prost(string, tag = "8")]
    pub operation: String,
}

/// The remembered outcome of a mutating request (AIP-155).
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdempotencyRecord {
    /// Digest of the first request.
    #[prost(bytes = "vec", tag = "1")]
    pub fingerprint: Vec<u8>,
    /// The revision its mutation was assigned.
    #[prost(uint64, tag = "2")]
    pub revision: u64,
    /// The value it wrote; empty for a delete.
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
    /// When the record may be forgotten, in Unix milliseconds.
    #[prost(int64, tag = "4")]
    pub expires_at_ms: i64,
}
