//! The audit log: every change of configuration or access, every sign-in
//! (success and failure) and every control action, recorded in the same
//! transaction as the change, with who, when, what, target, before/after,
//! source address, user agent and result.
//!
//! Rows are append-only and chained per tenant: each stores the SHA-256 of
//! its own content and of the previous row's hash, so [`verify`] finds the
//! first row that was modified, deleted or inserted out of band. Writers of
//! one tenant are serialised while they link a row (an advisory lock on
//! PostgreSQL; SQLite has a single writer), so the chain never forks.

use chrono::SecondsFormat;
use entities::audit_log;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::{Origin, Principal};
use crate::error::ApiResult;

/// One audited change.
pub struct Change<'a, T: Serialize> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<i64>,
    pub before: Option<&'a T>,
    pub after: Option<&'a T>,
}

/// Outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Denied => "DENIED",
        }
    }
}

/// Records a successful change made by `who`.
pub async fn record<C: ConnectionTrait, T: Serialize>(
    db: &C,
    who: &Principal,
    change: Change<'_, T>,
) -> ApiResult<()> {
    let json = |v: Option<&T>| v.and_then(|v| serde_json::to_value(v).ok());
    append(
        db,
        Entry {
            tenant_id: who.tenant_id,
            actor: who.actor.clone(),
            action: change.action.to_owned(),
            target_type: change.target_type.to_owned(),
            target_id: change.target_id,
            before: json(change.before),
            after: json(change.after),
            origin: who.origin.clone(),
            outcome: Outcome::Success,
        },
    )
    .await
}

/// An event that has no principal yet (a sign-in attempt) or did not
/// succeed; written in its own transaction.
pub struct Entry {
    pub tenant_id: i64,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<i64>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub origin: Origin,
    pub outcome: Outcome,
}

/// Records an event on its own (not inside another change's transaction).
pub async fn event(db: &sea_orm::DatabaseConnection, entry: Entry) -> ApiResult<()> {
    let txn = crate::db::begin_write(db).await?;
    append(&txn, entry).await?;
    txn.commit().await?;
    Ok(())
}

/// Appends a row and links it to the chain. Must run inside a transaction
/// (the lock and the link are released at its commit).
async fn append<C: ConnectionTrait>(db: &C, e: Entry) -> ApiResult<()> {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        db.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7202611, $1::int)",
            [sea_orm::Value::from(e.tenant_id as i32)],
        ))
        .await?;
    }
    // Inserting first takes SQLite's write lock before the chain head is read.
    let row = audit_log::ActiveModel {
        tenant_id: Set(e.tenant_id),
        actor: Set(e.actor),
        action: Set(e.action),
        target_type: Set(e.target_type),
        target_id: Set(e.target_id),
        before: Set(e.before),
        after: Set(e.after),
        created_at: Set(crate::clock::now()),
        source_ip: Set(e.origin.ip),
        user_agent: Set(e.origin.user_agent),
        result: Set(e.outcome.as_str().to_owned()),
        prev_hash: Set(None),
        hash: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    let prev: Option<Option<String>> = audit_log::Entity::find()
        .select_only()
        .column(audit_log::Column::Hash)
        .filter(audit_log::Column::TenantId.eq(row.tenant_id))
        .filter(audit_log::Column::Id.lt(row.id))
        .order_by_desc(audit_log::Column::Id)
        .into_tuple()
        .one(db)
        .await?;
    let prev = prev.flatten();
    let hash = content_hash(&row, prev.as_deref());
    let mut active: audit_log::ActiveModel = row.into();
    active.prev_hash = Set(prev);
    active.hash = Set(Some(hash));
    active.update(db).await?;
    Ok(())
}

/// SHA-256 over the row's content and the previous row's hash.
pub fn content_hash(row: &audit_log::Model, prev: Option<&str>) -> String {
    let content = serde_json::json!([
        prev,
        row.id,
        row.tenant_id,
        row.actor,
        row.action,
        row.target_type,
        row.target_id,
        row.before,
        row.after,
        row.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.source_ip,
        row.user_agent,
        row.result,
    ]);
    hex::encode(Sha256::digest(content.to_string().as_bytes()))
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Rows checked, in order, up to and including the first broken one.
    pub checked: u64,
    /// Leading rows written before the chain existed (an upgraded
    /// deployment); they are not covered by it.
    pub unsealed: u64,
    /// Id of the first row whose link or content does not match.
    pub first_broken_id: Option<i64>,
    pub reason: Option<String>,
}

/// Walks the tenant's chain from the start and reports the first broken link.
pub async fn verify(db: &impl ConnectionTrait, tenant_id: i64) -> ApiResult<Verification> {
    const PAGE: u64 = 1_000;
    let mut prev: Option<String> = None;
    let mut after = 0i64;
    let mut checked = 0u64;
    let mut unsealed = 0u64;
    let mut sealed_seen = false;
    loop {
        let rows = audit_log::Entity::find()
            .filter(audit_log::Column::TenantId.eq(tenant_id))
            .filter(audit_log::Column::Id.gt(after))
            .order_by_asc(audit_log::Column::Id)
            .limit(PAGE)
            .all(db)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(Verification {
                checked,
                unsealed,
                first_broken_id: None,
                reason: None,
            });
        };
        after = last.id;
        for row in &rows {
            checked += 1;
            if !sealed_seen && row.hash.is_none() && row.prev_hash.is_none() {
                unsealed += 1;
                continue;
            }
            sealed_seen = true;
            let broken = |reason: &str| Verification {
                checked,
                unsealed,
                first_broken_id: Some(row.id),
                reason: Some(reason.to_owned()),
            };
            if row.prev_hash != prev {
                return Ok(broken(
                    "its link does not match the previous row (a row was deleted or inserted before it)",
                ));
            }
            if row.hash.as_deref() != Some(content_hash(row, prev.as_deref()).as_str()) {
                return Ok(broken(
                    "its content does not match its hash (the row was modified)",
                ));
            }
            prev = row.hash.clone();
        }
    }
}
