//! The `arbiter` CLI (ARCHITECTURE.md section 13) end to end: the real
//! binary against a real server — every verb of every kind, transactions
//! from YAML, watch, history, exit codes per error class, and `arbiter
//! edit` resolving a conflict with a change made by another client while
//! the editor was open: merge, overwrite, `--on-conflict fail`, and the
//! interactive prompt through a pseudo-terminal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use arbiter_test_guests as guests;
use common::*;
use serde_json::Value;

const ARBITER: &str = env!("CARGO_BIN_EXE_arbiter");

/// Creates the VM the edit tests work on.
const CREATE_WEB_1: [&str; 11] = [
    "vm",
    "create",
    "tenants/acme/vms/web-1",
    "--region",
    "us-east1",
    "--machine-type",
    "e2-small",
    "--image",
    "debian-12",
    "--label",
    "env=dev",
];

/// Writes an executable shell script.
fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(path, perms).unwrap();
}

fn command(server: &TestServer, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(ARBITER);
    command
        .args(args)
        .env(
            "ARBITER_SERVER",
            format!("http://{}", server.running.as_ref().unwrap().grpc_addr),
        )
        .env("ARBITER_TOKEN", token)
        .env_remove("EDITOR")
        .env_remove("VISUAL");
    command
}

fn run(server: &TestServer, token: &str, args: &[&str]) -> Output {
    command(server, token, args).output().unwrap()
}

