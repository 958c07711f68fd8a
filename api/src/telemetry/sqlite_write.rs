//! SQLite's write of a batch of samples, run in one go on the calling
//! thread (the sample writer's own, see [`super::writer`]) through
//! rusqlite, on the writer's sqlx connection ([`crate::db::writer_connection`])
//! while sqlx's worker thread is kept off it.
//!
//! Through sqlx, each statement is a round trip to the connection's worker
//! thread: a write of 1,500 samples in statements of 64 rows took about 28,
//! every value was first copied into sqlx's argument list on the calling
//! thread, and the two threads took turns, never both at work. On a busy
//! machine each turn also waited for a core (live bench at 50k samples/s:
//! 17 µs of wall time a sample, of which SQLite's own work was 9). Here
//! one prepared single-row insert is bound in place and stepped for each
//! sample, the connection's page cache is the same one the roll-up fold
//! reads through, and `ON CONFLICT DO NOTHING` tells per row whether the
//! sample was new (stored already, or repeated earlier in the batch: the
//! write is idempotent).

use std::ptr::NonNull;

use chrono::SecondsFormat;
use entities::battery_sample;
use rusqlite::{Connection, Statement, TransactionBehavior};
use sea_orm::sqlx::SqlitePool;
use sea_orm::{DbErr, RuntimeErr};

use super::checks::Checked;
use super::pg_write::{COLUMNS, measurements};
use super::{rollup, store};
use crate::db::sqlx_error;
use crate::error::ApiResult;

/// Stores the new samples of `rows` (see [`super::store::write`]). The
/// statements run on this thread, blocking it for the write's duration.
pub async fn write(pool: &SqlitePool, rows: &[Checked]) -> ApiResult<Vec<bool>> {
    let _turn = super::fold::SQLITE_WRITE_TURN.lock().await;
    let mut conn = pool.acquire().await.map_err(sqlx_error)?;
    let mut locked = conn.lock_handle().await.map_err(sqlx_error)?;
    Ok(write_locked(locked.as_raw_handle(), rows)?)
}

/// [`write`] on a connection handle that no other thread uses meanwhile.
fn write_locked(
    handle: NonNull<rusqlite::ffi::sqlite3>,
    rows: &[Checked],
) -> Result<Vec<bool>, DbErr> {
    // SAFETY: sqlx's `LockedSqliteHandle` guarantees that its worker
    // makes no call on the handle while it is held, the caller holds it
    // for longer than `db` lives, and `db` (not owning the handle) neither
    // closes it nor leaves a statement of its own behind when dropped.
    let mut db = unsafe { Connection::from_handle(handle.as_ptr()) }.map_err(db_err)?;
    insert_and_summarise(&mut db, rows)
}

fn insert_and_summarise(db: &mut Connection, rows: &[Checked]) -> Result<Vec<bool>, DbErr> {
    let tx = db
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let mut is_new = Vec::with_capacity(rows.len());
    {
        let mut insert = tx
            .prepare(&format!(
                "INSERT INTO battery_samples ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                 ON CONFLICT (battery_id, ts) DO NOTHING"
            ))
            .map_err(db_err)?;
        for r in rows {
            bind(&mut insert, &r.sample).map_err(db_err)?;
            let stored = insert.raw_execute().map_err(db_err)?;
            is_new.push(stored == 1);
        }
    }
    if let Some(row) = rollup::summary_row(&rollup::aggregate(&store::new_rows(rows, &is_new)))? {
        tx.execute(rollup::APPEND, [row]).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(is_new)
}

/// Binds `s` to the insert's parameters, in [`COLUMNS`] order.
fn bind(insert: &mut Statement<'_>, s: &battery_sample::Model) -> rusqlite::Result<()> {
    insert.raw_bind_parameter(1, s.battery_id)?;
    insert.raw_bind_parameter(2, timestamp_text(&s.ts))?;
    for (k, v) in measurements(s).into_iter().enumerate() {
        insert.raw_bind_parameter(3 + k, v)?;
    }
    insert.raw_bind_parameter(13, s.cycle_count)?;
    insert.raw_bind_parameter(14, s.cell_voltage_min_v)?;
    insert.raw_bind_parameter(15, s.cell_voltage_max_v)
}

/// A timestamp as sqlx stores a `DateTime<Utc>` in SQLite, so that the
/// samples' key and every query comparing times see the same text.
fn timestamp_text(ts: &chrono::DateTime<chrono::Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn db_err(e: rusqlite::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::Internal(format!("SQLite: {e}")))
}
