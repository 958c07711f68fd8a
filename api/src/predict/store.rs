//! Reading what the refresh needs (daily history, latest cycle count) and
//! what it produced (stored predictions).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entities::battery_prediction;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Statement,
};

use super::features::{DayPoint, WINDOW_DAYS};
use crate::error::ApiResult;

/// What the features are computed from, per battery.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub points: Vec<DayPoint>,
    pub efc: Option<i64>,
    pub as_of: Option<DateTime<Utc>>,
}

fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

const DAY_SECS: i64 = 86_400;

/// Daily points of the last [`WINDOW_DAYS`] before each battery's newest
/// day with SOH, its newest sample time and its highest cycle count there.
pub async fn histories(db: &DatabaseConnection, ids: &[i64]) -> ApiResult<HashMap<i64, History>> {
    let mut out: HashMap<i64, History> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let backend = db.get_database_backend();
    let list = id_list(ids);
    // Each battery's newest day with SOH, one index probe per battery (an
    // aggregate over the roll-ups would read every row of the window twice).
    let newest = db
        .query_all_raw(Statement::from_string(
            backend,
            format!(
                "SELECT b.id, (SELECT r.bucket FROM battery_rollups r WHERE r.battery_id = b.id \
                 AND r.resolution = 'DAY' AND r.soh_n > 0 ORDER BY r.bucket DESC LIMIT 1) \
                 FROM batteries b WHERE b.id IN ({list})"
            ),
        ))
        .await?;
    let mut last_day: HashMap<i64, i64> = HashMap::new();
    for row in newest {
        let id: i64 = row.try_get_by_index(0)?;
        if let Some(last) = row.try_get_by_index::<Option<DateTime<Utc>>>(1)? {
            last_day.insert(id, last.timestamp().div_euclid(DAY_SECS));
        }
    }
    let Some(earliest_last) = last_day.values().min().copied() else {
        return Ok(out);
    };
    let from = DateTime::<Utc>::from_timestamp((earliest_last - WINDOW_DAYS) * DAY_SECS, 0)
        .unwrap_or_default();
    for (id, p) in day_points(db, &list, from).await? {
        if last_day
            .get(&id)
            .is_none_or(|last| p.day <= last - WINDOW_DAYS)
        {
            continue;
        }
        out.entry(id).or_default().points.push(p);
    }
    let since = DateTime::<Utc>::from_timestamp(earliest_last * DAY_SECS, 0).unwrap_or_default();
    let latest = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT battery_id, MAX(ts) AS ts, MAX(cycle_count) AS efc FROM battery_samples \
                 WHERE battery_id IN ({list}) AND ts >= {} GROUP BY battery_id",
                placeholder(backend, 1)
            ),
            [since.into()],
        ))
        .await?;
    for row in latest {
        let id: i64 = row.try_get("", "battery_id")?;
        if let Some(h) = out.get_mut(&id) {
            h.as_of = row.try_get("", "ts")?;
            h.efc = row.try_get::<Option<i32>>("", "efc")?.map(i64::from);
        }
    }
    Ok(out)
}

/// The DAY roll-ups with SOH after `from` of the batteries in `list`, as
/// (battery, point), each battery's in day order.
async fn day_points(
    db: &DatabaseConnection,
    list: &str,
    from: DateTime<Utc>,
) -> ApiResult<Vec<(i64, DayPoint)>> {
    let backend = db.get_database_backend();
    if backend == sea_orm::DbBackend::Postgres {
        return day_points_pg(db, list, from).await;
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "SELECT battery_id, CAST(strftime('%s', bucket) AS INTEGER) / 86400, soh_sum, soh_n, \
                 temp_sum, temp_n, temp_max FROM battery_rollups \
                 WHERE resolution = 'DAY' AND soh_n > 0 AND battery_id IN ({list}) AND bucket > ? \
                 ORDER BY battery_id, bucket"
            ),
            [from.into()],
        ))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let soh_sum: f64 = row.try_get_by_index(2)?;
        let soh_n: i64 = row.try_get_by_index(3)?;
        let temp_sum: f64 = row.try_get_by_index(4)?;
        let temp_n: i64 = row.try_get_by_index(5)?;
        out.push((
            row.try_get_by_index(0)?,
            DayPoint {
                day: row.try_get_by_index(1)?,
                soh: (soh_sum / soh_n as f64) / 100.0,
                temp_avg: (temp_n > 0).then(|| temp_sum / temp_n as f64),
                temp_max: row.try_get_by_index(6)?,
            },
        ));
    }
    Ok(out)
}

