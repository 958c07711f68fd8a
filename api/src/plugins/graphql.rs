//! GraphQL surface of plugins: `plugins`, `uploadPlugin` (multipart),
//! `enablePlugin` / `disablePlugin` / `deletePlugin`, `dryRunPlugin`, and
//! `kpis(scope, from, to)` which runs every KPI plugin enabled there.
//! A failing plugin is reported in its own `PluginRun.error`; it never
//! fails the request or other plugins.

use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, Object, Result, SimpleObject, Upload,
};
use chrono::{DateTime, Utc};
use entities::plugin;

use super::Plugins;
use super::catalog::{self, Place};
use super::reports::{self, ReportFormat};
use super::runner;
use super::sandbox::{LogLine, RunError, World};
use crate::auth::{Action, Principal};
use crate::error::ApiError;
use crate::ids::{self, Kind, Other};
use crate::telemetry::live::{Filter, LiveScope};

fn who<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data::<Principal>()
}

fn plugins<'a>(ctx: &Context<'a>) -> Result<&'a Plugins> {
    ctx.data::<Plugins>()
}

pub struct Plugin(pub plugin::Model);

#[derive(SimpleObject)]
pub struct KpiInfo {
    pub name: String,
    pub unit: String,
    pub description: String,
}

/// Where a plugin is enabled: both null for the whole tenant.
#[derive(SimpleObject)]
pub struct PluginPlace {
    pub client_id: Option<ID>,
    pub site_id: Option<ID>,
}

