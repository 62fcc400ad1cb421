//! Hostile traffic against a real server: bodies sent without a token,
//! bodies larger than the caller may send, and made-up methods and paths
//! meant to blow up `/metrics`. Every test is bounded in time and count and
//! talks only to 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use common::process::Process;
use common::{TestServer, metrics_text, reason};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A 90 MB JSON body (an array of small numbers, the costliest JSON to
/// parse for its size) declared on a policy route, the route with the
/// largest body limit.
const BIG: usize = 90 * 1000 * 1000;

fn headers(path: &str, token: Option<&str>, length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n"
    )
}

/// The status code of the first response on `stream`.
async fn status_of(stream: &mut (impl AsyncReadExt + Unpin)) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {line:?}"))
}

/// Sends the headers of a `BIG` body, then the body, while reading the
/// answer: returns the status as soon as it comes, whether or not the
/// server took the whole body.
async fn send_big(addr: SocketAddr, token: Option<&str>) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(headers("/v1/tenants/acme/policies", token, BIG).as_bytes())
        .await
        .unwrap();
    let write = tokio::spawn(async move {
        let mut chunk = b"[".to_vec();
        chunk.extend(std::iter::repeat_n(&b"1,"[..], 32 * 1024).flatten());
        let mut sent = 0;
        while sent + chunk.len() < BIG {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
            chunk.remove(0);
            chunk.push(b'1');
        }
    });
    let status = status_of(&mut reader).await;
    write.abort();
    status
}

/// Sends only the headers of a policy upload declaring `length` bytes:
/// the status must come within 10 s, without the body.
async fn answer_to_headers(addr: SocketAddr, token: Option<&str>, length: usize) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(headers("/v1/tenants/acme/policies", token, length).as_bytes())
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), status_of(&mut stream))
        .await
        .expect("the server answers on the headers, without waiting for the body");
    (status, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_bodies_are_refused_before_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Process::start(dir.path());
    server.wait_serving().await;
    let addr = server.http_addr;

    // Only the headers: the answer cannot wait for a body.
    let (status, _) = answer_to_headers(addr, None, BIG).await;
    assert_eq!(status, 401);

    // Twenty at once, each streaming its 90 MB: refused, and the server's
    // memory stays small while they push.
    let before = server.rss_bytes();
    let senders = futures::future::join_all((0..20).map(|i| {
        let token = (i % 2 == 0).then_some("not-a-token");
        tokio::spawn(send_big(addr, token))
    }));
    let mut peak = before;
    let mut senders = std::pin::pin!(senders);
    let statuses = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            tokio::select! {
                done = &mut senders => break done,
                () = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(server.rss_bytes()),
            }
        }
    })
    .await
    .expect("twenty refused uploads finish within two minutes");
    for status in statuses {
        assert_eq!(status.unwrap(), 401);
    }
    peak = peak.max(server.rss_bytes());
    assert!(
        peak < 300 << 20,
        "resident memory peaked at {} MiB (started at {} MiB)",
        peak >> 20,
        before >> 20
    );
}

#[tokio::test]
async fn only_admins_send_upload_sized_bodies() {
    let server = TestServer::start().await;
    let addr: SocketAddr = server.http_base().trim_start_matches("http://").parse().unwrap();
    // An editor may not upload policies at all; it may not make the server
    // read an upload-sized body either: 2 MiB is over the ordinary limit.
    let (status, mut stream) = answer_to_headers(addr, Some("acme-editor"), 2 << 20).await;
    assert_eq!(status, 413);
    let mut rest = vec![0u8; 4096];
    let n = stream.read(&mut rest).await.unwrap();
    let text = String::from_utf8_lossy(&rest[..n]);
    assert!(text.contains("admin"), "the problem says who may upload: {text}");
    server.stop().await;
}

/// The `/metrics` lines, without comments.
async fn series(base: &str) -> Vec<String> {
    metrics_text(base)
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_string()))
        .collect()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let server = TestServer::start().await;
    let base = server.http_base();
    let client = reqwest::Client::new();
    let grpc = |path: String| {
        let channel = server.channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let path = http::uri::PathAndQuery::from_str(&path).unwrap();
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let result = grpc.unary(tonic::Request::new(()), path, codec).await;
            assert_eq!(result.unwrap_err().code(), tonic::Code::Unimplemented);
        }
    };
    let http = |method: String| {
        let (client, url) = (client.clone(), format!("{base}/v1/tenants/acme/vms"));
        async move {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = client.request(method, url).send().await.unwrap();
            assert!(response.status().is_client_error());
        }
    };
    // A few first, so that the one `unknown` series exists.
    for i in 0..3 {
        grpc(format!("/grpc.health.v1.Warm{i}/Check")).await;
        http(format!("WARM{i}")).await;
    }
    let requests = (0..10_000).map(|i| {
        let grpc = grpc(format!("/grpc.health.v1.Made{i}/Up"));
        let http = http(format!("MADEUP{i}"));
        async move {
            grpc.await;
            http.await;
        }
    });
    futures::stream::iter(requests)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    // Other tests of this binary add series of their own at the same time:
    // what counts is that no made-up value became a label, and that the
    // series of unknown methods are a fixed handful however many came.
    let after = series(&base).await;
    let leaked: Vec<&String> = after
        .iter()
        .filter(|s| ["Made", "MADEUP", "Warm", "WARM"].iter().any(|m| s.contains(m)))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} series with made-up labels, e.g. {:?}",
        leaked.len(),
        leaked.first()
    );
    let unknown = after
        .iter()
        .filter(|s| s.contains("method=\"unknown\"") || s.contains("method=\"other\""))
        .count();
    assert!(unknown > 0, "unknown methods are counted");
    assert!(unknown <= 60, "{unknown} series for unknown methods");
    server.stop().await;
}

