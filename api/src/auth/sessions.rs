//! Sessions: opaque access tokens (15 minutes by default) and rotating
//! refresh tokens, both stored as SHA-256 hashes.
//!
//! Opaque rather than signed (JWT) tokens: every request loads the caller's
//! current role and scope anyway (a role change or a disabled account must
//! take effect at once), so the lookup that makes a JWT unnecessary is
//! already paid for, and revocation (logout, disabled user, stolen refresh
//! token) is immediate on every replica without a deny-list.

use chrono::{DateTime, Duration, Utc};
use entities::session;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};
use serde::Serialize;

use super::Origin;
use super::secret::{ACCESS_PREFIX, REFRESH_PREFIX, random_token, sha256_hex};
use crate::clock::now;
use crate::config::AuthConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// What a successful sign-in returns (OAuth2 token response shape).
#[derive(Debug, Clone, Serialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_in: Option<u64>,
}

/// Whom a session is for.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    User(i64),
    /// An API key that used the client-credentials grant (no refresh token).
    ApiKey(i64),
}

/// Opens a session and returns its tokens.
pub async fn issue(
    db: &impl ConnectionTrait,
    cfg: &AuthConfig,
    tenant_id: i64,
    subject: Subject,
    origin: &Origin,
) -> ApiResult<Tokens> {
    let at = now();
    let access = random_token(ACCESS_PREFIX);
    let (user_id, api_key_id, refresh) = match subject {
        Subject::User(u) => (Some(u), None, Some(random_token(REFRESH_PREFIX))),
        Subject::ApiKey(k) => (None, Some(k), None),
    };
    let ttl = |secs: u64| Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2_000));
    session::ActiveModel {
        tenant_id: Set(tenant_id),
        user_id: Set(user_id),
        api_key_id: Set(api_key_id),
        access_hash: Set(sha256_hex(&access)),
        access_expires_at: Set(at + ttl(cfg.access_token_ttl_secs)),
        refresh_hash: Set(refresh.as_deref().map(sha256_hex)),
        refresh_expires_at: Set(refresh
            .as_ref()
            .map(|_| at + ttl(cfg.refresh_token_ttl_secs))),
        revoked_at: Set(None),
        source_ip: Set(origin.ip.clone()),
        user_agent: Set(origin.user_agent.clone()),
        created_at: Set(at),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(Tokens {
        access_token: access,
        token_type: "Bearer",
        expires_in: cfg.access_token_ttl_secs,
        refresh_expires_in: refresh.as_ref().map(|_| cfg.refresh_token_ttl_secs),
        refresh_token: refresh,
    })
}

/// The live session of an access token, if any.
pub async fn by_access_token(
    db: &impl ConnectionTrait,
    token: &str,
) -> ApiResult<Option<session::Model>> {
    let found = session::Entity::find()
        .filter(session::Column::AccessHash.eq(sha256_hex(token)))
        .one(db)
        .await?;
    let at = now();
    Ok(found.filter(|s| s.revoked_at.is_none() && s.access_expires_at > at))
}

fn invalid_refresh() -> ApiError {
    ApiError::auth(
        ErrorCode::InvalidCredentials,
        "the refresh token is invalid, expired or revoked; sign in again",
    )
}

/// Exchanges a refresh token for a new session (the old one is revoked).
/// Presenting an already used refresh token revokes every session of its
/// user: one of the two holders is not the user.
pub async fn refresh(
    db: &impl ConnectionTrait,
    cfg: &AuthConfig,
    token: &str,
    origin: &Origin,
) -> ApiResult<(session::Model, Tokens)> {
    let found = session::Entity::find()
        .filter(session::Column::RefreshHash.eq(sha256_hex(token)))
        .one(db)
        .await?
        .ok_or_else(invalid_refresh)?;
    let user_id = found.user_id.ok_or_else(invalid_refresh)?;
    if found.revoked_at.is_some() {
        tracing::warn!(
            user_id,
            session_id = found.id,
            "refresh token reused: revoking every session of the user"
        );
        revoke_user(db, user_id).await?;
        return Err(invalid_refresh());
    }
    if found.refresh_expires_at.is_none_or(|e| e <= now()) {
        return Err(invalid_refresh());
    }
    // Only one of two concurrent refreshes with the same token wins.
    let won = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now()))
        .filter(session::Column::Id.eq(found.id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    if won.rows_affected != 1 {
        return Err(invalid_refresh());
    }
    let tokens = issue(db, cfg, found.tenant_id, Subject::User(user_id), origin).await?;
    Ok((found, tokens))
}

/// Ends one session (logout).
pub async fn revoke(db: &impl ConnectionTrait, session_id: i64) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now()))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Ends every session of a user (disabled, password changed, token theft).
pub async fn revoke_user(db: &impl ConnectionTrait, user_id: i64) -> ApiResult<u64> {
    let res = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now()))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Ends every session opened with an API key (the key was revoked).
pub async fn revoke_api_key(db: &impl ConnectionTrait, key_id: i64) -> ApiResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now()))
        .filter(session::Column::ApiKeyId.eq(key_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Whether an instant lies in the past (for expiry checks).
pub fn expired(at: Option<DateTime<Utc>>) -> bool {
    at.is_some_and(|t| t <= now())
}
