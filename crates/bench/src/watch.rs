//! Watchers under load: `--watchers N` opens N `WatchChanges` streams on
//! the tenants being written before the run, and measures how many changes
//! they receive per second and how long each took from the write's
//! timestamp (taken by the server just before it commits) to arrival.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use arbiter_api::v1::{WatchChangesRequest, change, changes_client::ChangesClient};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

/// What every watcher received.
#[derive(Debug)]
pub struct Watched {
    /// Delay from the change's timestamp to arrival, in microseconds.
    pub delay: Mutex<Histogram<u64>>,
    /// Changes received, over all watchers.
    pub events: AtomicU64,
    /// Streams that ended with an error.
    pub failures: AtomicU64,
}

/// Running watchers.
pub struct Watchers {
    pub watched: Arc<Watched>,
    tasks: Vec<JoinHandle<()>>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Opens `count` watchers spread over `targets` and `tenants`, from now
/// on, each waiting for its first bookmark-free read before returning.
pub async fn start(
    targets: &[String],
    token: &str,
    tenants: &[String],
    count: usize,
) -> anyhow::Result<Watchers> {
    let watched = Arc::new(Watched {
        delay: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        events: AtomicU64::new(0),
        failures: AtomicU64::new(0),
    });
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().context("bad token")?;
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let target = &targets[i % targets.len()];
        let channel = Endpoint::from_shared(target.clone())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {target}"))?;
        let mut request = tonic::Request::new(WatchChangesRequest {
            parent: format!("tenants/{}", tenants[i % tenants.len()]),
            collections: vec!["vms".into()],
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", token.clone());
        let mut stream = ChangesClient::new(channel)
            .watch_changes(request)
            .await
            .context("cannot start a watch")?
            .into_inner();
        let watched = Arc::clone(&watched);
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
            let mut count = 0;
            loop {
                match stream.next().await {
                    Some(Ok(c)) if c.r#type != change::Type::Bookmark as i32 => {
                        let sent = c
                            .time
                            .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000);
                        let delay = u64::try_from(now_micros() - sent).unwrap_or(1).max(1);
                        if let Some(h) = local.as_mut() {
                            h.saturating_record(delay);
                        }
                        count += 1;
                        // Publish in batches: the shared histogram is a lock.
                        if count % 256 == 0 {
                            publish(&watched, &mut local, &mut count).await;
                        }
                    }
                    Some(Ok(_)) => publish(&watched, &mut local, &mut count).await,
                    Some(Err(_)) | None => {
                        watched.failures.fetch_add(1, Ordering::Relaxed);
                        publish(&watched, &mut local, &mut count).await;
                        return;
                    }
                }
            }
        }));
    }
    Ok(Watchers { watched, tasks })
}

async fn publish(watched: &Watched, local: &mut Option<Histogram<u64>>, count: &mut u64) {
    if let Some(h) = local.as_mut() {
        let _ = watched.delay.lock().await.add(&*h);
        h.reset();
    }
    watched.events.fetch_add(*count, Ordering::Relaxed);
    *count = 0;
}

impl Watchers {
    /// Waits until the watchers have received `expected` changes in all (or
    /// `patience` passed), then stops them.
    pub async fn finish(self, expected: u64, patience: Duration) -> Arc<Watched> {
        let deadline = tokio::time::Instant::now() + patience;
        // Bookmarks flush each watcher's last partial batch every few seconds.
        while self.watched.events.load(Ordering::Relaxed) < expected && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.watched
    }
}
