//! Live fan-out: ingest → subscriber latency at a sustained ingest rate with
//! many subscribers (each watching one battery), and the memory of idle
//! subscriptions. In process, on SQLite and then on PostgreSQL, samples go
//! through the real pipeline (checks, writer, commit, bus, subscription).
//! Each run also prints how long the ingest calls took to be acknowledged
//! (committed), which separates the write path from the fan-out.
//!
//!     cargo bench -p trackingbms-api --bench live
//!
//! Environment: LIVE_RATE (samples/s, default 50000), LIVE_SUBSCRIBERS
//! (default 1000), LIVE_SECONDS (default 5), LIVE_IDLE (default 10000),
//! LIVE_IDLE_WAVE (idle subscriptions set up at once, default 500),
//! LIVE_BACKENDS (default `sqlite,postgres`), LIVE_WRITERS (PostgreSQL
//! writer tasks, default `ingest.writers`), LIVE_FOLD_MS (roll-up fold
//! interval, default `ingest.rollup_fold_ms`), TEST_DATABASE_URL (the
//! PostgreSQL server; a fresh schema is created), RUST_LOG
//! (`trackingbms_api::telemetry=debug` shows each written batch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Mutex;
use trackingbms_api::demo::fleet::FleetSpec;
use trackingbms_api::ids::{self, Kind};
use trackingbms_api::telemetry::input::SampleInput;
use trackingbms_api::{App, Config, fixtures};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `p` quantile of ascending `sorted` (NaN when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

const LIVE: &str =
    "subscription($b: ID!) { liveMetrics(scope: {batteryId: $b}) { sample { ts } } }";

fn subscribe(
    app: &App,
    battery: i64,
) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
    let req = async_graphql::Request::new(LIVE)
        .variables(async_graphql::Variables::from_json(
            serde_json::json!({ "b": ids::encode(Kind::Battery, battery).0 }),
        ))
        .data(app.system("bench"));
    app.schema.execute_stream(req).boxed()
}

