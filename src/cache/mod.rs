//! The cache tiers in front of the store: an in-process L1 (always, unless turned off) and a
//! shared Redis L2 (optional). Both hold what a redirect needs, and "no such code" too.
//! Neither is ever needed for a redirect to succeed.

mod local;
mod redis;

// The only framework type below the HTTP layer: the header value is what makes a cached
// redirect cheap.
use actix_web::http::header::HeaderValue;

use serde::{Deserialize, Serialize};

use crate::store::Link;

pub use local::LocalCache;
pub use redis::{Fetched, RedisCache, start_invalidation_listener};

/// What a redirect needs to know about a link. The URL is kept as a ready `Location` header
/// value: a redirect from the cache then clones a reference count instead of checking and
/// copying the URL into a new header each time. Cheap to clone (that reference count, and the
/// denylisted domain's when there is one), so caches keep it inline.
///
/// Made from a stored link by [`Target::of`] only; its Redis form is its serde form, so a
/// field added here reaches Redis with nothing more to write (a test round-trips every field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "u", with = "location")]
    location: HeaderValue,
    #[serde(rename = "s")]
    pub redirect_status: u16,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// Disabled by an admin: answers 410 (shared through Redis like the rest).
    #[serde(rename = "d", default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Whether the request's query string is added to the destination's.
    #[serde(rename = "q", default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_query: bool,
    /// The link's clicks are only counted, with no details (its `analytics` is off).
    #[serde(rename = "n", default, skip_serializing_if = "std::ops::Not::not")]
    pub counts_only: bool,
    /// The denylisted domain the URL falls under, as this instance's list says (never put in
    /// Redis: each instance decides by its own list, and reloading it clears the L1 cache).
    #[serde(skip)]
    pub blocked_by: Option<std::sync::Arc<str>>,
    /// When L1 stored this target, for its TTL. Kept here rather than beside the target
    /// because it fits in the target's padding: an L1 entry stays 80 bytes.
    #[serde(skip)]
    cached_at: CachedAt,
}

/// L1's own clock reading (0 elsewhere). No part of what a target is: two targets that
/// redirect alike are equal whenever they were cached.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CachedAt(pub(crate) u32);

