//! Append-only record of every configuration change, access change, login
//! and control action. Each row carries the SHA-256 of its content and of
//! the previous row of its tenant, so a modified or deleted row breaks the
//! chain.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// Who acted: `user:<id>`, `api-key:<id>`, `system`, …
    pub actor: String,
    /// What was done, e.g. `battery.update`.
    pub action: String,
    pub target_type: String,
    pub target_id: Option<i64>,
    pub before: Option<Json>,
    pub after: Option<Json>,
    pub created_at: DateTimeUtc,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `SUCCESS`, `FAILURE` or `DENIED`.
    pub result: String,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
