//! A generated report, kept for download until it expires.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "report_artifacts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub plugin_id: i64,
    /// SHA-256 (hex) of the download token.
    pub token_hash: String,
    pub content_type: String,
    pub file_name: String,
    pub content: Vec<u8>,
    pub scope: String,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// The schedule that produced it (none: generated on request).
    pub schedule_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
