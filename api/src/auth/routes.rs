//! Sign-in endpoints (REST, outside GraphQL so that GraphQL never serves an
//! anonymous caller):
//!
//! - `POST /auth/login` `{email, password, tenant?, totpCode?, recoveryCode?}`
//! - `POST /auth/refresh` `{refreshToken}` (rotates the refresh token)
//! - `POST /auth/logout` (bearer access token; ends that session)
//! - `POST /oauth/token` (RFC 6749 form: `grant_type=client_credentials`
//!   with an API key's id and secret as `client_id` / `client_secret`, or
//!   `grant_type=refresh_token`)
//! - `GET /auth/oidc/<provider>/login` → redirect to the provider;
//!   `GET /auth/oidc/<provider>/callback` → tokens.
//!
//! Every attempt counts against the caller address's sign-in budget.

use poem::http::{StatusCode, header};
use poem::web::{Data, Json, Path, Query};
use poem::{IntoResponse, Request, Response, Route, get, handler, post};
use sea_orm::EntityTrait;
use serde::Deserialize;
use serde_json::json;

use super::authenticate::{bearer, parse_api_key};
use super::login::{LoginRequest, password_login, record_attempt};
use super::sessions::{self, Subject, Tokens};
use super::{Credential, Origin};
use crate::App;
use crate::audit::Outcome;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::http::api_error_response;

pub fn auth_routes() -> Route {
    Route::new()
        .at("/login", post(login))
        .at("/refresh", post(refresh))
        .at("/logout", post(logout))
        .at("/oidc/:provider/login", get(oidc_login))
        .at("/oidc/:provider/callback", get(oidc_callback))
}

fn tokens_response(tokens: ApiResult<Tokens>) -> Response {
    match tokens {
        Ok(t) => Json(t)
            .with_header(header::CACHE_CONTROL, "no-store")
            .into_response(),
        Err(err) => api_error_response(&err),
    }
}

/// Counts a sign-in attempt against the caller's address.
async fn throttle(app: &App, origin: &Origin) -> ApiResult<()> {
    let key = origin.ip.clone().unwrap_or_else(|| "unknown".into());
    app.identity.logins.check(&key).await
}