/// Runs a command that must succeed; returns its stdout as JSON.
fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.extend(["-o", "json"]);
    let out = run(server, "acme-editor", &with_json);
    assert!(
        out.status.success(),
        "arbiter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs a command that must fail with `code`; returns its stderr.
fn fails(server: &TestServer, token: &str, args: &[&str], code: i32) -> String {
    let out = run(server, token, args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "arbiter {args:?}: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_of_every_kind() {
    let server = TestServer::start().await;
    let s = &server;
    // VMs.
    let vm = json(
        s,
        &[
            "vm",
            "create",
            "tenants/acme/vms/web-1",
            "--region",
            "us-east1",
            "--machine-type",
            "e2-small",
            "--image",
            "debian-12",
            "--label",
            "env=prod",
            "--display-name",
            "Web",
        ],
    );
    assert_eq!(vm["state"], "STOPPED");
    assert_eq!(vm["labels"]["env"], "prod");
    assert_eq!(
        json(s, &["vm", "get", "tenants/acme/vms/web-1"])["display_name"],
        "Web"
    );
    let updated = json(
        s,
        &[
            "vm",
            "update",
            "tenants/acme/vms/web-1",
            "--display-name",
            "Front",
            "--label",
            "team=a",
            "--remove-label",
            "env",
        ],
    );
    assert_eq!(updated["display_name"], "Front");
    assert_eq!(updated["labels"], serde_json::json!({"team": "a"}));
    assert_eq!(
        json(s, &["vm", "start", "tenants/acme/vms/web-1"])["state"],
        "RUNNING"
    );
    let listed = json(s, &["vm", "list", "tenants/acme", "--filter", "state = RUNNING"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(
        json(s, &["vm", "stop", "tenants/acme/vms/web-1"])["state"],
        "STOPPED"
    );
    json(s, &["vm", "delete", "tenants/acme/vms/web-1"]);
    assert!(
        json(s, &["vm", "list", "tenants/acme"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Users.
    let user = json(
        s,
        &[
            "user",
            "create",
            "tenants/acme/users/ann",
            "--email",
            "ann@example.com",
        ],
    );
    assert_eq!(user["state"], "PENDING");
    assert_eq!(
        json(s, &["user", "activate", "tenants/acme/users/ann"])["state"],
        "ACTIVE"
    );
    assert_eq!(
        json(s, &["user", "suspend", "tenants/acme/users/ann"])["state"],
        "SUSPENDED"
    );
    assert_eq!(
        json(
            s,
            &[
                "user",
                "update",
                "tenants/acme/users/ann",
                "--display-name",
                "Ann"
            ]
        )["display_name"],
        "Ann"
    );
    assert_eq!(
        json(s, &["user", "get", "tenants/acme/users/ann"])["email"],
        "ann@example.com"
    );
    assert_eq!(
        json(s, &["user", "list", "tenants/acme"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    json(s, &["user", "delete", "tenants/acme/users/ann"]);

    // Prompts.
    let prompt = json(
        s,
        &[
            "prompt",
            "create",
            "tenants/acme/prompts/greet",
            "--template",
            "Hello {{name}}",
            "--model",
            "gpt-x",
        ],
    );
    assert_eq!(prompt["state"], "DRAFT");
    assert_eq!(
        json(
            s,
            &[
                "prompt",
                "update",
                "tenants/acme/prompts/greet",
                "--description",
                "hi"
            ]
        )["description"],
        "hi"
    );
    assert_eq!(
        json(s, &["prompt", "publish", "tenants/acme/prompts/greet"])["state"],
        "PUBLISHED"
    );
    assert_eq!(
        json(s, &["prompt", "archive", "tenants/acme/prompts/greet"])["state"],
        "ARCHIVED"
    );
    assert_eq!(
        json(s, &["prompt", "get", "tenants/acme/prompts/greet"])["model"],
        "gpt-x"
    );
    assert_eq!(
        json(s, &["prompt", "list", "tenants/acme"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    json(s, &["prompt", "delete", "tenants/acme/prompts/greet"]);

    // Policies (admin).
    let mut create = command(
        s,
        "root",
        &[
            "policy",
            "create",
            "tenants/acme/policies/guard",
            "--module",
            guests::VM_GUARD,
            "--kinds",
            "vm",
            "--timeout",
            "200ms",
            "-o",
            "json",
        ],
    );
    let out = create.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let policy: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(policy["kinds"], serde_json::json!(["vm"]));
    assert_eq!(policy["module_sha256"].as_str().unwrap().len(), 64);
    let out = run(
        s,
        "root",
        &[
            "policy",
            "update",
            "tenants/acme/policies/guard",
            "--mode",
            "AUDIT",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["mode"],
        "AUDIT"
    );
    // Settings from a YAML file; a preview of the same settings.
    let strict = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/vm-guard/strict.yaml");
    let out = run(
        s,
        "root",
        &[
            "policy",
            "update",
            "tenants/acme/policies/guard",
            "--settings",
            strict,
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let updated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        updated["settings"]["required_labels"],
        serde_json::json!(["team", "cost-centre"])
    );
    json(
        s,
        &[
            "vm",
            "create",
            "tenants/acme/vms/plain",
            "--region",
            "us-east1",
            "--machine-type",
            "e2-medium",
            "--image",
            "debian-12",
        ],
    );
    let out = run(
        s,
        "root",
        &[
            "policy",
            "preview",
            "tenants/acme",
            "--module",
            guests::VM_GUARD,
            "--kinds",
            "vm",
            "--settings",
            strict,
            "--current-objects",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("judged 1 at revision "), "{stdout}");
    assert!(stdout.contains("0 allowed, 1 denied, 0 faulted"), "{stdout}");
    assert!(stdout.contains("tenants/acme/vms/plain"), "{stdout}");
    // The AUDIT policy's would-be denial of that create, per policy.
    let out = run(s, "acme-viewer", &["stats", "policies", "acme", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    let guard = &stats["policies"][0];
    assert_eq!(guard["policy"], "tenants/acme/policies/guard", "{stats}");
    assert!(
        guard["audit_denied"].as_str().unwrap().parse::<i64>().unwrap() >= 1,
        "{stats}"
    );
    let out = run(
        s,
        "acme-viewer",
        &["stats", "policies", "tenants/acme", "--since", "10m"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tenants/acme/policies/guard"));
    for args in [
        &["policy", "get", "tenants/acme/policies/guard"][..],
        &["policy", "list", "tenants/acme"],
        &["policy", "delete", "tenants/acme/policies/guard"],
    ] {
        let out = run(s, "root", args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The table names the columns.
    let out = run(s, "acme-editor", &["user", "list", "tenants/acme"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NAME"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_print_what_conflicted_and_exit_by_class() {
    let server = TestServer::start_with(|c| {
        c.quotas = vec![arbiter_core::QuotaRule {
            tenant: "acme".into(),
            collection: "users".into(),
            max: 1,
        }]
    })
    .await;
    let s = &server;
    let create = [
        "vm",
        "create",
        "tenants/acme/vms/web-1",
        "--region",
        "us-east1",
        "--machine-type",
        "e2-small",
        "--image",
        "debian-12",
    ];
    json(s, &create);
    let stderr = fails(s, "acme-editor", &create, 3);
    assert!(stderr.contains("RESOURCE_EXISTS"), "{stderr}");
    assert!(stderr.contains("existing: state STOPPED"), "{stderr}");
    let stderr = fails(
        s,
        "acme-editor",
        &[
            "vm",
            "update",
            "tenants/acme/vms/web-1",
            "--image",
            "x",
            "--etag",
            "\"99\"",
        ],
        3,
    );
    assert!(
        stderr.contains("ETAG_MISMATCH") && stderr.contains("arbiter edit"),
        "{stderr}"
    );
    json(s, &["vm", "start", "tenants/acme/vms/web-1"]);
    let stderr = fails(s, "acme-editor", &["vm", "delete", "tenants/acme/vms/web-1"], 3);
    assert!(stderr.contains("stop the VM before deleting it"), "{stderr}");
    assert!(stderr.contains("allowed from STOPPED"), "{stderr}");
    fails(s, "acme-editor", &["vm", "get", "tenants/acme/vms/nope"], 2);
    fails(s, "wrong-token", &["vm", "get", "tenants/acme/vms/web-1"], 4);
    fails(s, "acme-viewer", &["vm", "stop", "tenants/acme/vms/web-1"], 4);
    let stderr = fails(
        s,
        "acme-editor",
        &["vm", "create", "tenants/acme/vms/bad", "--region", "us-east1"],
        1,
    );
    assert!(stderr.contains("vm.machine_type"), "{stderr}");
    fails(s, "acme-editor", &["vm", "get", "not-a-name"], 1);
    fails(s, "acme-editor", &["vm", "frobnicate"], 1);
    json(
        s,
        &[
            "user",
            "create",
            "tenants/acme/users/a",
            "--email",
            "a@example.com",
        ],
    );
    let stderr = fails(
        s,
        "acme-editor",
        &[
            "user",
            "create",
            "tenants/acme/users/b",
            "--email",
            "b@example.com",
        ],
        5,
    );
    assert!(stderr.contains("1 of 1 users in use"), "{stderr}");
    let unreachable = Command::new(ARBITER)
        .args([
            "vm",
            "get",
            "tenants/acme/vms/web-1",
            "--server",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(6));
    // The refusals above, counted: as tables and as JSON.
    let out = run(
        s,
        "acme-viewer",
        &["stats", "conflicts", "acme", "--codes", "conflicts"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CreateVirtualMachine"), "{stdout}");
    assert!(stdout.contains("RESOURCE_EXISTS"), "{stdout}");
    assert!(stdout.contains("tenants/acme/vms/web-1"), "{stdout}");
    let out = run(
        s,
        "acme-viewer",
        &[
            "stats",
            "conflicts",
            "tenants/acme",
            "--since",
            "2h",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stats["total"].as_str().unwrap().parse::<i64>().unwrap() >= 3,
        "{stats}"
    );
    assert!(
        stats["series"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["reason"] == "QUOTA_EXCEEDED" || s["code"] == "RESOURCE_EXHAUSTED"),
        "{stats}"
    );
    let stderr = fails(s, "acme-viewer", &["stats", "conflicts", "globex"], 4);
    assert!(
        stderr.contains("PERMISSION_DENIED") || stderr.contains("globex"),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_watch_history_and_completions() {
    let server = TestServer::start().await;
    let s = &server;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.yaml");
    std::fs::write(
        &file,
        r#"
parent: tenants/acme
operations:
  - create_virtual_machine:
      parent: tenants/acme
      vm_id: web-1
      vm: {region: us-east1, machine_type: e2-small, image: debian-12}
  - start_virtual_machine: {name: tenants/acme/vms/web-1}
  - create_user:
      parent: tenants/acme
      user_id: ann
      user: {email: ann@example.com}
"#,
    )
    .unwrap();
    let done = json(s, &["tx", file.to_str().unwrap()]);
    let revision = done["revision"].as_str().unwrap().to_string();
    assert_eq!(done["results"][1]["vm"]["state"], "RUNNING");
    let stderr = fails(s, "acme-editor", &["tx", file.to_str().unwrap()], 3);
    assert!(stderr.contains("in operation 0 of the transaction"), "{stderr}");
    std::fs::write(&file, "operations: [not yaml").unwrap();
    fails(s, "acme-editor", &["tx", file.to_str().unwrap()], 1);

    // A watch from the transaction's revision prints its changes, one JSON
    // line each, at that revision (read on a thread, so that a missing line
    // fails the test instead of hanging it).
    let mut watch = command(
        s,
        "acme-editor",
        &[
            "watch",
            "tenants/acme",
            "--start-revision",
            &revision,
            "-o",
            "json",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut names = Vec::new();
    while names.len() < 2 {
        let line = received
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the watch prints the transaction's changes")
            .unwrap();
        let change: Value = serde_json::from_str(&line).unwrap();
        if change["type"] != "BOOKMARK" {
            assert_eq!(change["revision"].as_str(), Some(revision.as_str()), "{change}");
            names.push(change["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(names, ["tenants/acme/users/ann", "tenants/acme/vms/web-1"]);
    watch.kill().unwrap();
    let _ = watch.wait();

    json(
        s,
        &["vm", "update", "tenants/acme/vms/web-1", "--label", "env=prod"],
    );
    let history = json(s, &["history", "tenants/acme/vms/web-1"]);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["changed_fields"], serde_json::json!(["labels.env"]));
    assert_eq!(history[1]["operation"], "create");

    let out = Command::new(ARBITER)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("arbiter") && script.contains("edit"), "{script}");
    server.stop().await;
}

/// An `$EDITOR` that sets the VM's display name in the file it is given,
/// and — as another client would, while the editor is open — sets the
/// label `env` with another token.
fn editor(dir: &Path, server: &TestServer, display_name: &str, env: &str) -> String {
    let path = dir.join(format!("editor-{display_name}.sh"));
    script(
        &path,
        &format!(
            "#!/bin/sh\nsed -i 's/^display_name:.*/display_name: {display_name}/' \"$1\"\n\
             ARBITER_TOKEN=acme-editor-2 ARBITER_SERVER=http://{addr} {ARBITER} vm update tenants/acme/vms/web-1 --label env={env} >/dev/null\n",
            addr = server.running.as_ref().unwrap().grpc_addr
        ),
    );
    path.display().to_string()
}

fn edit(server: &TestServer, editor: &str, args: &[&str]) -> Output {
    let mut all = vec!["edit", "tenants/acme/vms/web-1"];
    all.extend(args);
    let mut command = command(server, "acme-editor", &all);
    command.env("EDITOR", editor).stdin(Stdio::null());
    command.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_resolves_a_conflict_by_merge_overwrite_or_failure() {
    let server = TestServer::start().await;
    let s = &server;
    let dir = tempfile::tempdir().unwrap();
    json(s, &CREATE_WEB_1);

    // Disjoint changes merge: both are there.
    let out = edit(
        s,
        &editor(dir.path(), s, "mine", "prod"),
        &["--on-conflict", "merge"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("changed on the server: labels.env"), "{stderr}");
    assert!(stderr.contains("changed by you:        display_name"), "{stderr}");
    let vm = json(s, &["vm", "get", "tenants/acme/vms/web-1"]);
    assert_eq!(
        (vm["display_name"].as_str(), vm["labels"]["env"].as_str()),
        (Some("mine"), Some("prod"))
    );
    assert_eq!(vm["updated_by"], "alice");

    // --on-conflict fail exits 3 and writes nothing of ours.
    let out = edit(
        s,
        &editor(dir.path(), s, "failed", "staging"),
        &["--on-conflict", "fail"],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vm = json(s, &["vm", "get", "tenants/acme/vms/web-1"]);
    assert_eq!(
        (vm["display_name"].as_str(), vm["labels"]["env"].as_str()),
        (Some("mine"), Some("staging"))
    );

    // Without a terminal and without --on-conflict, nothing is guessed.
    let out = edit(s, &editor(dir.path(), s, "guessed", "qa"), &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--on-conflict"));

    // Overwrite: the user's version wins where it differs, the other
    // client's label included.
    let out = edit(
        s,
        &editor(dir.path(), s, "overwritten", "test"),
        &["--on-conflict", "overwrite"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vm = json(s, &["vm", "get", "tenants/acme/vms/web-1"]);
    assert_eq!(
        (vm["display_name"].as_str(), vm["labels"]["env"].as_str()),
        (Some("overwritten"), Some("qa"))
    );

    // Merge refuses overlapping changes: the editor changes env too.
    let both = dir.path().join("both.sh");
    let other = editor(dir.path(), s, "both", "x");
    script(
        &both,
        &format!("#!/bin/sh\nsed -i 's/^  env:.*/  env: mine/' \"$1\"\n{other} \"$1\"\n"),
    );
    let out = edit(s, both.to_str().unwrap(), &["--on-conflict", "merge"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("changed by both:       labels.env"), "{stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conflict_prompt_works_in_a_terminal() {
    let server = TestServer::start().await;
    let s = &server;
    let dir = tempfile::tempdir().unwrap();
    json(s, &CREATE_WEB_1);
    let session = |editor: String| {
        let mut command = command(s, "acme-editor", &["edit", "tenants/acme/vms/web-1"]);
        command.env("EDITOR", editor);
        rexpect::session::spawn_command(command, Some(30_000)).unwrap()
    };

    // Merge, chosen at the prompt.
    let mut p = session(editor(dir.path(), s, "merged", "prod"));
    p.exp_string("changed on the server: labels.env").unwrap();
    p.exp_string("[m]erge, [o]verwrite, [e]dit again, [d]iscard? ")
        .unwrap();
    p.send_line("x").unwrap();
    p.exp_string("answer with one of the letters").unwrap();
    p.send_line("m").unwrap();
    p.exp_string("updated tenants/acme/vms/web-1").unwrap();
    p.exp_eof().unwrap();
    let vm = json(s, &["vm", "get", "tenants/acme/vms/web-1"]);
    assert_eq!(
        (vm["display_name"].as_str(), vm["labels"]["env"].as_str()),
        (Some("merged"), Some("prod"))
    );

    // Discard, chosen at the prompt: the other client's change stays alone.
    let mut p = session(editor(dir.path(), s, "discarded", "staging"));
    p.exp_string("[d]iscard? ").unwrap();
    p.send_line("d").unwrap();
    p.exp_string("discarded your changes").unwrap();
    p.exp_eof().unwrap();
    let vm = json(s, &["vm", "get", "tenants/acme/vms/web-1"]);
    assert_eq!(
        (vm["display_name"].as_str(), vm["labels"]["env"].as_str()),
        (Some("merged"), Some("staging"))
    );
    server.stop().await;
}
