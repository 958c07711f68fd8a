//! Records refused actions: every GraphQL answer that carries a `FORBIDDEN`
//! error adds an audit entry with result `DENIED`, the caller and the
//! fields they were refused, so attempts beyond one's role are visible.

use std::sync::Arc;

use async_graphql::Response;
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use serde_json::json;

use super::{Identity, Principal};
use crate::audit::{self, Entry, Outcome};

pub struct AuditDenials;

impl ExtensionFactory for AuditDenials {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuditDenials)
    }
}

#[async_trait::async_trait]
impl Extension for AuditDenials {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let resp = next.run(ctx, operation_name).await;
        let denied: Vec<String> = resp
            .errors
            .iter()
            .filter(|e| {
                e.extensions
                    .as_ref()
                    .and_then(|x| x.get("code"))
                    .is_some_and(|c| c.to_string().trim_matches('"') == "FORBIDDEN")
            })
            .map(|e| {
                e.path
                    .iter()
                    .map(|p| match p {
                        async_graphql::PathSegment::Field(f) => f.clone(),
                        async_graphql::PathSegment::Index(i) => i.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect();
        if denied.is_empty() {
            return resp;
        }
        if let (Some(who), Some(identity)) =
            (ctx.data_opt::<Principal>(), ctx.data_opt::<Identity>())
        {
            let entry = Entry {
                tenant_id: who.tenant_id,
                actor: who.actor.clone(),
                action: "access.denied".into(),
                target_type: "GraphQL".into(),
                target_id: None,
                before: None,
                after: Some(json!({ "fields": denied, "operation": operation_name })),
                origin: who.origin.clone(),
                outcome: Outcome::Denied,
            };
            if let Err(err) = audit::event(&identity.db, entry).await {
                tracing::error!(%err, "could not record a denied action");
            }
        }
        resp
    }
}
