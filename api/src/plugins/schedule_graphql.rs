//! GraphQL surface of scheduled plugin work: `kpiHistory` (values the KPI
//! schedule stored), report schedules (`reportSchedules`,
//! `createReportSchedule`, `updateReportSchedule`, `deleteReportSchedule`,
//! `runReportSchedule`) and links to the reports they kept
//! (`reportArtifactLink`).

use async_graphql::{
    ComplexObject, Context, ErrorExtensions, ID, InputObject, Object, Result, SimpleObject,
};
use chrono::{DateTime, Duration, Utc};
use entities::{kpi_value, report_artifact, report_schedule};

use super::Plugins;
use super::graphql::{PluginPlaceInput, ReportDownload};
use super::history::{self, Of};
use super::reports::ReportFormat;
use super::schedules::{self, ScheduleInput};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::ids::{self, Kind, Other};
use crate::telemetry::graphql::{page_size, time_range};
use crate::telemetry::live::{Filter, LiveScope};

/// Most points one `kpiHistory` call returns.
const MAX_POINTS: usize = 10_000;

fn who<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data::<Principal>()
}

fn host<'a>(ctx: &Context<'a>) -> Result<&'a Plugins> {
    ctx.data::<Plugins>()
}

/// One stored KPI value.
#[derive(SimpleObject)]
pub struct KpiPoint {
    pub name: String,
    /// Null for a value of the place (tenant, client or site).
    pub battery_id: Option<ID>,
    pub value: f64,
    pub period_from: DateTime<Utc>,
    pub period_to: DateTime<Utc>,
    pub computed_at: DateTime<Utc>,
    pub plugin_name: String,
    pub plugin_version: String,
}

impl From<kpi_value::Model> for KpiPoint {
    fn from(v: kpi_value::Model) -> Self {
        Self {
            name: v.name,
            battery_id: v.battery_id.map(|b| ids::encode(Kind::Battery, b)),
            value: v.value,
            period_from: v.period_from,
            period_to: v.period_to,
            computed_at: v.computed_at,
            plugin_name: v.plugin_name,
            plugin_version: v.plugin_version,
        }
    }
}

/// A report a schedule kept.
#[derive(SimpleObject)]
pub struct ReportArtifact {
    pub id: ID,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub created_at: DateTime<Utc>,
    /// The report is deleted then; so are its links.
    pub expires_at: DateTime<Utc>,
}

impl From<report_artifact::Model> for ReportArtifact {
    fn from(a: report_artifact::Model) -> Self {
        Self {
            id: ids::encode_other(Other::ReportArtifact, a.id),
            size_bytes: i64::try_from(a.content.len()).unwrap_or(i64::MAX),
            file_name: a.file_name,
            content_type: a.content_type,
            created_at: a.created_at,
            expires_at: a.expires_at,
        }
    }
}

/// A report produced on a schedule.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct ReportSchedule {
    pub id: ID,
    pub name: String,
    pub plugin_id: ID,
    /// Cron expression, UTC (five fields, or six with seconds first).
    pub cron: String,
    /// `tenant`, or the level and global id of the scope (`site:U2l0ZTox`).
    pub scope: String,
    pub format: ReportFormat,
    /// Each run covers the days before its slot.
    pub period_days: i32,
    /// E-mail addresses and https:// webhooks the report is for.
    pub recipients: Vec<String>,
    pub enabled: bool,
    pub next_run_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// Why the last run failed (`PLUGIN_TIMEOUT: …`); null when it worked.
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[graphql(skip)]
    row_id: i64,
}

impl From<report_schedule::Model> for ReportSchedule {
    fn from(s: report_schedule::Model) -> Self {
        let scope = ids::describe_level(schedules::scope_of(&s));
        Self {
            id: ids::encode_other(Other::ReportSchedule, s.id),
            row_id: s.id,
            name: s.name,
            plugin_id: ids::encode_other(Other::Plugin, s.plugin_id),
            cron: s.cron,
            scope,
            format: ReportFormat::parse(&s.format).unwrap_or_default(),
            period_days: s.period_days,
            recipients: s
                .recipients
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            enabled: s.enabled,
            next_run_at: s.next_run_at,
            last_run_at: s.last_run_at,
            last_error: s.last_error,
            created_by: s.created_by,
            created_at: s.created_at,
        }
    }
}

#[ComplexObject]
impl ReportSchedule {
    /// The reports it kept, newest first.
    async fn artifacts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<ReportArtifact>> {
        let n = page_size(Some(first), 100).map_err(|e| e.extend())?;
        let rows = schedules::artifacts(host(ctx)?, self.row_id, n as u64)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows.into_iter().map(ReportArtifact::from).collect())
    }
}

#[derive(InputObject)]
pub struct ReportScheduleInput {
    /// A report plugin of the tenant.
    pub plugin_id: ID,
    pub name: String,
    /// Cron expression, UTC: `0 6 1 * *` is 06:00 on the 1st of each month.
    /// At most one run an hour.
    pub cron: String,
    /// The fleet the report covers (none: all of the tenant).
    pub scope: Option<LiveScope>,
    #[graphql(default)]
    pub format: ReportFormat,
    /// Days before each slot the report covers.
    #[graphql(default = 30)]
    pub period_days: i32,
    /// E-mail addresses and https:// webhook URLs (at most 20).
    #[graphql(default)]
    pub recipients: Vec<String>,
    #[graphql(default = true)]
    pub enabled: bool,
}

