//! Long URLs kurz will redirect to.

use actix_web::http::Uri;

use crate::base_url::{BaseUrl, host_and_port};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("url must not be empty")]
    Empty,
    #[error("url is {0} bytes long; the limit is {1}")]
    TooLong(usize, usize),
    #[error("url must be ASCII without spaces or control characters; percent-encode anything else")]
    Characters,
    #[error("url must be an absolute http:// or https:// URL with a host")]
    NotAbsoluteHttp,
    #[error("url must not contain credentials (user:password@)")]
    Credentials,
    #[error("url points at this kurz service itself ({0}), which would redirect in a loop")]
    SelfReference(String),
}

/// Checks a long URL: absolute http(s) with a host, within `max_len` bytes, no credentials,
/// not on kurz's own base URL. Fragments are kept (they matter to single-page apps).
pub fn validate_url(raw: &str, max_len: usize, base: &BaseUrl) -> Result<(), UrlError> {
    if raw.is_empty() {
        return Err(UrlError::Empty);
    }
    if raw.len() > max_len {
        return Err(UrlError::TooLong(raw.len(), max_len));
    }
    // Printable ASCII only: the URL goes verbatim into the Location header.
    if !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(UrlError::Characters);
    }
    let without_fragment = raw.split('#').next().unwrap_or(raw);
    let uri: Uri = without_fragment
        .parse()
        .map_err(|_| UrlError::NotAbsoluteHttp)?;
    let (host, port) = host_and_port(&uri).ok_or(UrlError::NotAbsoluteHttp)?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(UrlError::Credentials);
    }
    if host == base.host() && port == base.port() {
        return Err(UrlError::SelfReference(base.as_str().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> BaseUrl {
        BaseUrl::parse("https://kurz.example/").expect("valid")
    }

    #[test]
    fn accepts_ordinary_urls() {
        for url in [
            "https://example.com",
            "http://example.com/a/b?c=d&e=f#frag",
            "HTTPS://Example.COM:8443/x",
            "http://[::1]:8080/",
            "https://kurz.example:8443/other-port",
        ] {
            assert_eq!(validate_url(url, 8192, &base()), Ok(()), "{url}");
        }
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        let cases = [
            ("", UrlError::Empty),
            ("example.com/x", UrlError::NotAbsoluteHttp),
            ("/relative", UrlError::NotAbsoluteHttp),
            ("ftp://example.com/", UrlError::NotAbsoluteHttp),
            ("javascript:alert(1)", UrlError::NotAbsoluteHttp),
            ("https://", UrlError::NotAbsoluteHttp),
            ("https://exa mple.com", UrlError::Characters),
            ("https://example.com/\u{e9}", UrlError::Characters),
            ("https://user:pw@example.com/", UrlError::Credentials),
            (
                "https://KURZ.example/abc",
                UrlError::SelfReference("https://kurz.example".into()),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(validate_url(url, 8192, &base()), Err(expected), "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(9000));
        assert!(matches!(
            validate_url(&long, 8192, &base()),
            Err(UrlError::TooLong(_, 8192))
        ));
    }
}
