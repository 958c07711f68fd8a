//! Single sign-on with OpenID Connect providers (`[[auth.oidc]]`):
//! authorization code flow with PKCE, `state` and `nonce`; the ID token is
//! checked against the provider's JWKS (signature, issuer, audience,
//! expiry, nonce) by `openidconnect`. The provider's subject, e-mail and
//! groups are mapped to a user of the configured tenant and a role.
//!
//! Discovery happens on first use (and is retried on later logins if the
//! provider was unreachable), so a provider outage never stops the server.
//! A login in flight is stored in the database, so any replica may receive
//! the callback.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use entities::enums::Role;
use entities::{oidc_login, tenant, user};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    Set,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::policy::{parse_role, rank};
use super::sessions::{self, Subject, Tokens};
use super::{Identity, Origin, login::record_attempt};
use crate::audit::Outcome;
use crate::clock::now;
use crate::config::OidcProviderConfig;
use crate::error::{ApiError, ApiResult, ErrorCode};

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long a login may take between redirect and callback.
const LOGIN_TTL_MINUTES: i64 = 10;

/// One configured provider and, once discovered, its client.
pub struct Provider {
    pub config: OidcProviderConfig,
    client: Mutex<Option<Client>>,
}

/// The configured providers, by name.
pub struct Providers {
    by_name: HashMap<String, Provider>,
    http: openidconnect::reqwest::Client,
}

fn sso_error(message: impl Into<String>) -> ApiError {
    ApiError::auth(ErrorCode::InvalidCredentials, message)
}

impl Providers {
    /// Checks the configuration; discovery waits for the first login.
    pub async fn discover(
        _db: &DatabaseConnection,
        configs: &[OidcProviderConfig],
    ) -> anyhow::Result<Self> {
        let mut by_name = HashMap::new();
        for c in configs {
            IssuerUrl::new(c.issuer_url.clone())
                .map_err(|e| anyhow::anyhow!("auth.oidc '{}': issuer_url: {e}", c.name))?;
            RedirectUrl::new(c.redirect_url.clone())
                .map_err(|e| anyhow::anyhow!("auth.oidc '{}': redirect_url: {e}", c.name))?;
            for role in c.role_mapping.values().chain(c.default_role.iter()) {
                if parse_role(role).is_none() {
                    anyhow::bail!("auth.oidc '{}': '{role}' is not a role", c.name);
                }
            }
            by_name.insert(
                c.name.clone(),
                Provider {
                    config: c.clone(),
                    client: Mutex::new(None),
                },
            );
        }
        // Following redirects from a provider's endpoints would open the
        // server to request forgery.
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self { by_name, http })
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    fn provider(&self, name: &str) -> ApiResult<&Provider> {
        self.by_name
            .get(name)
            .ok_or_else(|| ApiError::NotFound(format!("single sign-on provider '{name}'")))
    }

