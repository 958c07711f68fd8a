//! GraphQL surface of telemetry: `ingestSamples`, `batteryMetrics` over raw
//! samples or roll-ups with cursor pagination, and batched
//! `Battery.latestSample`.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ErrorExtensions, ID, Object, Result, ResultExt, SimpleObject};
use chrono::{DateTime, Duration, DurationRound, Utc};
use entities::{battery, battery_rollup, battery_sample};

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
    /// Lowest cell voltage the BMS reported, V.
    pub cell_voltage_min_v: Option<f64>,
    /// Highest cell voltage the BMS reported, V.
    pub cell_voltage_max_v: Option<f64>,
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
            cell_voltage_min_v: m.cell_voltage_min_v,
            cell_voltage_max_v: m.cell_voltage_max_v,
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

/// Granularity of `batteryMetrics`.
#[derive(Enum, Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum MetricResolution {
    /// RAW up to 2 days, HOUR up to 60 days, DAY beyond.
    #[default]
    Auto,
    Raw,
    Hour,
    Day,
}

impl MetricResolution {
    fn resolve(self, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        match self {
            Self::Auto if to - from <= Duration::days(2) => Self::Raw,
            Self::Auto if to - from <= Duration::days(60) => Self::Hour,
            Self::Auto => Self::Day,
            other => other,
        }
    }

    fn bucket_name(self) -> &'static str {
        if self == Self::Day { "DAY" } else { "HOUR" }
    }
}

/// A point of a battery's time series: one raw sample (`sampleCount` 1,
/// minimum = maximum = value) or an hourly / daily bucket (averages, extremes,
/// standard deviations, energy and event counts).
#[derive(SimpleObject, Clone, Debug)]
pub struct MetricPoint {
    /// The sample's time, or the start of the bucket.
    pub ts: DateTime<Utc>,
    pub resolution: MetricResolution,
    pub sample_count: i64,
    pub voltage_v: Option<f64>,
    pub voltage_min_v: Option<f64>,
    pub voltage_max_v: Option<f64>,
    pub voltage_stddev_v: Option<f64>,
    pub current_a: Option<f64>,
    pub current_min_a: Option<f64>,
    pub current_max_a: Option<f64>,
    pub soc_pct: Option<f64>,
    pub soc_min_pct: Option<f64>,
    pub soc_max_pct: Option<f64>,
    pub soc_stddev_pct: Option<f64>,
    pub soh_pct: Option<f64>,
    pub temp_avg_c: Option<f64>,
    pub temp_min_c: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub temp_stddev_c: Option<f64>,
    /// Raw samples only.
    pub power_w: Option<f64>,
    /// Raw samples only: the throughput counter.
    pub energy_kwh: Option<f64>,
    /// Raw samples only.
    pub efficiency_pct: Option<f64>,
    /// Raw samples only.
    pub cycle_count: Option<i32>,
    /// Buckets only: energy charged, integrated from power between samples.
    pub energy_in_kwh: Option<f64>,
    /// Buckets only: energy discharged.
    pub energy_out_kwh: Option<f64>,
    /// Lowest cell voltage reported (in the bucket), V.
    pub cell_voltage_min_v: Option<f64>,
    /// Highest cell voltage reported (in the bucket), V.
    pub cell_voltage_max_v: Option<f64>,
    /// Buckets only: samples below the chemistry's minimum voltage (pack
    /// or cell).
    pub under_voltage_events: Option<i64>,
    /// Buckets only: samples above the chemistry's maximum temperature.
    pub over_temperature_events: Option<i64>,
}

