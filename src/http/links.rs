//! The links API: create (`POST /api/v1/links`), read and delete (`/api/v1/links/{code}`).

use actix_web::http::header::{CONTENT_LENGTH, LOCATION};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, code_param, no_such_link};
use crate::base_url::BaseUrl;
use crate::clock;
use crate::code::parse_alias;
use crate::links::{NewLink, validate_url};
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
        }
    }
}

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = state.auth.creator(&req)?;
    let body = read_json_body(&req, payload, state.limits.max_body_bytes).await?;
    let input: CreateLinkRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not a valid link: {e}")))?;

    validate_url(
        &input.url,
        state.limits.max_url_bytes.get(),
        &state.base_url,
    )
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
        Some(s) if ALLOWED_REDIRECTS.contains(&s) => s,
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "redirect_status must be one of 301, 302, 307, 308; got {s}"
            )));
        }
    };
    let idempotency_key = idempotency_key(&req)?;

    let created = state
        .links
        .create(NewLink {
            url: input.url,
            alias,
            expires_at_ms,
            redirect_status,
            owner: caller.owner(),
            idempotency_key,
        })
        .await?;
    let view = LinkView::new(&created.link, &state.base_url);
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, view.short_url.as_str()));
    if created.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    Ok(response.json(view))
}

pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.auth.creator(&req)?;
    let code = code_param(&req)?;
    let link = state
        .links
        .get(code)
        .await?
        .ok_or_else(|| no_such_link(code))?;
    Ok(HttpResponse::Ok().json(LinkView::new(&link, &state.base_url)))
}

pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    state.auth.admin(&req)?;
    let code = code_param(&req)?;
    if state.links.delete(code).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(no_such_link(code))
    }
}

/// The body of a JSON request: 415 for another content type, 413 past `limit` bytes.
async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
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
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(e) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
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
