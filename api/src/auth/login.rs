//! Password sign-in with the TOTP second factor, account lockout after
//! repeated failures, and the audit record of every attempt.

use chrono::Duration;
use entities::{recovery_code, tenant, user};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set, sea_query::Expr,
};
use serde::Deserialize;
use serde_json::json;

use super::sessions::{self, Subject, Tokens};
use super::{Identity, Origin, password, secret::sha256_hex};
use crate::audit::{self, Entry, Outcome};
use crate::clock::now;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// Body of `POST /auth/login`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Tenant slug; `default` when left out.
    pub tenant: Option<String>,
    /// Current code of the authenticator app, when TOTP is enabled.
    pub totp_code: Option<String>,
    /// A one-time recovery code instead of the TOTP code.
    pub recovery_code: Option<String>,
}

fn bad_credentials() -> ApiError {
    ApiError::auth(
        ErrorCode::InvalidCredentials,
        "unknown account or wrong password",
    )
}

/// Records a sign-in attempt.
pub async fn record_attempt(
    id: &Identity,
    tenant_id: i64,
    user_id: Option<i64>,
    method: &str,
    detail: serde_json::Value,
    outcome: Outcome,
    origin: &Origin,
) {
    let entry = Entry {
        tenant_id,
        actor: user_id.map_or_else(|| "anonymous".to_owned(), |u| format!("user:{u}")),
        action: format!("auth.login.{method}"),
        target_type: "User".into(),
        target_id: user_id,
        before: None,
        after: Some(detail),
        origin: origin.clone(),
        outcome,
    };
    if let Err(err) = audit::event(&id.db, entry).await {
        tracing::error!(%err, "could not record a sign-in attempt in the audit log");
    }
}

/// Checks the credentials and opens a session.
pub async fn password_login(id: &Identity, req: LoginRequest, origin: Origin) -> ApiResult<Tokens> {
    let email = req.email.trim().to_lowercase();
    let slug = req.tenant.as_deref().unwrap_or("default");
    let tenant = tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(slug))
        .one(&id.db)
        .await?;
    let found = match &tenant {
        Some(t) => {
            user::Entity::find()
                .filter(user::Column::TenantId.eq(t.id))
                .filter(user::Column::Email.eq(&email))
                .one(&id.db)
                .await?
        }
        None => None,
    };
    let audit_tenant = tenant.as_ref().map_or(id.default_tenant, |t| t.id);
    let fail = |user_id: Option<i64>, reason: &str| {
        let detail = json!({ "email": email, "tenant": slug, "reason": reason });
        record_attempt(
            id,
            audit_tenant,
            user_id,
            "password",
            detail,
            Outcome::Failure,
            &origin,
        )
    };

    let Some(user) = found else {
        // Spend the time of a real verification: response times must not
        // tell which accounts exist.
        password::verify(&req.password, None);
        fail(None, "unknown account").await;
        return Err(bad_credentials());
    };
    if user.locked_until.is_some_and(|t| t > now()) {
        fail(Some(user.id), "account locked").await;
        return Err(ApiError::auth(
            ErrorCode::AccountLocked,
            "too many failed sign-ins; the account is locked for a while",
        ));
    }
    let password_ok = password::verify(&req.password, user.password_hash.as_deref());
    if !password_ok || user.disabled {
        if password_ok {
            fail(Some(user.id), "account disabled").await;
        } else {
            count_failure(id, &user).await?;
            fail(Some(user.id), "wrong password").await;
        }
        return Err(bad_credentials());
    }
    if user.totp_enabled {
        let second = match (&req.totp_code, &req.recovery_code, &user.totp_secret) {
            (Some(code), _, Some(secret)) => password::check_totp(secret, &user.email, code),
            (None, Some(code), _) => use_recovery_code(id, user.id, code).await?,
            _ => {
                return Err(ApiError::auth(
                    ErrorCode::TotpRequired,
                    "this account has a second factor: send `totpCode` (or `recoveryCode`)",
                ));
            }
        };
        if !second {
            count_failure(id, &user).await?;
            fail(Some(user.id), "wrong second factor").await;
            return Err(ApiError::auth(
                ErrorCode::InvalidCredentials,
                "wrong second-factor code",
            ));
        }
    }
    let mut active = user.clone().into_active_model();
    active.failed_logins = Set(0);
    active.locked_until = Set(None);
    active.last_login_at = Set(Some(now()));
    active.update(&id.db).await?;
    let tokens = sessions::issue(
        &id.db,
        &id.config,
        user.tenant_id,
        Subject::User(user.id),
        &origin,
    )
    .await?;
    record_attempt(
        id,
        user.tenant_id,
        Some(user.id),
        "password",
        json!({ "email": email, "tenant": slug, "secondFactor": user.totp_enabled }),
        Outcome::Success,
        &origin,
    )
    .await;
    Ok(tokens)
}

/// Adds a failure; locks the account when there have been too many.
async fn count_failure(id: &Identity, user: &user::Model) -> ApiResult<()> {
    let failures = user.failed_logins.saturating_add(1);
    let lock = u32::try_from(failures).unwrap_or(u32::MAX) >= id.config.max_failed_logins;
    let mut update = user::Entity::update_many()
        .col_expr(
            user::Column::FailedLogins,
            Expr::value(if lock { 0 } else { failures }),
        )
        .filter(user::Column::Id.eq(user.id));
    if lock {
        let until = now() + Duration::seconds(i64::try_from(id.config.lockout_secs).unwrap_or(900));
        update = update.col_expr(user::Column::LockedUntil, Expr::value(until));
        tracing::warn!(
            user_id = user.id,
            "account locked after repeated failed sign-ins"
        );
    }
    update.exec(&id.db).await?;
    Ok(())
}

/// Consumes a recovery code; false when it is unknown or already used.
async fn use_recovery_code(id: &Identity, user_id: i64, code: &str) -> ApiResult<bool> {
    let hash = sha256_hex(&password::normalize_recovery_code(code));
    let used = recovery_code::Entity::update_many()
        .col_expr(recovery_code::Column::UsedAt, Expr::value(now()))
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::CodeHash.eq(hash))
        .filter(recovery_code::Column::UsedAt.is_null())
        .exec(&id.db)
        .await?;
    Ok(used.rows_affected == 1)
}
