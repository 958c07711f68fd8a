//! Who is calling and what they may see. Every service call takes a
//! [`Principal`]; list and lookup queries AND [`Principal::condition`] into
//! their SQL, so data outside the caller's scope does not exist for them.
//!
//! Until identity (OIDC, passwords, API keys) lands, the HTTP layer acts as
//! [`Principal::operator`] of the default tenant.

use entities::enums::Role;
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, EntityTrait};

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
}

impl Principal {
    /// Full access to one tenant, e.g. for the CLI, the demo generator and
    /// the single-operator embedded mode.
    pub fn operator(tenant_id: i64, actor: impl Into<String>) -> Self {
        Self {
            tenant_id,
            actor: actor.into(),
            role: Role::SuperAdmin,
            clients: None,
            sites: None,
        }
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
