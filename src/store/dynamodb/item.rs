//! The table's items and how links map onto them. One table, keyed by `pk` (partition) and
//! `sk` (sort); docs/data-model.md has the long form:
//! - link:        pk = code,            sk = "link"   one attribute per field of `Link`,
//!   expires_at (epoch seconds, the TTL attribute: expiry + `store.purge_expired_after_s`,
//!   none when that is 0), the list indexes' keys (list_owner,
//!   list_all, list_key), clicks, last_click_ms
//! - daily count: pk = code,            sk = "day#YYYY-MM-DD"   day (UTC day number), clicks,
//!   humans, bots, `d.{dimension}.{value}` per value (see [`super::rollups`]), expires_at (the
//!   link item's, when it has one)
//! - hourly count: pk = code,           sk = "h#YYYY-MM-DDTHH"  hour, expires_at (TTL), and
//!   as a day's
//! - visitors:    pk = code,            sk = hour's or day's sk + "#u"  u (sketch), uv (version)
//! - counter:     pk = "#counter",      sk = "link_ids"         next_id
//! - idempotency: pk = "#idem#" + key,  sk = "idem"   code, fingerprint, created_at_ms,
//!   expires_at (TTL)
//! - secret:      pk = "#secret#" + name, sk = "secret"  value (bytes): generated keys
//! - API key:     pk = "#apikeys",      sk = key id   one attribute per field of `StoredKey`
//!   (all in one partition, so one `Query` reads every key)
//! - click token: pk = "#clicks#" + token, sk = "applied"  expires_at (TTL): a click delta that
//!   was applied, so a resend after DynamoDB's own request tokens expired is refused
//!
//! `#` is never part of a code, so system items cannot collide with links.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use crate::clock;
use crate::store::{
    IDEMPOTENCY_WINDOW_MS, IdempotencyRecord, Link, ListPosition, StoreError, StoredKey,
};

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
const CLICK_TOKEN_PREFIX: &str = "#clicks#";
const CLICK_TOKEN_SK: &str = "applied";
/// How long a click delta's token is remembered, from the delta's last click: a delta sent
/// again within this counts nothing. DynamoDB's own `ClientRequestToken` lasts 10 minutes; a
/// flusher keeps a delta and sends it again every `clicks.max_backoff_ms` (30 s) at most, for
/// as long as the store fails, so this covers outages of up to a week.
pub(super) const CLICK_TOKEN_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
const SECRET_SK: &str = "secret";
/// The attribute holding a secret's bytes.
pub(super) const SECRET_VALUE: &str = "value";
/// The partition every API key sits in.
pub(super) const KEYS_PK: &str = "#apikeys";

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

/// The item that says the click delta `token` was applied, until [`CLICK_TOKEN_WINDOW_MS`]
/// after `last_click_ms` (then DynamoDB's TTL deletes it). Made of the delta alone, so every
/// resend is the same request: DynamoDB refuses a reused `ClientRequestToken` whose request
/// differs.
pub(super) fn click_token_item(token: &str, last_click_ms: i64) -> Item {
    let mut item = key(format!("{CLICK_TOKEN_PREFIX}{token}"), CLICK_TOKEN_SK);
    item.insert(
        TTL_ATTRIBUTE.into(),
        n((last_click_ms + CLICK_TOKEN_WINDOW_MS) / 1000),
    );
    item
}

pub(super) fn secret_key(name: &str) -> Item {
    key(format!("{SECRET_PREFIX}{name}"), SECRET_SK)
}

