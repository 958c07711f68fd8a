//! User accounts: creation and changes by those allowed to manage users
//! (within their own scope, roles below their own), and the self-service
//! part (password, TOTP enrolment and recovery codes).

use entities::enums::Role;
use entities::{recovery_code, user};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, Set, SqlErr,
};

use super::policy::{Action, Grant};
use super::secret::sha256_hex;
use super::{Identity, Principal, password, scope, sessions};
use crate::audit::{self, Change};
use crate::clock::now;
use crate::error::{ApiError, ApiResult};

/// A new account.
pub struct NewUser {
    pub email: String,
    pub display_name: Option<String>,
    pub grant: Grant,
    /// Initial password; none for an account that signs in through SSO only.
    pub password: Option<String>,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Default)]
pub struct UserChanges {
    pub display_name: Option<Option<String>>,
    pub grant: Option<Grant>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

pub fn grant_of(u: &user::Model) -> Grant {
    Grant {
        role: u.role,
        clients: scope::ids_from_json(u.client_ids.as_ref()),
        sites: scope::ids_from_json(u.site_ids.as_ref()),
    }
}

fn check_email(email: &str) -> ApiResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 320
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if valid {
        Ok(email)
    } else {
        Err(ApiError::validation("email", "not an e-mail address"))
    }
}

fn duplicate_email(email: &str) -> impl FnOnce(DbErr) -> ApiError + '_ {
    move |err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            ApiError::Conflict(format!("a user with e-mail '{email}' already exists"))
        }
        _ => ApiError::Db(err),
    }
}

/// True when `who` could have granted `grant` (ignoring deleted sites).
pub async fn within_reach(
    db: &impl ConnectionTrait,
    who: &Principal,
    grant: &Grant,
) -> ApiResult<bool> {
    if who.role == Role::SuperAdmin {
        return Ok(true);
    }
    let sc = match &grant.sites {
        Some(sites) => scope::site_pairs(db, who.tenant_id, sites).await?,
        None => Vec::new(),
    };
    Ok(grant.grantable_by(who, &sc).is_ok())
}

/// A user of the caller's tenant that the caller may manage, or NOT_FOUND.
async fn manageable(id: &Identity, who: &Principal, user_id: i64) -> ApiResult<user::Model> {
    let not_found = || {
        ApiError::NotFound(format!(
            "User {}",
            crate::ids::encode_other(crate::ids::Other::User, user_id).0
        ))
    };
    let target = user::Entity::find_by_id(user_id)
        .filter(user::Column::TenantId.eq(who.tenant_id))
        .one(&id.db)
        .await?
        .ok_or_else(not_found)?;
    if who.user_id() == Some(target.id) || within_reach(&id.db, who, &grant_of(&target)).await? {
        Ok(target)
    } else {
        Err(not_found())
    }
}

/// Users the caller may manage (all of the tenant for a super admin).
pub async fn list(id: &Identity, who: &Principal) -> ApiResult<Vec<user::Model>> {
    who.require(Action::ManageUsers)?;
    let all = user::Entity::find()
        .filter(user::Column::TenantId.eq(who.tenant_id))
        .order_by_asc(user::Column::Email)
        .all(&id.db)
        .await?;
    let mut out = Vec::new();
    for u in all {
        if within_reach(&id.db, who, &grant_of(&u)).await? {
            out.push(u);
        }
    }
    Ok(out)
}

/// The signed-in user's own account.
pub async fn me(id: &Identity, who: &Principal) -> ApiResult<Option<user::Model>> {
    match who.user_id() {
        Some(uid) => Ok(user::Entity::find_by_id(uid).one(&id.db).await?),
        None => Ok(None),
    }
}

