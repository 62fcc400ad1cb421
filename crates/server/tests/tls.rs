//! TLS and mTLS on both listeners (ARCHITECTURE.md section 10), with a CA
//! and certificates made by the test: plaintext refused, TLS with the
//! right CA served over gRPC and HTTPS, mTLS without a client certificate
//! refused, a mapped certificate authenticates without a token (a token
//! wins over it), and a renewed certificate is served without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbiter_api::v1::ListVirtualMachinesRequest;
use arbiter_api::v1::virtual_machines_client::VirtualMachinesClient;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate with subject CN `cn` and the DNS names `dns`.
    fn issue(&self, cn: &str, dns: &[&str]) -> Pem {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

const IDENTITIES: &str = r#"
[[identities]]
common_name = "ci-bot"
principal = "ci-bot"
tenant = "acme"
role = "viewer"
"#;

/// A server with TLS from `server`, and mTLS with `client_ca` when given.
async fn start(dir: &Path, server: &Pem, client_ca: Option<&str>) -> arbiter_server::Running {
    let mut config = test_config(dir);
    let tokens = config.tokens.clone().unwrap();
    let text = std::fs::read_to_string(&tokens).unwrap();
    std::fs::write(&tokens, format!("{text}{IDENTITIES}")).unwrap();
    std::fs::write(dir.join("server.crt"), &server.cert).unwrap();
    std::fs::write(dir.join("server.key"), &server.key).unwrap();
    config.tls_cert = Some(dir.join("server.crt"));
    config.tls_key = Some(dir.join("server.key"));
    if let Some(ca) = client_ca {
        std::fs::write(dir.join("clients.crt"), ca).unwrap();
        config.tls_client_ca = Some(dir.join("clients.crt"));
    }
    arbiter_server::start(config).await.unwrap()
}

async fn grpc(addr: SocketAddr, ca: &str, client: Option<&Pem>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn list(channel: Channel, token: Option<&str>) -> Result<usize, tonic::Status> {
    let bearer = Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()));
    VirtualMachinesClient::with_interceptor(channel, bearer)
        .list_virtual_machines(ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().vms.len())
}

