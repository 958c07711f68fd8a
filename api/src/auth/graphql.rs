//! GraphQL surface of identity and accountability: `viewer`, user and API
//! key management, second-factor enrolment, the audit log and its
//! verification; plus `GET /audit/export` (NDJSON or CSV).

use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, MaybeUndefined, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};
use entities::enums as db;
use entities::{api_key, audit_log, user};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::policy::{Action, Grant};
use super::{Identity, Principal, api_keys, users};
use crate::error::ApiError;
use crate::ids::{self, Kind, Other};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "db::Role")]
pub enum Role {
    SuperAdmin,
    ClientAdmin,
    SiteManager,
    Technician,
    Observer,
}

fn who<'a>(ctx: &Context<'a>) -> Result<&'a Principal> {
    ctx.data::<Principal>()
}

fn identity<'a>(ctx: &Context<'a>) -> Result<&'a Identity> {
    ctx.data::<Identity>()
}

fn global(kind: Kind, list: Option<Vec<i64>>) -> Option<Vec<ID>> {
    list.map(|v| v.into_iter().map(|id| ids::encode(kind, id)).collect())
}

fn decode_list(kind: Kind, list: Option<Vec<ID>>) -> Result<Option<Vec<i64>>> {
    list.map(|v| {
        v.iter()
            .map(|id| ids::decode(kind, id))
            .collect::<Result<Vec<_>, _>>()
    })
    .transpose()
    .map_err(|e| e.extend())
}

/// The caller: who they are and what they may reach.
pub struct Viewer(Principal, Option<user::Model>);

#[Object]
impl Viewer {
    /// As recorded in the audit log: `user:<id>`, `api-key:<id>`, …
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    /// Clients the caller is limited to; null for the whole tenant.
    async fn client_ids(&self) -> Option<Vec<ID>> {
        global(Kind::Client, self.0.clients.clone())
    }
    /// Sites the caller is limited to; null when not limited to sites.
    async fn site_ids(&self) -> Option<Vec<ID>> {
        global(Kind::Site, self.0.sites.clone())
    }
    /// The signed-in user's account; null for API keys.
    async fn user(&self) -> Option<User> {
        self.1.clone().map(User)
    }
}

pub struct User(pub user::Model);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ids::encode_other(Other::User, self.0.id)
    }
    async fn email(&self) -> &str {
        &self.0.email
    }
    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    async fn client_ids(&self) -> Option<Vec<ID>> {
        global(Kind::Client, users::grant_of(&self.0).clients)
    }
    async fn site_ids(&self) -> Option<Vec<ID>> {
        global(Kind::Site, users::grant_of(&self.0).sites)
    }
    async fn disabled(&self) -> bool {
        self.0.disabled
    }
    async fn totp_enabled(&self) -> bool {
        self.0.totp_enabled
    }
    /// True when the account signs in through single sign-on.
    async fn sso(&self) -> bool {
        self.0.oidc_subject.is_some()
    }
    async fn locked_until(&self) -> Option<DateTime<Utc>> {
        self.0.locked_until
    }
    async fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_login_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct ApiKey(pub api_key::Model);

