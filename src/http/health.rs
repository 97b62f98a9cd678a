//! Operations endpoints: liveness, readiness and metrics.
//!
//! `/metrics` on the public listener is open only while that listener is on loopback (a
//! laptop, a sidecar scraping locally). Bound to any other address it asks for the admin
//! token (`Authorization: Bearer`), and with `server.admin_bind` set it is served only on
//! that listener.
//!
//! `/readyz` is 503 only for what is this instance's own: draining, or its clock off the
//! reference's; the shared dependencies' health is in its body (see [`crate::health`] for
//! why), read from the background probe, not the store.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{ApiError, AppState};
use crate::health::ClockState;

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
    let clock = state.health.clock();
    let checks = json!({
        "store": state.health.store().as_str(),
        "redis": redis,
        "clock": clock.describe(),
    });
    if let ClockState::Skewed { .. } = clock {
        return Err(ApiError::ClockSkewed {
            detail: format!(
                "this instance's clock is {}: it would decide expiries wrongly, so it takes no \
                 traffic until its clock is right; other instances take it",
                clock.describe()
            ),
            checks,
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks })))
}

/// Who the public listener serves `/metrics` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicMetrics {
    /// Anyone: the listener is on loopback.
    Open,
    /// The admin: the listener is on a public address and there is no admin listener.
    AdminOnly,
    /// No one: they are on the admin listener (`server.admin_bind`).
    Elsewhere,
}

impl PublicMetrics {
    pub fn for_listeners(
        public: std::net::SocketAddr,
        admin: Option<std::net::SocketAddr>,
    ) -> Self {
        match admin {
            Some(_) => PublicMetrics::Elsewhere,
            None if public.ip().is_loopback() => PublicMetrics::Open,
            None => PublicMetrics::AdminOnly,
        }
    }
}

pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    match state.public_metrics {
        PublicMetrics::Open => {}
        PublicMetrics::AdminOnly => super::auth::admin(&state, &req).await?,
        PublicMetrics::Elsewhere => {
            return Err(ApiError::NotFound(
                "metrics are served on this instance's admin listener (server.admin_bind)".into(),
            ));
        }
    }
    Ok(render_metrics(&state))
}

/// The Prometheus text, wherever it is served.
pub fn render_metrics(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(state.links.cache().entry_count()))
}
