//! PostgreSQL: raw samples lose their foreign key to `batteries`. The key
//! ran a check query for every row of every ingest `COPY`, which made the
//! `COPY` 2–4× slower. The writer now does what the key did, once per
//! batch: it locks the batch's batteries `FOR KEY SHARE` (the lock the
//! key's check takes, so a battery cannot be deleted under a write) and
//! stores only rows whose battery exists; and a trigger deletes a battery's
//! samples with it (the key's `ON DELETE CASCADE`). SQLite keeps its key:
//! dropping one there means rebuilding the table, and its writes are not
//! bound by it. This migration does nothing on SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = "
ALTER TABLE battery_samples DROP CONSTRAINT IF EXISTS fk_samples_battery;
CREATE OR REPLACE FUNCTION delete_samples_of_deleted_batteries() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM battery_samples s USING deleted_batteries d WHERE s.battery_id = d.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER batteries_delete_samples AFTER DELETE ON batteries
    REFERENCING OLD TABLE AS deleted_batteries
    FOR EACH STATEMENT EXECUTE FUNCTION delete_samples_of_deleted_batteries();
";

const DOWN: &str = "
DROP TRIGGER IF EXISTS batteries_delete_samples ON batteries;
DROP FUNCTION IF EXISTS delete_samples_of_deleted_batteries();
DELETE FROM battery_samples s WHERE NOT EXISTS (SELECT 1 FROM batteries b WHERE b.id = s.battery_id);
ALTER TABLE battery_samples ADD CONSTRAINT fk_samples_battery FOREIGN KEY (battery_id)
    REFERENCES batteries (id) ON DELETE CASCADE;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_postgres(manager, DOWN).await
    }
}

/// Runs `sql` on PostgreSQL; nothing on SQLite.
pub(crate) async fn run_on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}