/// PostgreSQL: one row per battery, its days as arrays, each battery's read
/// by its own index range in day order (a grouped aggregate over the whole
/// batch sorted 90,000 rows on disk per batch). A 10,000-battery fleet has
/// 1.8 million days in the window; decoding them row by row was most of a
/// fleet refresh. `date_part` gives a float (EXTRACT gives a slower
/// numeric). NaN stands for "no value" (checks refuse NaN).
async fn day_points_pg(
    db: &DatabaseConnection,
    list: &str,
    from: DateTime<Utc>,
) -> ApiResult<Vec<(i64, DayPoint)>> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            format!(
                "SELECT b.id, d.* FROM unnest(ARRAY[{list}]::bigint[]) b(id) CROSS JOIN LATERAL ( \
                 SELECT array_agg(date_part('epoch', bucket)), array_agg(soh_sum / soh_n), \
                 array_agg(CASE WHEN temp_n > 0 THEN temp_sum / temp_n ELSE 'NaN'::float8 END), \
                 array_agg(COALESCE(temp_max, 'NaN'::float8)) \
                 FROM (SELECT bucket, soh_sum, soh_n, temp_sum, temp_n, temp_max FROM battery_rollups \
                 WHERE resolution = 'DAY' AND soh_n > 0 AND battery_id = b.id AND bucket > $1 \
                 ORDER BY bucket) days) d"
            ),
            [from.into()],
        ))
        .await?;
    let known = |v: f64| (!v.is_nan()).then_some(v);
    let mut out = Vec::new();
    for row in rows {
        let id: i64 = row.try_get_by_index(0)?;
        let Some(epochs) = row.try_get_by_index::<Option<Vec<f64>>>(1)? else {
            continue;
        };
        let soh: Vec<f64> = row.try_get_by_index(2)?;
        let temp_avg: Vec<f64> = row.try_get_by_index(3)?;
        let temp_max: Vec<f64> = row.try_get_by_index(4)?;
        for (i, secs) in epochs.into_iter().enumerate() {
            out.push((
                id,
                DayPoint {
                    day: (secs / DAY_SECS as f64).floor() as i64,
                    soh: soh.get(i).copied().unwrap_or(f64::NAN) / 100.0,
                    temp_avg: temp_avg.get(i).copied().and_then(known),
                    temp_max: temp_max.get(i).copied().and_then(known),
                },
            ));
        }
    }
    Ok(out)
}

fn placeholder(backend: sea_orm::DbBackend, n: usize) -> String {
    match backend {
        sea_orm::DbBackend::Postgres => format!("${n}"),
        _ => "?".into(),
    }
}

/// The newest stored prediction of each of `ids`.
pub async fn latest(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> ApiResult<HashMap<i64, battery_prediction::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = battery_prediction::Entity::find()
        .filter(Expr::cust(format!(
            "(battery_id, computed_at) IN (SELECT battery_id, MAX(computed_at) \
             FROM battery_predictions WHERE battery_id IN ({}) GROUP BY battery_id)",
            id_list(ids)
        )))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.battery_id, r)).collect())
}

/// Stored predictions of a battery between `from` and `to`, oldest first.
pub async fn history(
    db: &DatabaseConnection,
    battery_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> ApiResult<Vec<battery_prediction::Model>> {
    use sea_orm::{ColumnTrait, QuerySelect};
    Ok(battery_prediction::Entity::find()
        .filter(battery_prediction::Column::BatteryId.eq(battery_id))
        .filter(battery_prediction::Column::ComputedAt.gte(from))
        .filter(battery_prediction::Column::ComputedAt.lte(to))
        .order_by_asc(battery_prediction::Column::ComputedAt)
        .limit(limit)
        .all(db)
        .await?)
}
