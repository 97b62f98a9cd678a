//! Who the client is, network-wise: the socket peer, or, behind a trusted proxy, the address
//! the proxy says it forwarded for. Only proxies listed in `server.trusted_proxies` are
//! believed, for `X-Forwarded-For` and for `X-Request-Id`: anyone else could claim any
//! address (and dodge rate limits) or inject ids into the logs.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether the request came straight from a trusted proxy.
    pub fn is_trusted_peer(&self, req: &HttpRequest) -> bool {
        !self.0.is_empty() && req.peer_addr().is_some_and(|a| self.contains(a.ip()))
    }

    /// The client's address: the peer, or behind trusted proxies the right-most address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = canonical(req.peer_addr()?.ip());
        if !self.is_trusted_peer(req) {
            return Some(peer);
        }
        Some(self.forwarded_for(req.headers()).unwrap_or(peer))
    }

    /// The client's address as text, for rate-limit keys and logs (`unknown` without a peer).
    pub fn client_label(&self, req: &HttpRequest) -> String {
        self.client_ip(req)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    fn forwarded_for(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut hops: Vec<IpAddr> = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            for hop in value.to_str().ok()?.split(',') {
                hops.push(canonical(hop.trim().parse().ok()?));
            }
        }
        hops.into_iter().rev().find(|ip| !self.contains(*ip))
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

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let from_proxy = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().expect("addr"))
            .insert_header((X_FORWARDED_FOR, "203.0.113.9, 192.0.2.7"))
            .to_http_request();
        assert_eq!(
            proxies().client_ip(&from_proxy),
            Some("203.0.113.9".parse().expect("ip"))
        );
        let spoofed = TestRequest::default()
            .peer_addr("198.51.100.1:5000".parse().expect("addr"))
            .insert_header((X_FORWARDED_FOR, "203.0.113.9"))
            .to_http_request();
        assert_eq!(
            proxies().client_ip(&spoofed),
            Some("198.51.100.1".parse().expect("ip"))
        );
        // A client cannot hide behind a forged left-most entry: the right-most untrusted wins.
        let forged = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().expect("addr"))
            .insert_header((X_FORWARDED_FOR, "1.1.1.1, 203.0.113.9"))
            .to_http_request();
        assert_eq!(
            proxies().client_ip(&forged),
            Some("203.0.113.9".parse().expect("ip"))
        );
        let garbage = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().expect("addr"))
            .insert_header((X_FORWARDED_FOR, "not-an-ip"))
            .to_http_request();
        assert_eq!(
            proxies().client_ip(&garbage),
            Some("10.1.2.3".parse().expect("ip"))
        );
    }
}