impl From<battery_sample::Model> for MetricPoint {
    fn from(m: battery_sample::Model) -> Self {
        Self {
            ts: m.ts,
            resolution: MetricResolution::Raw,
            sample_count: 1,
            voltage_v: m.voltage_v,
            voltage_min_v: m.voltage_v,
            voltage_max_v: m.voltage_v,
            voltage_stddev_v: None,
            current_a: m.current_a,
            current_min_a: m.current_a,
            current_max_a: m.current_a,
            soc_pct: m.soc_pct,
            soc_min_pct: m.soc_pct,
            soc_max_pct: m.soc_pct,
            soc_stddev_pct: None,
            soh_pct: m.soh_pct,
            temp_avg_c: m.temp_avg_c,
            temp_min_c: m.temp_min_c.or(m.temp_avg_c),
            temp_max_c: m.temp_max_c.or(m.temp_avg_c),
            temp_stddev_c: None,
            power_w: m.power_w,
            energy_kwh: m.energy_kwh,
            efficiency_pct: m.efficiency_pct,
            cycle_count: m.cycle_count,
            cell_voltage_min_v: m.cell_voltage_min_v,
            cell_voltage_max_v: m.cell_voltage_max_v,
            energy_in_kwh: None,
            energy_out_kwh: None,
            under_voltage_events: None,
            over_temperature_events: None,
        }
    }
}

/// Mean and population standard deviation from count, sum and sum of squares.
fn mean_sd(n: i64, sum: f64, sumsq: f64) -> (Option<f64>, Option<f64>) {
    if n <= 0 {
        return (None, None);
    }
    let mean = sum / n as f64;
    let var = (sumsq / n as f64 - mean * mean).max(0.0);
    (Some(mean), Some(var.sqrt()))
}

impl From<battery_rollup::Model> for MetricPoint {
    fn from(r: battery_rollup::Model) -> Self {
        let (voltage, voltage_sd) = mean_sd(r.voltage_n, r.voltage_sum, r.voltage_sumsq);
        let (current, _) = mean_sd(r.current_n, r.current_sum, r.current_sumsq);
        let (soc, soc_sd) = mean_sd(r.soc_n, r.soc_sum, r.soc_sumsq);
        let (soh, _) = mean_sd(r.soh_n, r.soh_sum, r.soh_sumsq);
        let (temp, temp_sd) = mean_sd(r.temp_n, r.temp_sum, r.temp_sumsq);
        Self {
            ts: r.bucket,
            resolution: if r.resolution == "DAY" {
                MetricResolution::Day
            } else {
                MetricResolution::Hour
            },
            sample_count: r.sample_count,
            voltage_v: voltage,
            voltage_min_v: r.voltage_min,
            voltage_max_v: r.voltage_max,
            voltage_stddev_v: voltage_sd,
            current_a: current,
            current_min_a: r.current_min,
            current_max_a: r.current_max,
            soc_pct: soc,
            soc_min_pct: r.soc_min,
            soc_max_pct: r.soc_max,
            soc_stddev_pct: soc_sd,
            soh_pct: soh,
            temp_avg_c: temp,
            temp_min_c: r.temp_min,
            temp_max_c: r.temp_max,
            temp_stddev_c: temp_sd,
            power_w: None,
            energy_kwh: None,
            efficiency_pct: None,
            cycle_count: None,
            cell_voltage_min_v: r.cell_voltage_min,
            cell_voltage_max_v: r.cell_voltage_max,
            energy_in_kwh: Some(r.energy_in_kwh),
            energy_out_kwh: Some(r.energy_out_kwh),
            under_voltage_events: Some(r.under_voltage_count),
            over_temperature_events: Some(r.over_temp_count),
        }
    }
}

