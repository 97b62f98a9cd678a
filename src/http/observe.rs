//! Per-request observation: request id (echoed in `X-Request-Id`), a tracing span, metrics by
//! route, and a log line for failures.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use super::AppState;
use crate::telemetry::{Route, is_valid_request_id};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_valid_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            state
                .as_ref()
                .map(|s| s.request_ids.next())
                .unwrap_or_default()
        });
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.path(),
        request_id = %request_id,
    );
    let mut res = next.call(req).instrument(span.clone()).await?;

    let status = res.status();
    let elapsed = started.elapsed();
    let route = route_of(res.request().match_name(), res.request().method());
    if let Some(state) = &state {
        state.metrics.observe(route, status.as_u16(), elapsed);
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(X_REQUEST_ID, value);
    }
    let _entered = span.enter();
    let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), latency_us, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), latency_us, "request served");
    }
    Ok(res)
}

fn route_of(name: Option<&str>, method: &Method) -> Route {
    match name {
        Some("link") if method == Method::DELETE => Route::DeleteLink,
        Some("link") => Route::GetLink,
        Some(name) => Route::from_name(name),
        None => Route::Unmatched,
    }
}
