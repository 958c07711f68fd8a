//! One plugin call over a scope and period, for whoever asks: a GraphQL
//! caller, or the scheduler acting for a tenant. Checks the period against
//! what the plugin accepts, loads its input (an input over the limit is the
//! call's error, not the request's), and runs it on a blocking thread,
//! bounded by the call's limits.

use chrono::{DateTime, Utc};
use entities::plugin;

use super::Plugins;
use super::bindings::{Input, KpiValue, Resolution};
use super::reports::{self, ReportFormat};
use super::sandbox::{CallReport, Prepared, RunError};
use crate::auth::Principal;
use crate::config::PluginLimits;
use crate::error::{ApiError, ApiResult};
use crate::telemetry::live::Filter;

fn resolution_of(p: &plugin::Model) -> Resolution {
    match p.description["resolution"].as_str() {
        Some("HOUR") => Resolution::Hour,
        Some("DAY") => Resolution::Day,
        _ => Resolution::Raw,
    }
}

/// Longest period the plugin accepts, in days.
pub fn max_days(p: &plugin::Model) -> i64 {
    p.description["maxDays"].as_i64().unwrap_or(31)
}

async fn input_for(
    host: &Plugins,
    who: &Principal,
    p: &plugin::Model,
    filter: &Filter,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> ApiResult<(PluginLimits, Result<Input, RunError>)> {
    if to <= from {
        return Err(ApiError::validation("to", "must be after `from`"));
    }
    let max_days = max_days(p);
    if (to - from).num_days() > max_days {
        return Err(ApiError::validation(
            "from",
            format!("plugin '{}' accepts at most {max_days} days", p.name),
        ));
    }
    let limits = host.limits_for(who.tenant_id).await?;
    let loaded = super::inputs::load(
        &host.db,
        filter,
        from,
        to,
        resolution_of(p),
        limits.max_input_bytes,
    )
    .await;
    match loaded {
        Err(super::inputs::InputError::Db(e)) => Err(e),
        Err(super::inputs::InputError::Run(e)) => Ok((limits, Err(e))),
        Ok(input) => Ok((limits, Ok(input))),
    }
}

fn failed<T>(e: RunError) -> CallReport<T> {
    CallReport {
        result: Err(e),
        logs: Vec::new(),
        elapsed: std::time::Duration::ZERO,
        fuel_used: 0,
    }
}

/// Compiles (or finds) the plugin and runs `call` on a blocking thread: a
/// plugin call is CPU work, bounded by its own deadline.
async fn off_thread<T: Send + 'static>(
    host: &Plugins,
    p: &plugin::Model,
    input: Result<Input, RunError>,
    call: impl FnOnce(&super::Sandbox, &Prepared, &Input) -> CallReport<T> + Send + 'static,
) -> ApiResult<CallReport<T>> {
    let input = match input {
        Ok(i) => i,
        Err(e) => return Ok(failed(e)),
    };
    let sandbox = host.sandbox.clone();
    // The component's bytes are copied only when it must be compiled.
    let ready = sandbox
        .cached(&p.sha256)
        .ok_or_else(|| (p.sha256.clone(), p.component.clone()));
    tokio::task::spawn_blocking(move || {
        let prepared = match ready {
            Ok(prepared) => prepared,
            Err((sha, bytes)) => match sandbox.prepare(&sha, &bytes) {
                Ok(prepared) => prepared,
                Err(e) => return failed(e),
            },
        };
        call(&sandbox, &prepared, &input)
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("plugin task failed: {e}")))
}

fn log_failure<T>(report: &CallReport<T>, p: &plugin::Model, who: &Principal) {
    if let Err(e) = &report.result {
        tracing::warn!(plugin = %p.name, version = %p.version, tenant = who.tenant_id,
            code = e.code(), error = %e, "plugin call failed");
    }
}

/// Runs a KPI plugin over `[from, to)` of the scope.
pub(crate) async fn compute(
    host: &Plugins,
    who: &Principal,
    p: &plugin::Model,
    filter: &Filter,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> ApiResult<CallReport<Vec<KpiValue>>> {
    let (limits, input) = input_for(host, who, p, filter, period).await?;
    let report = off_thread(host, p, input, move |sandbox, prepared, input| {
        sandbox.compute(prepared, input, &limits)
    })
    .await?;
    log_failure(&report, p, who);
    Ok(report)
}

/// `(content type, file name, bytes)` of a report.
pub type Rendered = (String, String, Vec<u8>);

/// Runs a report plugin over `[from, to)` of the scope and converts its
/// document to `format`.
pub(crate) async fn render(
    host: &Plugins,
    who: &Principal,
    p: &plugin::Model,
    filter: &Filter,
    period: (DateTime<Utc>, DateTime<Utc>),
    format: ReportFormat,
) -> ApiResult<CallReport<Rendered>> {
    let (limits, input) = input_for(host, who, p, filter, period).await?;
    let report = off_thread(host, p, input, move |sandbox, prepared, input| {
        let r = sandbox.render(prepared, input, &limits);
        CallReport {
            result: r.result.and_then(|d| reports::convert(d, format)),
            logs: r.logs,
            elapsed: r.elapsed,
            fuel_used: r.fuel_used,
        }
    })
    .await?;
    log_failure(&report, p, who);
    Ok(report)
}
