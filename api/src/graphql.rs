//! The GraphQL schema: the slices' query and mutation roots merged, the
//! limits that protect the server (depth, complexity), and an extension
//! that gives every error an `extensions.code`.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    MergedObject, MergedSubscription, Response, Schema, SchemaBuilder, ServerError, ServerResult,
    ValidationResult, Variables,
};

use crate::auth::graphql::{AuthMutation, AuthQuery};
use crate::config::Limits;
use crate::error::ErrorCode;
use crate::hierarchy::graphql::{HierarchyMutation, HierarchyQuery};
use crate::ingest::modbus::graphql::{ModbusQuery, ModbusSubscription};
use crate::plugins::graphql::{PluginMutation, PluginQuery};
use crate::plugins::schedule_graphql::{ScheduleMutation, ScheduleQuery};
use crate::predict::graphql::{PredictionMutation, PredictionQuery, PredictionSubscription};
use crate::telemetry::graphql::{TelemetryMutation, TelemetryQuery};
use crate::telemetry::live::TelemetrySubscription;

#[derive(MergedObject, Default)]
pub struct Query(
    HierarchyQuery,
    TelemetryQuery,
    ModbusQuery,
    AuthQuery,
    PluginQuery,
    ScheduleQuery,
    PredictionQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    HierarchyMutation,
    TelemetryMutation,
    AuthMutation,
    PluginMutation,
    ScheduleMutation,
    PredictionMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    TelemetrySubscription,
    ModbusSubscription,
    PredictionSubscription,
);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// The schema without runtime data: enough to print the SDL.
pub fn builder(limits: &Limits) -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(limits.max_query_depth)
    .limit_complexity(limits.max_query_complexity)
    .extension(ErrorCodes)
    .extension(crate::auth::denials::AuditDenials)
}

/// The SDL that `schema.graphql` must equal.
pub fn sdl() -> String {
    builder(&Limits::default()).finish().sdl()
}

/// Adds `extensions.code` to errors raised by parsing, validation and
/// execution that do not carry one yet.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

fn ensure_code(err: &mut ServerError, code: ErrorCode) {
    let ext = err.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code.as_str());
    }
}

fn validation_code(err: &ServerError) -> &'static str {
    if err.message.contains("nested too deep") {
        "QUERY_TOO_DEEP"
    } else if err.message.contains("too complex") {
        "QUERY_TOO_COMPLEX"
    } else {
        ErrorCode::GraphqlValidationFailed.as_str()
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut err| {
            ensure_code(&mut err, ErrorCode::GraphqlParseFailed);
            err
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errs| {
            for err in &mut errs {
                let code = validation_code(err);
                if code == "QUERY_TOO_COMPLEX" {
                    err.message =
                        "Query is too complex: nested connections multiply their page sizes \
                                   (first/last, default 20); ask for smaller pages or fewer levels"
                            .into();
                }
                let ext = err.extensions.get_or_insert_with(Default::default);
                if ext.get("code").is_none() {
                    ext.set("code", code);
                }
            }
            errs
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut resp = next.run(ctx, operation_name).await;
        for err in &mut resp.errors {
            // Errors raised by async-graphql itself while coercing arguments.
            let code = if err.message.starts_with("Failed to parse")
                || err.message.contains("Invalid value")
            {
                ErrorCode::ValidationFailed
            } else {
                ErrorCode::Internal
            };
            ensure_code(err, code);
        }
        resp
    }
}

/// The bytes of an uploaded file, at most `limit` + 1 (so the service can
/// say the file is too large rather than silently cut it).
pub fn read_upload(
    ctx: &async_graphql::Context<'_>,
    file: &async_graphql::Upload,
    limit: usize,
) -> async_graphql::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.value(ctx)?
        .content
        .take(u64::try_from(limit).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            crate::error::coded(
                ErrorCode::BadRequest,
                format!("cannot read the upload: {e}"),
            )
        })?;
    Ok(bytes)
}
