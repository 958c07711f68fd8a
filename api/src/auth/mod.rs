//! Who is calling and what they may do.
//!
//! - [`authenticate`] turns `Authorization: Bearer …` (an access token, an
//!   API key, or the bootstrap admin key) into a [`Principal`], once per
//!   request or WebSocket connection. Anonymous callers get nothing.
//! - [`policy`] is the permission matrix: every service call that changes
//!   something asks it first (`who.require(Action::…)`), and every read ANDs
//!   [`Principal::condition`] into its SQL, so data outside the caller's
//!   scope does not exist for them (NOT_FOUND, never FORBIDDEN, on reads).
//! - Identities: local accounts ([`password`], [`login`]), single sign-on
//!   ([`oidc`]), machine keys ([`api_keys`]); [`sessions`] issue and revoke
//!   tokens; [`users`] manages accounts; [`ratelimit`] bounds request rates;
//!   [`routes`] and [`graphql`] are their HTTP and GraphQL surfaces.

pub mod api_keys;
pub mod authenticate;
pub mod denials;
pub mod graphql;
pub mod login;
pub mod oidc;
pub mod password;
pub mod policy;
pub mod ratelimit;
pub mod routes;
pub mod scope;
pub mod secret;
pub mod sessions;
pub mod users;

use entities::enums::Role;
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait};

