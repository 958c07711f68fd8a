//! Scheduled plugin work: KPI values computed on a schedule (kept as
//! history), report schedules (cron, scope, format, recipients) and the
//! artifacts they produce, and the claim rows that make each scheduled slot
//! run once across replicas.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).to_owned()
}

fn fk(name: &str, table: &str, column: &str, to: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(Alias::new(table), Alias::new(column))
        .to(Alias::new(to), Alias::new("id"))
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn id() -> ColumnDef {
    col("id")
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("scheduled_jobs"))
                    .col(col("name").string_len(100).not_null().primary_key())
                    .col(col("next_run_at").timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // The history keeps the plugin's name and version: it outlives the
        // plugin's deletion.
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("kpi_values"))
                    .col(id())
                    .col(col("tenant_id").big_integer().not_null())
                    .col(col("plugin_name").string_len(100).not_null())
                    .col(col("plugin_version").string_len(50).not_null())
                    .col(col("client_id").big_integer().null())
                    .col(col("site_id").big_integer().null())
                    .col(col("battery_id").big_integer().null())
                    .col(col("name").string_len(200).not_null())
                    .col(col("value").double().not_null())
                    .col(col("period_from").timestamp_with_time_zone().not_null())
                    .col(col("period_to").timestamp_with_time_zone().not_null())
                    .col(col("computed_at").timestamp_with_time_zone().not_null())
                    .foreign_key(&mut fk(
                        "fk_kpi_values_tenant",
                        "kpi_values",
                        "tenant_id",
                        "tenants",
                    ))
                    .foreign_key(&mut fk(
                        "fk_kpi_values_client",
                        "kpi_values",
                        "client_id",
                        "clients",
                    ))
                    .foreign_key(&mut fk(
                        "fk_kpi_values_site",
                        "kpi_values",
                        "site_id",
                        "sites",
                    ))
                    .foreign_key(&mut fk(
                        "fk_kpi_values_battery",
                        "kpi_values",
                        "battery_id",
                        "batteries",
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "ix_kpi_values_place",
                ["tenant_id", "name", "period_to"].as_slice(),
            ),
            (
                "ix_kpi_values_battery",
                &["battery_id", "name", "period_to"],
            ),
        ] {
            let mut index = Index::create()
                .name(name)
                .table(Alias::new("kpi_values"))
                .to_owned();
            for c in columns {
                index.col(Alias::new(*c));
            }
            manager.create_index(index).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("report_schedules"))
                    .col(id())
                    .col(col("tenant_id").big_integer().not_null())
                    .col(col("plugin_id").big_integer().not_null())
                    .col(col("name").string_len(200).not_null())
                    .col(col("cron").string_len(200).not_null())
                    .col(col("scope").json().not_null())
                    .col(col("format").string_len(16).not_null())
                    .col(col("period_days").integer().not_null())
                    .col(col("recipients").json().not_null())
                    .col(col("enabled").boolean().not_null())
                    .col(col("created_by").string_len(200).not_null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .col(col("next_run_at").timestamp_with_time_zone().not_null())
                    .col(col("last_run_at").timestamp_with_time_zone().null())
                    .col(col("last_error").text().null())
                    .foreign_key(&mut fk(
                        "fk_report_schedules_tenant",
                        "report_schedules",
                        "tenant_id",
                        "tenants",
                    ))
                    .foreign_key(&mut fk(
                        "fk_report_schedules_plugin",
                        "report_schedules",
                        "plugin_id",
                        "plugins",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_report_schedules_due")
                    .table(Alias::new("report_schedules"))
                    .col(Alias::new("next_run_at"))
                    .to_owned(),
            )
            .await?;
        // Which schedule produced an artifact (none: generated on request).
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("report_artifacts"))
                    .add_column(col("schedule_id").big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_report_artifacts_schedule")
                    .table(Alias::new("report_artifacts"))
                    .col(Alias::new("schedule_id"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_report_artifacts_schedule")
                    .table(Alias::new("report_artifacts"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("report_artifacts"))
                    .drop_column(Alias::new("schedule_id"))
                    .to_owned(),
            )
            .await?;
        for table in ["report_schedules", "kpi_values", "scheduled_jobs"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
