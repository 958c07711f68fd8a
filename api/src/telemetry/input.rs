//! What a producer sends: one sample (the same field names in GraphQL's
//! `SampleInput`, NDJSON and CSV) and what it gets back.

use async_graphql::{InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The measurement fields of a sample (besides `battery` and `ts`), as
/// named in GraphQL, NDJSON, CSV headers and register maps.
pub const MEASUREMENTS: [&str; 13] = [
    "voltageV",
    "currentA",
    "powerW",
    "socPct",
    "sohPct",
    "tempMinC",
    "tempMaxC",
    "tempAvgC",
    "energyKwh",
    "efficiencyPct",
    "cycleCount",
    "cellVoltageMinV",
    "cellVoltageMaxV",
];

/// One telemetry sample. `battery` is the battery's global id or its serial.
/// Current is positive while charging, negative while discharging.
#[derive(InputObject, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SampleInput {
    /// Global id or serial of the battery.
    pub battery: String,
    /// When the sample was measured (RFC 3339).
    pub ts: DateTime<Utc>,
    pub voltage_v: Option<f64>,
    pub current_a: Option<f64>,
    pub power_w: Option<f64>,
    pub soc_pct: Option<f64>,
    pub soh_pct: Option<f64>,
    pub temp_min_c: Option<f64>,
    pub temp_max_c: Option<f64>,
    pub temp_avg_c: Option<f64>,
    /// Energy throughput counter, kWh.
    pub energy_kwh: Option<f64>,
    pub efficiency_pct: Option<f64>,
    pub cycle_count: Option<i32>,
    /// Lowest cell voltage in the pack, V.
    pub cell_voltage_min_v: Option<f64>,
    /// Highest cell voltage in the pack, V.
    pub cell_voltage_max_v: Option<f64>,
}

/// Why one sample was refused. `index` is its position in the request
/// (0-based; for CSV, data rows after the header).
#[derive(SimpleObject, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RejectedSample {
    pub index: u64,
    /// `MALFORMED`, `UNKNOWN_BATTERY`, `NOT_FINITE`, `OUT_OF_RANGE`,
    /// `FUTURE_TIMESTAMP`, `INCONSISTENT` or `EMPTY_SAMPLE`.
    pub code: String,
    pub message: String,
}

impl SampleInput {
    /// A sample of `battery` at `ts` with no measurement yet.
    pub fn new(battery: String, ts: DateTime<Utc>) -> Self {
        Self {
            battery,
            ts,
            voltage_v: None,
            current_a: None,
            power_w: None,
            soc_pct: None,
            soh_pct: None,
            temp_min_c: None,
            temp_max_c: None,
            temp_avg_c: None,
            energy_kwh: None,
            efficiency_pct: None,
            cycle_count: None,
            cell_voltage_min_v: None,
            cell_voltage_max_v: None,
        }
    }
}

impl From<&entities::battery_sample::Model> for SampleInput {
    /// The sample as a producer would send it (battery by global id).
    fn from(m: &entities::battery_sample::Model) -> Self {
        Self {
            battery: crate::ids::encode(crate::ids::Kind::Battery, m.battery_id).0,
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

impl RejectedSample {
    pub fn new(index: u64, code: &str, message: impl Into<String>) -> Self {
        Self {
            index,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The outcome of an ingestion request. Every accepted sample is committed
/// before this is returned.
#[derive(SimpleObject, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    /// Valid samples, now durably stored (new ones plus duplicates).
    pub accepted: u64,
    /// Of the accepted, how many were new.
    pub stored: u64,
    /// Of the accepted, how many were already stored (same battery and timestamp).
    pub duplicates: u64,
    /// How many samples were refused.
    pub rejected_count: u64,
    /// The refused samples, up to the configured number.
    pub rejected: Vec<RejectedSample>,
}

impl IngestReport {
    /// Adds another chunk's outcome, listing at most `max_listed` rejects.
    pub fn merge(&mut self, other: IngestReport, max_listed: usize) {
        self.accepted += other.accepted;
        self.stored += other.stored;
        self.duplicates += other.duplicates;
        self.rejected_count += other.rejected_count;
        let room = max_listed.saturating_sub(self.rejected.len());
        self.rejected.extend(other.rejected.into_iter().take(room));
    }
}
