//! The fleet hierarchy — clients, sites, zones, BMS units, batteries: their
//! validated changes ([`service`]), what can be listed ([`listing`]), batched
//! parent lookups ([`loaders`]) and the GraphQL surface ([`graphql`]).

pub mod graphql;
pub mod listing;
pub mod loaders;
pub mod service;
pub mod types;

pub use service::HierarchyService;