#[Object]
impl ApiKey {
    async fn id(&self) -> ID {
        ids::encode_other(Other::ApiKey, self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    async fn client_ids(&self) -> Option<Vec<ID>> {
        global(Kind::Client, api_keys::grant_of(&self.0).clients)
    }
    async fn site_ids(&self) -> Option<Vec<ID>> {
        global(Kind::Site, api_keys::grant_of(&self.0).sites)
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }
}

/// A new key: `key` is shown this once and cannot be read again.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    pub key: String,
    pub api_key: ApiKey,
}

#[derive(SimpleObject)]
pub struct TotpEnrollment {
    /// Base32 secret, for typing into an authenticator by hand.
    pub secret: String,
    /// `otpauth://` URI, for a QR code.
    pub otpauth_uri: String,
}

pub struct AuditEntry(pub audit_log::Model);

#[Object]
impl AuditEntry {
    async fn id(&self) -> ID {
        ids::encode_other(Other::AuditEntry, self.0.id)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn target_type(&self) -> &str {
        &self.0.target_type
    }
    /// Row id of the target within its type.
    async fn target_id(&self) -> Option<i64> {
        self.0.target_id
    }
    async fn before(&self) -> Option<async_graphql::Json<serde_json::Value>> {
        self.0.before.clone().map(async_graphql::Json)
    }
    async fn after(&self) -> Option<async_graphql::Json<serde_json::Value>> {
        self.0.after.clone().map(async_graphql::Json)
    }
    async fn source_ip(&self) -> Option<&str> {
        self.0.source_ip.as_deref()
    }
    async fn user_agent(&self) -> Option<&str> {
        self.0.user_agent.as_deref()
    }
    /// `SUCCESS`, `FAILURE` or `DENIED`.
    async fn result(&self) -> &str {
        &self.0.result
    }
    async fn hash(&self) -> Option<&str> {
        self.0.hash.as_deref()
    }
}

#[derive(SimpleObject)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next (older) page; null at the end.
    pub next_cursor: Option<ID>,
}

#[derive(SimpleObject)]
pub struct AuditVerification {
    /// True when every sealed row matches its hash and link.
    pub ok: bool,
    pub checked: u64,
    /// Leading rows written before the chain existed (not covered).
    pub unsealed: u64,
    pub first_broken_id: Option<ID>,
    pub reason: Option<String>,
}

#[derive(InputObject)]
pub struct CreateUserInput {
    pub email: String,
    pub display_name: Option<String>,
    pub role: Role,
    /// Limit to these clients; leave out (with `siteIds`) for the whole tenant.
    pub client_ids: Option<Vec<ID>>,
    /// Limit to these sites.
    pub site_ids: Option<Vec<ID>>,
    /// Initial password (at least 12 characters); leave out for SSO-only accounts.
    pub password: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateUserInput {
    pub display_name: MaybeUndefined<String>,
    /// A new role; give the scope with it (`clientIds` / `siteIds`, or
    /// neither for the whole tenant).
    pub role: Option<Role>,
    pub client_ids: Option<Vec<ID>>,
    pub site_ids: Option<Vec<ID>>,
    /// Disabling signs the user out everywhere at once.
    pub disabled: Option<bool>,
    /// Sets a new password (signs the user out everywhere).
    pub password: Option<String>,
}

#[derive(InputObject)]
pub struct CreateApiKeyInput {
    pub name: String,
    pub role: Role,
    pub client_ids: Option<Vec<ID>>,
    pub site_ids: Option<Vec<ID>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(InputObject, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// Who you are, with your role and scope.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Viewer> {
        let who = who(ctx)?;
        let account = users::me(identity(ctx)?, who)
            .await
            .map_err(|e| e.extend())?;
        Ok(Viewer(who.clone(), account))
    }

    /// Users you may manage (needs a role that manages users).
    async fn users(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        let rows = users::list(identity(ctx)?, who(ctx)?)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows.into_iter().map(User).collect())
    }

    /// API keys you may manage.
    async fn api_keys(&self, ctx: &Context<'_>) -> Result<Vec<ApiKey>> {
        let rows = api_keys::list(&identity(ctx)?.db, who(ctx)?)
            .await
            .map_err(|e| e.extend())?;
        Ok(rows.into_iter().map(ApiKey).collect())
    }

