//! The cache tiers in front of the store: an in-process L1 (always, unless turned off) and a
//! shared Redis L2 (optional). Both hold what a redirect needs, and "no such code" too.
//! Neither is ever needed for a redirect to succeed.

mod local;
mod redis;

use crate::store::Link;

pub use local::LocalCache;
pub use redis::{RedisCache, start_invalidation_listener};

/// What a redirect needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: Box<str>,
    pub redirect_status: u16,
    pub expires_at_ms: Option<i64>,
}

impl Target {
    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

impl From<&Link> for Target {
    fn from(link: &Link) -> Self {
        Self {
            url: link.url.as_str().into(),
            redirect_status: link.redirect_status,
            expires_at_ms: link.expires_at_ms,
        }
    }
}

/// What a cache knows about a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Found(std::sync::Arc<Target>),
    Missing,
}

impl Cached {
    /// Compact form for Redis: `-` for "no such code", else `STATUS EXPIRES_MS URL`
    /// (`EXPIRES_MS` is 0 for a link that never expires).
    pub fn encode(&self) -> String {
        match self {
            Cached::Missing => "-".into(),
            Cached::Found(t) => format!(
                "{} {} {}",
                t.redirect_status,
                t.expires_at_ms.unwrap_or(0),
                t.url
            ),
        }
    }

    pub fn decode(text: &str) -> Option<Cached> {
        if text == "-" {
            return Some(Cached::Missing);
        }
        let mut parts = text.splitn(3, ' ');
        let redirect_status = parts.next()?.parse().ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let url = parts.next().filter(|u| !u.is_empty())?;
        Some(Cached::Found(std::sync::Arc::new(Target {
            url: url.into(),
            redirect_status,
            expires_at_ms: (expires != 0).then_some(expires),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn redis_encoding_round_trips() {
        let found = Cached::Found(Arc::new(Target {
            url: "https://example.com/a b?c".into(),
            redirect_status: 308,
            expires_at_ms: Some(1_900_000_000_000),
        }));
        assert_eq!(
            found.encode(),
            "308 1900000000000 https://example.com/a b?c"
        );
        for value in [found, Cached::Missing] {
            assert_eq!(Cached::decode(&value.encode()), Some(value));
        }
        let forever = Cached::decode("302 0 https://e.com").expect("decodes");
        assert!(matches!(forever, Cached::Found(t) if t.expires_at_ms.is_none()));
        assert_eq!(Cached::decode("garbage"), None);
        assert_eq!(Cached::decode("302 0 "), None);
    }
}
