//! Watch and history: the store's change log as `arbiter.v1.Change`
//! messages (ARCHITECTURE.md section 7).
//!
//! A watch follows the tenant's key prefix in the store and turns each
//! change event into a `Change` of its kind, filtered by collection and by
//! the List filter. The changes go to the client through a bounded buffer
//! that the watch never waits on: when the client reads too slowly and the
//! buffer is full, the watch ends with `WATCH_TOO_SLOW` and the revision to
//! resume from, and writers never notice. One commit's changes are buffered
//! together or not at all, so a resume neither skips nor repeats any.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use arbiter_api::v1::{Change, Policy, Prompt, User, VirtualMachine, change};
use arbiter_store::{ChangeEvent, ChangeStream, Scan, Store, StoreError, Versioned, WatchItem};
use futures::{Stream, StreamExt};
use prost_types::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Access, Caller};
use crate::engine::{Engine, decode};
use crate::error::Error;
use crate::filter::Filter;
use crate::kind::{Kind, Resource};
use crate::kinds::{POLICY, PROMPT, USER, VM};
use crate::names;
use crate::page;

/// Changes buffered for a client before it counts as too slow.
pub const WATCH_BUFFER: usize = 1024;
/// Objects read per page of a watch's initial listing.
const INITIAL_PAGE: usize = 500;

/// The kinds whose changes can be watched, by collection.
const WATCHED: [&Kind; 4] = [&VM, &USER, &PROMPT, &POLICY];

/// A watch (`WatchChanges`).
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// `tenants/{tenant}`.
    pub parent: String,
    /// Collections to follow; empty: every one the caller may read.
    pub collections: Vec<String>,
    /// First revision to send; 0: from now on.
    pub start_revision: u64,
    /// First every current object as ADDED, then a BOOKMARK.
    pub send_initial: bool,
    /// List's filter grammar, tested on each change's object.
    pub filter: String,
}

/// One page of a resource's history (`ListRevisions`).
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionsPage {
    /// Newest first.
    pub revisions: Vec<Change>,
    /// Token of the next (older) page, empty on the last.
    pub next_page_token: String,
}

/// A collection a watch follows, with its filter.
#[derive(Debug)]
struct Follow {
    kind: &'static Kind,
    filter: Filter,
}

/// Converts store events of one kind into changes.
trait Watched: Resource {
    fn object(self) -> change::Object;
}

impl Watched for VirtualMachine {
    fn object(self) -> change::Object {
        change::Object::Vm(self)
    }
}
impl Watched for User {
    fn object(self) -> change::Object {
        change::Object::User(self)
    }
}
impl Watched for Prompt {
    fn object(self) -> change::Object {
        change::Object::Prompt(self)
    }
}
impl Watched for Policy {
    fn object(mut self) -> change::Object {
        self.module.clear();
        change::Object::Policy(self)
    }
}

/// The kind of a collection name (`vms`), if it is one of the API's.
pub fn kind_of_collection(collection: &str) -> Option<&'static Kind> {
    WATCHED.iter().copied().find(|k| k.collection == collection)
}

/// The collection segment of a store key (`{tenant}/{collection}/{id}`).
fn collection_of(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()?.split('/').nth(1)
}

