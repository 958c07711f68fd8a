//! PostgreSQL's write of a batch of samples, on a connection of sea-orm's
//! pool used directly (sea-orm has no `COPY`). New samples go in with
//! binary `COPY`, whose bulk heap inserts run at about twice the rate of
//! `INSERT … ON CONFLICT`. A sample is new when it is newer than its
//! battery's newest stored one, or, for a late one, when its key is not in
//! the table (an index probe).
//!
//! Several writers may run at once (other replicas, or the writer's own
//! tasks). If two store the same key concurrently, the second `COPY` meets a
//! unique-key violation and its batch is written again with per-row
//! conflict checks (`INSERT … ON CONFLICT DO NOTHING`), which tell which
//! rows were new. Roll-up buckets and battery rows are updated in key order,
//! so concurrent writers wait for each other rather than deadlock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use entities::battery_sample;
use sea_orm::sea_query::PostgresQueryBuilder;
use sea_orm::sqlx::{self, PgPool, Postgres, Transaction};
use sea_orm::{DbBackend, DbErr, RuntimeErr};
use sea_query_sqlx::SqlxBinder;

use super::checks::Checked;
use super::rollup;
use super::store::{self, SampleKey};
use crate::error::ApiResult;

const COLUMNS: &str = "battery_id, ts, voltage_v, current_a, power_w, soc_pct, soh_pct, \
                       temp_min_c, temp_max_c, temp_avg_c, energy_kwh, efficiency_pct, cycle_count, \
                       cell_voltage_min_v, cell_voltage_max_v";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn db_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

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
    let previous: HashMap<i64, DateTime<Utc>> = sqlx::query_as::<_, (i64, Option<DateTime<Utc>>)>(
        "SELECT id, last_sample_at FROM batteries WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_err)?
    .into_iter()
    .filter_map(|(id, last)| last.map(|l| (id, l)))
    .collect();

    // The first occurrence of each key; newer than its battery's pointer or not.
    let mut is_new = vec![false; rows.len()];
    let mut seen: HashSet<SampleKey> = HashSet::with_capacity(rows.len());
    let (mut fresh, mut late) = (Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        let s = &r.sample;
        if !seen.insert((s.battery_id, s.ts)) {
            continue;
        }
        if copy && previous.get(&s.battery_id).is_none_or(|last| s.ts > *last) {
            is_new[i] = true;
            fresh.push(s);
        } else {
            late.push((i, s));
        }
    }
    if copy && !late.is_empty() {
        let samples: Vec<&battery_sample::Model> = late.iter().map(|(_, s)| *s).collect();
        let stored = stored_keys(&mut tx, &samples).await?;
        for (i, s) in late.drain(..) {
            if !stored.contains(&(s.battery_id, s.ts)) {
                is_new[i] = true;
                fresh.push(s);
            }
        }
    }
    if !fresh.is_empty() {
        let mut sink = tx
            .copy_in_raw(&format!(
                "COPY battery_samples ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(db_err)?;
        sink.send(binary_copy(&fresh)).await.map_err(db_err)?;
        sink.finish().await.map_err(db_err)?;
    }
    if !late.is_empty() {
        let samples: Vec<&battery_sample::Model> = late.iter().map(|(_, s)| *s).collect();
        let stored = insert_checked(&mut tx, &samples).await?;
        for (i, s) in late {
            is_new[i] = stored.contains(&(s.battery_id, s.ts));
        }
    }

    let new = store::new_rows(rows, &is_new);
    for statement in rollup::statements(DbBackend::Postgres, rollup::aggregate(&new, &previous)) {
        let (sql, values) = statement.build_sqlx(PostgresQueryBuilder);
        sqlx::query_with(sqlx::AssertSqlSafe(sql), values)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    set_latest(&mut tx, &store::newest_per_battery(&new)).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(is_new)
}

/// `samples` in `COPY`'s binary format: a header, then per row the field
/// count and each field as its length (-1: NULL) and big-endian value.
fn binary_copy(samples: &[&battery_sample::Model]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + samples.len() * 160 + 2);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    let float = |out: &mut Vec<u8>, v: Option<f64>| match v {
        Some(v) => {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    };
    for s in samples {
        out.extend_from_slice(&15i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&s.battery_id.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&(s.ts.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
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
            float(&mut out, v);
        }
        match s.cycle_count {
            Some(c) => {
                out.extend_from_slice(&4i32.to_be_bytes());
                out.extend_from_slice(&c.to_be_bytes());
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        float(&mut out, s.cell_voltage_min_v);
        float(&mut out, s.cell_voltage_max_v);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Which of `samples` (late ones) are already stored: an index probe each.
async fn stored_keys(
    tx: &mut Transaction<'static, Postgres>,
    samples: &[&battery_sample::Model],
) -> Result<HashSet<SampleKey>, DbErr> {
    let keys: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.battery_id, s.ts FROM UNNEST($1::bigint[], $2::timestamptz[]) AS k(id, ts) \
         JOIN battery_samples s ON s.battery_id = k.id AND s.ts = k.ts",
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

/// Moves each battery's latest-sample pointer (and SOH) forward to its
/// newest new sample, in one statement; never backwards for late samples.
async fn set_latest(
    tx: &mut Transaction<'static, Postgres>,
    newest: &[&battery_sample::Model],
) -> Result<(), DbErr> {
    if newest.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE batteries AS b SET last_sample_at = u.t, soh_pct = COALESCE(u.soh, b.soh_pct) \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::float8[]) AS u(id, t, soh) \
         WHERE b.id = u.id AND (b.last_sample_at IS NULL OR b.last_sample_at < u.t)",
    )
    .bind(newest.iter().map(|s| s.battery_id).collect::<Vec<_>>())
    .bind(newest.iter().map(|s| s.ts).collect::<Vec<_>>())
    .bind(newest.iter().map(|s| s.soh_pct).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}
