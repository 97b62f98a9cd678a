//! The links API: create (`POST /api/v1/links`), read, update and delete
//! (`/api/v1/links/{code}`).
//!
//! Links are scoped to the API key that made them: another key sees a 404, the owner may
//! delete its own, the admin sees and manages all. Every create is logged on the `kurz::audit`
//! target with who made it (owner fingerprint, client IP), the code and the URL's host.

use actix_web::http::header::{CONTENT_LENGTH, LOCATION};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::errors::{RATELIMIT, RATELIMIT_POLICY};
use super::{ApiError, AppState, Caller, code_param, no_such_link};
use crate::base_url::BaseUrl;
use crate::clock;
use crate::code::parse_alias;
use crate::limits::{Bucket, Verdict};
use crate::links::NewLink;
use crate::store::Link;

const ALLOWED_REDIRECTS: [u16; 4] = [301, 302, 307, 308];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLinkRequest {
    url: String,
    alias: Option<String>,
    expires_at: Option<String>,
    redirect_status: Option<u16>,
}

/// A link as the API shows it.
#[derive(Serialize)]
struct LinkView<'a> {
    code: &'a str,
    short_url: String,
    url: &'a str,
    created_at: String,
    expires_at: Option<String>,
    redirect_status: u16,
    disabled: bool,
    disabled_reason: Option<&'a str>,
}

impl<'a> LinkView<'a> {
    fn new(link: &'a Link, base: &BaseUrl) -> Self {
        Self {
            code: &link.code,
            short_url: base.short_url(&link.code),
            url: &link.url,
            created_at: clock::format_rfc3339(link.created_at_ms),
            expires_at: link.expires_at_ms.map(clock::format_rfc3339),
            redirect_status: link.redirect_status,
            disabled: link.disabled.is_some(),
            disabled_reason: link.disabled.as_ref().map(|d| d.reason.as_str()),
        }
    }
}

/// `PATCH /api/v1/links/{code}` (admin).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLinkRequest {
    disabled: bool,
    reason: Option<String>,
}

/// Longest reason for disabling a link.
const MAX_REASON_LEN: usize = 500;

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.auth.creator(&req)?;
    let client = state.proxies.client_label(&req);
    let verdict = match &caller {
        Caller::Admin => None,
        Caller::ApiKey(key) => {
            state
                .rate
                .check(Bucket::CreatesPerKey, &key.fingerprint)
                .await
        }
        Caller::Anonymous => state.rate.check(Bucket::CreatesPerIp, &client).await,
    };
    if let Some(verdict) = &verdict
        && !verdict.allowed
    {
        return Err(ApiError::TooManyRequests {
            what: "creating links",
            verdict: verdict.clone(),
        });
    }
    let body = read_json_body(&req, payload, &state).await?;
    let input: CreateLinkRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not a valid link: {e}")))?;

    let checked = state
        .urls
        .check(&input.url)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let alias = input
        .alias
        .as_deref()
        .map(parse_alias)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .map(str::to_owned);
    let now = state.links.clock().now_ms();
    let expires_at_ms = input
        .expires_at
        .as_deref()
        .map(|text| parse_expiry(text, now))
        .transpose()?;
    let redirect_status = match input.redirect_status {
        None => 302,
        Some(s @ (301 | 308)) if !caller.is_keyed() => {
            return Err(ApiError::Forbidden(format!(
                "redirect_status {s} (permanent: browsers keep it) needs an API key; use 302 or 307"
            )));
        }
        Some(s) if ALLOWED_REDIRECTS.contains(&s) => s,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "redirect_status must be one of 301, 302, 307, 308; got {s}"
            )));
        }
    };
    let idempotency_key = idempotency_key(&req)?;

    let host = checked.host.clone();
    let created = state
        .links
        .create(NewLink {
            url: checked.url,
            host: checked.host,
            alias,
            expires_at_ms,
            redirect_status,
            owner: caller.owner(),
            idempotency_key,
        })
        .await?;
    if !created.replayed {
        tracing::info!(
            target: "kurz::audit",
            event = "link_created",
            code = %created.link.code,
            owner = created.link.owner.as_deref().unwrap_or("anonymous"),
            client_ip = %client,
            host = %host,
            "link created"
        );
    }
    let view = LinkView::new(&created.link, &state.base_url);
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, view.short_url.as_str()));
    if created.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    if let Some(verdict) = &verdict {
        add_rate_headers(&mut response, verdict);
    }
    Ok(response.json(view))
}

