//! WebAssembly plugins: power users upload components implementing the WIT
//! worlds of `plugins/wit/` (KPI calculators, report generators); the
//! server runs them against a scope's data in a sandbox ([`sandbox`]) with
//! per-call limits. [`catalog`] keeps uploads, versions and where each is
//! enabled; [`inputs`] assembles the data a call receives; [`runner`] makes
//! one call for a caller or the scheduler; [`reports`] converts (with
//! [`pdf`]) and keeps generated reports; [`scheduler`] runs the KPI history
//! ([`history`]) and report schedules ([`schedules`]) once per slot across
//! replicas; [`graphql`] and [`schedule_graphql`] are the API.

pub mod bindings;
pub mod catalog;
pub mod graphql;
pub mod history;
pub mod inputs;
pub mod pdf;
pub mod reports;
pub mod runner;
pub mod sandbox;
pub mod schedule_graphql;
pub mod scheduler;
pub mod schedules;

use std::sync::Arc;

use crate::config::{PluginLimits, PluginsConfig};

pub use sandbox::{RunError, Sandbox};

/// Everything the plugin surface needs; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    pub db: sea_orm::DatabaseConnection,
    pub sandbox: Sandbox,
    pub config: Arc<PluginsConfig>,
}

impl Plugins {
    pub fn new(
        db: sea_orm::DatabaseConnection,
        config: &PluginsConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let largest = config
            .tenant_limits
            .values()
            .map(|l| l.memory_bytes)
            .chain([config.limits.memory_bytes])
            .max()
            .unwrap_or(config.limits.memory_bytes);
        Ok(Self {
            sandbox: Sandbox::new(Some(data_dir.join("plugin-cache")), largest)?,
            config: Arc::new(config.clone()),
            db,
        })
    }

    /// The limits of a tenant's calls (its override, else the defaults).
    pub async fn limits_for(&self, tenant_id: i64) -> crate::error::ApiResult<PluginLimits> {
        use sea_orm::EntityTrait;
        if self.config.tenant_limits.is_empty() {
            return Ok(self.config.limits.clone());
        }
        let slug = entities::tenant::Entity::find_by_id(tenant_id)
            .one(&self.db)
            .await?
            .map(|t| t.slug)
            .unwrap_or_default();
        Ok(self
            .config
            .tenant_limits
            .get(&slug)
            .unwrap_or(&self.config.limits)
            .clone())
    }
}