pub async fn create(id: &Identity, who: &Principal, new: NewUser) -> ApiResult<user::Model> {
    who.require(Action::ManageUsers)?;
    let email = check_email(&new.email)?;
    scope::check_grant(&id.db, who, &new.grant).await?;
    let password_hash = new.password.as_deref().map(password::hash).transpose()?;
    let txn = crate::db::begin_write(&id.db).await?;
    let at = now();
    let model = user::ActiveModel {
        tenant_id: Set(who.tenant_id),
        email: Set(email.clone()),
        display_name: Set(new
            .display_name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())),
        role: Set(new.grant.role),
        client_ids: Set(scope::ids_to_json(&new.grant.clients)),
        site_ids: Set(scope::ids_to_json(&new.grant.sites)),
        password_hash: Set(password_hash),
        totp_secret: Set(None),
        totp_enabled: Set(false),
        disabled: Set(false),
        failed_logins: Set(0),
        locked_until: Set(None),
        oidc_issuer: Set(None),
        oidc_subject: Set(None),
        last_login_at: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(duplicate_email(&email))?;
    audit::record(
        &txn,
        who,
        Change {
            action: "user.create",
            target_type: "User",
            target_id: Some(model.id),
            before: None,
            after: Some(&model),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(model)
}

pub async fn update(
    id: &Identity,
    who: &Principal,
    user_id: i64,
    changes: UserChanges,
) -> ApiResult<user::Model> {
    who.require(Action::ManageUsers)?;
    let before = manageable(id, who, user_id).await?;
    if who.user_id() == Some(user_id) && (changes.grant.is_some() || changes.disabled == Some(true))
    {
        return Err(ApiError::Forbidden(
            "you cannot change your own role or scope, or disable yourself".into(),
        ));
    }
    if let Some(grant) = &changes.grant {
        scope::check_grant(&id.db, who, grant).await?;
    }
    let password_hash = changes
        .password
        .as_deref()
        .map(password::hash)
        .transpose()?;
    let txn = crate::db::begin_write(&id.db).await?;
    let mut active = before.clone().into_active_model();
    if let Some(name) = changes.display_name {
        active.display_name = Set(name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()));
    }
    if let Some(grant) = &changes.grant {
        active.role = Set(grant.role);
        active.client_ids = Set(scope::ids_to_json(&grant.clients));
        active.site_ids = Set(scope::ids_to_json(&grant.sites));
    }
    if let Some(disabled) = changes.disabled {
        active.disabled = Set(disabled);
        if !disabled {
            active.failed_logins = Set(0);
            active.locked_until = Set(None);
        }
    }
    if let Some(hash) = password_hash {
        active.password_hash = Set(Some(hash));
    }
    active.updated_at = Set(now());
    let after = active.update(&txn).await?;
    if after.disabled || changes.password.is_some() {
        sessions::revoke_user(&txn, user_id).await?;
    }
    audit::record(
        &txn,
        who,
        Change {
            action: "user.update",
            target_type: "User",
            target_id: Some(user_id),
            before: Some(&before),
            after: Some(&after),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// The caller's own account; API keys have none.
async fn own_account(id: &Identity, who: &Principal) -> ApiResult<user::Model> {
    let uid = who.user_id().ok_or_else(|| {
        ApiError::Forbidden(
            "only a signed-in user (not an API key) has an account to change".into(),
        )
    })?;
    user::Entity::find_by_id(uid)
        .one(&id.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("user".into()))
}

/// Starts TOTP enrolment: a new secret, active once confirmed with a code.
pub async fn enroll_totp(id: &Identity, who: &Principal) -> ApiResult<(String, String)> {
    let user = own_account(id, who).await?;
    if user.totp_enabled {
        return Err(ApiError::Conflict(
            "TOTP is already enabled; disable it first to enrol a new device".into(),
        ));
    }
    let (secret, uri) = password::new_totp(&user.email)?;
    let mut active = user.into_active_model();
    active.totp_secret = Set(Some(secret.clone()));
    active.updated_at = Set(now());
    active.update(&id.db).await?;
    Ok((secret, uri))
}

/// Confirms enrolment with a current code; returns ten recovery codes,
/// shown this once.
pub async fn confirm_totp(id: &Identity, who: &Principal, code: &str) -> ApiResult<Vec<String>> {
    let user = own_account(id, who).await?;
    let uid = user.id;
    let Some(secret) = user.totp_secret.clone().filter(|_| !user.totp_enabled) else {
        return Err(ApiError::Conflict(
            "no TOTP enrolment is pending; call enrollTotp first".into(),
        ));
    };
    if !password::check_totp(&secret, &user.email, code) {
        return Err(ApiError::validation(
            "code",
            "wrong code; check the device's clock",
        ));
    }
    let codes = password::new_recovery_codes();
    let txn = crate::db::begin_write(&id.db).await?;
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(uid))
        .exec(&txn)
        .await?;
    recovery_code::Entity::insert_many(codes.iter().map(|c| recovery_code::ActiveModel {
        user_id: Set(uid),
        code_hash: Set(sha256_hex(&password::normalize_recovery_code(c))),
        used_at: Set(None),
        ..Default::default()
    }))
    .exec(&txn)
    .await?;
    let before = user.clone();
    let mut active = user.into_active_model();
    active.totp_enabled = Set(true);
    active.updated_at = Set(now());
    let after = active.update(&txn).await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "user.totp.enable",
            target_type: "User",
            target_id: Some(uid),
            before: Some(&before),
            after: Some(&after),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(codes)
}

/// Turns the second factor off (needs a current code).
pub async fn disable_totp(id: &Identity, who: &Principal, code: &str) -> ApiResult<()> {
    let user = own_account(id, who).await?;
    let uid = user.id;
    let ok = user.totp_enabled
        && user
            .totp_secret
            .as_deref()
            .is_some_and(|s| password::check_totp(s, &user.email, code));
    if !ok {
        return Err(ApiError::validation(
            "code",
            "wrong code, or TOTP is not enabled",
        ));
    }
    let txn = crate::db::begin_write(&id.db).await?;
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(uid))
        .exec(&txn)
        .await?;
    let before = user.clone();
    let mut active = user.into_active_model();
    active.totp_enabled = Set(false);
    active.totp_secret = Set(None);
    active.updated_at = Set(now());
    let after = active.update(&txn).await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "user.totp.disable",
            target_type: "User",
            target_id: Some(uid),
            before: Some(&before),
            after: Some(&after),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Changes the caller's own password; other sessions are signed out.
pub async fn change_password(
    id: &Identity,
    who: &Principal,
    current: &str,
    new: &str,
) -> ApiResult<()> {
    let user = own_account(id, who).await?;
    let uid = user.id;
    if !password::verify(current, user.password_hash.as_deref()) {
        return Err(ApiError::validation("currentPassword", "wrong password"));
    }
    let hash = password::hash(new)?;
    let txn = crate::db::begin_write(&id.db).await?;
    let mut active = user.into_active_model();
    active.password_hash = Set(Some(hash));
    active.updated_at = Set(now());
    active.update(&txn).await?;
    sessions::revoke_user(&txn, uid).await?;
    audit::record::<_, ()>(
        &txn,
        who,
        Change {
            action: "user.password.change",
            target_type: "User",
            target_id: Some(uid),
            before: None,
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}
