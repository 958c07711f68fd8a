//! Battery telemetry: the durable sample store ([`store`]) and its GraphQL
//! surface ([`graphql`]: `batteryMetrics`, `Battery.latestSample`).

pub mod graphql;
pub mod store;
