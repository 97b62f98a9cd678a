//! Bearer-token checks. Tokens are compared as SHA-256 digests in constant time, so neither
//! their content nor their length leaks through timing; only digests are kept in memory.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::config::Secret;

type Digest32 = [u8; 32];

/// Who is calling, as far as creating links is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// An API key, by its fingerprint (a digest prefix, safe to store and log).
    ApiKey(String),
    /// No key, on an instance where creation is open.
    Anonymous,
}

impl Caller {
    pub fn owner(&self) -> Option<String> {
        match self {
            Caller::ApiKey(fp) => Some(fp.clone()),
            Caller::Admin => Some("admin".into()),
            Caller::Anonymous => None,
        }
    }
}

pub struct Auth {
    admin: Digest32,
    api_keys: Vec<Digest32>,
}

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

fn same(a: &Digest32, b: &Digest32) -> bool {
    a.ct_eq(b).into()
}

fn fingerprint(d: &Digest32) -> String {
    hex::encode(&d[..8])
}

impl Auth {
    pub fn new(admin_token: &Secret, api_keys: &[Secret]) -> Self {
        Self {
            admin: digest(admin_token.expose()),
            api_keys: api_keys.iter().map(|k| digest(k.expose())).collect(),
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
        let presented = digest(token);
        if same(&presented, &self.admin) {
            return Ok(Caller::Admin);
        }
        // Check every key, without stopping early, to keep timing independent of the match.
        let matched = self.api_keys.iter().fold(None, |found, key| {
            found.or(same(&presented, key).then_some(key))
        });
        match matched {
            Some(key) => Ok(Caller::ApiKey(fingerprint(key))),
            None => Err(ApiError::Forbidden(
                "the bearer token is not a valid API key".into(),
            )),
        }
    }

    /// Deleting links and reading statistics: the admin token only.
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