    async fn client(&self, p: &Provider) -> ApiResult<Client> {
        let mut cached = p.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let issuer = IssuerUrl::new(p.config.issuer_url.clone())
            .map_err(|e| ApiError::validation("issuer_url", e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %p.config.name, error = %e, "OpenID provider discovery failed");
                ApiError::RetryLater(format!(
                    "the single sign-on provider '{}' is unreachable; try again later",
                    p.config.name
                ))
            })?;
        let redirect = RedirectUrl::new(p.config.redirect_url.clone())
            .map_err(|e| ApiError::validation("redirect_url", e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(p.config.client_id.clone()),
            p.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        *cached = Some(client.clone());
        Ok(client)
    }

    /// Starts a login: stores state, nonce and PKCE verifier, and returns
    /// the provider URL to redirect the browser to.
    pub async fn begin(&self, db: &DatabaseConnection, name: &str) -> ApiResult<String> {
        let p = self.provider(name)?;
        let client = self.client(p).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in &p.config.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.url();
        // Logins abandoned half-way are swept on the way.
        oidc_login::Entity::delete_many()
            .filter(oidc_login::Column::CreatedAt.lt(now() - Duration::minutes(LOGIN_TTL_MINUTES)))
            .exec(db)
            .await?;
        oidc_login::ActiveModel {
            state: Set(state.secret().clone()),
            provider: Set(name.to_owned()),
            pkce_verifier: Set(verifier.secret().clone()),
            nonce: Set(nonce.secret().clone()),
            created_at: Set(now()),
        }
        .insert(db)
        .await?;
        Ok(url.to_string())
    }

    /// Completes a login from the provider's redirect.
    pub async fn finish(
        &self,
        id: &Identity,
        name: &str,
        code: &str,
        state: &str,
        origin: &Origin,
    ) -> ApiResult<Tokens> {
        let p = self.provider(name)?;
        let pending = oidc_login::Entity::find_by_id(state.to_owned())
            .one(&id.db)
            .await?
            .filter(|l| l.provider == name)
            .ok_or_else(|| {
                sso_error("unknown or already used login state; start the login again")
            })?;
        // One use only, whatever happens next.
        oidc_login::Entity::delete_by_id(pending.state.clone())
            .exec(&id.db)
            .await?;
        if pending.created_at < now() - Duration::minutes(LOGIN_TTL_MINUTES) {
            return Err(sso_error("the login took too long; start it again"));
        }
        let client = self.client(p).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| sso_error(format!("provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| sso_error(format!("the provider refused the code: {e}")))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| sso_error("the provider returned no ID token"))?;
        self.sign_in(
            id,
            p,
            &client,
            &id_token.to_string(),
            &pending.nonce,
            origin,
        )
        .await
    }

    /// Validates an ID token of provider `name` issued for `nonce` (the
    /// checks of a login's callback, without signing anyone in).
    pub async fn verify_id_token(&self, name: &str, raw: &str, nonce: &str) -> ApiResult<Claims> {
        let p = self.provider(name)?;
        let client = self.client(p).await?;
        validate_id_token(&client, raw, nonce, &p.config.groups_claim).map_err(sso_error)
    }

    /// Validates an ID token and signs its subject in.
    async fn sign_in(
        &self,
        id: &Identity,
        p: &Provider,
        client: &Client,
        raw_id_token: &str,
        nonce: &str,
        origin: &Origin,
    ) -> ApiResult<Tokens> {
        let tenant = tenant::Entity::find()
            .filter(tenant::Column::Slug.eq(&p.config.tenant))
            .one(&id.db)
            .await?
            .ok_or_else(|| {
                ApiError::validation(
                    "tenant",
                    format!("tenant '{}' does not exist", p.config.tenant),
                )
            })?;
        let claims = match validate_id_token(client, raw_id_token, nonce, &p.config.groups_claim) {
            Ok(c) => c,
            Err(reason) => {
                record_attempt(
                    id,
                    tenant.id,
                    None,
                    "oidc",
                    json!({ "provider": p.config.name, "reason": reason }),
                    Outcome::Failure,
                    origin,
                )
                .await;
                return Err(sso_error(format!("ID token rejected: {reason}")));
            }
        };
        let user = match self.map_user(id, p, tenant.id, &claims).await {
            Ok(u) => u,
            Err(err) => {
                record_attempt(id, tenant.id, None, "oidc", json!({ "provider": p.config.name, "subject": claims.subject, "reason": err.to_string() }), Outcome::Failure, origin).await;
                return Err(err);
            }
        };
        let tokens = sessions::issue(
            &id.db,
            &id.config,
            tenant.id,
            Subject::User(user.id),
            origin,
        )
        .await?;
        record_attempt(
            id,
            tenant.id,
            Some(user.id),
            "oidc",
            json!({ "provider": p.config.name, "subject": claims.subject, "email": claims.email, "groups": claims.groups }),
            Outcome::Success,
            origin,
        )
        .await;
        Ok(tokens)
    }

    /// Finds or creates the user of these claims and applies the role mapping.
    async fn map_user(
        &self,
        id: &Identity,
        p: &Provider,
        tenant_id: i64,
        claims: &Claims,
    ) -> ApiResult<user::Model> {
        let role = mapped_role(&p.config, &claims.groups).ok_or_else(|| {
            ApiError::Forbidden(
                "your groups grant no role in TrackingBMS; ask an administrator".into(),
            )
        })?;
        let by_subject = user::Entity::find()
            .filter(user::Column::OidcIssuer.eq(&claims.issuer))
            .filter(user::Column::OidcSubject.eq(&claims.subject))
            .one(&id.db)
            .await?;
        let existing = match by_subject {
            Some(u) => Some(u),
            // Link an existing local account only on a verified address.
            None => match (&claims.email, claims.email_verified) {
                (Some(email), true) => {
                    user::Entity::find()
                        .filter(user::Column::TenantId.eq(tenant_id))
                        .filter(user::Column::Email.eq(email.to_lowercase()))
                        .filter(user::Column::OidcSubject.is_null())
                        .one(&id.db)
                        .await?
                }
                _ => None,
            },
        };
        let at = now();
        match existing {
            Some(u) if u.tenant_id != tenant_id || u.disabled => {
                Err(sso_error("this account is disabled"))
            }
            Some(u) => {
                let mut active = u.clone().into_active_model();
                active.oidc_issuer = Set(Some(claims.issuer.clone()));
                active.oidc_subject = Set(Some(claims.subject.clone()));
                if u.role != role {
                    active.role = Set(role);
                    if role == Role::SuperAdmin {
                        active.client_ids = Set(None);
                        active.site_ids = Set(None);
                    }
                }
                active.last_login_at = Set(Some(at));
                active.updated_at = Set(at);
                Ok(active.update(&id.db).await?)
            }
            None => {
                let email = claims
                    .email
                    .clone()
                    .unwrap_or_else(|| format!("{}@{}", claims.subject, p.config.name))
                    .to_lowercase();
                Ok(user::ActiveModel {
                    tenant_id: Set(tenant_id),
                    email: Set(email),
                    display_name: Set(claims.name.clone()),
                    role: Set(role),
                    client_ids: Set(None),
                    site_ids: Set(None),
                    password_hash: Set(None),
                    totp_secret: Set(None),
                    totp_enabled: Set(false),
                    disabled: Set(false),
                    failed_logins: Set(0),
                    locked_until: Set(None),
                    oidc_issuer: Set(Some(claims.issuer.clone())),
                    oidc_subject: Set(Some(claims.subject.clone())),
                    last_login_at: Set(Some(at)),
                    created_at: Set(at),
                    updated_at: Set(at),
                    ..Default::default()
                }
                .insert(&id.db)
                .await?)
            }
        }
    }
}

/// What the server keeps of a validated ID token.
#[derive(Debug, Clone)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// Checks signature (JWKS), issuer, audience, expiry and nonce; then reads
/// the groups claim from the (now trusted) payload.
fn validate_id_token(
    client: &Client,
    raw: &str,
    nonce: &str,
    groups_claim: &str,
) -> Result<Claims, String> {
    let token: openidconnect::core::CoreIdToken = raw
        .parse()
        .map_err(|e: serde_json::Error| format!("malformed ID token: {e}"))?;
    let verifier = client.id_token_verifier();
    let claims = token
        .claims(&verifier, &Nonce::new(nonce.to_owned()))
        .map_err(|e| e.to_string())?;
    let payload: Value = raw
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let groups = match payload.get(groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s.split(',').map(|g| g.trim().to_owned()).collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string()),
        groups,
    })
}

/// The highest role any of the groups maps to, else the default role.
pub fn mapped_role(config: &OidcProviderConfig, groups: &[String]) -> Option<Role> {
    groups
        .iter()
        .filter_map(|g| config.role_mapping.get(g))
        .filter_map(|r| parse_role(r))
        .max_by_key(|r| rank(*r))
        .or_else(|| config.default_role.as_deref().and_then(parse_role))
}
