//! Writes and reads of raw samples. A write is idempotent per
//! (battery, timestamp) — resending a sample changes nothing — and keeps each
//! battery's `last_sample_at`/`soh_pct` pointing at its newest sample even
//! when samples arrive out of order.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entities::{battery, battery_rollup, battery_sample};
use sea_orm::sea_query::{Expr, ExprTrait, Value};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Statement, TryInsertResult,
};

use super::checks::Checked;
use super::rollup;
use crate::error::ApiResult;

/// Rows per INSERT: 15 columns × 1000 stays under SQLite's 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 1000;

/// SQLite: moves each battery's latest-sample pointer (and SOH) forward in
/// one statement (`UPDATE … FROM` a `VALUES` list); never backwards for late
/// samples.
async fn set_latest_values(
    txn: &DatabaseTransaction,
    newest: &[&battery_sample::Model],
) -> ApiResult<()> {
    if newest.is_empty() {
        return Ok(());
    }
    let rows = vec!["(?, ?, ?)"; newest.len()].join(", ");
    let sql = format!(
        "UPDATE batteries SET last_sample_at = u.t, soh_pct = COALESCE(u.soh, batteries.soh_pct) \
         FROM (SELECT column1 AS id, column2 AS t, column3 AS soh FROM (VALUES {rows})) AS u \
         WHERE batteries.id = u.id AND (batteries.last_sample_at IS NULL OR batteries.last_sample_at < u.t)"
    );
    let values: Vec<Value> = newest
        .iter()
        .flat_map(|s| [s.battery_id.into(), s.ts.into(), s.soh_pct.into()])
        .collect();
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        sql,
        values,
    ))
    .await?;
    Ok(())
}

/// Keys of stored samples.
pub type SampleKey = (i64, DateTime<Utc>);

/// Stores samples of existing batteries in one transaction (PostgreSQL:
/// [`super::pg_write`]), appends the new ones' hourly and daily partial
/// buckets to the roll-up backlog ([`super::fold`]), and tells for each row
/// whether it was new: a sample whose (battery, timestamp) is already
/// stored, or repeated earlier in `rows`, is skipped (idempotent).
pub async fn write(db: &DatabaseConnection, rows: &[Checked]) -> ApiResult<Vec<bool>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        return super::pg_write::write(db.get_postgres_connection_pool(), rows).await;
    }
    let mut inserted = HashSet::with_capacity(rows.len());
    let _turn = super::fold::SQLITE_WRITE_TURN.lock().await;
    let txn = crate::db::begin_write(db).await?;
    let battery_ids: HashSet<i64> = rows.iter().map(|r| r.sample.battery_id).collect();
    let previous: HashMap<i64, DateTime<Utc>> = battery::Entity::find()
        .select_only()
        .columns([battery::Column::Id, battery::Column::LastSampleAt])
        .filter(battery::Column::Id.is_in(battery_ids))
        .into_tuple::<(i64, Option<DateTime<Utc>>)>()
        .all(&txn)
        .await?
        .into_iter()
        .filter_map(|(id, last)| last.map(|l| (id, l)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let result = battery_sample::Entity::insert_many(
            chunk.iter().map(|r| r.sample.clone().into_active_model()),
        )
        .on_conflict_do_nothing_on([
            battery_sample::Column::BatteryId,
            battery_sample::Column::Ts,
        ])
        .exec_with_returning_keys(&txn)
        .await?;
        if let TryInsertResult::Inserted(keys) = result {
            inserted.extend(keys);
        }
    }
    // The rows that were stored: the first occurrence of each new key.
    let is_new: Vec<bool> = rows
        .iter()
        .map(|r| inserted.remove(&(r.sample.battery_id, r.sample.ts)))
        .collect();
    let new = new_rows(rows, &is_new);
    rollup::append(&txn, rollup::aggregate(&new, &previous)).await?;
    let newest = newest_per_battery(&new);
    for chunk in newest.chunks(ROWS_PER_STATEMENT) {
        set_latest_values(&txn, chunk).await?;
    }
    txn.commit().await?;
    Ok(is_new)
}

/// The rows flagged new.
pub(super) fn new_rows<'a>(rows: &'a [Checked], is_new: &[bool]) -> Vec<&'a Checked> {
    rows.iter()
        .zip(is_new)
        .filter(|(_, n)| **n)
        .map(|(r, _)| r)
        .collect()
}

