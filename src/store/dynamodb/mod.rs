//! The DynamoDB backend: one table shared by every kurz instance.
//!
//! A redirect is one strongly consistent `GetItem`; stats are one `GetItem` plus one `Query`.
//! Every insert is conditional on `attribute_not_exists(pk)`. Every call goes through
//! [`admission`] control (an adaptive limit on calls in flight, by priority), is retried after
//! transient failures while the [`retry`] budget allows, and runs under the store timeout.
//!
//! Files: [`item`] maps links onto the table's items, [`table`] creates and checks the table,
//! [`error`] classifies failures, [`admission`] and [`retry`] pace the calls; this one holds the
//! client and the [`LinkStore`] impl.

mod admission;
mod clock;
mod error;
pub mod item;
mod retry;
mod rollups;
pub mod stream;
mod table;

pub use table::{INDEXES, INIT_OPERATIONS};

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use self::admission::{Admission, Class, Outcome};
use self::error::{
    CallError, build_error, cancellation_error, cancelled_by_conflict, condition_failed,
    is_transient,
};
use self::item::{
    ALL_INDEX, ALL_INDEX_PK, ALL_SHARDS, COUNTER_PK, COUNTER_SK, DAY_PREFIX, INDEX_SK, Item,
    KEYS_PK, LINK_SK, OWNER_INDEX, OWNER_INDEX_PK, OWNER_SHARDS, PARTITION_KEY, SECRET_VALUE,
    SORT_KEY, TTL_ATTRIBUTE, click_token_item, day_key, idempotency_item, idempotency_key,
    index_sort_key, key, key_item, link_attributes, link_item, link_ttl, n, number,
    owner_partition, parse_idempotency, parse_key, parse_link, secret_item, secret_key, string,
};
use self::retry::{RetryBudget, backoff};
use self::rollups::{RollupWrite, SKETCH, SKETCH_VERSION};
use super::{
    Analytics, ClickDelta, ClickLimits, FlushError, IDEMPOTENCY_WINDOW_MS, IdempotencyRecord,
    ImportOutcome, InsertOutcome, Link, LinkStats, LinkStore, ListPosition, ListScope,
    ReplaceOutcome, StoreError, StoredKey,
};
use crate::analytics::{Rollup, Uniques};
use crate::config::StoreSettings;
use crate::telemetry::Metrics;

/// The DynamoDB operations `kurz serve` makes: what its IAM role must allow, and no more.
/// (A test holds the source's SDK calls and the Terraform task role to this list.)
pub const SERVE_OPERATIONS: &[&str] = &[
    "BatchWriteItem",
    "DeleteItem",
    "DescribeStream",
    "DescribeTable",
    "GetItem",
    "GetRecords",
    "GetShardIterator",
    "ListStreams",
    "PutItem",
    "Query",
    "TransactWriteItems",
    "UpdateItem",
];

pub struct DynamoStore {
    client: Client,
    table: String,
    timeout: Duration,
    max_attempts: u32,
    flush_concurrency: usize,
    admission: Admission,
    budget: RetryBudget,
    metrics: Arc<Metrics>,
    /// `store.purge_expired_after_s` in ms (`None`: never), for a link's TTL attribute.
    purge_after_ms: Option<i64>,
    /// `analytics.max_values_per_dimension`: values a day's rollup keeps per dimension when a
    /// delta's hours are merged into it, and what a read keeps.
    max_values: usize,
    /// `analytics.hourly_retention_days` in seconds: an hour item's TTL after the hour's end.
    hourly_retention_s: i64,
    /// `region.id`: the region whose counter this store leases ids from (`None`: the
    /// single-region deployment's, which is region 0's).
    region: Option<u8>,
}

impl DynamoStore {
    /// Builds the client (no network call yet).
    pub async fn connect(
        settings: &StoreSettings,
        clicks: ClickLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let dynamo = &settings.dynamodb;
        let timeout = settings.timeout;
        let config = crate::aws::store_config(settings)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(Self {
            client: crate::aws::dynamodb_client(&config),
            table: dynamo.table.clone(),
            timeout,
            max_attempts: dynamo.max_attempts.get(),
            flush_concurrency: dynamo.flush_concurrency.get(),
            admission: Admission::new(&dynamo.admission, Arc::clone(&metrics)),
            budget: RetryBudget::new(dynamo.retry_budget_percent),
            metrics,
            purge_after_ms: Some(settings.purge_expired_after)
                .filter(|after| !after.is_zero())
                .map(|after| i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            max_values: clicks.max_values,
            hourly_retention_s: i64::from(clicks.retention_hours) * 3_600,
            region: settings.region_id,
        })
    }

    /// One SDK call made by `send`, for `class`: admitted by the adaptive limit (or refused at
    /// once), and otherwise as [`unadmitted`](Self::unadmitted).
    async fn call<T, E, F, Fut>(&self, class: Class, send: F) -> Result<T, CallError<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
    {
        let permit = self
            .admission
            .admit(class)
            .await
            .map_err(CallError::Refused)?;
        let result = self.unadmitted(send).await;
        permit.finish(match &result {
            Err(CallError::Deadline) => Outcome::Dropped,
            Err(CallError::Sdk(e)) if is_transient(e) => Outcome::Dropped,
            // Answers, a failed condition among them.
            _ => Outcome::Answered,
        });
        result
    }

    /// One SDK call made by `send`, retried after transient failures (with backoff and jitter,
    /// while the retry budget and `store.timeout_ms` allow), all under our own deadline.
    async fn unadmitted<T, E, F, Fut>(&self, send: F) -> Result<T, CallError<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
    {
        self.budget.earn();
        self.metrics.store_calls.inc();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let attempts = async {
            let mut attempt = 1;
            loop {
                let error = match send().await {
                    Ok(out) => return Ok(out),
                    Err(e) => e,
                };
                let wait = backoff(attempt);
                if attempt >= self.max_attempts
                    || !is_transient(&error)
                    || tokio::time::Instant::now() + wait >= deadline
                {
                    return Err(error);
                }
                if !self.budget.spend() {
                    self.metrics.store_retries_refused.inc();
                    return Err(error);
                }
                self.metrics.store_retries.inc();
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        };
        match tokio::time::timeout_at(deadline, attempts).await {
            Ok(result) => result.map_err(CallError::Sdk),
            Err(_) => Err(CallError::Deadline),
        }
    }

    fn classify<E>(&self, e: CallError<E>) -> StoreError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        e.classify(&self.table, self.timeout)
    }

    /// A strongly consistent `GetItem` of one item: a link created a moment ago on another
    /// instance must be found.
    fn read_item(&self, key: Item) -> GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
    }

    async fn get_idempotency(
        &self,
        key_text: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .call(Class::Write, || {
                self.read_item(idempotency_key(key_text)).send()
            })
            .await
            .map_err(|e| self.classify(e))?;
        Ok(out.item().map(|item| parse_idempotency(key_text, item)))
    }