/// How many first attempts the client gave up on.
static CANCELLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many times a first attempt lets the runtime run its other tasks
/// (the in-process server's) before the client gives up on it.
static PATIENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(8);

/// Sends `call` and gives up on it after [`PATIENCE`] turns of the runtime,
/// so that the client gives up while the server is still at work, then
/// retries it at once until it is answered with something other than
/// `REQUEST_IN_PROGRESS`. The patience adapts, a quarter shorter after
/// an attempt that was answered and one turn longer after one cut off, so
/// that most first attempts are cut off on a fast host as on a slow one
/// (a 1 ms timer cut off only 72 of 300 on a fast host).
async fn cancel_then_retry<T, F, Fut>(call: F) -> Result<T, tonic::Status>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    use std::sync::atomic::Ordering::Relaxed;
    let patience = PATIENCE.load(Relaxed);
    let give_up = async {
        for _ in 0..patience {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        _ = call() => PATIENCE.store((patience - patience / 4).max(1), Relaxed),
        () = give_up => {
            CANCELLED.fetch_add(1, Relaxed);
            PATIENCE.store(patience + 1, Relaxed);
        }
    }
    loop {
        match call().await {
            Err(status) if reason(&status) == "REQUEST_IN_PROGRESS" => tokio::task::yield_now().await,
            other => return other.map(tonic::Response::into_inner),
        }
    }
}