/// Each battery's newest sample among `new`, in battery order (writers
/// update battery rows in the same order).
pub(super) fn newest_per_battery<'a>(new: &[&'a Checked]) -> Vec<&'a battery_sample::Model> {
    let mut newest: HashMap<i64, &battery_sample::Model> = HashMap::new();
    for s in new.iter().map(|r| &r.sample) {
        let entry = newest.entry(s.battery_id).or_insert(s);
        if s.ts > entry.ts {
            *entry = s;
        }
    }
    let mut newest: Vec<&battery_sample::Model> = newest.into_values().collect();
    newest.sort_unstable_by_key(|s| s.battery_id);
    newest
}

/// [`write`] for samples from a trusted source (fixtures, tests), without
/// event flags.
pub async fn write_samples(
    db: &DatabaseConnection,
    samples: &[battery_sample::Model],
) -> ApiResult<HashSet<SampleKey>> {
    let rows: Vec<Checked> = samples.iter().cloned().map(Checked::unflagged).collect();
    let is_new = write(db, &rows).await?;
    Ok(samples
        .iter()
        .zip(is_new)
        .filter(|(_, n)| *n)
        .map(|(s, _)| (s.battery_id, s.ts))
        .collect())
}

/// Samples of one battery with `from <= ts < to` and `ts > after`, oldest
/// first, at most `limit`.
pub async fn samples_in_range(
    db: &impl ConnectionTrait,
    battery_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<DateTime<Utc>>,
    limit: u64,
) -> ApiResult<Vec<battery_sample::Model>> {
    use battery_sample::Column as C;
    let mut q = battery_sample::Entity::find()
        .filter(C::BatteryId.eq(battery_id))
        .filter(C::Ts.gte(from))
        .filter(C::Ts.lt(to));
    if let Some(after) = after {
        q = q.filter(C::Ts.gt(after));
    }
    Ok(q.order_by_asc(C::Ts).limit(limit).all(db).await?)
}

/// Number of samples of one battery in `[from, to)`.
pub async fn count_in_range(
    db: &impl ConnectionTrait,
    battery_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<u64> {
    use battery_sample::Column as C;
    use sea_orm::PaginatorTrait;
    Ok(battery_sample::Entity::find()
        .filter(C::BatteryId.eq(battery_id))
        .filter(C::Ts.gte(from))
        .filter(C::Ts.lt(to))
        .count(db)
        .await?)
}

/// The newest sample of each given battery, in one statement.
pub async fn latest_samples(
    db: &impl ConnectionTrait,
    battery_ids: &[i64],
) -> ApiResult<Vec<battery_sample::Model>> {
    use battery_sample::Column as C;
    Ok(battery_sample::Entity::find()
        .filter(crate::db::id_in(
            db.get_database_backend(),
            C::BatteryId,
            battery_ids.iter().copied(),
        ))
        .filter(Expr::col((battery_sample::Entity, C::Ts)).eq(Expr::cust(
            "(SELECT b.last_sample_at FROM batteries b WHERE b.id = battery_samples.battery_id)",
        )))
        .all(db)
        .await?)
}

/// Roll-up buckets of one battery at `resolution` starting in `[from, to)`
/// and after `after`, oldest first.
pub async fn rollups_in_range(
    db: &impl ConnectionTrait,
    battery_id: i64,
    resolution: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    after: Option<DateTime<Utc>>,
    limit: u64,
) -> ApiResult<Vec<battery_rollup::Model>> {
    use battery_rollup::Column as C;
    let mut q = battery_rollup::Entity::find()
        .filter(C::BatteryId.eq(battery_id))
        .filter(C::Resolution.eq(resolution))
        .filter(C::Bucket.gte(from))
        .filter(C::Bucket.lt(to));
    if let Some(after) = after {
        q = q.filter(C::Bucket.gt(after));
    }
    Ok(q.order_by_asc(C::Bucket).limit(limit).all(db).await?)
}

/// Number of roll-up buckets of one battery at `resolution` in `[from, to)`.
pub async fn count_rollups(
    db: &impl ConnectionTrait,
    battery_id: i64,
    resolution: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<u64> {
    use battery_rollup::Column as C;
    use sea_orm::PaginatorTrait;
    Ok(battery_rollup::Entity::find()
        .filter(C::BatteryId.eq(battery_id))
        .filter(C::Resolution.eq(resolution))
        .filter(C::Bucket.gte(from))
        .filter(C::Bucket.lt(to))
        .count(db)
        .await?)
}

/// Deletes raw samples older than `cutoff` (roll-ups are kept); returns how many.
pub async fn purge_samples_before(
    db: &impl ConnectionTrait,
    cutoff: DateTime<Utc>,
) -> ApiResult<u64> {
    let res = battery_sample::Entity::delete_many()
        .filter(battery_sample::Column::Ts.lt(cutoff))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
