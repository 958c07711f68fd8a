//! The model registry: a tenant's uploaded ONNX versions (validated against
//! the signature of their kind before they are stored), which one is active,
//! activation and rollback. No active version means the built-in model.
//! Every change is audited.

use entities::prediction_model;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Predictor;
use super::runtime::{Kind, Pool};
use crate::audit::{self, Change};
use crate::auth::{Action, Principal};
use crate::error::{ApiError, ApiResult};
use crate::ids::{self, Other};

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!(
        "PredictionModel {}",
        ids::encode_other(Other::PredictionModel, id).0
    ))
}

fn summary(m: &prediction_model::Model) -> serde_json::Value {
    json!({ "id": m.id, "kind": m.kind, "version": m.version, "sha256": m.sha256,
            "sizeBytes": m.size_bytes, "active": m.active })
}

/// Validates and stores a new version (inactive).
pub async fn upload(
    p: &Predictor,
    who: &Principal,
    kind: Kind,
    version: &str,
    bytes: Vec<u8>,
    metadata: serde_json::Value,
) -> ApiResult<prediction_model::Model> {
    who.require(Action::ManageModels)?;
    let max = p.config().max_model_bytes;
    if bytes.len() > max {
        return Err(ApiError::validation(
            "file",
            format!("the model has {} bytes; the limit is {max}", bytes.len()),
        ));
    }
    let valid_version = !version.is_empty()
        && version.len() <= 50
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if !valid_version {
        return Err(ApiError::validation(
            "version",
            "1 to 50 of letters, digits, - _ . +",
        ));
    }
    if !metadata.is_object() {
        return Err(ApiError::validation("metadata", "must be a JSON object"));
    }
    let env = p.environment()?;
    let checked = bytes.clone();
    tokio::task::spawn_blocking(move || Pool::load(&env, kind, &checked, 1))
        .await
        .map_err(|e| ApiError::validation("file", format!("the model could not be checked: {e}")))?
        .map_err(|e| ApiError::validation("file", e))?;
    let txn = crate::db::begin_write(p.db()).await?;
    let model = prediction_model::ActiveModel {
        tenant_id: Set(who.tenant_id),
        kind: Set(kind.as_str().to_owned()),
        version: Set(version.to_owned()),
        sha256: Set(hex::encode(Sha256::digest(&bytes))),
        size_bytes: Set(i64::try_from(bytes.len()).unwrap_or(i64::MAX)),
        model: Set(bytes),
        metadata: Set(metadata),
        active: Set(false),
        replaced_id: Set(None),
        uploaded_by: Set(who.actor.clone()),
        created_at: Set(crate::clock::now()),
        activated_at: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::Conflict(format!(
            "{} model version {version} is already uploaded",
            kind.as_str()
        )),
        _ => ApiError::Db(e),
    })?;
    audit::record(
        &txn,
        who,
        Change {
            action: "prediction_model.upload",
            target_type: "PredictionModel",
            target_id: Some(model.id),
            before: None,
            after: Some(&summary(&model)),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(model)
}

/// The tenant's versions of `kind` (all kinds when `None`), newest first.
pub async fn list(
    p: &Predictor,
    who: &Principal,
    kind: Option<Kind>,
) -> ApiResult<Vec<prediction_model::Model>> {
    who.require(Action::ReadFleet)?;
    let mut q = prediction_model::Entity::find()
        .filter(prediction_model::Column::TenantId.eq(who.tenant_id));
    if let Some(k) = kind {
        q = q.filter(prediction_model::Column::Kind.eq(k.as_str()));
    }
    Ok(q.order_by_desc(prediction_model::Column::Id)
        .all(p.db())
        .await?)
}

/// The active version of `kind` for `tenant_id`, if one was activated.
pub async fn active(
    db: &impl sea_orm::ConnectionTrait,
    tenant_id: i64,
    kind: Kind,
) -> ApiResult<Option<prediction_model::Model>> {
    Ok(prediction_model::Entity::find()
        .filter(prediction_model::Column::TenantId.eq(tenant_id))
        .filter(prediction_model::Column::Kind.eq(kind.as_str()))
        .filter(prediction_model::Column::Active.eq(true))
        .one(db)
        .await?)
}

/// Makes version `id` the active one of its kind; the one it replaces is
/// remembered for rollback.
pub async fn activate(
    p: &Predictor,
    who: &Principal,
    id: i64,
) -> ApiResult<prediction_model::Model> {
    who.require(Action::ManageModels)?;
    let txn = crate::db::begin_write(p.db()).await?;
    let target = prediction_model::Entity::find_by_id(id)
        .filter(prediction_model::Column::TenantId.eq(who.tenant_id))
        .one(&txn)
        .await?
        .ok_or_else(|| not_found(id))?;
    if target.active {
        return Ok(target);
    }
    let kind = Kind::parse(&target.kind).unwrap_or(Kind::Forecast);
    let current = active(&txn, who.tenant_id, kind).await?;
    if let Some(c) = &current {
        let mut c = c.clone().into_active_model();
        c.active = Set(false);
        c.update(&txn).await?;
    }
    let mut t = target.clone().into_active_model();
    t.active = Set(true);
    t.replaced_id = Set(current.as_ref().map(|c| c.id));
    t.activated_at = Set(Some(crate::clock::now()));
    let after = t.update(&txn).await?;
    audit::record(
        &txn,
        who,
        Change {
            action: "prediction_model.activate",
            target_type: "PredictionModel",
            target_id: Some(id),
            before: current.as_ref().map(summary).as_ref(),
            after: Some(&summary(&after)),
        },
    )
    .await?;
    txn.commit().await?;
    tracing::info!(tenant = who.tenant_id, kind = kind.as_str(), version = %after.version, "prediction model activated");
    Ok(after)
}

/// Deactivates the active version of `kind` and reactivates the one it
/// replaced (the built-in model when it replaced none). Returns the version
/// now active, `None` for the built-in one.
pub async fn rollback(
    p: &Predictor,
    who: &Principal,
    kind: Kind,
) -> ApiResult<Option<prediction_model::Model>> {
    who.require(Action::ManageModels)?;
    let txn = crate::db::begin_write(p.db()).await?;
    let Some(current) = active(&txn, who.tenant_id, kind).await? else {
        return Err(ApiError::Conflict(format!(
            "the built-in {} model is active; there is nothing to roll back",
            kind.as_str()
        )));
    };
    let previous = match current.replaced_id {
        Some(pid) => prediction_model::Entity::find_by_id(pid).one(&txn).await?,
        None => None,
    };
    let mut c = current.clone().into_active_model();
    c.active = Set(false);
    c.update(&txn).await?;
    let restored = match previous {
        Some(prev) => {
            let mut prev = prev.into_active_model();
            prev.active = Set(true);
            prev.activated_at = Set(Some(crate::clock::now()));
            Some(prev.update(&txn).await?)
        }
        None => None,
    };
    audit::record(
        &txn,
        who,
        Change {
            action: "prediction_model.rollback",
            target_type: "PredictionModel",
            target_id: Some(current.id),
            before: Some(&summary(&current)),
            after: restored.as_ref().map(summary).as_ref(),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(restored)
}