#[handler]
async fn login(req: &Request, body: poem::Body, Data(app): Data<&App>) -> Response {
    let origin = Origin::of(req);
    if let Err(err) = throttle(app, &origin).await {
        return api_error_response(&err);
    }
    let parsed: Result<LoginRequest, _> = match body.into_bytes_limit(64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match parsed {
        Ok(request) => tokens_response(password_login(&app.identity, request, origin).await),
        Err(msg) => api_error_response(&ApiError::validation(
            "body",
            format!("expected {{\"email\", \"password\", …}}: {msg}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshRequest {
    refresh_token: String,
}

#[handler]
async fn refresh(req: &Request, body: poem::Body, Data(app): Data<&App>) -> Response {
    let origin = Origin::of(req);
    if let Err(err) = throttle(app, &origin).await {
        return api_error_response(&err);
    }
    let parsed: Result<RefreshRequest, String> = match body.into_bytes_limit(64 * 1024).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match parsed {
        Ok(r) => tokens_response(refresh_user(app, &r.refresh_token, &origin).await),
        Err(msg) => api_error_response(&ApiError::validation("refreshToken", msg)),
    }
}

async fn refresh_user(app: &App, token: &str, origin: &Origin) -> ApiResult<Tokens> {
    let id = &app.identity;
    let user_is_active = |user: Option<entities::user::Model>| user.is_some_and(|u| !u.disabled);
    let (old, tokens) = sessions::refresh(&id.db, &id.config, token, origin).await?;
    let user = match old.user_id {
        Some(uid) => entities::user::Entity::find_by_id(uid).one(&id.db).await?,
        None => None,
    };
    if !user_is_active(user) {
        // The new session must not outlive a disabled account.
        if let Some(uid) = old.user_id {
            sessions::revoke_user(&id.db, uid).await?;
        }
        return Err(ApiError::auth(
            ErrorCode::InvalidCredentials,
            "the account is disabled",
        ));
    }
    Ok(tokens)
}

#[handler]
async fn logout(req: &Request, Data(app): Data<&App>) -> Response {
    let token = req.header(header::AUTHORIZATION).and_then(bearer);
    let who = match app
        .identity
        .authenticator
        .authenticate(token, Origin::of(req))
        .await
    {
        Ok(w) => w,
        Err(err) => return api_error_response(&err),
    };
    match who.credential {
        Credential::Session { session_id, .. } => match sessions::revoke(&app.db, session_id).await
        {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(err) => api_error_response(&err),
        },
        _ => api_error_response(&ApiError::validation(
            "Authorization",
            "only a session's access token can be logged out; revoke API keys instead",
        )),
    }
}

/// RFC 6749 token request (form encoded).
#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

/// RFC 6749 §5.2 error body.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(json!({ "error": error, "error_description": description }).to_string())
}

#[handler]
pub async fn oauth_token(req: &Request, body: poem::Body, Data(app): Data<&App>) -> Response {
    let origin = Origin::of(req);
    if let Err(err) = throttle(app, &origin).await {
        return api_error_response(&err);
    }
    let form: TokenRequest = match body.into_bytes_limit(64 * 1024).await {
        Ok(bytes) => match serde_urlencoded::from_bytes(&bytes) {
            Ok(f) => f,
            Err(e) => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
            }
        },
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    match form.grant_type.as_str() {
        "client_credentials" => {
            // client_secret_basic is accepted as well as form parameters.
            let basic = req
                .header(header::AUTHORIZATION)
                .and_then(|h| h.strip_prefix("Basic "))
                .and_then(|b| {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim())
                        .ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
            let (client_id, secret) = match (form.client_id, form.client_secret, basic) {
                (Some(id), Some(secret), _) => (id, secret),
                (_, _, Some(pair)) => pair,
                _ => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "client_id and client_secret are required",
                    );
                }
            };
            // The client id is the key's `tbk_<id>` part, the secret the rest.
            let key =
                parse_api_key(&format!("{client_id}_{secret}")).map(|(id, s)| (id, s.to_owned()));
            let Some((key_id, key_secret)) = key else {
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
            };
            let id = &app.identity;
            match id.authenticator.api_key(key_id, &key_secret).await {
                Ok(k) => {
                    let tokens = sessions::issue(
                        &id.db,
                        &id.config,
                        k.tenant_id,
                        Subject::ApiKey(k.id),
                        &origin,
                    )
                    .await;
                    record_attempt(
                        id,
                        k.tenant_id,
                        None,
                        "client_credentials",
                        json!({ "apiKey": k.id }),
                        if tokens.is_ok() {
                            Outcome::Success
                        } else {
                            Outcome::Failure
                        },
                        &origin,
                    )
                    .await;
                    tokens_response(tokens)
                }
                Err(_) => oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unknown client or wrong secret",
                ),
            }
        }
        "refresh_token" => match form.refresh_token {
            Some(t) => match refresh_user(app, &t, &origin).await {
                Ok(tokens) => tokens_response(Ok(tokens)),
                Err(e) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.to_string()),
            },
            None => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is required",
            ),
        },
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("'{other}' is not supported; use client_credentials or refresh_token"),
        ),
    }
}

#[handler]
async fn oidc_login(Path(provider): Path<String>, Data(app): Data<&App>) -> Response {
    match app.identity.oidc.begin(&app.db, &provider).await {
        Ok(url) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, url)
            .header(header::CACHE_CONTROL, "no-store")
            .finish(),
        Err(err) => api_error_response(&err),
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[handler]
async fn oidc_callback(
    req: &Request,
    Path(provider): Path<String>,
    Query(cb): Query<Callback>,
    Data(app): Data<&App>,
) -> Response {
    let origin = Origin::of(req);
    if let Err(err) = throttle(app, &origin).await {
        return api_error_response(&err);
    }
    if let Some(error) = cb.error {
        return api_error_response(&ApiError::auth(
            ErrorCode::InvalidCredentials,
            format!(
                "the provider refused the login: {error} {}",
                cb.error_description.unwrap_or_default()
            ),
        ));
    }
    let (Some(code), Some(state)) = (cb.code, cb.state) else {
        return api_error_response(&ApiError::validation(
            "code",
            "the callback needs `code` and `state`",
        ));
    };
    tokens_response(
        app.identity
            .oidc
            .finish(&app.identity, &provider, &code, &state, &origin)
            .await,
    )
}