#[Object]
impl Plugin {
    async fn id(&self) -> ID {
        ids::encode_other(Other::Plugin, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn version(&self) -> &str {
        &self.0.version
    }
    /// `KPI` or `REPORT`.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// SHA-256 of the component: this version's identity.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    async fn size_bytes(&self) -> i64 {
        self.0.size_bytes
    }
    /// The `trackingbms:plugin` WIT version it implements.
    async fn wit_version(&self) -> &str {
        &self.0.wit_version
    }
    async fn kpis(&self) -> Vec<KpiInfo> {
        self.0.description["kpis"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| KpiInfo {
                name: k["name"].as_str().unwrap_or_default().to_owned(),
                unit: k["unit"].as_str().unwrap_or_default().to_owned(),
                description: k["description"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }
    /// `RAW`, `HOUR` or `DAY`: the data the plugin asks for.
    async fn resolution(&self) -> &str {
        self.0.description["resolution"].as_str().unwrap_or("RAW")
    }
    /// Longest time range the plugin accepts.
    async fn max_days(&self) -> i64 {
        runner::max_days(&self.0)
    }
    async fn enabled_in(&self, ctx: &Context<'_>) -> Result<Vec<PluginPlace>> {
        let rows = catalog::places(plugins(ctx)?, self.0.id)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows
            .into_iter()
            .map(|e| PluginPlace {
                client_id: e.client_id.map(|c| ids::encode(Kind::Client, c)),
                site_id: e.site_id.map(|s| ids::encode(Kind::Site, s)),
            })
            .collect())
    }
    async fn uploaded_by(&self) -> &str {
        &self.0.uploaded_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(SimpleObject)]
pub struct KpiValue {
    pub name: String,
    /// Null for a value of the whole scope.
    pub battery_id: Option<ID>,
    pub value: f64,
}

#[derive(SimpleObject)]
pub struct PluginLog {
    /// `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: String,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct PluginError {
    /// `PLUGIN_TIMEOUT`, `PLUGIN_OUT_OF_FUEL`, `PLUGIN_OUT_OF_MEMORY`,
    /// `PLUGIN_OUTPUT_TOO_LARGE`, `PLUGIN_INPUT_TOO_LARGE`, `PLUGIN_TRAPPED`,
    /// `PLUGIN_FAILED` (the plugin returned an error) or `PLUGIN_INVALID`.
    pub code: String,
    pub message: String,
}

/// One call of one plugin.
#[derive(SimpleObject)]
pub struct PluginRun {
    pub plugin_id: ID,
    pub name: String,
    pub version: String,
    pub values: Vec<KpiValue>,
    pub logs: Vec<PluginLog>,
    pub elapsed_ms: f64,
    pub fuel_used: f64,
    /// Set when the call failed; `values` is then empty.
    pub error: Option<PluginError>,
}

/// A generated report, ready for download.
#[derive(SimpleObject)]
pub struct ReportDownload {
    /// Path of the download (`/reports/<token>`); anyone with the link can
    /// fetch the report until `expiresAt`.
    pub url: String,
    pub content_type: String,
    pub file_name: String,
    pub size_bytes: i64,
    pub expires_at: DateTime<Utc>,
    pub logs: Vec<PluginLog>,
    pub elapsed_ms: f64,
}

impl ReportDownload {
    pub fn of(row: &entities::report_artifact::Model, token: &str) -> Self {
        Self {
            url: format!("/reports/{token}"),
            content_type: row.content_type.clone(),
            file_name: row.file_name.clone(),
            size_bytes: i64::try_from(row.content.len()).unwrap_or(i64::MAX),
            expires_at: row.expires_at,
            logs: Vec::new(),
            elapsed_ms: 0.0,
        }
    }
}

/// A failed plugin call as a GraphQL error with the call's code.
pub(crate) fn plugin_error(e: &RunError) -> async_graphql::Error {
    async_graphql::Error::new(e.to_string()).extend_with(|_, x| x.set("code", e.code()))
}

#[derive(InputObject, Default, Clone)]
pub struct PluginPlaceInput {
    pub client_id: Option<ID>,
    pub site_id: Option<ID>,
}

impl PluginPlaceInput {
    pub(crate) fn place(&self) -> Result<Place> {
        let decode = |kind, id: &Option<ID>| {
            id.as_ref()
                .map(|i| ids::decode(kind, i))
                .transpose()
                .map_err(|e| e.extend())
        };
        Ok(Place {
            client_id: decode(Kind::Client, &self.client_id)?,
            site_id: decode(Kind::Site, &self.site_id)?,
        })
    }
}

fn level_name(l: super::bindings::Level) -> &'static str {
    use super::bindings::Level;
    match l {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

fn logs_of(lines: Vec<LogLine>) -> Vec<PluginLog> {
    lines
        .into_iter()
        .map(|LogLine { level, message }| PluginLog {
            level: level_name(level).into(),
            message,
        })
        .collect()
}

/// Runs one KPI plugin over `[from, to)` of the scope.
async fn run(
    ctx: &Context<'_>,
    p: plugin::Model,
    filter: &Filter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<PluginRun> {
    let report = runner::compute(plugins(ctx)?, who(ctx)?, &p, filter, (from, to))
        .await
        .map_err(|e| e.extend())?;
    let logs = logs_of(report.logs);
    let (values, error) = match report.result {
        Ok(values) => (
            values
                .into_iter()
                .map(|v| KpiValue {
                    name: v.name,
                    battery_id: v.battery.map(ID),
                    value: v.value,
                })
                .collect(),
            None,
        ),
        Err(e) => (
            Vec::new(),
            Some(PluginError {
                code: e.code().into(),
                message: e.to_string(),
            }),
        ),
    };
    Ok(PluginRun {
        plugin_id: ids::encode_other(Other::Plugin, p.id),
        name: p.name,
        version: p.version,
        values,
        logs,
        elapsed_ms: report.elapsed.as_secs_f64() * 1e3,
        fuel_used: report.fuel_used as f64,
        error,
    })
}

#[derive(Default)]
pub struct PluginQuery;

#[Object]
impl PluginQuery {
    /// The tenant's plugins (every uploaded version).
    async fn plugins(&self, ctx: &Context<'_>) -> Result<Vec<Plugin>> {
        let rows = catalog::list(plugins(ctx)?, who(ctx)?)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows.into_iter().map(Plugin).collect())
    }

    /// Runs every KPI plugin enabled for a place containing the scope.
    async fn kpis(
        &self,
        ctx: &Context<'_>,
        scope: Option<LiveScope>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PluginRun>> {
        let who = who(ctx)?;
        who.require(Action::ReadFleet).map_err(|e| e.extend())?;
        let host = plugins(ctx)?;
        let filter = Filter::new(&host.db, who.clone(), scope.unwrap_or_default()).await?;
        let enabled = catalog::enabled(host, who, &filter, World::Kpi)
            .await
            .map_err(|e| e.extend())?;
        let mut runs = Vec::new();
        for p in enabled {
            runs.push(run(ctx, p, &filter, from, to).await?);
        }
        Ok(runs)
    }
}

#[derive(Default)]
pub struct PluginMutation;

#[Object]
impl PluginMutation {
    /// Uploads a component (multipart request, field `file`). It must
    /// implement the `kpi` or `report` world of `plugins/wit/`.
    async fn upload_plugin(&self, ctx: &Context<'_>, file: Upload) -> Result<Plugin> {
        let host = plugins(ctx)?;
        let bytes = crate::graphql::read_upload(ctx, &file, host.config.max_component_bytes)?;
        catalog::upload(host, who(ctx)?, bytes)
            .await
            .map(Plugin)
            .map_err(|e| e.extend())
    }

    /// Enables a plugin for the tenant (no scope), a client or a site.
    async fn enable_plugin(
        &self,
        ctx: &Context<'_>,
        id: ID,
        scope: Option<PluginPlaceInput>,
    ) -> Result<Plugin> {
        let pid = ids::decode_other(Other::Plugin, &id).map_err(|e| e.extend())?;
        let place = scope.unwrap_or_default().place()?;
        let host = plugins(ctx)?;
        catalog::enable(host, who(ctx)?, pid, place)
            .await
            .map(Plugin)
            .map_err(|e| e.extend())
    }

    async fn disable_plugin(
        &self,
        ctx: &Context<'_>,
        id: ID,
        scope: Option<PluginPlaceInput>,
    ) -> Result<Plugin> {
        let pid = ids::decode_other(Other::Plugin, &id).map_err(|e| e.extend())?;
        let place = scope.unwrap_or_default().place()?;
        let host = plugins(ctx)?;
        catalog::disable(host, who(ctx)?, pid, place)
            .await
            .map(Plugin)
            .map_err(|e| e.extend())
    }

    /// Deletes a plugin version and where it was enabled.
    async fn delete_plugin(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let pid = ids::decode_other(Other::Plugin, &id).map_err(|e| e.extend())?;
        catalog::delete(plugins(ctx)?, who(ctx)?, pid)
            .await
            .map_err(|e| e.extend())?;
        Ok(true)
    }

    /// Runs a report plugin over a scope and period and returns a download
    /// link. The plugin must be enabled for a place containing the scope
    /// (plugin managers may run any). A failed run is an error with the
    /// plugin's code (`PLUGIN_TIMEOUT`, …).
    async fn generate_report(
        &self,
        ctx: &Context<'_>,
        plugin_id: ID,
        scope: Option<LiveScope>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[graphql(default)] format: ReportFormat,
    ) -> Result<ReportDownload> {
        let who = who(ctx)?;
        who.require(Action::ReadFleet).map_err(|e| e.extend())?;
        let pid = ids::decode_other(Other::Plugin, &plugin_id).map_err(|e| e.extend())?;
        let host = plugins(ctx)?;
        let p = catalog::get(host, who, pid).await.map_err(|e| e.extend())?;
        if p.kind != World::Report.as_str() {
            return Err(ApiError::validation("pluginId", "not a report plugin").extend());
        }
        let filter = Filter::new(&host.db, who.clone(), scope.unwrap_or_default()).await?;
        if who.require(Action::ManagePlugins).is_err() {
            let enabled = catalog::enabled(host, who, &filter, World::Report)
                .await
                .map_err(|e| e.extend())?;
            if !enabled.iter().any(|e| e.id == p.id) {
                return Err(ApiError::Forbidden(format!(
                    "report plugin '{}' is not enabled for this scope",
                    p.name
                ))
                .extend());
            }
        }
        let report = runner::render(host, who, &p, &filter, (from, to), format)
            .await
            .map_err(|e| e.extend())?;
        let elapsed_ms = report.elapsed.as_secs_f64() * 1e3;
        let logs = logs_of(report.logs);
        let rendered = report.result.map_err(|e| plugin_error(&e))?;
        let (row, token) = reports::store(
            &host.db,
            who,
            p.id,
            filter.describe(),
            rendered,
            reports::Keep::Link,
        )
        .await
        .map_err(|e| e.extend())?;
        let mut download = ReportDownload::of(&row, &token);
        download.logs = logs;
        download.elapsed_ms = elapsed_ms;
        Ok(download)
    }

    /// Runs a KPI plugin once, enabled or not, and returns its values, logs,
    /// time and fuel.
    async fn dry_run_plugin(
        &self,
        ctx: &Context<'_>,
        id: ID,
        scope: Option<LiveScope>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<PluginRun> {
        let who = who(ctx)?;
        who.require(Action::ManagePlugins).map_err(|e| e.extend())?;
        let pid = ids::decode_other(Other::Plugin, &id).map_err(|e| e.extend())?;
        let host = plugins(ctx)?;
        let p = catalog::get(host, who, pid).await.map_err(|e| e.extend())?;
        if p.kind != "KPI" {
            return Err(ApiError::validation("id", "dry runs are for KPI plugins").extend());
        }
        let filter = Filter::new(&host.db, who.clone(), scope.unwrap_or_default()).await?;
        run(ctx, p, &filter, from, to).await
    }
}
