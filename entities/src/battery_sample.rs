//! One telemetry sample of one battery; (battery, timestamp) is unique.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "battery_samples")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub battery_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub ts: DateTimeUtc,
    pub voltage_v: Option<f64>,
    pub current_a: Option<f64>,
    pub power_w: Option<f64>,
    pub soc_pct: Option<f64>,
    pub soh_pct: Option<f64>,
    pub temp_min_c: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub temp_avg_c: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub efficiency_pct: Option<f64>,
    pub cycle_count: Option<i32>,
    /// Lowest cell voltage the BMS reported, V.
    pub cell_voltage_min_v: Option<f64>,
    /// Highest cell voltage the BMS reported, V.
    pub cell_voltage_max_v: Option<f64>,
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
