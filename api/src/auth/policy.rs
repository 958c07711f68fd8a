//! The permission matrix: which role may do what, and what a role may
//! grant to others. It follows the user manual (section Administration):
//!
//! | action            | SUPER_ADMIN | CLIENT_ADMIN | SITE_MANAGER | TECHNICIAN | OBSERVER |
//! |-------------------|:-:|:-:|:-:|:-:|:-:|
//! | read fleet, live data, predictions | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | create / delete clients            | ✓ |   |   |   |   |
//! | edit own client                    | ✓ | ✓ |   |   |   |
//! | create / edit / delete sites       | ✓ | ✓ |   |   |   |
//! | zones, BMS units, batteries        | ✓ | ✓ | ✓ |   |   |
//! | submit telemetry (field data)      | ✓ | ✓ | ✓ | ✓ |   |
//! | manage users                       | ✓ | ✓ | limited |  |   |
//! | manage API keys                    | ✓ | ✓ |   |   |   |
//! | read, verify, export the audit log | ✓ |   |   |   |   |
//! | upload, enable, dry-run plugins    | ✓ | ✓ |   |   |   |
//!
//! "Limited": a grantor gives only roles below its own (SUPER_ADMIN may give
//! SUPER_ADMIN) within its own scope, so a site manager can add technicians
//! and observers to its sites and nothing else. Scope always narrows what a
//! role allows: a client admin edits only its own clients.

use entities::enums::Role;

use super::Principal;
use crate::error::{ApiError, ApiResult};

/// Something a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadFleet,
    ManageClients,
    EditClient,
    ManageSites,
    ManageEquipment,
    IngestTelemetry,
    ManageUsers,
    ManageApiKeys,
    ReadAudit,
    ManagePlugins,
    ManageModels,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Self::ReadFleet => "read the fleet",
            Self::ManageClients => "create or delete clients",
            Self::EditClient => "edit clients",
            Self::ManageSites => "manage sites",
            Self::ManageEquipment => "manage zones, BMS units and batteries",
            Self::IngestTelemetry => "submit telemetry",
            Self::ManageUsers => "manage users",
            Self::ManageApiKeys => "manage API keys",
            Self::ReadAudit => "read the audit log",
            Self::ManagePlugins => "manage plugins",
            Self::ManageModels => "manage prediction models",
        }
    }
}

/// Rank used to decide which roles a grantor may hand out.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::SuperAdmin => 5,
        Role::ClientAdmin => 4,
        Role::SiteManager => 3,
        Role::Technician => 2,
        Role::Observer => 1,
    }
}

/// The matrix above.
pub fn allows(role: Role, action: Action) -> bool {
    use Action::*;
    let needed = match action {
        ReadFleet => Role::Observer,
        IngestTelemetry => Role::Technician,
        ManageEquipment | ManageUsers => Role::SiteManager,
        EditClient | ManageSites | ManageApiKeys | ManagePlugins => Role::ClientAdmin,
        ManageClients | ReadAudit | ManageModels => Role::SuperAdmin,
    };
    rank(role) >= rank(needed)
}

/// The GraphQL/config spelling of a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::SuperAdmin => "SUPER_ADMIN",
        Role::ClientAdmin => "CLIENT_ADMIN",
        Role::SiteManager => "SITE_MANAGER",
        Role::Technician => "TECHNICIAN",
        Role::Observer => "OBSERVER",
    }
}

/// Parses `SUPER_ADMIN`, `client_admin`, … (CLI and configuration).
pub fn parse_role(text: &str) -> Option<Role> {
    [
        Role::SuperAdmin,
        Role::ClientAdmin,
        Role::SiteManager,
        Role::Technician,
        Role::Observer,
    ]
    .into_iter()
    .find(|r| role_name(*r).eq_ignore_ascii_case(text.trim()))
}

impl Principal {
    /// `FORBIDDEN` unless the caller's role allows `action`.
    pub fn require(&self, action: Action) -> ApiResult<()> {
        if allows(self.role, action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not {}",
                role_name(self.role),
                action.describe()
            )))
        }
    }

    /// True when this caller sees the whole tenant.
    pub fn tenant_wide(&self) -> bool {
        self.clients.is_none() && self.sites.is_none()
    }
}

