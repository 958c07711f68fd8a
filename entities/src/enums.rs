//! Closed vocabularies stored as short strings, so both SQLite and
//! PostgreSQL hold the same readable values.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Commercial tier of a client.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum ClientTier {
    #[sea_orm(string_value = "STANDARD")]
    Standard,
    #[sea_orm(string_value = "PREMIUM")]
    Premium,
    #[sea_orm(string_value = "ENTERPRISE")]
    Enterprise,
}

/// Make or family of a battery management system.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum BmsVendor {
    #[sea_orm(string_value = "FOXBMS")]
    FoxBms,
    #[sea_orm(string_value = "LIBRE_SOLAR")]
    LibreSolar,
    #[sea_orm(string_value = "GENERIC")]
    Generic,
}

/// How a BMS delivers its telemetry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum BmsProtocol {
    #[sea_orm(string_value = "MODBUS_TCP")]
    ModbusTcp,
    #[sea_orm(string_value = "HTTP_PUSH")]
    HttpPush,
    #[sea_orm(string_value = "MQTT")]
    Mqtt,
}

/// Cell chemistry of a battery.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Chemistry {
    #[sea_orm(string_value = "LFP")]
    Lfp,
    #[sea_orm(string_value = "NMC")]
    Nmc,
    #[sea_orm(string_value = "NCA")]
    Nca,
    #[sea_orm(string_value = "LTO")]
    Lto,
    #[sea_orm(string_value = "LEAD_ACID")]
    LeadAcid,
    #[sea_orm(string_value = "OTHER")]
    Other,
}

/// Operational status of a battery.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum BatteryStatus {
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    #[sea_orm(string_value = "MAINTENANCE")]
    Maintenance,
    #[sea_orm(string_value = "FAULT")]
    Fault,
    #[sea_orm(string_value = "DECOMMISSIONED")]
    Decommissioned,
}

/// Role of a user within its tenant (the permission matrix is in `api::auth`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Role {
    #[sea_orm(string_value = "SUPER_ADMIN")]
    SuperAdmin,
    #[sea_orm(string_value = "CLIENT_ADMIN")]
    ClientAdmin,
    #[sea_orm(string_value = "SITE_MANAGER")]
    SiteManager,
    #[sea_orm(string_value = "TECHNICIAN")]
    Technician,
    #[sea_orm(string_value = "OBSERVER")]
    Observer,
}