impl PartialEq for CachedAt {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CachedAt {}

/// A `Location` value as its text.
mod location {
    use actix_web::http::header::HeaderValue;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.to_str().unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderValue, D::Error> {
        let text = <&str>::deserialize(d)?;
        if text.is_empty() {
            return Err(serde::de::Error::custom("empty URL"));
        }
        HeaderValue::from_str(text).map_err(serde::de::Error::custom)
    }
}

impl Target {
    /// `None` when `url` cannot be a header value (kurz only stores URLs that can).
    pub fn new(url: &str, redirect_status: u16, expires_at_ms: Option<i64>) -> Option<Self> {
        Some(Self {
            location: HeaderValue::from_str(url).ok()?,
            redirect_status,
            expires_at_ms,
            disabled: false,
            forward_query: false,
            counts_only: false,
            blocked_by: None,
            cached_at: CachedAt(0),
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

    /// The `Location` for a request whose query string is `query`: the destination's own
    /// parameters first, then the request's, the fragment kept last. `None` when the result
    /// would be longer than `max_len` or is no header value; the stored location itself when
    /// there is nothing to add or the link does not forward.
    pub fn location_with_query(&self, query: &str, max_len: usize) -> Option<HeaderValue> {
        if query.is_empty() || !self.forward_query {
            return Some(self.location.clone());
        }
        let url = self.url();
        let (base, fragment) = match url.find('#') {
            Some(at) => url.split_at(at),
            None => (url, ""),
        };
        let joiner = match base.find('?') {
            None => "?",
            Some(_) if base.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        let length = base.len() + joiner.len() + query.len() + fragment.len();
        if length > max_len {
            return None;
        }
        let mut joined = String::with_capacity(length);
        joined.push_str(base);
        joined.push_str(joiner);
        joined.push_str(query);
        joined.push_str(fragment);
        HeaderValue::from_maybe_shared(joined).ok()
    }

    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// The redirect view of a stored link: the one place its fields are chosen.
    pub fn of(link: &Link) -> Option<Self> {
        let mut target = Self::new(&link.url, link.redirect_status, link.expires_at_ms)?;
        target.disabled = link.disabled.is_some();
        target.forward_query = link.forward_query;
        target.counts_only = !link.analytics;
        Some(target)
    }
}

/// What a cache knows about a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Found(Target),
    Missing,
}

/// The prefix of the current Redis form: `2` then the target's JSON. Values without it are
/// the first form (`STATUS EXPIRES_MS URL`), still read so that a fleet mid-deploy shares
/// one Redis.
const REDIS_V2: char = '2';

impl Cached {
    /// Form for Redis: `-` for "no such code", else `2{json}`.
    pub fn encode(&self) -> String {
        match self {
            Cached::Missing => "-".into(),
            Cached::Found(t) => {
                let mut text = String::with_capacity(t.url().len() + 24);
                text.push(REDIS_V2);
                // Serialising a struct of plain fields to JSON cannot fail.
                text.push_str(&serde_json::to_string(t).unwrap_or_default());
                text
            }
        }
    }

    pub fn decode(text: &str) -> Option<Cached> {
        if text == "-" {
            return Some(Cached::Missing);
        }
        if let Some(json) = text.strip_prefix(REDIS_V2).filter(|j| j.starts_with('{')) {
            return serde_json::from_str(json).ok().map(Cached::Found);
        }
        Self::decode_v1(text)
    }

    /// The first form: `STATUS EXPIRES_MS URL` (`EXPIRES_MS` 0 for never), prefixed `D ` while
    /// disabled. Links then never forwarded queries.
    fn decode_v1(text: &str) -> Option<Cached> {
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
    use crate::store::Disabled;

    #[test]
    fn every_field_a_redirect_needs_round_trips_through_redis() {
        // Every redirect-relevant field away from its default.
        let link = Link {
            code: "abc".into(),
            url: "https://example.com/a b?c#d".into(),
            expires_at_ms: Some(1_900_000_000_000),
            redirect_status: 308,
            forward_query: true,
            disabled: Some(Disabled {
                reason: "x".into(),
                at_ms: 1,
                by_admin: false,
            }),
            ..Link::default()
        };
        let found = Cached::Found(Target::of(&link).expect("a valid header value"));
        let encoded = found.encode();
        assert!(encoded.starts_with("2{"), "{encoded}");
        assert_eq!(Cached::decode(&encoded), Some(found));
        let plain = Cached::Found(Target::new("https://e.com/", 302, None).expect("valid"));
        assert_eq!(plain.encode(), r#"2{"u":"https://e.com/","s":302}"#);
        for value in [plain, Cached::Missing] {
            assert_eq!(Cached::decode(&value.encode()), Some(value));
        }
        assert_eq!(
            Cached::decode(r#"2{"u":"https://e.com/\nx","s":302}"#),
            None
        );
        assert_eq!(Cached::decode(r#"2{"u":"","s":302}"#), None);
    }

    #[test]
    fn the_first_redis_form_still_reads() {
        let found = Cached::decode("308 1900000000000 https://example.com/a b?c").expect("v1");
        let Cached::Found(target) = found else {
            panic!("a link")
        };
        assert_eq!(target.url(), "https://example.com/a b?c");
        assert_eq!(target.expires_at_ms, Some(1_900_000_000_000));
        assert!(!target.forward_query && !target.disabled);
        let disabled = Cached::decode("D 302 0 https://e.com/d").expect("v1");
        assert!(matches!(disabled, Cached::Found(t) if t.disabled && t.expires_at_ms.is_none()));
        assert_eq!(Cached::decode("garbage"), None);
        assert_eq!(Cached::decode("302 0 "), None);
        assert_eq!(
            Cached::decode("302 0 https://e.com/\nx"),
            None,
            "not a header value"
        );
    }

    #[test]
    fn a_forwarded_query_goes_after_the_destinations_own_and_before_its_fragment() {
        let target = |url: &str| {
            let mut t = Target::new(url, 302, None).expect("valid");
            t.forward_query = true;
            t
        };
        let cases = [
            ("https://e.com/p", "utm=x", "https://e.com/p?utm=x"),
            (
                "https://e.com/p?a=1",
                "utm=x&b=2",
                "https://e.com/p?a=1&utm=x&b=2",
            ),
            (
                "https://e.com/p?a=1#top",
                "utm=x",
                "https://e.com/p?a=1&utm=x#top",
            ),
            ("https://e.com/p#top", "utm=x", "https://e.com/p?utm=x#top"),
            ("https://e.com/p?", "utm=x", "https://e.com/p?utm=x"),
            ("https://e.com/p?a=1&", "utm=x", "https://e.com/p?a=1&utm=x"),
            ("https://e.com/p?a=1", "", "https://e.com/p?a=1"),
        ];
        for (url, query, expected) in cases {
            let location = target(url).location_with_query(query, 8192);
            assert_eq!(
                location.as_ref().and_then(|v| v.to_str().ok()),
                Some(expected)
            );
        }
        let mut off = target("https://e.com/p?a=1");
        off.forward_query = false;
        assert_eq!(
            off.location_with_query("utm=x", 8192)
                .expect("valid")
                .to_str()
                .ok(),
            Some("https://e.com/p?a=1")
        );
        assert_eq!(
            target("https://e.com/p").location_with_query("q=1", 18),
            None,
            "too long"
        );
        assert!(
            target("https://e.com/p")
                .location_with_query("q=1", 19)
                .is_some()
        );
        assert_eq!(
            target("https://e.com/p").location_with_query("q=\n", 99),
            None
        );
    }
}
