//! A generation number for the ingest pipeline's in-memory directory of
//! batteries (`api::telemetry::directory`): one row, bumped by triggers on
//! `batteries` in the transaction that deletes a battery or changes what
//! the pipeline reads of it (tenant, ancestry, serial, chemistry, nominal
//! ratings). A replica that sees the number move drops what it holds, so a
//! move, a delete or a new serial on one replica is seen by every other one
//! at its next ingest call. Moves of a battery's pointers
//! (`last_sample_at`, `soh_pct`) do not bump it; neither does a new battery,
//! which no replica holds yet.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The columns of `batteries` the directory holds.
const WATCHED: &str = "tenant_id, client_id, site_id, zone_id, bms_id, serial, chemistry, \
                       nominal_capacity_ah, nominal_voltage_v";

const TABLE: &str = "CREATE TABLE battery_directory (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO battery_directory (id, generation) VALUES (1, 0);";

fn postgres_up() -> String {
    format!(
        "{TABLE}
CREATE FUNCTION bump_battery_directory() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE battery_directory SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER batteries_directory_changed
    AFTER DELETE OR TRUNCATE OR UPDATE OF {WATCHED} ON batteries
    FOR EACH STATEMENT EXECUTE FUNCTION bump_battery_directory();"
    )
}

const POSTGRES_DOWN: &str = "DROP TRIGGER IF EXISTS batteries_directory_changed ON batteries;
DROP FUNCTION IF EXISTS bump_battery_directory();
DROP TABLE IF EXISTS battery_directory;";

/// SQLite has row triggers only; its statements run one at a time.
fn sqlite_up() -> Vec<String> {
    let bump = "UPDATE battery_directory SET generation = generation + 1 WHERE id = 1;";
    vec![
        TABLE.into(),
        format!(
            "CREATE TRIGGER batteries_directory_deleted AFTER DELETE ON batteries BEGIN {bump} END"
        ),
        format!(
            "CREATE TRIGGER batteries_directory_updated AFTER UPDATE OF {WATCHED} ON batteries BEGIN {bump} END"
        ),
    ]
}

const SQLITE_DOWN: [&str; 3] = [
    "DROP TRIGGER IF EXISTS batteries_directory_deleted",
    "DROP TRIGGER IF EXISTS batteries_directory_updated",
    "DROP TABLE IF EXISTS battery_directory",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(&postgres_up()).await?;
            }
            _ => {
                for sql in sqlite_up() {
                    db.execute_unprepared(&sql).await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_DOWN).await?;
            }
            _ => {
                for sql in SQLITE_DOWN {
                    db.execute_unprepared(sql).await?;
                }
            }
        }
        Ok(())
    }
}
