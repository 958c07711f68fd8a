//! The hierarchy's domain operations: validated create / update / delete of
//! every level, scoped to the caller, audited in the same transaction.
//!
//! Rules a client can rely on:
//! - Names are unique among siblings (client names within a tenant, site
//!   names within a client, …); serials are unique within a tenant. A clash
//!   is a `CONFLICT`.
//! - Deleting an object that still has children is refused with `CONFLICT`
//!   unless `cascade` is set, in which case the whole subtree (down to the
//!   batteries' samples) goes in one transaction.
//! - A battery can move to any BMS and a BMS to any zone of the tenant; the
//!   ancestry stored on them (and on the BMS's batteries) follows.

use std::sync::Arc;

use async_graphql::MaybeUndefined;
use chrono::{DateTime, Utc};
use entities::{battery, bms, client, site, zone};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    IntoActiveModel, PaginatorTrait, PrimaryKeyTrait, QueryFilter, Set, SqlErr,
};

use super::types::*;
use crate::audit::{self, Change};
use crate::auth::{Principal, Scoped};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Kind};
use crate::ingest::modbus::Registry;
use crate::validate;

const NAME_MAX: usize = 200;

/// Loads one row of `E` visible to `who`, or `NOT_FOUND`.
pub async fn find_scoped<E>(
    db: &impl sea_orm::ConnectionTrait,
    who: &Principal,
    id: i64,
    kind: Kind,
) -> ApiResult<E::Model>
where
    E: Scoped,
    <E::PrimaryKey as PrimaryKeyTrait>::ValueType: From<i64>,
{
    E::find_by_id(id)
        .filter(who.condition::<E>())
        .one(db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{} {}", kind.name(), ids::encode(kind, id).0)))
}

fn conflict_on_unique(message: String) -> impl FnOnce(DbErr) -> ApiError {
    move |err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => ApiError::Conflict(message),
        _ => ApiError::Db(err),
    }
}

/// The value after an update: unchanged when the field was left out,
/// cleared when it was set to null.
fn merge<T: Clone>(update: &MaybeUndefined<T>, current: &Option<T>) -> Option<T> {
    match update {
        MaybeUndefined::Undefined => current.clone(),
        MaybeUndefined::Null => None,
        MaybeUndefined::Value(v) => Some(v.clone()),
    }
}

fn now() -> DateTime<Utc> {
    crate::clock::now()
}

/// Validated, normalised client fields.
fn client_fields(
    name: &str,
    industry: Option<&str>,
    country: Option<&str>,
    tz: &str,
) -> ApiResult<(String, Option<String>, Option<String>, String)> {
    Ok((
        validate::name("name", name, NAME_MAX)?,
        validate::opt_text("industry", industry, NAME_MAX)?,
        country
            .map(|c| validate::country("country", c))
            .transpose()?,
        validate::time_zone("timeZone", tz)?,
    ))
}

fn check_site_position(lat: Option<f64>, lon: Option<f64>) -> ApiResult<()> {
    if let Some(lat) = lat {
        validate::range("latitude", lat, -90.0, 90.0)?;
    }
    if let Some(lon) = lon {
        validate::range("longitude", lon, -180.0, 180.0)?;
    }
    Ok(())
}

