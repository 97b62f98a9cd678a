//! Per-request observation: request id (echoed in `X-Request-Id`, and on every log line
//! written while the request is served), a tracing span, metrics by route, a log line for
//! failures, and the request's trace when it is traced.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use super::{ApiError, AppState, Endpoint};
use crate::telemetry::is_valid_request_id;
use crate::telemetry::trace::{Attribute, Kind, Parent};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C Trace Context's header, believed from trusted proxies only.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The trace header AWS's load balancers add, believed from trusted proxies only.
const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    // A client's own request id is taken only from a trusted proxy; anyone else could fill
    // the logs with ids of their choosing.
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(is_valid_request_id))
        .filter(|_| {
            state
                .as_ref()
                .is_some_and(|s| s.proxies.is_trusted_peer(req.request()))
        })
        .cloned()
        .or_else(|| {
            let id = state.as_ref()?.request_ids.next();
            HeaderValue::from_bytes(&id).ok()
        })
        .unwrap_or_else(|| HeaderValue::from_static("-"));
    let request_id_text = request_id.to_str().unwrap_or("-");
    // Traced requests (only with telemetry.otlp_endpoint set): a trusted proxy's trace
    // context is continued, anyone else's ignored.
    let trace = state.as_ref().and_then(|s| {
        let tracer = s.tracer.as_ref()?;
        let headers = req.headers();
        let parent = if s.proxies.is_trusted_peer(req.request()) {
            Parent::from_headers(
                headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
                headers.get(X_AMZN_TRACE_ID).map(HeaderValue::as_bytes),
            )
        } else {
            None
        };
        tracer.start(parent, Some(request_id_text))
    });
    // Redirects and probes (a GET or HEAD of one path segment) are the hot path: their span is
    // at debug level, free unless asked for. Everything else, and every traced request, gets
    // an info span, so each log line within it names the request (and its trace). Failures
    // are logged below with their request id whatever the span's level.
    let hot = matches!(*req.method(), Method::GET | Method::HEAD)
        && !req.path().get(1..).unwrap_or_default().contains('/');
    let span = if hot && trace.is_none() {
        tracing::debug_span!("request", method = %req.method(), path = %req.path(), request_id = %request_id_text)
    } else {
        let span = tracing::info_span!("request", method = %req.method(), path = %req.path(), request_id = %request_id_text, trace_id = tracing::field::Empty);
        if let Some(trace) = &trace {
            span.record("trace_id", trace.trace_id());
        }
        span
    };
    let traced_method = trace.as_ref().map(|_| req.method().clone());
    let served =
        crate::telemetry::in_request(request_id.clone(), next.call(req).instrument(span.clone()));
    let served = match &trace {
        Some(trace) => trace.run(served).await,
        None => served.await,
    };
    let mut res = match served {
        Ok(res) => res,
        Err(e) => {
            if let (Some(trace), Some(method)) = (trace, traced_method) {
                trace.finish(
                    method.to_string(),
                    Kind::Server,
                    Vec::new(),
                    Some(e.to_string()),
                );
            }
            return Err(e);
        }
    };

    let status = res.status();
    let elapsed = started.elapsed();
    let endpoint = match res.request().match_name() {
        // Single segments the route table does not match are redirects or previews (the
        // fallback).
        None if hot && res.request().path().len() > 1 => {
            if res.request().path().ends_with('+') {
                Some(Endpoint::Preview)
            } else {
                Some(Endpoint::Redirect)
            }
        }
        None => None,
        Some(path) => Endpoint::find(path, res.request().method()),
    };
    if let Some(state) = &state {
        let route = Endpoint::metric_index(endpoint);
        state.metrics.observe(route, status.as_u16(), elapsed);
    }
    if let Some(trace) = trace {
        // Named by its route, as OpenTelemetry's HTTP conventions ask: `GET /{code}`.
        let (method, path) = (res.request().method(), res.request().path());
        let route = endpoint.map(Endpoint::path);
        let name = match route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        };
        let mut attributes = vec![
            Attribute::str("http.request.method", method.to_string()),
            Attribute::str("url.path", path.to_owned()),
            Attribute::int("http.response.status_code", i64::from(status.as_u16())),
        ];
        if let Some(route) = route {
            attributes.push(Attribute::str("http.route", route));
        }
        let error = status.is_server_error().then(|| {
            status
                .canonical_reason()
                .unwrap_or("server error")
                .to_owned()
        });
        trace.finish(name, Kind::Server, attributes, error);
    }
    // A full disk is logged once by the store when it starts and once when it ends, not per
    // request refused meanwhile.
    if status.is_server_error() && status != actix_web::http::StatusCode::INSUFFICIENT_STORAGE {
        let _entered = span.enter();
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // The cause stays in the logs; the client saw only a generic detail.
        let error = res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>());
        let cause = error.and_then(ApiError::cause).unwrap_or("unknown");
        let status = status.as_u16();
        if status == 503 {
            // What failed, by name: a region fails over on `unavailable = "store"`.
            let unavailable = error.and_then(ApiError::unavailable).unwrap_or("unknown");
            tracing::warn!(
                request_id = request_id_text,
                status,
                latency_us,
                unavailable,
                cause,
                "request failed: dependency unavailable"
            );
        } else {
            tracing::error!(
                request_id = request_id_text,
                status,
                latency_us,
                cause,
                "request failed"
            );
        }
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        let _entered = span.enter();
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(status = status.as_u16(), latency_us, "request served");
    }
    res.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    Ok(res)
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::test as actix_test;
    use actix_web::{App, HttpResponse};

    use super::*;
    use crate::store::StoreError;

    /// The JSON line a 503 writes, as a region's failover reads it
    /// (infra/terraform/modules/kurz/monitoring.tf: `$.status = 503 && $.unavailable = "store"`).
    fn line_of(error: fn() -> ApiError) -> serde_json::Value {
        let text = crate::telemetry::logs::tests::logged(true, || {
            actix_web::rt::System::new().block_on(async {
                let app = actix_test::init_service(App::new().wrap(from_fn(observe)).route(
                    "/down",
                    web::get().to(move || async move { Err::<HttpResponse, _>(error()) }),
                ))
                .await;
                let request = actix_test::TestRequest::get().uri("/down").to_request();
                let res = actix_test::call_service(&app, request).await;
                assert_eq!(res.status(), 503);
            });
        });
        let line = text
            .lines()
            .find(|line| line.contains("dependency unavailable"))
            .unwrap_or_else(|| panic!("no 503 line in {text}"));
        serde_json::from_str(line).expect("a JSON line")
    }

    #[test]
    fn a_503_line_says_in_json_what_was_unavailable() {
        let store = line_of(|| ApiError::from(StoreError::unavailable("table gone")));
        assert_eq!(store["status"], 503, "{store}");
        assert_eq!(store["unavailable"], "store", "{store}");
        assert_eq!(store["level"], "WARN", "{store}");
        let peer = line_of(|| {
            ApiError::from(StoreError::Region {
                region: "eu-west-1".into(),
                reason: "timed out".into(),
            })
        });
        assert_eq!(peer["status"], 503, "{peer}");
        assert_eq!(peer["unavailable"], "region", "{peer}");
    }
}