impl ReportScheduleInput {
    async fn decode(self, ctx: &Context<'_>) -> Result<ScheduleInput> {
        let plugin_id =
            ids::decode_other(Other::Plugin, &self.plugin_id).map_err(|e| e.extend())?;
        let filter = Filter::new(
            &host(ctx)?.db,
            who(ctx)?.clone(),
            self.scope.unwrap_or_default(),
        )
        .await?;
        Ok(ScheduleInput {
            plugin_id,
            name: self.name,
            cron: self.cron,
            scope: filter.level_id(),
            format: self.format,
            period_days: self.period_days,
            recipients: self.recipients,
            enabled: self.enabled,
        })
    }
}

fn schedule_id(id: &ID) -> Result<i64> {
    ids::decode_other(Other::ReportSchedule, id).map_err(|e| e.extend())
}

#[derive(Default)]
pub struct ScheduleQuery;

#[Object]
impl ScheduleQuery {
    /// Values of the KPI `name` stored by the KPI schedule, oldest first:
    /// one battery's (`batteryId`), or else those of the place `scope`
    /// (a client, a site, or neither for the tenant) the plugin ran for.
    /// Periods ending in `[from, to]` (default: the last 30 days).
    #[allow(clippy::too_many_arguments)] // GraphQL arguments, one each.
    async fn kpi_history(
        &self,
        ctx: &Context<'_>,
        name: String,
        scope: Option<PluginPlaceInput>,
        battery_id: Option<ID>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
    ) -> Result<Vec<KpiPoint>> {
        let period = time_range(from, to, Duration::days(30)).map_err(|e| e.extend())?;
        let limit = page_size(first, MAX_POINTS).map_err(|e| e.extend())?;
        let of = match (battery_id, scope) {
            (Some(_), Some(_)) => {
                return Err(
                    ApiError::validation("batteryId", "give batteryId or scope, not both").extend(),
                );
            }
            (Some(b), None) => Of::Battery(ids::decode(Kind::Battery, &b).map_err(|e| e.extend())?),
            (None, scope) => Of::Place(scope.unwrap_or_default().place()?),
        };
        let rows = history::query(host(ctx)?, who(ctx)?, &name, of, period, limit as u64)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows.into_iter().map(KpiPoint::from).collect())
    }

    /// Report schedules of the tenant within your scope (plugin managers).
    async fn report_schedules(&self, ctx: &Context<'_>) -> Result<Vec<ReportSchedule>> {
        let rows = schedules::list(host(ctx)?, who(ctx)?)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows.into_iter().map(ReportSchedule::from).collect())
    }
}

#[derive(Default)]
pub struct ScheduleMutation;

#[Object]
impl ScheduleMutation {
    async fn create_report_schedule(
        &self,
        ctx: &Context<'_>,
        input: ReportScheduleInput,
    ) -> Result<ReportSchedule> {
        let input = input.decode(ctx).await?;
        schedules::create(host(ctx)?, who(ctx)?, input)
            .await
            .map(ReportSchedule::from)
            .map_err(|e| e.extend())
    }

    async fn update_report_schedule(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: ReportScheduleInput,
    ) -> Result<ReportSchedule> {
        let id = schedule_id(&id)?;
        let input = input.decode(ctx).await?;
        schedules::update(host(ctx)?, who(ctx)?, id, input)
            .await
            .map(ReportSchedule::from)
            .map_err(|e| e.extend())
    }

    /// Deletes a schedule and the reports it kept.
    async fn delete_report_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        schedules::delete(host(ctx)?, who(ctx)?, schedule_id(&id)?)
            .await
            .map_err(|e| e.extend())?;
        Ok(true)
    }

    /// Runs a schedule now, for the period ending now (its next slot does
    /// not move). A failed run is an error with the plugin's code.
    async fn run_report_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<ReportArtifact> {
        let (host, who) = (host(ctx)?, who(ctx)?);
        who.require(crate::auth::Action::ManagePlugins)
            .map_err(|e| e.extend())?;
        let s = schedules::get(host, who, schedule_id(&id)?)
            .await
            .map_err(|e| e.extend())?;
        match schedules::execute(host, &s, crate::clock::now()).await {
            Ok(Ok(row)) => Ok(ReportArtifact::from(row)),
            Ok(Err(e)) => Err(super::graphql::plugin_error(&e)),
            Err(e) => Err(e.extend()),
        }
    }

    /// A download link for a report a schedule kept, valid until the report
    /// expires; earlier links to it stop working.
    async fn report_artifact_link(&self, ctx: &Context<'_>, id: ID) -> Result<ReportDownload> {
        let id = ids::decode_other(Other::ReportArtifact, &id).map_err(|e| e.extend())?;
        let (row, token) = schedules::link(host(ctx)?, who(ctx)?, id)
            .await
            .map_err(|e| e.extend())?;
        Ok(ReportDownload::of(&row, &token))
    }
}