fn add_rate_headers(response: &mut actix_web::HttpResponseBuilder, verdict: &Verdict) {
    response.insert_header((RATELIMIT_POLICY, verdict.policy_header()));
    response.insert_header((RATELIMIT, verdict.limit_header()));
}

pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = state.auth.creator(&req)?;
    let code = code_param(&req)?;
    let link = state
        .links
        .get(code)
        .await?
        .filter(|link| caller.may_read(link))
        .ok_or_else(|| no_such_link(code))?;
    Ok(HttpResponse::Ok().json(LinkView::new(&link, &state.base_url)))
}

pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = state.auth.creator(&req)?;
    if !caller.is_keyed() {
        return Err(ApiError::Unauthorized(
            "deleting a link needs the admin token or the API key that created it".into(),
        ));
    }
    let code = code_param(&req)?;
    // Another key's link is "no such link" to this key, whether or not it exists.
    if caller != Caller::Admin {
        state
            .links
            .get(code)
            .await?
            .filter(|link| caller.may_delete(link))
            .ok_or_else(|| no_such_link(code))?;
    }
    if state.links.delete(code).await? {
        tracing::info!(
            target: "kurz::audit",
            event = "link_deleted",
            code,
            by = caller.owner().as_deref().unwrap_or("anonymous"),
            "link deleted"
        );
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(no_such_link(code))
    }
}

/// Disables or re-enables a link (admin): a disabled link answers 410 and keeps its stats.
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.auth.admin(&req)?;
    let code = code_param(&req)?;
    let body = read_json_body(&req, payload, &state).await?;
    let input: UpdateLinkRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body must be {{\"disabled\": true|false, \"reason\": \"…\"}}: {e}"
        ))
    })?;
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_LEN)
    {
        return Err(ApiError::BadRequest(format!(
            "reason must be at most {MAX_REASON_LEN} characters"
        )));
    }
    let reason = input.disabled.then(|| input.reason.unwrap_or_default());
    let link = state
        .links
        .set_disabled(code, reason.clone())
        .await?
        .ok_or_else(|| no_such_link(code))?;
    tracing::info!(
        target: "kurz::audit",
        event = if reason.is_some() { "link_disabled" } else { "link_enabled" },
        code,
        reason = reason.as_deref().unwrap_or(""),
        "link updated by the admin"
    );
    Ok(HttpResponse::Ok().json(LinkView::new(&link, &state.base_url)))
}

/// The body of a JSON request: 415 for another content type, 413 past `limits.max_body_bytes`,
/// 408 when it takes longer than `server.body_timeout_ms` to arrive, 400 when it cannot be read.
async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<web::Bytes, ApiError> {
    let (limit, deadline) = (state.limits.max_body_bytes, state.body_timeout);
    let content_type = req.content_type();
    let essence = content_type.trim().to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got '{}'",
            if content_type.is_empty() {
                "nothing"
            } else {
                content_type
            }
        )));
    }
    let too_large =
        || ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(deadline, payload.to_bytes_limited(limit));
    match read.await {
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            deadline.as_secs_f64()
        ))),
        Ok(Ok(Ok(bytes))) => Ok(bytes),
        Ok(Ok(Err(e))) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
        Ok(Err(_)) => Err(too_large()),
    }
}

/// An RFC 3339 expiry, which must be after `now_ms`.
fn parse_expiry(text: &str, now_ms: i64) -> Result<i64, ApiError> {
    let at = clock::parse_rfc3339(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "expires_at must be an RFC 3339 timestamp such as 2030-01-31T12:00:00Z; got '{text}'"
        ))
    })?;
    if at <= now_ms {
        return Err(ApiError::BadRequest(format!(
            "expires_at must be in the future; got '{text}'"
        )));
    }
    Ok(at)
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) => Ok(Some(key.to_owned())),
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )),
    }
}