#[tokio::test]
async fn a_cancelled_request_retried_at_once_runs_once() {
    let server = TestServer::start().await;
    let vms = server.vms("acme-editor");
    for i in 0..200 {
        let mut req = common::create_vm(&format!("c-{i}"));
        req.request_id = uuid::Uuid::new_v4().to_string();
        let created = cancel_then_retry(|| {
            let (mut vms, req) = (vms.clone(), req.clone());
            async move { vms.create_virtual_machine(req).await }
        })
        .await
        .unwrap_or_else(|s| {
            panic!(
                "create {i} answered its own retry with {}: {}",
                reason(&s),
                s.message()
            )
        });
        assert_eq!(created.name, format!("tenants/acme/vms/c-{i}"));
    }
    // Updates without an etag: each applied once, so the history of the VM
    // holds its create and one change per update.
    let updates = 100;
    for i in 0..updates {
        let mut vm = common::vm("us-east1");
        vm.name = "tenants/acme/vms/c-0".into();
        vm.labels.insert("n".into(), i.to_string());
        let req = arbiter_api::v1::UpdateVirtualMachineRequest {
            vm: Some(vm),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into()],
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        cancel_then_retry(|| {
            let (mut vms, req) = (vms.clone(), req.clone());
            async move { vms.update_virtual_machine(req).await }
        })
        .await
        .unwrap_or_else(|s| panic!("update {i}: {}: {}", reason(&s), s.message()));
    }
    let history = server
        .changes("acme-editor")
        .list_revisions(arbiter_api::v1::ListRevisionsRequest {
            name: "tenants/acme/vms/c-0".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.revisions.len(), 1 + updates, "one change per request");
    // The point of the test: most first attempts were cut off mid-way.
    let cancelled = CANCELLED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{cancelled} of 300 first attempts were cut off");
    assert!(
        cancelled >= 100,
        "only {cancelled} of 300 requests were cancelled"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_block_no_one() {
    let server = TestServer::start().await;
    let base = server.http_base();
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    // Fifty clients that start a request and never finish its header.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Everyone else is served meanwhile.
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // And the slow ones are cut off by the header timeout (10 s).
    let closed = futures::future::join_all(slow.into_iter().map(|mut stream| async move {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }));
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect("connections that never finish their header are closed within 30 s");
    server.stop().await;
}

#[tokio::test]
async fn errors_stay_small_whatever_the_request() {
    use tonic_types::StatusExt;
    let server = TestServer::start().await;
    let mut vms = server.vms("acme-editor");
    // A thousand bad labels with long keys: a handful of violations, cut short.
    let mut req = common::create_vm("many-labels");
    if let Some(vm) = req.vm.as_mut() {
        for i in 0..1000 {
            vm.labels.insert(format!("Bad{}{i}", "K".repeat(300)), "v".into());
        }
    }
    let status = vms.create_virtual_machine(req).await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_FIELD");
    let violations = status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.len())
        .unwrap_or_default();
    assert!((1..=8).contains(&violations), "{violations} violations");
    assert!(
        status.message().len() < 8 << 10,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status.details().len() < 8 << 10,
        "{} bytes of details",
        status.details().len()
    );
    // A filter of 100 KB is refused without being echoed back.
    let list = arbiter_api::v1::ListVirtualMachinesRequest {
        parent: "tenants/acme".into(),
        filter: format!("labels.env = \"{}\"", "x".repeat(100_000)),
        ..Default::default()
    };
    let status = vms.list_virtual_machines(list).await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_FIELD");
    assert!(status.message().len() < 1024, "{} bytes", status.message().len());
    server.stop().await;
}

#[tokio::test]
async fn a_list_reads_a_bounded_number_of_resources() {
    let server = TestServer::start_with(|c| c.list_scan_limit = 50).await;
    let mut vms = server.vms("acme-editor");
    for i in 0..120 {
        vms.create_virtual_machine(common::create_vm(&format!("plain-{i:03}")))
            .await
            .unwrap();
    }
    let mut rare = common::create_vm("zz-rare");
    if let Some(vm) = rare.vm.as_mut() {
        vm.labels.insert("env".into(), "rare".into());
    }
    vms.create_virtual_machine(rare).await.unwrap();
    // A filter that matches one VM in 121: each page reads at most 50 and
    // ends early with a token; following the tokens finds the match once.
    let (mut found, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = vms
            .list_virtual_machines(arbiter_api::v1::ListVirtualMachinesRequest {
                parent: "tenants/acme".into(),
                page_size: 10,
                page_token: token.clone(),
                filter: "labels.env = \"rare\"".into(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        found.extend(page.vms.into_iter().map(|vm| vm.name));
        token = page.next_page_token;
        if token.is_empty() || pages > 10 {
            break;
        }
    }
    assert_eq!(found, ["tenants/acme/vms/zz-rare"]);
    assert!(
        pages >= 3,
        "121 VMs at 50 per page take at least 3 pages, took {pages}"
    );
    // Without a filter, pages are full as before.
    let page = vms
        .list_virtual_machines(arbiter_api::v1::ListVirtualMachinesRequest {
            parent: "tenants/acme".into(),
            page_size: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.vms.len(), 20);
    server.stop().await;
}

/// A component of `instances` core instances of a module with one linear
/// memory each, assembled by hand (component binary format).
fn many_memories(instances: u8) -> Vec<u8> {
    let module: &[u8] = b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01";
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    component.push(1); // core module section
    component.push(u8::try_from(module.len()).unwrap());
    component.extend_from_slice(module);
    // Core instance section: `instances` × instantiate module 0, no args.
    let mut body = vec![instances];
    for _ in 0..instances {
        body.extend_from_slice(&[0, 0, 0]);
    }
    component.push(2);
    let mut size = body.len();
    loop {
        let byte = u8::try_from(size & 0x7f).unwrap();
        size >>= 7;
        component.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    component.extend_from_slice(&body);
    component
}

#[tokio::test]
async fn a_component_with_many_memories_is_refused_at_upload() {
    let server = TestServer::start().await;
    let status = server
        .policies("root")
        .create_policy(arbiter_api::v1::CreatePolicyRequest {
            parent: "tenants/acme".into(),
            policy_id: "hoarder".into(),
            policy: Some(arbiter_api::v1::Policy {
                kinds: vec!["vm".into()],
                module: many_memories(20),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "INVALID_FIELD", "{status:?}");
    assert!(
        status.message().contains("20 Wasm linear memories"),
        "the pool's share of one component is enforced: {}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_health_watches_are_bounded() {
    use arbiter_server::middleware::MAX_HEALTH_WATCHES;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = TestServer::start().await;
    let addr = server.running.as_ref().unwrap().grpc_addr;
    // 200 streams per connection, under the per-connection limit.
    let mut channels = Vec::new();
    for _ in 0..MAX_HEALTH_WATCHES.div_ceil(200) + 1 {
        channels.push(common::connect(addr).await);
    }
    let mut open = Vec::new();
    for i in 0..MAX_HEALTH_WATCHES {
        let mut health = HealthClient::new(channels[i / 200].clone());
        let stream = health
            .watch(HealthCheckRequest::default())
            .await
            .unwrap_or_else(|s| panic!("watch {i}: {s:?}"));
        open.push(stream.into_inner());
    }
    let mut health = HealthClient::new(channels[channels.len() - 1].clone());
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        health.watch(HealthCheckRequest::default()),
    )
    .await
    .expect("the refusal comes at once")
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "RATE_LIMITED");
    // A closed watch frees its place.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match health.watch(HealthCheckRequest::default()).await {
            Ok(_) => break,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted);
                assert!(tokio::time::Instant::now() < deadline, "the place is never freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Open watches hold a stop up for the drain time (10 s) at most.
    let stopping = tokio::time::Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(30));
    drop(open);
}
