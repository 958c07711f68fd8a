//! A signed-in session: an opaque access token and a refresh token (both
//! stored as SHA-256 hashes), for a user or for an API key that used the
//! OAuth2 client-credentials grant.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub user_id: Option<i64>,
    pub api_key_id: Option<i64>,
    pub access_hash: String,
    pub access_expires_at: DateTimeUtc,
    pub refresh_hash: Option<String>,
    pub refresh_expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
