//! PostgreSQL: stored predictions lose their foreign key to `batteries`.
//! Its per-row check (a `FOR KEY SHARE` lock of the battery row) made a
//! 500-prediction insert take 5–11 ms instead of 4–5 ms (psql, a
//! 10,000-battery fleet), and a first fleet refresh inserts 20 of them.
//! In its place:
//! - an insert of predictions takes [`PREDICTIONS_LOCK`] shared, in a
//!   statement of its own, then inserts only rows whose battery exists
//!   (its snapshot is taken after the lock, so it sees any delete that
//!   committed before);
//! - deleting batteries takes the lock exclusively (waiting for inserts in
//!   flight to commit) and then deletes their predictions, as the key's
//!   `ON DELETE CASCADE` did.
//!
//! Deletes of batteries are rare; inserts never wait for each other. SQLite
//! keeps its key (dropping one there means rebuilding the table). This
//! migration does nothing on SQLite.

use sea_orm_migration::prelude::*;

use crate::m20261122_000009_samples_without_foreign_key::run_on_postgres;

/// The advisory lock between prediction inserts (shared) and battery
/// deletes (exclusive); one key among the project's advisory locks.
pub const PREDICTIONS_LOCK: i64 = 7_202_613;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn up_sql() -> String {
    format!(
        "
ALTER TABLE battery_predictions DROP CONSTRAINT IF EXISTS fk_battery_predictions_battery;
CREATE OR REPLACE FUNCTION delete_predictions_of_deleted_batteries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({PREDICTIONS_LOCK});
    DELETE FROM battery_predictions p USING deleted_batteries d WHERE p.battery_id = d.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER batteries_delete_predictions AFTER DELETE ON batteries
    REFERENCING OLD TABLE AS deleted_batteries
    FOR EACH STATEMENT EXECUTE FUNCTION delete_predictions_of_deleted_batteries();
"
    )
}

const DOWN: &str = "
DROP TRIGGER IF EXISTS batteries_delete_predictions ON batteries;
DROP FUNCTION IF EXISTS delete_predictions_of_deleted_batteries();
DELETE FROM battery_predictions p WHERE NOT EXISTS (SELECT 1 FROM batteries b WHERE b.id = p.battery_id);
ALTER TABLE battery_predictions ADD CONSTRAINT fk_battery_predictions_battery FOREIGN KEY (battery_id)
    REFERENCES batteries (id) ON DELETE CASCADE;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, &up_sql()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, DOWN).await
    }
}
