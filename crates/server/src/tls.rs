//! TLS on both listeners (ARCHITECTURE.md section 10), with rustls: the
//! server's certificate and key are re-read when their files change
//! (rotation without restart; open connections keep theirs), and with a
//! client CA every client must present a certificate it signed (mTLS),
//! whose subject CN or DNS names a tokens file's `[[identities]]` map to
//! a principal.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// How often the certificate files are checked for a change, at most.
const RECHECK: Duration = Duration::from_secs(1);
/// A client must finish its TLS handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
    /// The CA that signs client certificates (mTLS), PEM.
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a certificate chain and its key.
fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not PEM", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the TLS certificate file {} holds no certificate",
        cert.display()
    );
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read the TLS key {} (PEM, PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("the TLS key {} is not a usable private key", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().with_context(|| {
        format!(
            "the TLS key {} does not belong to the certificate {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(certified))
}

/// The certificate the server presents, re-read when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl Reloading {
    fn new(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let current = load(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(Loaded {
                current,
                stamps: (modified(cert), modified(key)),
                checked: Instant::now(),
            }),
        })
    }

    /// The current certificate, re-read first if the files changed. A
    /// rotation caught half-written (a new certificate, the old key) keeps
    /// the old pair until both files agree.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match load(&self.cert, &self.key) {
                    Ok(fresh) => {
                        tracing::info!(cert = %self.cert.display(), "serving the renewed TLS certificate");
                        state.current = fresh;
                        state.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "keeping the previous TLS certificate")
                    }
                }
            }
        }
        Arc::clone(&state.current)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS acceptors of the two listeners: one certificate, one client CA.
#[derive(Clone)]
pub struct Acceptors {
    /// gRPC: HTTP/2 only.
    pub grpc: TlsAcceptor,
    /// HTTP: HTTP/2 or HTTP/1.1.
    pub http: TlsAcceptor,
}

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptors").finish_non_exhaustive()
    }
}

impl Acceptors {
    /// Loads the files and builds both acceptors; errors name the file.
    pub fn new(files: &TlsFiles) -> anyhow::Result<Self> {
        let resolver = Arc::new(Reloading::new(&files.cert, &files.key)?);
        let config = |alpn: &[&[u8]]| -> anyhow::Result<TlsAcceptor> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("no TLS protocol version available")?;
            let builder = match &files.client_ca {
                Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self {
            grpc: config(&[b"h2"])?,
            http: config(&[b"h2", b"http/1.1"])?,
        })
    }
}

fn client_verifier(
    ca: &Path,
) -> anyhow::Result<Arc<dyn tokio_rustls::rustls::server::danger::ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the client CA {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("the client CA {} is not PEM", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("the client CA {} holds an unusable certificate", ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "the client CA file {} holds no certificate",
        ca.display()
    );
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .with_context(|| format!("cannot verify clients with the CA {}", ca.display()))
}

/// The names a client certificate stands for: its subject CN, then its
/// DNS names.
pub fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    names
}

/// A TLS handshake on an accepted connection, bounded in time.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// The accepted TCP connections of `incoming` after their TLS handshake;
/// each handshake runs on its own task, so a slow client holds up no one.
pub fn incoming(
    mut incoming: tonic::transport::server::TcpIncoming,
    acceptor: TlsAcceptor,
) -> impl futures::Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(accepted) = incoming.next().await {
            let tcp = match accepted {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(stream) = handshake(&acceptor, tcp).await {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