/// `liveMetrics.sample.ts` of an event, read in place: the subscribers
/// share the server's two cores here, and converting each event to JSON
/// first cost more than a client elsewhere would.
fn sample_ts(data: &async_graphql::Value) -> Option<&str> {
    fn field<'a>(v: &'a async_graphql::Value, name: &str) -> Option<&'a async_graphql::Value> {
        match v {
            async_graphql::Value::Object(o) => o.get(name),
            _ => None,
        }
    }
    match field(field(field(data, "liveMetrics")?, "sample")?, "ts")? {
        async_graphql::Value::String(ts) => Some(ts),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let backends = std::env::var("LIVE_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let mut idle = env("LIVE_IDLE", 10_000);
    for backend in backends.split(',') {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        if backend == "postgres" {
            config.database_url = Some(fixtures::fresh_pg_schema(&fixtures::pg_base_url()).await?);
        }
        config.modbus.enabled = false;
        config.ingest.writers = env("LIVE_WRITERS", config.ingest.writers);
        config.ingest.rollup_fold_ms =
            env("LIVE_FOLD_MS", config.ingest.rollup_fold_ms as usize) as u64;
        println!("{backend}:");
        run(App::build(config).await?, idle).await?;
        // Idle memory once: it does not depend on the database.
        idle = 0;
    }
    Ok(())
}

async fn run(app: App, idle: usize) -> anyhow::Result<()> {
    let rate = env("LIVE_RATE", 50_000);
    let subscribers = env("LIVE_SUBSCRIBERS", 1_000);
    let seconds = env("LIVE_SECONDS", 5);
    let spec = FleetSpec {
        clients: 1,
        sites_per_client: 1,
        zones_per_site: 1,
        bms_per_zone: 10,
        batteries_per_bms: subscribers.div_ceil(10),
        seed: 5,
    };
    let created = fixtures::seed_fleet(&app, &spec).await?;
    let batteries: Vec<i64> = {
        use sea_orm::EntityTrait;
        entities::battery::Entity::find()
            .all(&app.db)
            .await?
            .into_iter()
            .map(|b| b.id)
            .collect()
    };
    anyhow::ensure!(batteries.len() == created);

    if idle > 0 {
        // Idle subscriptions: memory per subscription, each driven by its own
        // task as a server's connection would. They arrive in waves of
        // IDLE_WAVE (clients connecting over a few seconds, not all in the same
        // millisecond); a wave is set up once registered on the bus.
        let wave = env("LIVE_IDLE_WAVE", 500);
        let before = rss_mb();
        let mut idle_tasks = Vec::with_capacity(idle);
        for k in 0..idle {
            let mut s = subscribe(&app, batteries[k % batteries.len()]);
            idle_tasks.push(tokio::spawn(
                async move { while s.next().await.is_some() {} },
            ));
            if (k + 1) % wave == 0 || k + 1 == idle {
                while app.bus.subscriptions() < k + 1 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_mb();
        println!(
            "idle: {idle} subscriptions take {:.1} MB ({:.1} KB each); process RSS {:.1} MB",
            after - before,
            (after - before) * 1024.0 / idle as f64,
            after
        );
        for t in &idle_tasks {
            t.abort();
        }
        for t in idle_tasks {
            let _ = t.await;
        }
    }

    // Active subscribers, one per battery, recording latency from the
    // sample's timestamp (set when it is produced) to its arrival.
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let mut tasks = Vec::new();
    for &b in batteries.iter().take(subscribers) {
        let mut stream = subscribe(&app, b);
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(resp) = stream.next().await {
                let now = chrono::Utc::now();
                if let Some(ts) = sample_ts(&resp.data)
                    && let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts)
                {
                    let ms = (now - t.to_utc()).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    latencies.lock().await.push(ms);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let who = app.system("bench");
    let tick = Duration::from_millis(10);
    let per_tick = rate / 100;
    let acks = Arc::new(Mutex::new(Vec::<(bool, f64)>::new()));
    let started = Instant::now();
    let mut sent = 0usize;
    let mut next = Instant::now();
    let mut cursor = 0usize;
    while started.elapsed() < Duration::from_secs(seconds as u64) {
        next += tick;
        let now = trackingbms_api::clock::now();
        let records: Vec<_> = (0..per_tick)
            .map(|i| {
                let b = batteries[(cursor + i) % batteries.len()];
                let ts =
                    now + chrono::Duration::microseconds(((cursor + i) / batteries.len()) as i64);
                let s = SampleInput {
                    voltage_v: Some(51.0),
                    current_a: Some(-5.0),
                    soc_pct: Some(50.0),
                    temp_avg_c: Some(24.0),
                    ..SampleInput::new(ids::encode(Kind::Battery, b).0, ts)
                };
                (i as u64, Ok(s))
            })
            .collect();
        cursor += per_tick;
        let ingestor = app.ingestor.clone();
        let who = who.clone();
        let acks = acks.clone();
        let produced = Instant::now();
        tokio::spawn(async move {
            let ok = ingestor.ingest(&who, records).await.is_ok();
            acks.lock()
                .await
                .push((ok, produced.elapsed().as_secs_f64() * 1000.0));
        });
        sent += per_tick;
        tokio::time::sleep_until(next.into()).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(app);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let (ok, refused): (Vec<_>, Vec<_>) = std::mem::take(&mut *acks.lock().await)
        .into_iter()
        .partition(|(ok, _)| *ok);
    let mut acked: Vec<f64> = ok.into_iter().map(|(_, ms)| ms).collect();
    acked.sort_by(|a, b| a.total_cmp(b));
    println!(
        "ingest calls: {} acknowledged (p50 {:.1} ms, p99 {:.1} ms to commit), {} refused",
        acked.len(),
        percentile(&acked, 0.5),
        percentile(&acked, 0.99),
        refused.len()
    );
    let mut lat = latencies.lock().await.clone();
    anyhow::ensure!(!lat.is_empty(), "no sample reached a subscriber");
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| percentile(&lat, p);
    println!(
        "active: {subscribers} subscribers, {sent} samples offered at {:.0}/s for {elapsed:.1} s, {} delivered: latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS {:.1} MB",
        sent as f64 / elapsed,
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        rss_mb()
    );
    Ok(())
}
