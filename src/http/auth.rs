//! Bearer-token checks. Tokens are compared as SHA-256 digests in constant time, so neither
//! their content nor their length leaks through timing; only digests are kept in memory.
//!
//! A link remembers the key that made it by a fingerprint: an HMAC of the key under a server
//! secret, so a fingerprint seen in a log or a backup cannot be checked against guessed keys.
//! Links made before fingerprints were keyed carry a plain SHA-256 prefix; both are accepted.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Secret;
use crate::store::{Link, ListScope};

type Digest32 = [u8; 32];

/// An API key as links remember it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyId {
    /// HMAC-SHA256 of the key under the server's owner secret, 16 bytes hex: stored on links.
    pub fingerprint: String,
    /// The unkeyed fingerprint of links made before keyed fingerprints.
    legacy: String,
}

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
            Caller::ApiKey(key) => Some(key.fingerprint.clone()),
            Caller::Admin => Some("admin".into()),
            Caller::Anonymous => None,
        }
    }

    /// Whether the caller holds a credential (an API key or the admin token).
    pub fn is_keyed(&self) -> bool {
        !matches!(self, Caller::Anonymous)
    }

    /// Whether the caller may see `link`'s metadata: the admin any link, a key the links it
    /// made, an anonymous caller (creation open) the links nobody owns.
    pub fn may_read(&self, link: &Link) -> bool {
        match self {
            Caller::Admin => true,
            Caller::ApiKey(key) => self.owns(key, link),
            Caller::Anonymous => link.owner.is_none(),
        }
    }

    /// Whether the caller may delete `link`: the admin, or the key that made it.
    pub fn may_delete(&self, link: &Link) -> bool {
        match self {
            Caller::Admin => true,
            Caller::ApiKey(key) => self.owns(key, link),
            Caller::Anonymous => false,
        }
    }

    /// Whose links the caller lists: the admin everyone's, a key its own (under either of its
    /// fingerprints); `None` for an anonymous caller, who may list nothing (that would let
    /// anyone enumerate the links nobody owns).
    pub fn list_scopes(&self) -> Option<Vec<ListScope>> {
        match self {
            Caller::Admin => Some(vec![ListScope::All]),
            Caller::ApiKey(key) => Some(vec![
                ListScope::Owner(Some(key.fingerprint.clone())),
                ListScope::Owner(Some(key.legacy.clone())),
            ]),
            Caller::Anonymous => None,
        }
    }

    fn owns(&self, key: &KeyId, link: &Link) -> bool {
        link.owner
            .as_deref()
            .is_some_and(|owner| owner == key.fingerprint || owner == key.legacy)
    }
}

pub struct Auth {
    admin: Digest32,
    api_keys: Vec<(Digest32, KeyId)>,
}

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

fn same(a: &Digest32, b: &Digest32) -> bool {
    a.ct_eq(b).into()
}

/// The keyed fingerprint of an API key.
fn fingerprint(owner_secret: &[u8], key: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(owner_secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(key.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

impl Auth {
    /// `owner_secret` keys the fingerprints links remember their owner by.
    pub fn new(admin_token: &Secret, api_keys: &[Secret], owner_secret: &[u8]) -> Self {
        Self {
            admin: digest(admin_token.expose()),
            api_keys: api_keys
                .iter()
                .map(|k| {
                    let d = digest(k.expose());
                    let id = KeyId {
                        fingerprint: fingerprint(owner_secret, k.expose()),
                        legacy: hex::encode(&d[..8]),
                    };
                    (d, id)
                })
                .collect(),
        }
    }

    fn identify(&self, token: &str) -> Result<Caller, ApiError> {
        let presented = digest(token);
        if same(&presented, &self.admin) {
            return Ok(Caller::Admin);
        }
        // Check every key, without stopping early, to keep timing independent of the match.
        let matched = self.api_keys.iter().fold(None, |found, (d, id)| {
            found.or(same(&presented, d).then_some(id))
        });
        match matched {
            Some(id) => Ok(Caller::ApiKey(id.clone())),
            None => Err(ApiError::Forbidden(
                "the bearer token is not a valid API key".into(),
            )),
        }
    }

    /// Creating and reading links: an API key or the admin token; anyone when no keys are set.
    pub fn creator(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        let Some(token) = bearer(req)? else {
            return if self.api_keys.is_empty() {
                Ok(Caller::Anonymous)
            } else {
                Err(ApiError::Unauthorized(
                    "an API key is required: send 'Authorization: Bearer <key>'".into(),
                ))
            };
        };
        self.identify(token)
    }

    /// Reading statistics and disabling links: the admin token only.
    pub fn admin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(token) = bearer(req)? else {
            return Err(ApiError::Unauthorized(
                "the admin token is required: send 'Authorization: Bearer <admin token>'".into(),
            ));
        };
        if same(&digest(token), &self.admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "the bearer token is not the admin token".into(),
            ))
        }
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
    use actix_web::test::TestRequest;

    const KEY: &str = "an-api-key-of-at-least-32-characters";

    fn link(owner: Option<String>) -> Link {
        Link {
            code: "abc".into(),
            url: "https://example.com/".into(),
            owner,
            ..Link::default()
        }
    }

    fn caller(auth: &Auth, token: &str) -> Caller {
        let req = TestRequest::default()
            .insert_header((AUTHORIZATION, format!("Bearer {token}")))
            .to_http_request();
        auth.creator(&req).expect("a valid token")
    }

    #[test]
    fn fingerprints_are_keyed_and_old_unkeyed_ones_still_own_their_links() {
        let admin = Secret::new("admin-token-0123456789");
        let keys = [Secret::new(KEY)];
        let one = caller(&Auth::new(&admin, &keys, b"server-secret-one"), KEY);
        let two = caller(&Auth::new(&admin, &keys, b"server-secret-two"), KEY);
        let (Some(fp_one), Some(fp_two)) = (one.owner(), two.owner()) else {
            panic!("keys own links");
        };
        assert_ne!(
            fp_one, fp_two,
            "the fingerprint depends on the server secret"
        );
        let unkeyed = hex::encode(&Sha256::digest(KEY.as_bytes())[..8]);
        assert_ne!(fp_one, unkeyed, "not the unsalted digest");
        assert_eq!(fp_one.len(), 32);

        assert!(one.may_read(&link(Some(fp_one.clone()))));
        assert!(
            one.may_delete(&link(Some(unkeyed))),
            "links made before keyed fingerprints"
        );
        assert!(!one.may_read(&link(Some(fp_two))));
        assert!(!one.may_read(&link(None)));
        let admin_caller = caller(&Auth::new(&admin, &keys, b"x"), admin.expose());
        assert!(admin_caller.may_delete(&link(Some(fp_one))));
        assert!(!Caller::Anonymous.may_delete(&link(None)));
        assert!(Caller::Anonymous.may_read(&link(None)));
    }
}
