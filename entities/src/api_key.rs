//! Machine access for integrations (ERP, CMMS): a secret shown once, stored
//! hashed, bound to a role and a scope, with expiry and revocation.

use sea_orm::entity::prelude::*;

use crate::enums::Role;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub role: Role,
    pub client_ids: Option<Json>,
    pub site_ids: Option<Json>,
    /// SHA-256 (hex) of the secret part of the key.
    #[serde(skip)]
    pub secret_hash: String,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
