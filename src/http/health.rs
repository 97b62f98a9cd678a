//! Operations endpoints: liveness, readiness and metrics.
//!
//! `/readyz` is 503 only while this instance drains; the shared dependencies' health is in
//! its body (see [`crate::health`] for why), read from the background probe, not the store.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{ApiError, AppState};

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.health.is_draining() {
        return Err(ApiError::Draining);
    }
    let redis = match state.links.redis_in_use() {
        None => "off",
        Some(true) => "ok",
        Some(false) => "unavailable",
    };
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "checks": {
            "store": state.health.store().as_str(),
            "redis": redis,
        },
    })))
}

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.metrics_public {
        return Err(ApiError::NotFound(
            "metrics are served on this instance's admin listener (server.admin_bind)".into(),
        ));
    }
    Ok(render_metrics(&state))
}

/// The Prometheus text, wherever it is served.
pub fn render_metrics(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(state.links.cache().entry_count()))
}
