//! `ApiError`: the only thing that becomes an HTTP error response, as
//! `application/problem+json` (RFC 9457) with a `detail` a person can act on, or, on paths
//! people open in a browser, as an HTML page with the same status when the browser prefers it
//! ([`ApiError::for_client`]). Internal causes are logged in full and never sent to clients.

use actix_web::http::StatusCode;
use actix_web::http::header::{
    ACCEPT, ALLOW, HeaderName, HeaderValue, RETRY_AFTER, VARY, WWW_AUTHENTICATE,
};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use super::{accept, html};

use crate::links::{CreateError, EditError};
use crate::store::StoreError;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECS: &str = "2";
/// Seconds a client is told to wait after a 507 (freeing disk space takes an operator).
const FULL_RETRY_AFTER_SECS: &str = "30";
/// The problem type of a write whose outcome kurz does not know.
pub const OUTCOME_UNKNOWN_TYPE: &str = "urn:kurz:problem:outcome-unknown";

/// Longest `detail` sent, in characters: room for every message kurz writes, while one that
/// quotes a client's oversized input back (a 5,000-character tag) is cut short.
const MAX_DETAIL_CHARS: usize = 512;

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
    /// `If-Match` named another version than the stored one.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    UriTooLong(String),
    /// A rate limit: 429 with `Retry-After` and the `RateLimit` headers.
    #[error("too many requests: {what} is limited to {} per minute; retry in {} s", verdict.quota, verdict.retry_after_s)]
    TooManyRequests {
        what: &'static str,
        verdict: crate::limits::Verdict,
    },
    /// The store's disk is full: 507 with `Retry-After`; what is stored stays readable.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A dependency is down; the client should retry. The cause is logged, not sent.
    #[error("{what} is unavailable right now; retry shortly")]
    Unavailable { what: &'static str, cause: String },
    /// The region that decides this write (the home of the link's code, or of the name it
    /// claims) cannot be reached: 503 with `Retry-After`. The cause is logged, not sent.
    #[error(
        "this write is decided in region {region}, the home of its code, which cannot be \
         reached right now; retry shortly (links of other regions are not affected)"
    )]
    RegionUnavailable { region: String, cause: String },
    /// A create whose write the store did not confirm in time: it may still have committed (an
    /// embedded write goes on after its caller gives up; a DynamoDB answer may be lost). 503,
    /// with `outcome: unknown` in the problem. The cause is logged, not sent.
    #[error(
        "the link store did not confirm the write in time, so the outcome is unknown: the link \
         may have been created. Retry with the same Idempotency-Key to get it (or to create it \
         once); without a key, a retry may create a second link"
    )]
    OutcomeUnknown { cause: String },
    /// This instance is shutting down; the load balancer should send elsewhere.
    #[error("this instance is draining before it shuts down; other instances take its traffic")]
    Draining,
    /// This instance's clock is off the reference's past `server.max_clock_skew_ms`: 503 from
    /// `/readyz`, with the readiness checks (the clock's naming the skew) in the problem.
    #[error("{detail}")]
    ClockSkewed {
        detail: String,
        checks: serde_json::Value,
    },
    /// A bug or an unexpected failure. The cause is logged, not sent.
    #[error("an internal error occurred; it has been logged")]
    Internal(String),
    /// An error on a path people open in a browser, answered by the request's `Accept`: an
    /// HTML page when it prefers `text/html` (`html`), problem+json otherwise.
    #[error("{error}")]
    Negotiated { error: Box<ApiError>, html: bool },
}

