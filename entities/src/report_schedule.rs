//! A report generated on a schedule: which plugin, when (cron, UTC), over
//! which scope and period, in which format, for whom.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "report_schedules")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub plugin_id: i64,
    pub name: String,
    pub cron: String,
    /// The scope as given (`LiveScope` fields with global ids).
    pub scope: Json,
    pub format: String,
    pub period_days: i32,
    /// E-mail addresses and webhook URLs.
    pub recipients: Json,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub next_run_at: DateTimeUtc,
    pub last_run_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
