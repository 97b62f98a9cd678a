//! Looking a code up for anyone who asks (the redirect and the QR code), limited so that
//! scanning for codes is stopped and a link that exists is never refused.
//!
//! A lookup the in-process cache answers costs nothing more. Otherwise the client's misses
//! bucket is peeked at in the round trip that reads the code's Redis entry; the lookup goes
//! on, and takes from the bucket only if the code exists nowhere (a 404 that pays). A client
//! whose bucket is empty gets what Redis (or L1) holds, and a store read only out of one
//! budget per instance shared by every such client
//! ([`RateLimits::take_over_budget_read`](crate::limits::RateLimits::take_over_budget_read)):
//! its unknown codes answer 429, never 404. The one way a link that exists is refused: its
//! client has spent its budget on unknown codes, the link is in neither cache, and the
//! instance's budget for such clients is spent too.

use actix_web::HttpRequest;

use super::{ApiError, AppState};
use crate::cache::Fetched;
use crate::limits::{Bucket, Verdict};
use crate::links::Resolved;

/// What `code` resolves to, for the client of `req`; 429 once the client's misses are spent
/// and the answer would be "no such code" (or would need a store read the instance cannot
/// spare).
pub(super) async fn resolve(
    state: &AppState,
    req: &HttpRequest,
    code: &str,
    now_ms: i64,
) -> Result<Resolved, ApiError> {
    if let Some(resolved) = state.links.resolve_cached(code, now_ms) {
        return Ok(resolved);
    }
    let client = state.proxies.rate_key(req);
    let (peeked, fetched) = state.rate.peek_lookup(&client, code).await;
    if let Some(verdict) = peeked.filter(|v| !v.allowed) {
        return resolve_over_budget(state, code, now_ms, fetched, verdict).await;
    }
    let resolved = state.links.resolve_uncached(code, now_ms, fetched).await?;
    if matches!(resolved, Resolved::Missing) {
        // Concurrent lookups may all have peeked at the last one: the take decides.
        take_miss(state, &client).await?;
    }
    Ok(resolved)
}

/// Takes one from `client`'s misses bucket: 429 when it is spent.
pub(super) async fn take_miss(state: &AppState, client: &str) -> Result<(), ApiError> {
    match state.rate.check(Bucket::MissesPerIp, client).await {
        Some(verdict) if !verdict.allowed => Err(refused(verdict)),
        _ => Ok(()),
    }
}

/// A lookup by a client with no misses left: a link the caches (or the instance's budget's
/// store read) find; 429 for anything else.
async fn resolve_over_budget(
    state: &AppState,
    code: &str,
    now_ms: i64,
    fetched: Option<Fetched>,
    verdict: Verdict,
) -> Result<Resolved, ApiError> {
    let may_resolve = match fetched.as_ref().and_then(Fetched::holds_link) {
        Some(holds_link) => holds_link,
        None => state.rate.take_over_budget_read(),
    };
    if may_resolve {
        let resolved = state.links.resolve_uncached(code, now_ms, fetched).await?;
        if !matches!(resolved, Resolved::Missing) {
            return Ok(resolved);
        }
    }
    state.rate.count_refusal(Bucket::MissesPerIp);
    Err(refused(verdict))
}

fn refused(verdict: Verdict) -> ApiError {
    ApiError::TooManyRequests {
        what: "looking up codes that do not exist",
        verdict,
    }
}
