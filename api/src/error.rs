//! Error codes shared by every slice. A client reads `extensions.code` from a
//! GraphQL error (or `code` from an HTTP error body) and can rely on it; the
//! message is for humans.

use async_graphql::ErrorExtensions;

/// Stable machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    ValidationFailed,
    InvalidId,
    Conflict,
    BadRequest,
    PayloadTooLarge,
    GraphqlParseFailed,
    GraphqlValidationFailed,
    Unavailable,
    RetryLater,
    UnsupportedMediaType,
    Internal,
    Unauthenticated,
    Forbidden,
    RateLimited,
    InvalidCredentials,
    TotpRequired,
    AccountLocked,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::InvalidId => "INVALID_ID",
            Self::Conflict => "CONFLICT",
            Self::BadRequest => "BAD_REQUEST",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Self::Unavailable => "UNAVAILABLE",
            Self::RetryLater => "RETRY_LATER",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::Internal => "INTERNAL",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::TotpRequired => "TOTP_REQUIRED",
            Self::AccountLocked => "ACCOUNT_LOCKED",
        }
    }
}

/// The error type of services. Database details never reach the client:
/// they are logged and replaced by `INTERNAL`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("invalid id: {0}")]
    InvalidId(String),
    #[error("{0}")]
    Conflict(String),
    /// Storage is behind or unavailable; nothing of the request was lost
    /// beyond what the response says was accepted.
    #[error("{0}")]
    RetryLater(String),
    /// The caller's role does not allow the action (the target is in scope).
    #[error("{0}")]
    Forbidden(String),
    /// A sign-in failed; the code says why as far as it is safe to say.
    #[error("{message}")]
    Auth { code: ErrorCode, message: String },
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A part of the server is not running (e.g. predictions without ONNX
    /// Runtime); the message says why and how to fix it.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error")]
    Db(#[from] sea_orm::DbErr),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn auth(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Auth {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status of this error on REST endpoints.
    pub fn status(&self) -> poem::http::StatusCode {
        use poem::http::StatusCode as S;
        match self.code() {
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::ValidationFailed | ErrorCode::InvalidId | ErrorCode::BadRequest => {
                S::BAD_REQUEST
            }
            ErrorCode::Conflict => S::CONFLICT,
            ErrorCode::Unauthenticated
            | ErrorCode::InvalidCredentials
            | ErrorCode::TotpRequired => S::UNAUTHORIZED,
            ErrorCode::Forbidden => S::FORBIDDEN,
            ErrorCode::RateLimited | ErrorCode::AccountLocked => S::TOO_MANY_REQUESTS,
            ErrorCode::RetryLater | ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
            _ => S::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::InvalidId(_) => ErrorCode::InvalidId,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::RetryLater(_) => ErrorCode::RetryLater,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Auth { code, .. } => *code,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Db(_) => ErrorCode::Internal,
        }
    }
}

impl ApiError {
    /// The GraphQL error a client sees: message plus `extensions.code`
    /// (and `extensions.field` for validation errors).
    pub fn to_graphql(&self) -> async_graphql::Error {
        if let ApiError::Db(db) = self {
            tracing::error!(error = %db, "database error while serving a request");
        }
        let code = self.code();
        let field = match self {
            ApiError::Validation { field, .. } => Some(field.clone()),
            _ => None,
        };
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            if let Some(field) = field {
                ext.set("field", field);
            }
        })
    }
}

/// Lets resolvers write `service.call().await.extend()?` and keep the code;
/// a bare `?` would go through async-graphql's `From<Display>` and lose it.
impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        self.to_graphql()
    }
}

/// An error with a code, for places that do not go through a service.
pub fn coded(code: ErrorCode, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, ext| ext.set("code", code.as_str()))
}
