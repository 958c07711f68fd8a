//! Bearer credentials → [`Principal`]. Three kinds of token are accepted:
//! session access tokens (`tba_…`), API keys (`tbk_<id>_<secret>`), and the
//! bootstrap key of `TRACKINGBMS_ADMIN_API_KEY`. Each request reloads the
//! user or key, so disabling an account, revoking a key or changing a role
//! takes effect on the next request, on every replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entities::{api_key, user};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, sea_query::Expr};

use super::policy::Grant;
use super::secret::{ACCESS_PREFIX, API_KEY_PREFIX, same, sha256_hex};
use super::{Credential, Origin, Principal, scope, sessions};
use crate::clock::now;
use crate::error::{ApiError, ApiResult, ErrorCode};

/// `last_used_at` of an API key is written at most this often.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// Resolves credentials; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    db: DatabaseConnection,
    default_tenant: i64,
    /// SHA-256 of the bootstrap admin key, when configured.
    bootstrap: Option<Arc<str>>,
    last_used: Arc<Mutex<HashMap<i64, Instant>>>,
}

pub fn unauthenticated() -> ApiError {
    ApiError::auth(
        ErrorCode::Unauthenticated,
        "authentication required: send `Authorization: Bearer <access token or API key>`",
    )
}

fn invalid() -> ApiError {
    ApiError::auth(
        ErrorCode::Unauthenticated,
        "the bearer token is invalid, expired or revoked",
    )
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Parses `tbk_<id>_<secret>`.
pub fn parse_api_key(token: &str) -> Option<(i64, &str)> {
    let rest = token.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    Some((id.parse().ok()?, secret))
}

impl Authenticator {
    pub fn new(db: DatabaseConnection, default_tenant: i64, admin_api_key: Option<&str>) -> Self {
        Self {
            db,
            default_tenant,
            bootstrap: admin_api_key
                .filter(|k| !k.is_empty())
                .map(|k| Arc::from(sha256_hex(k).as_str())),
            last_used: Arc::default(),
        }
    }

    /// The caller presenting `token` (the value after `Bearer `).
    pub async fn authenticate(&self, token: Option<&str>, origin: Origin) -> ApiResult<Principal> {
        let token = token.ok_or_else(unauthenticated)?;
        if let Some(boot) = &self.bootstrap
            && same(&sha256_hex(token), boot)
        {
            return Ok(Principal {
                actor: "api-key:bootstrap".into(),
                credential: Credential::BootstrapKey,
                origin,
                ..Principal::operator(self.default_tenant, "")
            });
        }
        if token.starts_with(ACCESS_PREFIX) {
            return self.session(token, origin).await;
        }
        if let Some((id, secret)) = parse_api_key(token) {
            let key = self.api_key(id, secret).await?;
            let mut who = self.key_principal(&key, origin).await?;
            who.credential = Credential::ApiKey { key_id: key.id };
            return Ok(who);
        }
        Err(invalid())
    }

    async fn session(&self, token: &str, origin: Origin) -> ApiResult<Principal> {
        let session = sessions::by_access_token(&self.db, token)
            .await?
            .ok_or_else(invalid)?;
        let mut who = match (session.user_id, session.api_key_id) {
            (Some(user_id), _) => {
                let user = user::Entity::find_by_id(user_id)
                    .one(&self.db)
                    .await?
                    .filter(|u| !u.disabled)
                    .ok_or_else(invalid)?;
                self.user_principal(&user, origin).await?
            }
            (None, Some(key_id)) => {
                let key = api_key::Entity::find_by_id(key_id)
                    .one(&self.db)
                    .await?
                    .filter(key_usable)
                    .ok_or_else(invalid)?;
                self.key_principal(&key, origin).await?
            }
            (None, None) => return Err(invalid()),
        };
        who.credential = Credential::Session {
            session_id: session.id,
            user_id: session.user_id,
            key_id: session.api_key_id,
        };
        Ok(who)
    }

    /// The usable key with this id and secret.
    pub async fn api_key(&self, id: i64, secret: &str) -> ApiResult<api_key::Model> {
        let key = api_key::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(key_usable)
            .ok_or_else(invalid)?;
        if !same(&sha256_hex(secret), &key.secret_hash) {
            return Err(invalid());
        }
        self.touch(key.id).await;
        Ok(key)
    }

    async fn touch(&self, key_id: i64) {
        let due = {
            let Ok(mut seen) = self.last_used.lock() else {
                return;
            };
            let due = seen
                .get(&key_id)
                .is_none_or(|t| t.elapsed() >= LAST_USED_EVERY);
            if due {
                seen.insert(key_id, Instant::now());
            }
            due
        };
        if due
            && let Err(err) = api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(now()))
                .filter(api_key::Column::Id.eq(key_id))
                .exec(&self.db)
                .await
        {
            tracing::warn!(%err, key_id, "could not record the use of an API key");
        }
    }

    /// The principal of a signed-in user.
    pub async fn user_principal(&self, user: &user::Model, origin: Origin) -> ApiResult<Principal> {
        let grant = Grant {
            role: user.role,
            clients: scope::ids_from_json(user.client_ids.as_ref()),
            sites: scope::ids_from_json(user.site_ids.as_ref()),
        };
        let (clients, sites) = scope::effective(&self.db, user.tenant_id, &grant).await?;
        Ok(Principal {
            tenant_id: user.tenant_id,
            actor: format!("user:{}", user.id),
            role: user.role,
            clients,
            sites,
            credential: Credential::System,
            origin,
        })
    }

    async fn key_principal(&self, key: &api_key::Model, origin: Origin) -> ApiResult<Principal> {
        let grant = Grant {
            role: key.role,
            clients: scope::ids_from_json(key.client_ids.as_ref()),
            sites: scope::ids_from_json(key.site_ids.as_ref()),
        };
        let (clients, sites) = scope::effective(&self.db, key.tenant_id, &grant).await?;
        Ok(Principal {
            tenant_id: key.tenant_id,
            actor: format!("api-key:{}", key.id),
            role: key.role,
            clients,
            sites,
            credential: Credential::ApiKey { key_id: key.id },
            origin,
        })
    }
}

/// Not revoked and not expired.
pub fn key_usable(key: &api_key::Model) -> bool {
    key.revoked_at.is_none() && !sessions::expired(key.expires_at)
}
