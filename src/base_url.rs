//! kurz's own public base URL: where short links point, and what a long URL must not point at
//! (a link to kurz itself would redirect in a loop). A leaf: settings parse into it, the link
//! rules compare against it, and it imports nothing of kurz.

use std::fmt;

use actix_web::http::Uri;
use serde::Deserialize;

/// Scheme, host and port of an absolute http(s) URL without a path, e.g. `https://kurz.example`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BaseUrl {
    text: String,
    host: String,
    port: u16,
}

impl BaseUrl {
    /// Parses `https://kurz.example` or `http://127.0.0.1:8080/` (a trailing slash is dropped).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim_end_matches('/');
        let uri: Uri = text.parse().ok()?;
        let (host, port) = host_and_port(&uri)?;
        Some(Self {
            text: text.to_owned(),
            host,
            port,
        })
    }

    /// `http://IP:PORT` for a bound address; an unspecified address becomes loopback.
    pub fn for_listener(addr: std::net::SocketAddr) -> Self {
        let ip = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        let text = format!("http://{ip}:{}", addr.port());
        Self {
            host: ip.to_ascii_lowercase(),
            port: addr.port(),
            text,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The lower-cased host, as the URL names it (brackets kept for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The effective port (80 or 443 when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn short_url(&self, code: &str) -> String {
        format!("{}/{code}", self.text)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for BaseUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or_else(|| {
            format!("'{text}' is not an absolute http(s) URL such as https://kurz.example")
        })
    }
}

/// The lower-cased host and the effective port of an absolute http(s) URI.
fn host_and_port(uri: &Uri) -> Option<(String, u16)> {
    let default_port = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = uri.host().filter(|h| !h.is_empty())?;
    Some((
        host.to_ascii_lowercase(),
        uri.port_u16().unwrap_or(default_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let base = BaseUrl::parse("HTTPS://Kurz.Example/").expect("valid");
        assert_eq!(base.as_str(), "HTTPS://Kurz.Example");
        assert_eq!((base.host(), base.port()), ("kurz.example", 443));
        assert_eq!(base.short_url("abc"), "HTTPS://Kurz.Example/abc");
        for bad in ["kurz.example", "ftp://kurz.example", "https://", "/x"] {
            assert!(BaseUrl::parse(bad).is_none(), "{bad}");
        }
        let listener = BaseUrl::for_listener("0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(listener.as_str(), "http://127.0.0.1:8080");
        assert_eq!(
            BaseUrl::for_listener("[::]:80".parse().expect("addr")).as_str(),
            "http://[::1]:80"
        );
    }
}
