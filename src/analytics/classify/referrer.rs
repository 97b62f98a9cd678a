//! The `Referer` reduced to its host.

use url::Url;

/// Longest host kept (DNS names are at most 253 bytes); a longer one is `unknown`.
const MAX_HOST: usize = 253;

/// The referrer as recorded: its host, lowercased, without `www.`, a port or a trailing dot;
/// `direct` when the header is empty; `unknown` when it is no URL with a host. A host that
/// would read as one of the words kurz gives a meaning (`direct`, `unknown`, and `other`, the
/// cap's overflow) is `unknown` too, so those words keep their meaning.
///
/// The header arrives cut to [`crate::analytics::Visit::MAX_HEADER`] bytes; a URL cut in its
/// path still parses to its host, and one cut inside the host (no `/` after it, the header
/// full) is `unknown` rather than a host that is not the one sent.
pub fn host(referer: &str) -> Box<str> {
    let referer = referer.trim();
    if referer.is_empty() {
        return "direct".into();
    }
    let Ok(url) = Url::parse(referer) else {
        return "unknown".into();
    };
    let Some(host) = url.host_str() else {
        return "unknown".into();
    };
    if host_may_be_cut(referer) {
        return "unknown".into();
    }
    let host = host.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    let host = host.strip_prefix("www.").unwrap_or(host);
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'));
    if host.is_empty()
        || host.len() > MAX_HOST
        || !plain
        || matches!(host, "direct" | "unknown" | crate::analytics::OTHER)
    {
        return "unknown".into();
    }
    host.into()
}

/// What comes before the referrer's path, query or fragment: the part its host is read from
/// (the whole text when it has no `//`). Referrers with one origin have one host.
pub fn origin(referer: &str) -> &str {
    let referer = referer.trim();
    let Some(start) = referer.find("//").map(|i| i + 2) else {
        return referer;
    };
    let end = referer[start..]
        .find(['/', '?', '#'])
        .map_or(referer.len(), |i| start + i);
    &referer[..end]
}

/// Whether the header was cut inside its host: it is (nearly) as long as a visit keeps and
/// nothing follows the host.
fn host_may_be_cut(referer: &str) -> bool {
    use crate::analytics::Visit;
    // `Visit::header` may drop up to 3 bytes of a character cut in two.
    if referer.len() + 3 < Visit::MAX_HEADER {
        return false;
    }
    let after_scheme = referer.split_once("//").map_or(referer, |(_, rest)| rest);
    !after_scheme.contains(['/', '?', '#'])
}
