//! The roll-up backlog: sample writes append their new samples' partial
//! buckets here instead of updating `battery_rollups` in their own
//! transaction, and a fold moves them into the roll-ups (see the API's
//! `telemetry::rollup`). Every write used to rewrite the same hourly and
//! daily rows of each of its batteries: concurrent writers queued on those
//! row locks, and on PostgreSQL each rewrite left a dead row version. Now a
//! bucket is rewritten once per fold.
//!
//! The table has the roll-ups' columns and no key (a write only appends,
//! a fold takes everything), so it is created from `battery_rollups`' shape.
//! A migration adding a value column to `battery_rollups` adds it here too.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE rollup_backlog AS SELECT * FROM battery_rollups WHERE 1 = 0",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::refuse_while_pending(
            manager,
            "rollup_backlog",
            "buckets not yet added to battery_rollups",
        )
        .await?;
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE rollup_backlog").await?;
        Ok(())
    }
}
