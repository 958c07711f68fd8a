//! Connection status of polled devices, as this replica sees them, with a
//! stream of changes for the `bmsStatus` subscription.

use std::collections::HashMap;
use std::sync::RwLock;

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::bus::Owner;

/// How a polled BMS is doing.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Not polled by this server (not Modbus, or polling disabled).
    Unknown,
    /// The last poll succeeded.
    Online,
    /// Connected, but recent polls failed.
    Degraded,
    /// Unreachable, or failing repeatedly; reconnecting with backoff.
    Offline,
}

/// The connection of one BMS.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct BmsConnectionState {
    pub status: ConnectionStatus,
    /// When the status last changed.
    pub since: DateTime<Utc>,
    /// Last successful poll.
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

pub struct StatusRegistry {
    entries: RwLock<HashMap<i64, (Owner, BmsConnectionState)>>,
    changes: broadcast::Sender<StatusChange>,
    offline_after: u32,
}

impl StatusRegistry {
    /// `offline_after`: consecutive failed polls before a BMS is OFFLINE.
    pub fn new(offline_after: u32) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            changes: broadcast::channel(1024).0,
            offline_after: offline_after.max(1),
        }
    }

    pub fn get(&self, bms_id: i64) -> Option<BmsConnectionState> {
        self.entries
            .read()
            .ok()?
            .get(&bms_id)
            .map(|(_, c)| c.clone())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.changes.subscribe()
    }

    fn update(&self, bms_id: i64, owner: Owner, f: impl FnOnce(&mut BmsConnectionState)) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        let now = crate::clock::now();
        let (_, conn) = entries.entry(bms_id).or_insert_with(|| {
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
        if conn.status != before {
            conn.since = now;
            tracing::info!(bms = bms_id, from = ?before, to = ?conn.status, error = ?conn.last_error, "BMS connection status changed");
            let _ = self.changes.send(StatusChange {
                bms_id,
                owner,
                connection: conn.clone(),
            });
        }
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

    pub fn forget(&self, bms_id: i64) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&bms_id);
        }
    }
}
