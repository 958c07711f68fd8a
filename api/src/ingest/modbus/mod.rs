//! Modbus TCP polling. The [`supervisor`] keeps one [`poller`] task per BMS
//! whose protocol is `MODBUS_TCP`, rescanning the database so that adding,
//! removing or re-configuring a unit takes effect without a restart. Devices
//! are decoded with data-driven [`register_map`]s; their connection state is
//! kept in [`status`]. With several replicas, [`lease`]s decide which one
//! polls each unit.

pub mod graphql;
pub mod lease;
pub mod poller;
pub mod register_map;
pub mod status;
pub mod supervisor;

pub use lease::Leases;
pub use register_map::Registry;
pub use status::StatusRegistry;
