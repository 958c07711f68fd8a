//! Drops `ix_battery_samples_ts`, the raw samples' index on time alone.
//! Only retention used it (deleting samples older than an age across all
//! batteries); it now deletes battery by battery along the primary key
//! `(battery_id, ts)`. Every stored sample paid for the index: one more
//! B-tree insert, and, since new samples all carry about the same time,
//! concurrent writers queued on the same last leaf page of it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "ix_battery_samples_ts";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(Alias::new("battery_samples"))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Alias::new("battery_samples"))
                    .col(Alias::new("ts"))
                    .to_owned(),
            )
            .await
    }
}
