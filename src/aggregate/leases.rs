//! Shard leases and checkpoints of `kurz aggregate`, on the store's DynamoDB table (the model
//! of AWS's Kinesis Client Library): one partition per stream, `#leases#{stream}`, holding
//! - a lease per shard (`sk` = `shard#{id}`): `owner` and `expires_ms` (the owner renews it;
//!   unrenewed past `expires_ms`, any consumer may take it), `checkpoint` (the last sequence
//!   number applied; none: from the shard's start), `window_end` (the end of the window being
//!   applied, set before its writes start, so whoever holds the lease next applies exactly the
//!   same window again: its writes carry the same tokens and count once), `recent` (the ids of
//!   the records applied lately, with their arrival times, to count a record sent twice once)
//!   and `ended` (every record of a closed shard applied: its children may start);
//! - a heartbeat per consumer (`sk` = `worker#{id}`, `expires_ms`), so each can take its
//!   share: the shards over the consumers alive.
//!
//! Every write of a lease is conditional on who holds it, so a consumer that lost its lease
//! (paused past its expiry, or the lease moved) cannot move the checkpoint.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use crate::aws::describe;
use crate::clicks::events::RecordId;

const SHARD_PREFIX: &str = "shard#";
const WORKER_PREFIX: &str = "worker#";

/// Ids of records applied lately, with their arrival times (ms), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recent(pub Vec<(i64, RecordId)>);

impl Recent {
    /// 24 bytes an entry: arrival ms, then the id.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.0.len() * 24);
        for (arrival, id) in &self.0 {
            bytes.extend_from_slice(&arrival.to_be_bytes());
            bytes.extend_from_slice(&id.to_bytes());
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Self {
        Self(
            bytes
                .chunks_exact(24)
                .map(|entry| {
                    let (arrival, id) = entry.split_at(8);
                    (
                        i64::from_be_bytes(arrival.try_into().unwrap_or_default()),
                        RecordId::from_bytes(id.try_into().unwrap_or_default()),
                    )
                })
                .collect(),
        )
    }

    pub fn contains(&self, id: RecordId) -> bool {
        self.0.iter().any(|(_, seen)| *seen == id)
    }

    /// Keeps the entries that arrived within `horizon_ms` of the newest, and at most `max` of
    /// the newest.
    pub fn prune(&mut self, horizon_ms: i64, max: usize) {
        let Some(newest) = self.0.iter().map(|(at, _)| *at).max() else {
            return;
        };
        self.0.retain(|(at, _)| *at >= newest - horizon_ms);
        self.0.sort_by_key(|(at, _)| *at);
        let excess = self.0.len().saturating_sub(max);
        self.0.drain(..excess);
    }
}

/// A shard's lease as stored.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    pub shard: String,
    pub owner: Option<String>,
    pub expires_ms: i64,
    pub checkpoint: Option<String>,
    pub window_end: Option<String>,
    pub recent: Recent,
    pub ended: bool,
}

/// The lease partition of one stream.
pub struct Leases {
    client: Client,
    table: String,
    partition: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn parse_lease(item: &Item) -> Option<Lease> {
    let shard = text(item, "sk")?.strip_prefix(SHARD_PREFIX)?.to_owned();
    Some(Lease {
        shard,
        owner: text(item, "owner"),
        expires_ms: text_number(item, "expires_ms").unwrap_or(0),
        checkpoint: text(item, "checkpoint"),
        window_end: text(item, "window_end"),
        recent: item
            .get("recent")
            .and_then(|v| v.as_b().ok())
            .map(|b| Recent::decode(b.as_ref()))
            .unwrap_or_default(),
        ended: item
            .get("ended")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    })
}

fn text_number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// Whether a call failed on its condition (someone else holds the lease).
fn lost<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

impl Leases {
    pub fn new(client: Client, table: &str, stream: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            partition: format!("#leases#{stream}"),
        }
    }

    fn key(&self, sort_key: String) -> Item {
        HashMap::from([
            ("pk".to_owned(), s(&self.partition)),
            ("sk".to_owned(), s(sort_key)),
        ])
    }

