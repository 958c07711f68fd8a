//! Report schedules: a report plugin run on a cron schedule (UTC) over a
//! scope and the `period_days` before each slot, in a format, for
//! recipients. Each run's document is kept `report_retention_days` as an
//! artifact of the schedule; delivery to the recipients (e-mail, webhook)
//! belongs to alerting, which reads the artifacts. Changes are audited.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use croner::Cron;
use entities::{report_artifact, report_schedule};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;

use super::Plugins;
use super::catalog;
use super::reports::{self, Keep, ReportFormat};
use super::runner;
use super::sandbox::{RunError, World};
use crate::audit::{self, Change};
use crate::auth::{Action, Principal};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Kind, Other};
use crate::telemetry::live::Filter;

/// Most recipients a schedule may have.
pub const MAX_RECIPIENTS: usize = 20;
/// Longest period a report may cover.
pub const MAX_PERIOD_DAYS: i32 = 366;

/// A cron expression (five fields, or six with seconds first), checked.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    Cron::from_str(expr.trim()).map_err(|e| format!("'{expr}' is not a cron expression: {e}"))
}

/// The first slot of `cron` strictly after `t`.
pub fn next_after(cron: &Cron, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&t, false).ok()
}

/// What a schedule is made of, as the caller gives it (ids decoded).
#[derive(Debug, Clone)]
pub struct ScheduleInput {
    pub plugin_id: i64,
    pub name: String,
    pub cron: String,
    /// The scope: a fleet object (any level) or none for the tenant.
    pub scope: Option<(Kind, i64)>,
    pub format: ReportFormat,
    pub period_days: i32,
    pub recipients: Vec<String>,
    pub enabled: bool,
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!(
        "ReportSchedule {}",
        ids::encode_other(Other::ReportSchedule, id).0
    ))
}

fn is_recipient(r: &str) -> bool {
    let email = || {
        r.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.starts_with('.') && !host.ends_with('.')
        }) && !r.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
    };
    let webhook =
        || url::Url::parse(r).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some());
    r.len() <= 500 && (email() || webhook())
}

/// Checks the input against the rules; returns the next slot from `now`.
async fn check(
    host: &Plugins,
    who: &Principal,
    input: &ScheduleInput,
    now: DateTime<Utc>,
) -> ApiResult<DateTime<Utc>> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "1 to 200 characters"));
    }
    // The schedule runs with the tenant's view of its scope: that scope
    // must be one the caller sees whole.
    if input.scope.is_none() && !who.tenant_wide() {
        return Err(ApiError::Forbidden(
            "only a caller who sees the whole tenant can schedule a report for all of it".into(),
        ));
    }
    let cron = parse_cron(&input.cron).map_err(|m| ApiError::validation("cron", m))?;
    let next = next_after(&cron, now)
        .ok_or_else(|| ApiError::validation("cron", "this expression never runs again"))?;
    if let Some(after) = next_after(&cron, next)
        && after - next < Duration::hours(1)
    {
        return Err(ApiError::validation(
            "cron",
            "a report may run at most once an hour",
        ));
    }
    let p = catalog::get(host, who, input.plugin_id).await?;
    if p.kind != World::Report.as_str() {
        return Err(ApiError::validation("pluginId", "not a report plugin"));
    }
    let max = runner::max_days(&p).min(i64::from(MAX_PERIOD_DAYS));
    if input.period_days < 1 || i64::from(input.period_days) > max {
        return Err(ApiError::validation(
            "periodDays",
            format!(
                "1 to {max} days (plugin '{}' accepts at most {max})",
                p.name
            ),
        ));
    }
    if input.recipients.len() > MAX_RECIPIENTS {
        return Err(ApiError::validation(
            "recipients",
            format!("at most {MAX_RECIPIENTS}"),
        ));
    }
    if let Some(bad) = input.recipients.iter().find(|r| !is_recipient(r)) {
        return Err(ApiError::validation(
            "recipients",
            format!("'{bad}' is neither an e-mail address nor an https:// webhook URL"),
        ));
    }
    Ok(next)
}

fn scope_json(scope: Option<(Kind, i64)>) -> serde_json::Value {
    match scope {
        Some((kind, id)) => json!({ "id": ids::encode(kind, id).0 }),
        None => json!({}),
    }
}

