//! Battery telemetry: what producers send ([`input`]), how a sample is
//! checked ([`checks`]) against its battery ([`directory`]), the shared
//! ingestion path ([`pipeline`]) and its single batching [`writer`], the
//! sample store ([`store`]; on SQLite through a prepared insert run on
//! the writer's own thread, [`sqlite_write`]; on PostgreSQL through binary
//! `COPY`, [`pg_write`] and [`pg_copy`])
//! with its incremental hourly/daily roll-ups ([`rollup`], carried by one
//! [`rollup_batch`] per write and added up by [`fold`]; [`fold_legacy`]
//! for an older version's backlog) and [`retention`], and the GraphQL
//! surface ([`graphql`]:
//! `ingestSamples`, `batteryMetrics`, `Battery.latestSample`).

pub mod checks;
pub mod directory;
pub mod fold;
mod fold_legacy;
pub mod graphql;
pub mod input;
pub mod live;
mod pg_copy;
mod pg_write;
pub mod pipeline;
pub mod retention;
pub mod rollup;
mod rollup_batch;
mod sqlite_write;
pub mod store;
pub mod writer;

pub use pipeline::Ingestor;
