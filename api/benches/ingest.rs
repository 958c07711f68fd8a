//! Durable ingestion throughput through `POST /ingest` (NDJSON, acknowledged
//! after commit) on SQLite and on PostgreSQL, and — on PostgreSQL — a raw
//! `COPY` of the same rows into the same table, for the ratio. Bodies are
//! sent in time order by 4 concurrent clients.
//!
//!     cargo bench -p trackingbms-api --bench ingest
//!
//! Client and server share the machine's cores.

use std::time::{Duration, Instant};

use trackingbms_api::demo::fleet::FleetSpec;
use trackingbms_api::{App, Config, fixtures};

mod support;
use support::{BENCH_KEY, bench_client};

const BATTERIES: usize = 100;
const STEPS: usize = 2_000; // samples per battery: 200,000 in all
const BODY_SAMPLES: usize = 20_000;
const CLIENTS: usize = 4;

fn ts(step: usize) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc()
        + chrono::Duration::seconds(step as i64);
    t.to_rfc3339()
}

/// NDJSON bodies covering every (battery, step), battery by serial.
fn bodies(serials: &[String]) -> Vec<String> {
    let mut lines = Vec::with_capacity(serials.len() * STEPS);
    for step in 0..STEPS {
        for (i, serial) in serials.iter().enumerate() {
            lines.push(format!(
                "{{\"battery\":\"{serial}\",\"ts\":\"{}\",\"voltageV\":{:.2},\"currentA\":{:.1},\"socPct\":{:.1},\"sohPct\":95.0,\"tempMinC\":21.0,\"tempMaxC\":26.0,\"tempAvgC\":23.5,\"cycleCount\":400}}",
                ts(step),
                50.0 + (i % 7) as f64 * 0.1,
                -20.0 + (step % 40) as f64,
                20.0 + (step % 70) as f64
            ));
        }
    }
    lines
        .chunks(BODY_SAMPLES)
        .map(|c| c.join("\n") + "\n")
        .collect()
}

async fn run(label: &str, mut config: Config) -> anyhow::Result<(f64, App)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    config.bind = format!("127.0.0.1:{port}").parse()?;
    config.log.filter = "warn".into();
    config.modbus.enabled = false;
    // Measured as the bootstrap super admin, without the per-caller rate limit.
    config.auth.admin_api_key = Some(BENCH_KEY.into());
    config.limits.requests_per_minute = 0;
    let app = App::build(config).await?;
    let spec = FleetSpec {
        clients: 1,
        sites_per_client: 1,
        zones_per_site: 1,
        bms_per_zone: 4,
        batteries_per_bms: BATTERIES / 4,
        seed: 3,
    };
    fixtures::seed_fleet(&app, &spec).await?;
    let serials: Vec<String> = (1..=BATTERIES).map(|n| format!("HEL-{n:05}")).collect();
    let bodies = bodies(&serials);
    let total = bodies.len() * BODY_SAMPLES;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.clone().serve(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("http://127.0.0.1:{port}/ingest");
    let started = Instant::now();
    // In time order, as devices send (a late sample takes the per-row path).
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        bodies
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (queue, url) = (queue.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = bench_client();
            let mut accepted = 0u64;
            while let Some(body) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                let r: serde_json::Value = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?
                    .json()
                    .await?;
                accepted += r["accepted"].as_u64().unwrap_or(0);
            }
            Ok::<_, anyhow::Error>(accepted)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(accepted as usize == total, "accepted {accepted} of {total}");
    let rate = total as f64 / secs;
    println!(
        "{label:<10} POST /ingest: {total} samples acknowledged in {secs:.2} s = {rate:.0} samples/s ({CLIENTS} clients, {BODY_SAMPLES} per body, with hourly/daily roll-ups)"
    );
    let _ = stop_tx.send(());
    server.await??;
    Ok((rate, app))
}

/// The same rows, `COPY`ed as CSV into `table`, a year later than the
/// ingested ones (so every key is new, as theirs were).
async fn raw_copy(app: &App, table: &str, years_later: usize) -> anyhow::Result<f64> {
    let mut csv = String::new();
    for step in 0..STEPS {
        for b in 1..=BATTERIES {
            csv.push_str(&format!(
                "{b},{},51.0,-5.0,50.0,95.0,21.0,26.0,23.5,400\n",
                ts(step + years_later * 365 * 86_400)
            ));
        }
    }
    let pool = app.db.get_postgres_connection_pool();
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} (battery_id, ts, voltage_v, current_a, soc_pct, soh_pct, temp_min_c, temp_max_c, temp_avg_c, cycle_count) FROM STDIN WITH (FORMAT csv)"
        ))
        .await?;
    copy.send(csv.as_bytes()).await?;
    let rows = copy.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    let rate = rows as f64 / secs;
    println!(
        "postgres   raw COPY of the same rows into {table}: {rows} in {secs:.2} s = {rate:.0} rows/s"
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    run(
        "sqlite",
        Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        },
    )
    .await?;
    let url = fixtures::fresh_pg_schema(&fixtures::pg_base_url()).await?;
    let (ingest_rate, app) = run(
        "postgres",
        Config {
            database_url: Some(url),
            ..Config::default()
        },
    )
    .await?;
    // The same table, with its key and index.
    let same = raw_copy(&app, "battery_samples", 1).await?;
    println!("postgres   ingest / raw COPY = {:.2}", ingest_rate / same);
    Ok(())
}
