//! SeaORM migrations of TrackingBMS. Each migration runs on SQLite and
//! PostgreSQL, some with steps of PostgreSQL's only (an index, the raw
//! samples' and predictions' foreign keys replaced by the writers' locks
//! and triggers, a fill factor); `api`
//! applies them on `serve` (unless disabled) and on `trackingbms migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_hierarchy;
pub mod m20261121_000002_rollups;
mod m20261121_000003_identity;
mod m20261121_000004_plugins;
mod m20261121_000005_predictions;
mod m20261121_000006_schedules;
mod m20261121_000007_cell_voltages;
mod m20261121_000008_poll_leases;
mod m20261122_000009_samples_without_foreign_key;
mod m20261122_000010_rollup_backlog;
mod m20261122_000011_batteries_hot_updates;
mod m20261201_000012_predictions_without_foreign_key;
mod m20261206_000013_battery_directory;
mod m20261206_000014_rollup_batches;
mod m20261207_000015_samples_without_time_index;

pub use m20261201_000012_predictions_without_foreign_key::PREDICTIONS_LOCK;

pub struct Migrator;

/// Refuses to roll back while `table` holds rows the server has not yet
/// added where they belong (it does so every second while it runs):
/// dropping them would lose data. `what` names those rows.
pub(crate) async fn refuse_while_pending(
    manager: &SchemaManager<'_>,
    table: &str,
    what: &str,
) -> Result<(), DbErr> {
    let pending = manager
        .get_connection()
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
            manager.get_database_backend(),
            format!("SELECT 1 FROM {table} LIMIT 1"),
        ))
        .await?;
    if pending.is_some() {
        return Err(DbErr::Migration(format!(
            "{table} still holds {what}; run the server until it has folded them, then roll back"
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_hierarchy::Migration),
            Box::new(m20261121_000002_rollups::Migration),
            Box::new(m20261121_000003_identity::Migration),
            Box::new(m20261121_000004_plugins::Migration),
            Box::new(m20261121_000005_predictions::Migration),
            Box::new(m20261121_000006_schedules::Migration),
            Box::new(m20261121_000007_cell_voltages::Migration),
            Box::new(m20261121_000008_poll_leases::Migration),
            Box::new(m20261122_000009_samples_without_foreign_key::Migration),
            Box::new(m20261122_000010_rollup_backlog::Migration),
            Box::new(m20261122_000011_batteries_hot_updates::Migration),
            Box::new(m20261201_000012_predictions_without_foreign_key::Migration),
            Box::new(m20261206_000013_battery_directory::Migration),
            Box::new(m20261206_000014_rollup_batches::Migration),
            Box::new(m20261207_000015_samples_without_time_index::Migration),
        ]
    }
}
