//! HTTP surface (poem): `POST /graphql` (bounded body, per-request caller
//! and loaders), `GET /graphql/ws` (subscriptions; credentials in the
//! `connection_init` payload or the upgrade request), `POST /ingest` (bulk
//! telemetry, streamed), the sign-in endpoints of `auth::routes`
//! (`/auth/…`, `/oauth/token`), `GET /audit/export`, GraphiQL on
//! `GET /graphql` (switchable), `GET /health` (liveness), `GET /ready`
//! (database reachable), `GET /metrics` (Prometheus text).
//!
//! Every data route sits behind [`RequireAuth`]: no bearer token, no data.

use std::time::Instant;

use async_graphql::http::{GraphiQLSource, MultipartOptions};
use poem::http::{StatusCode, header};
use poem::middleware::Cors;
use poem::web::{Data, Html};
use poem::{
    Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Route, get, handler,
};
use serde_json::json;

use crate::App;
use crate::error::ErrorCode;

/// The whole HTTP application.
pub fn routes(app: App) -> impl Endpoint {
    let auth = RequireAuth { app: app.clone() };
    let graphql_route = if app.config.http.graphiql {
        get(graphiql).post(graphql.with(auth.clone()))
    } else {
        poem::post(graphql.with(auth.clone()))
    };
    let mut cors = Cors::new();
    for origin in &app.config.http.cors_origins {
        cors = cors.allow_origin(origin.as_str());
    }
    Route::new()
        .at("/graphql", graphql_route)
        .at("/graphql/ws", get(graphql_ws))
        .at(
            "/ingest",
            poem::post(crate::ingest::http_push::ingest.with(auth.clone())),
        )
        .nest("/auth", crate::auth::routes::auth_routes())
        .at("/oauth/token", poem::post(crate::auth::routes::oauth_token))
        .at(
            "/audit/export",
            get(crate::auth::graphql::export_audit.with(auth)),
        )
        .at("/reports/:token", get(crate::plugins::reports::download))
        .at("/health", get(health))
        .at("/ready", get(ready))
        .at("/metrics", get(metrics))
        .with(cors)
        .with(Observe { app: app.clone() })
        .data(app)
}

/// The response of a failed REST call: status, `code`, and the headers a
/// client needs to react (`WWW-Authenticate`, `Retry-After`).
pub fn api_error_response(err: &crate::error::ApiError) -> Response {
    let mut resp = error_body(err.status(), err.code(), err.to_string());
    if err.code() == ErrorCode::Unauthenticated
        && let Ok(v) = "Bearer".parse()
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if let crate::error::ApiError::RateLimited { retry_after_secs } = err
        && let Ok(v) = retry_after_secs.to_string().parse()
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Authenticates the request (bearer token), applies the caller's rate
/// limit and hands the [`crate::auth::Principal`] to the endpoint.
#[derive(Clone)]
struct RequireAuth {
    app: App,
}

impl<E: Endpoint> Middleware<E> for RequireAuth {
    type Output = RequireAuthEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequireAuthEndpoint {
            inner: ep,
            app: self.app.clone(),
        }
    }
}

struct RequireAuthEndpoint<E> {
    inner: E,
    app: App,
}

impl<E: Endpoint> Endpoint for RequireAuthEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        match self.app.identity.request_principal(&req).await {
            Ok(who) => {
                req.extensions_mut().insert(who);
                Ok(self.inner.call(req).await?.into_response())
            }
            Err(err) => Ok(api_error_response(&err)),
        }
    }
}

fn error_body(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "message": message.into(), "extensions": { "code": code.as_str() } }] });
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

#[handler]
async fn graphql(
    req: &Request,
    body: poem::Body,
    Data(app): Data<&App>,
    Data(who): Data<&crate::auth::Principal>,
) -> Response {
    // Multipart requests carry plugin and model uploads: they may be as large as those.
    let multipart = req
        .header(header::CONTENT_TYPE)
        .is_some_and(|c| c.starts_with("multipart/"));
    let limit = if multipart {
        app.config
            .limits
            .max_body_bytes
            .max(app.config.plugins.max_component_bytes + 64 * 1024)
            .max(app.config.predictions.max_model_bytes + 64 * 1024)
    } else {
        app.config.limits.max_body_bytes
    };
    if let Some(len) = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body of {len} bytes exceeds the limit of {limit} bytes"),
        );
    }
    let bytes = match body.into_bytes_limit(limit).await {
        Ok(b) => b,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("request body exceeds the limit of {limit} bytes"),
            );
        }
        Err(err) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                err.to_string(),
            );
        }
    };
    let content_type = req.header(header::CONTENT_TYPE).map(str::to_owned);
    let opts = MultipartOptions::default()
        .max_file_size(limit)
        .max_num_files(8);
    let batch = match async_graphql::http::receive_batch_body(content_type, &bytes[..], opts).await
    {
        Ok(b) => b,
        Err(err) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("not a GraphQL request: {err}"),
            );
        }
    };
    let resp = crate::loader::execute(&app.schema, &app.db, who.clone(), batch).await;
    let body = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
    Response::builder()
        .content_type("application/json")
        .body(body)
}

