//! Connection status of polled devices, shared by every replica. The
//! replica holding a unit's poll lease keeps its state and reports it on a
//! [`Topic`] (Redis across replicas, in process otherwise): at once when the
//! status changes, and as a snapshot at every rescan. Every replica answers
//! `Bms.connection` and `bmsStatus` from the reports it received, so it does
//! not matter which replica polls a unit.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::bus::Owner;
use crate::bus::topic::Topic;

/// How a polled BMS is doing.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionStatus {
    /// Not polled (not Modbus, or polling disabled on every replica).
    Unknown,
    /// The last poll succeeded.
    Online,
    /// Connected, but recent polls failed.
    Degraded,
    /// Unreachable, or failing repeatedly; reconnecting with backoff.
    Offline,
}

/// The connection of one BMS.
#[derive(SimpleObject, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BmsConnectionState {
    pub status: ConnectionStatus,
    /// When the status last changed.
    pub since: DateTime<Utc>,
    /// Last successful poll (as of the polling replica's latest report).
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// A change of status, for subscribers.
#[derive(Clone, Debug)]
pub struct StatusChange {
    pub bms_id: i64,
    pub owner: Owner,
    pub connection: BmsConnectionState,
}

/// What the polling replica says of one unit; `None`: no longer polled.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub bms_id: i64,
    pub owner: Owner,
    pub connection: Option<BmsConnectionState>,
    /// The status changed (subscribers hear of it).
    pub changed: bool,
}

pub struct StatusRegistry {
    /// Units polled by this replica.
    own: RwLock<HashMap<i64, (Owner, BmsConnectionState)>>,
    /// Latest report of every polled unit, from whichever replica polls it.
    seen: Arc<RwLock<HashMap<i64, BmsConnectionState>>>,
    /// To the task that publishes reports, in order.
    outbox: mpsc::UnboundedSender<Vec<StatusReport>>,
    changes: broadcast::Sender<StatusChange>,
    offline_after: u32,
}

impl StatusRegistry {
    /// `offline_after`: consecutive failed polls before a BMS is OFFLINE.
    /// Must run inside a Tokio runtime (it listens to `reports`).
    pub fn new(offline_after: u32, reports: Topic<Vec<StatusReport>>) -> Self {
        let seen: Arc<RwLock<HashMap<i64, BmsConnectionState>>> = Arc::default();
        let changes = broadcast::channel(1024).0;
        tokio::spawn(apply_reports(
            reports.subscribe(),
            seen.clone(),
            changes.clone(),
        ));
        let (outbox, mut pending) = mpsc::unbounded_channel::<Vec<StatusReport>>();
        tokio::spawn(async move {
            while let Some(batch) = pending.recv().await {
                reports.publish(batch).await;
            }
        });
        Self {
            own: RwLock::new(HashMap::new()),
            seen,
            outbox,
            changes,
            offline_after: offline_after.max(1),
        }
    }

    /// The unit's connection as last reported by the replica polling it.
    pub fn get(&self, bms_id: i64) -> Option<BmsConnectionState> {
        self.seen.read().ok()?.get(&bms_id).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.changes.subscribe()
    }

    fn update(&self, bms_id: i64, owner: Owner, f: impl FnOnce(&mut BmsConnectionState)) {
        let report = {
            let Ok(mut own) = self.own.write() else {
                return;
            };
            let now = crate::clock::now();
            let (_, conn) = own.entry(bms_id).or_insert_with(|| {
                (
                    owner,
                    BmsConnectionState {
                        status: ConnectionStatus::Unknown,
                        since: now,
                        last_seen_at: None,
                        last_error: None,
                        consecutive_failures: 0,
                    },
                )
            });
            let before = conn.status;
            f(conn);
            if conn.status == before {
                return;
            }
            conn.since = now;
            tracing::info!(bms = bms_id, from = ?before, to = ?conn.status, error = ?conn.last_error, "BMS connection status changed");
            StatusReport {
                bms_id,
                owner,
                connection: Some(conn.clone()),
                changed: true,
            }
        };
        self.send(vec![report]);
    }

    fn send(&self, reports: Vec<StatusReport>) {
        if !reports.is_empty() {
            let _ = self.outbox.send(reports);
        }
    }

    /// Reports the state of every unit this replica polls (called at each
    /// rescan, so other replicas' `lastSeenAt` stays current).
    pub fn report_all(&self) {
        let reports = self.own.read().map_or_else(
            |_| Vec::new(),
            |own| {
                own.iter()
                    .map(|(id, (owner, conn))| StatusReport {
                        bms_id: *id,
                        owner: *owner,
                        connection: Some(conn.clone()),
                        changed: false,
                    })
                    .collect()
            },
        );
        self.send(reports);
    }

    pub fn success(&self, bms_id: i64, owner: Owner) {
        self.update(bms_id, owner, |c| {
            c.status = ConnectionStatus::Online;
            c.last_seen_at = Some(crate::clock::now());
            c.consecutive_failures = 0;
            c.last_error = None;
        });
    }

    /// A failed poll (`connected`) or connection attempt.
    pub fn failure(&self, bms_id: i64, owner: Owner, error: String, connected: bool) {
        let offline_after = self.offline_after;
        self.update(bms_id, owner, |c| {
            c.consecutive_failures += 1;
            c.last_error = Some(error);
            c.status = if connected && c.consecutive_failures < offline_after {
                ConnectionStatus::Degraded
            } else {
                ConnectionStatus::Offline
            };
        });
    }

    /// This replica stops polling the unit. `gone`: nobody polls it any
    /// more (removed, or no longer Modbus); otherwise another replica took
    /// it over and will report it.
    pub fn forget(&self, bms_id: i64, gone: bool) {
        let owner = self
            .own
            .write()
            .ok()
            .and_then(|mut own| own.remove(&bms_id))
            .map(|(o, _)| o);
        if gone && let Some(owner) = owner {
            self.send(vec![StatusReport {
                bms_id,
                owner,
                connection: None,
                changed: false,
            }]);
        }
    }
}

/// Keeps `seen` up to date from every replica's reports and tells
/// subscribers of changes.
async fn apply_reports(
    mut rx: broadcast::Receiver<Arc<Vec<StatusReport>>>,
    seen: Arc<RwLock<HashMap<i64, BmsConnectionState>>>,
    changes: broadcast::Sender<StatusChange>,
) {
    loop {
        let reports = match rx.recv().await {
            Ok(r) => r,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "BMS status reports lagged");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for r in reports.iter() {
            if let Ok(mut seen) = seen.write() {
                match &r.connection {
                    Some(c) => seen.insert(r.bms_id, c.clone()),
                    None => seen.remove(&r.bms_id),
                };
            }
            if r.changed
                && let Some(connection) = r.connection.clone()
            {
                let _ = changes.send(StatusChange {
                    bms_id: r.bms_id,
                    owner: r.owner,
                    connection,
                });
            }
        }
    }
}
