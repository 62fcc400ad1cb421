//! `arbiter-client`: the Rust client of Arbiter's gRPC API.
//!
//! - [`Client::connect`] with a URL (`http://` or `https://`), a bearer
//!   token and, for TLS, optional CA and client certificates ([`Options`]).
//! - Typed clients for every service ([`Client::vms`], [`Client::users`],
//!   ...), whose failures decode into one [`Error`] with a variant per
//!   reason of the API, carrying what conflicted.
//! - [`Client::update_with`]: read, change, write with the etag, and on
//!   `ETAG_MISMATCH` read again and re-apply, with jittered exponential
//!   backoff; waits as `RetryInfo` asks when rate limited.
//! - [`merge`]: the fields two versions differ in, and the merge of an
//!   edit onto a newer version when the edits do not overlap.
//! - [`Client::watch`]: a stream of changes that resumes by itself after a
//!   disconnect and starts again from a fresh listing when its revision was
//!   compacted.
//!
//! ```no_run
//! # async fn run() -> Result<(), arbiter_client::Error> {
//! use arbiter_client::{Client, v1::VirtualMachine};
//!
//! let client = Client::connect("http://127.0.0.1:50051", Some("dev-token")).await?;
//! let vm: VirtualMachine = client
//!     .update_with("tenants/acme/vms/web-1", &["labels"], |vm: &mut VirtualMachine| {
//!         vm.labels.insert("owner".into(), "ops".into());
//!     })
//!     .await?;
//! println!("{} is at {}", vm.name, vm.etag);
//! # Ok(())
//! # }
//! ```

mod error;
pub mod merge;
mod raw;
mod resource;
mod retry;
mod watch;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use arbiter_api::v1;
use arbiter_api::v1::{
    changes_client::ChangesClient, policies_client::PoliciesClient, prompts_client::PromptsClient,
    transactions_client::TransactionsClient, users_client::UsersClient,
    virtual_machines_client::VirtualMachinesClient,
};
pub use error::{Class, Current, Error, Info, Violation};
pub use raw::RawReply;
pub use resource::Resource;
pub use retry::Backoff;
pub use watch::Watch;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the client's token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The bearer token.
    pub token: Option<String>,
    /// PEM of the CA that signed the server's certificate, for `https://`
    /// (without it, the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key of the client, for servers that require
    /// client certificates (mTLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// How [`Client::update_with`] retries.
    pub backoff: Backoff,
}

/// A connection to an Arbiter server.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    bearer: Bearer,
    backoff: Backoff,
}

impl Client {
    /// Connects to `url` (`http://host:port`, or `https://` for TLS) with
    /// an optional bearer token.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, Error> {
        let options = Options {
            token: token.map(str::to_string),
            ..Options::default()
        };
        Self::connect_with(url, options).await
    }

    /// Connects to `url` with `options`.
    pub async fn connect_with(url: &str, options: Options) -> Result<Self, Error> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::Transport(format!("{url:?} is not a server URL: {e}")))?;
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &options.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &options.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        Self::from_channel(channel, options)
    }

    /// A client over a channel made elsewhere.
    pub fn from_channel(channel: Channel, options: Options) -> Result<Self, Error> {
        let bearer = match options.token {
            Some(token) => {
                Bearer(Some(format!("Bearer {token}").parse().map_err(|_| {
                    Error::Transport("the token is not printable ASCII".into())
                })?))
            }
            None => Bearer(None),
        };
        Ok(Self {
            channel,
            bearer,
            backoff: options.backoff,
        })
    }

    /// The channel underneath, for services outside the API (health).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The `VirtualMachines` service.
    pub fn vms(&self) -> VirtualMachinesClient<Authed> {
        VirtualMachinesClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The `Users` service.
    pub fn users(&self) -> UsersClient<Authed> {
        UsersClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The `Prompts` service.
    pub fn prompts(&self) -> PromptsClient<Authed> {
        PromptsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The `Policies` service (uploads up to 64 MiB).
    pub fn policies(&self) -> PoliciesClient<Authed> {
        PoliciesClient::with_interceptor(self.channel.clone(), self.bearer.clone())
            .max_encoding_message_size(64 << 20)
    }

    /// The `Changes` service.
    pub fn changes(&self) -> ChangesClient<Authed> {
        ChangesClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// The `Transactions` service.
    pub fn transactions(&self) -> TransactionsClient<Authed> {
        TransactionsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    /// Reads one resource of kind `R`.
    pub async fn get<R: Resource>(&self, name: &str) -> Result<R, Error> {
        R::get(self, name).await
    }

    /// Commits `operations` in `parent` as one transaction.
    pub async fn commit(
        &self,
        parent: &str,
        operations: Vec<v1::operation::Operation>,
    ) -> Result<v1::CommitTransactionResponse, Error> {
        let request = v1::CommitTransactionRequest {
            parent: parent.to_string(),
            operations: operations
                .into_iter()
                .map(|op| v1::Operation { operation: Some(op) })
                .collect(),
            ..Default::default()
        };
        Ok(self
            .transactions()
            .commit_transaction(request)
            .await?
            .into_inner())
    }
}
