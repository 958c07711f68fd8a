//! Sources that feed telemetry into `telemetry::pipeline`: HTTP push
//! ([`http_push`], `POST /ingest`) and, through GraphQL, `ingestSamples`.
//! [`modbus`] polls Modbus TCP devices; [`mqtt`] subscribes to a broker.

pub mod http_push;
pub mod modbus;
pub mod mqtt;
