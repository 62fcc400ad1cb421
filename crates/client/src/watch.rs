//! A watch that outlives its connections: it resumes after a disconnect
//! from the last revision it delivered in full, so that the caller sees
//! every change exactly once, and lists afresh when that revision is no
//! longer retained.

use std::collections::HashSet;
use std::time::Duration;

use arbiter_api::v1::{Change, WatchChangesRequest, change};
use tonic::Streaming;

use crate::{Backoff, Client, Error};

/// The longest wait between reconnects.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// A resuming stream of a tenant's changes; see [`Client::watch`].
#[derive(Debug)]
pub struct Watch {
    client: Client,
    request: WatchChangesRequest,
    stream: Option<Streaming<Change>>,
    /// Every change up to this revision was delivered.
    complete: u64,
    /// The revision being delivered (the changes of one commit share it),
    /// with the names delivered at it.
    partial: Option<(u64, HashSet<String>)>,
    /// Whether the current connection is still sending its initial listing.
    listing: bool,
    /// Whether the next connection lists afresh.
    relist: bool,
    /// Reconnects that failed in a row.
    failures: u32,
    backoff: Backoff,
    done: bool,
}

impl Client {
    /// Watches as `request` asks, resuming after disconnects and
    /// `WATCH_TOO_SLOW` without gaps or repeats. When the revision to
    /// resume from was compacted, [`Watch::next`] yields
    /// [`Error::RevisionCompacted`] once — drop what was built from earlier
    /// changes — and goes on with every current object as `ADDED`, then a
    /// `BOOKMARK`. Errors that a retry cannot fix end the watch.
    pub fn watch(&self, request: WatchChangesRequest) -> Watch {
        Watch {
            client: self.clone(),
            listing: request.send_initial,
            request,
            stream: None,
            complete: 0,
            partial: None,
            relist: false,
            failures: 0,
            backoff: Backoff {
                attempts: self.backoff.attempts,
                initial: Duration::from_millis(100),
                max: MAX_RECONNECT_WAIT,
            },
            done: false,
        }
    }
}

/// Whether a failure of the stream passes by reconnecting.
fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Transport(_)
            | Error::WatchTooSlow { .. }
            | Error::StoreUnavailable { .. }
            | Error::RateLimited { .. }
    ) || e.info().is_some_and(|i| i.code == tonic::Code::Unavailable)
}

impl Watch {
    /// The next change, `None` after an error that ends the watch.
    pub async fn next(&mut self) -> Option<Result<Change, Error>> {
        loop {
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(e) => {
                        if let Some(item) = self.failed(e).await {
                            return Some(item);
                        }
                    }
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(change)) => {
                    self.failures = 0;
                    if let Some(change) = self.accept(change) {
                        return Some(Ok(change));
                    }
                }
                Ok(None) => self.stream = None,
                Err(status) => {
                    self.stream = None;
                    if let Some(item) = self.failed(Error::from(status)).await {
                        return Some(item);
                    }
                }
            }
        }
    }

    /// The revision up to which every change was delivered.
    pub fn revision(&self) -> u64 {
        self.complete
    }

    async fn open(&mut self) -> Result<Streaming<Change>, Error> {
        let mut request = self.request.clone();
        if self.relist {
            request.start_revision = 0;
            request.send_initial = true;
        } else if let Some((revision, _)) = &self.partial {
            request.start_revision = *revision;
            request.send_initial = false;
        } else if self.complete > 0 {
            request.start_revision = self.complete + 1;
            request.send_initial = false;
        }
        let stream = self.client.changes().watch_changes(request.clone()).await?;
        self.listing = request.send_initial;
        self.relist = false;
        Ok(stream.into_inner())
    }

    /// Handles a failed connection: `Some` to hand the error to the caller.
    async fn failed(&mut self, e: Error) -> Option<Result<Change, Error>> {
        if let Error::RevisionCompacted { .. } = e {
            self.relist = true;
            self.partial = None;
            self.complete = 0;
            return Some(Err(e));
        }
        if !transient(&e) || self.failures >= self.backoff.attempts {
            self.done = true;
            return Some(Err(e));
        }
        let wait = e
            .retry_after()
            .unwrap_or_else(|| self.backoff.delay(self.failures));
        self.failures += 1;
        tokio::time::sleep(wait).await;
        None
    }

    /// Keeps track of what was delivered; `None` for a change delivered
    /// before (sent again after a reconnect).
    fn accept(&mut self, change: Change) -> Option<Change> {
        let revision = change.revision;
        if change.r#type == change::Type::Bookmark as i32 {
            self.listing = false;
            self.partial = None;
            self.complete = self.complete.max(revision);
            return Some(change);
        }
        if self.listing {
            // The initial listing: each object at its own revision.
            return Some(change);
        }
        if revision <= self.complete {
            return None;
        }
        match &mut self.partial {
            Some((at, names)) if *at == revision => {
                if !names.insert(change.name.clone()) {
                    return None;
                }
            }
            partial => {
                if let Some((at, _)) = partial {
                    self.complete = self.complete.max(*at);
                }
                *partial = Some((revision, HashSet::from([change.name.clone()])));
            }
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64, name: &str, kind: change::Type) -> Change {
        Change {
            r#type: kind as i32,
            revision,
            name: name.into(),
            ..Default::default()
        }
    }

    async fn watch() -> Watch {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let client =
            Client::from_channel(channel, crate::Options::default()).unwrap_or_else(|e| panic!("{e}"));
        client.watch(WatchChangesRequest::default())
    }

    #[tokio::test]
    async fn changes_sent_again_after_a_reconnect_are_not_delivered_twice() {
        let mut w = watch().await;
        let added = change::Type::Added;
        assert!(w.accept(change(5, "a", added)).is_some());
        assert!(w.accept(change(7, "b", added)).is_some());
        // Cut in the middle of revision 7's group: resume at 7.
        assert_eq!(w.complete, 5);
        assert_eq!(w.partial.as_ref().map(|p| p.0), Some(7));
        assert!(w.accept(change(7, "b", added)).is_none(), "seen");
        assert!(w.accept(change(7, "c", added)).is_some(), "the rest of the group");
        assert!(w.accept(change(5, "a", added)).is_none(), "older");
        assert!(w.accept(change(9, "a", added)).is_some());
        assert_eq!(w.revision(), 7);
        assert!(w.accept(change(12, "", change::Type::Bookmark)).is_some());
        assert_eq!(w.revision(), 12);
        assert!(w.partial.is_none());
    }
}
