//! Writes and reads of raw samples. A write is idempotent per
//! (battery, timestamp) — resending a sample changes nothing — and keeps each
//! battery's `last_sample_at`/`soh_pct` pointing at its newest sample even
//! when samples arrive out of order.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entities::{battery, battery_sample};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait, TryInsertResult,
};

use crate::error::ApiResult;

/// Rows per INSERT: 13 columns × 1000 stays under SQLite's 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 1000;

/// Keys of stored samples.
pub type SampleKey = (i64, DateTime<Utc>);

/// Stores samples of existing batteries in one transaction and returns the
/// keys of those that were new: a sample whose (battery, timestamp) is
/// already stored, or repeated in `samples`, is skipped (idempotent).
pub async fn write_samples(
    db: &DatabaseConnection,
    samples: &[battery_sample::Model],
) -> ApiResult<HashSet<SampleKey>> {
    let mut inserted = HashSet::with_capacity(samples.len());
    if samples.is_empty() {
        return Ok(inserted);
    }
    let txn = db.begin().await?;
    for chunk in samples.chunks(ROWS_PER_STATEMENT) {
        let result = battery_sample::Entity::insert_many(
            chunk
                .iter()
                .cloned()
                .map(IntoActiveModel::into_active_model),
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
    let mut newest: HashMap<i64, &battery_sample::Model> = HashMap::new();
    for s in samples
        .iter()
        .filter(|s| inserted.contains(&(s.battery_id, s.ts)))
    {
        let entry = newest.entry(s.battery_id).or_insert(s);
        if s.ts > entry.ts {
            *entry = s;
        }
    }
    for s in newest.values() {
        battery::Entity::update_many()
            .col_expr(battery::Column::LastSampleAt, Expr::value(s.ts))
            .col_expr(
                battery::Column::SohPct,
                match s.soh_pct {
                    Some(v) => Expr::value(v),
                    None => Expr::col(battery::Column::SohPct),
                },
            )
            .filter(battery::Column::Id.eq(s.battery_id))
            .filter(
                Condition::any()
                    .add(battery::Column::LastSampleAt.is_null())
                    .add(battery::Column::LastSampleAt.lt(s.ts)),
            )
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(inserted)
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
        .filter(C::BatteryId.is_in(battery_ids.iter().copied()))
        .filter(Expr::col((battery_sample::Entity, C::Ts)).eq(Expr::cust(
            "(SELECT b.last_sample_at FROM batteries b WHERE b.id = battery_samples.battery_id)",
        )))
        .all(db)
        .await?)
}
