//! Hourly and daily roll-ups of battery telemetry, kept for years while raw
//! samples expire. Sums and sums of squares (not averages) are stored so
//! that late samples can be added to their bucket exactly.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Metrics with count / sum / sum of squares / min / max columns.
pub const METRICS: [&str; 5] = ["voltage", "current", "soc", "soh", "temp"];

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(Alias::new("battery_rollups"))
            .col(col("battery_id").big_integer().not_null())
            .col(col("resolution").string_len(8).not_null())
            .col(col("bucket").timestamp_with_time_zone().not_null())
            .col(col("sample_count").big_integer().not_null());
        for m in METRICS {
            table
                .col(col(&format!("{m}_n")).big_integer().not_null().default(0))
                .col(col(&format!("{m}_sum")).double().not_null().default(0.0))
                .col(col(&format!("{m}_sumsq")).double().not_null().default(0.0))
                .col(col(&format!("{m}_min")).double().null())
                .col(col(&format!("{m}_max")).double().null());
        }
        table
            .col(col("energy_in_kwh").double().not_null().default(0.0))
            .col(col("energy_out_kwh").double().not_null().default(0.0))
            .col(
                col("under_voltage_count")
                    .big_integer()
                    .not_null()
                    .default(0),
            )
            .col(col("over_temp_count").big_integer().not_null().default(0))
            .primary_key(
                Index::create()
                    .name("pk_battery_rollups")
                    .col(Alias::new("battery_id"))
                    .col(Alias::new("resolution"))
                    .col(Alias::new("bucket")),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_rollups_battery")
                    .from(Alias::new("battery_rollups"), Alias::new("battery_id"))
                    .to(Alias::new("batteries"), Alias::new("id"))
                    .on_delete(ForeignKeyAction::Cascade),
            );
        manager.create_table(table.to_owned()).await?;
        // Retention deletes raw samples by age across all batteries.
        manager
            .create_index(
                Index::create()
                    .name("ix_battery_samples_ts")
                    .table(Alias::new("battery_samples"))
                    .col(Alias::new("ts"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_battery_samples_ts")
                    .table(Alias::new("battery_samples"))
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("battery_rollups"))
                    .to_owned(),
            )
            .await
    }
}
