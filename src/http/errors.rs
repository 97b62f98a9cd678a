//! `ApiError`: the only thing that becomes an HTTP error response, always as
//! `application/problem+json` (RFC 9457) with a `detail` a person can act on. Internal causes
//! are logged in full and never sent to clients.

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, HeaderName, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::links::CreateError;
use crate::store::StoreError;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECS: &str = "2";

/// The IETF rate-limit headers: the policy, and what is left of it.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    RequestTimeout(String),
    /// A rate limit: 429 with `Retry-After` and the `RateLimit` headers.
    #[error("too many requests: {what} is limited to {} per minute; retry in {} s", verdict.quota, verdict.retry_after_s)]
    TooManyRequests {
        what: &'static str,
        verdict: crate::limits::Verdict,
    },
    /// A dependency is down; the client should retry. The cause is logged, not sent.
    #[error("{what} is unavailable right now; retry shortly")]
    Unavailable { what: &'static str, cause: String },
    /// This instance is shutting down; the load balancer should send elsewhere.
    #[error("this instance is draining before it shuts down; other instances take its traffic")]
    Draining,
    /// A bug or an unexpected failure. The cause is logged, not sent.
    #[error("an internal error occurred; it has been logged")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Gone(_) => StatusCode::GONE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            Self::Unauthorized(_) => {
                response.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            Self::MethodNotAllowed { allow, .. } => {
                response.insert_header((ALLOW, allow.as_str()));
            }
            Self::Unavailable { .. } | Self::Draining => {
                response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Self::TooManyRequests { verdict, .. } => {
                response.insert_header((RETRY_AFTER, verdict.retry_after_s.to_string()));
                response.insert_header((RATELIMIT_POLICY, verdict.policy_header()));
                response.insert_header((RATELIMIT, verdict.limit_header()));
            }
            _ => {}
        }
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        response.body(serde_json::to_string(&problem).unwrap_or_default())
    }
}

impl ApiError {
    /// What really went wrong, for the logs (the request observer logs it with the request
    /// id); never sent to the client.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Self::Internal(cause) | Self::Unavailable { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            Self::Unavailable {
                what: "the link store",
                cause: e.to_string(),
            }
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::AliasTaken(_) => Self::Conflict(e.to_string()),
            CreateError::IdempotencyMismatch => Self::Unprocessable(e.to_string()),
            CreateError::IdempotentLinkGone => Self::Conflict(e.to_string()),
            CreateError::Denied { .. } => Self::Unprocessable(e.to_string()),
            CreateError::NoFreeCode => Self::Unavailable {
                what: "code allocation",
                cause: e.to_string(),
            },
            CreateError::Store(e) => e.into(),
        }
    }
}
