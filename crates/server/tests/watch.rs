//! Watch and history through the real server: the `Changes` service over
//! gRPC and over HTTP (NDJSON and server-sent events), resume without gaps,
//! compaction (`REVISION_COMPACTED`, 410), slow watchers
//! (`WATCH_TOO_SLOW`), the `changed_fields` of `ETAG_MISMATCH`, and
//! `ListRevisions`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use arbiter_api::v1::{
    Change, ListRevisionsRequest, StartVirtualMachineRequest, UpdateVirtualMachineRequest,
    WatchChangesRequest, change,
};
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;

type Stream = tonic::Streaming<Change>;

async fn watch(server: &TestServer, token: &str, req: WatchChangesRequest) -> Stream {
    server
        .changes(token)
        .watch_changes(req)
        .await
        .unwrap()
        .into_inner()
}

fn from(start_revision: u64) -> WatchChangesRequest {
    WatchChangesRequest {
        parent: "tenants/acme".into(),
        start_revision,
        ..Default::default()
    }
}

/// The next change that is not a bookmark.
async fn next(stream: &mut Stream) -> Change {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a change within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if item.r#type != change::Type::Bookmark as i32 {
            return item;
        }
    }
}

fn kind(c: &Change) -> change::Type {
    change::Type::try_from(c.r#type).unwrap()
}

async fn label(
    server: &TestServer,
    name: &str,
    key: &str,
    etag: &str,
) -> Result<tonic::Response<arbiter_api::v1::VirtualMachine>, tonic::Status> {
    server
        .vms("acme-editor")
        .update_virtual_machine(UpdateVirtualMachineRequest {
            vm: Some(arbiter_api::v1::VirtualMachine {
                name: name.into(),
                etag: etag.into(),
                labels: [(key.to_string(), "on".to_string())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{key}")],
            }),
            ..Default::default()
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_every_change_with_who_what_and_which_fields() {
    let server = TestServer::start().await;
    let mut stream = watch(&server, "acme-viewer", from(0)).await;
    let mut other = watch(
        &server,
        "globex-editor",
        WatchChangesRequest {
            parent: "tenants/globex".into(),
            ..Default::default()
        },
    )
    .await;
    let vm = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("web-1"))
        .await
        .unwrap()
        .into_inner();
    let labelled = label(&server, &vm.name, "env", "").await.unwrap().into_inner();
    server
        .vms("acme-editor")
        .start_virtual_machine(StartVirtualMachineRequest {
            name: vm.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let added = next(&mut stream).await;
    assert_eq!(
        (kind(&added), added.revision, added.name.as_str()),
        (change::Type::Added, vm.revision, "tenants/acme/vms/web-1")
    );
    assert_eq!(
        (added.principal.as_str(), added.operation.as_str()),
        ("alice", "create")
    );
    assert!(matches!(added.object, Some(change::Object::Vm(ref v)) if v.etag == vm.etag));
    let modified = next(&mut stream).await;
    assert_eq!(
        (kind(&modified), modified.revision),
        (change::Type::Modified, labelled.revision)
    );
    assert_eq!(modified.changed_fields, ["labels.env"]);
    let started = next(&mut stream).await;
    assert_eq!(
        (started.operation.as_str(), started.changed_fields.as_slice()),
        ("start", &["state".to_string()][..])
    );
    // Another tenant's watcher sees none of it.
    let quiet = tokio::time::timeout(Duration::from_millis(300), other.next()).await;
    assert!(
        quiet.is_err() || matches!(&quiet, Ok(Some(Ok(c))) if c.r#type == change::Type::Bookmark as i32),
        "{quiet:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_initial_then_live_changes_give_the_current_state() {
    let server = TestServer::start().await;
    let vms = server.vms("acme-editor");
    for id in ["a", "b", "c"] {
        vms.clone().create_virtual_machine(create_vm(id)).await.unwrap();
    }
    let mut filtered = create_vm("d");
    filtered
        .vm
        .as_mut()
        .unwrap()
        .labels
        .insert("tier".into(), "db".into());
    vms.clone().create_virtual_machine(filtered).await.unwrap();
    let req = WatchChangesRequest {
        parent: "tenants/acme".into(),
        collections: vec!["vms".into()],
        send_initial: true,
        filter: "labels.tier = \"db\"".into(),
        ..Default::default()
    };
    let mut stream = watch(&server, "acme-viewer", req).await;
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(
        (kind(&first), first.name.as_str()),
        (change::Type::Added, "tenants/acme/vms/d")
    );
    let mark = stream.next().await.unwrap().unwrap();
    assert_eq!(kind(&mark), change::Type::Bookmark);
    assert!(mark.revision >= first.revision);
    let mut e = create_vm("e");
    e.vm.as_mut().unwrap().labels.insert("tier".into(), "db".into());
    let e = vms.clone().create_virtual_machine(e).await.unwrap().into_inner();
    vms.clone().create_virtual_machine(create_vm("f")).await.unwrap();
    let live = next(&mut stream).await;
    assert_eq!(
        (live.name.as_str(), live.revision),
        ("tenants/acme/vms/e", e.revision)
    );
    let mut all = watch(
        &server,
        "acme-viewer",
        WatchChangesRequest {
            parent: "tenants/acme".into(),
            send_initial: true,
            ..Default::default()
        },
    )
    .await;
    let mut names = Vec::new();
    loop {
        let c = all.next().await.unwrap().unwrap();
        if kind(&c) == change::Type::Bookmark {
            break;
        }
        names.push(c.name);
    }
    assert_eq!(names.len(), 6, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_resume_from_the_last_revision_miss_nothing() {
    let server = TestServer::start().await;
    let first = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("w-0"))
        .await
        .unwrap()
        .into_inner();
    let writer = {
        let vms = server.vms("acme-editor");
        tokio::spawn(async move {
            for i in 1..150 {
                vms.clone()
                    .create_virtual_machine(create_vm(&format!("w-{i}")))
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut resume = first.revision;
    let mut round = 0u64;
    while seen.len() < 150 {
        let mut stream = watch(&server, "acme-viewer", from(resume)).await;
        // A pseudo-random number of changes, then a disconnect.
        round += 1;
        for _ in 0..(round * 7 % 13 + 1) {
            if seen.len() == 150 {
                break;
            }
            let c = next(&mut stream).await;
            assert!(c.revision >= resume, "no change twice");
            resume = c.revision + 1;
            seen.push(c.name);
        }
    }
    writer.await.unwrap();
    let expected: Vec<String> = (0..150).map(|i| format!("tenants/acme/vms/w-{i}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_is_out_of_range_with_the_oldest_revision() {
    let server = TestServer::start().await;
    let vm = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("old"))
        .await
        .unwrap()
        .into_inner();
    let oldest = compact_all(&server).await;
    let f = expect_failure(
        server
            .changes("acme-viewer")
            .watch_changes(from(vm.revision))
            .await,
        Code::OutOfRange,
        "REVISION_COMPACTED",
    );
    assert_eq!(f.metadata["requested_revision"], vm.revision.to_string());
    assert_eq!(f.metadata["oldest_revision"], oldest.to_string());
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/tenants/acme/changes:watch?start_revision={}",
            server.http_base(),
            vm.revision
        ))
        .bearer_auth("acme-viewer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["reason"], "REVISION_COMPACTED");
    assert_eq!(problem["oldest_revision"], oldest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_ends_too_slow_and_never_slows_writers() {
    let server = TestServer::start().await;
    let mut stalled = watch(&server, "acme-viewer", from(0)).await;
    let vms = server.vms("acme-editor");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let vms = vms.clone();
            tokio::spawn(async move {
                for i in 0..800 {
                    let mut req = create_vm(&format!("s-{w}-{i}"));
                    req.vm.as_mut().unwrap().display_name = "x".repeat(250);
                    vms.clone().create_virtual_machine(req).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // Only now does the watcher read: what was buffered, then the end.
    let mut last = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .unwrap()
        {
            Some(Ok(c)) => last = c.revision.max(last),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without WATCH_TOO_SLOW after revision {last}"),
        }
    };
    let f = expect_failure::<()>(Err(status), Code::Aborted, "WATCH_TOO_SLOW");
    let resume: u64 = f.metadata["resume_revision"].parse().unwrap();
    assert!(resume > last, "resume {resume} after the last delivered {last}");
    let mut again = watch(&server, "acme-viewer", from(resume)).await;
    assert_eq!(next(&mut again).await.revision, resume, "resuming misses nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_mismatch_names_the_fields_changed_since() {
    let server = TestServer::start().await;
    let vm = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("web"))
        .await
        .unwrap()
        .into_inner();
    label(&server, &vm.name, "env", &vm.etag).await.unwrap();
    let f = expect_failure(
        label(&server, &vm.name, "team", &vm.etag).await,
        Code::Aborted,
        "ETAG_MISMATCH",
    );
    assert_eq!(f.metadata["changed_fields"], "labels.env");
    let response = reqwest::Client::new()
        .patch(format!(
            "{}/v1/{}?update_mask=labels.team",
            server.http_base(),
            vm.name
        ))
        .bearer_auth("acme-editor")
        .json(&serde_json::json!({"etag": vm.etag, "labels": {"team": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        problem["conflict"]["changed_fields"],
        serde_json::json!(["labels.env"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_revisions_pages_through_the_history_newest_first() {
    let server = TestServer::start().await;
    let vm = server
        .vms("acme-editor")
        .create_virtual_machine(create_vm("web"))
        .await
        .unwrap()
        .into_inner();
    let mut revisions = vec![vm.revision];
    for key in ["a", "b", "c", "d"] {
        revisions.push(
            label(&server, &vm.name, key, "")
                .await
                .unwrap()
                .into_inner()
                .revision,
        );
    }
    revisions.reverse();
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .changes("acme-viewer")
            .list_revisions(ListRevisionsRequest {
                name: vm.name.clone(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        got.extend(page.revisions.iter().map(|c| c.revision));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(got, revisions);
    expect_failure(
        server
            .changes("globex-editor")
            .list_revisions(ListRevisionsRequest {
                name: vm.name.clone(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "TENANT_FORBIDDEN",
    );
    expect_failure(
        server
            .changes("acme-viewer")
            .watch_changes(WatchChangesRequest {
                parent: "tenants/acme".into(),
                collections: vec!["policies".into()],
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "ROLE_FORBIDDEN",
    );
}

/// Reads NDJSON lines or SSE events from a streaming HTTP response.
async fn read_until(
    response: &mut reqwest::Response,
    buffer: &mut String,
    want: usize,
    sep: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < want {
        if let Some(at) = buffer.find(sep) {
            let item: String = buffer.drain(..at + sep.len()).collect();
            out.push(item);
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("a chunk within 10 s")
            .unwrap()
            .expect("the stream goes on");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_streams_ndjson_and_server_sent_events_that_resume() {
    let server = TestServer::start().await;
    let vms = server.vms("acme-editor");
    let first = vms
        .clone()
        .create_virtual_machine(create_vm("h-0"))
        .await
        .unwrap()
        .into_inner();
    let second = vms
        .clone()
        .create_virtual_machine(create_vm("h-1"))
        .await
        .unwrap()
        .into_inner();
    let url = format!(
        "{}/v1/tenants/acme/changes:watch?collections=vms&start_revision={}",
        server.http_base(),
        first.revision
    );
    let mut ndjson = reqwest::Client::new()
        .get(&url)
        .bearer_auth("acme-viewer")
        .send()
        .await
        .unwrap();
    assert_eq!(ndjson.status(), 200);
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let mut buffer = String::new();
    let lines = read_until(&mut ndjson, &mut buffer, 2, "\n").await;
    let changes: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(changes[0]["type"], "ADDED");
    assert_eq!(changes[0]["revision"], first.revision.to_string());
    assert_eq!(changes[1]["vm"]["name"], "tenants/acme/vms/h-1");
    // Server-sent events, resumed after the first with Last-Event-ID.
    let sse_url = format!(
        "{}/v1/tenants/acme/changes:watch?collections=vms",
        server.http_base()
    );
    let mut sse = reqwest::Client::new()
        .get(&sse_url)
        .bearer_auth("acme-viewer")
        .header("accept", "text/event-stream")
        .header("last-event-id", first.revision.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let events = read_until(&mut sse, &mut buffer, 1, "\n\n").await;
    assert!(
        events[0].starts_with(&format!("id: {}\nevent: ADDED\ndata: {{", second.revision)),
        "{events:?}"
    );
    let third = vms
        .clone()
        .create_virtual_machine(create_vm("h-2"))
        .await
        .unwrap()
        .into_inner();
    let events = read_until(&mut sse, &mut buffer, 1, "\n\n").await;
    assert!(
        events[0].starts_with(&format!("id: {}\n", third.revision)),
        "{events:?}"
    );
    let bad = reqwest::Client::new()
        .get(&sse_url)
        .bearer_auth("acme-viewer")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