/// Subscriptions over WebSocket, `graphql-transport-ws` or legacy `graphql-ws`.
#[handler]
async fn graphql_ws(
    req: &Request,
    protocol: async_graphql_poem::GraphQLProtocol,
    websocket: poem::web::websocket::WebSocket,
    Data(app): Data<&App>,
) -> impl IntoResponse {
    let schema = app.schema.clone();
    let header_token = req
        .header(header::AUTHORIZATION)
        .and_then(crate::auth::authenticate::bearer)
        .map(str::to_owned);
    let origin = crate::auth::Origin::of(req);
    let app = app.clone();
    websocket
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            async_graphql_poem::GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let token = header_token.or_else(|| init_token(&payload));
                    let identity = &app.identity;
                    let who = identity
                        .authenticator
                        .authenticate(token.as_deref(), origin)
                        .await
                        .map_err(|e| e.to_graphql())?;
                    identity
                        .requests
                        .check(&who.rate_key())
                        .await
                        .map_err(|e| e.to_graphql())?;
                    let loader = async_graphql::dataloader::DataLoader::new(
                        crate::loader::ScopedLoader {
                            db: app.db.clone(),
                            who: who.clone(),
                        },
                        async_graphql::runtime::TokioSpawner::current(),
                        async_graphql::runtime::TokioTimer::default(),
                    );
                    let mut data = async_graphql::Data::default();
                    data.insert(who);
                    data.insert::<crate::loader::Loaders>(std::sync::Arc::new(loader));
                    Ok(data)
                })
                .serve()
        })
}

/// The bearer token of a `connection_init` payload: `{"Authorization":
/// "Bearer …"}` (any case), or `{"token": "…"}`.
fn init_token(payload: &serde_json::Value) -> Option<String> {
    let obj = payload.as_object()?;
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.as_str())
        .and_then(crate::auth::authenticate::bearer)
        .map(str::to_owned)
        .or_else(|| obj.get("token").and_then(|v| v.as_str()).map(str::to_owned))
}

#[handler]
async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("TrackingBMS GraphiQL")
            .finish(),
    )
}

#[handler]
async fn health() -> impl IntoResponse {
    poem::web::Json(json!({ "status": "ok" }))
}

#[handler]
async fn ready(Data(app): Data<&App>) -> Response {
    if crate::db::ping(&app.db).await {
        poem::web::Json(json!({ "status": "ready" })).into_response()
    } else {
        error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "database unreachable",
        )
    }
}

#[handler]
async fn metrics(Data(app): Data<&App>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(app.metrics.render())
}

/// Request logging and HTTP metrics.
struct Observe {
    app: App,
}

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = ObserveEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        ObserveEndpoint {
            inner: ep,
            app: self.app.clone(),
        }
    }
}

struct ObserveEndpoint<E> {
    inner: E,
    app: App,
}

impl<E: Endpoint> Endpoint for ObserveEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let route = match path.as_str() {
            "/graphql" | "/graphql/ws" | "/ingest" | "/health" | "/ready" | "/metrics"
            | "/auth/login" | "/auth/refresh" | "/auth/logout" | "/oauth/token"
            | "/audit/export" => path.clone(),
            _ => "other".to_owned(),
        };
        let resp = match self.inner.call(req).await {
            Ok(r) => r.into_response(),
            Err(err) => err.into_response(),
        };
        let status = resp.status();
        let elapsed = started.elapsed();
        let m = &self.app.metrics;
        m.http_requests
            .with_label_values(&[route.as_str(), status.as_str()])
            .inc();
        m.http_duration
            .with_label_values(&[route.as_str()])
            .observe(elapsed.as_secs_f64());
        tracing::info!(%method, %path, status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "request");
        Ok(resp)
    }
}
