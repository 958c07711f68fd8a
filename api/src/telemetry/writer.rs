//! The writer of samples. Producers (GraphQL, HTTP push, pollers, the
//! demo) submit validated rows and wait; a writer task coalesces whatever is
//! queued into one transaction, commits, and only then answers each producer
//! with how many of its rows were new, and publishes the new rows on the
//! [`Bus`] for live subscribers. The queue is bounded: when storage
//! falls behind, producers wait, and after a timeout get `RETRY_LATER` —
//! nothing acknowledged is ever dropped. SQLite has one writer (it has one
//! write lock), on a thread of its own; PostgreSQL has `writers` of them,
//! so that one batch is prepared and committed while another is copied in.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::checks::Checked;
use super::store;
use crate::bus::{Bus, SampleEvent};
use crate::config::IngestConfig;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

struct Job {
    rows: Vec<Checked>,
    reply: oneshot::Sender<ApiResult<u64>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    enqueue_timeout: Duration,
}

impl Writer {
    /// Starts the writers on `writes` ([`crate::db::writer_connection`]),
    /// the task folding the roll-up backlog every `ingest.rollup_fold_ms`
    /// on the same connection (on SQLite both on the writer's thread,
    /// [`on_own_thread`], which hands what it commits to a publisher task
    /// on this runtime, [`Publish::Queued`]), and on SQLite the log's
    /// checkpoints ([`crate::db::wal`]) on `pool`. They end when every
    /// handle is dropped, after writing what is queued; a backlog left then
    /// is folded by the next fold (the next start's, or a read's).
    pub fn start(
        writes: DatabaseConnection,
        pool: &DatabaseConnection,
        bus: Bus,
        metrics: Metrics,
        config: &IngestConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let fold = super::fold::periodic(
            writes.clone(),
            Duration::from_millis(config.rollup_fold_ms),
            tx.downgrade(),
        );
        if pool.get_database_backend() == sea_orm::DbBackend::Sqlite {
            crate::db::wal::spawn(pool.clone(), tx.downgrade());
        }
        let rx = Arc::new(Mutex::new(rx));
        let batch_rows = config.batch_rows.max(1);
        if writes.get_database_backend() == sea_orm::DbBackend::Postgres {
            tokio::spawn(fold);
            for _ in 0..config.writers.max(1) {
                let publish = Publish::Here(bus.clone());
                let metrics = metrics.clone();
                tokio::spawn(run(
                    writes.clone(),
                    rx.clone(),
                    batch_rows,
                    publish,
                    metrics,
                ));
            }
        } else {
            let publish = Publish::publisher(bus);
            on_own_thread(run(writes, rx, batch_rows, publish, metrics), fold);
        }
        Self {
            tx,
            enqueue_timeout: Duration::from_millis(config.enqueue_timeout_ms),
        }
    }

    /// Stores `rows` durably; returns how many were new. Returns only after
    /// the transaction holding them has committed.
    pub async fn write(&self, rows: Vec<Checked>) -> ApiResult<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let (reply, answer) = oneshot::channel();
        match tokio::time::timeout(self.enqueue_timeout, self.tx.send(Job { rows, reply })).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ApiError::RetryLater("the sample writer has stopped".into())),
            Err(_) => {
                return Err(ApiError::RetryLater(format!(
                    "storage is {} s behind; retry later",
                    self.enqueue_timeout.as_secs()
                )));
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ApiError::RetryLater("the sample writer has stopped".into())))
    }
}

/// Runs SQLite's writer, and its periodic roll-up `fold`, on a thread of
/// their own, with a runtime of their own: the write runs there
/// synchronously ([`super::sqlite_write`]), and neither waits, between
/// two statements while it holds the one write lock, behind the
/// subscriber tasks that each commit wakes on the server's runtime (live
/// bench at 50k samples/s, with the sqlx writer of before: p50 67–89 ms
/// here, 154–172 ms as a task on the server's runtime). The thread ends
/// with the writer's queue. Should the thread not start, both run as
/// tasks.
fn on_own_thread(
    task: impl Future<Output = ()> + Send + 'static,
    fold: impl Future<Output = ()> + Send + 'static,
) {
    let task = async move {
        let fold = tokio::spawn(fold);
        task.await;
        // The fold ends at its next tick once the queue is gone.
        let _ = fold.await;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::warn!(%err, "no runtime for the sample writer's thread; writing on the server's");
            tokio::spawn(task);
            return;
        }
    };
    // The task is handed over once the thread is running, so that it is
    // still here to run as a task if the thread cannot start.
    let (hand_over, handed) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("sample-writer".into())
        .spawn(move || {
            if let Ok(task) = handed.recv() {
                runtime.block_on(task);
            }
        });
    match spawned {
        Ok(_) => {
            if hand_over.send(task).is_err() {
                tracing::error!("the sample writer's thread ended before it started writing");
            }
        }
        Err(err) => {
            tracing::warn!(%err, "no thread for the sample writer; writing on the server's runtime");
            tokio::spawn(task);
        }
    }
}

