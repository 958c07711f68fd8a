//! Fixtures shared by tests and benchmarks: isolated PostgreSQL schemas and
//! seeded fleets. Never used by the server itself.

use sea_orm::{ConnectionTrait, Database};

use crate::App;
use crate::demo::fleet::{self, FleetSpec};
use crate::demo::simulator::FleetSim;

/// The machine's PostgreSQL, unless `TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_TEST_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The machine's Redis, unless `TEST_REDIS_URL` says otherwise.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The machine's Mosquitto, unless `TEST_MQTT_URL` says otherwise.
pub fn mqtt_url() -> String {
    std::env::var("TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".to_owned())
}

/// Base URL of the PostgreSQL used by tests and benchmarks.
pub fn pg_base_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_PG.to_owned())
}

/// Creates a new empty schema in `base` and returns a URL whose connections
/// use it, so each test or benchmark gets a database of its own.
pub async fn fresh_pg_schema(base: &str) -> anyhow::Result<String> {
    let admin = Database::connect(base).await.map_err(|e| {
        anyhow::anyhow!(
            "PostgreSQL at {} is unreachable: {e}",
            crate::db::redact(base)
        )
    })?;
    let schema = format!("t_{:016x}", rand::random::<u64>());
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await?;
    admin.close().await.ok();
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Creates `spec` in the app's default tenant and writes one sample per
/// battery, folded (roll-ups and battery pointers up to date); returns the
/// number of batteries.
pub async fn seed_fleet(app: &App, spec: &FleetSpec) -> anyhow::Result<usize> {
    let created = fleet::create(&app.hierarchy, &app.system("fixtures"), spec).await?;
    let mut sim = FleetSim::new(&created, spec.seed);
    let samples = sim.step(crate::clock::now(), 5.0);
    crate::telemetry::store::write_samples(&app.db, &samples).await?;
    crate::telemetry::fold::fold(&app.db).await?;
    Ok(created.len())
}
