//! Poll leases: one row per Modbus unit naming the replica that polls it
//! and until when, so several replicas with polling enabled never poll the
//! same device twice, and a unit moves to another replica when its holder
//! stops renewing.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("poll_leases"))
                    .col(
                        ColumnDef::new(Alias::new("bms_id"))
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("holder"))
                            .string_len(200)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("expires_at"))
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_poll_leases_bms")
                            .from(Alias::new("poll_leases"), Alias::new("bms_id"))
                            .to(Alias::new("bms_units"), Alias::new("id"))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("poll_leases")).to_owned())
            .await
    }
}
