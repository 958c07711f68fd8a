//! GraphQL views of the hierarchy's enums and inputs. The enums mirror
//! `entities::enums` one to one.

use async_graphql::{Enum, ID, InputObject, MaybeUndefined};
use chrono::NaiveDate;
use entities::enums as db;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "db::ClientTier")]
pub enum ClientTier {
    Standard,
    Premium,
    Enterprise,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "db::BmsVendor")]
pub enum BmsVendor {
    #[graphql(name = "FOXBMS")]
    FoxBms,
    LibreSolar,
    Generic,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "db::BmsProtocol")]
pub enum BmsProtocol {
    ModbusTcp,
    HttpPush,
    Mqtt,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "db::Chemistry")]
pub enum Chemistry {
    Lfp,
    Nmc,
    Nca,
    Lto,
    LeadAcid,
    Other,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "db::BatteryStatus")]
pub enum BatteryStatus {
    Active,
    Maintenance,
    Fault,
    Decommissioned,
}

#[derive(InputObject, Clone, Debug)]
pub struct CreateClientInput {
    pub name: String,
    pub industry: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    /// IANA time zone; sites inherit it unless they set their own.
    #[graphql(default_with = "\"UTC\".to_string()")]
    pub time_zone: String,
    #[graphql(default_with = "ClientTier::Standard")]
    pub tier: ClientTier,
}

#[derive(InputObject, Clone, Debug, Default)]
pub struct UpdateClientInput {
    pub name: Option<String>,
    pub industry: MaybeUndefined<String>,
    pub country: MaybeUndefined<String>,
    pub time_zone: Option<String>,
    pub tier: Option<ClientTier>,
}

#[derive(InputObject, Clone, Debug)]
pub struct CreateSiteInput {
    pub client_id: ID,
    pub name: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// IANA time zone; defaults to the client's.
    pub time_zone: Option<String>,
    pub address: Option<String>,
}

#[derive(InputObject, Clone, Debug, Default)]
pub struct UpdateSiteInput {
    pub name: Option<String>,
    pub latitude: MaybeUndefined<f64>,
    pub longitude: MaybeUndefined<f64>,
    pub time_zone: Option<String>,
    pub address: MaybeUndefined<String>,
}

#[derive(InputObject, Clone, Debug)]
pub struct CreateZoneInput {
    pub site_id: ID,
    pub name: String,
    pub description: Option<String>,
}

#[derive(InputObject, Clone, Debug, Default)]
pub struct UpdateZoneInput {
    pub name: Option<String>,
    pub description: MaybeUndefined<String>,
}

#[derive(InputObject, Clone, Debug)]
pub struct CreateBmsInput {
    pub zone_id: ID,
    pub name: String,
    #[graphql(default_with = "BmsVendor::Generic")]
    pub vendor: BmsVendor,
    #[graphql(default_with = "BmsProtocol::HttpPush")]
    pub protocol: BmsProtocol,
    /// `host:port` for MODBUS_TCP (required), topic for MQTT.
    pub endpoint: Option<String>,
    #[graphql(default = 5000)]
    pub poll_interval_ms: i32,
    /// Register map used to decode a Modbus device.
    pub register_map: Option<String>,
    pub capacity_kwh: Option<f64>,
}

#[derive(InputObject, Clone, Debug, Default)]
pub struct UpdateBmsInput {
    /// Moves the unit to another zone of the same site.
    pub zone_id: Option<ID>,
    pub name: Option<String>,
    pub vendor: Option<BmsVendor>,
    pub protocol: Option<BmsProtocol>,
    pub endpoint: MaybeUndefined<String>,
    pub poll_interval_ms: Option<i32>,
    pub register_map: MaybeUndefined<String>,
    pub capacity_kwh: MaybeUndefined<f64>,
}

#[derive(InputObject, Clone, Debug)]
pub struct CreateBatteryInput {
    pub bms_id: ID,
    /// Manufacturer serial, unique within the tenant.
    pub serial: String,
    pub chemistry: Chemistry,
    pub nominal_capacity_ah: f64,
    pub nominal_energy_kwh: Option<f64>,
    pub nominal_voltage_v: f64,
    pub install_date: NaiveDate,
    #[graphql(default_with = "BatteryStatus::Active")]
    pub status: BatteryStatus,
}

#[derive(InputObject, Clone, Debug, Default)]
pub struct UpdateBatteryInput {
    /// Moves the battery to another BMS (any site of the tenant).
    pub bms_id: Option<ID>,
    pub serial: Option<String>,
    pub chemistry: Option<Chemistry>,
    pub nominal_capacity_ah: Option<f64>,
    pub nominal_energy_kwh: MaybeUndefined<f64>,
    pub nominal_voltage_v: Option<f64>,
    pub install_date: Option<NaiveDate>,
    pub status: Option<BatteryStatus>,
}
