//! PostgreSQL's write of a batch of samples, on a connection of sea-orm's
//! pool used directly (sea-orm has no `COPY`). New samples go in with
//! binary `COPY`, whose bulk heap inserts run at about twice the rate of
//! `INSERT … ON CONFLICT`.
//!
//! Which samples are new is left to the table's unique key first: the
//! batch is copied whole, and only if the key finds one already stored
//! (a resent batch) is the transaction rolled back and the batch written
//! again, sorted out — a sample newer than its battery's newest stored one
//! is new, a late one is new when an index probe does not find its key —
//! with only the new ones copied. Probing every late sample first cost a
//! third of a write when concurrent uploads each send a different time
//! range; a savepoint before each copy, to undo it alone, cost a round
//! trip and a subtransaction in every write for the sake of resent ones.
//!
//! Several writers may run at once (other replicas, or the writer's own
//! tasks). If two store the same key concurrently, the second `COPY` meets a
//! unique-key violation even after the probe, and its batch is written
//! again with per-row conflict checks (`INSERT … ON CONFLICT DO NOTHING`),
//! which tell which rows were new. Roll-up partial buckets, and the
//! battery pointers they move, are appended as one row: a write updates no
//! row, so writers do not queue on each other's rows (updating the
//! batteries' pointers in every write was its largest statement, and two
//! writers updating the same rows in their join plans' orders deadlocked).
//!
//! `battery_samples` has no foreign key on PostgreSQL (it cost a query per
//! copied row): a write locks its batteries `FOR KEY SHARE` once, as the
//! key's check would, and skips rows whose battery was deleted since they
//! were checked — as if they had been stored and then deleted with it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entities::battery_sample;
use sea_orm::DbErr;
use sea_orm::sqlx::{self, PgPool, Postgres, Transaction};

use super::checks::Checked;
use super::pg_copy::BinaryRows;
use super::rollup;
use super::store::{self, SampleKey};
use crate::db::{is_unique_violation, sqlx_error as db_err};
use crate::error::ApiResult;

/// The stored columns of a sample, in the order both backends write them.
pub(super) const COLUMNS: &str = "battery_id, ts, voltage_v, current_a, power_w, soc_pct, soh_pct, \
                       temp_min_c, temp_max_c, temp_avg_c, energy_kwh, efficiency_pct, cycle_count, \
                       cell_voltage_min_v, cell_voltage_max_v";

/// A sample's ten measurements between `ts` and `cycle_count`, in
/// [`COLUMNS`] order.
pub(super) fn measurements(s: &battery_sample::Model) -> [Option<f64>; 10] {
    [
        s.voltage_v,
        s.current_a,
        s.power_w,
        s.soc_pct,
        s.soh_pct,
        s.temp_min_c,
        s.temp_max_c,
        s.temp_avg_c,
        s.energy_kwh,
        s.efficiency_pct,
    ]
}

/// How a write tells new samples from stored ones (see the module's doc).
#[derive(Clone, Copy)]
enum Mode {
    /// Copies every candidate: the unique key refuses the batch if one is stored.
    Whole,
    /// Probes the late candidates and copies those not stored.
    SortedOut,
    /// Inserts with per-row conflict checks.
    Checked,
}

/// Stores the new samples of `rows` (see [`super::store::write`]).
pub async fn write(pool: &PgPool, rows: &[Checked]) -> ApiResult<Vec<bool>> {
    let mut mode = Mode::Whole;
    loop {
        match write_once(pool, rows, mode).await {
            // A per-row conflict check never meets the key.
            Err(err) if is_unique_violation(&err) && !matches!(mode, Mode::Checked) => {
                mode = match mode {
                    Mode::Whole => {
                        tracing::debug!(
                            "some samples of the batch are stored already; sorting it out"
                        );
                        Mode::SortedOut
                    }
                    _ => {
                        tracing::warn!(
                            "some of these samples were stored meanwhile by another writer; \
                             writing the batch again with per-row conflict checks"
                        );
                        Mode::Checked
                    }
                };
            }
            other => return Ok(other?),
        }
    }
}

async fn write_once(pool: &PgPool, rows: &[Checked], mode: Mode) -> Result<Vec<bool>, DbErr> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.sample.battery_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // In id order, like every writer, so that lockers wait rather than
    // deadlock. Sorting a batch out needs each battery's newest stored
    // sample (one index probe each; the battery's pointer moves only with
    // the fold); the roll-ups do not (see [`rollup::stitch`]).
    let newest = match mode {
        Mode::SortedOut => store::NEWEST_SAMPLE_AT,
        Mode::Whole | Mode::Checked => "NULL::timestamptz",
    };
    let batteries: Vec<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT b.id, {newest} FROM batteries b WHERE b.id = ANY($1) ORDER BY b.id FOR KEY SHARE OF b"
    )))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?;
    let existing: HashSet<i64> = batteries.iter().map(|(id, _)| *id).collect();
    if existing.len() < ids.len() {
        tracing::warn!(
            deleted = ids.len() - existing.len(),
            "batteries deleted while their samples were being written; their samples are dropped"
        );
    }
    let previous: HashMap<i64, DateTime<Utc>> = batteries
        .into_iter()
        .filter_map(|(id, last)| last.map(|l| (id, l)))
        .collect();

    // The first occurrence of each key of an existing battery.
    let mut seen: HashSet<SampleKey> = HashSet::with_capacity(rows.len());
    let candidates: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            let s = &rows[i].sample;
            existing.contains(&s.battery_id) && seen.insert((s.battery_id, s.ts))
        })
        .collect();
    let is_new = match mode {
        Mode::Whole => {
            copy_in(&mut tx, &samples_at(rows, &candidates)).await?;
            flags(rows.len(), &candidates)
        }
        Mode::SortedOut => sort_out(&mut tx, rows, &candidates, &previous).await?,
        Mode::Checked => store_checked(&mut tx, rows, &candidates).await?,
    };

    let new = store::new_rows(rows, &is_new);
    rollup::append_summary(&mut tx, &rollup::aggregate(&new)).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(is_new)
}

