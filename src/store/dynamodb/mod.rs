//! The DynamoDB backend: one table shared by every kurz instance.
//!
//! A redirect is one strongly consistent `GetItem`; stats are one `GetItem` plus one `Query`.
//! Every insert is conditional on `attribute_not_exists(pk)`. Every call has the SDK's
//! operation timeout and standard retries, and a timeout of our own around it.
//!
//! Files: [`item`] maps links onto the table's items, [`table`] creates and checks the table,
//! [`error`] classifies failures; this one holds the client and the [`LinkStore`] impl.

mod error;
pub mod item;
mod table;

pub use table::INIT_OPERATIONS;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, ReturnValue, TransactWriteItem, Update, WriteRequest,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::Semaphore;

use self::error::{CallError, build_error, condition_failed};
use self::item::{
    COUNTER_PK, COUNTER_SK, DAY_PREFIX, Item, LINK_SK, PARTITION_KEY, SORT_KEY, day_key,
    idempotency_item, idempotency_key, key, link_item, n, number, parse_idempotency, parse_link,
};
use super::{
    ClickDelta, FlushError, IDEMPOTENCY_WINDOW_MS, IdempotencyRecord, InsertOutcome, Link,
    LinkStats, LinkStore, StoreError,
};
use crate::config::StoreSettings;

/// The DynamoDB operations `kurz serve` makes: what its IAM role must allow, and no more.
/// (A test holds the source's SDK calls and the Terraform task role to this list.)
pub const SERVE_OPERATIONS: &[&str] = &[
    "BatchWriteItem",
    "DeleteItem",
    "DescribeTable",
    "GetItem",
    "PutItem",
    "Query",
    "TransactWriteItems",
    "UpdateItem",
];

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    timeout: Duration,
    flush_concurrency: usize,
}

