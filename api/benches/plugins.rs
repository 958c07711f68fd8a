//! WebAssembly plugin host figures, with the components `plugins/build.sh`
//! builds (run it first):
//! - per-call time of the Rust KPI example over 10,000 raw samples (one
//!   battery; 100 batteries × 100 samples), input passing included;
//! - instantiation time with the pooling allocator (fresh store + instance);
//! - how long past its deadline an infinite loop keeps running.
//!
//!     plugins/build.sh && cargo bench -p trackingbms-api --bench plugins

use std::time::{Duration, Instant};

use trackingbms_api::config::PluginLimits;
use trackingbms_api::plugins::Sandbox;
use trackingbms_api::plugins::bindings::{Battery, Input, Resolution, Series};

fn component(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = format!("{}/../plugins/dist/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("{path}: {e} (run plugins/build.sh)"))
}

fn input(batteries: usize, samples: usize) -> Input {
    let series = (0..batteries)
        .map(|b| {
            let n = samples;
            Series {
                battery: b as u32,
                ts: (0..n as i64)
                    .map(|i| 1_767_225_600_000 + i * 60_000)
                    .collect(),
                voltage_v: (0..n).map(|i| 50.0 + (i % 50) as f64 * 0.05).collect(),
                current_a: (0..n)
                    .map(|i| if (i / 60) % 2 == 0 { 20.0 } else { -18.0 })
                    .collect(),
                soc_pct: vec![50.0; n],
                soh_pct: vec![95.0; n],
                temp_avg_c: vec![25.0; n],
                cycle_count: vec![f64::NAN; n],
            }
        })
        .collect();
    Input {
        scope: "tenant".into(),
        from_ms: 1_767_225_600_000,
        to_ms: 1_767_312_000_000,
        resolution: Resolution::Raw,
        batteries: (0..batteries)
            .map(|b| Battery {
                id: format!("QmF0dGVyeTo{b}"),
                serial: format!("SN-{b:05}"),
                chemistry: "LFP".into(),
                nominal_capacity_ah: 100.0,
                nominal_voltage_v: 51.2,
            })
            .collect(),
        series,
    }
}

fn stats(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

fn main() -> anyhow::Result<()> {
    let limits = PluginLimits::default();
    let sandbox = Sandbox::new(None, limits.memory_bytes)?;
    let kpi = sandbox.prepare("bench-kpi", &component("kpi-energy")?)?;

    println!(
        "plugins (Rust KPI example, {} fuel budget, fuel metering on)",
        limits.fuel
    );
    for (batteries, samples) in [(1, 10_000), (100, 100)] {
        let data = input(batteries, samples);
        for _ in 0..50 {
            sandbox.compute(&kpi, &data, &limits).result?;
        }
        let mut times = Vec::new();
        for _ in 0..500 {
            let started = Instant::now();
            let values = sandbox.compute(&kpi, &data, &limits).result?;
            times.push(started.elapsed());
            assert!(!values.is_empty());
        }
        let (p50, p99) = stats(times);
        println!(
            "  compute over {batteries} × {samples} samples: p50 {p50:7.1} µs   p99 {p99:7.1} µs (target < 1000 µs)"
        );
    }

    let mut times = Vec::new();
    for _ in 0..2_000 {
        let started = Instant::now();
        sandbox.instantiate(&kpi, &limits)?;
        times.push(started.elapsed());
    }
    let (p50, p99) = stats(times);
    println!(
        "  instantiate (pooled, fresh store): p50 {p50:6.1} µs   p99 {p99:6.1} µs (target < 10 µs)"
    );

    let spin = sandbox.prepare("bench-spin", &component("hostile-spin")?)?;
    let deadline = PluginLimits {
        timeout_ms: 100,
        ..limits.clone()
    };
    let data = input(1, 10);
    let mut overshoot = Vec::new();
    for _ in 0..20 {
        let report = sandbox.compute(&spin, &data, &deadline);
        anyhow::ensure!(report.result.is_err(), "the loop returned");
        overshoot.push(
            report
                .elapsed
                .saturating_sub(Duration::from_millis(deadline.timeout_ms)),
        );
    }
    let (p50, p99) = stats(overshoot);
    println!(
        "  infinite loop with a {} ms deadline stopped {:.2} ms (p50) / {:.2} ms (p99) after it (target ≤ 10 ms)",
        deadline.timeout_ms,
        p50 / 1e3,
        p99 / 1e3
    );
    Ok(())
}
