//! `GET /{code}` and `HEAD /{code}`: the hot path. Answered from the L1 cache when it can be;
//! the click is counted in memory. HEAD answers the same but counts no click (link checkers
//! and previewers use it). Served as the app's fallback: any path the route table does not
//! match that is one segment long is a code.
//!
//! Everything else the fallback answers is found on the error path, so a redirect that
//! succeeds pays for none of it: a segment that is not a code may be a preview (`/{code}+`:
//! `+` is no code character), and errors are negotiated for browsers
//! ([`ApiError::for_client`]) only once they happen.

use actix_web::http::header::LOCATION;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};

use super::{
    ApiError, AppState, REDIRECT_METHODS, method_not_allowed, no_such_link, nothing_served, pages,
    valid_code,
};
use crate::clock;
use crate::links::Resolved;

/// Whatever the route table does not match: a redirect for one path segment, else a 404.
pub async fn fallback(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let segment = req
        .path()
        .strip_prefix('/')
        .filter(|p| !p.is_empty() && !p.contains('/'));
    let Some(segment) = segment else {
        return Err(nothing_served(&req).for_client(&req));
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(method_not_allowed(&req, REDIRECT_METHODS));
    }
    let code = match valid_code(segment) {
        Ok(code) => code,
        Err(not_a_code) => {
            return match segment.strip_suffix('+') {
                // Boxed: a redirect's future should not carry the preview's state.
                Some(code) => Box::pin(pages::preview(&state, &req, code)).await,
                None => Err(not_a_code.for_client(&req)),
            };
        }
    };
    let now = state.links.clock().now_ms();
    let resolved = state.links.resolve(code, now).await;
    match resolved.map_err(|e| ApiError::from(e).for_client(&req))? {
        Resolved::Found(target) => {
            if req.method() != Method::HEAD {
                state.links.record_click(code, now);
            }
            let status = StatusCode::from_u16(target.redirect_status).unwrap_or(StatusCode::FOUND);
            Ok(HttpResponse::build(status)
                .insert_header((LOCATION, target.location().clone()))
                .finish())
        }
        Resolved::Expired(target) => Err(ApiError::Gone(format!(
            "short link '{code}' expired at {}",
            clock::format_rfc3339(target.expires_at_ms.unwrap_or_default())
        ))
        .for_client(&req)),
        Resolved::Missing => Err(no_such_link(code).for_client(&req)),
    }
}