/// The samples of `rows` at `which`.
fn samples_at<'a>(rows: &'a [Checked], which: &[usize]) -> Vec<&'a battery_sample::Model> {
    which.iter().map(|&i| &rows[i].sample).collect()
}

/// For each of `len` rows, whether it is one of `new`.
fn flags(len: usize, new: &[usize]) -> Vec<bool> {
    let mut is_new = vec![false; len];
    for &i in new {
        is_new[i] = true;
    }
    is_new
}

/// Copies the candidates not stored yet: those newer than their battery's
/// newest stored sample, and the late ones an index probe does not find.
async fn sort_out(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[Checked],
    candidates: &[usize],
    previous: &HashMap<i64, DateTime<Utc>>,
) -> Result<Vec<bool>, DbErr> {
    let (mut new, late): (Vec<usize>, Vec<usize>) = candidates.iter().partition(|&&i| {
        let s = &rows[i].sample;
        previous.get(&s.battery_id).is_none_or(|last| s.ts > *last)
    });
    let stored = stored_keys(tx, &samples_at(rows, &late)).await?;
    new.extend(
        late.into_iter()
            .filter(|&i| !stored.contains(&(rows[i].sample.battery_id, rows[i].sample.ts))),
    );
    copy_in(tx, &samples_at(rows, &new)).await?;
    Ok(flags(rows.len(), &new))
}

/// Inserts the candidates with per-row conflict checks; tells for each row
/// whether it was new.
async fn store_checked(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[Checked],
    candidates: &[usize],
) -> Result<Vec<bool>, DbErr> {
    let stored = insert_checked(tx, &samples_at(rows, candidates)).await?;
    let mut is_new = vec![false; rows.len()];
    for &i in candidates {
        is_new[i] = stored.contains(&(rows[i].sample.battery_id, rows[i].sample.ts));
    }
    Ok(is_new)
}

/// `COPY`s `samples` in binary format.
async fn copy_in(
    tx: &mut Transaction<'static, Postgres>,
    samples: &[&battery_sample::Model],
) -> Result<(), DbErr> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut rows = BinaryRows::new(samples.len() * 160);
    for s in samples {
        rows.row(15);
        rows.int8(s.battery_id);
        rows.timestamptz(s.ts);
        for v in measurements(s) {
            rows.float8(v);
        }
        rows.int4(s.cycle_count);
        rows.float8(s.cell_voltage_min_v);
        rows.float8(s.cell_voltage_max_v);
    }
    rows.copy(
        tx,
        &format!("COPY battery_samples ({COLUMNS}) FROM STDIN (FORMAT binary)"),
    )
    .await
}

/// Which of `samples` (late ones) are already stored.
async fn stored_keys(
    tx: &mut Transaction<'static, Postgres>,
    samples: &[&battery_sample::Model],
) -> Result<HashSet<SampleKey>, DbErr> {
    if samples.is_empty() {
        return Ok(HashSet::new());
    }
    // LATERAL … LIMIT 1: an index probe per key, whatever the planner
    // guesses of the array's length (a plain join was hashed against a scan
    // of the whole table).
    let keys: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT k.id, k.ts FROM UNNEST($1::bigint[], $2::timestamptz[]) AS k(id, ts) \
         CROSS JOIN LATERAL (SELECT 1 FROM battery_samples s \
         WHERE s.battery_id = k.id AND s.ts = k.ts LIMIT 1) hit",
    )
    .bind(samples.iter().map(|s| s.battery_id).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.ts).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(keys.into_iter().collect())
}

/// Inserts with one array per column, skipping keys already stored;
/// returns the keys that were new.
async fn insert_checked(
    tx: &mut Transaction<'static, Postgres>,
    samples: &[&battery_sample::Model],
) -> Result<HashSet<SampleKey>, DbErr> {
    let floats = |f: fn(&battery_sample::Model) -> Option<f64>| -> Vec<Option<f64>> {
        samples.iter().map(|s| f(s)).collect()
    };
    let keys: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO battery_samples ({COLUMNS}) \
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::float8[], $4::float8[], \
         $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], \
         $11::float8[], $12::float8[], $13::int[], $14::float8[], $15::float8[]) \
         ON CONFLICT (battery_id, ts) DO NOTHING RETURNING battery_id, ts"
    )))
    .bind(samples.iter().map(|s| s.battery_id).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.ts).collect::<Vec<_>>())
    .bind(floats(|s| s.voltage_v))
    .bind(floats(|s| s.current_a))
    .bind(floats(|s| s.power_w))
    .bind(floats(|s| s.soc_pct))
    .bind(floats(|s| s.soh_pct))
    .bind(floats(|s| s.temp_min_c))
    .bind(floats(|s| s.temp_max_c))
    .bind(floats(|s| s.temp_avg_c))
    .bind(floats(|s| s.energy_kwh))
    .bind(floats(|s| s.efficiency_pct))
    .bind(samples.iter().map(|s| s.cycle_count).collect::<Vec<_>>())
    .bind(floats(|s| s.cell_voltage_min_v))
    .bind(floats(|s| s.cell_voltage_max_v))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(keys.into_iter().collect())
}
