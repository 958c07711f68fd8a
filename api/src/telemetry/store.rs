//! Writes and reads of raw samples. A write is idempotent per
//! (battery, timestamp) — resending a sample changes nothing. Each
//! battery's `last_sample_at`/`soh_pct` point at its newest sample (and
//! newest SOH) even when samples arrive out of order; they move with the
//! roll-up fold ([`super::fold`]), which a write's partial buckets carry
//! them to, so writes update no row.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use entities::{battery_rollup, battery_sample};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use super::checks::Checked;
use crate::error::ApiResult;

/// The newest stored sample time of the battery `b` (an expression over
/// `batteries b`): one backward probe of the samples' key.
pub(super) const NEWEST_SAMPLE_AT: &str = "(SELECT n.ts FROM battery_samples n \
     WHERE n.battery_id = b.id ORDER BY n.ts DESC LIMIT 1)";

/// Keys of stored samples.
pub type SampleKey = (i64, DateTime<Utc>);

/// Stores samples of existing batteries in one transaction (SQLite:
/// [`super::sqlite_write`]; PostgreSQL: [`super::pg_write`]), appends the
/// new ones' hourly partial buckets (and the battery pointers they move)
/// as one row for the roll-up fold ([`super::fold`]), and tells for each
/// row whether it was new: a sample whose (battery, timestamp) is already
/// stored, or repeated earlier in `rows`, is skipped (idempotent).
pub async fn write(db: &DatabaseConnection, rows: &[Checked]) -> ApiResult<Vec<bool>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        super::pg_write::write(db.get_postgres_connection_pool(), rows).await
    } else {
        super::sqlite_write::write(db.get_sqlite_connection_pool(), rows).await
    }
}

/// The rows flagged new.
pub(super) fn new_rows<'a>(rows: &'a [Checked], is_new: &[bool]) -> Vec<&'a Checked> {
    rows.iter()
        .zip(is_new)
        .filter(|(_, n)| **n)
        .map(|(r, _)| r)
        .collect()
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

/// The newest sample of each given battery, in one statement: one index
/// probe per battery for its newest time, then one for the row.
pub async fn latest_samples(
    db: &impl ConnectionTrait,
    battery_ids: &[i64],
) -> ApiResult<Vec<battery_sample::Model>> {
    if battery_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT s.* FROM battery_samples s JOIN (SELECT b.id, {NEWEST_SAMPLE_AT} AS ts \
         FROM batteries b WHERE b.id IN ({})) newest \
         ON s.battery_id = newest.id AND s.ts = newest.ts",
        crate::db::id_list(battery_ids)
    );
    Ok(battery_sample::Entity::find()
        .from_raw_sql(Statement::from_string(db.get_database_backend(), sql))
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

/// Batteries per retention delete: each statement is an index range scan
/// per battery along the primary key, and a short transaction.
const PURGE_BATTERIES_PER_STATEMENT: usize = 500;

/// Deletes raw samples older than `cutoff` (roll-ups are kept); returns how
/// many. Battery by battery along the key `(battery_id, ts)`: samples have
/// no index on time alone (migration 15), which every write paid for.
pub async fn purge_samples_before(
    db: &impl ConnectionTrait,
    cutoff: DateTime<Utc>,
) -> ApiResult<u64> {
    use entities::battery;
    let ids: Vec<i64> = battery::Entity::find()
        .select_only()
        .column(battery::Column::Id)
        .order_by_asc(battery::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let mut deleted = 0;
    for chunk in ids.chunks(PURGE_BATTERIES_PER_STATEMENT) {
        deleted += battery_sample::Entity::delete_many()
            .filter(battery_sample::Column::BatteryId.is_in(chunk.iter().copied()))
            .filter(battery_sample::Column::Ts.lt(cutoff))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}
