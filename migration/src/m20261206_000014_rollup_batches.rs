//! Roll-up batches: a sample write appends its partial buckets as one row
//! (their encoding, see the API's `telemetry::rollup`) instead of one
//! `rollup_backlog` row each, and the fold adds them up in memory before
//! writing each bucket once. At 50k samples/s with each batch holding one
//! sample of each of 500 batteries, the backlog took one row per sample:
//! the writes spent a third of their time appending them and the fold,
//! once a second, 200 ms of SQL reading, sorting and deleting them, on
//! the same cores as the writers.
//!
//! The partial buckets also carry each battery's newest sample time and
//! SOH, which the fold moves the battery's pointers to (writes update no
//! battery row). `rollup_backlog` stays for partial buckets written
//! before this migration; the fold empties it too.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("rollup_batches"))
                    .col(ColumnDef::new(Alias::new("partials")).blob().not_null())
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            // Stored out of line uncompressed: floats barely compress, and
            // compression would be CPU work on the writers' path.
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE rollup_batches ALTER COLUMN partials SET STORAGE EXTERNAL",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::refuse_while_pending(
            manager,
            "rollup_batches",
            "partial buckets not yet added to battery_rollups",
        )
        .await?;
        manager
            .drop_table(Table::drop().table(Alias::new("rollup_batches")).to_owned())
            .await
    }
}
