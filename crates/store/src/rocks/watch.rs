//! Watchers of the RocksDB engine. Each watcher first reads the log from
//! its start revision, then follows the sequencer's feed of committed
//! batches; if it falls so far behind that the feed dropped batches it had
//! not seen, it reads the log again from where it was. So a watcher never
//! holds up the sequencer, and never misses or repeats a revision.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use crate::{ChangeEvent, ChangeStream, StoreError, WatchItem};

/// Items a watcher's stream buffers before its task waits for the reader.
const BUFFER: usize = 256;
/// How often an idle watcher says how far it has got.
use crate::PROGRESS_EVERY;

pub(crate) fn start(shared: &Arc<Shared>, prefix: &[u8], start: u64) -> Result<ChangeStream, StoreError> {
    // Subscribe before reading the revision: every batch after it is then
    // in the feed, every batch up to it in the log.
    let feed = shared.feed.subscribe();
    let current = shared.revision.load(Ordering::Acquire);
    let start = if start == 0 { current + 1 } else { start };
    shared.check_retained(start)?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let watcher = Watcher {
        shared: Arc::clone(shared),
        prefix: prefix.to_vec(),
        next: start,
        tx,
    };
    tokio::spawn(watcher.run(feed));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    /// The next revision to deliver.
    next: u64,
    tx: mpsc::Sender<Result<WatchItem, StoreError>>,
}

/// Why a watcher stops.
enum Stop {
    /// The reader went away.
    Gone,
}

impl Watcher {
    async fn run(mut self, mut feed: tokio::sync::broadcast::Receiver<Arc<Vec<ChangeEvent>>>) {
        let result = async {
            self.catch_up().await?;
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            let mut quiet = true;
            loop {
                tokio::select! {
                    batch = feed.recv() => match batch {
                        Ok(batch) => {
                            quiet &= !self.deliver(&batch).await?;
                            if let Some(last) = batch.last() {
                                self.next = self.next.max(last.revision + 1);
                            }
                        }
                        Err(RecvError::Lagged(_)) => self.catch_up().await?,
                        Err(RecvError::Closed) => return Ok(()),
                    },
                    _ = tick.tick() => {
                        if quiet {
                            self.send(Ok(WatchItem::Progress(self.next - 1))).await?;
                        }
                        quiet = true;
                    }
                    // The reader went away: let go of the store at once.
                    () = self.tx.closed() => return Err(Stop::Gone),
                }
            }
        }
        .await;
        let _: Result<(), Stop> = result;
    }

    /// Delivers what the log holds from `next` up to the current revision.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let current = self.shared.revision.load(Ordering::Acquire);
            if self.next > current {
                return Ok(());
            }
            if let Err(e) = self.shared.check_retained(self.next) {
                return self.fail(e).await;
            }
            // Read a bounded slice at a time: a watcher far behind must not
            // hold the whole log in memory.
            let to = current.min(self.next.saturating_add(1023));
            let events = match self.shared.log_range(self.next, to) {
                Ok(events) => events,
                Err(e) => return self.fail(e).await,
            };
            self.deliver(&events).await?;
            self.next = to + 1;
        }
    }

    /// Sends the events at or after `next` under the prefix, one item per
    /// revision; says whether it sent any.
    async fn deliver(&mut self, events: &[ChangeEvent]) -> Result<bool, Stop> {
        let mut sent = false;
        let mut group: Vec<ChangeEvent> = Vec::new();
        for event in events.iter().filter(|e| e.revision >= self.next) {
            if group.first().is_some_and(|g| g.revision != event.revision) {
                self.send(Ok(WatchItem::Changes(std::mem::take(&mut group))))
                    .await?;
                sent = true;
            }
            if event.key.starts_with(&self.prefix) {
                group.push(event.clone());
            }
        }
        if !group.is_empty() {
            self.send(Ok(WatchItem::Changes(group))).await?;
            sent = true;
        }
        Ok(sent)
    }

    async fn send(&self, item: Result<WatchItem, StoreError>) -> Result<(), Stop> {
        self.tx.send(item).await.map_err(|_| Stop::Gone)
    }

    async fn fail(&self, e: StoreError) -> Result<(), Stop> {
        self.send(Err(e)).await?;
        Err(Stop::Gone)
    }
}
