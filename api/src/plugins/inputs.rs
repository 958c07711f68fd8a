//! The data a plugin call receives: the batteries of a scope the caller may
//! see, and their telemetry over a time range as columns (raw samples, or
//! hourly/daily roll-up averages). Its size is checked before it is loaded.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entities::{battery, battery_rollup, battery_sample};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};

use super::bindings::{Battery, Input, Resolution, Series};
use super::sandbox::RunError;
use crate::error::ApiError;
use crate::ids::{self, Kind};
use crate::telemetry::live::Filter;

/// Bytes one time step occupies in the input (seven 8-byte columns).
const BYTES_PER_ROW: usize = 56;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Db(#[from] ApiError),
}

impl From<sea_orm::DbErr> for InputError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Db(ApiError::Db(e))
    }
}

fn nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn mean(sum: f64, n: i64) -> f64 {
    if n > 0 { sum / n as f64 } else { f64::NAN }
}

/// Loads the input of a call over `[from, to)` of `filter`'s scope.
pub(crate) async fn load(
    db: &DatabaseConnection,
    filter: &Filter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    resolution: Resolution,
    max_input_bytes: usize,
) -> Result<Input, InputError> {
    let batteries = filter
        .batteries()
        .order_by_asc(battery::Column::Id)
        .all(db)
        .await?;
    let index: HashMap<i64, u32> = batteries
        .iter()
        .enumerate()
        .map(|(i, b)| (b.id, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let ids: Vec<i64> = batteries.iter().map(|b| b.id).collect();
    let mut series: Vec<Series> = batteries
        .iter()
        .enumerate()
        .map(|(i, _)| Series {
            battery: u32::try_from(i).unwrap_or(u32::MAX),
            ts: Vec::new(),
            voltage_v: Vec::new(),
            current_a: Vec::new(),
            soc_pct: Vec::new(),
            soh_pct: Vec::new(),
            temp_avg_c: Vec::new(),
            cycle_count: Vec::new(),
        })
        .collect();
    let too_large = |rows: u64| {
        let size = usize::try_from(rows)
            .unwrap_or(usize::MAX)
            .saturating_mul(BYTES_PER_ROW);
        (size > max_input_bytes).then_some(RunError::InputTooLarge {
            size,
            limit: max_input_bytes,
        })
    };
    if matches!(resolution, Resolution::Hour | Resolution::Day) {
        crate::telemetry::fold::fold(db).await?;
    }
    for chunk in ids.chunks(500) {
        match resolution {
            Resolution::Raw => {
                let q = battery_sample::Entity::find()
                    .filter(battery_sample::Column::BatteryId.is_in(chunk.to_vec()))
                    .filter(battery_sample::Column::Ts.gte(from))
                    .filter(battery_sample::Column::Ts.lt(to));
                if let Some(err) = too_large(q.clone().count(db).await?) {
                    return Err(err.into());
                }
                let rows = q
                    .order_by_asc(battery_sample::Column::BatteryId)
                    .order_by_asc(battery_sample::Column::Ts)
                    .all(db)
                    .await?;
                for r in rows {
                    let s = &mut series[index[&r.battery_id] as usize];
                    s.ts.push(r.ts.timestamp_millis());
                    s.voltage_v.push(nan(r.voltage_v));
                    s.current_a.push(nan(r.current_a));
                    s.soc_pct.push(nan(r.soc_pct));
                    s.soh_pct.push(nan(r.soh_pct));
                    s.temp_avg_c.push(nan(r.temp_avg_c));
                    s.cycle_count
                        .push(r.cycle_count.map_or(f64::NAN, f64::from));
                }
            }
            Resolution::Hour | Resolution::Day => {
                let name = if resolution == Resolution::Hour {
                    "HOUR"
                } else {
                    "DAY"
                };
                let q = battery_rollup::Entity::find()
                    .filter(battery_rollup::Column::BatteryId.is_in(chunk.to_vec()))
                    .filter(battery_rollup::Column::Resolution.eq(name))
                    .filter(battery_rollup::Column::Bucket.gte(from))
                    .filter(battery_rollup::Column::Bucket.lt(to));
                if let Some(err) = too_large(q.clone().count(db).await?) {
                    return Err(err.into());
                }
                let rows = q
                    .order_by_asc(battery_rollup::Column::BatteryId)
                    .order_by_asc(battery_rollup::Column::Bucket)
                    .all(db)
                    .await?;
                for r in rows {
                    let s = &mut series[index[&r.battery_id] as usize];
                    s.ts.push(r.bucket.timestamp_millis());
                    s.voltage_v.push(mean(r.voltage_sum, r.voltage_n));
                    s.current_a.push(mean(r.current_sum, r.current_n));
                    s.soc_pct.push(mean(r.soc_sum, r.soc_n));
                    s.soh_pct.push(mean(r.soh_sum, r.soh_n));
                    s.temp_avg_c.push(mean(r.temp_sum, r.temp_n));
                    s.cycle_count.push(f64::NAN);
                }
            }
        }
    }
    Ok(Input {
        scope: filter.describe(),
        from_ms: from.timestamp_millis(),
        to_ms: to.timestamp_millis(),
        resolution,
        batteries: batteries.into_iter().map(battery_of).collect(),
        series,
    })
}

fn battery_of(b: battery::Model) -> Battery {
    Battery {
        id: ids::encode(Kind::Battery, b.id).0,
        serial: b.serial,
        chemistry: sea_orm::ActiveEnum::to_value(&b.chemistry),
        nominal_capacity_ah: b.nominal_capacity_ah,
        nominal_voltage_v: b.nominal_voltage_v,
    }
}
