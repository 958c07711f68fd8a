//! SQLite's write of a batch of samples, through sqlx directly on the
//! writer's connection ([`crate::db::writer_connection`]), with prepared
//! statements of a few fixed sizes.
//!
//! Building each write's multi-row `INSERT … RETURNING` with sea-orm made
//! its SQL text anew (a thousand rows' worth), prepared it again whenever
//! its row count differed from the connection's cached ones, and read back
//! and parsed every stored key to tell which rows were new. Here a batch is
//! inserted whole in chunks of [`CHUNK_SIZES`] rows, whose statements the
//! connection prepares once; the table's key (battery, timestamp) refuses
//! the write if a sample is stored already (a resent batch), and only then
//! is the transaction rolled back and the batch written again with per-row
//! conflict checks that return the keys that were new (as on PostgreSQL,
//! [`super::pg_write`]).

use std::collections::HashSet;
use std::sync::LazyLock;

use entities::battery_sample;
use sea_orm::DbErr;
use sea_orm::sqlx::{self, Sqlite, SqlitePool, Transaction};

use super::checks::Checked;
use super::pg_write::COLUMNS;
use super::rollup;
use super::store::{self, SampleKey};
use crate::db::{is_unique_violation, sqlx_error as db_err};
use crate::error::ApiResult;

/// Rows per statement, largest first: a batch is cut into chunks of these
/// sizes, so a connection prepares at most this many insert statements
/// (64 rows bind 960 values).
const CHUNK_SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The insert of `n` rows, and the same with per-row conflict checks
/// returning the new keys, for each of [`CHUNK_SIZES`].
static INSERTS: LazyLock<Vec<(usize, String, String)>> = LazyLock::new(|| {
    CHUNK_SIZES
        .iter()
        .map(|&n| {
            let row = format!("({})", vec!["?"; 15].join(","));
            let values = vec![row; n].join(",");
            let plain = format!("INSERT INTO battery_samples ({COLUMNS}) VALUES {values}");
            let checked =
                format!("{plain} ON CONFLICT (battery_id, ts) DO NOTHING RETURNING battery_id, ts");
            (n, plain, checked)
        })
        .collect()
});

/// How a write tells new samples from stored ones (see the module's doc).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Inserts every candidate: the key refuses the batch if one is stored.
    Whole,
    /// Inserts with per-row conflict checks.
    Checked,
}

/// Stores the new samples of `rows` (see [`super::store::write`]).
pub async fn write(pool: &SqlitePool, rows: &[Checked]) -> ApiResult<Vec<bool>> {
    let _turn = super::fold::SQLITE_WRITE_TURN.lock().await;
    match write_once(pool, rows, Mode::Whole).await {
        Err(err) if is_unique_violation(&err) => {
            tracing::debug!("some samples of the batch are stored already; sorting it out");
            Ok(write_once(pool, rows, Mode::Checked).await?)
        }
        other => Ok(other?),
    }
}

async fn write_once(pool: &SqlitePool, rows: &[Checked], mode: Mode) -> Result<Vec<bool>, DbErr> {
    // IMMEDIATE: the write lock at once (see `crate::db::begin_write`).
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
    // The first occurrence of each key is a candidate.
    let mut seen: HashSet<SampleKey> = HashSet::with_capacity(rows.len());
    let first: Vec<bool> = rows
        .iter()
        .map(|r| seen.insert((r.sample.battery_id, r.sample.ts)))
        .collect();
    let candidates: Vec<&battery_sample::Model> = rows
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|(r, _)| &r.sample)
        .collect();
    let is_new = match mode {
        Mode::Whole => {
            insert(&mut tx, &candidates, mode).await?;
            first
        }
        Mode::Checked => {
            let mut stored = insert(&mut tx, &candidates, mode).await?;
            rows.iter()
                .map(|r| stored.remove(&(r.sample.battery_id, r.sample.ts)))
                .collect()
        }
    };
    let new = store::new_rows(rows, &is_new);
    let summary = rollup::aggregate(&new);
    rollup::append_summary(&mut *tx, &summary).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(is_new)
}

/// Inserts `samples` in chunks of [`CHUNK_SIZES`]; with [`Mode::Checked`],
/// skips stored keys and returns the keys that were new.
async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    mut samples: &[&battery_sample::Model],
    mode: Mode,
) -> Result<HashSet<SampleKey>, DbErr> {
    let mut new = HashSet::new();
    while !samples.is_empty() {
        let Some((n, plain, checked)) = INSERTS.iter().find(|(n, ..)| *n <= samples.len()) else {
            break;
        };
        let (chunk, rest) = samples.split_at(*n);
        samples = rest;
        let sql = if mode == Mode::Checked {
            checked
        } else {
            plain
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for s in chunk {
            q = q
                .bind(s.battery_id)
                .bind(s.ts)
                .bind(s.voltage_v)
                .bind(s.current_a)
                .bind(s.power_w)
                .bind(s.soc_pct)
                .bind(s.soh_pct)
                .bind(s.temp_min_c)
                .bind(s.temp_max_c)
                .bind(s.temp_avg_c)
                .bind(s.energy_kwh)
                .bind(s.efficiency_pct)
                .bind(s.cycle_count)
                .bind(s.cell_voltage_min_v)
                .bind(s.cell_voltage_max_v);
        }
        match mode {
            Mode::Whole => {
                q.execute(&mut **tx).await.map_err(db_err)?;
            }
            Mode::Checked => {
                for row in q.fetch_all(&mut **tx).await.map_err(db_err)? {
                    let key: SampleKey = sqlx::FromRow::from_row(&row).map_err(db_err)?;
                    new.insert(key);
                }
            }
        }
    }
    Ok(new)
}
