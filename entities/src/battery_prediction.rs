//! One stored prediction of a battery; a new row only when it changed.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "battery_predictions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub battery_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub computed_at: DateTimeUtc,
    pub tenant_id: i64,
    /// `OK` or `INSUFFICIENT_DATA`.
    pub status: String,
    /// Time of the newest sample the prediction saw.
    pub as_of: Option<DateTimeUtc>,
    /// SOH % in 30 days: median and 80 % band.
    pub soh30_value: Option<f64>,
    pub soh30_low: Option<f64>,
    pub soh30_high: Option<f64>,
    /// Days to end of life: median and 80 % band.
    pub rul_value: Option<f64>,
    pub rul_low: Option<f64>,
    pub rul_high: Option<f64>,
    pub failure_probability: Option<f64>,
    pub anomaly_score: Option<f64>,
    /// `LOW`, `MEDIUM` or `HIGH`.
    pub risk_level: Option<String>,
    /// `[{"name": …, "impact": …}]`: what moved the remaining life most.
    pub factors: Json,
    pub model_version: String,
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
