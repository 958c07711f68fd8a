//! The single writer of samples. Producers (GraphQL, HTTP push, pollers, the
//! demo) submit validated rows and wait; the writer coalesces whatever is
//! queued into one transaction, commits, and only then answers each producer
//! with how many of its rows were new, and publishes the new rows on the
//! [`Bus`] for live subscribers. The queue is bounded: when storage
//! falls behind, producers wait, and after a timeout get `RETRY_LATER` —
//! nothing acknowledged is ever dropped.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use super::checks::Checked;
use super::store;
use crate::bus::{Bus, SampleEvent};
use crate::error::{ApiError, ApiResult};

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
    /// Starts the writer task. It ends when every handle is dropped, after
    /// writing what is queued.
    pub fn start(
        db: DatabaseConnection,
        bus: Bus,
        batch_rows: usize,
        queue_depth: usize,
        enqueue_timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue_depth.max(1));
        tokio::spawn(run(db, bus, rx, batch_rows.max(1)));
        Self {
            tx,
            enqueue_timeout,
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

async fn run(db: DatabaseConnection, bus: Bus, mut rx: mpsc::Receiver<Job>, batch_rows: usize) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut rows = jobs[0].rows.len();
        while rows < batch_rows {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // One batch for the transaction; each job keeps its row count.
        let mut all = Vec::with_capacity(rows);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.reply, job.rows.len()));
            all.extend(job.rows);
        }
        match store::write(&db, &all).await {
            Ok(is_new) => {
                let mut flags = is_new.iter();
                for (reply, len) in replies {
                    let stored = flags.by_ref().take(len).filter(|n| **n).count() as u64;
                    let _ = reply.send(Ok(stored));
                }
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
                bus.publish(events).await;
            }
            Err(err) => {
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
