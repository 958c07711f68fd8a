//! PostgreSQL's write of a batch of samples, on a connection of sea-orm's
//! pool used directly (sea-orm has no `COPY`). New samples go in with
//! binary `COPY`, whose bulk heap inserts run at about twice the rate of
//! `INSERT … ON CONFLICT`.
//!
//! Which samples are new is left to the table's unique key first: the
//! batch is copied whole, and only if the key finds one already stored
//! (a resent batch) is the copy undone (to a savepoint) and the batch
//! sorted out — a sample newer than its battery's newest stored one is
//! new, a late one is new when an index probe does not find its key — and
//! the new ones copied. Probing every late sample first cost a third of a
//! write when concurrent uploads each send a different time range.
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
use sea_orm::sqlx::{self, PgPool, Postgres, Transaction};
use sea_orm::{DbErr, RuntimeErr};

use super::checks::Checked;
use super::pg_copy::BinaryRows;
use super::rollup;
use super::store::{self, SampleKey};
use crate::db::sqlx_error as db_err;
use crate::error::ApiResult;

const COLUMNS: &str = "battery_id, ts, voltage_v, current_a, power_w, soc_pct, soh_pct, \
                       temp_min_c, temp_max_c, temp_avg_c, energy_kwh, efficiency_pct, cycle_count, \
                       cell_voltage_min_v, cell_voltage_max_v";

/// Stores the new samples of `rows` (see [`super::store::write`]).
pub async fn write(pool: &PgPool, rows: &[Checked]) -> ApiResult<Vec<bool>> {
    match write_once(pool, rows, true).await {
        Err(err) if is_unique_violation(&err) => {
            tracing::warn!(
                "some of these samples were stored meanwhile, or without moving their \
                 battery's latest-sample pointer; writing the batch again with per-row conflict checks"
            );
            Ok(write_once(pool, rows, false).await?)
        }
        other => Ok(other?),
    }
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err, DbErr::Exec(RuntimeErr::SqlxError(e))
        if e.as_database_error().is_some_and(|d| d.is_unique_violation()))
}

async fn write_once(pool: &PgPool, rows: &[Checked], copy: bool) -> Result<Vec<bool>, DbErr> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.sample.battery_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // In id order, like every writer, so that lockers wait rather than
    // deadlock. Each battery's newest stored sample is read from the
    // samples (one index probe each): the battery's pointer moves only
    // with the fold.
    let batteries: Vec<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT b.id, {} FROM batteries b WHERE b.id = ANY($1) ORDER BY b.id FOR KEY SHARE OF b",
        store::NEWEST_SAMPLE_AT
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
    let is_new = if copy {
        store_copied(&mut tx, rows, &candidates, &previous).await?
    } else {
        store_checked(&mut tx, rows, &candidates).await?
    };

    let new = store::new_rows(rows, &is_new);
    append_rollups(&mut tx, &rollup::aggregate(&new, &previous)).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(is_new)
}

/// Copies the candidates whole; if one is already stored, undoes that and
/// copies those found new (see the module's doc). Tells for each row
/// whether it was new.
async fn store_copied(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[Checked],
    candidates: &[usize],
    previous: &HashMap<i64, DateTime<Utc>>,
) -> Result<Vec<bool>, DbErr> {
    let mut is_new = vec![false; rows.len()];
    let samples = |which: &[usize]| -> Vec<&battery_sample::Model> {
        which.iter().map(|&i| &rows[i].sample).collect()
    };
    execute(tx, "SAVEPOINT before_copy").await?;
    match copy_in(tx, &samples(candidates)).await {
        Ok(()) => {
            for &i in candidates {
                is_new[i] = true;
            }
            return Ok(is_new);
        }
        Err(err) if is_unique_violation(&err) => {
            tracing::debug!("some samples of the batch are stored already; probing the late ones");
            execute(tx, "ROLLBACK TO SAVEPOINT before_copy").await?;
        }
        Err(err) => return Err(err),
    }
    let (mut new, late): (Vec<usize>, Vec<usize>) = candidates.iter().partition(|&&i| {
        let s = &rows[i].sample;
        previous.get(&s.battery_id).is_none_or(|last| s.ts > *last)
    });
    let stored = stored_keys(tx, &samples(&late)).await?;
    new.extend(
        late.into_iter()
            .filter(|&i| !stored.contains(&(rows[i].sample.battery_id, rows[i].sample.ts))),
    );
    copy_in(tx, &samples(&new)).await?;
    for i in new {
        is_new[i] = true;
    }
    Ok(is_new)
}

/// Inserts the candidates with per-row conflict checks; tells for each row
/// whether it was new.
async fn store_checked(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[Checked],
    candidates: &[usize],
) -> Result<Vec<bool>, DbErr> {
    let samples: Vec<&battery_sample::Model> =
        candidates.iter().map(|&i| &rows[i].sample).collect();
    let stored = insert_checked(tx, &samples).await?;
    let mut is_new = vec![false; rows.len()];
    for &i in candidates {
        is_new[i] = stored.contains(&(rows[i].sample.battery_id, rows[i].sample.ts));
    }
    Ok(is_new)
}

async fn execute(tx: &mut Transaction<'static, Postgres>, sql: &'static str) -> Result<(), DbErr> {
    sqlx::query(sql).execute(&mut **tx).await.map_err(db_err)?;
    Ok(())
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
        for v in [
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
        ] {
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

/// Appends the write's partial buckets as one row (see
/// [`rollup::encode`]).
async fn append_rollups(
    tx: &mut Transaction<'static, Postgres>,
    buckets: &HashMap<rollup::BucketKey, rollup::Bucket>,
) -> Result<(), DbErr> {
    if buckets.is_empty() {
        return Ok(());
    }
    let partials = rollup::encode(buckets)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {} (partials) VALUES ($1)",
        rollup::BATCHES
    )))
    .bind(partials)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}
