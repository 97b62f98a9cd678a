//! `/api/v1/keys` (admin token only): API keys created, listed, revoked and rotated at run
//! time. A key's secret is shown once, in the answer that made it; the store keeps only its
//! SHA-256. A change applies on this instance at once and on every other within
//! `auth.keys_refresh_s` (see [`crate::keys`]).

use std::time::Duration;

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::links::read_json_body;
use super::{ApiError, AppState};
use crate::clock;
use crate::keys::{DEFAULT_GRACE, DEFAULT_SCOPES, MAX_GRACE, Rotated};
use crate::store::{Scope, StoredKey};

/// Longest key name.
const MAX_NAME_CHARS: usize = 100;

/// A key as the admin sees it: never a digest; the secret only in the answer that made it.
#[derive(Serialize)]
struct KeyView<'a> {
    id: &'a str,
    name: &'a str,
    scopes: Vec<&'static str>,
    created_at: String,
    revoked_at: Option<String>,
    /// Until when the secret a rotation replaced keeps working.
    previous_valid_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

impl<'a> KeyView<'a> {
    fn new(key: &'a StoredKey, secret: Option<&'a str>) -> Self {
        Self {
            id: &key.id,
            name: &key.name,
            scopes: key.scopes.iter().map(|s| s.name()).collect(),
            created_at: clock::format_rfc3339(key.created_at_ms),
            revoked_at: key.revoked_at_ms.map(clock::format_rfc3339),
            previous_valid_until: key.previous_valid_until_ms.map(clock::format_rfc3339),
            secret,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyRequest {
    name: String,
    #[serde(default, deserialize_with = "not_null")]
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateKeyRequest {
    /// Whole seconds (JSON may spell them `60.0`).
    #[serde(default, deserialize_with = "not_null")]
    grace_s: Option<f64>,
}

/// An optional field that, when given, is not null.
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /api/v1/keys`: a new key; 201 with its secret (shown this once) and `Location`.
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    super::auth::admin(&state, &req).await?;
    let body = read_json_body(&req, payload, &state, state.limits.max_body_bytes).await?;
    let input: CreateKeyRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body must be {{\"name\": \"…\", \"scopes\"?: [\"create\", …]}}: {e}"
        ))
    })?;
    let name = input.name;
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "name must be 1-{MAX_NAME_CHARS} characters, none of them control characters"
        )));
    }
    let scopes = match input.scopes {
        None => DEFAULT_SCOPES.to_vec(),
        Some(names) => parse_scopes(&names)?,
    };
    let (key, secret) = state.auth.keys.create(name, scopes).await?;
    tracing::info!(target: "kurz::audit", event = "key_created", key = %key.id, "API key created");
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/api/v1/keys/{}", key.id)))
        .json(KeyView::new(&key, Some(&secret))))
}

/// Known scope names, each once, in the order of [`Scope::ALL`].
fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, ApiError> {
    let mut scopes = Vec::new();
    for name in names {
        let scope = Scope::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|s| s.name()).collect();
            ApiError::BadRequest(format!(
                "unknown scope '{name}'; scopes are {}",
                known.join(", ")
            ))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort_unstable();
    Ok(scopes)
}

/// `GET /api/v1/keys`: every key, revoked ones included, oldest first; no secrets.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::auth::admin(&state, &req).await?;
    let keys = state.auth.keys.list().await?;
    let views: Vec<KeyView> = keys.iter().map(|k| KeyView::new(k, None)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": views })))
}

/// `GET /api/v1/keys/{id}`.
pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::auth::admin(&state, &req).await?;
    let id = key_id(&req)?;
    let key = state
        .auth
        .keys
        .get(id)
        .await?
        .ok_or_else(|| no_such_key(id))?;
    Ok(HttpResponse::Ok().json(KeyView::new(&key, None)))
}

/// `DELETE /api/v1/keys/{id}`: revokes the key (204); it stays listed, as revoked.
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    super::auth::admin(&state, &req).await?;
    let id = key_id(&req)?;
    state
        .auth
        .keys
        .revoke(id)
        .await?
        .ok_or_else(|| no_such_key(id))?;
    tracing::info!(target: "kurz::audit", event = "key_revoked", key = %id, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/v1/keys/{id}/rotate`: a new secret for the same key (its links stay its own);
/// the old one works for `grace_s` more (default 24 h, at most 7 days, 0 ends it at once).
pub async fn rotate(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    super::auth::admin(&state, &req).await?;
    let id = key_id(&req)?;
    let has_body = req
        .headers()
        .contains_key(actix_web::http::header::CONTENT_TYPE);
    let input: RotateKeyRequest = if has_body {
        let body = read_json_body(&req, payload, &state, state.limits.max_body_bytes).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "request body must be {{\"grace_s\"?: seconds}} or empty: {e}"
            ))
        })?
    } else {
        RotateKeyRequest::default()
    };
    let max = MAX_GRACE.as_secs_f64();
    let grace = match input.grace_s {
        None => DEFAULT_GRACE,
        Some(s) if s.fract() == 0.0 && (0.0..=max).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "grace_s must be whole seconds from 0 to {max} (7 days); got {s}"
            )));
        }
    };
    match state.auth.keys.rotate(id, grace).await? {
        Rotated::Done(key, secret) => {
            tracing::info!(target: "kurz::audit", event = "key_rotated", key = %id, grace_s = grace.as_secs(), "API key rotated");
            Ok(HttpResponse::Ok().json(KeyView::new(&key, Some(&secret))))
        }
        Rotated::Missing => Err(no_such_key(id)),
        Rotated::Revoked => Err(ApiError::Conflict(format!(
            "API key '{id}' is revoked; a revoked key stays revoked (create a new one)"
        ))),
    }
}

/// The `{id}` path segment, if it could be a key id; otherwise a 404.
fn key_id(req: &HttpRequest) -> Result<&str, ApiError> {
    let id = req.match_info().get("id").unwrap_or_default();
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(no_such_key(id))
    }
}

fn no_such_key(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::NotFound(format!("no API key with id '{shown}'"))
}
