//! Operations endpoints: liveness, readiness (naming the failing dependency) and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{ApiError, AppState};

/// Longest a readiness probe waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.links.store();
    match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": { "store": "ok" },
        }))),
        Ok(Err(e)) => Err(ApiError::Unavailable {
            what: "the store",
            cause: format!("readiness: {} store: {e}", store.backend()),
        }),
        Err(_) => Err(ApiError::Unavailable {
            what: "the store",
            cause: format!("readiness: {} store timed out", store.backend()),
        }),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(state.links.cache().entry_count()))
}
