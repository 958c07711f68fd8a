//! Validation of one sample against its battery: finite numbers, physical
//! ranges of the battery's chemistry, a plausible timestamp, consistent
//! temperatures. Returns the row to store or the reason it is refused.

use chrono::{DateTime, Duration, Utc};
use entities::battery_sample;

use super::directory::BatteryRef;
use super::input::{RejectedSample, SampleInput};
use crate::config::ChemistryLimits;

/// Reasons, as the codes a producer sees.
pub const MALFORMED: &str = "MALFORMED";
pub const UNKNOWN_BATTERY: &str = "UNKNOWN_BATTERY";
pub const NOT_FINITE: &str = "NOT_FINITE";
pub const OUT_OF_RANGE: &str = "OUT_OF_RANGE";
pub const FUTURE_TIMESTAMP: &str = "FUTURE_TIMESTAMP";
pub const INCONSISTENT: &str = "INCONSISTENT";
pub const EMPTY_SAMPLE: &str = "EMPTY_SAMPLE";

/// Oldest timestamp accepted.
fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).unwrap_or_default() // 2000-01-01
}

/// A valid sample and the events it counts as in its roll-ups.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub sample: battery_sample::Model,
    /// The battery's place in the hierarchy (for live subscribers).
    pub owner: Option<crate::bus::Owner>,
    /// Pack voltage below the chemistry's minimum cell voltage × cells, or
    /// a reported cell below that minimum.
    pub under_voltage: bool,
    /// Hottest reading above the chemistry's maximum temperature.
    pub over_temperature: bool,
}

impl Checked {
    /// A sample from a trusted source, without event flags.
    pub fn unflagged(sample: battery_sample::Model) -> Self {
        Self {
            sample,
            owner: None,
            under_voltage: false,
            over_temperature: false,
        }
    }
}

