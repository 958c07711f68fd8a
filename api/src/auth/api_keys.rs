//! API keys for machines (ERP, CMMS): created by those allowed, bound to a
//! role and scope they could grant, shown once, stored hashed; revocation
//! ends the sessions opened with them too.

use chrono::{DateTime, Utc};
use entities::api_key;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, Set,
};

use super::policy::{Action, Grant};
use super::secret::{API_KEY_PREFIX, random_token, sha256_hex};
use super::{Principal, scope, sessions, users::within_reach};
use crate::audit::{self, Change};
use crate::clock::now;
use crate::error::{ApiError, ApiResult};

pub fn grant_of(k: &api_key::Model) -> Grant {
    Grant {
        role: k.role,
        clients: scope::ids_from_json(k.client_ids.as_ref()),
        sites: scope::ids_from_json(k.site_ids.as_ref()),
    }
}

/// Creates a key; returns it with the full secret, which is not kept.
pub async fn create(
    db: &DatabaseConnection,
    who: &Principal,
    name: &str,
    grant: Grant,
    expires_at: Option<DateTime<Utc>>,
) -> ApiResult<(api_key::Model, String)> {
    who.require(Action::ManageApiKeys)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::validation("name", "1 to 200 characters"));
    }
    if expires_at.is_some_and(|e| e <= now()) {
        return Err(ApiError::validation("expiresAt", "must be in the future"));
    }
    scope::check_grant(db, who, &grant).await?;
    // The secret part carries no prefix of its own.
    let secret = random_token("");
    let txn = crate::db::begin_write(db).await?;
    let model = api_key::ActiveModel {
        tenant_id: Set(who.tenant_id),
        name: Set(name.to_owned()),
        role: Set(grant.role),
        client_ids: Set(scope::ids_to_json(&grant.clients)),
        site_ids: Set(scope::ids_to_json(&grant.sites)),
        secret_hash: Set(sha256_hex(&secret)),
        created_by: Set(who.actor.clone()),
        created_at: Set(now()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "api_key.create",
            target_type: "ApiKey",
            target_id: Some(model.id),
            before: None,
            after: Some(&model),
        },
    )
    .await?;
    txn.commit().await?;
    let key = format!("{API_KEY_PREFIX}{}_{secret}", model.id);
    Ok((model, key))
}

/// Keys the caller may manage.
pub async fn list(db: &impl ConnectionTrait, who: &Principal) -> ApiResult<Vec<api_key::Model>> {
    who.require(Action::ManageApiKeys)?;
    let all = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(who.tenant_id))
        .order_by_desc(api_key::Column::CreatedAt)
        .all(db)
        .await?;
    let mut out = Vec::new();
    for k in all {
        if within_reach(db, who, &grant_of(&k)).await? {
            out.push(k);
        }
    }
    Ok(out)
}

/// Revokes a key (idempotent) and the sessions opened with it.
pub async fn revoke(
    db: &DatabaseConnection,
    who: &Principal,
    key_id: i64,
) -> ApiResult<api_key::Model> {
    who.require(Action::ManageApiKeys)?;
    let not_found = || {
        ApiError::NotFound(format!(
            "ApiKey {}",
            crate::ids::encode_other(crate::ids::Other::ApiKey, key_id).0
        ))
    };
    let before = api_key::Entity::find_by_id(key_id)
        .filter(api_key::Column::TenantId.eq(who.tenant_id))
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    if !within_reach(db, who, &grant_of(&before)).await? {
        return Err(not_found());
    }
    if before.revoked_at.is_some() {
        return Ok(before);
    }
    let txn = crate::db::begin_write(db).await?;
    let mut active = before.clone().into_active_model();
    active.revoked_at = Set(Some(now()));
    let after = active.update(&txn).await?;
    sessions::revoke_api_key(&txn, key_id).await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "api_key.revoke",
            target_type: "ApiKey",
            target_id: Some(key_id),
            before: Some(&before),
            after: Some(&after),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}