/// The stored scope of a schedule.
pub fn scope_of(s: &report_schedule::Model) -> Option<(Kind, i64)> {
    s.scope["id"]
        .as_str()
        .and_then(|gid| ids::decode_any(gid).ok())
}

/// Records a change of a schedule, in the change's transaction.
async fn audited(
    txn: &sea_orm::DatabaseTransaction,
    who: &Principal,
    action: &str,
    id: i64,
    before: Option<&report_schedule::Model>,
    after: Option<&report_schedule::Model>,
) -> ApiResult<()> {
    audit::record(
        txn,
        who,
        Change {
            action,
            target_type: "ReportSchedule",
            target_id: Some(id),
            before,
            after,
        },
    )
    .await
}

pub async fn create(
    host: &Plugins,
    who: &Principal,
    input: ScheduleInput,
) -> ApiResult<report_schedule::Model> {
    who.require(Action::ManagePlugins)?;
    let now = crate::clock::now();
    let next = check(host, who, &input, now).await?;
    let txn = crate::db::begin_write(&host.db).await?;
    let row = report_schedule::ActiveModel {
        tenant_id: Set(who.tenant_id),
        plugin_id: Set(input.plugin_id),
        name: Set(input.name.trim().to_owned()),
        cron: Set(input.cron.trim().to_owned()),
        scope: Set(scope_json(input.scope)),
        format: Set(input.format.as_str().to_owned()),
        period_days: Set(input.period_days),
        recipients: Set(json!(input.recipients)),
        enabled: Set(input.enabled),
        created_by: Set(who.actor.clone()),
        created_at: Set(now),
        next_run_at: Set(next),
        last_run_at: Set(None),
        last_error: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audited(
        &txn,
        who,
        "report_schedule.create",
        row.id,
        None,
        Some(&row),
    )
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// One of the tenant's schedules, if its scope is within the caller's.
pub async fn get(host: &Plugins, who: &Principal, id: i64) -> ApiResult<report_schedule::Model> {
    let row = report_schedule::Entity::find_by_id(id)
        .filter(report_schedule::Column::TenantId.eq(who.tenant_id))
        .one(&host.db)
        .await?
        .ok_or_else(|| not_found(id))?;
    if visible(host, who, &row).await {
        Ok(row)
    } else {
        Err(not_found(id))
    }
}

/// Whether the caller sees the whole scope of the schedule.
async fn visible(host: &Plugins, who: &Principal, s: &report_schedule::Model) -> bool {
    match scope_of(s) {
        None => who.tenant_wide(),
        Some((kind, id)) => {
            let scope = crate::telemetry::live::LiveScope::of(kind, id);
            Filter::new(&host.db, who.clone(), scope).await.is_ok()
        }
    }
}

pub async fn update(
    host: &Plugins,
    who: &Principal,
    id: i64,
    input: ScheduleInput,
) -> ApiResult<report_schedule::Model> {
    who.require(Action::ManagePlugins)?;
    let before = get(host, who, id).await?;
    let next = check(host, who, &input, crate::clock::now()).await?;
    let mut row: report_schedule::ActiveModel = before.clone().into();
    row.plugin_id = Set(input.plugin_id);
    row.name = Set(input.name.trim().to_owned());
    row.cron = Set(input.cron.trim().to_owned());
    row.scope = Set(scope_json(input.scope));
    row.format = Set(input.format.as_str().to_owned());
    row.period_days = Set(input.period_days);
    row.recipients = Set(json!(input.recipients));
    row.enabled = Set(input.enabled);
    row.next_run_at = Set(next);
    let txn = crate::db::begin_write(&host.db).await?;
    let after = row.update(&txn).await?;
    audited(
        &txn,
        who,
        "report_schedule.update",
        id,
        Some(&before),
        Some(&after),
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// Deletes a schedule and the reports it kept.
pub async fn delete(host: &Plugins, who: &Principal, id: i64) -> ApiResult<()> {
    who.require(Action::ManagePlugins)?;
    let before = get(host, who, id).await?;
    let txn = crate::db::begin_write(&host.db).await?;
    report_artifact::Entity::delete_many()
        .filter(report_artifact::Column::ScheduleId.eq(id))
        .exec(&txn)
        .await?;
    report_schedule::Entity::delete_by_id(id).exec(&txn).await?;
    audited(&txn, who, "report_schedule.delete", id, Some(&before), None).await?;
    txn.commit().await?;
    Ok(())
}

/// The tenant's schedules whose scope the caller sees (recipients are
/// personal data: plugin managers only).
pub async fn list(host: &Plugins, who: &Principal) -> ApiResult<Vec<report_schedule::Model>> {
    who.require(Action::ManagePlugins)?;
    let rows = report_schedule::Entity::find()
        .filter(report_schedule::Column::TenantId.eq(who.tenant_id))
        .order_by_asc(report_schedule::Column::Id)
        .all(&host.db)
        .await?;
    let mut out = Vec::new();
    for r in rows {
        if visible(host, who, &r).await {
            out.push(r);
        }
    }
    Ok(out)
}

/// The reports a schedule kept, newest first.
pub async fn artifacts(
    host: &Plugins,
    schedule_id: i64,
    limit: u64,
) -> ApiResult<Vec<report_artifact::Model>> {
    Ok(report_artifact::Entity::find()
        .filter(report_artifact::Column::ScheduleId.eq(schedule_id))
        .filter(report_artifact::Column::ExpiresAt.gt(crate::clock::now()))
        .order_by_desc(report_artifact::Column::CreatedAt)
        .order_by_desc(report_artifact::Column::Id)
        .limit(limit)
        .all(&host.db)
        .await?)
}

/// A new download link for a report a schedule kept.
pub async fn link(
    host: &Plugins,
    who: &Principal,
    artifact_id: i64,
) -> ApiResult<(report_artifact::Model, String)> {
    let missing = || {
        ApiError::NotFound(format!(
            "ReportArtifact {}",
            ids::encode_other(Other::ReportArtifact, artifact_id).0
        ))
    };
    let row = report_artifact::Entity::find_by_id(artifact_id)
        .filter(report_artifact::Column::TenantId.eq(who.tenant_id))
        .filter(report_artifact::Column::ExpiresAt.gt(crate::clock::now()))
        .one(&host.db)
        .await?
        .ok_or_else(missing)?;
    let schedule = row.schedule_id.ok_or_else(missing)?;
    get(host, who, schedule).await.map_err(|_| missing())?;
    reports::new_link(&host.db, row).await
}

/// Runs a schedule for the period ending at `slot`, keeps the report and
/// records the outcome on the schedule.
pub async fn execute(
    host: &Plugins,
    s: &report_schedule::Model,
    slot: DateTime<Utc>,
) -> ApiResult<Result<report_artifact::Model, RunError>> {
    let who = Principal::operator(s.tenant_id, format!("schedule:{}", s.id));
    let outcome = produce(host, &who, s, slot).await;
    let error = match &outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("{}: {e}", e.code())),
        Err(e) => Some(format!("{}: {e}", e.code().as_str())),
    };
    if let Some(message) = &error {
        tracing::warn!(schedule = s.id, tenant = s.tenant_id, error = %message, "scheduled report failed");
    }
    report_schedule::Entity::update_many()
        .col_expr(
            report_schedule::Column::LastRunAt,
            sea_orm::sea_query::Expr::value(crate::clock::now()),
        )
        .col_expr(
            report_schedule::Column::LastError,
            sea_orm::sea_query::Expr::value(error),
        )
        .filter(report_schedule::Column::Id.eq(s.id))
        .exec(&host.db)
        .await?;
    outcome
}

async fn produce(
    host: &Plugins,
    who: &Principal,
    s: &report_schedule::Model,
    slot: DateTime<Utc>,
) -> ApiResult<Result<report_artifact::Model, RunError>> {
    let p = catalog::get(host, who, s.plugin_id).await?;
    let format = ReportFormat::parse(&s.format).unwrap_or_default();
    let filter = Filter::at(who.clone(), scope_of(s));
    let period = (slot - Duration::days(i64::from(s.period_days)), slot);
    let call = runner::render(host, who, &p, &filter, period, format).await?;
    let rendered = match call.result {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let keep = Keep::Schedule {
        id: s.id,
        days: host.config.report_retention_days.max(1),
    };
    let (row, _) = reports::store(&host.db, who, p.id, filter.describe(), rendered, keep).await?;
    Ok(Ok(row))
}
