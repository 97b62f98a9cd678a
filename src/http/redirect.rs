//! `GET /{code}` and `HEAD /{code}`: the hot path. Answered from the L1 cache when it can be;
//! the click is counted in memory. HEAD answers the same but counts no click (link checkers
//! and previewers use it). Served as the app's fallback: any path the route table does not
//! match that is one segment long is a code.
//!
//! A link in the L1 cache is never rate limited and costs nothing more than the cache read;
//! a lookup the cache cannot answer peeks at the client's `misses_per_minute_per_ip` in the
//! same Redis round trip as its Redis lookup, and spends from it only when the code exists
//! nowhere ([`lookup`](super::lookup)): a link that exists is not refused.
//!
//! A link that forwards queries (the default) adds the request's query string to its
//! destination's; that costs an allocation only when a query is there.
//!
//! Every redirect says how long it may be cached: temporary ones (302, 307) not at all, so
//! every click reaches kurz and a delete or disable takes effect at once; permanent ones
//! (301, 308) for `cache.browser_max_age_s`, never past the link's expiry.
//!
//! Everything else the fallback answers is found on the error path, so a redirect that
//! succeeds pays for none of it: a segment that is not a code may be a preview (`/{code}+`:
//! `+` is no code character), and errors are negotiated for browsers
//! ([`ApiError::for_client`]) only once they happen.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::header::{
    CACHE_CONTROL, HeaderName, HeaderValue, LOCATION, REFERER, USER_AGENT,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};

use super::client::Client;
use super::{
    ApiError, AppState, REDIRECT_METHODS, lookup, method_not_allowed, nothing_served, pages,
    redirect_target, valid_code,
};
use crate::analytics::Headers;
use crate::cache::Target;

/// Global Privacy Control: `Sec-GPC: 1` asks that the click be counted and nothing more.
const SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

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
    let resolved = lookup::resolve(&state, &req, code, now)
        .await
        .map_err(|e| e.for_client(&req))?;
    let target = redirect_target(code, resolved).map_err(|e| e.for_client(&req))?;
    if req.method() != Method::HEAD {
        state
            .links
            .record_click(code, now, visit(&state, &req, &target));
    }
    let query = req.query_string();
    let location = if query.is_empty() {
        target.location().clone()
    } else {
        forwarded(&target, query, &state).map_err(|e| e.for_client(&req))?
    };
    let status = StatusCode::from_u16(target.redirect_status).unwrap_or(StatusCode::FOUND);
    Ok(HttpResponse::build(status)
        .insert_header((LOCATION, location))
        .insert_header((CACHE_CONTROL, cache_control(&target, &state, now)))
        .finish())
}

/// What the click's details are made from, when they are recorded: analytics on (here and
/// for the link) and no `Sec-GPC: 1`. Only header values are copied, each cut short.
fn visit<'a>(state: &AppState, req: &'a HttpRequest, target: &Target) -> Option<Headers<'a>> {
    let capture = &state.analytics;
    if !capture.enabled || target.counts_only {
        return None;
    }
    let headers = req.headers();
    if headers
        .get(SEC_GPC)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
    {
        return None;
    }
    let header = |name: &HeaderName| headers.get(name).map_or(&b""[..], |v| v.as_bytes());
    let country = match &capture.country_header {
        Some(name) if state.proxies.is_trusted_peer(req) => header(name),
        _ => b"",
    };
    let client_ip = match state.proxies.client(req) {
        Client::Ip(ip) => ip,
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Some(Headers {
        user_agent: header(&USER_AGENT),
        referer: header(&REFERER),
        country,
        client_ip,
    })
}

/// The `Location` with the request's query added (for a link that forwards it): 414 when the
/// result would be longer than a destination may be.
fn forwarded(target: &Target, query: &str, state: &AppState) -> Result<HeaderValue, ApiError> {
    let max = state.urls.max_len();
    target.location_with_query(query, max).ok_or_else(|| {
        ApiError::UriTooLong(format!(
            "this link adds the request's query to its destination, and the two together are \
             longer than the {max} bytes a destination may be"
        ))
    })
}

/// `no-store` for a temporary redirect; for a permanent one, `public, max-age=N` with N the
/// browser max-age cut to the time left before the link expires.
fn cache_control(target: &Target, state: &AppState, now_ms: i64) -> HeaderValue {
    if !matches!(target.redirect_status, 301 | 308) {
        return NO_STORE;
    }
    let Some(at) = target.expires_at_ms else {
        return state.permanent_cache_control.clone();
    };
    let left_s = u64::try_from((at - now_ms) / 1000).unwrap_or(0);
    match state.browser_max_age.as_secs().min(left_s) {
        0 => NO_STORE,
        max_age => HeaderValue::from_str(&format!("public, max-age={max_age}")).unwrap_or(NO_STORE),
    }
}