    /// The tenant's audit log, newest first (SUPER_ADMIN).
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilter>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 500))] first: i32,
        after: Option<ID>,
    ) -> Result<AuditPage> {
        let who = who(ctx)?;
        who.require(Action::ReadAudit).map_err(|e| e.extend())?;
        let filter = filter.unwrap_or_default();
        let mut q = audit_log::Entity::find()
            .filter(audit_log::Column::TenantId.eq(who.tenant_id))
            .order_by_desc(audit_log::Column::Id)
            .limit(u64::try_from(first).unwrap_or(50) + 1);
        if let Some(after) = after {
            let id = ids::decode_other(Other::AuditEntry, &after).map_err(|e| e.extend())?;
            q = q.filter(audit_log::Column::Id.lt(id));
        }
        if let Some(a) = filter.action {
            q = q.filter(audit_log::Column::Action.starts_with(a));
        }
        if let Some(a) = filter.actor {
            q = q.filter(audit_log::Column::Actor.eq(a));
        }
        if let Some(t) = filter.from {
            q = q.filter(audit_log::Column::CreatedAt.gte(t));
        }
        if let Some(t) = filter.to {
            q = q.filter(audit_log::Column::CreatedAt.lt(t));
        }
        let mut rows = q
            .all(&identity(ctx)?.db)
            .await
            .map_err(|e| ApiError::from(e).extend())?;
        let more = rows.len() > usize::try_from(first).unwrap_or(50);
        rows.truncate(usize::try_from(first).unwrap_or(50));
        let next_cursor = more
            .then(|| {
                rows.last()
                    .map(|r| ids::encode_other(Other::AuditEntry, r.id))
            })
            .flatten();
        Ok(AuditPage {
            entries: rows.into_iter().map(AuditEntry).collect(),
            next_cursor,
        })
    }

    /// Recomputes the audit log's hash chain and reports the first broken
    /// link (SUPER_ADMIN).
    async fn verify_audit_log(&self, ctx: &Context<'_>) -> Result<AuditVerification> {
        let who = who(ctx)?;
        who.require(Action::ReadAudit).map_err(|e| e.extend())?;
        let v = crate::audit::verify(&identity(ctx)?.db, who.tenant_id)
            .await
            .map_err(|e| e.extend())?;
        Ok(AuditVerification {
            ok: v.first_broken_id.is_none(),
            checked: v.checked,
            unsealed: v.unsealed,
            first_broken_id: v
                .first_broken_id
                .map(|id| ids::encode_other(Other::AuditEntry, id)),
            reason: v.reason,
        })
    }
}

fn grant(role: Role, client_ids: Option<Vec<ID>>, site_ids: Option<Vec<ID>>) -> Result<Grant> {
    Ok(Grant {
        role: role.into(),
        clients: decode_list(Kind::Client, client_ids)?,
        sites: decode_list(Kind::Site, site_ids)?,
    })
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates an account with a role you may grant, within your scope.
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> Result<User> {
        let new = users::NewUser {
            email: input.email,
            display_name: input.display_name,
            grant: grant(input.role, input.client_ids, input.site_ids)?,
            password: input.password,
        };
        users::create(identity(ctx)?, who(ctx)?, new)
            .await
            .map(User)
            .map_err(|e| e.extend())
    }

    /// Changes an account you manage.
    async fn update_user(&self, ctx: &Context<'_>, id: ID, input: UpdateUserInput) -> Result<User> {
        let uid = ids::decode_other(Other::User, &id).map_err(|e| e.extend())?;
        let grant = match input.role {
            Some(role) => Some(grant(role, input.client_ids, input.site_ids)?),
            None if input.client_ids.is_some() || input.site_ids.is_some() => {
                return Err(
                    ApiError::validation("role", "give the role with a new scope").extend(),
                );
            }
            None => None,
        };
        let changes = users::UserChanges {
            display_name: match input.display_name {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(v) => Some(Some(v)),
            },
            grant,
            disabled: input.disabled,
            password: input.password,
        };
        users::update(identity(ctx)?, who(ctx)?, uid, changes)
            .await
            .map(User)
            .map_err(|e| e.extend())
    }

    /// Starts enrolling an authenticator app for your account.
    async fn enroll_totp(&self, ctx: &Context<'_>) -> Result<TotpEnrollment> {
        let (secret, otpauth_uri) = users::enroll_totp(identity(ctx)?, who(ctx)?)
            .await
            .map_err(|e| e.extend())?;
        Ok(TotpEnrollment {
            secret,
            otpauth_uri,
        })
    }

    /// Confirms enrolment with a current code; returns recovery codes, shown once.
    async fn confirm_totp(&self, ctx: &Context<'_>, code: String) -> Result<Vec<String>> {
        users::confirm_totp(identity(ctx)?, who(ctx)?, &code)
            .await
            .map_err(|e| e.extend())
    }

    /// Turns the second factor off (needs a current code).
    async fn disable_totp(&self, ctx: &Context<'_>, code: String) -> Result<bool> {
        users::disable_totp(identity(ctx)?, who(ctx)?, &code)
            .await
            .map(|_| true)
            .map_err(|e| e.extend())
    }

    /// Changes your password; every session of yours is signed out.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        users::change_password(identity(ctx)?, who(ctx)?, &current_password, &new_password)
            .await
            .map(|_| true)
            .map_err(|e| e.extend())
    }

    /// Creates an API key for an integration; the key is shown once.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> Result<CreatedApiKey> {
        let g = grant(input.role, input.client_ids, input.site_ids)?;
        let (model, key) = api_keys::create(
            &identity(ctx)?.db,
            who(ctx)?,
            &input.name,
            g,
            input.expires_at,
        )
        .await
        .map_err(|e| e.extend())?;
        Ok(CreatedApiKey {
            key,
            api_key: ApiKey(model),
        })
    }

    /// Revokes an API key and the sessions opened with it.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> Result<ApiKey> {
        let kid = ids::decode_other(Other::ApiKey, &id).map_err(|e| e.extend())?;
        api_keys::revoke(&identity(ctx)?.db, who(ctx)?, kid)
            .await
            .map(ApiKey)
            .map_err(|e| e.extend())
    }
}