fn client_config(ca: &str, client: Option<&Pem>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// One HTTPS request; the status code, and the server's certificate.
async fn https(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{auth}connection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Ok((status, served))
}

#[tokio::test]
async fn tls_serves_both_listeners_and_renewed_certificates_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let first = ca.issue("arbiter", &["localhost"]);
    let running = start(dir.path(), &first, None).await;

    // Plaintext is refused on both listeners.
    let plain = Endpoint::from_shared(format!("http://{}", running.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let status = list(channel, Some("acme-editor")).await.unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }
    let plain_http = reqwest::Client::new()
        .get(format!("http://{}/healthz", running.http_addr))
        .send()
        .await;
    assert!(plain_http.is_err(), "{plain_http:?}");

    // TLS with the right CA works for gRPC and HTTP.
    let channel = grpc(running.grpc_addr, &ca.pem(), None).await.unwrap();
    assert_eq!(list(channel.clone(), Some("acme-editor")).await.unwrap(), 0);
    let (status, served) = https(
        running.http_addr,
        client_config(&ca.pem(), None),
        "/v1/tenants/acme/vms",
        Some("acme-editor"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let first_der = CertificateDer::from_pem_slice(first.cert.as_bytes()).unwrap();
    assert_eq!(served, first_der.to_vec());
    // A client that does not trust the server's CA does not connect.
    let stranger = Ca::new("another CA");
    assert!(grpc(running.grpc_addr, &stranger.pem(), None).await.is_err());

    // Renew: new files in place, picked up by new connections; an open
    // connection keeps working.
    let second = ca.issue("arbiter", &["localhost"]);
    std::fs::write(dir.path().join("server.crt"), &second.cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &second.key).unwrap();
    let second_der = CertificateDer::from_pem_slice(second.cert.as_bytes()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, served) = https(
            running.http_addr,
            client_config(&ca.pem(), None),
            "/healthz",
            None,
        )
        .await
        .unwrap();
        if served == second_der.to_vec() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let renewed = grpc(running.grpc_addr, &ca.pem(), None).await.unwrap();
    assert_eq!(list(renewed, Some("acme-editor")).await.unwrap(), 0);
    assert_eq!(list(channel, Some("acme-editor")).await.unwrap(), 0);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn mtls_needs_a_client_certificate_and_maps_it_to_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let running = start(
        dir.path(),
        &ca.issue("arbiter", &["localhost"]),
        Some(&clients.pem()),
    )
    .await;

    // Without a client certificate: no connection, on either listener.
    let refused = match grpc(running.grpc_addr, &ca.pem(), None).await {
        Err(_) => true,
        Ok(channel) => list(channel, Some("acme-editor")).await.is_err(),
    };
    assert!(refused, "gRPC without a client certificate is refused");
    assert!(
        https(
            running.http_addr,
            client_config(&ca.pem(), None),
            "/healthz",
            None
        )
        .await
        .is_err(),
        "HTTPS without a client certificate is refused"
    );
    // A certificate of another CA is refused too.
    let forged = Ca::new("forger").issue("ci-bot", &[]);
    let refused = match grpc(running.grpc_addr, &ca.pem(), Some(&forged)).await {
        Err(_) => true,
        Ok(channel) => list(channel, None).await.is_err(),
    };
    assert!(refused, "a certificate the client CA did not sign is refused");

    // A mapped certificate authenticates without a token, as its principal
    // (a viewer: it may list, not create).
    let bot = clients.issue("ci-bot", &[]);
    let channel = grpc(running.grpc_addr, &ca.pem(), Some(&bot)).await.unwrap();
    assert_eq!(list(channel.clone(), None).await.unwrap(), 0);
    let status = VirtualMachinesClient::new(channel.clone())
        .create_virtual_machine(create_vm("by-bot"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ROLE_FORBIDDEN", "{status:?}");
    assert!(status.message().contains("ci-bot"), "{}", status.message());
    // A token wins over the certificate.
    let mut vms =
        VirtualMachinesClient::with_interceptor(channel, Bearer(Some("Bearer acme-editor".parse().unwrap())));
    let created = vms
        .create_virtual_machine(create_vm("by-alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.created_by, "alice");
    // The same over HTTPS, mapped by a DNS name this time.
    let by_dns = clients.issue("unmapped-cn", &["ci-bot"]);
    let (status, _) = https(
        running.http_addr,
        client_config(&ca.pem(), Some(&by_dns)),
        "/v1/tenants/acme/vms",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // A certificate of the right CA that no identity maps needs a token.
    let nobody = clients.issue("nobody", &[]);
    let channel = grpc(running.grpc_addr, &ca.pem(), Some(&nobody)).await.unwrap();
    let status = list(channel.clone(), None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("nobody"), "{}", status.message());
    assert_eq!(list(channel, Some("acme-viewer")).await.unwrap(), 1);
    let (status, _) = https(
        running.http_addr,
        client_config(&ca.pem(), Some(&nobody)),
        "/v1/tenants/acme/vms",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_and_the_cli_speak_tls_and_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("arbiter test ca");
    let server = ca.issue("localhost", &["localhost"]);
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();

    // TLS with a token: the library with the CA, and the CLI with --ca.
    let running = start(dir.path(), &server, None).await;
    let url = format!("https://localhost:{}", running.grpc_addr.port());
    let options = arbiter_client::Options {
        token: Some("acme-editor".into()),
        ca_pem: Some(ca.pem().into_bytes()),
        ..Default::default()
    };
    let client = arbiter_client::Client::connect_with(&url, options).await.unwrap();
    client
        .vms()
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .args([
            "vm",
            "get",
            "tenants/acme/vms/web-1",
            "-o",
            "json",
            "--server",
            &url,
            "--ca",
        ])
        .arg(dir.path().join("ca.pem"))
        .env("ARBITER_TOKEN", "acme-editor")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without the CA the server's certificate is not trusted.
    let untrusted = arbiter_client::Client::connect(&url, Some("acme-editor")).await;
    assert!(
        matches!(untrusted, Err(arbiter_client::Error::Transport(_))),
        "{untrusted:?}"
    );
    running.stop().await.unwrap();

    // mTLS: the client certificate alone names the caller.
    let clients = Ca::new("arbiter test clients");
    let bot = clients.issue("ci-bot", &[]);
    let running = start(dir.path(), &server, Some(&clients.pem())).await;
    let url = format!("https://localhost:{}", running.grpc_addr.port());
    let options = arbiter_client::Options {
        ca_pem: Some(ca.pem().into_bytes()),
        identity: Some((bot.cert.clone().into_bytes(), bot.key.clone().into_bytes())),
        ..Default::default()
    };
    let client = arbiter_client::Client::connect_with(&url, options).await.unwrap();
    let vm: arbiter_api::v1::VirtualMachine = client.get("tenants/acme/vms/web-1").await.unwrap();
    assert_eq!(vm.name, "tenants/acme/vms/web-1");
    running.stop().await.unwrap();
}
