//! Uploaded plugins and where they are enabled: upload (validated,
//! compiled, described, SHA-256 pinned), versions, enable/disable per
//! tenant, client or site, delete. Every change is audited.

use entities::{plugin, plugin_enablement, site};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Plugins;
use super::bindings::{Resolution, WIT_VERSION};
use super::sandbox::{Prepared, World};
use crate::audit::{self, Change};
use crate::auth::{Action, Principal};
use crate::error::{ApiError, ApiResult};
use crate::hierarchy::service::find_scoped;
use crate::ids::{self, Kind, Other};
use crate::telemetry::live::Filter;

/// Where a plugin is enabled: neither (the tenant), a client, or a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    pub client_id: Option<i64>,
    pub site_id: Option<i64>,
}

impl Place {
    /// The fleet object the place names (none: the tenant).
    pub fn level(self) -> Option<(Kind, i64)> {
        match self {
            Place {
                site_id: Some(s), ..
            } => Some((Kind::Site, s)),
            Place {
                client_id: Some(c), ..
            } => Some((Kind::Client, c)),
            _ => None,
        }
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("Plugin {}", ids::encode_other(Other::Plugin, id).0))
}

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::Raw => "RAW",
        Resolution::Hour => "HOUR",
        Resolution::Day => "DAY",
    }
}

/// The plugin's summary as audited (without the component's bytes).
fn summary(p: &plugin::Model) -> serde_json::Value {
    json!({ "id": p.id, "name": p.name, "version": p.version, "kind": p.kind, "sha256": p.sha256, "sizeBytes": p.size_bytes })
}

/// Compiles, checks the world and asks the plugin to describe itself.
async fn inspect(
    plugins: &Plugins,
    tenant_id: i64,
    sha: &str,
    bytes: Vec<u8>,
) -> ApiResult<(World, serde_json::Value)> {
    let limits = plugins.limits_for(tenant_id).await?;
    let sandbox = plugins.sandbox.clone();
    let sha = sha.to_owned();
    let described = tokio::task::spawn_blocking(move || {
        let prepared = sandbox.prepare(&sha, &bytes)?;
        match &*prepared {
            Prepared::Kpi(_) => sandbox.describe_kpi(&prepared, &limits).map(|d| {
                let kpis: Vec<_> = d
                    .kpis
                    .iter()
                    .map(|k| json!({ "name": k.name, "unit": k.unit, "description": k.description }))
                    .collect();
                (World::Kpi, json!({ "name": d.name, "version": d.version, "kpis": kpis,
                    "resolution": resolution_name(d.needs.resolution), "maxDays": d.needs.max_days }))
            }),
            Prepared::Report(_) => sandbox.describe_report(&prepared, &limits).map(|d| {
                (World::Report, json!({ "name": d.name, "version": d.version, "kpis": [],
                    "description": d.description,
                    "resolution": resolution_name(d.needs.resolution), "maxDays": d.needs.max_days }))
            }),
        }
    })
    .await
    .map_err(|e| ApiError::validation("file", format!("the plugin could not be inspected: {e}")))?;
    described.map_err(|e| ApiError::validation("file", e.to_string()))
}

fn check_label(field: &str, value: &str, max: usize) -> ApiResult<()> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            format!(
                "the plugin's describe() gave '{value}': 1 to {max} of letters, digits, - _ . +"
            ),
        ))
    }
}

