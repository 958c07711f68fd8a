//! Latency and throughput of a nested five-level hierarchy query over the
//! 204-battery demo fleet, spoken to over HTTP, on SQLite and on PostgreSQL
//! (`TEST_DATABASE_URL`, default the machine's `test` database).
//!
//!     cargo bench -p trackingbms-api --bench hierarchy_query
//!
//! Client and server share the machine, so the figures include the load
//! generator's own cost.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trackingbms_api::demo::fleet::FleetSpec;
use trackingbms_api::{App, Config, fixtures};

mod support;
use support::{BENCH_KEY, bench_client};

const QUERY: &str = r#"{
  clients(first: 10) { edges { node { name
    sites(first: 10) { edges { node { name
      zones(first: 10) { edges { node { name
        bmsUnits(first: 10) { edges { node { name
          batteries(first: 50) { edges { node { serial chemistry sohPct latestSample { socPct voltageV tempAvgC } } } } } } } } } } } } } } } } }"#;

const WARMUP: usize = 100;
const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 8;

fn count_batteries(v: &Value) -> usize {
    let mut n = 0;
    for c in v["data"]["clients"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for s in c["node"]["sites"]["edges"].as_array().into_iter().flatten() {
            for z in s["node"]["zones"]["edges"].as_array().into_iter().flatten() {
                for b in z["node"]["bmsUnits"]["edges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    n += b["node"]["batteries"]["edges"]
                        .as_array()
                        .map_or(0, Vec::len);
                }
            }
        }
    }
    n
}

async fn run(label: &str, mut config: Config) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    config.bind = format!("127.0.0.1:{port}").parse()?;
    config.log.filter = "warn".into();
    // Measured as the bootstrap super admin, without the per-caller rate limit.
    config.auth.admin_api_key = Some(BENCH_KEY.into());
    config.limits.requests_per_minute = 0;
    let app = App::build(config).await?;
    let batteries = fixtures::seed_fleet(&app, &FleetSpec::demo()).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.clone().serve(async {
        let _ = stop_rx.await;
    }));
    let url = format!("http://127.0.0.1:{port}/graphql");
    let client = bench_client();
    let body = json!({ "query": QUERY });
    // Wait for the listener, then check the answer is the whole fleet.
    let mut first = None;
    for _ in 0..100 {
        if let Ok(r) = client.post(&url).json(&body).send().await {
            first = Some(r.json::<Value>().await?);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first.ok_or_else(|| anyhow::anyhow!("server did not answer"))?;
    anyhow::ensure!(first.get("errors").is_none(), "query failed: {first}");
    anyhow::ensure!(
        count_batteries(&first) == batteries,
        "expected {batteries} batteries in the answer"
    );

    for _ in 0..WARMUP {
        client.post(&url).json(&body).send().await?.bytes().await?;
    }
    let statements_before = app.metrics.db_statement_count();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(REQUESTS / CONCURRENCY);
            for _ in 0..REQUESTS / CONCURRENCY {
                let t = Instant::now();
                let r = client.post(&url).json(&body).send().await?;
                anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                r.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(REQUESTS);
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let statements =
        (app.metrics.db_statement_count() - statements_before) as f64 / lat.len() as f64;
    println!(
        "{label:<10} nested 5-level query over {batteries} batteries, {} requests, {CONCURRENCY} concurrent: \
         p50 {:.2} ms  p99 {:.2} ms  {:.0} req/s  ({statements:.1} SQL statements/request)",
        lat.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.len() as f64 / wall.as_secs_f64(),
    );
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let dir = tempfile::tempdir()?;
    let sqlite = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    run("sqlite", sqlite).await?;

    let url = fixtures::fresh_pg_schema(&fixtures::pg_base_url()).await?;
    let postgres = Config {
        database_url: Some(url),
        ..Config::default()
    };
    run("postgres", postgres).await?;
    Ok(())
}
