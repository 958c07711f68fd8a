//! Stored scopes (JSON id lists on users and API keys) and what they mean
//! at request time: a site-scoped caller also sees the clients of its sites.

use entities::site;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;

use super::policy::Grant;
use crate::error::{ApiError, ApiResult};

/// Reads a stored id list (`null` or absent: the whole tenant).
pub fn ids_from_json(value: Option<&Value>) -> Option<Vec<i64>> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_i64).collect())
}

pub fn ids_to_json(ids: &Option<Vec<i64>>) -> Option<Value> {
    ids.as_ref().map(|v| Value::from(v.clone()))
}

/// `(site id, client id)` of the given sites of the tenant; an id that is
/// not a site of the tenant is a validation error.
pub async fn site_clients(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    sites: &[i64],
) -> ApiResult<Vec<(i64, i64)>> {
    let rows = site_pairs(db, tenant_id, sites).await?;
    if let Some(missing) = sites.iter().find(|s| !rows.iter().any(|(id, _)| id == *s)) {
        return Err(ApiError::validation(
            "siteIds",
            format!("site {missing} does not exist"),
        ));
    }
    Ok(rows)
}

/// `(site id, client id)` of those of the given sites that exist.
pub async fn site_pairs(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    sites: &[i64],
) -> ApiResult<Vec<(i64, i64)>> {
    if sites.is_empty() {
        return Ok(Vec::new());
    }
    Ok(site::Entity::find()
        .select_only()
        .column(site::Column::Id)
        .column(site::Column::ClientId)
        .filter(site::Column::TenantId.eq(tenant_id))
        .filter(site::Column::Id.is_in(sites.to_vec()))
        .into_tuple()
        .all(db)
        .await?)
}

/// Checks every client of a grant exists in the tenant.
pub async fn check_clients(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    clients: &[i64],
) -> ApiResult<()> {
    use entities::client;
    let found: Vec<i64> = client::Entity::find()
        .select_only()
        .column(client::Column::Id)
        .filter(client::Column::TenantId.eq(tenant_id))
        .filter(client::Column::Id.is_in(clients.to_vec()))
        .into_tuple()
        .all(db)
        .await?;
    match clients.iter().find(|c| !found.contains(c)) {
        Some(missing) => Err(ApiError::validation(
            "clientIds",
            format!("client {missing} does not exist"),
        )),
        None => Ok(()),
    }
}

/// The `(clients, sites)` a principal with this stored grant is limited to.
pub async fn effective(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    grant: &Grant,
) -> ApiResult<(Option<Vec<i64>>, Option<Vec<i64>>)> {
    match (&grant.clients, &grant.sites) {
        (_, Some(sites)) => {
            // Sites deleted since the grant simply drop out of the scope.
            let rows = site_pairs(db, tenant_id, sites).await?;
            let mut clients: Vec<i64> = rows.iter().map(|(_, c)| *c).collect();
            clients.sort_unstable();
            clients.dedup();
            Ok((Some(clients), Some(sites.clone())))
        }
        (Some(clients), None) => Ok((Some(clients.clone()), None)),
        (None, None) => Ok((None, None)),
    }
}

/// Validates a grant someone wants to hand out and checks the grantor may.
pub async fn check_grant(
    db: &impl ConnectionTrait,
    who: &super::Principal,
    grant: &Grant,
) -> ApiResult<()> {
    grant.validate()?;
    if let Some(clients) = &grant.clients {
        check_clients(db, who.tenant_id, clients).await?;
    }
    let sc = match &grant.sites {
        Some(sites) => site_clients(db, who.tenant_id, sites).await?,
        None => Vec::new(),
    };
    grant.grantable_by(who, &sc)
}
