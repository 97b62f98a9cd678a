//! Long URLs kurz will redirect to: parsed and normalised the way browsers do (WHATWG, by the
//! `url` crate), then held to kurz's rules. The normalised form is what is stored and sent in
//! `Location`: lower-case scheme and host, no default port, IDNs in punycode, unsafe bytes
//! percent-encoded.
//!
//! A URL must not lead back to kurz (a loop): its host is compared with the public base URL's
//! ignoring scheme, default ports, case and a trailing dot, with every spelling of loopback
//! (`localhost`, `127.1`, `2130706433`, `[::ffff:127.0.0.1]`, …) counted as loopback when
//! kurz itself is on loopback, and with `server.own_hosts` as more names of kurz. The
//! listener's own address with its port is kurz too: when it is bound to every address
//! (`0.0.0.0`, `[::]`), that is `0.0.0.0`, `0`, `[::]`, loopback and every address of the
//! machine's interfaces ([`interface_addresses`], read once at start-up).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use crate::base_url::BaseUrl;

/// The longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("url must not be empty")]
    Empty,
    #[error("url is {0} bytes long; the limit is {1}")]
    TooLong(usize, usize),
    #[error("url must not contain spaces or control characters; percent-encode them")]
    Characters,
    #[error("url must be an absolute http:// or https:// URL with a host")]
    NotAbsoluteHttp,
    #[error("url is not a valid URL: {0}")]
    Invalid(String),
    #[error("url's host is {0} bytes long; a host name has at most 253")]
    HostTooLong(usize),
    #[error("url must not contain credentials (user:password@)")]
    Credentials,
    #[error("url points at this kurz service itself ({0}), which would redirect in a loop")]
    SelfReference(String),
    #[error("url points at another URL shortener ({0}); link to the destination itself")]
    OtherShortener(String),
}

/// A long URL that passed the rules: its normalised text and host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    pub url: String,
    /// Lower case, without a trailing dot; IPv6 in brackets.
    pub host: String,
}

/// The rules a long URL is held to.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    max_len: usize,
    base: BaseUrl,
    base_host: Option<HostKey>,
    own_hosts: Vec<String>,
    shortener_hosts: Vec<String>,
    /// The listener's port, the addresses it answers on, and whether loopback (and the
    /// unspecified address) is among them.
    listener: Option<(u16, Vec<IpAddr>, bool)>,
}

/// A host as compared: a domain (lower case, no trailing dot) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKey {
    Domain(String),
    Ip(IpAddr),
}

impl HostKey {
    fn of(host: Host<&str>) -> Self {
        match host {
            Host::Domain(d) => HostKey::Domain(d.trim_end_matches('.').to_ascii_lowercase()),
            Host::Ipv4(ip) => HostKey::Ip(IpAddr::V4(ip)),
            Host::Ipv6(ip) => HostKey::Ip(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)),
        }
    }

    /// Loopback, or the unspecified address, which reaches this host too.
    fn is_loopback(&self) -> bool {
        match self {
            HostKey::Ip(ip) => ip.is_loopback() || ip.is_unspecified(),
            HostKey::Domain(d) => d == "localhost" || d.ends_with(".localhost"),
        }
    }

    /// Whether this is `domain` or one of its subdomains.
    fn is_within(&self, domain: &str) -> bool {
        match self {
            HostKey::Domain(d) => {
                d == domain
                    || d.strip_suffix(domain)
                        .is_some_and(|prefix| prefix.ends_with('.'))
            }
            HostKey::Ip(ip) => domain.parse::<IpAddr>().is_ok_and(|d| d == *ip),
        }
    }
}

fn normalise_name(name: &str) -> String {
    name.trim()
        .trim_end_matches('.')
        .trim_start_matches("*.")
        .to_ascii_lowercase()
}

