//! Bearer-token checks. Tokens are compared as SHA-256 digests in constant time, so neither
//! their content nor their length leaks through timing; only digests are kept in memory.
//!
//! API keys are data ([`crate::keys`]): a link remembers the id of the key that made it, so a
//! rotated key keeps its links. A key from `auth.api_keys` keeps the id it had as an HMAC
//! fingerprint, and links made before fingerprints were keyed (a plain SHA-256 prefix) stay
//! its own too. Each key carries scopes; a missing one is a 403 naming it.
//!
//! Failed authentication (a wrong key or admin token) is limited per client IP
//! (`limits.rate.auth_failures_per_minute_per_ip`): past the limit the client's requests with
//! a token answer 429 until its bucket refills, before the token is even compared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;

use super::{ApiError, AppState};
use crate::config::Secret;
pub use crate::keys::KeyId;
use crate::keys::{Digest32, KeyRing, digest, same};
use crate::limits::{Bucket, Verdict};
use crate::store::{Link, ListScope, Scope};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    ApiKey(KeyId),
    /// No key, on an instance where creation is open.
    Anonymous,
}

impl Caller {
    /// What a link made by this caller remembers as its owner.
    pub fn owner(&self) -> Option<String> {
        match self {
            Caller::ApiKey(key) => Some(key.id.clone()),
            Caller::Admin => Some("admin".into()),
            Caller::Anonymous => None,
        }
    }

    /// Whether the caller holds a credential (an API key or the admin token).
    pub fn is_keyed(&self) -> bool {
        !matches!(self, Caller::Anonymous)
    }

