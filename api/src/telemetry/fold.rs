//! The fold of the roll-up backlog into `battery_rollups`.
//!
//! A sample write appends its partial buckets to the backlog
//! ([`rollup::BACKLOG`]) and a fold adds them to the stored buckets, in one
//! transaction that also empties the backlog: each partial bucket is added
//! exactly once, a crash leaves it pending for the next fold, and replicas
//! folding at once take turns (an advisory lock on PostgreSQL; SQLite has
//! one writer). Writers no longer queue on the same roll-up rows, and a
//! bucket is rewritten once per fold rather than once per write.
//!
//! The same fold moves each battery's pointers (`last_sample_at`, and
//! `soh_pct` from the newest sample that has one) forward to the newest
//! of its partial buckets', never backwards: a battery row is rewritten
//! once per fold rather than by every write.
//!
//! A fold runs every `ingest.rollup_fold_ms` and before every read of
//! roll-ups (`batteryMetrics` at HOUR/DAY, prediction histories, plugin
//! inputs), so a reader sees every sample committed before it asked. A
//! battery's `lastSampleAt` and `sohPct` are as of the last fold;
//! `latestSample` reads the samples.
//! Partial buckets of a battery deleted meanwhile are dropped.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::mpsc::WeakSender;

use super::rollup::{self, BACKLOG, DAY, HOUR, KEY_COLUMNS};
use crate::error::ApiResult;

/// SQLite has one write lock, and a connection waiting for it polls
/// (sleeping up to 100 ms between tries): a fold waiting so behind
/// back-to-back sample writes took seconds, and writes waited as long
/// behind it. The sample writer and folds take turns here first (in the
/// order they ask), so neither polls for the other. One per process (a
/// SQLite deployment is one process).
pub(super) static SQLITE_WRITE_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serialises folds across replicas on PostgreSQL (one key among the
/// project's advisory locks).
const FOLD_LOCK: i64 = 7_202_612;

/// The statements adding the backlog to the roll-ups. Writes append
/// hourly partial buckets only, and a day's bucket is the sum of its
/// hours', so the fold derives the days from the hours it adds (a write
/// appending both had twice the rows to write, and the fold twice to
/// read). Partial buckets are summed per bucket (in key order) and merged
/// into the stored ones. On PostgreSQL one statement also takes them out of
/// the backlog (`DELETE … RETURNING`); on SQLite the fold's transaction
/// deletes them after. Partial DAY buckets left by an older version repeat
/// their HOUR ones and are dropped. PostgreSQL's statement also moves the
/// battery pointers ([`move_pointers`]); SQLite's fold runs
/// [`sqlite_pointer_statement`] before emptying the backlog.
fn fold_statements(backend: DbBackend) -> Vec<String> {
    let values = rollup::value_columns();
    let names: Vec<&str> = KEY_COLUMNS
        .into_iter()
        .chain(values.iter().map(|(c, _)| c.as_str()))
        .collect();
    let names = names.join(", ");
    let partials: Vec<String> = values
        .iter()
        .map(|(c, how)| format!("{how}({c}) AS {c}"))
        .collect();
    let partials = partials.join(", ");
    let set: Vec<String> = values
        .iter()
        .map(|(c, how)| format!("{c} = {}", rollup::combine(backend, c, how)))
        .collect();
    let upsert = format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        KEY_COLUMNS.join(", "),
        set.join(", ")
    );
    // Partial DAY buckets of an older version are left out (see above).
    let pending =
        format!("WHERE resolution = '{HOUR}' AND battery_id IN (SELECT id FROM batteries)");
    let by_hour = "GROUP BY battery_id, resolution, bucket";
    match backend {
        DbBackend::Postgres => vec![format!(
            "WITH moved AS (DELETE FROM {BACKLOG} RETURNING *), \
             hours AS (SELECT battery_id, resolution, bucket, {partials} FROM moved {pending} {by_hour}), \
             newest AS (SELECT battery_id, max(newest_sample_at) AS at FROM moved \
             WHERE newest_sample_at IS NOT NULL GROUP BY battery_id), \
             soh AS (SELECT DISTINCT ON (battery_id) battery_id, newest_soh_at AS at, \
             newest_soh_pct AS pct FROM moved WHERE newest_soh_at IS NOT NULL \
             ORDER BY battery_id, newest_soh_at DESC), \
             pointers AS ({pointers}) \
             INSERT INTO battery_rollups ({names}) \
             SELECT * FROM hours UNION ALL \
             SELECT battery_id, '{DAY}', date_trunc('day', bucket, 'UTC'), {partials} FROM hours \
             GROUP BY battery_id, date_trunc('day', bucket, 'UTC') \
             ORDER BY battery_id, resolution, bucket {upsert}",
            pointers = move_pointers("newest", "soh")
        )],
        // Times are stored as RFC 3339 text (`2026-03-01T10:00:00+00:00`).
        _ => {
            let day = "substr(bucket, 1, 10) || 'T00:00:00+00:00'";
            vec![
                format!(
                    "INSERT INTO battery_rollups ({names}) \
                     SELECT battery_id, resolution, bucket, {partials} FROM {BACKLOG} {pending} {by_hour} \
                     ORDER BY battery_id, resolution, bucket {upsert}"
                ),
                format!(
                    "INSERT INTO battery_rollups ({names}) \
                     SELECT battery_id, '{DAY}', {day}, {partials} FROM {BACKLOG} {pending} \
                     GROUP BY battery_id, {day} ORDER BY 1, 3 {upsert}"
                ),
            ]
        }
    }
}

