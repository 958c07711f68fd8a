//! Demo accounts: one user per role with known passwords, so a newcomer can
//! try each role in GraphiQL. Created by `serve --demo` only.

use entities::enums::Role;
use entities::{client, site, user};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::App;
use crate::auth::policy::{Grant, role_name};
use crate::auth::users::{self, NewUser};

/// One demo account as printed at start-up.
pub struct DemoUser {
    pub email: String,
    pub password: String,
    pub role: Role,
    pub scope: String,
}

/// Creates the missing demo accounts and returns all of them.
pub async fn ensure(app: &App) -> anyhow::Result<Vec<DemoUser>> {
    let who = app.system("demo");
    let first_client = client::Entity::find()
        .filter(client::Column::TenantId.eq(who.tenant_id))
        .order_by_asc(client::Column::Id)
        .one(&app.db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo fleet has no client"))?;
    let first_site = site::Entity::find()
        .filter(site::Column::ClientId.eq(first_client.id))
        .order_by_asc(site::Column::Id)
        .one(&app.db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo client has no site"))?;
    let whole = "whole tenant".to_owned();
    let of_client = format!("client '{}'", first_client.name);
    let of_site = format!("site '{}'", first_site.name);
    let plan = [
        (Role::SuperAdmin, None, None, whole),
        (
            Role::ClientAdmin,
            Some(vec![first_client.id]),
            None,
            of_client.clone(),
        ),
        (
            Role::SiteManager,
            None,
            Some(vec![first_site.id]),
            of_site.clone(),
        ),
        (Role::Technician, None, Some(vec![first_site.id]), of_site),
        (Role::Observer, Some(vec![first_client.id]), None, of_client),
    ];
    let mut out = Vec::new();
    for (role, clients, sites, scope) in plan {
        let slug = role_name(role).to_lowercase().replace('_', "-");
        let email = format!("{slug}@demo.trackingbms.local");
        let password = format!("demo-{slug}");
        let exists = user::Entity::find()
            .filter(user::Column::TenantId.eq(who.tenant_id))
            .filter(user::Column::Email.eq(&email))
            .one(&app.db)
            .await?
            .is_some();
        if !exists {
            users::create(
                &app.identity,
                &who,
                NewUser {
                    email: email.clone(),
                    display_name: Some(format!("Demo {}", role_name(role))),
                    grant: Grant {
                        role,
                        clients,
                        sites,
                    },
                    password: Some(password.clone()),
                },
            )
            .await?;
        }
        out.push(DemoUser {
            email,
            password,
            role,
            scope,
        });
    }
    Ok(out)
}
