//! A person who acts within a tenant: local account (password, optional
//! TOTP second factor) or single sign-on identity, with one role and scope.

use sea_orm::entity::prelude::*;

use crate::enums::Role;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// Lower-case; unique within the tenant.
    pub email: String,
    pub display_name: Option<String>,
    pub role: Role,
    /// JSON array of client ids the user is limited to (none: whole tenant).
    pub client_ids: Option<Json>,
    /// JSON array of site ids the user is limited to.
    pub site_ids: Option<Json>,
    /// Argon2id PHC string; none for SSO-only users.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Base32 TOTP secret (set at enrolment, active once confirmed).
    #[serde(skip)]
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
    pub disabled: bool,
    pub failed_logins: i32,
    pub locked_until: Option<DateTimeUtc>,
    pub oidc_issuer: Option<String>,
    pub oidc_subject: Option<String>,
    pub last_login_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