impl DynamoStore {
    /// Builds the client (no network call yet).
    pub async fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        let dynamo = &settings.dynamodb;
        let timeout = settings.timeout;
        let attempt = dynamo.attempt_timeout.min(timeout);
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(timeout)
                    .operation_attempt_timeout(attempt)
                    .connect_timeout(dynamo.connect_timeout)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(dynamo.max_attempts.get()));
        if let Some(region) = &dynamo.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &dynamo.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&dynamo.access_key_id, &dynamo.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "kurz-settings",
            ));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(StoreError::unavailable(
                "no AWS region: set store.dynamodb.region (KURZ__STORE__DYNAMODB__REGION) or AWS_REGION",
            ));
        }
        Ok(Self {
            client: Client::new(&config),
            table: dynamo.table.clone(),
            timeout,
            flush_concurrency: dynamo.flush_concurrency.get(),
        })
    }

    /// Runs one SDK call under our own deadline, in case the SDK's does not fire.
    async fn call<T, E>(
        &self,
        fut: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, CallError<E>> {
        match tokio::time::timeout(self.timeout + Duration::from_millis(200), fut).await {
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
            .call(self.read_item(idempotency_key(key_text)).send())
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
            .set_item(Some(link_item(link)))
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
        let result = self
            .call(
                self.client
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().put(put_link).build())
                    .transact_items(TransactWriteItem::builder().put(put_idem).build())
                    .send(),
            )
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
        Err(self.classify(e))
    }

    /// One delta in one transaction: the link's total and its day counts move together, and
    /// only while the link exists.
    async fn add_one(&self, delta: &ClickDelta) -> Result<(), StoreError> {
        let mut items = vec![
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(delta.code.clone(), LINK_SK)))
                        .update_expression("ADD clicks :n SET last_click_ms = :t")
                        .condition_expression("attribute_exists(pk)")
                        .expression_attribute_values(":n", n(delta.count))
                        .expression_attribute_values(":t", n(delta.last_click_ms))
                        .build()
                        .map_err(build_error)?,
                )
                .build(),
        ];
        for &(day, count) in &delta.days {
            items.push(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.table)
                            .set_key(Some(day_key(&delta.code, day)))
                            .update_expression("ADD clicks :n SET #day = :d")
                            .expression_attribute_names("#day", "day")
                            .expression_attribute_values(":n", n(count))
                            .expression_attribute_values(":d", n(day))
                            .build()
                            .map_err(build_error)?,
                    )
                    .build(),
            );
        }
        let result = self
            .call(
                self.client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .client_request_token(&delta.token)
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.service_error() {
                // The link was deleted since the click: its statistics went with it.
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled))
                    if condition_failed(cancelled.cancellation_reasons(), 0) =>
                {
                    Ok(())
                }
                _ => Err(self.classify(e)),
            },
        }
    }

    /// Every daily-count item of `code`.
    async fn query_days(&self, code: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .call(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk AND begins_with(sk, :day)")
                        .expression_attribute_values(":pk", AttributeValue::S(code.to_owned()))
                        .expression_attribute_values(
                            ":day",
                            AttributeValue::S(DAY_PREFIX.to_owned()),
                        )
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send(),
                )
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

#[async_trait]
impl LinkStore for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        // Strongly consistent: a link created on another instance a moment ago must be found.
        let out = self
            .call(self.read_item(key(code, LINK_SK)).send())
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
            .call(
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(link_item(link)))
                    .condition_expression("attribute_not_exists(pk)")
                    .send(),
            )
            .await;
        match result {
            Ok(_) => Ok(InsertOutcome::Inserted),
            Err(CallError::Sdk(SdkError::ServiceError(service)))
                if service.err().is_conditional_check_failed_exception() =>
            {
                Ok(InsertOutcome::CodeTaken)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn delete(&self, code: &str) -> Result<bool, StoreError> {
        let out = self
            .call(
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(code, LINK_SK)))
                    .return_values(ReturnValue::AllOld)
                    .send(),
            )
            .await
            .map_err(|e| self.classify(e))?;
        let existed = out.attributes().is_some_and(|a| !a.is_empty());
        // Then its daily counts (clicks arriving later are discarded: the link is gone).
        let keys: Vec<Item> = self
            .query_days(code)
            .await?
            .into_iter()
            .filter_map(|item| {
                let sk = item.get(SORT_KEY)?.clone();
                Some(HashMap::from([
                    (PARTITION_KEY.to_owned(), AttributeValue::S(code.to_owned())),
                    (SORT_KEY.to_owned(), sk),
                ]))
            })
            .collect();
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(build_error)
                })
                .collect::<Result<_, _>>()?;
            for _ in 0..5 {
                if requests.is_empty() {
                    break;
                }
                let out = self
                    .call(
                        self.client
                            .batch_write_item()
                            .request_items(&self.table, requests.clone())
                            .send(),
                    )
                    .await
                    .map_err(|e| self.classify(e))?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
        }
        Ok(existed)
    }

    async fn lease_ids(&self, count: u64) -> Result<Range<u64>, StoreError> {
        let out = self
            .call(
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(COUNTER_PK, COUNTER_SK)))
                    .update_expression("ADD next_id :n")
                    .expression_attribute_values(":n", n(count))
                    .return_values(ReturnValue::UpdatedNew)
                    .send(),
            )
            .await
            .map_err(|e| self.classify(e))?;
        let end: u64 = out
            .attributes()
            .and_then(|a| number(a, "next_id"))
            .ok_or_else(|| StoreError::internal("counter update returned no next_id"))?;
        Ok(end.saturating_sub(count)..end)
    }

    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        let permits = Arc::new(Semaphore::new(self.flush_concurrency));
        // Set once a write times out: DynamoDB is not answering, and every later write would
        // wait out the same timeout. The deltas not sent yet are left for the next flush, so a
        // flush (and the last one, at shutdown) takes one store timeout, not one for every
        // `flush_concurrency` deltas.
        let stalled = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, delta) in deltas.iter().enumerate() {
            let (store, delta) = (self.clone(), delta.clone());
            let (permits, stalled) = (Arc::clone(&permits), Arc::clone(&stalled));
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                if stalled.load(Ordering::Relaxed) {
                    return (i, Err(StoreError::Timeout(store.timeout)));
                }
                let result = store.add_one(&delta).await;
                if matches!(result, Err(StoreError::Timeout(_))) {
                    stalled.store(true, Ordering::Relaxed);
                }
                (i, result)
            });
        }
        let mut unapplied = Vec::new();
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => {
                    unapplied.push(i);
                    first_error.get_or_insert(e);
                }
                Err(join) => {
                    first_error.get_or_insert(StoreError::internal(join.to_string()));
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(error) => {
                unapplied.sort_unstable();
                Err(FlushError { error, unapplied })
            }
        }
    }

    async fn stats(&self, code: &str) -> Result<Option<LinkStats>, StoreError> {
        let out = self
            .call(
                self.read_item(key(code, LINK_SK))
                    .projection_expression("pk, clicks, last_click_ms")
                    .send(),
            )
            .await
            .map_err(|e| self.classify(e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let total_clicks = number(item, "clicks").unwrap_or(0);
        let mut daily: Vec<(u32, u64)> = self
            .query_days(code)
            .await?
            .iter()
            .filter_map(|item| Some((number(item, "day")?, number(item, "clicks")?)))
            .collect();
        daily.sort_unstable();
        Ok(Some(LinkStats {
            total_clicks,
            last_click_ms: if total_clicks > 0 {
                number(item, "last_click_ms")
            } else {
                None
            },
            daily,
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A data-plane read (DescribeTable is rate-limited and not meant for health checks).
        self.call(
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(COUNTER_PK, COUNTER_SK)))
                .send(),
        )
        .await
        .map(|_| ())
        .map_err(|e| self.classify(e))
    }

    async fn close(&self) {}
}
