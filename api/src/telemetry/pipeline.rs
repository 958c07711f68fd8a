//! The one path every sample takes, whatever its source: resolve the battery
//! in the caller's scope (by global id or serial), check it, hand the valid
//! rows to the [`Writer`], and report per-sample rejections. Valid samples of
//! a batch are stored even when others in it are refused.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use entities::battery;
use sea_orm::{ActiveEnum, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter};

use super::checks::{self, UNKNOWN_BATTERY};
use super::input::{IngestReport, RejectedSample, SampleInput};
use super::writer::Writer;
use crate::auth::Principal;
use crate::config::IngestConfig;
use crate::error::ApiResult;
use crate::ids::{self, Kind};

/// One record of a request: its position and either the parsed sample or
/// why it could not be parsed.
pub type Record = (u64, Result<SampleInput, RejectedSample>);

#[derive(Clone)]
pub struct Ingestor {
    db: DatabaseConnection,
    writer: Writer,
    config: Arc<IngestConfig>,
}

impl Ingestor {
    pub fn new(db: DatabaseConnection, config: IngestConfig, bus: crate::bus::Bus) -> Self {
        let writer = Writer::start(
            db.clone(),
            bus,
            config.batch_rows,
            config.queue_depth,
            std::time::Duration::from_millis(config.enqueue_timeout_ms),
            config.writers,
            std::time::Duration::from_millis(config.rollup_fold_ms),
        );
        Self {
            db,
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

    /// Batteries named by global id or serial, within `who`'s scope, keyed
    /// by the reference used — in one statement.
    async fn resolve<'a>(
        &self,
        who: &Principal,
        refs: impl Iterator<Item = &'a str>,
    ) -> ApiResult<HashMap<&'a str, battery::Model>> {
        let mut by_id: HashMap<i64, Vec<&'a str>> = HashMap::new();
        let mut serials: Vec<&'a str> = Vec::new();
        for r in refs {
            match ids::decode(Kind::Battery, r) {
                Ok(id) => by_id.entry(id).or_default().push(r),
                Err(_) => serials.push(r),
            }
        }
        serials.sort_unstable();
        serials.dedup();
        if by_id.is_empty() && serials.is_empty() {
            return Ok(HashMap::new());
        }
        // Only the lists given: an empty one would be bound as `$3 = $4`,
        // which the planner cannot drop, and the `OR` would then scan
        // every battery of the tenant.
        let mut named = Condition::any();
        if !by_id.is_empty() {
            named = named.add(crate::db::id_in(
                self.db.get_database_backend(),
                battery::Column::Id,
                by_id.keys().copied(),
            ));
        }
        if !serials.is_empty() {
            named = named.add(battery::Column::Serial.is_in(serials.iter().copied()));
        }
        let found = battery::Entity::find()
            .filter(who.condition::<battery::Entity>())
            .filter(named)
            .all(&self.db)
            .await?;
        let mut out = HashMap::new();
        for b in found {
            if let Some(refs) = by_id.get(&b.id) {
                for r in refs {
                    out.insert(*r, b.clone());
                }
            }
            if let Ok(i) = serials.binary_search(&b.serial.as_str()) {
                out.insert(serials[i], b);
            }
        }
        Ok(out)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}