/// Letters, digits, `-` and `_` in non-empty labels (a trailing dot allowed): what DNS can
/// resolve. (The WHATWG parser lets `*`, `!` and the like through; IDNs arrive as punycode.)
fn is_dns_name(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_default_port(port: Option<u16>) -> bool {
    matches!(port, Some(80 | 443))
}

impl UrlPolicy {
    pub fn new(
        max_len: usize,
        base: BaseUrl,
        own_hosts: &[String],
        shortener_hosts: &[String],
    ) -> Self {
        let base_host = Url::parse(base.as_str())
            .ok()
            .and_then(|u| u.host().map(HostKey::of));
        Self {
            max_len,
            base,
            base_host,
            own_hosts: own_hosts.iter().map(|h| normalise_name(h)).collect(),
            shortener_hosts: shortener_hosts.iter().map(|h| normalise_name(h)).collect(),
            listener: None,
        }
    }

    /// Counts the listener's own addresses, with its port, as kurz: `bound`'s address, or when
    /// it is bound to every address, loopback, `0.0.0.0`, `[::]` and `interfaces`.
    pub fn with_listener(mut self, bound: SocketAddr, interfaces: Vec<IpAddr>) -> Self {
        let ip = bound.ip();
        let addrs = if ip.is_unspecified() {
            interfaces
        } else {
            vec![ip]
        };
        let loopback = ip.is_unspecified() || ip.is_loopback();
        self.listener = Some((bound.port(), addrs, loopback));
        self
    }

    /// Parses, normalises and checks `raw`. Fragments are kept (single-page apps use them).
    /// The longest URL accepted, in bytes: also the bound on a destination with a forwarded
    /// query added.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn check(&self, raw: &str) -> Result<CheckedUrl, UrlError> {
        if raw.is_empty() {
            return Err(UrlError::Empty);
        }
        if raw.len() > self.max_len {
            return Err(UrlError::TooLong(raw.len(), self.max_len));
        }
        // Browsers would strip or encode these; a URL that has them was most likely pasted
        // wrongly, so say so instead of guessing.
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Characters);
        }
        let url = Url::parse(raw).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => UrlError::NotAbsoluteHttp,
            url::ParseError::EmptyHost => UrlError::NotAbsoluteHttp,
            other => UrlError::Invalid(other.to_string()),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::NotAbsoluteHttp);
        }
        let host = url.host().ok_or(UrlError::NotAbsoluteHttp)?;
        let host_text = url.host_str().unwrap_or_default();
        if host_text.len() > MAX_HOST_LEN {
            return Err(UrlError::HostTooLong(host_text.len()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        if let Host::Domain(domain) = host
            && !is_dns_name(domain)
        {
            return Err(UrlError::Invalid(format!(
                "'{domain}' is not a host name: letters, digits, '-' and '_' between dots"
            )));
        }
        let key = HostKey::of(host);
        if self.is_own(&key, url.port_or_known_default()) {
            return Err(UrlError::SelfReference(self.base.as_str().to_owned()));
        }
        if let Some(shortener) = self.shortener_hosts.iter().find(|h| key.is_within(h)) {
            return Err(UrlError::OtherShortener(shortener.clone()));
        }
        let host = host_text.trim_end_matches('.').to_owned();
        let normalised = String::from(url);
        if normalised.len() > self.max_len {
            return Err(UrlError::TooLong(normalised.len(), self.max_len));
        }
        Ok(CheckedUrl {
            url: normalised,
            host,
        })
    }

    fn is_own(&self, host: &HostKey, port: Option<u16>) -> bool {
        if self.own_hosts.iter().any(|own| host.is_within(own)) {
            return true;
        }
        if let Some((listener_port, addrs, loopback)) = &self.listener
            && port == Some(*listener_port)
            && ((*loopback && host.is_loopback())
                || addrs.iter().any(|a| *host == HostKey::Ip(canonical(*a))))
        {
            return true;
        }
        let Some(base_host) = &self.base_host else {
            return false;
        };
        let same_host = if base_host.is_loopback() {
            host.is_loopback()
        } else {
            host == base_host
        };
        let base_port = Some(self.base.port());
        same_host && (port == base_port || (is_default_port(port) && is_default_port(base_port)))
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are, as [`HostKey`] holds them.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// This machine's addresses, IPv4 and IPv6, as Linux lists them in `/proc/net/fib_trie` and
/// `/proc/net/if_inet6` (of this network namespace); none where those files are missing.
pub fn interface_addresses() -> Vec<IpAddr> {
    let read = |path| std::fs::read_to_string(path).unwrap_or_default();
    let mut addrs = local_ipv4_of_fib_trie(&read("/proc/net/fib_trie"));
    addrs.extend(ipv6_of_if_inet6(&read("/proc/net/if_inet6")));
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// The addresses of `/32 host LOCAL` entries: each follows the `|-- ADDRESS` line it is of.
fn local_ipv4_of_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut last = None;
    let mut addrs = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse::<IpAddr>().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(addr) = last
        {
            addrs.push(addr);
        }
    }
    addrs
}

/// The first field of each line: the address as 32 hex digits.
fn ipv6_of_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| {
            u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)
        })
        .map(|bits| IpAddr::V6(Ipv6Addr::from(bits)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base: &str) -> UrlPolicy {
        UrlPolicy::new(
            8192,
            BaseUrl::parse(base).expect("valid"),
            &["go.kurz.example".to_owned()],
            &["bit.ly".to_owned()],
        )
    }

    #[test]
    fn accepts_and_normalises_ordinary_urls() {
        let p = policy("https://kurz.example/");
        for (raw, normalised) in [
            ("https://example.com", "https://example.com/"),
            (
                "http://example.com/a/b?c=d&e=f#frag",
                "http://example.com/a/b?c=d&e=f#frag",
            ),
            ("HTTPS://Example.COM:443/x", "https://example.com/x"),
            ("http://[::1]:8080/", "http://[::1]:8080/"),
            (
                "https://kurz.example:8443/other-port",
                "https://kurz.example:8443/other-port",
            ),
            ("https://example.com/\u{e9}", "https://example.com/%C3%A9"),
            (
                "https://b\u{fc}cher.example/",
                "https://xn--bcher-kva.example/",
            ),
        ] {
            assert_eq!(
                p.check(raw).map(|c| c.url),
                Ok(normalised.to_owned()),
                "{raw}"
            );
        }
        assert_eq!(
            p.check("https://Example.COM./x").map(|c| c.host),
            Ok("example.com".to_owned())
        );
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        let p = policy("https://kurz.example/");
        let cases = [
            ("", UrlError::Empty),
            ("example.com/x", UrlError::NotAbsoluteHttp),
            ("/relative", UrlError::NotAbsoluteHttp),
            ("ftp://example.com/", UrlError::NotAbsoluteHttp),
            ("javascript:alert(1)", UrlError::NotAbsoluteHttp),
            ("https://", UrlError::NotAbsoluteHttp),
            ("https://exa mple.com", UrlError::Characters),
            ("https://example.com/\n", UrlError::Characters),
            ("https://user:pw@example.com/", UrlError::Credentials),
            (
                "https://bit.ly/abc",
                UrlError::OtherShortener("bit.ly".into()),
            ),
            (
                "https://x.bit.ly/abc",
                UrlError::OtherShortener("bit.ly".into()),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(p.check(url), Err(expected), "{url}");
        }
        for bad in [
            "http://example.com:65536/",
            "https://a.dev*/",
            "https://a..b/",
        ] {
            assert!(matches!(p.check(bad), Err(UrlError::Invalid(_))), "{bad}");
        }
        let long_host = format!("https://{}.example/", "a.".repeat(130));
        assert!(matches!(p.check(&long_host), Err(UrlError::HostTooLong(_))));
        let long = format!("https://example.com/{}", "a".repeat(9000));
        assert!(matches!(p.check(&long), Err(UrlError::TooLong(_, 8192))));
    }

    #[test]
    fn every_spelling_of_kurz_itself_is_a_loop() {
        let public = policy("https://kurz.example");
        for url in [
            "https://KURZ.example/abc",
            "http://kurz.example/abc",
            "https://kurz.example./abc",
            "https://kurz.example:443/abc",
            "http://go.kurz.example/abc",
        ] {
            assert!(
                matches!(public.check(url), Err(UrlError::SelfReference(_))),
                "{url}"
            );
        }
        let local = policy("http://127.0.0.1:8080");
        for url in [
            "http://localhost:8080/abc",
            "http://127.1:8080/abc",
            "http://2130706433:8080/abc",
            "http://[::ffff:127.0.0.1]:8080/abc",
            "http://127.0.0.1.:8080/abc",
            "http://0x7f.0.0.1:8080/abc",
            "http://[::1]:8080/abc",
        ] {
            assert!(
                matches!(local.check(url), Err(UrlError::SelfReference(_))),
                "{url}"
            );
        }
        assert!(local.check("http://127.0.0.1:9999/other-service").is_ok());
    }

    fn assert_loops(policy: &UrlPolicy, urls: &[&str]) {
        for url in urls {
            assert!(
                matches!(policy.check(url), Err(UrlError::SelfReference(_))),
                "{url}"
            );
        }
    }

    fn texts(addrs: Vec<IpAddr>) -> Vec<String> {
        addrs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unspecified_addresses_are_loopback_to_a_kurz_on_loopback() {
        let local = policy("http://127.0.0.1:8080");
        assert_loops(
            &local,
            &[
                "http://0.0.0.0:8080/abc",
                "http://0:8080/abc",
                "http://[::]:8080/abc",
            ],
        );
        assert!(local.check("http://0.0.0.0:9999/other-service").is_ok());
    }

    #[test]
    fn bound_to_every_address_the_machine_s_own_addresses_are_loops() {
        let interfaces: Vec<IpAddr> = ["127.0.0.1", "192.0.2.2", "fd00::2"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        let everywhere = policy("https://kurz.example")
            .with_listener("0.0.0.0:8080".parse().expect("addr"), interfaces.clone());
        assert_loops(
            &everywhere,
            &[
                "http://192.0.2.2:8080/abc",
                "http://[fd00::2]:8080/abc",
                "http://[::ffff:192.0.2.2]:8080/abc",
                "http://0.0.0.0:8080/abc",
                "http://0:8080/abc",
                "http://[::]:8080/abc",
                "http://localhost:8080/abc",
                "https://kurz.example/abc",
            ],
        );
        // Another port of the machine, or another machine, is someone else.
        for url in ["http://192.0.2.2:9090/abc", "http://192.0.2.3:8080/abc"] {
            assert!(everywhere.check(url).is_ok(), "{url}");
        }
        // Bound to one address, that address is kurz.
        let one = policy("https://kurz.example")
            .with_listener("192.0.2.2:8080".parse().expect("addr"), interfaces);
        assert!(one.check("http://192.0.2.2:8080/abc").is_err());
        assert!(one.check("http://[fd00::2]:8080/abc").is_ok());
        assert!(one.check("http://localhost:8080/abc").is_ok());
    }

    #[test]
    fn interface_addresses_are_read_from_proc() {
        let fib_trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
            \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
            \x20       |-- 127.255.255.255\n           /32 link BROADCAST\n\
            \x20          |-- 192.0.2.2\n              /32 host LOCAL\n";
        assert_eq!(
            texts(local_ipv4_of_fib_trie(fib_trie)),
            ["127.0.0.1", "192.0.2.2"]
        );
        let if_inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
            fd000000000000000000000000000002 04 40 00 82     eth0\n";
        assert_eq!(texts(ipv6_of_if_inet6(if_inet6)), ["::1", "fd00::2"]);
        // On this machine: at least loopback, when /proc is there.
        if std::path::Path::new("/proc/net/fib_trie").exists() {
            assert!(interface_addresses().iter().any(IpAddr::is_loopback));
        }
    }
}