/// A problem document (RFC 9457): every error's body, and each failed item's in a bulk create.
#[derive(Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    /// `unknown` when a write may or may not have happened (see [`ApiError::OutcomeUnknown`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    /// `/readyz`'s checks, on its 503 for a clock off the reference's.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<serde_json::Value>,
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
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. }
            | Self::RegionUnavailable { .. }
            | Self::OutcomeUnknown { .. }
            | Self::Draining
            | Self::ClockSkewed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Negotiated { error, .. } => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (error, negotiated_html) = match self {
            Self::Negotiated { error, html } => (&**error, Some(*html)),
            _ => (self, None),
        };
        let status = error.status_code();
        let mut response = if negotiated_html == Some(true) {
            html::error_page(status, &error.detail())
        } else {
            let problem = error.problem();
            HttpResponse::build(status)
                .content_type("application/problem+json")
                .body(serde_json::to_string(&problem).unwrap_or_default())
        };
        let headers = response.headers_mut();
        match error {
            Self::Unauthorized(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::MethodNotAllowed { allow, .. } => {
                if let Ok(allow) = HeaderValue::from_str(allow) {
                    headers.insert(ALLOW, allow);
                }
            }
            Self::Unavailable { .. }
            | Self::RegionUnavailable { .. }
            | Self::OutcomeUnknown { .. }
            | Self::Draining
            | Self::ClockSkewed { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            Self::InsufficientStorage(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static(FULL_RETRY_AFTER_SECS));
            }
            Self::TooManyRequests { verdict, .. } => {
                for (name, value) in [
                    (RETRY_AFTER, verdict.retry_after_s.to_string()),
                    (RATELIMIT_POLICY, verdict.policy_header()),
                    (RATELIMIT, verdict.limit_header()),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
            }
            _ => {}
        }
        if negotiated_html.is_some() {
            headers.insert(VARY, HeaderValue::from_static("accept"));
        }
        response
    }
}

impl ApiError {
    /// The problem document this error answers with.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let unknown = matches!(self.inner(), Self::OutcomeUnknown { .. });
        Problem {
            kind: if unknown {
                OUTCOME_UNKNOWN_TYPE
            } else {
                "about:blank"
            },
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            outcome: unknown.then_some("unknown"),
            checks: match self.inner() {
                Self::ClockSkewed { checks, .. } => Some(checks.clone()),
                _ => None,
            },
        }
    }

    /// What a client is told: the message, cut at [`MAX_DETAIL_CHARS`] (with "…").
    fn detail(&self) -> String {
        let message = self.to_string();
        if message.chars().count() <= MAX_DETAIL_CHARS {
            return message;
        }
        let kept: String = message.chars().take(MAX_DETAIL_CHARS - 1).collect();
        format!("{kept}…")
    }

    /// What a 503 blames, for the logs (the `unavailable` field of the request observer's
    /// line): `store` when this region's link store failed or did not answer in time (what a
    /// region's failover watches, infra/terraform), `region` when another region that decides
    /// the write cannot be reached, else the dependency's name. `None` for other answers.
    pub fn unavailable(&self) -> Option<&'static str> {
        match self.inner() {
            Self::Unavailable {
                what: LINK_STORE, ..
            }
            | Self::OutcomeUnknown { .. } => Some("store"),
            Self::Unavailable { what, .. } => Some(what),
            Self::RegionUnavailable { .. } => Some("region"),
            Self::Draining => Some("draining"),
            Self::ClockSkewed { .. } => Some("clock"),
            _ => None,
        }
    }

    /// What really went wrong, for the logs (the request observer logs it with the request
    /// id); never sent to the client.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Self::Internal(cause)
            | Self::Unavailable { cause, .. }
            | Self::RegionUnavailable { cause, .. }
            | Self::OutcomeUnknown { cause } => Some(cause),
            Self::Negotiated { error, .. } => error.cause(),
            _ => None,
        }
    }

    /// The error itself, under a [`Negotiated`](Self::Negotiated) wrapper.
    fn inner(&self) -> &Self {
        match self {
            Self::Negotiated { error, .. } => error.inner(),
            other => other,
        }
    }

    /// This error as the client of a browser-facing path asked for it: an HTML page when its
    /// `Accept` prefers `text/html`, problem+json otherwise. Call it on the error path only.
    pub fn for_client(self, req: &HttpRequest) -> Self {
        if let Self::Negotiated { .. } = self {
            return self;
        }
        let html = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(accept::prefers_html);
        Self::Negotiated {
            error: Box::new(self),
            html,
        }
    }
}

