//! Watchers of the etcd engine: an etcd watch on the change records under
//! a prefix, from a revision on, with the previous record of each so that a
//! change carries its `before`. etcd delivers one commit's records
//! together and in revision order; asked every few seconds, it says how far
//! it has got, which becomes [`WatchItem::Progress`].

use etcd_client::{WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{EtcdStore, decode_event, etcd_error, etcd_revision, revision_of};
use crate::PROGRESS_EVERY;
use crate::{ChangeEvent, ChangeStream, StoreError, WatchItem};

/// Items a watcher's stream buffers before its task waits for the reader.
const BUFFER: usize = 256;

pub(crate) async fn start(store: &EtcdStore, prefix: &[u8], start: u64) -> Result<ChangeStream, StoreError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(etcd_revision(start))
        .with_prev_key();
    let (member, client) = store.client();
    let stream = match client
        .watch_client()
        .watch(store.keys.history(prefix), Some(options))
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            let e = etcd_error(e);
            if matches!(e, StoreError::Unavailable(_)) {
                store.failed(member);
            }
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    let store = store.clone();
    tokio::spawn(async move {
        if let StoreError::Unavailable(_) = follow(stream, start, tx).await {
            store.failed(member);
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

type Sender = mpsc::Sender<Result<WatchItem, StoreError>>;

/// Forwards the watch until it fails or the reader goes away; returns why
/// it ended.
async fn follow(mut stream: WatchStream, mut next: u64, tx: Sender) -> StoreError {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        let outcome = tokio::select! {
            message = stream.message() => match message {
                Ok(Some(response)) => forward(response, &mut next, &tx).await,
                Ok(None) => Err(StoreError::Unavailable("etcd ended the watch".into())),
                Err(e) => Err(etcd_error(e)),
            },
            _ = tick.tick() => stream.request_progress().await.map_err(etcd_error),
            () = tx.closed() => return StoreError::Closed,
        };
        if let Err(e) = outcome {
            let e = match e {
                StoreError::Compacted { oldest, .. } => StoreError::Compacted {
                    requested: next,
                    oldest,
                },
                e => e,
            };
            // The reader may be gone already; either way the watch ends.
            let _ = tx.send(Err(e.clone())).await;
            return e;
        }
    }
}

/// Sends one etcd response's changes, a group per revision, or its
/// progress.
async fn forward(response: WatchResponse, next: &mut u64, tx: &Sender) -> Result<(), StoreError> {
    if response.canceled() {
        if response.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: *next,
                oldest: revision_of(response.compact_revision()),
            });
        }
        return Err(StoreError::Unavailable(format!(
            "etcd cancelled the watch: {}",
            response.cancel_reason()
        )));
    }
    if response.events().is_empty() {
        if !response.created()
            && let Some(header) = response.header()
        {
            let reached = revision_of(header.revision()).max(next.saturating_sub(1));
            send(tx, Ok(WatchItem::Progress(reached))).await?;
        }
        return Ok(());
    }
    let mut group: Vec<ChangeEvent> = Vec::new();
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let mut change = decode_event(kv)?;
        if let Some(prev) = event.prev_kv() {
            change.before = decode_event(prev)?.after;
        }
        if group.first().is_some_and(|g| g.revision != change.revision) {
            flush(&mut group, next, tx).await?;
        }
        group.push(change);
    }
    flush(&mut group, next, tx).await
}

async fn flush(group: &mut Vec<ChangeEvent>, next: &mut u64, tx: &Sender) -> Result<(), StoreError> {
    let Some(revision) = group.first().map(|g| g.revision) else {
        return Ok(());
    };
    group.sort_by(|a, b| a.key.cmp(&b.key));
    send(tx, Ok(WatchItem::Changes(std::mem::take(group)))).await?;
    *next = revision + 1;
    Ok(())
}

async fn send(tx: &Sender, item: Result<WatchItem, StoreError>) -> Result<(), StoreError> {
    tx.send(item).await.map_err(|_| StoreError::Closed)
}