fn check_bms(
    protocol: entities::enums::BmsProtocol,
    endpoint: Option<&str>,
    poll_ms: i32,
    register_map: Option<&str>,
    maps: &Registry,
) -> ApiResult<()> {
    if !(100..=86_400_000).contains(&poll_ms) {
        return Err(ApiError::validation(
            "pollIntervalMs",
            "must be between 100 and 86400000",
        ));
    }
    if protocol == entities::enums::BmsProtocol::ModbusTcp {
        let ok = endpoint
            .and_then(|e| e.rsplit_once(':'))
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        if !ok {
            return Err(ApiError::validation(
                "endpoint",
                "MODBUS_TCP needs an endpoint of the form host:port",
            ));
        }
        if register_map.is_none() {
            return Err(ApiError::validation(
                "registerMap",
                "MODBUS_TCP needs a register map",
            ));
        }
    }
    if let Some(name) = register_map
        && maps.get(name).is_none()
    {
        let known: Vec<&str> = maps.all().map(|m| m.name.as_str()).collect();
        return Err(ApiError::validation(
            "registerMap",
            format!(
                "unknown register map '{name}'; known maps: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

struct BatterySpecs {
    capacity_ah: f64,
    energy_kwh: Option<f64>,
    voltage_v: f64,
}

fn check_battery_specs(s: &BatterySpecs) -> ApiResult<()> {
    validate::positive("nominalCapacityAh", s.capacity_ah, 100_000.0)?;
    validate::positive("nominalVoltageV", s.voltage_v, 2_000.0)?;
    if let Some(e) = s.energy_kwh {
        validate::positive("nominalEnergyKwh", e, 1_000_000.0)?;
    }
    Ok(())
}

/// Counts `E` rows whose `col` equals `id` (children of one parent).
async fn children<E: EntityTrait<Model: Sync>>(
    txn: &DatabaseTransaction,
    col: E::Column,
    id: i64,
) -> ApiResult<u64> {
    Ok(E::find().filter(col.eq(id)).count(txn).await?)
}

/// Deletes every `E` row whose `col` equals `id`.
async fn delete_where<E: EntityTrait>(
    txn: &DatabaseTransaction,
    col: E::Column,
    id: i64,
) -> ApiResult<()> {
    E::delete_many().filter(col.eq(id)).exec(txn).await?;
    Ok(())
}

#[derive(Clone)]
pub struct HierarchyService {
    db: DatabaseConnection,
    /// Register maps a Modbus unit may name.
    register_maps: Arc<Registry>,
}

impl HierarchyService {
    pub fn new(db: DatabaseConnection, register_maps: Arc<Registry>) -> Self {
        Self { db, register_maps }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    // ----- clients ---------------------------------------------------------

    pub async fn create_client(
        &self,
        who: &Principal,
        input: CreateClientInput,
    ) -> ApiResult<client::Model> {
        who.require(crate::auth::Action::ManageClients)?;
        let (name, industry, country, tz) = client_fields(
            &input.name,
            input.industry.as_deref(),
            input.country.as_deref(),
            &input.time_zone,
        )?;
        let txn = crate::db::begin_write(&self.db).await?;
        let model = client::ActiveModel {
            tenant_id: Set(who.tenant_id),
            name: Set(name.clone()),
            industry: Set(industry),
            country: Set(country),
            time_zone: Set(tz),
            tier: Set(input.tier.into()),
            created_at: Set(now()),
            updated_at: Set(now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on_unique(format!(
            "a client named '{name}' already exists"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "client.create",
                target_type: "Client",
                target_id: Some(model.id),
                before: None,
                after: Some(&model),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn update_client(
        &self,
        who: &Principal,
        id: i64,
        input: UpdateClientInput,
    ) -> ApiResult<client::Model> {
        who.require(crate::auth::Action::EditClient)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<client::Entity>(&txn, who, id, Kind::Client).await?;
        let (name, industry, country, tz) = client_fields(
            input.name.as_deref().unwrap_or(&before.name),
            merge(&input.industry, &before.industry).as_deref(),
            merge(&input.country, &before.country).as_deref(),
            input.time_zone.as_deref().unwrap_or(&before.time_zone),
        )?;
        let mut am = before.clone().into_active_model();
        am.name = Set(name.clone());
        am.industry = Set(industry);
        am.country = Set(country);
        am.time_zone = Set(tz);
        if let Some(tier) = input.tier {
            am.tier = Set(tier.into());
        }
        am.updated_at = Set(now());
        let after = am.update(&txn).await.map_err(conflict_on_unique(format!(
            "a client named '{name}' already exists"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "client.update",
                target_type: "Client",
                target_id: Some(id),
                before: Some(&before),
                after: Some(&after),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(after)
    }

    pub async fn delete_client(&self, who: &Principal, id: i64, cascade: bool) -> ApiResult<()> {
        who.require(crate::auth::Action::ManageClients)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<client::Entity>(&txn, who, id, Kind::Client).await?;
        let n = children::<site::Entity>(&txn, site::Column::ClientId, id).await?;
        if n > 0 && !cascade {
            return Err(ApiError::Conflict(format!(
                "client '{}' still has {n} site(s); delete them first or pass cascade: true",
                before.name
            )));
        }
        delete_where::<battery::Entity>(&txn, battery::Column::ClientId, id).await?;
        delete_where::<bms::Entity>(&txn, bms::Column::ClientId, id).await?;
        delete_where::<zone::Entity>(&txn, zone::Column::ClientId, id).await?;
        delete_where::<site::Entity>(&txn, site::Column::ClientId, id).await?;
        client::Entity::delete_by_id(id).exec(&txn).await?;
        audit::record(
            &txn,
            who,
            Change {
                action: "client.delete",
                target_type: "Client",
                target_id: Some(id),
                before: Some(&before),
                after: None,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    // ----- sites -----------------------------------------------------------

    pub async fn create_site(
        &self,
        who: &Principal,
        input: CreateSiteInput,
    ) -> ApiResult<site::Model> {
        who.require(crate::auth::Action::ManageSites)?;
        let client_id = ids::decode(Kind::Client, &input.client_id)?;
        let name = validate::name("name", &input.name, NAME_MAX)?;
        check_site_position(input.latitude, input.longitude)?;
        let address = validate::opt_text("address", input.address.as_deref(), 500)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let parent = find_scoped::<client::Entity>(&txn, who, client_id, Kind::Client).await?;
        let tz = validate::time_zone(
            "timeZone",
            input.time_zone.as_deref().unwrap_or(&parent.time_zone),
        )?;
        let model = site::ActiveModel {
            tenant_id: Set(parent.tenant_id),
            client_id: Set(parent.id),
            name: Set(name.clone()),
            latitude: Set(input.latitude),
            longitude: Set(input.longitude),
            time_zone: Set(tz),
            address: Set(address),
            created_at: Set(now()),
            updated_at: Set(now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on_unique(format!(
            "client '{}' already has a site named '{name}'",
            parent.name
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "site.create",
                target_type: "Site",
                target_id: Some(model.id),
                before: None,
                after: Some(&model),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn update_site(
        &self,
        who: &Principal,
        id: i64,
        input: UpdateSiteInput,
    ) -> ApiResult<site::Model> {
        who.require(crate::auth::Action::ManageSites)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<site::Entity>(&txn, who, id, Kind::Site).await?;
        let mut am = before.clone().into_active_model();
        let name = validate::name(
            "name",
            input.name.as_deref().unwrap_or(&before.name),
            NAME_MAX,
        )?;
        am.name = Set(name.clone());
        let (lat, lon) = (
            merge(&input.latitude, &before.latitude),
            merge(&input.longitude, &before.longitude),
        );
        check_site_position(lat, lon)?;
        am.latitude = Set(lat);
        am.longitude = Set(lon);
        if let Some(tz) = &input.time_zone {
            am.time_zone = Set(validate::time_zone("timeZone", tz)?);
        }
        am.address = Set(validate::opt_text(
            "address",
            merge(&input.address, &before.address).as_deref(),
            500,
        )?);
        am.updated_at = Set(now());
        let after = am.update(&txn).await.map_err(conflict_on_unique(format!(
            "the client already has a site named '{name}'"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "site.update",
                target_type: "Site",
                target_id: Some(id),
                before: Some(&before),
                after: Some(&after),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(after)
    }

    pub async fn delete_site(&self, who: &Principal, id: i64, cascade: bool) -> ApiResult<()> {
        who.require(crate::auth::Action::ManageSites)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<site::Entity>(&txn, who, id, Kind::Site).await?;
        let n = children::<zone::Entity>(&txn, zone::Column::SiteId, id).await?;
        if n > 0 && !cascade {
            return Err(ApiError::Conflict(format!(
                "site '{}' still has {n} zone(s); delete them first or pass cascade: true",
                before.name
            )));
        }
        delete_where::<battery::Entity>(&txn, battery::Column::SiteId, id).await?;
        delete_where::<bms::Entity>(&txn, bms::Column::SiteId, id).await?;
        delete_where::<zone::Entity>(&txn, zone::Column::SiteId, id).await?;
        site::Entity::delete_by_id(id).exec(&txn).await?;
        audit::record(
            &txn,
            who,
            Change {
                action: "site.delete",
                target_type: "Site",
                target_id: Some(id),
                before: Some(&before),
                after: None,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    // ----- zones -----------------------------------------------------------

    pub async fn create_zone(
        &self,
        who: &Principal,
        input: CreateZoneInput,
    ) -> ApiResult<zone::Model> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let site_id = ids::decode(Kind::Site, &input.site_id)?;
        let name = validate::name("name", &input.name, NAME_MAX)?;
        let description = validate::opt_text("description", input.description.as_deref(), 1000)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let parent = find_scoped::<site::Entity>(&txn, who, site_id, Kind::Site).await?;
        let model = zone::ActiveModel {
            tenant_id: Set(parent.tenant_id),
            client_id: Set(parent.client_id),
            site_id: Set(parent.id),
            name: Set(name.clone()),
            description: Set(description),
            created_at: Set(now()),
            updated_at: Set(now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on_unique(format!(
            "site '{}' already has a zone named '{name}'",
            parent.name
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "zone.create",
                target_type: "Zone",
                target_id: Some(model.id),
                before: None,
                after: Some(&model),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn update_zone(
        &self,
        who: &Principal,
        id: i64,
        input: UpdateZoneInput,
    ) -> ApiResult<zone::Model> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<zone::Entity>(&txn, who, id, Kind::Zone).await?;
        let mut am = before.clone().into_active_model();
        let name = validate::name(
            "name",
            input.name.as_deref().unwrap_or(&before.name),
            NAME_MAX,
        )?;
        am.name = Set(name.clone());
        am.description = Set(validate::opt_text(
            "description",
            merge(&input.description, &before.description).as_deref(),
            1000,
        )?);
        am.updated_at = Set(now());
        let after = am.update(&txn).await.map_err(conflict_on_unique(format!(
            "the site already has a zone named '{name}'"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "zone.update",
                target_type: "Zone",
                target_id: Some(id),
                before: Some(&before),
                after: Some(&after),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(after)
    }

    pub async fn delete_zone(&self, who: &Principal, id: i64, cascade: bool) -> ApiResult<()> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<zone::Entity>(&txn, who, id, Kind::Zone).await?;
        let n = children::<bms::Entity>(&txn, bms::Column::ZoneId, id).await?;
        if n > 0 && !cascade {
            return Err(ApiError::Conflict(format!(
                "zone '{}' still has {n} BMS unit(s); delete them first or pass cascade: true",
                before.name
            )));
        }
        delete_where::<battery::Entity>(&txn, battery::Column::ZoneId, id).await?;
        delete_where::<bms::Entity>(&txn, bms::Column::ZoneId, id).await?;
        zone::Entity::delete_by_id(id).exec(&txn).await?;
        audit::record(
            &txn,
            who,
            Change {
                action: "zone.delete",
                target_type: "Zone",
                target_id: Some(id),
                before: Some(&before),
                after: None,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    // ----- BMS units -------------------------------------------------------

    pub async fn create_bms(
        &self,
        who: &Principal,
        input: CreateBmsInput,
    ) -> ApiResult<bms::Model> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let zone_id = ids::decode(Kind::Zone, &input.zone_id)?;
        let name = validate::name("name", &input.name, NAME_MAX)?;
        let endpoint = validate::opt_text("endpoint", input.endpoint.as_deref(), 500)?;
        let register_map = input
            .register_map
            .as_deref()
            .map(|m| validate::identifier("registerMap", m, NAME_MAX))
            .transpose()?;
        check_bms(
            input.protocol.into(),
            endpoint.as_deref(),
            input.poll_interval_ms,
            register_map.as_deref(),
            &self.register_maps,
        )?;
        if let Some(c) = input.capacity_kwh {
            validate::positive("capacityKwh", c, 10_000_000.0)?;
        }
        let txn = crate::db::begin_write(&self.db).await?;
        let parent = find_scoped::<zone::Entity>(&txn, who, zone_id, Kind::Zone).await?;
        let model = bms::ActiveModel {
            tenant_id: Set(parent.tenant_id),
            client_id: Set(parent.client_id),
            site_id: Set(parent.site_id),
            zone_id: Set(parent.id),
            name: Set(name.clone()),
            vendor: Set(input.vendor.into()),
            protocol: Set(input.protocol.into()),
            endpoint: Set(endpoint),
            poll_interval_ms: Set(input.poll_interval_ms),
            register_map: Set(register_map),
            capacity_kwh: Set(input.capacity_kwh),
            created_at: Set(now()),
            updated_at: Set(now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on_unique(format!(
            "the site already has a BMS named '{name}'"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "bms.create",
                target_type: "Bms",
                target_id: Some(model.id),
                before: None,
                after: Some(&model),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn update_bms(
        &self,
        who: &Principal,
        id: i64,
        input: UpdateBmsInput,
    ) -> ApiResult<bms::Model> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let new_zone = input
            .zone_id
            .as_ref()
            .map(|z| ids::decode(Kind::Zone, z))
            .transpose()?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<bms::Entity>(&txn, who, id, Kind::Bms).await?;
        let mut am = before.clone().into_active_model();
        let name = validate::name(
            "name",
            input.name.as_deref().unwrap_or(&before.name),
            NAME_MAX,
        )?;
        am.name = Set(name.clone());
        if let Some(v) = input.vendor {
            am.vendor = Set(v.into());
        }
        let protocol = input.protocol.map(Into::into).unwrap_or(before.protocol);
        am.protocol = Set(protocol);
        let endpoint = validate::opt_text(
            "endpoint",
            merge(&input.endpoint, &before.endpoint).as_deref(),
            500,
        )?;
        let poll = input.poll_interval_ms.unwrap_or(before.poll_interval_ms);
        let register_map = merge(&input.register_map, &before.register_map)
            .map(|m| validate::identifier("registerMap", &m, NAME_MAX))
            .transpose()?;
        check_bms(
            protocol,
            endpoint.as_deref(),
            poll,
            register_map.as_deref(),
            &self.register_maps,
        )?;
        am.endpoint = Set(endpoint);
        am.poll_interval_ms = Set(poll);
        am.register_map = Set(register_map);
        let capacity = merge(&input.capacity_kwh, &before.capacity_kwh);
        if let Some(c) = capacity {
            validate::positive("capacityKwh", c, 10_000_000.0)?;
        }
        am.capacity_kwh = Set(capacity);
        if let Some(zone_id) = new_zone.filter(|z| *z != before.zone_id) {
            let zone = find_scoped::<zone::Entity>(&txn, who, zone_id, Kind::Zone).await?;
            am.zone_id = Set(zone.id);
            am.site_id = Set(zone.site_id);
            am.client_id = Set(zone.client_id);
            battery::Entity::update_many()
                .col_expr(battery::Column::ZoneId, Expr::value(zone.id))
                .col_expr(battery::Column::SiteId, Expr::value(zone.site_id))
                .col_expr(battery::Column::ClientId, Expr::value(zone.client_id))
                .filter(battery::Column::BmsId.eq(id))
                .exec(&txn)
                .await?;
        }
        am.updated_at = Set(now());
        let after = am.update(&txn).await.map_err(conflict_on_unique(format!(
            "the site already has a BMS named '{name}'"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "bms.update",
                target_type: "Bms",
                target_id: Some(id),
                before: Some(&before),
                after: Some(&after),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(after)
    }

    pub async fn delete_bms(&self, who: &Principal, id: i64, cascade: bool) -> ApiResult<()> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<bms::Entity>(&txn, who, id, Kind::Bms).await?;
        let n = children::<battery::Entity>(&txn, battery::Column::BmsId, id).await?;
        if n > 0 && !cascade {
            return Err(ApiError::Conflict(format!(
                "BMS '{}' still has {n} battery(ies); delete them first or pass cascade: true",
                before.name
            )));
        }
        delete_where::<battery::Entity>(&txn, battery::Column::BmsId, id).await?;
        bms::Entity::delete_by_id(id).exec(&txn).await?;
        audit::record(
            &txn,
            who,
            Change {
                action: "bms.delete",
                target_type: "Bms",
                target_id: Some(id),
                before: Some(&before),
                after: None,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    // ----- batteries -------------------------------------------------------

    pub async fn create_battery(
        &self,
        who: &Principal,
        input: CreateBatteryInput,
    ) -> ApiResult<battery::Model> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let bms_id = ids::decode(Kind::Bms, &input.bms_id)?;
        let serial = validate::identifier("serial", &input.serial, 100)?;
        check_battery_specs(&BatterySpecs {
            capacity_ah: input.nominal_capacity_ah,
            energy_kwh: input.nominal_energy_kwh,
            voltage_v: input.nominal_voltage_v,
        })?;
        let install_date = validate::past_date("installDate", input.install_date)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let parent = find_scoped::<bms::Entity>(&txn, who, bms_id, Kind::Bms).await?;
        let model = battery::ActiveModel {
            tenant_id: Set(parent.tenant_id),
            client_id: Set(parent.client_id),
            site_id: Set(parent.site_id),
            zone_id: Set(parent.zone_id),
            bms_id: Set(parent.id),
            serial: Set(serial.clone()),
            chemistry: Set(input.chemistry.into()),
            nominal_capacity_ah: Set(input.nominal_capacity_ah),
            nominal_energy_kwh: Set(input.nominal_energy_kwh),
            nominal_voltage_v: Set(input.nominal_voltage_v),
            install_date: Set(install_date),
            status: Set(input.status.into()),
            soh_pct: Set(None),
            last_sample_at: Set(None),
            created_at: Set(now()),
            updated_at: Set(now()),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(conflict_on_unique(format!(
            "a battery with serial '{serial}' already exists"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "battery.create",
                target_type: "Battery",
                target_id: Some(model.id),
                before: None,
                after: Some(&model),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    pub async fn update_battery(
        &self,
        who: &Principal,
        id: i64,
        input: UpdateBatteryInput,
    ) -> ApiResult<battery::Model> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let new_bms = input
            .bms_id
            .as_ref()
            .map(|b| ids::decode(Kind::Bms, b))
            .transpose()?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<battery::Entity>(&txn, who, id, Kind::Battery).await?;
        let mut am = before.clone().into_active_model();
        let serial = validate::identifier(
            "serial",
            input.serial.as_deref().unwrap_or(&before.serial),
            100,
        )?;
        am.serial = Set(serial.clone());
        if let Some(c) = input.chemistry {
            am.chemistry = Set(c.into());
        }
        let specs = BatterySpecs {
            capacity_ah: input
                .nominal_capacity_ah
                .unwrap_or(before.nominal_capacity_ah),
            energy_kwh: merge(&input.nominal_energy_kwh, &before.nominal_energy_kwh),
            voltage_v: input.nominal_voltage_v.unwrap_or(before.nominal_voltage_v),
        };
        check_battery_specs(&specs)?;
        am.nominal_capacity_ah = Set(specs.capacity_ah);
        am.nominal_energy_kwh = Set(specs.energy_kwh);
        am.nominal_voltage_v = Set(specs.voltage_v);
        if let Some(d) = input.install_date {
            am.install_date = Set(validate::past_date("installDate", d)?);
        }
        if let Some(s) = input.status {
            am.status = Set(s.into());
        }
        if let Some(bms_id) = new_bms.filter(|b| *b != before.bms_id) {
            let unit = find_scoped::<bms::Entity>(&txn, who, bms_id, Kind::Bms).await?;
            am.bms_id = Set(unit.id);
            am.zone_id = Set(unit.zone_id);
            am.site_id = Set(unit.site_id);
            am.client_id = Set(unit.client_id);
        }
        am.updated_at = Set(now());
        let after = am.update(&txn).await.map_err(conflict_on_unique(format!(
            "a battery with serial '{serial}' already exists"
        )))?;
        audit::record(
            &txn,
            who,
            Change {
                action: "battery.update",
                target_type: "Battery",
                target_id: Some(id),
                before: Some(&before),
                after: Some(&after),
            },
        )
        .await?;
        txn.commit().await?;
        Ok(after)
    }

    pub async fn delete_battery(&self, who: &Principal, id: i64) -> ApiResult<()> {
        who.require(crate::auth::Action::ManageEquipment)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let before = find_scoped::<battery::Entity>(&txn, who, id, Kind::Battery).await?;
        battery::Entity::delete_by_id(id).exec(&txn).await?;
        audit::record(
            &txn,
            who,
            Change {
                action: "battery.delete",
                target_type: "Battery",
                target_id: Some(id),
                before: Some(&before),
                after: None,
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }
}