    async fn insert_with_idempotency(
        &self,
        link: &Link,
        record: &IdempotencyRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let put_link = Put::builder()
            .table_name(&self.table)
            .set_item(Some(link_item(link, self.purge_after_ms)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;
        let put_idem = Put::builder()
            .table_name(&self.table)
            .set_item(Some(idempotency_item(record)))
            .condition_expression("attribute_not_exists(pk) OR created_at_ms < :cutoff")
            .expression_attribute_values(":cutoff", n(record.created_at_ms - IDEMPOTENCY_WINDOW_MS))
            .build()
            .map_err(build_error)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut round = 1;
        loop {
            let result = self
                .call(Class::Write, || {
                    self.client
                        .transact_write_items()
                        .transact_items(TransactWriteItem::builder().put(put_link.clone()).build())
                        .transact_items(TransactWriteItem::builder().put(put_idem.clone()).build())
                        .send()
                })
                .await;
            let e = match result {
                Ok(_) => return Ok(InsertOutcome::Inserted),
                Err(e) => e,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                e.service_error()
            else {
                return Err(self.classify(e));
            };
            let reasons = cancelled.cancellation_reasons();
            if condition_failed(reasons, 1) {
                return match self.get_idempotency(&record.key).await? {
                    Some(previous) => Ok(InsertOutcome::Replay(previous)),
                    // Expired and removed between the two calls: the caller may retry.
                    None => Err(StoreError::unavailable("idempotency record changed")),
                };
            }
            if condition_failed(reasons, 0) {
                return Ok(InsertOutcome::CodeTaken);
            }
            // Met another transaction in flight on the record: most likely a retry of this
            // very create. Nothing was written; once that one commits, this one's next round
            // finds the record and replays it.
            let wait = backoff(round);
            if !cancelled_by_conflict(reasons)
                || round >= self.max_attempts
                || tokio::time::Instant::now() + wait >= deadline
            {
                return Err(cancellation_error(e, &self.table, self.timeout));
            }
            // Outside the retry budget: these are kurz's own requests meeting each other.
            tokio::time::sleep(wait).await;
            round += 1;
        }
    }

    /// One delta: first its visitors merged into the sketches of its hours and days (see
    /// [`merge_sketch`](Self::merge_sketch); a delta sent again only merges them again, which
    /// changes nothing), then its counts in one transaction: the link's total and its hour and
    /// day items move together, only while the link exists, and only once per delta token:
    /// the transaction also writes the token's item, on the condition that it is not there.
    /// Within 10 minutes DynamoDB's own request token recognises a resend; after that, the
    /// token's item refuses it (for [`CLICK_TOKEN_WINDOW_MS`](item::CLICK_TOKEN_WINDOW_MS)).
    ///
    /// Updates that do not fit one transaction (see [`rollups::plan`]) go in several, each with
    /// its own token item (`{token}` for the first, which adds to the link's total, then
    /// `{token}#{part}`): each is applied once however often the delta is sent again, and a
    /// delta only partly written is completed by sending it again.
    /// A delta's day items carry its link's TTL, read first and held by each transaction's
    /// condition on the link: a link whose expiry changed in between is read again and the
    /// delta written again, its transactions done already refused by their tokens.
    async fn add_one(&self, delta: &ClickDelta) -> Result<(), StoreError> {
        let days = delta.day_rollups(self.max_values);
        let mut link_ttl = self.link_ttl(&delta.code).await?;
        for round in 0..TTL_ROUNDS {
            let (sketches, capped) = futures_util::future::join(
                self.merge_sketches(delta, &days, link_ttl),
                self.within_cap(&delta.code, &delta.hours, &days),
            )
            .await;
            let (sketches, capped) = (sketches?, capped?);
            let retention = self.hourly_retention_s;
            let parts = rollups::plan(
                &capped.hours,
                &capped.days,
                |hour| rollups::hour_expiry(hour, retention),
                link_ttl,
                self.region,
            );
            let mut changed = None;
            for (part, writes) in parts.into_iter().enumerate() {
                // A round after the first sends other requests: tokens of their own.
                let own_token = capped.folded || round > 0;
                match self
                    .write_part(delta, part, writes, own_token, link_ttl)
                    .await?
                {
                    Written::Applied => {}
                    // Deleted since the click: its sketches just written go too (were the
                    // delete of these to fail, the delta is sent again and finds the link
                    // gone again).
                    Written::LinkGone => return self.delete_items(sketches).await,
                    Written::TtlChanged(now) => {
                        changed = Some(now);
                        break;
                    }
                }
            }
            match changed {
                None => return Ok(()),
                Some(now) => link_ttl = now,
            }
        }
        Err(StoreError::unavailable(format!(
            "the expiry of link '{}' changed under {TTL_ROUNDS} writes of its clicks",
            delta.code
        )))
    }

    /// The TTL attribute of `code`'s link item (`None`: it has none, or there is no such
    /// item). Eventually consistent: the transactions check it.
    async fn link_ttl(&self, code: &str) -> Result<Option<i64>, StoreError> {
        let out = self
            .call(Class::Clicks, || {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key(code, LINK_SK)))
                    .projection_expression("#ttl")
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))?;
        Ok(out.item().and_then(|item| number(item, TTL_ATTRIBUTE)))
    }

    /// The delta's hours and days with the values each item has no room for counted as `other`
    /// (see [`rollups::within_cap`]): an item gathers values over many flushes, and without
    /// this a flood of distinct referrers would grow it, and what each write of it costs (by
    /// its size), up to DynamoDB's 400 KB. Each item the delta has values for is read first,
    /// eventually consistent: a read a moment stale lets a few values past the cap (at most
    /// those of the flushes in flight at once), never without bound.
    async fn within_cap(
        &self,
        code: &str,
        hours: &[(u32, Rollup)],
        days: &[(u32, Rollup)],
    ) -> Result<Capped, StoreError> {
        let mut capped = Capped {
            hours: hours.to_vec(),
            days: days.to_vec(),
            folded: false,
        };
        let mut reads = Vec::new();
        for (i, (hour, rollup)) in hours.iter().enumerate() {
            if !rollup.dims.is_empty() {
                reads.push((true, i, rollups::hour_sort_key(*hour, self.region)));
            }
        }
        for (i, (day, rollup)) in days.iter().enumerate() {
            if !rollup.dims.is_empty() {
                reads.push((false, i, rollups::day_sort_key(*day, self.region)));
            }
        }
        let items = reads.iter().map(|(_, _, sort_key)| async move {
            self.call(Class::Clicks, || {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key(code, sort_key)))
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))
        });
        let items = futures_util::future::join_all(items).await;
        for ((hourly, i, _), item) in reads.into_iter().zip(items) {
            let Some(stored) = item?.item().map(rollups::parse_rollup) else {
                continue;
            };
            let rollup = if hourly {
                &mut capped.hours[i].1
            } else {
                &mut capped.days[i].1
            };
            if let Some(within) = rollups::within_cap(&stored, rollup, self.max_values) {
                *rollup = within;
                capped.folded = true;
            }
        }
        Ok(capped)
    }

    /// One transaction of a delta's counts: the first adds to the link's total, a later one
    /// only checks that the link exists. `folded`: values of the delta were counted as `other` by
    /// [`within_cap`](Self::within_cap), so the request is not the delta's alone. An update DynamoDB refuses because its item would pass
    /// 400 KB is sent again with the delta's values for that item counted as `other`, and if
    /// that is refused too, with the item's counts only: no click goes uncounted.
    async fn write_part(
        &self,
        delta: &ClickDelta,
        part: usize,
        writes: Vec<RollupWrite>,
        folded: bool,
        link_ttl: Option<i64>,
    ) -> Result<Written, StoreError> {
        let token = if part == 0 {
            delta.token.clone()
        } else {
            format!("{}#{part}", delta.token)
        };
        let once = TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(click_token_item(&token, delta.last_click_ms)))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(build_error)?,
            )
            .build();
        let second = match self.region {
            Some(region) => regional_total(&self.table, delta, part, link_ttl, region),
            None => link_total(&self.table, delta, part, link_ttl),
        };
        let second = TransactWriteItem::builder()
            .update(second.map_err(build_error)?)
            .build();
        self.write_transactions(delta, part, writes, folded, [once, second])
            .await
    }

    /// Sends the transaction of `once` (the token's item), `link` (the link's item, or the
    /// region's total of it) and `writes`, shrinking the rollup updates DynamoDB finds too large.
    async fn write_transactions(
        &self,
        delta: &ClickDelta,
        part: usize,
        mut writes: Vec<RollupWrite>,
        folded: bool,
        [once, link]: [TransactWriteItem; 2],
    ) -> Result<Written, StoreError> {
        // 0: as the delta has it; 1: its values of an item too large counted as `other`; 2:
        // that item's counts only.
        let mut shrunk = 0;
        loop {
            let mut items = vec![once.clone(), link.clone()];
            for write in &writes {
                items.push(self.rollup_update(&delta.code, write)?);
            }
            // A request that is not the delta's alone needs a token of its own: DynamoDB
            // refuses a token reused for another request. Its token item still makes it count
            // once.
            let request_token = if part == 0 && shrunk == 0 && !folded {
                delta.token.clone()
            } else {
                derived_request_token(&delta.token, part, &writes)
            };
            let result = self
                .call(Class::Clicks, || {
                    self.client
                        .transact_write_items()
                        .set_transact_items(Some(items.clone()))
                        .client_request_token(&request_token)
                        .send()
                })
                .await;
            let e = match result {
                Ok(_) => return Ok(Written::Applied),
                Err(e) => e,
            };
            let too_large: Vec<usize> = match e.service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    let reasons = cancelled.cancellation_reasons();
                    // Applied before (the token's item is there).
                    if condition_failed(reasons, 0) {
                        return Ok(Written::Applied);
                    }
                    // The link was deleted since the click (its statistics went with it), or
                    // its TTL is not the one read.
                    if condition_failed(reasons, 1) {
                        return Ok(match reasons[1].item().filter(|item| !item.is_empty()) {
                            Some(item) => Written::TtlChanged(number(item, TTL_ATTRIBUTE)),
                            None => Written::LinkGone,
                        });
                    }
                    reasons
                        .iter()
                        .enumerate()
                        .skip(2)
                        .filter(|(_, reason)| reason.code() == Some(VALIDATION_ERROR))
                        .map(|(i, _)| i - 2)
                        .collect()
                }
                // Refused before it was run: which item is not said.
                _ if e.code() == Some("ValidationException") => (0..writes.len()).collect(),
                _ => Vec::new(),
            };

            if too_large.is_empty() || shrunk == 2 {
                return Err(cancellation_error(e, &self.table, self.timeout));
            }
            for &i in &too_large {
                if shrunk == 0 {
                    writes[i].fold();
                } else {
                    writes[i].drop_values();
                }
            }
            // An update left with nothing to add (values only, all dropped) is left out.
            writes.retain(|write| write.counts.is_some() || !write.values.is_empty());
            tracing::warn!(
                code = %delta.code,
                updates = too_large.len(),
                "a click rollup item is too large for more values: this delta's values {}",
                if shrunk == 0 { "count as `other`" } else { "are dropped, its clicks counted" }
            );
            shrunk += 1;
        }
    }

    fn rollup_update(
        &self,
        code: &str,
        write: &RollupWrite,
    ) -> Result<TransactWriteItem, StoreError> {
        let expression = write.expression();
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(code, &write.sort_key)))
            .update_expression(expression.text)
            .set_expression_attribute_names(Some(expression.names.into_iter().collect()))
            .set_expression_attribute_values(Some(expression.values.into_iter().collect()));
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(build_error)?)
            .build())
    }

    /// Merges the delta's visitors into the sketch of each of its hours and days that had
    /// human clicks; the keys of the sketch items written.
    async fn merge_sketches(
        &self,
        delta: &ClickDelta,
        days: &[(u32, Rollup)],
        link_ttl: Option<i64>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut targets: Vec<(String, rollups::Attributes, &Uniques)> = Vec::new();
        for (hour, rollup) in &delta.hours {
            if !rollup.uniques.is_empty() {
                targets.push((
                    rollups::sketch_sort_key(&rollups::hour_sort_key(*hour, self.region)),
                    vec![
                        ("hour", n(hour)),
                        (
                            TTL_ATTRIBUTE,
                            n(rollups::hour_expiry(*hour, self.hourly_retention_s)),
                        ),
                    ],
                    &rollup.uniques,
                ));
            }
        }
        for (day, rollup) in days {
            if !rollup.uniques.is_empty() {
                targets.push((
                    rollups::sketch_sort_key(&rollups::day_sort_key(*day, self.region)),
                    rollups::day_attributes(*day, link_ttl),
                    &rollup.uniques,
                ));
            }
        }
        let merges = targets.iter().map(|(sort_key, set, visitors)| {
            self.merge_sketch(&delta.code, sort_key, set, visitors)
        });
        for result in futures_util::future::join_all(merges).await {
            result?;
        }
        Ok(targets
            .into_iter()
            .map(|(sort_key, _, _)| key(delta.code.clone(), &sort_key))
            .collect())
    }

    /// Read, merge, write back on the condition that nobody wrote it since (its version), and
    /// again on a conflict, at most [`SKETCH_ROUNDS`] times. Merging the same visitors twice
    /// changes nothing, so a delta sent again is harmless here.
    async fn merge_sketch(
        &self,
        code: &str,
        sort_key: &str,
        set: &rollups::Attributes,
        visitors: &Uniques,
    ) -> Result<(), StoreError> {
        for round in 1..=SKETCH_ROUNDS {
            let out = self
                .call(Class::Clicks, || self.read_item(key(code, sort_key)).send())
                .await
                .map_err(|e| self.classify(e))?;
            let (stored, version) = rollups::parse_sketch(out.item());
            let mut merged = stored.unwrap_or_else(|reason| {
                tracing::warn!(code, sort_key, %reason, "an unreadable visitors sketch is replaced");
                Uniques::default()
            });
            merged.merge(visitors);
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(code, sort_key)))
                .expression_attribute_names("#u", SKETCH)
                .expression_attribute_names("#uv", SKETCH_VERSION)
                .expression_attribute_values(":u", AttributeValue::B(merged.encode().into()))
                .expression_attribute_values(":next", n(version.unwrap_or(0) + 1));
            let mut sets = vec!["#u = :u".to_owned(), "#uv = :next".to_owned()];
            for (i, (name, value)) in set.iter().enumerate() {
                sets.push(format!("#s{i} = :s{i}"));
                update = update
                    .expression_attribute_names(format!("#s{i}"), *name)
                    .expression_attribute_values(format!(":s{i}"), value.clone());
            }
            update = update.update_expression(format!("SET {}", sets.join(", ")));
            update = match version {
                None => update.condition_expression("attribute_not_exists(#uv)"),
                Some(seen) => update
                    .condition_expression("#uv = :seen")
                    .expression_attribute_values(":seen", n(seen)),
            };
            match self.call(Class::Clicks, || update.clone().send()).await {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    // Another instance merged its visitors first: read again.
                    tokio::time::sleep(backoff(round)).await;
                }
                Err(e) => return Err(self.classify(e)),
            }
        }
        Err(StoreError::unavailable(format!(
            "the visitors sketch {sort_key} of '{code}' changed {SKETCH_ROUNDS} times while being merged"
        )))
    }

    async fn read_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let out = self
            .call(Class::Write, || self.read_item(secret_key(name)).send())
            .await
            .map_err(|e| self.classify(e))?;
        Ok(out
            .item()
            .and_then(|item| item.get(SECRET_VALUE)?.as_b().ok())
            .map(|blob| blob.as_ref().to_vec()))
    }

    /// Sets an imported link's click total (absolute, so an import run again counts nothing
    /// twice).
    async fn set_totals(&self, link: &Link, stats: &LinkStats) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(link.code.clone(), LINK_SK)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":n", n(stats.total_clicks));
        update = match stats.last_click_ms {
            Some(at) => update
                .update_expression("SET clicks = :n, last_click_ms = :t")
                .expression_attribute_values(":t", n(at)),
            None => update.update_expression("SET clicks = :n REMOVE last_click_ms"),
        };
        self.call(Class::Write, || update.clone().send())
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }

    /// Writes an imported link's daily counts as they are (absolute values), 25 a request.
    async fn put_days(
        &self,
        code: &str,
        days: &[(u32, u64)],
        ttl: Option<i64>,
    ) -> Result<(), StoreError> {
        for chunk in days.chunks(25) {
            let requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|&(day, clicks)| {
                    let mut item = day_key(code, day);
                    item.extend(
                        rollups::day_attributes(day, ttl)
                            .into_iter()
                            .map(|(name, value)| (name.to_owned(), value)),
                    );
                    item.insert("clicks".into(), n(clicks));
                    PutRequest::builder()
                        .set_item(Some(item))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(build_error)
                })
                .collect::<Result<_, _>>()?;
            self.batch_write(requests).await?;
        }
        Ok(())
    }

    /// One `BatchWriteItem` of up to 25 `requests`, sent again (with backoff) for what
    /// DynamoDB leaves unprocessed, at most 8 times.
    async fn batch_write(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut attempts = 0;
        while !requests.is_empty() {
            attempts += 1;
            if attempts > 8 {
                return Err(StoreError::unavailable(format!(
                    "DynamoDB left {} writes of a batch unprocessed 8 times",
                    requests.len()
                )));
            }
            let out = self
                .call(Class::Write, || {
                    self.client
                        .batch_write_item()
                        .request_items(&self.table, requests.clone())
                        .send()
                })
                .await
                .map_err(|e| self.classify(e))?;
            requests = out
                .unprocessed_items()
                .and_then(|u| u.get(&self.table))
                .cloned()
                .unwrap_or_default();
            if !requests.is_empty() {
                tokio::time::sleep(backoff(attempts)).await;
            }
        }
        Ok(())
    }

    /// Deletes `code`'s hour and day items and their sketches (those of hours and days before
    /// `before_ms`, when given).
    async fn delete_rollups(&self, code: &str, before_ms: Option<i64>) -> Result<(), StoreError> {
        let before = |item: &Item, attribute: &str, limit: fn(i64) -> u32| {
            before_ms.is_none_or(|ms| number::<u32>(item, attribute).is_some_and(|n| n < limit(ms)))
        };
        let mut keys: Vec<Item> = Vec::new();
        for (prefix, attribute, limit) in [
            (DAY_PREFIX, "day", crate::clock::day_of as fn(i64) -> u32),
            (rollups::HOUR_PREFIX, "hour", crate::analytics::hour_of),
        ] {
            for item in self.query_prefix(code, prefix, true).await? {
                if before(&item, attribute, limit)
                    && let Some(sk) = item.get(SORT_KEY)
                {
                    keys.push(HashMap::from([
                        (PARTITION_KEY.to_owned(), AttributeValue::S(code.to_owned())),
                        (SORT_KEY.to_owned(), sk.clone()),
                    ]));
                }
            }
        }
        // The regions' totals (a deployment in regions), those begun before `before_ms`.
        for item in self
            .query_prefix(code, rollups::TOTAL_PREFIX, false)
            .await?
        {
            let begun_before = before_ms
                .is_none_or(|ms| number::<i64>(&item, "since_ms").is_none_or(|since| since < ms));
            if begun_before && let Some(sk) = item.get(SORT_KEY) {
                keys.push(HashMap::from([
                    (PARTITION_KEY.to_owned(), AttributeValue::S(code.to_owned())),
                    (SORT_KEY.to_owned(), sk.clone()),
                ]));
            }
        }
        self.delete_items(keys).await
    }

    /// Gives `code`'s day items (and their sketches) the TTL `ttl` (`None`: none), after its
    /// link's expiry changed: each only if it still exists, so none is made again. A failure
    /// is logged, not returned: the edit itself is done, and the days it missed keep the TTL
    /// they had (removed with the link as it was, or kept longer than the link).
    async fn restamp_days(&self, code: &str, ttl: Option<i64>) {
        let days = match self.query_prefix(code, DAY_PREFIX, true).await {
            Ok(mut days) if self.region.is_some() => {
                // And each region's total of the link.
                match self.query_prefix(code, rollups::TOTAL_PREFIX, true).await {
                    Ok(totals) => days.extend(totals),
                    Err(e) => {
                        tracing::error!(error = %e, code, "the click totals of a link whose expiry changed keep the TTL they had")
                    }
                }
                days
            }
            Ok(days) => days,
            Err(e) => {
                tracing::error!(error = %e, code, "the day items of a link whose expiry changed keep the TTL they had");
                return;
            }
        };
        // In a region, only its own items (and those from before regions, which nobody writes
        // now): a write of another region's item here could replicate over clicks it added
        // meanwhile. Other regions' items keep the TTL they were written with.
        let days: Vec<Item> = days
            .into_iter()
            .filter(|item| {
                let written_by = string(item, SORT_KEY).and_then(|sk| rollups::written_by(&sk));
                written_by.is_none() || written_by == self.region
            })
            .collect();
        let restamp = |i: usize| {
            let sort_key = days[i].get(SORT_KEY).cloned();
            async move {
                let Some(sort_key) = sort_key else {
                    return Ok(());
                };
                let update = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(PARTITION_KEY, AttributeValue::S(code.to_owned()))
                    .key(SORT_KEY, sort_key)
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE);
                let update = match ttl {
                    Some(at) => update
                        .update_expression("SET #ttl = :ttl")
                        .expression_attribute_values(":ttl", n(at)),
                    None => update.update_expression("REMOVE #ttl"),
                };
                match self.call(Class::Write, || update.clone().send()).await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                    {
                        Ok(()) // deleted meanwhile
                    }
                    Err(e) => Err(self.classify(e)),
                }
            }
        };
        if let Err(e) = write_bounded(days.len(), self.flush_concurrency, restamp).await {
            tracing::error!(error = %e.error, code, "some day items of a link whose expiry changed keep the TTL they had");
        }
    }

    /// Deletes the items `keys`, 25 a request.
    async fn delete_items(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        for chunk in keys.chunks(25) {
            let requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(build_error)
                })
                .collect::<Result<_, _>>()?;
            self.batch_write(requests).await?;
        }
        Ok(())
    }

    async fn query_days(&self, code: &str) -> Result<Vec<Item>, StoreError> {
        self.query_prefix(code, DAY_PREFIX, false).await
    }

    /// Every item of `code` whose sort key starts with `prefix` (only their keys, `day` and
    /// `hour` with `keys_only`).
    async fn query_prefix(
        &self,
        code: &str,
        prefix: &str,
        keys_only: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", AttributeValue::S(code.to_owned()))
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start.clone());
            if keys_only {
                query = query
                    .projection_expression("pk, sk, #day, #hour")
                    .expression_attribute_names("#day", "day")
                    .expression_attribute_names("#hour", "hour");
            }
            let out = self
                .call(Class::Stats, || query.clone().send())
                .await
                .map_err(|e| self.classify(e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Every item of `code` with a sort key from `from` to `to`, both included.
    async fn query_range(&self, code: &str, from: &str, to: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", AttributeValue::S(code.to_owned()))
                .expression_attribute_values(":from", AttributeValue::S(from.to_owned()))
                .expression_attribute_values(":to", AttributeValue::S(to.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start.clone());
            let out = self
                .call(Class::Stats, || query.clone().send())
                .await
                .map_err(|e| self.classify(e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }
}

/// The update of the link's item in a delta's transaction (a single region): the link exists,
/// with the TTL its day items are given (the item as it is, when not), and the first part adds
/// to its total.
fn link_total(
    table: &str,
    delta: &ClickDelta,
    part: usize,
    link_ttl: Option<i64>,
) -> Result<Update, aws_sdk_dynamodb::error::BuildError> {
    let link = Update::builder()
        .table_name(table)
        .set_key(Some(key(delta.code.clone(), LINK_SK)))
        .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    let link = match link_ttl {
        Some(at) => link
            .condition_expression("attribute_exists(pk) AND #ttl = :ttl")
            .expression_attribute_values(":ttl", n(at)),
        None => link.condition_expression("attribute_exists(pk) AND attribute_not_exists(#ttl)"),
    };
    let link = if part == 0 {
        link.update_expression("ADD clicks :n SET last_click_ms = :t")
            .expression_attribute_values(":n", n(delta.count))
            .expression_attribute_values(":t", n(delta.last_click_ms))
    } else {
        // Adding 0 changes nothing: a check of the link, with no permission beyond
        // `UpdateItem` (a `ConditionCheck` needs `ConditionCheckItem`).
        link.update_expression("ADD clicks :none")
            .expression_attribute_values(":none", n(0))
    };
    link.build()
}

/// The update of `region`'s total of the link in a delta's transaction (a deployment in
/// regions), in place of the link's item: the link's item is written by its home region only.
/// A write of it here, even of a count, would replicate as the newest version of the link
/// and could undo an edit or a delete made there meanwhile. So nothing is asked of the link:
/// clicks on a link deleted since land in items no read shows (they go with the link's TTL, or
/// when its code is taken again), and clicks on a link not yet replicated here count.
fn regional_total(
    table: &str,
    delta: &ClickDelta,
    part: usize,
    link_ttl: Option<i64>,
    region: u8,
) -> Result<Update, aws_sdk_dynamodb::error::BuildError> {
    let total = Update::builder().table_name(table).set_key(Some(key(
        delta.code.clone(),
        &rollups::total_sort_key(region),
    )));
    if part > 0 {
        // The region's own item: adding 0 to it keeps the transaction's shape.
        return total
            .update_expression("ADD clicks :none")
            .expression_attribute_values(":none", n(0))
            .build();
    }
    let total = total
        .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
        .expression_attribute_values(":n", n(delta.count))
        .expression_attribute_values(":t", n(delta.last_click_ms));
    let counts = "ADD clicks :n SET last_click_ms = :t, since_ms = if_not_exists(since_ms, :t)";
    match link_ttl {
        Some(at) => total
            .update_expression(format!("{counts}, #ttl = :ttl"))
            .expression_attribute_values(":ttl", n(at)),
        None => total.update_expression(format!("{counts} REMOVE #ttl")),
    }
    .build()
}

/// What writing one transaction of a delta found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Applied now or before.
    Applied,
    /// The link is gone: nothing was written.
    LinkGone,
    /// The link's TTL is not the one its day items were to get, but this: nothing was written.
    TtlChanged(Option<i64>),
}

/// Rounds of a delta's writes with its link's TTL read again before it fails (and is sent
/// again by the next flush): the TTL changes only when the link's expiry is edited.
const TTL_ROUNDS: usize = 3;

/// Rounds of read, merge and conditional write of one sketch before the delta fails (and is
/// sent again by the next flush).
const SKETCH_ROUNDS: u32 = 5;

/// The cancellation code of a transaction item DynamoDB refused to write: for a rollup item,
/// because it would pass 400 KB.
const VALIDATION_ERROR: &str = "ValidationError";

/// The `ClientRequestToken` of a transaction of a delta that is not its first as the delta
/// alone makes it (at most 36 characters, as DynamoDB requires): the same for every resend of
/// the same request.
fn derived_request_token(token: &str, part: usize, writes: &[RollupWrite]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{token}\0{part}\0{writes:?}").as_bytes());
    hex::encode(&digest[..16])
}

/// A delta's hours and days as written (see [`DynamoStore::within_cap`]).
struct Capped {
    hours: Vec<(u32, Rollup)>,
    days: Vec<(u32, Rollup)>,
    /// Some values were counted as `other`.
    folded: bool,
}

/// The rollups of `items` (rollup and sketch items, by sort key), by their `number`
/// attribute ascending: only those with clicks that `kept` keeps, their values capped at
/// `max_values` per dimension (the least clicked counted as `other`).
fn rollups_of(
    items: Vec<Item>,
    number_attribute: &str,
    max_values: usize,
    kept: impl Fn(&Item) -> bool,
) -> Vec<(u32, Rollup)> {
    let mut sketches: HashMap<String, Uniques> = HashMap::new();
    let mut counted: Vec<(String, u32, Rollup)> = Vec::new();
    for item in &items {
        let sort_key = string(item, SORT_KEY).unwrap_or_default();
        if rollups::is_sketch(&sort_key) {
            if let (Ok(visitors), _) = rollups::parse_sketch(Some(item)) {
                sketches.insert(sort_key, visitors);
            }
            continue;
        }
        let Some(at) = number::<u32>(item, number_attribute) else {
            continue;
        };
        let read = rollups::parse_rollup(item);
        if read.clicks == 0 || !kept(item) {
            continue;
        }
        // Merged into an empty one: the cap applied, the values sorted.
        let mut rollup = Rollup::default();
        rollup.merge(&read, max_values);
        counted.push((sort_key, at, rollup));
    }
    let mut rollups: Vec<(u32, Rollup)> = counted
        .into_iter()
        .map(|(sort_key, at, mut rollup)| {
            if let Some(visitors) = sketches.remove(&rollups::sketch_sort_key(&sort_key)) {
                rollup.uniques = visitors;
            }
            (at, rollup)
        })
        .collect();
    rollups.sort_unstable_by_key(|(at, _)| *at);
    // One hour or day counted by several regions (each in items of its own) is their sum,
    // and their visitors' union.
    rollups.dedup_by(|later, first| {
        let same = later.0 == first.0;
        if same {
            first.1.merge(&later.1, max_values);
        }
        same
    });
    rollups
}

/// Runs `write(0..n)`, at most `concurrency` at a time, each started only when a slot frees
/// (so neither tasks nor futures pile up, however many deltas are pending after an outage).
///
/// After a write times out, no further write is started: the store is not answering, and each
/// would wait out the same timeout, so a flush (and the last one, at shutdown) would take one
/// timeout per `concurrency` writes. The writes not started are reported unapplied, to go
/// first in the next flush with their tokens.
async fn write_bounded<'a, F, Fut>(n: usize, concurrency: usize, write: F) -> Result<(), FlushError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), StoreError>> + 'a,
{
    let mut waiting = 0..n;
    let mut running = FuturesUnordered::new();
    let mut unapplied = Vec::new();
    let mut first_error = None;
    let mut stalled = false;
    loop {
        while !stalled && running.len() < concurrency {
            let Some(i) = waiting.next() else {
                break;
            };
            let write = write(i);
            running.push(async move { (i, write.await) });
        }
        let Some((i, result)) = running.next().await else {
            break;
        };
        if let Err(e) = result {
            // A stalled or saturated table: starting more writes would only add to it.
            stalled |= matches!(e, StoreError::Timeout(_) | StoreError::Overloaded { .. });
            unapplied.push(i);
            first_error.get_or_insert(e);
        }
    }
    unapplied.extend(waiting);
    match first_error {
        None => Ok(()),
        Some(error) => {
            unapplied.sort_unstable();
            Err(FlushError { error, unapplied })
        }
    }
}

#[async_trait]
impl LinkStore for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        // Strongly consistent: a link created on another instance a moment ago must be found.
        let out = self
            .call(Class::Read, || self.read_item(key(code, LINK_SK)).send())
            .await
            .map_err(|e| self.classify(e))?;
        out.item().map(|item| parse_link(code, item)).transpose()
    }

    async fn insert(
        &self,
        link: &Link,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        if let Some(record) = idempotency {
            return self.insert_with_idempotency(link, record).await;
        }
        let result = self
            .call(Class::Write, || {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(link_item(link, self.purge_after_ms)))
                    .condition_expression("attribute_not_exists(pk)")
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(InsertOutcome::Inserted),
            Err(e)
                if e.service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(InsertOutcome::CodeTaken)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn delete(&self, code: &str) -> Result<Option<Link>, StoreError> {
        let out = self
            .call(Class::Write, || {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(code, LINK_SK)))
                    .return_values(ReturnValue::AllOld)
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))?;
        let deleted = out.attributes().filter(|a| !a.is_empty()).map(|item| {
            // A link item that no longer parses did exist; only its fields are unknown.
            parse_link(code, item).unwrap_or_else(|_| Link {
                code: code.to_owned(),
                ..Link::default()
            })
        });
        // Then its hour and day items (clicks arriving later are discarded: the link is gone).
        self.delete_rollups(code, None).await?;
        Ok(deleted)
    }

    /// Hour and day items of a link made earlier under this code: a link DynamoDB's TTL removed
    /// leaves them (other items) behind. Only hours and days before `link` was made are
    /// removed, so clicks on `link` itself are never lost.
    async fn forget_earlier_stats(&self, link: &Link) -> Result<(), StoreError> {
        self.delete_rollups(&link.code, Some(link.created_at_ms))
            .await
    }

    async fn replace(&self, link: &Link) -> Result<ReplaceOutcome, StoreError> {
        let expected = link
            .revision
            .checked_sub(1)
            .ok_or_else(|| StoreError::internal("a replacement link has revision 0"))?;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(link.code.clone(), LINK_SK)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_values(":created", n(link.created_at_ms))
            .expression_attribute_values(":expected", n(expected));
        // Items from before revisions existed have none: revision 0.
        let condition = if expected == 0 {
            "attribute_exists(pk) AND created_at_ms = :created \
             AND (attribute_not_exists(revision) OR revision = :expected)"
        } else {
            "attribute_exists(pk) AND created_at_ms = :created AND revision = :expected"
        };
        let (mut set, mut remove) = (Vec::new(), Vec::new());
        for (i, (name, value)) in link_attributes(link, self.purge_after_ms)
            .into_iter()
            .enumerate()
        {
            update = update.expression_attribute_names(format!("#a{i}"), name);
            match value {
                Some(value) => {
                    set.push(format!("#a{i} = :v{i}"));
                    update = update.expression_attribute_values(format!(":v{i}"), value);
                }
                None => remove.push(format!("#a{i}")),
            }
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let update = update
            .update_expression(expression)
            .condition_expression(condition)
            .return_values(ReturnValue::UpdatedOld);
        match self.call(Class::Write, || update.clone().send()).await {
            Ok(out) => {
                let before = out.attributes().and_then(|old| number(old, TTL_ATTRIBUTE));
                let after = link_ttl(link, self.purge_after_ms);
                if before != after {
                    self.restamp_days(&link.code, after).await;
                }
                Ok(ReplaceOutcome::Replaced)
            }
            Err(e) => match e.service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let current = match failed.item() {
                        Some(item) => Some(parse_link(&link.code, item)?),
                        None => self.get(&link.code).await?,
                    };
                    Ok(match current {
                        Some(current) if current.created_at_ms == link.created_at_ms => {
                            ReplaceOutcome::Conflict
                        }
                        _ => ReplaceOutcome::Missing,
                    })
                }
                _ => Err(self.classify(e)),
            },
        }
    }

    async fn list(
        &self,
        scope: &ListScope,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<Vec<Link>, StoreError> {
        let (index, partition_key, partitions): (&str, &str, Vec<String>) = match scope {
            ListScope::Owner(owner) => (
                OWNER_INDEX,
                OWNER_INDEX_PK,
                (0..OWNER_SHARDS)
                    .map(|shard| owner_partition(owner.as_deref(), shard))
                    .collect(),
            ),
            ListScope::All => (
                ALL_INDEX,
                ALL_INDEX_PK,
                (0..ALL_SHARDS).map(|shard| shard.to_string()).collect(),
            ),
        };
        let limit_i32 = i32::try_from(limit.clamp(1, 1_000)).unwrap_or(1_000);
        let queries = partitions.into_iter().map(|partition| {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .scan_index_forward(false)
                .limit(limit_i32)
                .expression_attribute_names("#p", partition_key)
                .expression_attribute_values(":p", AttributeValue::S(partition));
            query = match after {
                Some(position) => query
                    .key_condition_expression("#p = :p AND #k < :k")
                    .expression_attribute_names("#k", INDEX_SK)
                    .expression_attribute_values(":k", AttributeValue::S(index_sort_key(position))),
                None => query.key_condition_expression("#p = :p"),
            };
            async move {
                self.call(Class::Stats, || query.clone().send())
                    .await
                    .map_err(|e| self.classify(e))
            }
        });
        let mut links = Vec::new();
        for page in futures_util::future::join_all(queries).await {
            for item in page?.items() {
                let code = string(item, PARTITION_KEY).unwrap_or_default();
                links.push(parse_link(&code, item)?);
            }
        }
        // Newest first across the partitions; each was read newest first up to `limit`.
        crate::store::sort_newest_first(&mut links);
        links.truncate(limit);
        Ok(links)
    }

    async fn secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Almost always there already: one read.
        if let Some(value) = self.read_secret(name).await? {
            return Ok(value);
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(secret_item(name, candidate)))
            .condition_expression("attribute_not_exists(pk)");
        match self.call(Class::Write, || put.clone().send()).await {
            Ok(_) => return Ok(candidate.to_vec()),
            Err(e)
                if e.service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(self.classify(e)),
        }
        // Another instance stored one first: everyone uses that one.
        self.read_secret(name)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                code: format!("#secret#{name}"),
                reason: "the stored secret has no value".into(),
            })
    }

    async fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_secret(name).await
    }

    async fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(secret_item(name, secret)));
        self.call(Class::Write, || put.clone().send())
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", PARTITION_KEY)
                .expression_attribute_values(":p", AttributeValue::S(KEYS_PK.into()))
                .set_exclusive_start_key(start.take());
            let page = self
                .call(Class::Stats, || query.clone().send())
                .await
                .map_err(|e| self.classify(e))?;
            for item in page.items() {
                keys.push(parse_key(item)?);
            }
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => return Ok(keys),
            }
        }
    }

    async fn insert_key(&self, stored: &StoredKey) -> Result<bool, StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(stored)))
            .condition_expression("attribute_not_exists(pk)");
        match self.call(Class::Write, || put.clone().send()).await {
            Ok(_) => Ok(true),
            Err(e)
                if e.service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn replace_key(&self, stored: &StoredKey) -> Result<ReplaceOutcome, StoreError> {
        let expected = stored
            .revision
            .checked_sub(1)
            .ok_or_else(|| StoreError::internal("a replacement key has revision 0"))?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(stored)))
            .condition_expression("attribute_exists(pk) AND #r = :expected")
            .expression_attribute_names("#r", "revision")
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match self.call(Class::Write, || put.clone().send()).await {
            Ok(_) => Ok(ReplaceOutcome::Replaced),
            Err(e) => match e.service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(match failed.item() {
                        Some(_) => ReplaceOutcome::Conflict,
                        None => ReplaceOutcome::Missing,
                    })
                }
                _ => Err(self.classify(e)),
            },
        }
    }

    async fn import(&self, link: &Link, stats: &LinkStats) -> Result<ImportOutcome, StoreError> {
        let mut item = link_item(link, self.purge_after_ms);
        item.insert("clicks".into(), n(stats.total_clicks));
        if let Some(at) = stats.last_click_ms {
            item.insert("last_click_ms".into(), n(at));
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        let outcome = match self.call(Class::Write, || put.clone().send()).await {
            Ok(_) => ImportOutcome::Imported,
            Err(e)
                if e.service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                match self.get(&link.code).await? {
                    Some(there)
                        if there.created_at_ms == link.created_at_ms && there.url == link.url =>
                    {
                        self.set_totals(link, stats).await?;
                        ImportOutcome::AlreadyThere
                    }
                    _ => return Ok(ImportOutcome::CodeTaken),
                }
            }
            Err(e) => return Err(self.classify(e)),
        };
        self.put_days(
            &link.code,
            &stats.daily,
            link_ttl(link, self.purge_after_ms),
        )
        .await?;
        Ok(outcome)
    }

    /// A block of the region's counter: each region adds to a counter item of its own (no
    /// two regions write one item, so replication never merges two leases into one), and its
    /// values stand for ids in the region's own range ([`crate::code::region`]).
    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        let counter = match self.region {
            None | Some(0) => COUNTER_SK.to_owned(),
            Some(region) => format!("{COUNTER_SK}#{region}"),
        };
        let out = self
            .call(Class::Write, || {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(COUNTER_PK, &counter)))
                    .update_expression("ADD next_id :n")
                    .expression_attribute_values(":n", n(count))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))?;
        let end: u64 = out
            .attributes()
            .and_then(|a| number(a, "next_id"))
            .ok_or_else(|| StoreError::internal("counter update returned no next_id"))?;
        let counters = end.saturating_sub(count)..end;
        match self.region {
            None => Ok(counters),
            Some(region) => crate::code::region::ids(region, counters).ok_or_else(|| {
                StoreError::internal(format!("region {region} has used up its range of ids"))
            }),
        }
    }

    async fn note_lease(&self, region: u8, counter_end: u64) -> Result<(), StoreError> {
        let result = self
            .call(Class::Write, || {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(COUNTER_PK, &format!("leased_by#{region}"))))
                    .update_expression("SET next_id = :end")
                    .condition_expression("attribute_not_exists(next_id) OR next_id < :end")
                    .expression_attribute_values(":end", n(counter_end))
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // As far or further already.
            Err(e)
                if e.service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn noted_lease(&self, region: u8) -> Result<Option<u64>, StoreError> {
        let out = self
            .call(Class::Write, || {
                self.read_item(key(COUNTER_PK, &format!("leased_by#{region}")))
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))?;
        Ok(out.item().and_then(|item| number(item, "next_id")))
    }

    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        write_bounded(deltas.len(), self.flush_concurrency, |i| {
            self.add_one(&deltas[i])
        })
        .await
    }

    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        let out = self
            .call(Class::Stats, || {
                self.read_item(key(code, LINK_SK))
                    .projection_expression("pk, clicks, last_click_ms")
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let mut total_clicks = number(item, "clicks").unwrap_or(0);
        let mut last_click_ms: Option<i64> = number(item, "last_click_ms");
        if self.region.is_some() {
            // Each region's total, beside what the link's item counted before there were
            // regions.
            for total in self
                .query_prefix(code, rollups::TOTAL_PREFIX, false)
                .await?
            {
                total_clicks += number::<u64>(&total, "clicks").unwrap_or(0);
                last_click_ms = last_click_ms.max(number(&total, "last_click_ms"));
            }
        }
        // A day's clicks, from every region that counted some.
        let mut daily: Vec<(u32, u64)> = self
            .query_days(code)
            .await?
            .iter()
            .filter_map(|item| Some((number(item, "day")?, number(item, "clicks")?)))
            .collect();
        daily.sort_unstable();
        daily.dedup_by(|later, first| {
            let same_day = later.0 == first.0;
            if same_day {
                first.1 += later.1;
            }
            same_day
        });
        Ok(Some(LinkStats {
            total_clicks,
            last_click_ms: last_click_ms.filter(|_| total_clicks > 0),
            daily,
        }))
    }

    async fn analytics(
        &self,
        code: &str,
        from_hour: u32,
        to_hour: u32,
    ) -> Result<Option<Analytics>, StoreError> {
        let (from_hour, to_hour) = (from_hour.min(to_hour), to_hour.max(from_hour));
        // Every region's items of these hours and days (see `rollups::hour_sort_key`).
        let hours_from = rollups::hour_sort_key(from_hour, None);
        let hours_to = rollups::sketch_sort_key(&rollups::hour_sort_key(to_hour, None));
        let days_from = rollups::day_sort_key(crate::analytics::day_of_hour(from_hour), None);
        let days_to = rollups::sketch_sort_key(&rollups::day_sort_key(
            crate::analytics::day_of_hour(to_hour),
            None,
        ));
        let link = async {
            self.call(Class::Stats, || {
                self.read_item(key(code, LINK_SK))
                    .projection_expression("pk")
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))
        };
        let (link, hours, days) = futures_util::future::join3(
            link,
            self.query_range(code, &hours_from, &hours_to),
            self.query_range(code, &days_from, &days_to),
        )
        .await;
        if link?.item().is_none() {
            return Ok(None);
        }
        // Hours past their retention that DynamoDB's TTL has not removed yet are not shown.
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let kept = |item: &Item| number::<i64>(item, TTL_ATTRIBUTE).is_none_or(|at| at > now_s);
        Ok(Some(Analytics {
            hourly: rollups_of(hours?, "hour", self.max_values, kept),
            daily: rollups_of(days?, "day", self.max_values, |_| true),
        }))
    }

    async fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(secret_key(name)));
        self.call(Class::Write, || delete.clone().send())
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A data-plane read (DescribeTable is rate-limited and not meant for health checks).
        self.unadmitted(|| {
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(COUNTER_PK, COUNTER_SK)))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| self.classify(e))
    }

    async fn close(&self) {}

    fn time_reference(&self) -> Option<Arc<dyn crate::clock::TimeReference>> {
        Some(Arc::new(clock::DynamoClock {
            // Not a method call on the field: tests/it/infra.rs reads those as SDK calls.
            client: Client::clone(&self.client),
            table: self.table.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Writes that succeed, fail or time out by index, recording which were attempted.
    async fn run(
        n: usize,
        concurrency: usize,
        outcome: fn(usize) -> Result<(), StoreError>,
    ) -> (Result<(), FlushError>, Vec<usize>) {
        let attempted = Mutex::new(Vec::new());
        let result = write_bounded(n, concurrency, |i| {
            attempted.lock().expect("lock").push(i);
            async move {
                tokio::task::yield_now().await;
                outcome(i)
            }
        })
        .await;
        let attempted = attempted.into_inner().expect("lock");
        (result, attempted)
    }

    #[tokio::test]
    async fn every_write_runs_and_failures_are_reported_by_index() {
        let (result, attempted) = run(10, 3, |i| {
            if i % 4 == 1 {
                Err(StoreError::unavailable("throttled"))
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(
            attempted.len(),
            10,
            "a failure that is not a timeout stops nothing"
        );
        assert_eq!(result.expect_err("some failed").unapplied, vec![1, 5, 9]);
        let (result, attempted) = run(5, 2, |_| Ok(())).await;
        assert!(result.is_ok());
        assert_eq!(attempted, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn after_a_timeout_no_further_write_starts_and_the_rest_wait_for_the_next_flush() {
        let (result, attempted) =
            run(40, 2, |_| Err(StoreError::Timeout(Duration::from_secs(1)))).await;
        assert_eq!(attempted, vec![0, 1], "only the first round was sent");
        let failed = result.expect_err("timed out");
        assert!(matches!(failed.error, StoreError::Timeout(_)));
        assert_eq!(failed.unapplied, (0..40).collect::<Vec<_>>());
    }
}
