//! KPI values computed on a schedule and kept as history: at each slot of
//! `plugins.kpi_schedule`, every KPI plugin runs for every place it is
//! enabled at (tenant, client or site) over the `kpi_window_hours` before the
//! slot; its values are stored and read back by `kpiHistory`.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use entities::{kpi_value, plugin, plugin_enablement};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::Plugins;
use super::catalog::{self, Place};
use super::runner;
use super::sandbox::World;
use crate::auth::{Action, Principal};
use crate::error::ApiResult;
use crate::hierarchy::service::find_scoped;
use crate::ids::{self, Kind};
use crate::telemetry::live::Filter;

/// What one slot did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlotReport {
    /// Plugin runs (one per plugin and place).
    pub runs: usize,
    /// Runs that failed (logged with the plugin, tenant and code).
    pub failed: usize,
    /// Values stored.
    pub stored: usize,
}

/// Runs every enabled KPI plugin for the period ending at `slot` and stores
/// what they computed; values older than the retention are dropped.
pub async fn run_slot(host: &Plugins, slot: DateTime<Utc>) -> ApiResult<SlotReport> {
    let db = &host.db;
    let period = (
        slot - Duration::hours(i64::from(host.config.kpi_window_hours.max(1))),
        slot,
    );
    let places = plugin_enablement::Entity::find()
        .order_by_asc(plugin_enablement::Column::Id)
        .all(db)
        .await?;
    let ids: Vec<i64> = places.iter().map(|e| e.plugin_id).collect();
    let kpi_plugins: std::collections::HashMap<i64, plugin::Model> = plugin::Entity::find()
        .filter(plugin::Column::Id.is_in(ids))
        .filter(plugin::Column::Kind.eq(World::Kpi.as_str()))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let mut report = SlotReport::default();
    // A battery's value is stored once per plugin, whatever the places.
    let mut seen: HashSet<(i64, i64, String)> = HashSet::new();
    let now = crate::clock::now();
    for e in &places {
        let Some(p) = kpi_plugins.get(&e.plugin_id) else {
            continue;
        };
        let place = Place {
            client_id: e.client_id,
            site_id: e.site_id,
        };
        let who = Principal::operator(e.tenant_id, "scheduler");
        let filter = Filter::at(who.clone(), place.level());
        report.runs += 1;
        let call = match runner::compute(host, &who, p, &filter, period).await {
            Ok(call) => call,
            Err(err) => {
                tracing::warn!(plugin = %p.name, tenant = e.tenant_id, %err, "scheduled KPI run refused");
                report.failed += 1;
                continue;
            }
        };
        let Ok(values) = call.result else {
            report.failed += 1;
            continue;
        };
        let in_scope: HashSet<i64> = filter
            .batteries()
            .select_only()
            .column(entities::battery::Column::Id)
            .into_tuple()
            .all(db)
            .await?
            .into_iter()
            .collect();
        let mut rows = Vec::new();
        for v in values {
            let battery_id = match &v.battery {
                None => None,
                Some(gid) => match ids::decode(Kind::Battery, gid) {
                    Ok(b) if in_scope.contains(&b) => Some(b),
                    _ => {
                        tracing::warn!(plugin = %p.name, tenant = e.tenant_id, battery = %gid,
                            "a scheduled KPI value names a battery outside its scope; dropped");
                        continue;
                    }
                },
            };
            if let Some(b) = battery_id
                && !seen.insert((p.id, b, v.name.clone()))
            {
                continue;
            }
            rows.push(kpi_value::ActiveModel {
                tenant_id: sea_orm::Set(e.tenant_id),
                plugin_name: sea_orm::Set(p.name.clone()),
                plugin_version: sea_orm::Set(p.version.clone()),
                client_id: sea_orm::Set(if battery_id.is_some() {
                    None
                } else {
                    e.client_id
                }),
                site_id: sea_orm::Set(if battery_id.is_some() {
                    None
                } else {
                    e.site_id
                }),
                battery_id: sea_orm::Set(battery_id),
                name: sea_orm::Set(v.name),
                value: sea_orm::Set(v.value),
                period_from: sea_orm::Set(period.0),
                period_to: sea_orm::Set(period.1),
                computed_at: sea_orm::Set(now),
                ..Default::default()
            });
        }
        report.stored += rows.len();
        for chunk in rows.chunks(500) {
            kpi_value::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(db)
                .await?;
        }
    }
    let oldest = slot - Duration::days(i64::from(host.config.kpi_retention_days.max(1)));
    kpi_value::Entity::delete_many()
        .filter(kpi_value::Column::PeriodTo.lt(oldest))
        .exec(db)
        .await?;
    tracing::info!(?report, %slot, "scheduled KPIs computed");
    Ok(report)
}

/// Where the values asked for are: one battery's, or a place's own
/// (scope-wide) values.
#[derive(Debug, Clone, Copy)]
pub enum Of {
    Battery(i64),
    Place(Place),
}

/// Stored values of the KPI `name` whose period ends in `[from, to]`,
/// oldest first, within what the caller may see.
pub async fn query(
    host: &Plugins,
    who: &Principal,
    name: &str,
    of: Of,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    limit: u64,
) -> ApiResult<Vec<kpi_value::Model>> {
    who.require(Action::ReadFleet)?;
    let mut q = kpi_value::Entity::find()
        .filter(kpi_value::Column::TenantId.eq(who.tenant_id))
        .filter(kpi_value::Column::Name.eq(name))
        .filter(kpi_value::Column::PeriodTo.gte(from))
        .filter(kpi_value::Column::PeriodTo.lte(to));
    match of {
        Of::Battery(b) => {
            find_scoped::<entities::battery::Entity>(&host.db, who, b, Kind::Battery).await?;
            q = q.filter(kpi_value::Column::BatteryId.eq(b));
        }
        Of::Place(place) => {
            catalog::check_place(host, who, place).await?;
            q = q.filter(kpi_value::Column::BatteryId.is_null());
            q = match place.client_id {
                Some(c) => q.filter(kpi_value::Column::ClientId.eq(c)),
                None => q.filter(kpi_value::Column::ClientId.is_null()),
            };
            q = match place.site_id {
                Some(s) => q.filter(kpi_value::Column::SiteId.eq(s)),
                None => q.filter(kpi_value::Column::SiteId.is_null()),
            };
        }
    }
    Ok(q.order_by_asc(kpi_value::Column::PeriodTo)
        .order_by_asc(kpi_value::Column::Id)
        .limit(limit)
        .all(&host.db)
        .await?)
}
