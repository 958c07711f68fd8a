//! Prediction figures:
//! - inference latency per battery with the built-in models, one row at a
//!   time, one intra-op thread (forecast and anomaly), and per battery in
//!   batches of 500; the same single-row figure from Python onnxruntime,
//!   measured in the same run for comparison;
//! - a full refresh of a 10,000-battery fleet with 180 days of daily
//!   history each, on PostgreSQL, feature extraction from the database and
//!   storing included (first refresh: every prediction is new and stored;
//!   second: nothing changed, nothing stored). The seeded table is vacuumed
//!   first, as autovacuum would after a bulk insert.
//!
//!     scripts/setup-python.sh && cargo bench -p trackingbms-api --bench predictions
//!
//! `TEST_DATABASE_URL` (default the machine's `postgres://…/test`) gives the
//! server; a fresh schema is created.

use std::time::Instant;

use sea_orm::{ConnectionTrait, Statement};
use trackingbms_api::demo::fleet::FleetSpec;
use trackingbms_api::predict::{self, features};
use trackingbms_api::{App, Config, fixtures};

const ITERATIONS: usize = 20_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn time_each(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..1_000 {
        f();
    }
    let mut t: Vec<f64> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (percentile(&t, 0.5), percentile(&t, 0.99))
}

fn sample_rows() -> ([f64; 12], [f64; 6]) {
    let points: Vec<features::DayPoint> = (0..120)
        .map(|d| features::DayPoint {
            day: 20_000 + d,
            soh: 0.97 - 0.0004 * d as f64 + if d % 3 == 0 { 0.001 } else { 0.0 },
            temp_avg: Some(27.0 + (d % 5) as f64 * 0.3),
            temp_max: Some(31.0),
        })
        .collect();
    (
        features::forecast(&points, Some(450), 0.8).expect("features"),
        features::anomaly(&points).expect("features"),
    )
}

const PYTHON: &str = r#"
import sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
for path, width in ((sys.argv[1], 12), (sys.argv[2], 6)):
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    x = np.full((1, width), 0.5, dtype=np.float32)
    for _ in range(1000): s.run(None, {"features": x})
    t = []
    for _ in range(20000):
        a = time.perf_counter(); s.run(None, {"features": x}); t.append(time.perf_counter() - a)
    t.sort()
    print(f"{t[len(t)//2]*1e6:.1f} {t[int(len(t)*0.99)]*1e6:.1f}")
"#;

fn python_figures() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new(format!("{root}/.venv/bin/python"))
        .arg("-c")
        .arg(PYTHON)
        .arg(format!("{root}/api/models/onnx/forecast.onnx"))
        .arg(format!("{root}/api/models/onnx/anomaly.onnx"))
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "Python onnxruntime 1.31.1, one row (p50 p99 µs): forecast {}, anomaly {}",
                lines.first().unwrap_or(&"?"),
                lines.get(1).unwrap_or(&"?")
            )
        }
        Ok(o) => format!(
            "Python figure unavailable: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("Python figure unavailable: {e} (run scripts/setup-python.sh)"),
    }
}

async fn seed_history(app: &App) -> anyhow::Result<()> {
    let db = &app.db;
    let backend = db.get_database_backend();
    let zeros = "0, 0, 0, NULL, NULL";
    db.execute_raw(Statement::from_string(
        backend,
        format!(
            "INSERT INTO battery_rollups (battery_id, resolution, bucket, sample_count, \
             voltage_n, voltage_sum, voltage_sumsq, voltage_min, voltage_max, \
             current_n, current_sum, current_sumsq, current_min, current_max, \
             soc_n, soc_sum, soc_sumsq, soc_min, soc_max, \
             soh_n, soh_sum, soh_sumsq, soh_min, soh_max, \
             temp_n, temp_sum, temp_sumsq, temp_min, temp_max, \
             energy_in_kwh, energy_out_kwh, under_voltage_count, over_temp_count) \
             SELECT b.id, 'DAY', TIMESTAMPTZ '2026-05-01 00:00:00+00' + d * INTERVAL '1 day', 24, \
             {zeros}, {zeros}, {zeros}, \
             24, 24 * (98 - d * (0.01 + (b.id % 9) * 0.004) + (d % 3) * 0.05), 0, NULL, NULL, \
             24, 24 * (24 + (b.id % 7)), 0, NULL, 30 + (b.id % 5), 0, 0, 0, 0 \
             FROM batteries b, generate_series(0, 179) d"
        ),
    ))
    .await?;
    db.execute_raw(Statement::from_string(
        backend,
        "INSERT INTO battery_samples (battery_id, ts, soh_pct, temp_avg_c, cycle_count) \
         SELECT id, TIMESTAMPTZ '2026-10-27 12:00:00+00', 90, 25, 300 + (id % 200) FROM batteries"
            .to_owned(),
    ))
    .await?;
    // The writer keeps each battery's newest sample time.
    db.execute_unprepared(
        "UPDATE batteries SET last_sample_at = TIMESTAMPTZ '2026-10-27 12:00:00+00'",
    )
    .await?;
    // What autovacuum does after a bulk insert (index-only scans need it).
    db.execute_unprepared("VACUUM ANALYZE battery_rollups, batteries, battery_samples")
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.predictions.ort_library =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ort/libonnxruntime.so"));
    let base = fixtures::pg_base_url();
    config.database_url = Some(fixtures::fresh_pg_schema(&base).await?);
    config.db_max_connections = 8;
    let app = App::build(config).await?;
    let p = &app.predictor;

    let (f, a) = sample_rows();
    let (p50, p99) = time_each(|| {
        predict::forecast_raw(p, &[f]).expect("inference");
    });
    println!("forecast model, one row: p50 {p50:.1} µs, p99 {p99:.1} µs");
    let (p50, p99) = time_each(|| {
        predict::anomaly_raw(p, &[a]).expect("inference");
    });
    println!("anomaly model, one row: p50 {p50:.1} µs, p99 {p99:.1} µs");
    let batch = vec![f; 500];
    let start = Instant::now();
    for _ in 0..20 {
        predict::forecast_raw(p, &batch).expect("inference");
    }
    println!(
        "forecast model, batches of 500: {:.2} µs per row",
        start.elapsed().as_secs_f64() * 1e6 / 10_000.0
    );
    println!("{}", python_figures());

    let spec = FleetSpec {
        clients: 10,
        sites_per_client: 2,
        zones_per_site: 5,
        bms_per_zone: 5,
        batteries_per_bms: 20,
        seed: 11,
    };
    let start = Instant::now();
    let n = fixtures::seed_fleet(&app, &spec).await?;
    seed_history(&app).await?;
    println!(
        "seeded {n} batteries × 180 days on PostgreSQL in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for label in ["first refresh (all stored)", "second refresh (unchanged)"] {
        let start = Instant::now();
        let done = p.refresh_fleet().await?;
        println!(
            "fleet refresh, {label}: {done} batteries in {:.3} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