/// How a writer hands what it committed to the [`Bus`].
enum Publish {
    /// Publishes itself, before taking its next batch.
    Here(Bus),
    /// Queues it, in commit order, for a task on the server's runtime.
    /// SQLite's writer thread publishing itself spent a tenth of its time
    /// routing events to subscribers, while the next batch waited (live
    /// bench at 50k samples/s, where that thread was busy all the time).
    /// The queue holds [`PUBLISH_QUEUE`] batches: a publisher falling
    /// behind slows the writer rather than growing without bound.
    Queued(mpsc::Sender<Vec<SampleEvent>>),
}

/// Committed batches queued for the publisher at most.
const PUBLISH_QUEUE: usize = 64;

impl Publish {
    /// A publisher task on this runtime, ending with its queue.
    fn publisher(bus: Bus) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<SampleEvent>>(PUBLISH_QUEUE);
        tokio::spawn(async move {
            while let Some(events) = rx.recv().await {
                bus.publish(events).await;
            }
        });
        Self::Queued(tx)
    }

    async fn send(&self, events: Vec<SampleEvent>) {
        match self {
            Self::Here(bus) => bus.publish(events).await,
            Self::Queued(tx) => {
                if tx.send(events).await.is_err() {
                    tracing::error!("the publisher of committed samples has stopped");
                }
            }
        }
    }
}

/// Takes what is queued, up to `batch_rows` (at least one job); `None` when
/// every handle is gone and the queue is empty.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>, batch_rows: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.rows.len();
    let mut jobs = vec![first];
    while rows < batch_rows {
        match rx.try_recv() {
            Ok(job) => {
                rows += job.rows.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// Writes batches until the queue closes; each commit goes to `publish`
/// and is counted in `metrics`.
async fn run(
    db: DatabaseConnection,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    batch_rows: usize,
    publish: Publish,
    metrics: Metrics,
) {
    while let Some(jobs) = next_batch(&rx, batch_rows).await {
        let rows = jobs.iter().map(|j| j.rows.len()).sum();
        // One batch for the transaction; each job keeps its row count.
        let mut all = Vec::with_capacity(rows);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.reply, job.rows.len()));
            all.extend(job.rows);
        }
        let started = std::time::Instant::now();
        let written = store::write(&db, &all).await;
        let elapsed = started.elapsed();
        tracing::debug!(
            rows,
            jobs = replies.len(),
            ms = elapsed.as_secs_f64() * 1000.0,
            "sample batch written"
        );
        match written {
            Ok(is_new) => {
                let mut flags = is_new.iter();
                let mut stored_in_all = 0;
                for (reply, len) in replies {
                    let stored = flags.by_ref().take(len).filter(|n| **n).count() as u64;
                    stored_in_all += stored;
                    let _ = reply.send(Ok(stored));
                }
                metrics.observe_sample_write(elapsed, Some(stored_in_all));
                let events = all
                    .into_iter()
                    .zip(is_new)
                    .filter(|(_, n)| *n)
                    .filter_map(|(r, _)| {
                        r.owner.map(|owner| SampleEvent {
                            owner,
                            sample: r.sample,
                        })
                    })
                    .collect();
                publish.send(events).await;
            }
            Err(err) => {
                metrics.observe_sample_write(elapsed, None);
                tracing::error!(%err, rows = all.len(), "writing samples failed; producers will retry");
                for (reply, _) in replies {
                    let _ = reply.send(Err(ApiError::RetryLater(
                        "storage is unavailable; retry later".into(),
                    )));
                }
            }
        }
    }
}
