//! The cache tiers in front of the store: an in-process L1 (always, unless turned off) and a
//! shared Redis L2 (optional). Both hold what a redirect needs, and "no such code" too.
//! Neither is ever needed for a redirect to succeed.

mod local;
mod redis;

// The only framework type below the HTTP layer: the header value is what makes a cached
// redirect cheap.
use actix_web::http::header::HeaderValue;

use crate::store::Link;

pub use local::LocalCache;
pub use redis::{Fetched, RedisCache, start_invalidation_listener};

/// What a redirect needs to know about a link. The URL is kept as a ready `Location` header
/// value: a redirect from the cache then clones a reference count instead of checking and
/// copying the URL into a new header each time. Cheap to clone (that reference count, and the
/// denylisted domain's when there is one), so caches keep it inline.
#[derive(Debug, Clone)]
pub struct Target {
    location: HeaderValue,
    pub redirect_status: u16,
    pub expires_at_ms: Option<i64>,
    /// Disabled by an admin: answers 410 (shared through Redis like the rest).
    pub disabled: bool,
    /// The denylisted domain the URL falls under, as this instance's list says (never put in
    /// Redis: each instance decides by its own list, and reloading it clears the L1 cache).
    pub blocked_by: Option<std::sync::Arc<str>>,
    /// When L1 stored this target, for its TTL (L1's own clock; 0 elsewhere). Kept here rather
    /// than beside the target because it fits in the target's padding: an L1 entry stays 80
    /// bytes.
    cached_at: u32,
}

/// Targets are equal when they redirect alike; when L1 stored them is no part of that.
impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.location == other.location
            && self.redirect_status == other.redirect_status
            && self.expires_at_ms == other.expires_at_ms
            && self.disabled == other.disabled
            && self.blocked_by == other.blocked_by
    }
}

impl Eq for Target {}

impl Target {
    /// `None` when `url` cannot be a header value (kurz only stores URLs that can).
    pub fn new(url: &str, redirect_status: u16, expires_at_ms: Option<i64>) -> Option<Self> {
        Some(Self {
            location: HeaderValue::from_str(url).ok()?,
            redirect_status,
            expires_at_ms,
            disabled: false,
            blocked_by: None,
            cached_at: 0,
        })
    }

    pub fn url(&self) -> &str {
        // Built from a &str that passed `HeaderValue::from_str`, so always visible ASCII.
        self.location.to_str().unwrap_or_default()
    }

    /// The destination's host (empty if the URL has none, which kurz never stores).
    pub fn host(&self) -> &str {
        let url = self.url();
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host_port.split(':').next().unwrap_or_default(),
        }
    }

    pub fn location(&self) -> &HeaderValue {
        &self.location
    }

    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// The redirect view of a stored link.
    pub fn of(link: &Link) -> Option<Self> {
        let mut target = Self::new(&link.url, link.redirect_status, link.expires_at_ms)?;
        target.disabled = link.disabled.is_some();
        Some(target)
    }
}

/// What a cache knows about a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Found(Target),
    Missing,
}

impl Cached {
    /// Compact form for Redis: `-` for "no such code", else `STATUS EXPIRES_MS URL`
    /// (`EXPIRES_MS` is 0 for a link that never expires), prefixed `D ` while disabled.
    pub fn encode(&self) -> String {
        match self {
            Cached::Missing => "-".into(),
            Cached::Found(t) => format!(
                "{}{} {} {}",
                if t.disabled { "D " } else { "" },
                t.redirect_status,
                t.expires_at_ms.unwrap_or(0),
                t.url()
            ),
        }
    }

    pub fn decode(text: &str) -> Option<Cached> {
        if text == "-" {
            return Some(Cached::Missing);
        }
        let (disabled, text) = match text.strip_prefix("D ") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut parts = text.splitn(3, ' ');
        let redirect_status = parts.next()?.parse().ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let url = parts.next().filter(|u| !u.is_empty())?;
        let mut target = Target::new(url, redirect_status, (expires != 0).then_some(expires))?;
        target.disabled = disabled;
        Some(Cached::Found(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_encoding_round_trips() {
        let target = Target::new("https://example.com/a b?c", 308, Some(1_900_000_000_000));
        let found = Cached::Found(target.expect("a valid header value"));
        assert_eq!(
            found.encode(),
            "308 1900000000000 https://example.com/a b?c"
        );
        let mut disabled = Target::new("https://e.com/d", 302, None).expect("valid");
        disabled.disabled = true;
        let disabled = Cached::Found(disabled);
        assert_eq!(disabled.encode(), "D 302 0 https://e.com/d");
        for value in [found, Cached::Missing, disabled] {
            assert_eq!(Cached::decode(&value.encode()), Some(value));
        }
        let forever = Cached::decode("302 0 https://e.com").expect("decodes");
        assert!(matches!(forever, Cached::Found(t) if t.expires_at_ms.is_none()));
        assert_eq!(Cached::decode("garbage"), None);
        assert_eq!(Cached::decode("302 0 "), None);
        assert_eq!(
            Cached::decode("302 0 https://e.com/\nx"),
            None,
            "not a header value"
        );
    }
}
