//! Listing links: newest first, in pages an opaque cursor continues, filtered by tag, text,
//! creation time and state.
//!
//! A page continues strictly after the last link the previous one examined, in (creation
//! time, code) order, so links made while a client pages through never shift what is left:
//! nothing repeats and nothing already there is skipped. Filters are applied to what the
//! store's index returns, so a page that matches little may read more than it returns; one
//! page reads at most [`EXAMINED_PER_PAGE`] links and then answers with what it found and a
//! cursor to go on from.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::LinkService;
use crate::store::{Link, LinkStore, ListPosition, ListScope, StoreError};

/// Most links one page reads from the store, whatever the filters.
pub const EXAMINED_PER_PAGE: usize = 5_000;
/// Most links a tag count reads; beyond it the counts say they are incomplete.
pub const EXAMINED_FOR_TAGS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Redirects: neither expired nor disabled.
    Active,
    Expired,
    Disabled,
}

impl LinkState {
    pub const NAMES: &[&str] = &["active", "expired", "disabled"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Self::Active),
            "expired" => Some(Self::Expired),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }

    fn of(link: &Link, now_ms: i64) -> Self {
        if link.disabled.is_some() {
            Self::Disabled
        } else if link.is_expired_at(now_ms) {
            Self::Expired
        } else {
            Self::Active
        }
    }
}

/// Which links a list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Whose links: the caller's owners (a key's fingerprints), or everyone's.
    pub scopes: Vec<ListScope>,
    /// A normalised tag the link must carry.
    pub tag: Option<String>,
    /// Text the code, destination or title must contain (any case).
    pub text: Option<String>,
    /// Only links created strictly before this time (ms).
    pub created_before_ms: Option<i64>,
    /// Only links created strictly after this time (ms).
    pub created_after_ms: Option<i64>,
    pub state: Option<LinkState>,
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

impl ListQuery {
    fn matches(&self, link: &Link, now_ms: i64, text: Option<&str>) -> bool {
        self.tag.as_ref().is_none_or(|tag| link.tags.contains(tag))
            && self
                .state
                .is_none_or(|state| LinkState::of(link, now_ms) == state)
            && text.is_none_or(|text| {
                link.code.to_lowercase().contains(text)
                    || link.url.to_lowercase().contains(text)
                    || link
                        .title
                        .as_ref()
                        .is_some_and(|t| t.to_lowercase().contains(text))
            })
    }
}

/// A place to continue a list from. Opaque to clients: the position, hex-encoded, and a
/// checksum that tells a cursor kurz issued from one that was changed or cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(ListPosition);

const CURSOR_VERSION: &str = "1";

impl Cursor {
    pub fn encode(&self) -> String {
        let body = format!("{CURSOR_VERSION}:{}:{}", self.0.created_at_ms, self.0.code);
        let mut text = hex::encode(body.as_bytes());
        text.push_str(&checksum(&text));
        text
    }

    pub fn decode(text: &str) -> Option<Self> {
        let split = text.len().checked_sub(8)?;
        let (body, sum) = (text.get(..split)?, text.get(split..)?);
        if checksum(body) != sum {
            return None;
        }
        let body = String::from_utf8(hex::decode(body).ok()?).ok()?;
        let mut parts = body.splitn(3, ':');
        if parts.next()? != CURSOR_VERSION {
            return None;
        }
        let created_at_ms = parts.next()?.parse().ok()?;
        let code = parts.next()?.to_owned();
        Some(Self(ListPosition {
            created_at_ms,
            code,
        }))
    }
}

fn checksum(body: &str) -> String {
    hex::encode(&Sha256::digest(format!("kurz-cursor:{body}"))[..4])
}