/// The item holding the secret `name`.
pub(super) fn secret_item(name: &str, value: &[u8]) -> Item {
    let mut item = secret_key(name);
    item.insert(
        SECRET_VALUE.into(),
        AttributeValue::B(value.to_vec().into()),
    );
    item
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

/// Attributes of a link item that are no field of [`Link`]: the keys, the TTL attribute, the
/// list indexes' keys and the click totals.
const NOT_LINK_FIELDS: &[&str] = &[
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    OWNER_INDEX_PK,
    ALL_INDEX_PK,
    INDEX_SK,
    "clicks",
    "last_click_ms",
];

/// The fields of [`crate::store::Disabled`], each stored as `disabled_` + its name (a test
/// holds this list to the struct).
const DISABLED_FIELDS: &[&str] = &["reason", "at_ms", "by_admin"];
const DISABLED_PREFIX: &str = "disabled_";

/// The index of each owner's links: partition `owner#shard`, sort `INDEX_SK`.
pub const OWNER_INDEX: &str = "by_owner";
/// The index of every link (the admin's list): partition `shard`, sort `INDEX_SK`.
pub const ALL_INDEX: &str = "by_created";
pub const OWNER_INDEX_PK: &str = "list_owner";
pub const ALL_INDEX_PK: &str = "list_all";
/// Creation time (ms, zero-padded to 15 digits) `#` code: newest first is descending order.
pub const INDEX_SK: &str = "list_key";
/// Partitions of the owner index per owner, so one busy API key spreads its creates over
/// several index partitions; a page of one owner's links reads this many.
pub const OWNER_SHARDS: u32 = 4;
/// Partitions of the index of every link: a partition of a DynamoDB index takes about 1,000
/// writes/s, and 16 of them hold 10x the design's average create rate.
pub const ALL_SHARDS: u32 = 16;

/// A stable spread of codes over `shards` (codes are already a keyed permutation).
pub(super) fn shard(code: &str, shards: u32) -> u32 {
    code.bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % shards
}

/// The partition of the owner index `owner`'s links with this shard number sit in.
pub(super) fn owner_partition(owner: Option<&str>, shard: u32) -> String {
    format!("{}#{shard}", owner.unwrap_or("-"))
}

pub(super) fn index_sort_key(position: &ListPosition) -> String {
    format!("{:015}#{}", position.created_at_ms, position.code)
}

/// A link as an item. Every field of [`Link`] is one attribute of the same name, converted
/// from its serde form (so a new field needs nothing here), with one exception kept for items
/// written before: `disabled` is stored as `disabled_reason` and `disabled_at_ms`.
/// `purge_after_ms` is `store.purge_expired_after_s` (`None`: never), for the TTL attribute.
pub(super) fn link_item(link: &Link, purge_after_ms: Option<i64>) -> Item {
    let mut item = key(link.code.clone(), LINK_SK);
    for (name, value) in link_attributes(link, purge_after_ms) {
        if let Some(value) = value {
            item.insert(name, value);
        }
    }
    let position = link.position();
    item.insert(
        OWNER_INDEX_PK.into(),
        AttributeValue::S(owner_partition(
            link.owner.as_deref(),
            shard(&link.code, OWNER_SHARDS),
        )),
    );
    item.insert(
        ALL_INDEX_PK.into(),
        AttributeValue::S(shard(&link.code, ALL_SHARDS).to_string()),
    );
    item.insert(
        INDEX_SK.into(),
        AttributeValue::S(index_sort_key(&position)),
    );
    item
}

/// Every attribute a link sets, but its key and the list indexes' (which never change once
/// it is made): `Some` to set, `None` to remove (a field that is null). DynamoDB's TTL removes
/// the item `purge_after_ms` after it expires (never without an expiry, or with `None`).
pub(super) fn link_attributes(
    link: &Link,
    purge_after_ms: Option<i64>,
) -> Vec<(String, Option<AttributeValue>)> {
    let fields = match serde_json::to_value(link) {
        Ok(Value::Object(fields)) => fields,
        _ => return Vec::new(), // a struct of plain fields always serialises to an object
    };
    let mut attributes = Vec::with_capacity(fields.len() + 2);
    for (name, value) in fields {
        match name.as_str() {
            "code" => {}
            // Flat, as items written before have it: `disabled_reason`, `disabled_at_ms`, ….
            "disabled" => {
                for field in DISABLED_FIELDS {
                    let value = value.get(field).cloned().and_then(to_attribute);
                    attributes.push((format!("{DISABLED_PREFIX}{field}"), value));
                }
            }
            _ => attributes.push((name, to_attribute(value))),
        }
    }
    attributes.push((TTL_ATTRIBUTE.into(), link_ttl(link, purge_after_ms).map(n)));
    attributes
}

/// When DynamoDB's TTL removes `link`'s item, epoch seconds: `purge_after_ms` after it
/// expires, rounded up so that it never goes before it is due (`None`: never). Its day items
/// carry the same (see [`super::rollups`]).
pub(super) fn link_ttl(link: &Link, purge_after_ms: Option<i64>) -> Option<i64> {
    link.expires_at_ms
        .zip(purge_after_ms)
        .map(|(at, after)| (at.saturating_add(after) + 999) / 1000)
}

pub(super) fn parse_link(code: &str, item: &Item) -> Result<Link, StoreError> {
    let mut fields = Map::new();
    for (name, value) in item {
        if !NOT_LINK_FIELDS.contains(&name.as_str()) {
            fields.insert(name.clone(), from_attribute(value));
        }
    }
    fields.insert("code".into(), Value::String(code.to_owned()));
    let disabled: Map<String, Value> = DISABLED_FIELDS
        .iter()
        .filter_map(|f| {
            Some((
                f.to_string(),
                fields.remove(&format!("{DISABLED_PREFIX}{f}"))?,
            ))
        })
        .collect();
    if !disabled.is_empty() {
        fields.insert("disabled".into(), Value::Object(disabled));
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| StoreError::Corrupt {
        code: code.to_owned(),
        reason: e.to_string(),
    })
}

/// A serde value as an attribute; `None` for null (an absent attribute).
fn to_attribute(value: Value) -> Option<AttributeValue> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(number) => AttributeValue::N(number.to_string()),
        Value::String(text) => AttributeValue::S(text),
        Value::Array(values) => AttributeValue::L(
            values
                .into_iter()
                .map(|v| to_attribute(v).unwrap_or(AttributeValue::Null(true)))
                .collect(),
        ),
        Value::Object(fields) => AttributeValue::M(
            fields
                .into_iter()
                .filter_map(|(name, v)| Some((name, to_attribute(v)?)))
                .collect(),
        ),
    })
}