/// The update moving battery pointers forward: `newest` has each
/// battery's newest pending sample time (`battery_id`, `at`), `soh` its
/// newest pending SOH (`battery_id`, `at`, `pct`), if any. SOH moves only
/// with a sample newer than the stored pointer, like the pointer itself.
fn move_pointers(newest: &str, soh: &str) -> String {
    format!(
        "UPDATE batteries SET last_sample_at = n.at, soh_pct = CASE WHEN s.at IS NOT NULL \
         AND (batteries.last_sample_at IS NULL OR s.at > batteries.last_sample_at) \
         THEN s.pct ELSE batteries.soh_pct END \
         FROM {newest} AS n LEFT JOIN {soh} AS s ON s.battery_id = n.battery_id \
         WHERE batteries.id = n.battery_id \
         AND (batteries.last_sample_at IS NULL OR batteries.last_sample_at < n.at)"
    )
}

/// SQLite: the update moving battery pointers, before the backlog is
/// emptied (PostgreSQL's is part of its one statement). A bare column
/// beside `max()` is taken from the row with the maximum.
fn sqlite_pointer_statement() -> String {
    move_pointers(
        &format!(
            "(SELECT battery_id, max(newest_sample_at) AS at FROM {BACKLOG} \
             WHERE newest_sample_at IS NOT NULL GROUP BY battery_id)"
        ),
        &format!(
            "(SELECT battery_id, max(newest_soh_at) AS at, newest_soh_pct AS pct \
             FROM {BACKLOG} WHERE newest_soh_at IS NOT NULL GROUP BY battery_id)"
        ),
    )
}

/// Adds every pending partial bucket to the roll-ups and moves battery
/// pointers; returns how many buckets were written (0 when nothing was
/// pending).
pub async fn fold(db: &DatabaseConnection) -> ApiResult<u64> {
    let backend = db.get_database_backend();
    let pending = db
        .query_one_raw(Statement::from_string(
            backend,
            format!("SELECT 1 FROM {BACKLOG} LIMIT 1"),
        ))
        .await?;
    if pending.is_none() {
        return Ok(0);
    }
    let _turn = match backend {
        DbBackend::Postgres => None,
        _ => Some(SQLITE_WRITE_TURN.lock().await),
    };
    let txn = crate::db::begin_write(db).await?;
    if backend == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({FOLD_LOCK})"))
            .await?;
    }
    let mut written = 0;
    for statement in fold_statements(backend) {
        written += txn.execute_unprepared(&statement).await?.rows_affected();
    }
    if backend != DbBackend::Postgres {
        txn.execute_unprepared(&sqlite_pointer_statement()).await?;
        txn.execute_unprepared(&format!("DELETE FROM {BACKLOG}"))
            .await?;
    }
    txn.commit().await?;
    Ok(written)
}

/// Folds every `interval` while `alive` (the writer's queue) has senders.
pub fn spawn<T: Send + 'static>(
    db: DatabaseConnection,
    interval: Duration,
    alive: WeakSender<T>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let started = std::time::Instant::now();
            match fold(&db).await {
                Ok(0) => {}
                Ok(buckets) => tracing::debug!(
                    buckets,
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    "roll-up backlog folded"
                ),
                Err(err) => tracing::warn!(%err, "folding the roll-up backlog failed; will retry"),
            }
            if alive.strong_count() == 0 {
                // The writer's handles are gone; what is left is folded
                // on the next start (or read).
                break;
            }
        }
    })
}
