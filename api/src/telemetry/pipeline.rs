//! The one path every sample takes, whatever its source: resolve the battery
//! in the caller's scope (by global id or serial, through the
//! [`Directory`]), check it, hand the valid rows to the [`Writer`], and
//! report per-sample rejections. Valid samples of a batch are stored even
//! when others in it are refused.

use std::sync::Arc;

use chrono::Duration;
use sea_orm::{ActiveEnum, DatabaseConnection};

use super::checks::{self, UNKNOWN_BATTERY};
use super::directory::Directory;
use super::input::{IngestReport, RejectedSample, SampleInput};
use super::writer::Writer;
use crate::auth::Principal;
use crate::config::IngestConfig;
use crate::error::ApiResult;

/// One record of a request: its position and either the parsed sample or
/// why it could not be parsed.
pub type Record = (u64, Result<SampleInput, RejectedSample>);

#[derive(Clone)]
pub struct Ingestor {
    writer: Writer,
    directory: Arc<Directory>,
    config: Arc<IngestConfig>,
}

impl Ingestor {
    /// `db` resolves batteries; `writes` ([`crate::db::writer_connection`])
    /// stores samples, counted in `metrics`.
    pub fn new(
        db: DatabaseConnection,
        writes: DatabaseConnection,
        config: IngestConfig,
        bus: crate::bus::Bus,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let writer = Writer::start(writes, &db, bus, metrics, &config);
        Self {
            directory: Arc::new(Directory::new(db)),
            writer,
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Validates and durably stores a batch of records as `who`.
    pub async fn ingest(&self, who: &Principal, records: Vec<Record>) -> ApiResult<IngestReport> {
        who.require(crate::auth::Action::IngestTelemetry)?;
        let mut rejected = Vec::new();
        let mut samples = Vec::with_capacity(records.len());
        for (index, record) in records {
            match record {
                Ok(s) => samples.push((index, s)),
                Err(r) => rejected.push(r),
            }
        }
        let batteries = self
            .directory
            .resolve(who, samples.iter().map(|(_, s)| s.battery.as_str()))
            .await?;
        let now = chrono::Utc::now();
        let max_future = Duration::seconds(self.config.max_future_secs);
        let mut rows = Vec::with_capacity(samples.len());
        for (index, s) in &samples {
            let Some(b) = batteries.get(s.battery.as_str()) else {
                rejected.push(RejectedSample::new(
                    *index,
                    UNKNOWN_BATTERY,
                    format!("no battery '{}' in your scope", truncate(&s.battery)),
                ));
                continue;
            };
            let limits = self.config.limits_for(b.chemistry.to_value().as_str());
            match checks::check(*index, s, b, &limits, now, max_future) {
                Ok(row) => rows.push(row),
                Err(r) => rejected.push(r),
            }
        }
        let accepted = rows.len() as u64;
        let stored = self.writer.write(rows).await?;
        rejected.sort_by_key(|r| r.index);
        let rejected_count = rejected.len() as u64;
        rejected.truncate(self.config.max_rejects_listed);
        Ok(IngestReport {
            accepted,
            stored,
            duplicates: accepted - stored,
            rejected_count,
            rejected,
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}
