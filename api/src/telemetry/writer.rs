//! The single writer of samples. Producers (GraphQL, HTTP push, pollers, the
//! demo) submit validated rows and wait; the writer coalesces whatever is
//! queued into one transaction, commits, and only then answers each producer
//! with how many of its rows were new, and publishes the new rows on the
//! [`Bus`] for live subscribers. The queue is bounded: when storage
//! falls behind, producers wait, and after a timeout get `RETRY_LATER` —
//! nothing acknowledged is ever dropped.

use std::collections::HashSet;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use super::checks::Checked;
use super::store::{self, SampleKey};
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
        let all: Vec<_> = jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect();
        match store::write(&db, &all).await {
            Ok(mut inserted) => {
                let events = committed_events(&all, &inserted);
                for job in jobs {
                    let stored = count_new(&job.rows, &mut inserted);
                    let _ = job.reply.send(Ok(stored));
                }
                bus.publish(events).await;
            }
            Err(err) => {
                tracing::error!(%err, rows = all.len(), "writing samples failed; producers will retry");
                for job in jobs {
                    let _ = job.reply.send(Err(ApiError::RetryLater(
                        "storage is unavailable; retry later".into(),
                    )));
                }
            }
        }
    }
}

/// Events for the rows that were new (first occurrence of each new key).
fn committed_events(rows: &[Checked], inserted: &HashSet<SampleKey>) -> Vec<SampleEvent> {
    let mut unclaimed = inserted.clone();
    rows.iter()
        .filter(|r| unclaimed.remove(&(r.sample.battery_id, r.sample.ts)))
        .filter_map(|r| {
            r.owner.map(|owner| SampleEvent {
                owner,
                sample: r.sample.clone(),
            })
        })
        .collect()
}

/// Rows of one job that were new; each new key counts once, for the first
/// job that carried it.
fn count_new(rows: &[Checked], inserted: &mut HashSet<SampleKey>) -> u64 {
    rows.iter()
        .filter(|r| inserted.remove(&(r.sample.battery_id, r.sample.ts)))
        .count() as u64
}
