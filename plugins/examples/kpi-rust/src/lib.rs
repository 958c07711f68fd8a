//! A KPI plugin for TrackingBMS, in Rust: per battery, the equivalent full
//! cycles (charge throughput ÷ twice the nominal capacity) and the energy
//! efficiency (energy discharged ÷ energy charged); for the scope, the
//! averages of both. Integrates current and power between consecutive raw
//! samples, skipping gaps longer than an hour.

wit_bindgen::generate!({ world: "kpi", path: "../../wit" });

use trackingbms::plugin::host::{Level, log};
// `Input`, `KpiPluginInfo` and `KpiValue` are used by the world itself,
// so the bindings bring them into scope here.
use trackingbms::plugin::types::{KpiInfo, Needs, Resolution, Series};

/// Longest interval integrated between two samples.
const MAX_GAP_MS: i64 = 3_600_000;

struct Plugin;

/// Charge throughput (Ah) and energy charged / discharged (Wh) of a series.
fn integrate(s: &Series) -> (f64, f64, f64) {
    let (mut ah, mut wh_in, mut wh_out) = (0.0, 0.0, 0.0);
    for i in 1..s.ts.len() {
        let dt_ms = s.ts[i] - s.ts[i - 1];
        if dt_ms <= 0 || dt_ms > MAX_GAP_MS {
            continue;
        }
        let (v, a) = (s.voltage_v[i - 1], s.current_a[i - 1]);
        if !v.is_finite() || !a.is_finite() {
            continue;
        }
        let hours = dt_ms as f64 / 3_600_000.0;
        ah += a.abs() * hours;
        let wh = v * a * hours;
        if wh > 0.0 {
            wh_in += wh;
        } else {
            wh_out -= wh;
        }
    }
    (ah, wh_in, wh_out)
}

impl Guest for Plugin {
    fn describe() -> KpiPluginInfo {
        let kpi = |name: &str, unit: &str, description: &str| KpiInfo {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
        };
        KpiPluginInfo {
            name: "energy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kpis: vec![
                kpi("equivalent_full_cycles", "cycles", "charge throughput ÷ (2 × nominal capacity), per battery"),
                kpi("energy_efficiency_pct", "%", "energy discharged ÷ energy charged, per battery"),
                kpi("fleet_equivalent_full_cycles", "cycles", "average of the batteries' equivalent full cycles"),
                kpi("fleet_energy_efficiency_pct", "%", "all energy discharged ÷ all energy charged"),
            ],
            needs: Needs {
                resolution: Resolution::Raw,
                max_days: 31,
            },
        }
    }

    fn compute(input: Input) -> Result<Vec<KpiValue>, String> {
        let mut out = Vec::new();
        let (mut cycles_sum, mut counted, mut all_in, mut all_out) = (0.0, 0u32, 0.0, 0.0);
        for s in &input.series {
            let battery = input
                .batteries
                .get(s.battery as usize)
                .ok_or_else(|| format!("series names battery {} of {}", s.battery, input.batteries.len()))?;
            if battery.nominal_capacity_ah <= 0.0 {
                log(Level::Warn, &format!("{} has no nominal capacity; skipped", battery.serial));
                continue;
            }
            let (ah, wh_in, wh_out) = integrate(s);
            let cycles = ah / (2.0 * battery.nominal_capacity_ah);
            out.push(KpiValue {
                name: "equivalent_full_cycles".into(),
                battery: Some(battery.id.clone()),
                value: cycles,
            });
            if wh_in > 0.0 {
                out.push(KpiValue {
                    name: "energy_efficiency_pct".into(),
                    battery: Some(battery.id.clone()),
                    value: 100.0 * wh_out / wh_in,
                });
            }
            cycles_sum += cycles;
            counted += 1;
            all_in += wh_in;
            all_out += wh_out;
        }
        if counted > 0 {
            out.push(KpiValue {
                name: "fleet_equivalent_full_cycles".into(),
                battery: None,
                value: cycles_sum / f64::from(counted),
            });
        }
        if all_in > 0.0 {
            out.push(KpiValue {
                name: "fleet_energy_efficiency_pct".into(),
                battery: None,
                value: 100.0 * all_out / all_in,
            });
        }
        log(Level::Info, &format!("{counted} batteries, {} values", out.len()));
        Ok(out)
    }
}

export!(Plugin);