    /// Every lease, and the consumers' heartbeats (id, expires_ms).
    pub async fn list(&self) -> Result<(Vec<Lease>, Vec<(String, i64)>), String> {
        let mut leases = Vec::new();
        let mut workers = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&self.partition))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| describe(&e))?;
            for item in out.items() {
                if let Some(lease) = parse_lease(item) {
                    leases.push(lease);
                } else if let Some(id) = text(item, "sk")
                    .and_then(|sk| sk.strip_prefix(WORKER_PREFIX).map(str::to_owned))
                {
                    workers.push((id, text_number(item, "expires_ms").unwrap_or(0)));
                }
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok((leases, workers)),
            }
        }
    }

    /// Says this consumer is alive until `until_ms` (the item goes a day later by TTL).
    pub async fn heartbeat(&self, worker: &str, until_ms: i64) -> Result<(), String> {
        let mut item = self.key(format!("{WORKER_PREFIX}{worker}"));
        item.insert("expires_ms".into(), n(until_ms));
        item.insert("expires_at".into(), n(until_ms / 1000 + 86_400));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(())
    }

    /// Takes `shard`'s lease for `me` until `until_ms`: when free, expired at `now_ms` or held
    /// under `me`'s name (by this consumer before a restart), or
    /// (`from`) still held by that owner with that expiry (a move from a consumer holding
    /// more than its share). `None` when someone else got there first.
    pub async fn take(
        &self,
        shard: &str,
        me: &str,
        now_ms: i64,
        until_ms: i64,
        from: Option<(&str, i64)>,
    ) -> Result<Option<Lease>, String> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(format!("{SHARD_PREFIX}{shard}"))))
            .update_expression("SET #owner = :me, expires_ms = :until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":until", n(until_ms))
            .return_values(ReturnValue::AllNew);
        request = match from {
            None => request
                .condition_expression(
                    "attribute_not_exists(#owner) OR expires_ms < :now OR #owner = :me",
                )
                .expression_attribute_values(":now", n(now_ms)),
            Some((owner, expires)) => request
                .condition_expression("#owner = :prev AND expires_ms = :prev_expires")
                .expression_attribute_values(":prev", s(owner))
                .expression_attribute_values(":prev_expires", n(expires)),
        };
        match request.send().await {
            Ok(out) => Ok(out.attributes().and_then(parse_lease)),
            Err(e) if lost(&e) => Ok(None),
            Err(e) => Err(describe(&e)),
        }
    }

    /// An update of `shard`'s lease made only while `me` holds it: `false` when it does not.
    async fn update_held(
        &self,
        shard: &str,
        me: &str,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, String> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(format!("{SHARD_PREFIX}{shard}"))))
            .update_expression(expression)
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(me));
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if lost(&e) => Ok(false),
            Err(e) => Err(describe(&e)),
        }
    }

    /// Extends `me`'s lease of `shard` to `until_ms`.
    pub async fn renew(&self, shard: &str, me: &str, until_ms: i64) -> Result<bool, String> {
        self.update_held(
            shard,
            me,
            "SET expires_ms = :until",
            vec![(":until", n(until_ms))],
        )
        .await
    }

    /// Records the end of the window about to be applied.
    pub async fn begin(&self, shard: &str, me: &str, end: &str) -> Result<bool, String> {
        self.update_held(shard, me, "SET window_end = :end", vec![(":end", s(end))])
            .await
    }

    /// The window ending at `end` is applied: the checkpoint moves to it.
    pub async fn commit(
        &self,
        shard: &str,
        me: &str,
        end: Option<&str>,
        recent: &Recent,
        ended: bool,
    ) -> Result<bool, String> {
        let mut values = vec![
            (":recent", AttributeValue::B(Blob::new(recent.encode()))),
            (":ended", AttributeValue::Bool(ended)),
        ];
        let expression = match end {
            Some(end) => {
                values.push((":end", s(end)));
                "SET checkpoint = :end, recent = :recent, ended = :ended REMOVE window_end"
            }
            None => "SET recent = :recent, ended = :ended REMOVE window_end",
        };
        self.update_held(shard, me, expression, values).await
    }

    /// Gives `shard`'s lease up (at shutdown), so another consumer takes it at once.
    pub async fn release(&self, shard: &str, me: &str) -> Result<bool, String> {
        self.update_held(
            shard,
            me,
            "REMOVE #owner SET expires_ms = :zero",
            vec![(":zero", n(0))],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(serial: u64) -> RecordId {
        RecordId {
            producer: 1,
            serial,
        }
    }

    #[test]
    fn recent_ids_round_trip_and_keep_only_the_horizon() {
        let mut recent = Recent(vec![(1_000, id(1)), (50_000, id(2)), (61_000, id(3))]);
        assert_eq!(Recent::decode(&recent.encode()), recent);
        assert!(recent.contains(id(2)));
        recent.prune(20_000, 100);
        assert_eq!(recent.0, [(50_000, id(2)), (61_000, id(3))]);
        recent.prune(60_000, 1);
        assert_eq!(recent.0, [(61_000, id(3))]);
        assert!(!recent.contains(id(1)));
    }
}
