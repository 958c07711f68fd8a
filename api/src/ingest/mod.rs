//! Sources that feed telemetry into `telemetry::pipeline`: HTTP push
//! ([`http_push`], `POST /ingest`) and, through GraphQL, `ingestSamples`.
//! Modbus TCP polling and MQTT will join here.

pub mod http_push;
