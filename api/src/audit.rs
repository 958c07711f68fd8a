//! The audit log: every change of configuration is recorded in the same
//! transaction as the change, with who did it and the state before and after.

use entities::audit_log;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde::Serialize;

use crate::auth::Principal;
use crate::error::ApiResult;

/// One audited change.
pub struct Change<'a, T: Serialize> {
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<i64>,
    pub before: Option<&'a T>,
    pub after: Option<&'a T>,
}

pub async fn record<C: ConnectionTrait, T: Serialize>(
    db: &C,
    who: &Principal,
    change: Change<'_, T>,
) -> ApiResult<()> {
    let json = |v: Option<&T>| v.and_then(|v| serde_json::to_value(v).ok());
    audit_log::ActiveModel {
        tenant_id: Set(who.tenant_id),
        actor: Set(who.actor.clone()),
        action: Set(change.action.to_owned()),
        target_type: Set(change.target_type.to_owned()),
        target_id: Set(change.target_id),
        before: Set(json(change.before)),
        after: Set(json(change.after)),
        created_at: Set(crate::clock::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}
