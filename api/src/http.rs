//! HTTP surface (poem): `POST /graphql` (bounded body, per-request caller
//! and loaders), `GET /graphql/ws` (subscriptions), `POST /ingest` (bulk
//! telemetry, streamed), GraphiQL on `GET /graphql`, `GET /health` (liveness),
//! `GET /ready` (database reachable), `GET /metrics` (Prometheus text).

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
    Route::new()
        .at("/graphql", get(graphiql).post(graphql))
        .at("/graphql/ws", get(graphql_ws))
        .at("/ingest", poem::post(crate::ingest::http_push::ingest))
        .at("/health", get(health))
        .at("/ready", get(ready))
        .at("/metrics", get(metrics))
        .with(Cors::new())
        .with(Observe { app: app.clone() })
        .data(app)
}

fn error_body(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "message": message.into(), "extensions": { "code": code.as_str() } }] });
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

#[handler]
async fn graphql(req: &Request, body: poem::Body, Data(app): Data<&App>) -> Response {
    let limit = app.config.limits.max_body_bytes;
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
    let who = app.principal_for(req);
    let resp = crate::loader::execute(&app.schema, &app.db, who, batch).await;
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
    let who = app.principal_for(req);
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
    websocket
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            async_graphql_poem::GraphQLWebSocket::new(stream, schema, protocol)
                .with_data(data)
                .serve()
        })
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
            "/graphql" | "/graphql/ws" | "/ingest" | "/health" | "/ready" | "/metrics" => {
                path.clone()
            }
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
