//! Identity and accountability: local and SSO users with their role and
//! scope, second factors, API keys, sessions (access + refresh tokens),
//! pending SSO logins, and the audit log's hash chain and request context.
//!
//! The `users` table of the first migration was a placeholder nothing ever
//! wrote to; it is recreated here with its real shape.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).to_owned()
}

fn id() -> ColumnDef {
    col("id")
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn ts(name: &str) -> ColumnDef {
    col(name).timestamp_with_time_zone().not_null().to_owned()
}

fn opt_ts(name: &str) -> ColumnDef {
    col(name).timestamp_with_time_zone().null().to_owned()
}

fn fk(
    name: &str,
    from: (&str, &str),
    to: &str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(Alias::new(from.0), Alias::new(from.1))
        .to(Alias::new(to), Alias::new("id"))
        .on_delete(on_delete)
        .to_owned()
}

fn index(name: &str, table: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(Alias::new(table));
    for c in cols {
        idx.col(Alias::new(*c));
    }
    if unique {
        idx.unique();
    }
    idx.to_owned()
}

/// Role and scope columns shared by users and API keys: no list means the
/// whole tenant.
fn role_scope(table: &mut TableCreateStatement) {
    table
        .col(col("role").string_len(16).not_null())
        .col(col("client_ids").json().null())
        .col(col("site_ids").json().null());
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ux_users_tenant_email")
                    .table(Alias::new("users"))
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Alias::new("users")).to_owned())
            .await?;
        let mut users = Table::create();
        users
            .table(Alias::new("users"))
            .col(id())
            .col(col("tenant_id").big_integer().not_null())
            .col(col("email").string_len(320).not_null())
            .col(col("display_name").string_len(200).null());
        role_scope(&mut users);
        users
            .col(col("password_hash").string_len(200).null())
            .col(col("totp_secret").string_len(64).null())
            .col(col("totp_enabled").boolean().not_null().default(false))
            .col(col("disabled").boolean().not_null().default(false))
            .col(col("failed_logins").integer().not_null().default(0))
            .col(opt_ts("locked_until"))
            .col(col("oidc_issuer").string_len(400).null())
            .col(col("oidc_subject").string_len(255).null())
            .col(opt_ts("last_login_at"))
            .col(ts("created_at"))
            .col(ts("updated_at"))
            .foreign_key(&mut fk(
                "fk_users_tenant",
                ("users", "tenant_id"),
                "tenants",
                ForeignKeyAction::Restrict,
            ));
        manager.create_table(users.to_owned()).await?;
        manager
            .create_index(index(
                "ux_users_email",
                "users",
                &["tenant_id", "email"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "ux_users_oidc",
                "users",
                &["oidc_issuer", "oidc_subject"],
                true,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Alias::new("recovery_codes"))
                    .col(id())
                    .col(col("user_id").big_integer().not_null())
                    .col(col("code_hash").string_len(64).not_null())
                    .col(opt_ts("used_at"))
                    .foreign_key(&mut fk(
                        "fk_recovery_user",
                        ("recovery_codes", "user_id"),
                        "users",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_recovery_user",
                "recovery_codes",
                &["user_id"],
                false,
            ))
            .await?;

        let mut keys = Table::create();
        keys.table(Alias::new("api_keys"))
            .col(id())
            .col(col("tenant_id").big_integer().not_null())
            .col(col("name").string_len(200).not_null());
        role_scope(&mut keys);
        keys.col(col("secret_hash").string_len(64).not_null())
            .col(col("created_by").string_len(200).not_null())
            .col(ts("created_at"))
            .col(opt_ts("expires_at"))
            .col(opt_ts("revoked_at"))
            .col(opt_ts("last_used_at"))
            .foreign_key(&mut fk(
                "fk_api_keys_tenant",
                ("api_keys", "tenant_id"),
                "tenants",
                ForeignKeyAction::Restrict,
            ));
        manager.create_table(keys.to_owned()).await?;
        manager
            .create_index(index(
                "ix_api_keys_tenant",
                "api_keys",
                &["tenant_id", "created_at"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Alias::new("sessions"))
                    .col(id())
                    .col(col("tenant_id").big_integer().not_null())
                    .col(col("user_id").big_integer().null())
                    .col(col("api_key_id").big_integer().null())
                    .col(col("access_hash").string_len(64).not_null())
                    .col(ts("access_expires_at"))
                    .col(col("refresh_hash").string_len(64).null())
                    .col(opt_ts("refresh_expires_at"))
                    .col(opt_ts("revoked_at"))
                    .col(col("source_ip").string_len(64).null())
                    .col(col("user_agent").string_len(400).null())
                    .col(ts("created_at"))
                    .foreign_key(&mut fk(
                        "fk_sessions_user",
                        ("sessions", "user_id"),
                        "users",
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_sessions_key",
                        ("sessions", "api_key_id"),
                        "api_keys",
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_sessions_access",
                "sessions",
                &["access_hash"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "ux_sessions_refresh",
                "sessions",
                &["refresh_hash"],
                true,
            ))
            .await?;
        manager
            .create_index(index("ix_sessions_user", "sessions", &["user_id"], false))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Alias::new("oidc_logins"))
                    .col(col("state").string_len(64).not_null().primary_key())
                    .col(col("provider").string_len(64).not_null())
                    .col(col("pkce_verifier").string_len(200).not_null())
                    .col(col("nonce").string_len(200).not_null())
                    .col(ts("created_at"))
                    .to_owned(),
            )
            .await?;

        // One ALTER per column: SQLite takes a single change per statement.
        let audit_cols = [
            col("source_ip").string_len(64).null().to_owned(),
            col("user_agent").string_len(400).null().to_owned(),
            col("result")
                .string_len(16)
                .not_null()
                .default("SUCCESS")
                .to_owned(),
            col("prev_hash").string_len(64).null().to_owned(),
            col("hash").string_len(64).null().to_owned(),
        ];
        for mut c in audit_cols {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("audit_log"))
                        .add_column(&mut c)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(index(
                "ix_audit_tenant_id",
                "audit_log",
                &["tenant_id", "id"],
                false,
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["oidc_logins", "sessions", "api_keys", "recovery_codes"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ix_audit_tenant_id")
                    .table(Alias::new("audit_log"))
                    .to_owned(),
            )
            .await?;
        for c in ["source_ip", "user_agent", "result", "prev_hash", "hash"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("audit_log"))
                        .drop_column(Alias::new(c))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
