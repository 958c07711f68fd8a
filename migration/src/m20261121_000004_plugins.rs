//! WebAssembly plugins: uploaded components (kept in the database, so every
//! replica can run them), where each is enabled, and the reports they
//! generated (downloadable through an unguessable, expiring link).

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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("plugins"))
                    .col(
                        col("id")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(col("tenant_id").big_integer().not_null())
                    .col(col("name").string_len(100).not_null())
                    .col(col("version").string_len(50).not_null())
                    .col(col("kind").string_len(16).not_null())
                    .col(col("wit_version").string_len(20).not_null())
                    .col(col("sha256").string_len(64).not_null())
                    .col(col("size_bytes").big_integer().not_null())
                    .col(col("component").blob().not_null())
                    .col(col("description").json().not_null())
                    .col(col("uploaded_by").string_len(200).not_null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .foreign_key(&mut fk(
                        "fk_plugins_tenant",
                        "plugins",
                        "tenant_id",
                        "tenants",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_plugins_tenant_name_version")
                    .table(Alias::new("plugins"))
                    .col(Alias::new("tenant_id"))
                    .col(Alias::new("name"))
                    .col(Alias::new("version"))
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("plugin_enablements"))
                    .col(
                        col("id")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(col("tenant_id").big_integer().not_null())
                    .col(col("plugin_id").big_integer().not_null())
                    // Neither: the whole tenant; else one client or one site.
                    .col(col("client_id").big_integer().null())
                    .col(col("site_id").big_integer().null())
                    .col(col("created_by").string_len(200).not_null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .foreign_key(&mut fk(
                        "fk_enablements_plugin",
                        "plugin_enablements",
                        "plugin_id",
                        "plugins",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_enablements_plugin")
                    .table(Alias::new("plugin_enablements"))
                    .col(Alias::new("plugin_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("report_artifacts"))
                    .col(
                        col("id")
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(col("tenant_id").big_integer().not_null())
                    .col(col("plugin_id").big_integer().not_null())
                    // SHA-256 of the download token; the token is only in the link.
                    .col(col("token_hash").string_len(64).not_null().unique_key())
                    .col(col("content_type").string_len(100).not_null())
                    .col(col("file_name").string_len(200).not_null())
                    .col(col("content").blob().not_null())
                    .col(col("scope").string_len(100).not_null())
                    .col(col("created_by").string_len(200).not_null())
                    .col(col("created_at").timestamp_with_time_zone().not_null())
                    .col(col("expires_at").timestamp_with_time_zone().not_null())
                    .foreign_key(&mut fk(
                        "fk_reports_plugin",
                        "report_artifacts",
                        "plugin_id",
                        "plugins",
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["report_artifacts", "plugin_enablements", "plugins"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