    /// A 403 naming `scope` when the caller is a key without it (to do `what`).
    pub fn require(&self, scope: Scope, what: &str) -> Result<(), ApiError> {
        match self {
            Caller::ApiKey(key) if !key.has(scope) => Err(ApiError::Forbidden(format!(
                "this API key lacks the '{}' scope, which {what} needs (the admin grants scopes \
                 when creating a key: POST /api/v1/keys)",
                scope.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller may see `link`'s metadata: the admin any link, a key the links it
    /// made, an anonymous caller (creation open) the links nobody owns.
    pub fn may_read(&self, link: &Link) -> bool {
        match self {
            Caller::Admin => true,
            Caller::ApiKey(key) => owns(key, link),
            Caller::Anonymous => link.owner.is_none(),
        }
    }

    /// Whether the caller may delete `link`: the admin, or the key that made it.
    pub fn may_delete(&self, link: &Link) -> bool {
        match self {
            Caller::Admin => true,
            Caller::ApiKey(key) => owns(key, link),
            Caller::Anonymous => false,
        }
    }

    /// Whose links the caller lists: the admin everyone's, a key its own (under its id and any
    /// legacy owner name); `None` for an anonymous caller, who may list nothing (that would let
    /// anyone enumerate the links nobody owns).
    pub fn list_scopes(&self) -> Option<Vec<ListScope>> {
        match self {
            Caller::Admin => Some(vec![ListScope::All]),
            Caller::ApiKey(key) => Some(
                std::iter::once(&key.id)
                    .chain(key.legacy.as_ref())
                    .map(|owner| ListScope::Owner(Some(owner.clone())))
                    .collect(),
            ),
            Caller::Anonymous => None,
        }
    }
}

fn owns(key: &KeyId, link: &Link) -> bool {
    link.owner
        .as_deref()
        .is_some_and(|owner| owner == key.id || key.legacy.as_deref() == Some(owner))
}

/// Most clients remembered as throttled at once; beyond it a throttled client is still
/// refused by its bucket at each failure, only no longer before its token is checked.
const MAX_THROTTLED: usize = 100_000;

pub struct Auth {
    admin: Digest32,
    pub keys: Arc<KeyRing>,
    /// Clients past their failed-authentication limit, until when.
    throttled: Mutex<HashMap<String, Instant>>,
}

/// What a presented token is.
enum Presented {
    Admin,
    Key(KeyId),
    Unknown,
}

impl Auth {
    pub fn new(admin_token: &Secret, keys: Arc<KeyRing>) -> Self {
        Self {
            admin: digest(admin_token.expose()),
            keys,
            throttled: Mutex::new(HashMap::new()),
        }
    }

    fn identify(&self, token: &str) -> Presented {
        let presented = digest(token);
        // Both compared, to keep timing independent of which matched.
        let admin = same(&presented, &self.admin);
        let key = self.keys.find(&presented);
        match (admin, key) {
            (true, _) => Presented::Admin,
            (false, Some(key)) => Presented::Key(key),
            (false, None) => Presented::Unknown,
        }
    }

    /// How long `client` stays throttled, if it is.
    fn throttled_for(&self, client: &str) -> Option<Duration> {
        let throttled = self.throttled.lock().ok()?;
        let until = *throttled.get(client)?;
        until.checked_duration_since(Instant::now())
    }

    fn throttle(&self, client: &str, for_: Duration) {
        let Ok(mut throttled) = self.throttled.lock() else {
            return;
        };
        if throttled.len() >= MAX_THROTTLED {
            let now = Instant::now();
            throttled.retain(|_, until| *until > now);
        }
        if throttled.len() < MAX_THROTTLED {
            throttled.insert(client.to_owned(), Instant::now() + for_);
        }
    }
}

fn throttled_error(verdict: Verdict) -> ApiError {
    ApiError::TooManyRequests {
        what: "failed authentication from this address",
        verdict,
    }
}

/// The token of `req` identified, throttling clients that fail too often: `None` without
/// a token; a 429 while the client is throttled (the token unchecked), or when this failure
/// is one too many; `Presented::Unknown` for a wrong token otherwise.
async fn presented(state: &AppState, req: &HttpRequest) -> Result<Option<Presented>, ApiError> {
    let Some(token) = bearer(req)? else {
        return Ok(None);
    };
    let client = state.proxies.rate_key(req);
    if let Some(left) = state.auth.throttled_for(&client) {
        state.metrics.rate_limited_auth_failures.inc();
        let quota = state.limits.rate.auth_failures_per_minute_per_ip;
        let seconds = left.as_secs().max(1);
        return Err(throttled_error(Verdict {
            bucket: Bucket::AuthFailuresPerIp,
            allowed: false,
            quota,
            remaining: 0,
            reset_s: seconds,
            retry_after_s: seconds,
        }));
    }
    let presented = state.auth.identify(token);
    if matches!(presented, Presented::Unknown)
        && let Some(verdict) = state.rate.check(Bucket::AuthFailuresPerIp, &client).await
        && !verdict.allowed
    {
        state
            .auth
            .throttle(&client, Duration::from_secs(verdict.retry_after_s.max(1)));
        return Err(throttled_error(verdict));
    }
    Ok(Some(presented))
}

/// Creating and reading links: an API key or the admin token; anyone on an instance that has
/// never had a key (revoking them all does not reopen creation).
pub async fn creator(state: &AppState, req: &HttpRequest) -> Result<Caller, ApiError> {
    match presented(state, req).await? {
        None if state.auth.keys.any_issued() => Err(ApiError::Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>'".into(),
        )),
        None => Ok(Caller::Anonymous),
        Some(Presented::Admin) => Ok(Caller::Admin),
        Some(Presented::Key(key)) => Ok(Caller::ApiKey(key)),
        Some(Presented::Unknown) => Err(ApiError::Forbidden(
            "the bearer token is not a valid API key (unknown, revoked, or rotated out)".into(),
        )),
    }
}

/// Admin routes: the admin token only.
pub async fn admin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    match presented(state, req).await? {
        None => Err(ApiError::Unauthorized(
            "the admin token is required: send 'Authorization: Bearer <admin token>'".into(),
        )),
        Some(Presented::Admin) => Ok(()),
        Some(Presented::Key(_)) => Err(ApiError::Forbidden(
            "this route needs the admin token; an API key cannot use it".into(),
        )),
        Some(Presented::Unknown) => Err(ApiError::Forbidden(
            "the bearer token is not the admin token".into(),
        )),
    }
}

/// The token of an `Authorization: Bearer` header; `None` when there is no header.
fn bearer(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed =
        || ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(owner: Option<&str>) -> Link {
        Link {
            code: "abc".into(),
            url: "https://example.com/".into(),
            owner: owner.map(str::to_owned),
            ..Link::default()
        }
    }

    fn key(scopes: &[Scope]) -> Caller {
        Caller::ApiKey(KeyId {
            id: "k1".into(),
            legacy: Some("old1".into()),
            scopes: scopes.to_vec(),
        })
    }

    #[test]
    fn a_key_owns_links_under_its_id_and_legacy_name_and_needs_its_scopes() {
        let caller = key(&[Scope::Create, Scope::Read]);
        assert_eq!(caller.owner().as_deref(), Some("k1"));
        assert!(caller.may_read(&link(Some("k1"))));
        assert!(
            caller.may_delete(&link(Some("old1"))),
            "links under its legacy name"
        );
        assert!(!caller.may_read(&link(Some("k2"))));
        assert!(!caller.may_read(&link(None)));
        assert_eq!(
            caller.list_scopes(),
            Some(vec![
                ListScope::Owner(Some("k1".into())),
                ListScope::Owner(Some("old1".into()))
            ])
        );
        assert!(caller.require(Scope::Read, "reading").is_ok());
        let Err(ApiError::Forbidden(detail)) = caller.require(Scope::Stats, "reading stats") else {
            panic!("a missing scope is a 403");
        };
        assert!(detail.contains("'stats'"), "{detail}");
        assert!(Caller::Admin.require(Scope::Stats, "x").is_ok());
        assert!(Caller::Admin.may_delete(&link(Some("k1"))));
        assert!(!Caller::Anonymous.may_delete(&link(None)));
        assert!(Caller::Anonymous.may_read(&link(None)));
        assert_eq!(Caller::Anonymous.list_scopes(), None);
    }
}
