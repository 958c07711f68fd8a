//! A KPI value computed on a schedule: for one battery, or for the place
//! (tenant, client or site) the plugin is enabled at, over one period.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "kpi_values")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub plugin_name: String,
    pub plugin_version: String,
    pub client_id: Option<i64>,
    pub site_id: Option<i64>,
    pub battery_id: Option<i64>,
    pub name: String,
    pub value: f64,
    pub period_from: DateTimeUtc,
    pub period_to: DateTimeUtc,
    pub computed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
