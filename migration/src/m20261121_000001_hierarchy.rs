//! The fleet hierarchy, telemetry samples, users and audit log, plus the
//! default tenant that a fresh deployment starts with.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Slug,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Clients {
    Table,
    Id,
    TenantId,
    Name,
    Industry,
    Country,
    TimeZone,
    Tier,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Sites {
    Table,
    Id,
    TenantId,
    ClientId,
    Name,
    Latitude,
    Longitude,
    TimeZone,
    Address,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Zones {
    Table,
    Id,
    TenantId,
    ClientId,
    SiteId,
    Name,
    Description,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BmsUnits {
    Table,
    Id,
    TenantId,
    ClientId,
    SiteId,
    ZoneId,
    Name,
    Vendor,
    Protocol,
    Endpoint,
    PollIntervalMs,
    RegisterMap,
    CapacityKwh,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Batteries {
    Table,
    Id,
    TenantId,
    ClientId,
    SiteId,
    ZoneId,
    BmsId,
    Serial,
    Chemistry,
    NominalCapacityAh,
    NominalEnergyKwh,
    NominalVoltageV,
    InstallDate,
    Status,
    SohPct,
    LastSampleAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BatterySamples {
    Table,
    BatteryId,
    Ts,
    VoltageV,
    CurrentA,
    PowerW,
    SocPct,
    SohPct,
    TempMinC,
    TempMaxC,
    TempAvgC,
    EnergyKwh,
    EfficiencyPct,
    CycleCount,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TenantId,
    Email,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    TenantId,
    Actor,
    Action,
    TargetType,
    TargetId,
    Before,
    After,
    CreatedAt,
}

fn id<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn fk_col<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn name_col<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string_len(200).not_null().to_owned()
}

fn enum_col<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).string_len(16).not_null().to_owned()
}

fn timestamp<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn opt_f64<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).double().null().to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .to_owned()
}

