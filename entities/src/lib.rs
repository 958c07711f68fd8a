//! SeaORM entities of TrackingBMS: the five-level fleet hierarchy under a
//! tenant (client → site → zone → BMS → battery), battery telemetry samples,
//! users, their credentials and sessions, and the audit log. Only table shapes live here; behaviour lives in
//! `api`.
//!
//! Rows below a client carry their ancestors' ids (`tenant_id`, `client_id`,
//! `site_id`, …) so that access scopes can be applied in SQL with one
//! indexed predicate, whatever the level.

pub mod api_key;
pub mod audit_log;
pub mod battery;
pub mod battery_prediction;
pub mod battery_rollup;
pub mod battery_sample;
pub mod bms;
pub mod client;
pub mod enums;
pub mod kpi_value;
pub mod oidc_login;
pub mod plugin;
pub mod plugin_enablement;
pub mod poll_lease;
pub mod prediction_model;
pub mod recovery_code;
pub mod report_artifact;
pub mod report_schedule;
pub mod scheduled_job;
pub mod session;
pub mod site;
pub mod tenant;
pub mod user;
pub mod zone;

pub mod prelude {
    pub use super::audit_log::Entity as AuditLog;
    pub use super::battery::Entity as Battery;
    pub use super::battery_sample::Entity as BatterySample;
    pub use super::bms::Entity as Bms;
    pub use super::client::Entity as Client;
    pub use super::site::Entity as Site;
    pub use super::tenant::Entity as Tenant;
    pub use super::user::Entity as User;
    pub use super::zone::Entity as Zone;
}
