//! Cell-voltage extremes: the lowest and highest cell voltage a BMS reports
//! with each sample, and their extremes in each hourly and daily roll-up
//! (the spread between them is how unbalanced the pack is).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (table, column) pairs added; one ALTER each, as SQLite allows.
const COLUMNS: [(&str, &str); 4] = [
    ("battery_samples", "cell_voltage_min_v"),
    ("battery_samples", "cell_voltage_max_v"),
    ("battery_rollups", "cell_voltage_min"),
    ("battery_rollups", "cell_voltage_max"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .add_column(ColumnDef::new(Alias::new(column)).double().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(table))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
