//! Who the client is, network-wise: the socket peer, or, behind a trusted proxy, the address
//! the proxy says it forwarded for. Only proxies listed in `server.trusted_proxies` are
//! believed, for `X-Forwarded-For` and for `X-Request-Id`: anyone else could claim any
//! address (and dodge rate limits) or inject ids into the logs.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the address it got the
//! request from, so the client is the right-most hop that is not a trusted proxy. What is to
//! its left was written by the client and is ignored; a hop in the client's place that is no
//! address (a proxy that writes junk) is a client of its own, named by its text, so it never
//! shares the proxy's bucket. Hops may carry a port (`192.0.2.1:5678`, `[2001:db8::1]:80`).
//!
//! Rate limits count an IPv4 client per address and an IPv6 client per prefix
//! (`limits.rate.ipv6_prefix_len`, /64 by default): one host is given a whole /64.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderMap, HeaderName};
use ipnet::{IpNet, Ipv6Net};

/// A name made once: looked up by its text, a header outside the standard set is made anew
/// (allocated) on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Longest part of a junk hop kept as its client's name.
const MAX_JUNK_LEN: usize = 64;

/// The client of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    Ip(IpAddr),
    /// A trusted proxy forwarded for something that is no address: its text (cut short).
    Unparsed(String),
    /// No peer address (not on a TCP socket).
    Unknown,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Ip(ip) => write!(f, "{ip}"),
            Client::Unparsed(text) => write!(f, "unparsed:{text}"),
            Client::Unknown => f.write_str("unknown"),
        }
    }
}

/// The proxies whose forwarding headers are believed, and how IPv6 clients are grouped.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    ipv6_prefix_len: u8,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self {
            nets,
            ipv6_prefix_len: 64,
        }
    }

    /// Groups IPv6 clients by their first `len` bits for rate limits (32 to 128).
    pub fn with_ipv6_prefix_len(mut self, len: u8) -> Self {
        self.ipv6_prefix_len = len.clamp(32, 128);
        self
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether the request came straight from a trusted proxy.
    pub fn is_trusted_peer(&self, req: &HttpRequest) -> bool {
        !self.nets.is_empty() && req.peer_addr().is_some_and(|a| self.contains(a.ip()))
    }

    /// The client: the peer, or behind trusted proxies the right-most hop of
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client(&self, req: &HttpRequest) -> Client {
        let Some(peer) = req.peer_addr() else {
            return Client::Unknown;
        };
        let peer = canonical(peer.ip());
        if !self.is_trusted_peer(req) {
            return Client::Ip(peer);
        }
        self.forwarded_for(req.headers())
            .unwrap_or(Client::Ip(peer))
    }

    /// The client as text, for logs: its full address.
    pub fn client_label(&self, req: &HttpRequest) -> String {
        self.client(req).to_string()
    }

    /// The client as rate limits count it: an IPv4 address, an IPv6 prefix
    /// (`2001:db8:1:2::/64`), or a junk hop's text.
    pub fn rate_key(&self, req: &HttpRequest) -> String {
        self.key_of(&self.client(req))
    }

    fn key_of(&self, client: &Client) -> String {
        match client {
            Client::Ip(IpAddr::V6(v6)) if self.ipv6_prefix_len < 128 => {
                Ipv6Net::new(*v6, self.ipv6_prefix_len)
                    .map_or_else(|_| v6.to_string(), |net| net.trunc().to_string())
            }
            other => other.to_string(),
        }
    }

    /// The hops of every `X-Forwarded-For` header, in order, walked from the right past the
    /// trusted proxies; `None` when there are none. When every hop is a trusted proxy, the
    /// left-most is the client.
    fn forwarded_for(&self, headers: &HeaderMap) -> Option<Client> {
        let mut hops: Vec<Client> = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let text = String::from_utf8_lossy(value.as_bytes());
            hops.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|hop| !hop.is_empty())
                    .map(parse_hop),
            );
        }
        let first = hops.first().cloned();
        hops.into_iter()
            .rev()
            .find(|hop| !matches!(hop, Client::Ip(ip) if self.contains(*ip)))
            .or(first)
    }
}