/// The link store, as a 503 names it.
const LINK_STORE: &str = "the link store";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Full { reason } = &e {
            return Self::InsufficientStorage(format!(
                "links cannot be created or changed right now: {reason}; short links keep redirecting"
            ));
        }
        if let StoreError::Region { region, reason } = &e {
            return Self::RegionUnavailable {
                region: region.clone(),
                cause: reason.clone(),
            };
        }
        if e.is_transient() {
            Self::Unavailable {
                what: LINK_STORE,
                cause: e.to_string(),
            }
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            // The caller's own message names the code: see the handler.
            EditError::Missing => Self::NotFound(e.to_string()),
            EditError::PreconditionFailed => Self::PreconditionFailed(format!(
                "{e}: GET it again for its current version and ETag"
            )),
            EditError::AdminDisabled => Self::Forbidden(e.to_string()),
            EditError::Denied { .. } => Self::Unprocessable(e.to_string()),
            EditError::Store(e) => e.into(),
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
            // The write may yet commit (or have committed): say so, never "nothing happened".
            CreateError::Store(e @ StoreError::Timeout(_)) => Self::OutcomeUnknown {
                cause: e.to_string(),
            },
            CreateError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_create_whose_write_timed_out_is_a_503_saying_the_outcome_is_unknown() {
        let timed_out = CreateError::Store(StoreError::Timeout(Duration::from_secs(3)));
        let answer = ApiError::from(timed_out);
        assert_eq!(answer.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.error_response().headers().contains_key(RETRY_AFTER));
        let problem = serde_json::to_value(answer.problem()).expect("json");
        assert_eq!(problem["outcome"], "unknown", "{problem}");
        assert_eq!(problem["type"], OUTCOME_UNKNOWN_TYPE, "{problem}");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(
            detail.contains("may have been created") && detail.contains("same Idempotency-Key"),
            "{detail}"
        );
        // Any other store failure is plainly unavailable: nothing was written.
        let refused = ApiError::from(CreateError::Store(StoreError::unavailable("down")));
        let problem = serde_json::to_value(refused.problem()).expect("json");
        assert_eq!(problem.get("outcome"), None, "{problem}");
    }

    #[test]
    fn a_detail_that_quotes_oversized_input_is_cut_short() {
        let detail = |message: String| {
            let problem = serde_json::to_value(ApiError::BadRequest(message).problem());
            problem.expect("json")["detail"]
                .as_str()
                .expect("detail")
                .to_owned()
        };
        let exactly = "é".repeat(MAX_DETAIL_CHARS);
        assert_eq!(
            detail(exactly.clone()),
            exactly,
            "a message that fits is kept whole"
        );

        let quoted = format!(
            "a tag must be 1 to 40 characters; got '{}'",
            "é".repeat(5_000)
        );
        let cut = detail(quoted.clone());
        assert_eq!(cut.chars().count(), MAX_DETAIL_CHARS);
        assert!(cut.ends_with('…'), "{cut}");
        let kept = cut.trim_end_matches('…');
        assert!(quoted.starts_with(kept), "{cut}");
        assert_eq!(kept.chars().count(), MAX_DETAIL_CHARS - 1);
    }

    /// A region fails over on the 503s that blame its own store, never on those of a peer
    /// region or of load shedding (infra/terraform/modules/kurz/monitoring.tf).
    #[test]
    fn a_503_names_what_was_unavailable_and_only_this_region_s_store_is_the_store() {
        let store = [
            ApiError::from(StoreError::unavailable("down")),
            ApiError::from(StoreError::Timeout(Duration::from_secs(3))),
            ApiError::from(CreateError::Store(StoreError::Timeout(
                Duration::from_secs(3),
            ))),
        ];
        for error in &store {
            assert_eq!(error.unavailable(), Some("store"), "{error:?}");
        }
        let peer = ApiError::from(StoreError::Region {
            region: "eu-west-1".into(),
            reason: "timed out".into(),
        });
        assert_eq!(peer.unavailable(), Some("region"));
        assert_eq!(
            ApiError::from(CreateError::NoFreeCode).unavailable(),
            Some("code allocation")
        );
        assert_eq!(ApiError::Draining.unavailable(), Some("draining"));
        assert_eq!(ApiError::NotFound("gone".into()).unavailable(), None);
    }
}
