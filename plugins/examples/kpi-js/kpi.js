// A KPI plugin for TrackingBMS, in JavaScript (QuickJS, built into a
// WebAssembly component by componentize-qjs): thermal exposure per battery
// and for the scope, from raw samples.
//
// Records arrive as objects with camelCase fields, `list<f64>` as arrays of
// numbers (NaN where a reading is missing), enums as their case names.
// Returning an array is `ok`; throwing a string is the `err` of the result.
import { log } from "trackingbms:plugin/host@0.1.0";

/** Above this temperature (°C) a reading counts as hot. */
const HOT_C = 35;

export function describe() {
  return {
    name: "thermal",
    version: "0.1.0",
    kpis: [
      { name: "hot_readings_pct", unit: "%", description: `share of temperature readings above ${HOT_C} °C, per battery` },
      { name: "max_temp_c", unit: "°C", description: "highest temperature reading, per battery" },
      { name: "mean_temp_c", unit: "°C", description: "mean temperature reading, per battery" },
      { name: "hot_batteries", unit: "batteries", description: `batteries with at least one reading above ${HOT_C} °C` },
    ],
    needs: { resolution: "raw", maxDays: 31 },
  };
}

export function compute(input) {
  const out = [];
  let hotBatteries = 0;
  for (const s of input.series) {
    const battery = input.batteries[s.battery];
    if (battery === undefined) {
      throw `series names battery ${s.battery} of ${input.batteries.length}`;
    }
    let n = 0, hot = 0, sum = 0, max = -Infinity;
    for (const t of s.tempAvgC) {
      if (Number.isNaN(t)) continue;
      n += 1;
      sum += t;
      if (t > HOT_C) hot += 1;
      if (t > max) max = t;
    }
    if (n === 0) {
      log("debug", `${battery.serial}: no temperature readings`);
      continue;
    }
    if (hot > 0) hotBatteries += 1;
    out.push({ name: "hot_readings_pct", battery: battery.id, value: (100 * hot) / n });
    out.push({ name: "max_temp_c", battery: battery.id, value: max });
    out.push({ name: "mean_temp_c", battery: battery.id, value: sum / n });
  }
  out.push({ name: "hot_batteries", battery: null, value: hotBatteries });
  log("info", `thermal: ${input.series.length} batteries, ${hotBatteries} hot`);
  return out;
}