fn index(
    name: &str,
    table: impl IntoIden,
    cols: &[&'static str],
    unique: bool,
) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(name).table(table);
    for col in cols {
        idx.col(Alias::new(*col));
    }
    if unique {
        idx.unique();
    }
    idx.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(id(Tenants::Id))
                    .col(
                        ColumnDef::new(Tenants::Slug)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(name_col(Tenants::Name))
                    .col(timestamp(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Clients::Table)
                    .col(id(Clients::Id))
                    .col(fk_col(Clients::TenantId))
                    .col(name_col(Clients::Name))
                    .col(ColumnDef::new(Clients::Industry).string_len(200).null())
                    .col(ColumnDef::new(Clients::Country).string_len(2).null())
                    .col(ColumnDef::new(Clients::TimeZone).string_len(64).not_null())
                    .col(enum_col(Clients::Tier))
                    .col(timestamp(Clients::CreatedAt))
                    .col(timestamp(Clients::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_clients_tenant",
                        (Clients::Table, Clients::TenantId),
                        (Tenants::Table, Tenants::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_clients_tenant_name",
                Clients::Table,
                &["tenant_id", "name"],
                true,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sites::Table)
                    .col(id(Sites::Id))
                    .col(fk_col(Sites::TenantId))
                    .col(fk_col(Sites::ClientId))
                    .col(name_col(Sites::Name))
                    .col(opt_f64(Sites::Latitude))
                    .col(opt_f64(Sites::Longitude))
                    .col(ColumnDef::new(Sites::TimeZone).string_len(64).not_null())
                    .col(ColumnDef::new(Sites::Address).string_len(500).null())
                    .col(timestamp(Sites::CreatedAt))
                    .col(timestamp(Sites::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_sites_client",
                        (Sites::Table, Sites::ClientId),
                        (Clients::Table, Clients::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_sites_client_name",
                Sites::Table,
                &["client_id", "name"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "ix_sites_tenant_name",
                Sites::Table,
                &["tenant_id", "name"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Zones::Table)
                    .col(id(Zones::Id))
                    .col(fk_col(Zones::TenantId))
                    .col(fk_col(Zones::ClientId))
                    .col(fk_col(Zones::SiteId))
                    .col(name_col(Zones::Name))
                    .col(ColumnDef::new(Zones::Description).string_len(1000).null())
                    .col(timestamp(Zones::CreatedAt))
                    .col(timestamp(Zones::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_zones_site",
                        (Zones::Table, Zones::SiteId),
                        (Sites::Table, Sites::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_zones_site_name",
                Zones::Table,
                &["site_id", "name"],
                true,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BmsUnits::Table)
                    .col(id(BmsUnits::Id))
                    .col(fk_col(BmsUnits::TenantId))
                    .col(fk_col(BmsUnits::ClientId))
                    .col(fk_col(BmsUnits::SiteId))
                    .col(fk_col(BmsUnits::ZoneId))
                    .col(name_col(BmsUnits::Name))
                    .col(enum_col(BmsUnits::Vendor))
                    .col(enum_col(BmsUnits::Protocol))
                    .col(ColumnDef::new(BmsUnits::Endpoint).string_len(500).null())
                    .col(
                        ColumnDef::new(BmsUnits::PollIntervalMs)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(BmsUnits::RegisterMap).string_len(200).null())
                    .col(opt_f64(BmsUnits::CapacityKwh))
                    .col(timestamp(BmsUnits::CreatedAt))
                    .col(timestamp(BmsUnits::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_bms_zone",
                        (BmsUnits::Table, BmsUnits::ZoneId),
                        (Zones::Table, Zones::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_bms_site_name",
                BmsUnits::Table,
                &["site_id", "name"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "ix_bms_zone_name",
                BmsUnits::Table,
                &["zone_id", "name"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Batteries::Table)
                    .col(id(Batteries::Id))
                    .col(fk_col(Batteries::TenantId))
                    .col(fk_col(Batteries::ClientId))
                    .col(fk_col(Batteries::SiteId))
                    .col(fk_col(Batteries::ZoneId))
                    .col(fk_col(Batteries::BmsId))
                    .col(ColumnDef::new(Batteries::Serial).string_len(100).not_null())
                    .col(enum_col(Batteries::Chemistry))
                    .col(
                        ColumnDef::new(Batteries::NominalCapacityAh)
                            .double()
                            .not_null(),
                    )
                    .col(opt_f64(Batteries::NominalEnergyKwh))
                    .col(
                        ColumnDef::new(Batteries::NominalVoltageV)
                            .double()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Batteries::InstallDate).date().not_null())
                    .col(enum_col(Batteries::Status))
                    .col(opt_f64(Batteries::SohPct))
                    .col(
                        ColumnDef::new(Batteries::LastSampleAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(timestamp(Batteries::CreatedAt))
                    .col(timestamp(Batteries::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_batteries_bms",
                        (Batteries::Table, Batteries::BmsId),
                        (BmsUnits::Table, BmsUnits::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, cols, unique) in [
            (
                "ux_batteries_tenant_serial",
                &["tenant_id", "serial"][..],
                true,
            ),
            ("ix_batteries_bms_serial", &["bms_id", "serial"][..], false),
            ("ix_batteries_site", &["site_id"][..], false),
            (
                "ix_batteries_tenant_status",
                &["tenant_id", "status"][..],
                false,
            ),
            (
                "ix_batteries_tenant_chemistry",
                &["tenant_id", "chemistry"][..],
                false,
            ),
            (
                "ix_batteries_tenant_soh",
                &["tenant_id", "soh_pct"][..],
                false,
            ),
        ] {
            manager
                .create_index(index(name, Batteries::Table, cols, unique))
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(BatterySamples::Table)
                    .col(fk_col(BatterySamples::BatteryId))
                    .col(timestamp(BatterySamples::Ts))
                    .col(opt_f64(BatterySamples::VoltageV))
                    .col(opt_f64(BatterySamples::CurrentA))
                    .col(opt_f64(BatterySamples::PowerW))
                    .col(opt_f64(BatterySamples::SocPct))
                    .col(opt_f64(BatterySamples::SohPct))
                    .col(opt_f64(BatterySamples::TempMinC))
                    .col(opt_f64(BatterySamples::TempMaxC))
                    .col(opt_f64(BatterySamples::TempAvgC))
                    .col(opt_f64(BatterySamples::EnergyKwh))
                    .col(opt_f64(BatterySamples::EfficiencyPct))
                    .col(ColumnDef::new(BatterySamples::CycleCount).integer().null())
                    .primary_key(
                        Index::create()
                            .name("pk_battery_samples")
                            .col(BatterySamples::BatteryId)
                            .col(BatterySamples::Ts),
                    )
                    .foreign_key(&mut fk(
                        "fk_samples_battery",
                        (BatterySamples::Table, BatterySamples::BatteryId),
                        (Batteries::Table, Batteries::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(id(Users::Id))
                    .col(fk_col(Users::TenantId))
                    .col(ColumnDef::new(Users::Email).string_len(320).not_null())
                    .col(enum_col(Users::Role))
                    .col(timestamp(Users::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_users_tenant",
                        (Users::Table, Users::TenantId),
                        (Tenants::Table, Tenants::Id),
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_users_tenant_email",
                Users::Table,
                &["tenant_id", "email"],
                true,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(id(AuditLog::Id))
                    .col(fk_col(AuditLog::TenantId))
                    .col(ColumnDef::new(AuditLog::Actor).string_len(200).not_null())
                    .col(ColumnDef::new(AuditLog::Action).string_len(100).not_null())
                    .col(
                        ColumnDef::new(AuditLog::TargetType)
                            .string_len(50)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditLog::TargetId).big_integer().null())
                    .col(ColumnDef::new(AuditLog::Before).json().null())
                    .col(ColumnDef::new(AuditLog::After).json().null())
                    .col(timestamp(AuditLog::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ix_audit_tenant_time",
                AuditLog::Table,
                &["tenant_id", "created_at"],
                false,
            ))
            .await?;

        // Every deployment has one tenant from the start; single-company
        // installations never need to know that tenants exist.
        let now = chrono_now_literal();
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(Tenants::Table)
                    .columns([Tenants::Slug, Tenants::Name, Tenants::CreatedAt])
                    .values_panic(["default".into(), "Default tenant".into(), now.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            Users::Table.into_iden(),
            BatterySamples::Table.into_iden(),
            Batteries::Table.into_iden(),
            BmsUnits::Table.into_iden(),
            Zones::Table.into_iden(),
            Sites::Table.into_iden(),
            Clients::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The migration crate has no clock of its own beyond sea-query's chrono.
fn chrono_now_literal() -> sea_orm_migration::sea_orm::prelude::DateTimeUtc {
    sea_orm_migration::sea_orm::prelude::ChronoUtc::now()
}