/// One page: the links, and where the next page starts (`None` at the end).
#[derive(Debug)]
pub struct Page {
    pub links: Vec<Link>,
    pub next: Option<Cursor>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TagCount {
    pub tag: String,
    pub links: u64,
}

#[derive(Debug)]
pub struct TagCounts {
    /// Most used first, then by name.
    pub tags: Vec<TagCount>,
    /// False when there were more links than one count reads ([`EXAMINED_FOR_TAGS`]).
    pub complete: bool,
}

impl LinkService {
    /// A page of links, newest first.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let now = self.clock.now_ms();
        let text = query.text.as_ref().map(|t| t.to_lowercase());
        let limit = query.limit.max(1);
        let before = query.created_before_ms.map(|at| ListPosition {
            created_at_ms: at,
            code: String::new(),
        });
        // Start strictly after both the cursor and the `created_before` bound.
        let mut from = match (query.cursor.as_ref().map(|c| c.0.clone()), before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut links = Vec::with_capacity(limit.min(1_000));
        let mut examined = 0;
        while examined < EXAMINED_PER_PAGE {
            let batch_size = (limit - links.len()).clamp(100, 1_000);
            let batch = read_scopes(&*self.store, &query.scopes, from.as_ref(), batch_size).await?;
            let exhausted = batch.len() < batch_size;
            for link in batch {
                examined += 1;
                if query
                    .created_after_ms
                    .is_some_and(|at| link.created_at_ms <= at)
                {
                    return Ok(Page { links, next: None });
                }
                from = Some(link.position());
                if query.matches(&link, now, text.as_deref()) {
                    links.push(link);
                    if links.len() == limit {
                        return Ok(Page {
                            links,
                            next: from.map(Cursor),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(Page { links, next: None });
            }
        }
        Ok(Page {
            links,
            next: from.map(Cursor),
        })
    }

    /// The tags on the links in `scopes`, with how many links carry each.
    pub async fn tags(&self, scopes: &[ListScope]) -> Result<TagCounts, StoreError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut from: Option<ListPosition> = None;
        let mut examined = 0;
        let complete = loop {
            if examined >= EXAMINED_FOR_TAGS {
                break false;
            }
            let batch = read_scopes(&*self.store, scopes, from.as_ref(), 1_000).await?;
            let exhausted = batch.len() < 1_000;
            examined += batch.len();
            for link in batch {
                for tag in &link.tags {
                    *counts.entry(tag.clone()).or_default() += 1;
                }
                from = Some(link.position());
            }
            if exhausted {
                break true;
            }
        };
        let mut tags: Vec<TagCount> = counts
            .into_iter()
            .map(|(tag, links)| TagCount { tag, links })
            .collect();
        tags.sort_by(|a, b| b.links.cmp(&a.links).then_with(|| a.tag.cmp(&b.tag)));
        Ok(TagCounts { tags, complete })
    }
}

/// The next `n` links after `from` across `scopes` (a key's links may sit under two owner
/// fingerprints), merged newest first.
pub(super) async fn read_scopes(
    store: &dyn LinkStore,
    scopes: &[ListScope],
    from: Option<&ListPosition>,
    n: usize,
) -> Result<Vec<Link>, StoreError> {
    let mut links = Vec::new();
    for scope in scopes {
        links.extend(store.list(scope, from, n).await?);
    }
    if scopes.len() > 1 {
        crate::store::sort_newest_first(&mut links);
        links.dedup_by(|a, b| a.code == b.code);
        links.truncate(n);
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_changed_one_is_refused() {
        let cursor = Cursor(ListPosition {
            created_at_ms: 1_800_000_000_123,
            code: "a:b_c".into(),
        });
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text), Some(cursor));
        let mut changed = text.clone().into_bytes();
        changed[3] = if changed[3] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            Cursor::decode(&String::from_utf8(changed).expect("ascii")),
            None
        );
        assert_eq!(Cursor::decode(&text[..text.len() - 1]), None);
        assert_eq!(Cursor::decode(""), None);
        assert_eq!(Cursor::decode("zz"), None);
    }
}