/// A role with the scope it applies to, as stored for users and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// `None`: the whole tenant.
    pub clients: Option<Vec<i64>>,
    pub sites: Option<Vec<i64>>,
}

impl Grant {
    /// Checks the grant is well formed: a super admin spans the tenant, a
    /// client admin spans clients (not single sites), and a scope names at
    /// least one client or site.
    pub fn validate(&self) -> ApiResult<()> {
        if self.clients.is_some() && self.sites.is_some() {
            return Err(ApiError::validation(
                "scope",
                "give either clients or sites, not both",
            ));
        }
        if matches!(&self.clients, Some(c) if c.is_empty())
            || matches!(&self.sites, Some(s) if s.is_empty())
        {
            return Err(ApiError::validation(
                "scope",
                "a scope lists at least one client or site (leave it out for the whole tenant)",
            ));
        }
        match self.role {
            Role::SuperAdmin if self.clients.is_some() || self.sites.is_some() => Err(
                ApiError::validation("role", "SUPER_ADMIN always spans the whole tenant"),
            ),
            Role::ClientAdmin if self.sites.is_some() => Err(ApiError::validation(
                "role",
                "CLIENT_ADMIN is scoped to clients, not sites",
            )),
            _ => Ok(()),
        }
    }

    /// May `who` hand out this grant? `site_clients` gives the client of
    /// every site the grant names.
    pub fn grantable_by(&self, who: &Principal, site_clients: &[(i64, i64)]) -> ApiResult<()> {
        if who.role != Role::SuperAdmin && rank(self.role) >= rank(who.role) {
            return Err(ApiError::Forbidden(format!(
                "role {} may only grant roles below its own",
                role_name(who.role)
            )));
        }
        let within = match (&who.clients, &who.sites) {
            (None, None) => true,
            (_, Some(mine)) => self
                .sites
                .as_ref()
                .is_some_and(|s| s.iter().all(|x| mine.contains(x))),
            (Some(mine), None) => match (&self.clients, &self.sites) {
                (Some(c), _) => c.iter().all(|x| mine.contains(x)),
                (None, Some(_)) => site_clients.iter().all(|(_, c)| mine.contains(c)),
                (None, None) => false,
            },
        };
        if within {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "the scope granted must lie within the grantor's own scope".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, clients: Option<Vec<i64>>, sites: Option<Vec<i64>>) -> Principal {
        Principal {
            role,
            clients,
            sites,
            ..Principal::operator(1, "t")
        }
    }

    #[test]
    fn site_manager_grants_technicians_on_its_own_sites_only() {
        let sm = who(Role::SiteManager, Some(vec![1]), Some(vec![10, 11]));
        let tech = |sites| Grant {
            role: Role::Technician,
            clients: None,
            sites: Some(sites),
        };
        assert!(tech(vec![10]).grantable_by(&sm, &[(10, 1)]).is_ok());
        assert!(tech(vec![12]).grantable_by(&sm, &[(12, 1)]).is_err());
        let peer = Grant {
            role: Role::SiteManager,
            ..tech(vec![10])
        };
        assert!(peer.grantable_by(&sm, &[(10, 1)]).is_err());
    }

    #[test]
    fn client_admin_cannot_grant_the_whole_tenant() {
        let ca = who(Role::ClientAdmin, Some(vec![1]), None);
        let wide = Grant {
            role: Role::Observer,
            clients: None,
            sites: None,
        };
        assert!(wide.grantable_by(&ca, &[]).is_err());
        let other_client_site = Grant {
            role: Role::Observer,
            clients: None,
            sites: Some(vec![20]),
        };
        assert!(other_client_site.grantable_by(&ca, &[(20, 2)]).is_err());
        assert!(other_client_site.grantable_by(&ca, &[(20, 1)]).is_ok());
    }

    #[test]
    fn roles_parse_in_any_case() {
        assert_eq!(parse_role("site_manager"), Some(Role::SiteManager));
        assert_eq!(parse_role("ROOT"), None);
    }
}
