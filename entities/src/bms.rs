//! A battery management system unit: the device telemetry comes from.

use sea_orm::entity::prelude::*;

use crate::enums::{BmsProtocol, BmsVendor};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "bms_units")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub client_id: i64,
    pub site_id: i64,
    pub zone_id: i64,
    pub name: String,
    pub vendor: BmsVendor,
    pub protocol: BmsProtocol,
    /// Device address: `host:port` for Modbus TCP, topic for MQTT, unused for HTTP push.
    pub endpoint: Option<String>,
    pub poll_interval_ms: i32,
    /// Name of the register map used to decode this device (Modbus).
    pub register_map: Option<String>,
    pub capacity_kwh: Option<f64>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::zone::Entity",
        from = "Column::ZoneId",
        to = "super::zone::Column::Id"
    )]
    Zone,
}

impl ActiveModelBehavior for ActiveModel {}
