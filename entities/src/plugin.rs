//! An uploaded WebAssembly component (one version of one plugin).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "plugins")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub version: String,
    /// `KPI` or `REPORT` (the WIT world it implements).
    pub kind: String,
    /// Version of the `trackingbms:plugin` WIT package it was built against.
    pub wit_version: String,
    /// Hex SHA-256 of the component: the identity of this version.
    pub sha256: String,
    pub size_bytes: i64,
    pub component: Vec<u8>,
    /// What `describe()` returned at upload.
    pub description: Json,
    pub uploaded_by: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