fn from_attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(text) => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or(Value::Null),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::L(values) => Value::Array(values.iter().map(from_attribute).collect()),
        AttributeValue::Ss(values) => {
            Value::Array(values.iter().cloned().map(Value::String).collect())
        }
        AttributeValue::M(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), from_attribute(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// An API key as an item: one attribute per field of [`StoredKey`], by its serde name.
pub(super) fn key_item(stored: &StoredKey) -> Item {
    let mut item = key(KEYS_PK, &stored.id);
    if let Ok(Value::Object(fields)) = serde_json::to_value(stored) {
        for (name, value) in fields {
            if let Some(value) = to_attribute(value) {
                item.insert(name, value);
            }
        }
    }
    item
}

pub(super) fn parse_key(item: &Item) -> Result<StoredKey, StoreError> {
    let fields: Map<String, Value> = item
        .iter()
        .filter(|(name, _)| ![PARTITION_KEY, SORT_KEY].contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), from_attribute(value)))
        .collect();
    serde_json::from_value(Value::Object(fields)).map_err(|e| StoreError::Corrupt {
        code: format!("API key {}", string(item, SORT_KEY).unwrap_or_default()),
        reason: e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Disabled;

    /// A link with every field set to something other than its default: a field added to
    /// `Link` without a value here does not compile, so the round trip covers it.
    fn every_field_set() -> Link {
        Link {
            code: "Ab3_x".into(),
            url: "https://example.com/a?b=1#c".into(),
            created_at_ms: 1_700_000_000_123,
            expires_at_ms: Some(1_900_000_000_001),
            redirect_status: 308,
            title: Some("Launch \u{1F680}".into()),
            tags: vec!["launch".into(), "q3-2026".into()],
            forward_query: false,
            owner: Some("0123abcd".into()),
            disabled: Some(Disabled {
                reason: "phishing".into(),
                at_ms: 1_800_000_000_000,
                by_admin: true,
            }),
            revision: 7,
            analytics: false,
        }
    }

    /// `store.purge_expired_after_s`'s default, in ms.
    const PURGE_AFTER: Option<i64> = Some(30 * 86_400_000);

    #[test]
    fn every_field_of_a_link_round_trips_through_its_item() {
        let link = every_field_set();
        let item = link_item(&link, PURGE_AFTER);
        assert_eq!(parse_link(&link.code, &item).expect("parses"), link);
        // The TTL attribute is in seconds, rounded up, the purge delay after the expiry; the
        // disabled state keeps its old names.
        assert_eq!(
            number::<i64>(&item, TTL_ATTRIBUTE),
            Some(1_900_000_001 + 30 * 86_400)
        );
        let kept = link_item(&link, None);
        assert_eq!(number::<i64>(&kept, TTL_ATTRIBUTE), None, "never purged");
        assert_eq!(
            string(&item, "disabled_reason").as_deref(),
            Some("phishing")
        );
        assert_eq!(
            string(&item, INDEX_SK).as_deref(),
            Some("001700000000123#Ab3_x")
        );
        let plain = Link {
            code: "plain".into(),
            url: "https://example.com/".into(),
            ..Link::default()
        };
        assert_eq!(
            parse_link("plain", &link_item(&plain, PURGE_AFTER)).expect("parses"),
            plain
        );
        // An item written before `analytics` existed: its clicks record their details.
        let mut before = link_item(&every_field_set(), PURGE_AFTER);
        assert_eq!(
            before.remove("analytics"),
            Some(AttributeValue::Bool(false))
        );
        assert!(parse_link("Ab3_x", &before).expect("parses").analytics);
    }

    #[test]
    fn the_data_model_page_names_every_field_and_attribute_of_a_link() {
        let page = include_str!("../../../docs/data-model.md");
        let fields = serde_json::to_value(every_field_set()).expect("json");
        for field in fields.as_object().expect("an object").keys() {
            assert!(
                page.contains(&format!("| `{field}` |")),
                "the field table lacks `{field}`"
            );
        }
        let item = link_item(&every_field_set(), PURGE_AFTER);
        for attribute in item.keys() {
            assert!(
                page.contains(&format!("`{attribute}`")),
                "docs/data-model.md does not name the attribute `{attribute}`"
            );
        }
    }

    fn every_key_field_set() -> StoredKey {
        StoredKey {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "ci".into(),
            scopes: vec![crate::store::Scope::Create, crate::store::Scope::Stats],
            created_at_ms: 1_700_000_000_000,
            digest: "ab".repeat(32),
            previous_digest: Some("cd".repeat(32)),
            previous_valid_until_ms: Some(1_700_000_100_000),
            revoked_at_ms: Some(1_700_000_200_000),
            legacy_owner: Some("0011223344556677".into()),
            revision: 3,
        }
    }

    #[test]
    fn an_api_key_round_trips_through_its_item_which_the_data_model_page_names() {
        let stored = every_key_field_set();
        let item = key_item(&stored);
        assert_eq!(parse_key(&item).expect("parses"), stored);
        let page = include_str!("../../../docs/data-model.md");
        for attribute in item.keys() {
            assert!(
                page.contains(&format!("`{attribute}`")),
                "docs/data-model.md does not name the API key attribute `{attribute}`"
            );
        }
        assert!(page.contains(KEYS_PK));
    }

    #[test]
    fn the_disabled_fields_are_those_of_the_struct() {
        let disabled = every_field_set().disabled.expect("set");
        let Ok(Value::Object(fields)) = serde_json::to_value(disabled) else {
            panic!("an object")
        };
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut listed = DISABLED_FIELDS.to_vec();
        listed.sort_unstable();
        assert_eq!(names, listed);
    }

    #[test]
    fn items_written_before_the_new_fields_still_read() {
        let mut item = key("old", LINK_SK);
        item.insert("url".into(), AttributeValue::S("https://e.com/".into()));
        item.insert("created_at_ms".into(), n(5));
        item.insert("redirect_status".into(), n(301));
        item.insert("clicks".into(), n(12));
        let link = parse_link("old", &item).expect("parses");
        assert_eq!(link.redirect_status, 301);
        assert!(link.tags.is_empty() && link.title.is_none() && link.revision == 0);
        assert!(!link.forward_query, "old links never forwarded queries");
        item.remove("url");
        assert!(matches!(
            parse_link("old", &item),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
