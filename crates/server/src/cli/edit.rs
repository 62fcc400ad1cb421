//! `arbiter edit NAME`: the resource in `$EDITOR` as YAML, written back
//! with the etag it was read at. When someone else wrote in between, it
//! shows what changed on the server and what the user changed, and
//! merges, overwrites, edits again or discards — asked, or as
//! `--on-conflict` says.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;

use arbiter_client::merge::{apply_messages, changed_messages};
use arbiter_client::{Client, Error};
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};

use super::kinds::{Kind, kind_of};
use super::{Failure, OnConflict, call, call_masked, from_json, to_json, usage};

/// What to do about a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Merge,
    Overwrite,
    EditAgain,
    Discard,
}

async fn get(client: &Client, kind: &Kind, name: &str) -> Result<DynamicMessage, Failure> {
    call(
        client,
        kind.service,
        &format!("Get{}", kind.type_name),
        json!({ "name": name }),
    )
    .await
}

fn yaml_of(kind: &Kind, name: &str, message: &DynamicMessage) -> Result<String, Failure> {
    let body = serde_yaml::to_string(&to_json(message, true))
        .map_err(|e| usage(format!("cannot write YAML: {e}")))?;
    Ok(format!(
        "# {name} ({}). Change the fields and labels you want, save and quit to\n# apply; output-only fields are ignored. An empty file cancels.\n{body}",
        kind.type_name
    ))
}

/// Lets the user edit `text` in `$VISUAL`/`$EDITOR`; `None` when the file
/// comes back empty.
async fn run_editor(text: String) -> Result<Option<String>, Failure> {
    tokio::task::spawn_blocking(move || {
        let path = std::env::temp_dir().join(format!(
            "arbiter-edit-{}-{}.yaml",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        // Readable by the user only: the resource may hold what others
        // on the machine should not see.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        written.map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
        let editor = std::env::var("VISUAL")
            .or_else(|_| std::env::var("EDITOR"))
            .unwrap_or_else(|_| "vi".into());
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("arbiter-edit")
            .arg(&path)
            .status();
        let edited = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(usage(format!(
                    "the editor ({editor}) exited with {s}; nothing was changed"
                )));
            }
            Err(e) => return Err(usage(format!("cannot run the editor ({editor}): {e}"))),
        }
        let edited = edited.map_err(|e| usage(format!("cannot read the edited file: {e}")))?;
        let content = edited
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        Ok(content.then_some(edited))
    })
    .await
    .map_err(|e| usage(format!("the editor task failed: {e}")))?
}

fn parse(kind: &Kind, text: &str) -> Result<DynamicMessage, Failure> {
    let value: Value =
        serde_yaml::from_str(text).map_err(|e| usage(format!("the edited file is not YAML: {e}")))?;
    from_json(&format!("arbiter.v1.{}", kind.type_name), value)
}

/// Writes the `fields` of `mine` over the version whose etag is `etag`.
async fn write(
    client: &Client,
    kind: &Kind,
    name: &str,
    mine: &DynamicMessage,
    etag: &str,
    fields: &[String],
) -> Result<DynamicMessage, Failure> {
    let mut body = to_json(mine, true);
    if let Some(object) = body.as_object_mut() {
        object.insert("name".into(), json!(name));
        object.insert("etag".into(), json!(etag));
    }
    let request = json!({ kind.singular: body });
    call_masked(
        client,
        kind.service,
        &format!("Update{}", kind.type_name),
        request,
        fields,
    )
    .await
}

fn etag_of(message: &DynamicMessage) -> String {
    to_json(message, true)
        .get("etag")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Asks on the terminal what to do; merge only when it is possible.
fn ask(can_merge: bool) -> Result<Choice, Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Conflict(
            "the resource changed while you edited it; run in a terminal to choose, or pass --on-conflict merge|overwrite|fail".into(),
        ));
    }
    let options = if can_merge {
        "[m]erge, [o]verwrite, [e]dit again, [d]iscard"
    } else {
        "[o]verwrite, [e]dit again, [d]iscard"
    };
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("{options}? ");
        let _ = std::io::stderr().flush();
        let Some(Ok(line)) = lines.next() else {
            return Ok(Choice::Discard);
        };
        match line.trim() {
            "m" if can_merge => return Ok(Choice::Merge),
            "o" => return Ok(Choice::Overwrite),
            "e" => return Ok(Choice::EditAgain),
            "d" => return Ok(Choice::Discard),
            _ => eprintln!("answer with one of the letters in brackets"),
        }
    }
}