struct RollupCount {
    battery_id: i64,
    resolution: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[async_trait::async_trait]
impl crate::pagination::CountTotal for RollupCount {
    async fn count(&self, ctx: &Context<'_>) -> Result<u64> {
        let loader = loaders(ctx)?.loader();
        store::count_rollups(
            &loader.db,
            self.battery_id,
            self.resolution,
            self.from,
            self.to,
        )
        .await
        .extend()
    }
}

#[derive(Default)]
pub struct TelemetryQuery;

#[Object]
impl TelemetryQuery {
    /// Telemetry of one battery in `[from, to)`, oldest first: raw samples
    /// or hourly / daily buckets (`resolution`, AUTO by default, picks from
    /// the length of the range). `to` defaults to now and `from` to 24 hours
    /// before `to`.
    #[graphql(complexity = "crate::pagination::cost(first, None, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn battery_metrics(
        &self,
        ctx: &Context<'_>,
        battery_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default)] resolution: MetricResolution,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<TsCursor, MetricPoint, ConnectionExtra>> {
        let id = ids::decode(Kind::Battery, &battery_id).extend()?;
        let (from, to) = time_range(from, to, Duration::hours(24)).extend()?;
        let max = ctx.data::<MaxSamplePage>().map(|m| m.0).unwrap_or(1000);
        let limit = page_size(first, max).extend()?;
        let after = after
            .map(|c| TsCursor::decode_cursor(&c).map_err(|e| ApiError::validation("after", e)))
            .transpose()
            .extend()?;
        let loader = loaders(ctx)?.loader();
        find_scoped::<battery::Entity>(&loader.db, &loader.who, id, Kind::Battery)
            .await
            .extend()?;
        let after_ts = after.as_ref().map(|c| c.0);
        let resolution = resolution.resolve(from, to);
        let (mut points, total): (Vec<MetricPoint>, TotalSource) =
            if resolution == MetricResolution::Raw {
                let rows =
                    store::samples_in_range(&loader.db, id, from, to, after_ts, limit as u64 + 1)
                        .await
                        .extend()?;
                let total = TotalSource::Lazy(Arc::new(RangeCount {
                    battery_id: id,
                    from,
                    to,
                }));
                (rows.into_iter().map(MetricPoint::from).collect(), total)
            } else {
                let name = resolution.bucket_name();
                // A bucket that starts before `from` but overlaps it is included.
                let size = if name == "DAY" {
                    Duration::days(1)
                } else {
                    Duration::hours(1)
                };
                let start = from.duration_trunc(size).unwrap_or(from);
                super::fold::fold(&loader.db).await.extend()?;
                let rows = store::rollups_in_range(
                    &loader.db,
                    id,
                    name,
                    start,
                    to,
                    after_ts,
                    limit as u64 + 1,
                )
                .await
                .extend()?;
                let total = TotalSource::Lazy(Arc::new(RollupCount {
                    battery_id: id,
                    resolution: name,
                    from: start,
                    to,
                }));
                (rows.into_iter().map(MetricPoint::from).collect(), total)
            };
        let has_next = points.len() > limit;
        points.truncate(limit);
        let mut conn = Connection::with_additional_fields(
            after.is_some(),
            has_next,
            ConnectionExtra::new(total),
        );
        conn.edges = points
            .into_iter()
            .map(|p| Edge::new(TsCursor(p.ts), p))
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

/// The battery's newest sample (the battery row is already scope-checked),
/// read from the samples: the battery's pointer moves only with the fold.
pub async fn latest_sample(ctx: &Context<'_>, b: &battery::Model) -> Result<Option<Sample>> {
    let loader = loaders(ctx)?;
    loader
        .load_one(LatestSampleKey(b.id))
        .await
        .map_err(|e| e.to_graphql())
}

/// `from`/`to` of a history query: `to` defaults to now, `from` to
/// `default_span` before it, and `from` must come first.
pub(crate) fn time_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    default_span: Duration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - default_span);
    if from >= to {
        return Err(ApiError::validation("from", "must be earlier than to"));
    }
    Ok((from, to))
}

/// `first` of a history query: 100 by default, at most `max`.
pub(crate) fn page_size(first: Option<i32>, max: usize) -> Result<usize, ApiError> {
    match first {
        None => Ok(max.min(100)),
        Some(n) if n >= 0 && n as usize <= max => Ok(n as usize),
        Some(_) => Err(ApiError::validation(
            "first",
            format!("must be between 0 and {max}"),
        )),
    }
}
