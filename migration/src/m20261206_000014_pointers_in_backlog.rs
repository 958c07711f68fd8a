//! Battery pointers (`batteries.last_sample_at`, `soh_pct`) move with the
//! roll-up fold instead of in every sample write: each partial bucket in
//! the backlog also carries its newest sample's time, and its newest SOH
//! with that sample's time, and the fold moves each battery's pointers
//! forward once per fold. A sample write at 50k samples/s updated every
//! battery row about fifty times a second, and that update was the
//! largest statement of a write (writers took turns for it: two updating
//! the same rows in their join plans' orders deadlocked).
//!
//! Partial buckets appended before this migration carry no pointer (their
//! writer moved the pointers itself).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The backlog's pointer columns.
const COLUMNS: [&str; 3] = ["newest_sample_at", "newest_soh_at", "newest_soh_pct"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite adds one at a time.
        for name in COLUMNS {
            let mut column = ColumnDef::new(Alias::new(name));
            if name == "newest_soh_pct" {
                column.double();
            } else {
                column.timestamp_with_time_zone();
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("rollup_backlog"))
                        .add_column(column.null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Pending pointers would be lost: the server folds them (every
        // second while it runs), so refuse rather than drop them.
        let db = manager.get_connection();
        let pending = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT 1 FROM rollup_backlog WHERE newest_sample_at IS NOT NULL LIMIT 1",
            ))
            .await?;
        if pending.is_some() {
            return Err(DbErr::Migration(
                "rollup_backlog still holds battery pointers not yet moved to batteries; \
                 run the server until it has folded them, then roll back"
                    .into(),
            ));
        }
        for name in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("rollup_backlog"))
                        .drop_column(Alias::new(name))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