/// One hop: an address, with or without a port, else junk.
fn parse_hop(hop: &str) -> Client {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        });
    match ip {
        Some(ip) => Client::Ip(canonical(ip)),
        None => {
            let mut end = hop.len().min(MAX_JUNK_LEN);
            while !hop.is_char_boundary(end) {
                end -= 1;
            }
            Client::Unparsed(hop[..end].to_owned())
        }
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().expect("net"),
            "192.0.2.7/32".parse().expect("net"),
        ])
    }

    fn from_proxy(forwarded: &[&str]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr("10.1.2.3:5000".parse().expect("addr"));
        for value in forwarded {
            req = req.append_header((X_FORWARDED_FOR.clone(), *value));
        }
        req.to_http_request()
    }

    fn ip(text: &str) -> Client {
        Client::Ip(text.parse().expect("ip"))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        assert_eq!(
            proxies().client(&from_proxy(&["203.0.113.9, 192.0.2.7"])),
            ip("203.0.113.9")
        );
        let spoofed = TestRequest::default()
            .peer_addr("198.51.100.1:5000".parse().expect("addr"))
            .insert_header((X_FORWARDED_FOR.clone(), "203.0.113.9"))
            .to_http_request();
        assert_eq!(proxies().client(&spoofed), ip("198.51.100.1"));
        // A client cannot hide behind a forged left-most entry: the right-most untrusted wins.
        assert_eq!(
            proxies().client(&from_proxy(&["1.1.1.1, 203.0.113.9"])),
            ip("203.0.113.9")
        );
        // No header: the proxy itself; only proxies: the left-most of them.
        assert_eq!(proxies().client(&from_proxy(&[])), ip("10.1.2.3"));
        assert_eq!(
            proxies().client(&from_proxy(&["10.9.9.9, 192.0.2.7"])),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn junk_hops_are_ignored_left_of_the_client_and_their_own_client_in_its_place() {
        let p = proxies();
        for forwarded in [
            &["not-an-ip, 203.0.113.9"][..],
            &["203.0.113.9, , 192.0.2.7"],
            &["unknown", "203.0.113.9"],
            &["1.2.3.4.5, 203.0.113.9:5678, 10.0.0.1"],
        ] {
            assert_eq!(
                p.client(&from_proxy(forwarded)),
                ip("203.0.113.9"),
                "{forwarded:?}"
            );
        }
        let junk = p.client(&from_proxy(&["203.0.113.9, not-an-ip, 192.0.2.7"]));
        assert_eq!(junk, Client::Unparsed("not-an-ip".into()));
        let req = from_proxy(&["203.0.113.9, not-an-ip"]);
        assert_eq!(p.rate_key(&req), "unparsed:not-an-ip");
        assert_ne!(p.rate_key(&req), p.rate_key(&from_proxy(&[])));
        // Long junk is cut short, on a character boundary.
        let long = format!("{}é", "x".repeat(MAX_JUNK_LEN - 1));
        let cut = p.client(&from_proxy(&[long.as_str()]));
        assert_eq!(cut, Client::Unparsed("x".repeat(MAX_JUNK_LEN - 1)));
    }

    #[test]
    fn hops_with_ports_are_their_address() {
        let p = proxies();
        for (forwarded, client) in [
            ("203.0.113.9:5678", "203.0.113.9"),
            ("[2001:db8::1]:80", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[::ffff:203.0.113.9]:443", "203.0.113.9"),
        ] {
            assert_eq!(
                p.client(&from_proxy(&[forwarded])),
                ip(client),
                "{forwarded}"
            );
        }
        // A trusted proxy with a port is still a trusted proxy.
        assert_eq!(
            p.client(&from_proxy(&["203.0.113.9, 10.0.0.1:8080"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix_and_ipv4_per_address() {
        let key = |p: &TrustedProxies, client: &str| p.rate_key(&from_proxy(&[client]));
        let p = proxies();
        assert_eq!(key(&p, "2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key(&p, "2001:db8:1:2:ffff:1:2:3"), "2001:db8:1:2::/64");
        assert_ne!(key(&p, "2001:db8:1:3::1"), "2001:db8:1:2::/64");
        assert_eq!(key(&p, "203.0.113.9"), "203.0.113.9");
        assert_eq!(key(&p, "::ffff:203.0.113.9"), "203.0.113.9");
        let p48 = proxies().with_ipv6_prefix_len(48);
        assert_eq!(key(&p48, "2001:db8:1:2::1"), "2001:db8:1::/48");
        let exact = proxies().with_ipv6_prefix_len(128);
        assert_eq!(key(&exact, "2001:db8:1:2::1"), "2001:db8:1:2::1");
        // The log keeps the whole address.
        assert_eq!(
            p.client_label(&from_proxy(&["2001:db8:1:2::1"])),
            "2001:db8:1:2::1"
        );
    }
}
