//! Custom alias rules: 3-64 of `[A-Za-z0-9_-]`, case-sensitive, never a reserved word.

use super::{MAX_CODE_LEN, is_code_char};

/// Paths kurz serves itself or may serve later; no code or alias may shadow them.
/// Compared case-insensitively so `/API` cannot be taken either.
const RESERVED: &[&str] = &[
    "api",
    "admin",
    "healthz",
    "readyz",
    "livez",
    "metrics",
    "static",
    "assets",
    "openapi",
    "docs",
    "login",
    "logout",
    // Fixed routes beside `/api/v1/links/{code}`: a link with such a code could not be read
    // or edited through the API.
    "bulk",
    "export",
    "favicon.ico",
    "robots.txt",
    "sitemap.xml",
    ".well-known",
];

pub fn is_reserved(code: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(code))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AliasError {
    #[error("alias must be 3 to {MAX_CODE_LEN} characters long, got {0}")]
    Length(usize),
    #[error("alias may only contain letters, digits, '-' and '_'")]
    Charset,
    #[error("alias '{0}' is reserved")]
    Reserved(String),
}

/// Validates a requested alias.
pub fn parse_alias(alias: &str) -> Result<&str, AliasError> {
    let len = alias.chars().count();
    if !(3..=MAX_CODE_LEN).contains(&len) {
        return Err(AliasError::Length(len));
    }
    if !alias.bytes().all(is_code_char) {
        return Err(AliasError::Charset);
    }
    if is_reserved(alias) {
        return Err(AliasError::Reserved(alias.to_owned()));
    }
    Ok(alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rules() {
        assert_eq!(parse_alias("my-link_1"), Ok("my-link_1"));
        assert_eq!(parse_alias("ab"), Err(AliasError::Length(2)));
        assert_eq!(parse_alias(&"a".repeat(65)), Err(AliasError::Length(65)));
        assert_eq!(parse_alias("has space"), Err(AliasError::Charset));
        assert_eq!(parse_alias("ümlaut"), Err(AliasError::Charset));
        assert_eq!(
            parse_alias("Healthz"),
            Err(AliasError::Reserved("Healthz".into()))
        );
        assert!(is_reserved("metrics"));
    }
}
