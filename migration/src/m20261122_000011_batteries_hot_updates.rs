//! PostgreSQL: every sample write moves its batteries' latest-sample
//! pointer (`batteries.last_sample_at`), so a busy battery row is rewritten
//! many times a second. With full pages each rewrite was a new row version
//! on another page plus an entry in each of the table's seven indexes; the
//! table and its indexes grew tenfold within seconds of a sustained ingest
//! and every lookup of a battery slowed down. Pages kept half empty let
//! PostgreSQL rewrite the row in place (a HOT update: no index entry, old
//! versions pruned on the page). Pages written before this migration keep
//! their fill until the table is rewritten (`VACUUM FULL batteries`).
//! Nothing to do on SQLite, which updates rows in place.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

async fn set_fillfactor(manager: &SchemaManager<'_>, percent: u8) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "ALTER TABLE batteries SET (fillfactor = {percent})"
        ))
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_fillfactor(manager, 50).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_fillfactor(manager, 100).await
    }
}