pub use authenticate::Authenticator;
pub use policy::Action;

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Origin {
    /// Reads the peer address (or the first `X-Forwarded-For` hop, which a
    /// reverse proxy sets) and the user agent of an HTTP request.
    pub fn of(req: &poem::Request) -> Self {
        let forwarded = req
            .header("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let peer = req
            .remote_addr()
            .as_socket_addr()
            .map(|a| a.ip().to_string());
        Self {
            ip: forwarded.or(peer).map(|s| s.chars().take(64).collect()),
            user_agent: req
                .header(poem::http::header::USER_AGENT)
                .map(|s| s.chars().take(400).collect()),
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The server itself (CLI, demo generator, pollers).
    System,
    /// The key of `TRACKINGBMS_ADMIN_API_KEY`.
    BootstrapKey,
    /// An API key used directly as a bearer token.
    ApiKey { key_id: i64 },
    /// An access token of a session (a user's, or an API key's that used
    /// the client-credentials grant).
    Session {
        session_id: i64,
        user_id: Option<i64>,
        key_id: Option<i64>,
    },
}

/// The authenticated caller, resolved once per request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: i64,
    /// Recorded in the audit log: `user:<id>`, `api-key:<id>`, `system:<what>`.
    pub actor: String,
    pub role: Role,
    /// `Some` restricts the caller to these clients.
    pub clients: Option<Vec<i64>>,
    /// `Some` restricts the caller to these sites.
    pub sites: Option<Vec<i64>>,
    pub credential: Credential,
    pub origin: Origin,
}

impl Principal {
    /// Full access to one tenant, for the server's own jobs (CLI, demo
    /// generator, pollers); never handed to a network caller.
    pub fn operator(tenant_id: i64, actor: impl Into<String>) -> Self {
        Self {
            tenant_id,
            actor: actor.into(),
            role: Role::SuperAdmin,
            clients: None,
            sites: None,
            credential: Credential::System,
            origin: Origin::default(),
        }
    }

    /// The id of the signed-in user, when the caller is one.
    pub fn user_id(&self) -> Option<i64> {
        match self.credential {
            Credential::Session { user_id, .. } => user_id,
            _ => None,
        }
    }

    /// The key that rate limits and throttling count against.
    pub fn rate_key(&self) -> String {
        match self.credential {
            Credential::Session {
                user_id: Some(u), ..
            } => format!("user:{u}"),
            Credential::Session {
                key_id: Some(k), ..
            }
            | Credential::ApiKey { key_id: k } => format!("api-key:{k}"),
            _ => self.actor.clone(),
        }
    }

    /// Whether a battery at `o` is within this caller's scope: the rule of
    /// [`Self::condition`], on a place already known.
    pub fn sees(&self, o: &crate::bus::Owner) -> bool {
        o.tenant_id == self.tenant_id
            && self
                .clients
                .as_ref()
                .is_none_or(|c| c.contains(&o.client_id))
            && self.sites.as_ref().is_none_or(|s| s.contains(&o.site_id))
    }

    /// The SQL predicate that limits entity `E` to this caller's scope.
    pub fn condition<E: Scoped>(&self) -> Condition {
        let mut cond = Condition::all().add(E::tenant_col().eq(self.tenant_id));
        if let Some(clients) = &self.clients {
            cond = cond.add(E::client_col().is_in(clients.clone()));
        }
        // A site-scoped caller sees only the clients of its sites, which
        // `clients` lists; below clients, rows carry their site.
        if let (Some(sites), Some(col)) = (&self.sites, E::site_col()) {
            cond = cond.add(col.is_in(sites.clone()));
        }
        cond
    }
}

/// An entity that belongs to a tenant, a client and (below clients) a site.
pub trait Scoped: EntityTrait {
    fn id_col() -> Self::Column;
    fn tenant_col() -> Self::Column;
    fn client_col() -> Self::Column;
    fn site_col() -> Option<Self::Column>;
}

macro_rules! scoped {
    ($module:ident, $client:ident, $site:expr) => {
        impl Scoped for entities::$module::Entity {
            fn id_col() -> Self::Column {
                entities::$module::Column::Id
            }
            fn tenant_col() -> Self::Column {
                entities::$module::Column::TenantId
            }
            fn client_col() -> Self::Column {
                entities::$module::Column::$client
            }
            fn site_col() -> Option<Self::Column> {
                $site
            }
        }
    };
}

scoped!(client, Id, None);
scoped!(site, ClientId, Some(entities::site::Column::Id));
scoped!(zone, ClientId, Some(entities::zone::Column::SiteId));
scoped!(bms, ClientId, Some(entities::bms::Column::SiteId));
scoped!(battery, ClientId, Some(entities::battery::Column::SiteId));

/// The identity services of one running instance; cheap to clone.
#[derive(Clone)]
pub struct Identity {
    pub db: sea_orm::DatabaseConnection,
    pub config: std::sync::Arc<crate::config::AuthConfig>,
    pub authenticator: Authenticator,
    /// Requests per minute of one user or key.
    pub requests: ratelimit::RateLimiter,
    /// Sign-in attempts per minute from one address.
    pub logins: ratelimit::RateLimiter,
    pub oidc: std::sync::Arc<oidc::Providers>,
    pub default_tenant: i64,
}

impl Identity {
    pub async fn new(
        db: sea_orm::DatabaseConnection,
        config: &crate::Config,
        default_tenant: i64,
    ) -> anyhow::Result<Self> {
        let auth = config.auth.clone();
        if let Some(key) = &auth.admin_api_key
            && key.len() < 16
        {
            anyhow::bail!(
                "auth.admin_api_key (TRACKINGBMS_ADMIN_API_KEY) must be at least 16 characters"
            );
        }
        let redis = config.redis_url.as_deref().filter(|u| !u.is_empty());
        Ok(Self {
            authenticator: Authenticator::new(
                db.clone(),
                default_tenant,
                auth.admin_api_key.as_deref(),
            ),
            requests: ratelimit::RateLimiter::new(
                "req",
                config.limits.requests_per_minute,
                redis,
                &config.limits.redis_key_prefix,
            )
            .await?,
            logins: ratelimit::RateLimiter::new(
                "login",
                auth.login_attempts_per_minute,
                redis,
                &config.limits.redis_key_prefix,
            )
            .await?,
            oidc: std::sync::Arc::new(oidc::Providers::discover(&db, &auth.oidc).await?),
            config: std::sync::Arc::new(auth),
            db,
            default_tenant,
        })
    }

    /// Authenticates an HTTP request and counts it against the caller's
    /// rate limit.
    pub async fn request_principal(
        &self,
        req: &poem::Request,
    ) -> crate::error::ApiResult<Principal> {
        let token = req
            .header(poem::http::header::AUTHORIZATION)
            .and_then(authenticate::bearer);
        let who = self
            .authenticator
            .authenticate(token, Origin::of(req))
            .await?;
        self.requests.check(&who.rate_key()).await?;
        Ok(who)
    }
}