/// Accepts a component: validates, pins its SHA-256, records the version.
pub async fn upload(
    plugins: &Plugins,
    who: &Principal,
    bytes: Vec<u8>,
) -> ApiResult<plugin::Model> {
    who.require(Action::ManagePlugins)?;
    let max = plugins.config.max_component_bytes;
    if bytes.len() > max {
        return Err(ApiError::validation(
            "file",
            format!(
                "the component has {} bytes; the limit is {max}",
                bytes.len()
            ),
        ));
    }
    if bytes.get(0..4) != Some(b"\0asm".as_slice()) {
        return Err(ApiError::validation(
            "file",
            "not a WebAssembly file (no \\0asm header)",
        ));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    let (world, description) = inspect(plugins, who.tenant_id, &sha, bytes.clone()).await?;
    let name = description["name"].as_str().unwrap_or_default().to_owned();
    let version = description["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    check_label("name", &name, 100)?;
    check_label("version", &version, 50)?;
    let txn = crate::db::begin_write(&plugins.db).await?;
    let model = plugin::ActiveModel {
        tenant_id: Set(who.tenant_id),
        name: Set(name.clone()),
        version: Set(version.clone()),
        kind: Set(world.as_str().to_owned()),
        wit_version: Set(WIT_VERSION.to_owned()),
        sha256: Set(sha),
        size_bytes: Set(i64::try_from(bytes.len()).unwrap_or(i64::MAX)),
        component: Set(bytes),
        description: Set(description),
        uploaded_by: Set(who.actor.clone()),
        created_at: Set(crate::clock::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::Conflict(format!(
            "version {version} of plugin '{name}' is already uploaded; bump the version"
        )),
        _ => ApiError::Db(e),
    })?;
    audit::record(
        &txn,
        who,
        Change {
            action: "plugin.upload",
            target_type: "Plugin",
            target_id: Some(model.id),
            before: None,
            after: Some(&summary(&model)),
        },
    )
    .await?;
    txn.commit().await?;
    tracing::info!(plugin = %model.name, version = %model.version, tenant = who.tenant_id, "plugin uploaded");
    Ok(model)
}

/// The tenant's plugins, newest first.
pub async fn list(plugins: &Plugins, who: &Principal) -> ApiResult<Vec<plugin::Model>> {
    who.require(Action::ReadFleet)?;
    Ok(plugin::Entity::find()
        .filter(plugin::Column::TenantId.eq(who.tenant_id))
        .order_by_asc(plugin::Column::Name)
        .order_by_desc(plugin::Column::CreatedAt)
        .all(&plugins.db)
        .await?)
}

/// One of the tenant's plugins.
pub async fn get(plugins: &Plugins, who: &Principal, id: i64) -> ApiResult<plugin::Model> {
    plugin::Entity::find_by_id(id)
        .filter(plugin::Column::TenantId.eq(who.tenant_id))
        .one(&plugins.db)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Where a plugin is enabled.
pub async fn places(plugins: &Plugins, plugin_id: i64) -> ApiResult<Vec<plugin_enablement::Model>> {
    Ok(plugin_enablement::Entity::find()
        .filter(plugin_enablement::Column::PluginId.eq(plugin_id))
        .order_by_asc(plugin_enablement::Column::Id)
        .all(&plugins.db)
        .await?)
}

/// Checks the caller may act on `place`.
pub(crate) async fn check_place(plugins: &Plugins, who: &Principal, place: Place) -> ApiResult<()> {
    match place {
        Place {
            client_id: Some(_),
            site_id: Some(_),
        } => Err(ApiError::validation(
            "scope",
            "give a client or a site, not both (neither: the whole tenant)",
        )),
        Place {
            client_id: Some(c), ..
        } => find_scoped::<entities::client::Entity>(&plugins.db, who, c, Kind::Client)
            .await
            .map(|_| ()),
        Place {
            site_id: Some(s), ..
        } => find_scoped::<site::Entity>(&plugins.db, who, s, Kind::Site)
            .await
            .map(|_| ()),
        Place { .. } if who.tenant_wide() => Ok(()),
        Place { .. } => Err(ApiError::Forbidden(
            "only a caller who sees the whole tenant can enable a plugin for all of it".into(),
        )),
    }
}

/// Enables a plugin for `place` (idempotent); returns the plugin.
pub async fn enable(
    plugins: &Plugins,
    who: &Principal,
    id: i64,
    place: Place,
) -> ApiResult<plugin::Model> {
    who.require(Action::ManagePlugins)?;
    let p = get(plugins, who, id).await?;
    check_place(plugins, who, place).await?;
    if places(plugins, id)
        .await?
        .iter()
        .any(|e| e.client_id == place.client_id && e.site_id == place.site_id)
    {
        return Ok(p);
    }
    let txn = crate::db::begin_write(&plugins.db).await?;
    let row = plugin_enablement::ActiveModel {
        tenant_id: Set(who.tenant_id),
        plugin_id: Set(p.id),
        client_id: Set(place.client_id),
        site_id: Set(place.site_id),
        created_by: Set(who.actor.clone()),
        created_at: Set(crate::clock::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "plugin.enable",
            target_type: "Plugin",
            target_id: Some(p.id),
            before: None,
            after: Some(&row),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(p)
}

/// Disables a plugin for `place`; returns the plugin.
pub async fn disable(
    plugins: &Plugins,
    who: &Principal,
    id: i64,
    place: Place,
) -> ApiResult<plugin::Model> {
    who.require(Action::ManagePlugins)?;
    let p = get(plugins, who, id).await?;
    check_place(plugins, who, place).await?;
    let txn = crate::db::begin_write(&plugins.db).await?;
    let mut q = plugin_enablement::Entity::delete_many()
        .filter(plugin_enablement::Column::PluginId.eq(p.id));
    q = match place.client_id {
        Some(c) => q.filter(plugin_enablement::Column::ClientId.eq(c)),
        None => q.filter(plugin_enablement::Column::ClientId.is_null()),
    };
    q = match place.site_id {
        Some(s) => q.filter(plugin_enablement::Column::SiteId.eq(s)),
        None => q.filter(plugin_enablement::Column::SiteId.is_null()),
    };
    q.exec(&txn).await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "plugin.disable",
            target_type: "Plugin",
            target_id: Some(p.id),
            before: Some(&json!({ "clientId": place.client_id, "siteId": place.site_id })),
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(p)
}

pub async fn delete(plugins: &Plugins, who: &Principal, id: i64) -> ApiResult<()> {
    who.require(Action::ManagePlugins)?;
    let p = get(plugins, who, id).await?;
    let txn = crate::db::begin_write(&plugins.db).await?;
    plugin::Entity::delete_by_id(p.id).exec(&txn).await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "plugin.delete",
            target_type: "Plugin",
            target_id: Some(p.id),
            before: Some(&summary(&p)),
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// The client and site that contain the scope (none for the tenant).
async fn scope_place(plugins: &Plugins, filter: &Filter) -> ApiResult<(Option<i64>, Option<i64>)> {
    use entities::{battery, bms, zone};
    let db = &plugins.db;
    Ok(match filter.level_id() {
        None => (None, None),
        Some((Kind::Client, id)) => (Some(id), None),
        Some((Kind::Site, id)) => {
            let s = site::Entity::find_by_id(id).one(db).await?;
            (s.map(|s| s.client_id), Some(id))
        }
        Some((Kind::Zone, id)) => {
            let z = zone::Entity::find_by_id(id).one(db).await?;
            (z.as_ref().map(|z| z.client_id), z.map(|z| z.site_id))
        }
        Some((Kind::Bms, id)) => {
            let b = bms::Entity::find_by_id(id).one(db).await?;
            (b.as_ref().map(|b| b.client_id), b.map(|b| b.site_id))
        }
        Some((Kind::Battery, id)) => {
            let b = battery::Entity::find_by_id(id).one(db).await?;
            (b.as_ref().map(|b| b.client_id), b.map(|b| b.site_id))
        }
    })
}

/// Plugins of `world` enabled for a place that contains the scope, newest
/// version of each name.
pub(crate) async fn enabled(
    plugins: &Plugins,
    who: &Principal,
    filter: &Filter,
    world: World,
) -> ApiResult<Vec<plugin::Model>> {
    let (client, site) = scope_place(plugins, filter).await?;
    let rows = plugin_enablement::Entity::find()
        .filter(plugin_enablement::Column::TenantId.eq(who.tenant_id))
        .all(&plugins.db)
        .await?;
    let applies = |e: &plugin_enablement::Model| match (e.client_id, e.site_id) {
        (None, None) => true,
        (Some(c), None) => client == Some(c),
        (_, Some(s)) => site == Some(s),
    };
    let ids: Vec<i64> = rows
        .iter()
        .filter(|e| applies(e))
        .map(|e| e.plugin_id)
        .collect();
    let mut found = plugin::Entity::find()
        .filter(plugin::Column::TenantId.eq(who.tenant_id))
        .filter(plugin::Column::Id.is_in(ids))
        .filter(plugin::Column::Kind.eq(world.as_str()))
        .order_by_asc(plugin::Column::Name)
        .order_by_desc(plugin::Column::CreatedAt)
        .all(&plugins.db)
        .await?;
    found.dedup_by(|a, b| a.name == b.name);
    Ok(found)
}
