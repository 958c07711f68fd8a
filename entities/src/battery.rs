//! A battery (pack or string) managed by one BMS.

use sea_orm::entity::prelude::*;

use crate::enums::{BatteryStatus, Chemistry};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "batteries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub client_id: i64,
    pub site_id: i64,
    pub zone_id: i64,
    pub bms_id: i64,
    /// Manufacturer serial number, unique within a tenant.
    pub serial: String,
    pub chemistry: Chemistry,
    pub nominal_capacity_ah: f64,
    pub nominal_energy_kwh: Option<f64>,
    pub nominal_voltage_v: f64,
    pub install_date: Date,
    pub status: BatteryStatus,
    /// State of health of the most recent sample (denormalised for filters).
    pub soh_pct: Option<f64>,
    /// Timestamp of the most recent sample.
    pub last_sample_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::bms::Entity",
        from = "Column::BmsId",
        to = "super::bms::Column::Id"
    )]
    Bms,
}

impl ActiveModelBehavior for ActiveModel {}