/// `arbiter edit NAME`.
pub async fn edit(client: &Client, name: &str, on_conflict: Option<OnConflict>) -> Result<(), Failure> {
    let kind = kind_of(name).ok_or_else(|| {
        usage(format!(
            "{name:?} is not a resource name; expected tenants/TENANT/{{vms|users|prompts|policies}}/ID"
        ))
    })?;
    let mut base = get(client, kind, name).await?;
    let mut text = yaml_of(kind, name, &base)?;
    'edit: loop {
        let Some(edited) = run_editor(text.clone()).await? else {
            println!("edit cancelled; nothing was changed");
            return Ok(());
        };
        let mine = parse(kind, &edited)?;
        let changes = changed_messages(&base, &mine);
        if changes.iter().any(|f| f == "state") {
            return Err(usage(format!(
                "state changes only by its custom methods (e.g. `arbiter {} start NAME`), not by editing",
                kind.singular
            )));
        }
        if changes.is_empty() {
            println!("no changes");
            return Ok(());
        }
        // What to write, over which etag.
        let (mut candidate, mut etag, mut fields) = (mine.clone(), etag_of(&base), changes.clone());
        loop {
            let (changed_fields, updated_by, update_time) =
                match write(client, kind, name, &candidate, &etag, &fields).await {
                    Ok(updated) => {
                        println!("updated {name} (etag {})", etag_of(&updated));
                        return Ok(());
                    }
                    Err(Failure::Api(Error::EtagMismatch {
                        changed_fields,
                        updated_by,
                        update_time,
                        ..
                    })) => (changed_fields, updated_by, update_time),
                    Err(e) => return Err(e),
                };
            let theirs = get(client, kind, name).await?;
            // The server says what changed since our base, while it keeps
            // that revision; else the versions tell.
            let theirs_changed = changed_fields.unwrap_or_else(|| changed_messages(&base, &theirs));
            let overlap: Vec<&String> = changes.iter().filter(|f| theirs_changed.contains(f)).collect();
            eprintln!("{name} was changed by {updated_by} at {update_time} while you edited it.");
            eprintln!("  changed on the server: {}", theirs_changed.join(", "));
            eprintln!("  changed by you:        {}", changes.join(", "));
            if !overlap.is_empty() {
                let both: Vec<&str> = overlap.iter().map(|f| f.as_str()).collect();
                eprintln!("  changed by both:       {}", both.join(", "));
            }
            let choice = match on_conflict {
                Some(OnConflict::Merge) if overlap.is_empty() => Choice::Merge,
                Some(OnConflict::Merge) => {
                    return Err(Failure::Conflict(
                        "your changes overlap the server's; nothing was written (choose --on-conflict overwrite, or edit again)".into(),
                    ));
                }
                Some(OnConflict::Overwrite) => Choice::Overwrite,
                Some(OnConflict::Fail) => {
                    return Err(Failure::Conflict(
                        "the resource changed while you edited it; nothing was written".into(),
                    ));
                }
                None => ask(overlap.is_empty())?,
            };
            let mut merged = theirs.clone();
            apply_messages(&changes, &mine, &mut merged);
            etag = etag_of(&theirs);
            match choice {
                Choice::Merge => {
                    candidate = merged;
                    fields = changes.clone();
                }
                Choice::Overwrite => {
                    fields = changed_messages(&theirs, &mine)
                        .into_iter()
                        .filter(|f| f != "state")
                        .collect();
                    candidate = mine.clone();
                    if fields.is_empty() {
                        println!("the current version already is yours; nothing to write");
                        return Ok(());
                    }
                }
                Choice::EditAgain => {
                    text = yaml_of(kind, name, &merged)?;
                    base = theirs;
                    continue 'edit;
                }
                Choice::Discard => {
                    println!("discarded your changes; {name} is as {updated_by} left it");
                    return Ok(());
                }
            }
            base = theirs;
        }
    }
}
