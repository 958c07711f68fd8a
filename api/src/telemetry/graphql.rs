//! GraphQL surface of telemetry: the `Sample` type, `batteryMetrics` over raw
//! samples with cursor pagination, and batched `Battery.latestSample`.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::dataloader::Loader;
use async_graphql::{Context, ErrorExtensions, ID, Object, Result, ResultExt, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use entities::{battery, battery_sample};

use super::Ingestor;
use super::input::{IngestReport, SampleInput};
use super::store;
use crate::error::ApiError;
use crate::hierarchy::service::find_scoped;
use crate::ids::{self, Kind};
use crate::pagination::{ConnectionExtra, ScopedLoader, TotalSource, loaders};

/// One telemetry sample of a battery.
#[derive(SimpleObject, Clone)]
pub struct Sample {
    pub ts: DateTime<Utc>,
    pub voltage_v: Option<f64>,
    pub current_a: Option<f64>,
    pub power_w: Option<f64>,
    pub soc_pct: Option<f64>,
    pub soh_pct: Option<f64>,
    pub temp_min_c: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub temp_avg_c: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub efficiency_pct: Option<f64>,
    pub cycle_count: Option<i32>,
}

impl From<battery_sample::Model> for Sample {
    fn from(m: battery_sample::Model) -> Self {
        Self {
            ts: m.ts,
            voltage_v: m.voltage_v,
            current_a: m.current_a,
            power_w: m.power_w,
            soc_pct: m.soc_pct,
            soh_pct: m.soh_pct,
            temp_min_c: m.temp_min_c,
            temp_max_c: m.temp_max_c,
            temp_avg_c: m.temp_avg_c,
            energy_kwh: m.energy_kwh,
            efficiency_pct: m.efficiency_pct,
            cycle_count: m.cycle_count,
        }
    }
}

/// Cursor of a sample: its timestamp.
pub struct TsCursor(DateTime<Utc>);

impl CursorType for TsCursor {
    type Error = String;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
            .map_err(|_| "malformed cursor".to_owned())?;
        let text = String::from_utf8(bytes).map_err(|_| "malformed cursor".to_owned())?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| TsCursor(t.with_timezone(&Utc)))
            .map_err(|_| "malformed cursor".to_owned())
    }

    fn encode_cursor(&self) -> String {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            self.0.to_rfc3339(),
        )
    }
}

/// Largest page of samples (from `limits.max_sample_page_size`).
#[derive(Clone, Copy)]
pub struct MaxSamplePage(pub usize);

struct RangeCount {
    battery_id: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[async_trait::async_trait]
impl crate::pagination::CountTotal for RangeCount {
    async fn count(&self, ctx: &Context<'_>) -> Result<u64> {
        let loader = loaders(ctx)?.loader();
        store::count_in_range(&loader.db, self.battery_id, self.from, self.to)
            .await
            .extend()
    }
}

#[derive(Default)]
pub struct TelemetryMutation;

#[Object]
impl TelemetryMutation {
    /// Stores a small batch of samples (bulk loads go to `POST /ingest`).
    /// Valid samples are committed before the answer, even when others are
    /// rejected; resending a sample is harmless.
    async fn ingest_samples(
        &self,
        ctx: &Context<'_>,
        samples: Vec<SampleInput>,
    ) -> Result<IngestReport> {
        let ingestor = ctx.data::<Ingestor>()?;
        let max = ingestor.config().max_graphql_batch;
        if samples.len() > max {
            return Err(ApiError::validation(
                "samples",
                format!(
                    "{} samples in one call; the maximum is {max} (use POST /ingest for bulk)",
                    samples.len()
                ),
            )
            .extend());
        }
        let who = ctx.data::<crate::auth::Principal>()?;
        let records = samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u64, Ok(s)))
            .collect();
        ingestor.ingest(who, records).await.extend()
    }
}

#[derive(Default)]
pub struct TelemetryQuery;

#[Object]
impl TelemetryQuery {
    /// Raw samples of one battery in `[from, to)`, oldest first. `to`
    /// defaults to now and `from` to 24 hours before `to`.
    #[graphql(complexity = "crate::pagination::cost(first, None, child_complexity)")]
    async fn battery_metrics(
        &self,
        ctx: &Context<'_>,
        battery_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<TsCursor, Sample, ConnectionExtra>> {
        let id = ids::decode(Kind::Battery, &battery_id).extend()?;
        let to = to.unwrap_or_else(Utc::now);
        let from = from.unwrap_or(to - Duration::hours(24));
        if from >= to {
            return Err(ApiError::validation("from", "must be earlier than to").extend());
        }
        let max = ctx.data::<MaxSamplePage>().map(|m| m.0).unwrap_or(1000);
        let limit = match first {
            None => max.min(100),
            Some(n) if n >= 0 && n as usize <= max => n as usize,
            Some(_) => {
                return Err(
                    ApiError::validation("first", format!("must be between 0 and {max}")).extend(),
                );
            }
        };
        let after = after
            .map(|c| TsCursor::decode_cursor(&c).map_err(|e| ApiError::validation("after", e)))
            .transpose()
            .extend()?;
        let loader = loaders(ctx)?.loader();
        find_scoped::<battery::Entity>(&loader.db, &loader.who, id, Kind::Battery)
            .await
            .extend()?;
        let mut rows = store::samples_in_range(
            &loader.db,
            id,
            from,
            to,
            after.as_ref().map(|c| c.0),
            limit as u64 + 1,
        )
        .await
        .extend()?;
        let has_next = rows.len() > limit;
        rows.truncate(limit);
        let total = TotalSource::Lazy(Arc::new(RangeCount {
            battery_id: id,
            from,
            to,
        }));
        let mut conn = Connection::with_additional_fields(
            after.is_some(),
            has_next,
            ConnectionExtra::new(total),
        );
        conn.edges = rows
            .into_iter()
            .map(|m| Edge::new(TsCursor(m.ts), Sample::from(m)))
            .collect();
        Ok(conn)
    }
}

/// Key of `Battery.latestSample`: the battery.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LatestSampleKey(i64);

impl Loader<LatestSampleKey> for ScopedLoader {
    type Value = Sample;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[LatestSampleKey],
    ) -> Result<HashMap<LatestSampleKey, Sample>, Self::Error> {
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let rows = store::latest_samples(&self.db, &ids)
            .await
            .map_err(Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|m| (LatestSampleKey(m.battery_id), Sample::from(m)))
            .collect())
    }
}

/// The battery's newest sample (the battery row is already scope-checked).
pub async fn latest_sample(ctx: &Context<'_>, b: &battery::Model) -> Result<Option<Sample>> {
    if b.last_sample_at.is_none() {
        return Ok(None);
    }
    let loader = loaders(ctx)?;
    loader
        .load_one(LatestSampleKey(b.id))
        .await
        .map_err(|e| e.to_graphql())
}
