//! SQLite's write-ahead log, checkpointed off the sample writer's path.
//!
//! By default the connection that commits past 1,000 pages of log copies
//! them into the database file, and syncs both, before its commit returns.
//! A sample write of 1,000 batteries dirties about as many index pages, so
//! every commit checkpointed: the writer spent a third of its time in the
//! kernel copying pages it would rewrite in the next commit, and a
//! subscriber waited for the syncs. Here a task checkpoints every
//! [`INTERVAL`] on a connection of its own, copying each page once, however
//! often it was rewritten; a committer checkpoints only if the log passes
//! [`AUTOCHECKPOINT_PAGES`] (the task fell behind). Readers and the writer
//! go on meanwhile (a `PASSIVE` checkpoint waits for no one).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::mpsc::WeakSender;

/// How often the log is checkpointed. A checkpoint syncs the files, and
/// commits beside a long sync waited for it: at 25k samples/s over 1,000
/// batteries (about 100 MB of log a second), checkpoints every 500 ms
/// took the live bench's p99 to 62–79 ms with the roll-up fold off, every
/// 100 ms to 39 ms.
const INTERVAL: Duration = Duration::from_millis(100);

/// Log pages past which a committing connection checkpoints itself
/// (64 MiB of 4 KiB pages).
pub(super) const AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// Checkpoints every [`INTERVAL`] while `alive` (the writer's queue) has
/// senders.
pub fn spawn<T: Send + 'static>(
    db: DatabaseConnection,
    alive: WeakSender<T>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while alive.strong_count() > 0 {
            ticker.tick().await;
            if let Err(err) = db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(%err, "checkpointing the write-ahead log failed; will retry");
            }
        }
    })
}
