//! One hourly or daily bucket of a battery's telemetry.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "battery_rollups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub battery_id: i64,
    /// `HOUR` or `DAY`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub resolution: String,
    /// Start of the bucket (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket: DateTimeUtc,
    pub sample_count: i64,
    pub voltage_n: i64,
    pub voltage_sum: f64,
    pub voltage_sumsq: f64,
    pub voltage_min: Option<f64>,
    pub voltage_max: Option<f64>,
    pub current_n: i64,
    pub current_sum: f64,
    pub current_sumsq: f64,
    pub current_min: Option<f64>,
    pub current_max: Option<f64>,
    pub soc_n: i64,
    pub soc_sum: f64,
    pub soc_sumsq: f64,
    pub soc_min: Option<f64>,
    pub soc_max: Option<f64>,
    pub soh_n: i64,
    pub soh_sum: f64,
    pub soh_sumsq: f64,
    pub soh_min: Option<f64>,
    pub soh_max: Option<f64>,
    pub temp_n: i64,
    pub temp_sum: f64,
    pub temp_sumsq: f64,
    pub temp_min: Option<f64>,
    pub temp_max: Option<f64>,
    pub energy_in_kwh: f64,
    pub energy_out_kwh: f64,
    pub under_voltage_count: i64,
    pub over_temp_count: i64,
    /// Lowest cell voltage reported in the bucket, V.
    pub cell_voltage_min: Option<f64>,
    /// Highest cell voltage reported in the bucket, V.
    pub cell_voltage_max: Option<f64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::battery::Entity",
        from = "Column::BatteryId",
        to = "super::battery::Column::Id"
    )]
    Battery,
}

impl ActiveModelBehavior for ActiveModel {}