/// Checks `s` (at position `index`) for `b`.
pub fn check(
    index: u64,
    s: &SampleInput,
    b: &BatteryRef,
    limits: &ChemistryLimits,
    now: DateTime<Utc>,
    max_future: Duration,
) -> Result<Checked, RejectedSample> {
    let reject = |code: &str, msg: String| RejectedSample::new(index, code, msg);
    if s.ts > now + max_future {
        return Err(reject(
            FUTURE_TIMESTAMP,
            format!("ts {} is in the future", s.ts.to_rfc3339()),
        ));
    }
    if s.ts < earliest() {
        return Err(reject(
            OUT_OF_RANGE,
            format!("ts {} is before 2000", s.ts.to_rfc3339()),
        ));
    }
    let cells = (b.nominal_voltage_v / limits.nominal_cell_v)
        .round()
        .max(1.0);
    let max_current = limits.max_c_rate * b.nominal_capacity_ah;
    let max_voltage = cells * limits.max_cell_v * 1.1;
    let max_cell = limits.max_cell_v * 1.1;
    let bounds: [(&str, Option<f64>, f64, f64); 12] = [
        ("voltageV", s.voltage_v, 0.0, max_voltage),
        ("currentA", s.current_a, -max_current, max_current),
        (
            "powerW",
            s.power_w,
            -max_current * max_voltage,
            max_current * max_voltage,
        ),
        ("socPct", s.soc_pct, 0.0, 100.0),
        ("sohPct", s.soh_pct, 0.0, 120.0),
        ("tempMinC", s.temp_min_c, -60.0, 150.0),
        ("tempMaxC", s.temp_max_c, -60.0, 150.0),
        ("tempAvgC", s.temp_avg_c, -60.0, 150.0),
        ("energyKwh", s.energy_kwh, 0.0, 1e12),
        ("efficiencyPct", s.efficiency_pct, 0.0, 100.0),
        ("cellVoltageMinV", s.cell_voltage_min_v, 0.0, max_cell),
        ("cellVoltageMaxV", s.cell_voltage_max_v, 0.0, max_cell),
    ];
    let mut any = s.cycle_count.is_some();
    for (field, value, lo, hi) in bounds {
        let Some(v) = value else { continue };
        any = true;
        if !v.is_finite() {
            return Err(reject(NOT_FINITE, format!("{field} is {v}")));
        }
        if v < lo || v > hi {
            return Err(reject(
                OUT_OF_RANGE,
                format!("{field} = {v} is outside [{lo:.1}, {hi:.1}] for this battery"),
            ));
        }
    }
    if !any {
        return Err(reject(
            EMPTY_SAMPLE,
            "the sample carries no measurement".into(),
        ));
    }
    if let Some(c) = s.cycle_count
        && c < 0
    {
        return Err(reject(
            OUT_OF_RANGE,
            format!("cycleCount = {c} is negative"),
        ));
    }
    if let (Some(lo), Some(hi)) = (s.temp_min_c, s.temp_max_c)
        && lo > hi
    {
        return Err(reject(
            INCONSISTENT,
            format!("tempMinC {lo} is above tempMaxC {hi}"),
        ));
    }
    if let (Some(lo), Some(hi)) = (s.cell_voltage_min_v, s.cell_voltage_max_v)
        && lo > hi
    {
        return Err(reject(
            INCONSISTENT,
            format!("cellVoltageMinV {lo} is above cellVoltageMaxV {hi}"),
        ));
    }
    let hottest = s.temp_max_c.or(s.temp_avg_c);
    let sample = battery_sample::Model {
        battery_id: b.id,
        ts: crate::clock::truncate(s.ts),
        voltage_v: s.voltage_v,
        current_a: s.current_a,
        power_w: s.power_w,
        soc_pct: s.soc_pct,
        soh_pct: s.soh_pct,
        temp_min_c: s.temp_min_c,
        temp_max_c: s.temp_max_c,
        temp_avg_c: s.temp_avg_c,
        energy_kwh: s.energy_kwh,
        efficiency_pct: s.efficiency_pct,
        cycle_count: s.cycle_count,
        cell_voltage_min_v: s.cell_voltage_min_v,
        cell_voltage_max_v: s.cell_voltage_max_v,
    };
    Ok(Checked {
        owner: Some(b.owner),
        // A reported cell below the minimum counts, even when the pack's
        // total still looks healthy.
        under_voltage: s.voltage_v.is_some_and(|v| v < cells * limits.min_cell_v)
            || s.cell_voltage_min_v.is_some_and(|v| v < limits.min_cell_v),
        over_temperature: hottest.is_some_and(|t| t > limits.max_temp_c),
        sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use entities::enums::Chemistry;

    fn battery() -> BatteryRef {
        BatteryRef {
            id: 1,
            serial: "B".into(),
            owner: crate::bus::Owner {
                tenant_id: 1,
                client_id: 1,
                site_id: 1,
                zone_id: 1,
                bms_id: 1,
            },
            chemistry: Chemistry::Lfp,
            nominal_capacity_ah: 100.0,
            nominal_voltage_v: 51.2,
        }
    }

    fn sample() -> SampleInput {
        serde_json::from_str(r#"{"battery":"B","ts":"2026-01-01T00:00:00Z","voltageV":52.0,"currentA":-20,"socPct":50,"tempMinC":20,"tempMaxC":25}"#)
            .unwrap()
    }

    fn code(s: SampleInput) -> String {
        let limits = ChemistryLimits::builtin("LFP");
        match check(3, &s, &battery(), &limits, Utc::now(), Duration::minutes(5)) {
            Ok(_) => "OK".into(),
            Err(r) => {
                assert_eq!(r.index, 3);
                r.code
            }
        }
    }

    #[test]
    fn physical_bounds_follow_the_chemistry() {
        assert_eq!(code(sample()), "OK");
        // 16 LFP cells at most 3.65 V (+10 %): 64 V is plausible, 70 V is not.
        assert_eq!(
            code(SampleInput {
                voltage_v: Some(64.0),
                ..sample()
            }),
            "OK"
        );
        assert_eq!(
            code(SampleInput {
                voltage_v: Some(70.0),
                ..sample()
            }),
            OUT_OF_RANGE
        );
        assert_eq!(
            code(SampleInput {
                current_a: Some(-501.0),
                ..sample()
            }),
            OUT_OF_RANGE
        );
        assert_eq!(
            code(SampleInput {
                soc_pct: Some(f64::NAN),
                ..sample()
            }),
            NOT_FINITE
        );
        assert_eq!(
            code(SampleInput {
                soc_pct: Some(100.5),
                ..sample()
            }),
            OUT_OF_RANGE
        );
        assert_eq!(
            code(SampleInput {
                temp_min_c: Some(30.0),
                ..sample()
            }),
            INCONSISTENT
        );
        assert_eq!(
            code(SampleInput {
                cycle_count: Some(-1),
                ..sample()
            }),
            OUT_OF_RANGE
        );
        assert_eq!(
            code(SampleInput {
                ts: Utc::now() + Duration::hours(1),
                ..sample()
            }),
            FUTURE_TIMESTAMP
        );
        let empty = SampleInput {
            voltage_v: None,
            current_a: None,
            soc_pct: None,
            temp_min_c: None,
            temp_max_c: None,
            ..sample()
        };
        assert_eq!(code(empty), EMPTY_SAMPLE);
    }

    #[test]
    fn cell_voltages_are_bounded_consistent_and_flag_under_voltage() {
        let limits = ChemistryLimits::builtin("LFP");
        let with_cells = |lo: f64, hi: f64| SampleInput {
            cell_voltage_min_v: Some(lo),
            cell_voltage_max_v: Some(hi),
            ..sample()
        };
        let checked =
            |s: SampleInput| check(0, &s, &battery(), &limits, Utc::now(), Duration::minutes(5));
        // A healthy pack whose weakest cell is below LFP's 2.5 V minimum.
        let weak = checked(with_cells(2.4, 3.3)).unwrap();
        assert!(weak.under_voltage);
        assert_eq!(weak.sample.cell_voltage_min_v, Some(2.4));
        assert_eq!(weak.sample.cell_voltage_max_v, Some(3.3));
        assert!(!checked(with_cells(3.2, 3.3)).unwrap().under_voltage);
        assert_eq!(code(with_cells(3.4, 3.2)), INCONSISTENT);
        assert_eq!(code(with_cells(3.2, 5.0)), OUT_OF_RANGE);
        assert_eq!(code(with_cells(f64::INFINITY, 3.3)), NOT_FINITE);
        // Cell voltages alone are a measurement.
        let only_cells = SampleInput {
            cell_voltage_min_v: Some(3.2),
            cell_voltage_max_v: Some(3.3),
            ..SampleInput::new("B".into(), sample().ts)
        };
        assert_eq!(code(only_cells), "OK");
    }
}