/// `GET /audit/export?format=ndjson|csv[&from=…&to=…]`: the whole audit log
/// of the caller's tenant, oldest first (SUPER_ADMIN).
#[poem::handler]
pub async fn export_audit(
    req: &poem::Request,
    poem::web::Data(app): poem::web::Data<&crate::App>,
    poem::web::Data(who): poem::web::Data<&Principal>,
) -> poem::Response {
    if let Err(err) = who.require(Action::ReadAudit) {
        return crate::http::api_error_response(&err);
    }
    let params: std::collections::HashMap<String, String> = req.params().unwrap_or_default();
    let csv_format = match params.get("format").map(String::as_str) {
        None | Some("ndjson") => false,
        Some("csv") => true,
        Some(other) => {
            return crate::http::api_error_response(&ApiError::validation(
                "format",
                format!("'{other}' is not a format; use ndjson or csv"),
            ));
        }
    };
    let rows = match audit_log::Entity::find()
        .filter(audit_log::Column::TenantId.eq(who.tenant_id))
        .order_by_asc(audit_log::Column::Id)
        .all(&app.db)
        .await
    {
        Ok(rows) => rows,
        Err(err) => return crate::http::api_error_response(&ApiError::from(err)),
    };
    let (content_type, body) = if csv_format {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "id",
            "created_at",
            "actor",
            "action",
            "target_type",
            "target_id",
            "result",
            "source_ip",
            "user_agent",
            "before",
            "after",
            "prev_hash",
            "hash",
        ]);
        for r in &rows {
            let json = |v: &Option<serde_json::Value>| {
                v.as_ref().map(|v| v.to_string()).unwrap_or_default()
            };
            let _ = w.write_record([
                r.id.to_string(),
                r.created_at.to_rfc3339(),
                r.actor.clone(),
                r.action.clone(),
                r.target_type.clone(),
                r.target_id.map(|t| t.to_string()).unwrap_or_default(),
                r.result.clone(),
                r.source_ip.clone().unwrap_or_default(),
                r.user_agent.clone().unwrap_or_default(),
                json(&r.before),
                json(&r.after),
                r.prev_hash.clone().unwrap_or_default(),
                r.hash.clone().unwrap_or_default(),
            ]);
        }
        (
            "text/csv; charset=utf-8",
            w.into_inner().unwrap_or_default(),
        )
    } else {
        let mut out = Vec::new();
        for r in &rows {
            if let Ok(line) = serde_json::to_vec(r) {
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
        }
        ("application/x-ndjson", out)
    };
    poem::Response::builder()
        .content_type(content_type)
        .header(
            "content-disposition",
            format!(
                "attachment; filename=\"audit-log.{}\"",
                if csv_format { "csv" } else { "ndjson" }
            ),
        )
        .body(body)
}
