//! The table's items and how links map onto them. One table, keyed by `pk` (partition) and
//! `sk` (sort); docs/data-model.md has the long form:
//! - link:        pk = code,            sk = "link"   url, created_at_ms, expires_at_ms,
//!   expires_at (epoch seconds, the TTL attribute), redirect_status, owner, clicks, last_click_ms
//! - daily count: pk = code,            sk = "day#YYYY-MM-DD"   day (UTC day number), clicks
//! - counter:     pk = "#counter",      sk = "link_ids"         next_id
//! - idempotency: pk = "#idem#" + key,  sk = "idem"   code, fingerprint, created_at_ms,
//!   expires_at (TTL)
//! - secret:      pk = "#secret#" + name, sk = "secret"  value (bytes): generated keys
//!
//! `#` is never part of a code, so system items cannot collide with links.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::clock;
use crate::store::{Disabled, IDEMPOTENCY_WINDOW_MS, IdempotencyRecord, Link, StoreError};

/// The partition key attribute (a string).
pub const PARTITION_KEY: &str = "pk";
/// The sort key attribute (a string).
pub const SORT_KEY: &str = "sk";
/// The attribute DynamoDB's TTL deletes by (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

pub(super) const LINK_SK: &str = "link";
pub(super) const DAY_PREFIX: &str = "day#";
pub(super) const COUNTER_PK: &str = "#counter";
pub(super) const COUNTER_SK: &str = "link_ids";
const IDEM_PREFIX: &str = "#idem#";
const IDEM_SK: &str = "idem";
const SECRET_PREFIX: &str = "#secret#";
const SECRET_SK: &str = "secret";
/// The attribute holding a secret's bytes.
pub(super) const SECRET_VALUE: &str = "value";

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn key(pk: impl Into<String>, sk: &str) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(pk.into())),
        (SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(super) fn day_key(code: &str, day: u32) -> Item {
    key(code, &format!("{DAY_PREFIX}{}", clock::format_day(day)))
}

pub(super) fn secret_key(name: &str) -> Item {
    key(format!("{SECRET_PREFIX}{name}"), SECRET_SK)
}

pub(super) fn idempotency_key(key_text: &str) -> Item {
    key(format!("{IDEM_PREFIX}{key_text}"), IDEM_SK)
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn string(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

pub(super) fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub(super) fn link_item(link: &Link) -> Item {
    let mut item = key(link.code.clone(), LINK_SK);
    item.insert("url".into(), AttributeValue::S(link.url.clone()));
    item.insert("created_at_ms".into(), n(link.created_at_ms));
    item.insert("redirect_status".into(), n(link.redirect_status));
    if let Some(at) = link.expires_at_ms {
        item.insert("expires_at_ms".into(), n(at));
        // Rounded up so that DynamoDB never deletes a link before it expires.
        item.insert(TTL_ATTRIBUTE.into(), n((at + 999) / 1000));
    }
    if let Some(owner) = &link.owner {
        item.insert("owner".into(), AttributeValue::S(owner.clone()));
    }
    if let Some(disabled) = &link.disabled {
        item.insert(
            "disabled_reason".into(),
            AttributeValue::S(disabled.reason.clone()),
        );
        item.insert("disabled_at_ms".into(), n(disabled.at_ms));
    }
    item
}

pub(super) fn parse_link(code: &str, item: &Item) -> Result<Link, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        code: code.to_owned(),
        reason: format!("missing or malformed '{what}'"),
    };
    Ok(Link {
        code: code.to_owned(),
        url: string(item, "url").ok_or_else(|| corrupt("url"))?,
        created_at_ms: number(item, "created_at_ms").ok_or_else(|| corrupt("created_at_ms"))?,
        expires_at_ms: number(item, "expires_at_ms"),
        redirect_status: number(item, "redirect_status")
            .ok_or_else(|| corrupt("redirect_status"))?,
        owner: string(item, "owner"),
        disabled: match (
            string(item, "disabled_reason"),
            number(item, "disabled_at_ms"),
        ) {
            (Some(reason), Some(at_ms)) => Some(Disabled { reason, at_ms }),
            _ => None,
        },
    })
}

pub(super) fn idempotency_item(record: &IdempotencyRecord) -> Item {
    let mut item = idempotency_key(&record.key);
    item.insert("code".into(), AttributeValue::S(record.code.clone()));
    item.insert(
        "fingerprint".into(),
        AttributeValue::S(record.fingerprint.clone()),
    );
    item.insert("created_at_ms".into(), n(record.created_at_ms));
    item.insert(
        TTL_ATTRIBUTE.into(),
        n((record.created_at_ms + IDEMPOTENCY_WINDOW_MS) / 1000),
    );
    item
}

pub(super) fn parse_idempotency(key_text: &str, item: &Item) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key_text.to_owned(),
        fingerprint: string(item, "fingerprint").unwrap_or_default(),
        code: string(item, "code").unwrap_or_default(),
        created_at_ms: number(item, "created_at_ms").unwrap_or(0),
    }
}