fn timestamp(unix_ms: i64) -> Timestamp {
    Timestamp {
        seconds: unix_ms.div_euclid(1000),
        nanos: i32::try_from(unix_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// The fields that differ between two versions: the kind's fields,
/// `state`, and `labels.KEY` per label added, removed or changed.
pub fn changed_fields<R: Resource>(before: &R, after: &R) -> Vec<String> {
    let mut out: Vec<String> = R::KIND
        .fields
        .iter()
        .filter(|f| before.differs(after, f.name))
        .map(|f| f.name.to_string())
        .collect();
    let (b, a) = (before.meta(), after.meta());
    if b.state != a.state {
        out.push("state".into());
    }
    let keys: std::collections::BTreeSet<&String> = b.labels.keys().chain(a.labels.keys()).collect();
    for key in keys {
        if b.labels.get(key) != a.labels.get(key) {
            out.push(format!("labels.{key}"));
        }
    }
    out
}

/// A change event as a `Change`, with the object it carries (for the
/// filter).
fn typed<R: Watched>(event: &ChangeEvent) -> Result<(Change, R), Error> {
    let version = |value: &Vec<u8>| {
        decode::<R>(
            &event.key,
            &Versioned {
                revision: event.revision,
                value: value.clone(),
            },
        )
    };
    let before = event.before.as_ref().map(version).transpose()?;
    let after = event.after.as_ref().map(version).transpose()?;
    let (kind, changed_fields) = match (&before, &after) {
        (None, _) => (change::Type::Added, Vec::new()),
        (Some(_), None) => (change::Type::Deleted, Vec::new()),
        (Some(b), Some(a)) => (change::Type::Modified, changed_fields(b, a)),
    };
    let object = after
        .or(before)
        .ok_or_else(|| Error::Internal("reading a change without an object".into()))?;
    let change = Change {
        r#type: kind as i32,
        revision: event.revision,
        name: names::name_of_key(&event.key),
        principal: event.principal.clone(),
        request_id: event.request_id.clone(),
        // The initial listing's objects carry no change record: no time.
        time: (event.time_unix_ms != 0).then(|| timestamp(event.time_unix_ms)),
        operation: event.operation.clone(),
        changed_fields,
        object: None,
    };
    Ok((change, object))
}

/// The change of `event` if it passes `filter` (`None`: no filter).
fn convert(event: &ChangeEvent, filter: Option<&Filter>) -> Result<Option<Change>, Error> {
    fn one<R: Watched>(event: &ChangeEvent, filter: Option<&Filter>) -> Result<Option<Change>, Error> {
        let (mut change, object) = typed::<R>(event)?;
        if filter.is_some_and(|f| !f.matches(&object)) {
            return Ok(None);
        }
        change.object = Some(object.object());
        Ok(Some(change))
    }
    match collection_of(&event.key) {
        Some("vms") => one::<VirtualMachine>(event, filter),
        Some("users") => one::<User>(event, filter),
        Some("prompts") => one::<Prompt>(event, filter),
        Some("policies") => one::<Policy>(event, filter),
        _ => Ok(None),
    }
}

fn bookmark(revision: u64) -> Change {
    Change {
        r#type: change::Type::Bookmark as i32,
        revision,
        ..Change::default()
    }
}

/// A store failure as the client sees it.
pub(crate) fn store_error(what: &str, e: StoreError) -> Error {
    match e {
        StoreError::Compacted { requested, oldest } => Error::RevisionCompacted { requested, oldest },
        e => Error::storage(what, e),
    }
}

impl<S: Store> Engine<S> {
    /// Starts a watch of a tenant's changes.
    pub async fn watch(&self, caller: &Caller, req: WatchRequest) -> Result<ChangeFeed, Error> {
        let tenant = names::parse_parent("parent", &req.parent)?;
        caller.authorize(&tenant, Access::Read)?;
        let follows = follows(caller, &tenant, &req.collections, &req.filter)?;
        let prefix = format!("{tenant}/").into_bytes();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let (end_tx, end) = oneshot::channel();
        let mut pump = Pump {
            follows,
            tx,
            end: Some(end_tx),
            seen: HashMap::new(),
        };
        let start = if req.send_initial {
            let snapshot = self.initial(&prefix, &mut pump).await?;
            pump.offer(vec![bookmark(snapshot)]);
            snapshot + 1
        } else {
            req.start_revision
        };
        let stream = self
            .store()
            .watch(&prefix, start)
            .await
            .map_err(|e| store_error("starting a watch", e))?;
        tokio::spawn(pump.run(stream));
        Ok(ChangeFeed { rx, end, done: false })
    }

    /// Sends every current object of the followed collections as ADDED;
    /// returns the revision of the first page's snapshot. Objects that a
    /// later page shows newer than that are remembered, so that the watch
    /// does not send their older changes again.
    async fn initial(&self, prefix: &[u8], pump: &mut Pump) -> Result<u64, Error> {
        let mut snapshot = None;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut page: Vec<(Vec<u8>, Versioned)> = Vec::with_capacity(INITIAL_PAGE);
            let revision = self
                .store()
                .scan(prefix, after.as_deref(), &mut |key, stored| {
                    page.push((key.to_vec(), stored));
                    if page.len() >= INITIAL_PAGE {
                        Scan::Stop
                    } else {
                        Scan::Continue
                    }
                })
                .await
                .map_err(|e| store_error("listing the initial objects", e))?;
            let first = *snapshot.get_or_insert(revision);
            let full = page.len() >= INITIAL_PAGE;
            for (key, stored) in page {
                if stored.revision > first {
                    pump.seen.insert(key.clone(), stored.revision);
                }
                let event = ChangeEvent {
                    revision: stored.revision,
                    key: key.clone(),
                    after: Some(stored.value),
                    ..ChangeEvent::default()
                };
                if let Some(change) = pump.convert(&event)? {
                    pump.send_initial(change).await?;
                }
                after = Some(key);
            }
            if !full {
                return Ok(first);
            }
        }
    }

    /// One page of a resource's retained history, newest first.
    pub async fn list_revisions(
        &self,
        caller: &Caller,
        name: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<RevisionsPage, Error> {
        let (kind, parsed) = parse_any_name(name)?;
        caller.authorize(&parsed.tenant, kind.read)?;
        let size = page::size(page_size)?;
        let before = match page_token {
            "" => 0,
            token => page::decode(token, name, "revisions", "")?
                .parse::<u64>()
                .map_err(|_| Error::field("page_token", "not a page token of this history"))?,
        };
        let mut events = self
            .store()
            .history(&parsed.key(kind), before, size + 1)
            .await
            .map_err(|e| store_error("reading a history", e))?;
        let mut next_page_token = String::new();
        if events.len() > size {
            events.truncate(size);
            if let Some(last) = events.last() {
                next_page_token = page::encode(name, "revisions", "", &last.revision.to_string());
            }
        }
        let revisions = events
            .iter()
            .map(|e| convert(e, None))
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RevisionsPage {
            revisions,
            next_page_token,
        })
    }
}

/// Parses `tenants/{tenant}/{collection}/{id}` of any watched kind.
fn parse_any_name(name: &str) -> Result<(&'static Kind, names::Name), Error> {
    let collection = name.split('/').nth(2).unwrap_or_default();
    let kind = kind_of_collection(collection).ok_or_else(|| {
        Error::field(
            "name",
            format!("{name:?} is not a resource name; expected \"tenants/{{tenant}}/{{vms|users|prompts|policies}}/{{id}}\""),
        )
    })?;
    Ok((kind, names::parse_name("name", kind, name)?))
}

/// The collections a watch follows, each with the filter parsed for its
/// kind.
fn follows(
    caller: &Caller,
    tenant: &str,
    collections: &[String],
    filter: &str,
) -> Result<Vec<Follow>, Error> {
    let kinds: Vec<&'static Kind> = if collections.is_empty() {
        WATCHED
            .iter()
            .copied()
            .filter(|k| caller.authorize(tenant, k.read).is_ok())
            .collect()
    } else {
        let mut kinds = Vec::new();
        for (i, c) in collections.iter().enumerate() {
            let kind = kind_of_collection(c).ok_or_else(|| {
                Error::field(
                    format!("collections[{i}]"),
                    format!("{c:?} is not a collection; use vms, users, prompts or policies"),
                )
            })?;
            caller.authorize(tenant, kind.read)?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    };
    kinds
        .into_iter()
        .map(|kind| {
            Ok(Follow {
                kind,
                filter: Filter::parse(kind, filter)?,
            })
        })
        .collect()
}

/// Moves changes from the store's stream into the client's buffer.
struct Pump {
    follows: Vec<Follow>,
    tx: mpsc::Sender<Change>,
    end: Option<oneshot::Sender<Error>>,
    /// Objects the initial listing sent newer than its snapshot.
    seen: HashMap<Vec<u8>, u64>,
}

impl Pump {
    fn convert(&self, event: &ChangeEvent) -> Result<Option<Change>, Error> {
        let Some(follow) =
            collection_of(&event.key).and_then(|c| self.follows.iter().find(|f| f.kind.collection == c))
        else {
            return Ok(None);
        };
        convert(event, Some(&follow.filter))
    }

    async fn send_initial(&self, change: Change) -> Result<(), Error> {
        self.tx
            .send(change)
            .await
            .map_err(|_| Error::Internal("sending the initial objects".into()))
    }

    /// Buffers one revision's changes whole, or ends the watch as too
    /// slow. Returns whether the watch goes on.
    fn offer(&mut self, changes: Vec<Change>) -> bool {
        let Some(revision) = changes.first().map(|c| c.revision) else {
            return true;
        };
        if self.tx.capacity() < changes.len() {
            self.finish(Error::WatchTooSlow {
                resume_revision: revision,
            });
            return false;
        }
        for change in changes {
            if self.tx.try_send(change).is_err() {
                return false;
            }
        }
        true
    }

    fn finish(&mut self, e: Error) {
        if let Some(end) = self.end.take() {
            // The client may be gone; then nobody needs to know.
            let _ = end.send(e);
        }
    }

    async fn run(mut self, mut stream: ChangeStream) {
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = self.tx.closed() => return,
            };
            let go_on = match item {
                Some(Ok(WatchItem::Changes(events))) => match self.changes(&events) {
                    Ok(changes) => self.offer(changes),
                    Err(e) => {
                        self.finish(e);
                        false
                    }
                },
                Some(Ok(WatchItem::Progress(revision))) => self.offer(vec![bookmark(revision)]),
                Some(Err(e)) => {
                    self.finish(store_error("watching changes", e));
                    false
                }
                None => {
                    self.finish(Error::storage("watching changes", "the change stream ended"));
                    false
                }
            };
            if !go_on {
                return;
            }
        }
    }

    fn changes(&mut self, events: &[ChangeEvent]) -> Result<Vec<Change>, Error> {
        let mut out = Vec::new();
        for event in events {
            if let Some(seen) = self.seen.get(&event.key) {
                if event.revision <= *seen {
                    continue;
                }
                self.seen.remove(&event.key);
            }
            out.extend(self.convert(event)?);
        }
        Ok(out)
    }
}

/// The changes of a watch, as the client reads them; after the last one,
/// the error that ended the watch, if any.
#[derive(Debug)]
pub struct ChangeFeed {
    rx: mpsc::Receiver<Change>,
    end: oneshot::Receiver<Error>,
    done: bool,
}

impl Stream for ChangeFeed {
    type Item = Result<Change, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(change)) => Poll::Ready(Some(Ok(change))),
            Poll::Ready(None) => {
                self.done = true;
                // The error is sent before the buffer's sender is dropped.
                Poll::Ready(self.end.try_recv().ok().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
