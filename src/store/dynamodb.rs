//! The DynamoDB backend: one table shared by every kurz instance.
//!
//! Data model (docs/data-model.md has the long form), keyed by `pk` (partition) and `sk` (sort):
//! - link:        pk = code,            sk = "link"   url, created_at_ms, expires_at_ms,
//!   expires_at (epoch seconds, the TTL attribute), redirect_status, owner, clicks, last_click_ms
//! - daily count: pk = code,            sk = "day#YYYY-MM-DD"   day (UTC day number), clicks
//! - counter:     pk = "#counter",      sk = "link_ids"         next_id
//! - idempotency: pk = "#idem#" + key,  sk = "idem"   code, fingerprint, created_at_ms,
//!   expires_at (TTL)
//!
//! `#` is never part of a code, so system items cannot collide with links. A redirect is one
//! strongly consistent `GetItem`; stats are one `GetItem` plus one `Query`. Every insert is
//! conditional on `attribute_not_exists(pk)`. Every call has the SDK's operation timeout and
//! standard retries, and a timeout of our own around it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    Put, ReturnValue, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
    TransactWriteItem, Update, WriteRequest,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::Semaphore;

use super::{
    ClickDelta, FlushError, IDEMPOTENCY_WINDOW_MS, IdempotencyRecord, InsertOutcome, Link,
    LinkStats, LinkStore, StoreError,
};
use crate::clock;
use crate::config::DynamoSettings;

const PK: &str = "pk";
const SK: &str = "sk";
const LINK_SK: &str = "link";
const DAY_PREFIX: &str = "day#";
const COUNTER_PK: &str = "#counter";
const COUNTER_SK: &str = "link_ids";
const IDEM_PREFIX: &str = "#idem#";
const IDEM_SK: &str = "idem";
/// The attribute DynamoDB's TTL deletes by (epoch seconds).
const TTL_ATTRIBUTE: &str = "expires_at";

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    timeout: Duration,
    flush_concurrency: usize,
}

impl DynamoStore {
    /// Builds the client (no network call yet).
    pub async fn connect(settings: &DynamoSettings, timeout: Duration) -> Result<Self, StoreError> {
        let attempt = Duration::from_millis(settings.attempt_timeout_ms).min(timeout);
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(timeout)
                    .operation_attempt_timeout(attempt)
                    .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
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
            return Err(StoreError::Unavailable(
                "no AWS region: set store.dynamodb.region (KURZ__STORE__DYNAMODB__REGION) or AWS_REGION".into(),
            ));
        }
        Ok(Self {
            client: Client::new(&config),
            table: settings.table.clone(),
            timeout,
            flush_concurrency: settings.flush_concurrency,
        })
    }

    /// Fails unless the table exists and is usable: `kurz serve` checks this at start-up.
    pub async fn verify_table(&self) -> Result<(), StoreError> {
        match self.describe_status().await? {
            Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
            Some(status) => Err(StoreError::Unavailable(format!(
                "DynamoDB table '{}' is {status:?}, not ACTIVE",
                self.table
            ))),
            None => Err(StoreError::Unavailable(format!(
                "DynamoDB table '{}' does not exist: run `kurz init` with the same settings to create it",
                self.table
            ))),
        }
    }

    async fn describe_status(&self) -> Result<Option<TableStatus>, StoreError> {
        let out = self
            .call(self.client.describe_table().table_name(&self.table).send())
            .await;
        match out {
            Ok(out) => Ok(out.table().and_then(|t| t.table_status().cloned())),
            Err(e) if code_of(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Creates the table (on-demand billing) if missing, waits for it, enables TTL.
    pub async fn init(&self) -> Result<Vec<String>, StoreError> {
        let mut done = Vec::new();
        if self.describe_status().await?.is_none() {
            let key = |name: &str, kind| {
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
                    .map_err(build_error)
            };
            let attribute = |name: &str| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build_error)
            };
            let created = self
                .call(
                    self.client
                        .create_table()
                        .table_name(&self.table)
                        .billing_mode(BillingMode::PayPerRequest)
                        .key_schema(key(PK, KeyType::Hash)?)
                        .key_schema(key(SK, KeyType::Range)?)
                        .attribute_definitions(attribute(PK)?)
                        .attribute_definitions(attribute(SK)?)
                        .send(),
                )
                .await;
            match created {
                Ok(_) => done.push(format!(
                    "created DynamoDB table '{}' (on-demand)",
                    self.table
                )),
                // Another `kurz init` got there first.
                Err(e) if code_of(&e) == Some("ResourceInUseException") => {}
                Err(e) => return Err(self.classify(e)),
            }
        } else {
            done.push(format!("DynamoDB table '{}' exists", self.table));
        }
        self.wait_until_active().await?;

        let ttl = self
            .call(
                self.client
                    .describe_time_to_live()
                    .table_name(&self.table)
                    .send(),
            )
            .await
            .map_err(|e| self.classify(e))?;
        let enabled = ttl.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(TTL_ATTRIBUTE)
                && matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if enabled {
            done.push(format!("TTL already enabled on '{TTL_ATTRIBUTE}'"));
        } else {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(build_error)?;
            self.call(
                self.client
                    .update_time_to_live()
                    .table_name(&self.table)
                    .time_to_live_specification(spec)
                    .send(),
            )
            .await
            .map_err(|e| self.classify(e))?;
            done.push(format!("enabled TTL on '{TTL_ATTRIBUTE}'"));
        }
        Ok(done)
    }

    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if self.describe_status().await? == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::Unavailable(format!(
                    "DynamoDB table '{}' did not become ACTIVE within 120 s",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
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
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let e = match e {
            CallError::Deadline => return StoreError::Timeout(self.timeout),
            CallError::Sdk(e) => e,
        };
        match &e {
            SdkError::TimeoutError(_) => StoreError::Timeout(self.timeout),
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                StoreError::Unavailable(DisplayErrorContext(&e).to_string())
            }
            SdkError::ServiceError(service) => match service.err().code() {
                Some("ResourceNotFoundException") => StoreError::Unavailable(format!(
                    "DynamoDB table '{}' does not exist: run `kurz init`",
                    self.table
                )),
                Some(
                    "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
                    | "TransactionInProgressException",
                ) => StoreError::Unavailable(DisplayErrorContext(&e).to_string()),
                _ => StoreError::Internal(DisplayErrorContext(&e).to_string()),
            },
            _ => StoreError::Internal(DisplayErrorContext(&e).to_string()),
        }
    }

    /// A strongly consistent `GetItem` of one item: a link created a moment ago on another
    /// instance must be found.
    fn read_item(
        &self,
        pk: impl Into<String>,
        sk: &str,
    ) -> aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
    }

    fn key(pk: impl Into<String>, sk: &str) -> Item {
        HashMap::from([
            (PK.to_owned(), AttributeValue::S(pk.into())),
            (SK.to_owned(), AttributeValue::S(sk.to_owned())),
        ])
    }

    async fn get_idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .call(
                self.read_item(format!("{IDEM_PREFIX}{key}"), IDEM_SK)
                    .send(),
            )
            .await
            .map_err(|e| self.classify(e))?;
        Ok(out.item().map(|item| IdempotencyRecord {
            key: key.to_owned(),
            fingerprint: string(item, "fingerprint").unwrap_or_default(),
            code: string(item, "code").unwrap_or_default(),
            created_at_ms: number(item, "created_at_ms").unwrap_or(0),
        }))
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
        let mut idem = Self::key(format!("{IDEM_PREFIX}{}", record.key), IDEM_SK);
        idem.insert("code".into(), AttributeValue::S(record.code.clone()));
        idem.insert(
            "fingerprint".into(),
            AttributeValue::S(record.fingerprint.clone()),
        );
        idem.insert("created_at_ms".into(), n(record.created_at_ms));
        idem.insert(
            TTL_ATTRIBUTE.into(),
            n((record.created_at_ms + IDEMPOTENCY_WINDOW_MS) / 1000),
        );
        let put_idem = Put::builder()
            .table_name(&self.table)
            .set_item(Some(idem))
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
        let reasons: Vec<Option<String>> = match &e {
            CallError::Sdk(SdkError::ServiceError(service))
                if service.err().is_transaction_canceled_exception() =>
            {
                match service.err() {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => t
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            _ => return Err(self.classify(e)),
        };
        let failed =
            |i: usize| reasons.get(i).and_then(|r| r.as_deref()) == Some("ConditionalCheckFailed");
        if failed(1) {
            return match self.get_idempotency(&record.key).await? {
                Some(previous) => Ok(InsertOutcome::Replay(previous)),
                // Expired and removed between the two calls: the caller may retry.
                None => Err(StoreError::Unavailable("idempotency record changed".into())),
            };
        }
        if failed(0) {
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
                        .set_key(Some(Self::key(delta.code.clone(), LINK_SK)))
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
                            .set_key(Some(Self::key(
                                delta.code.clone(),
                                &format!("{DAY_PREFIX}{}", clock::format_day(day)),
                            )))
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
            // The link was deleted since the click: its statistics went with it.
            Err(CallError::Sdk(SdkError::ServiceError(service)))
                if service.err().is_transaction_canceled_exception()
                    && service.err().to_string().contains("ConditionalCheckFailed") =>
            {
                Ok(())
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Every daily-count item of `code` (keys only, or with counts).
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

/// Why an SDK call failed: the SDK's error, or our own deadline. Errors are the cold path, and
/// matching on the SDK error in place is clearer than boxing it.
#[allow(clippy::large_enum_variant)]
enum CallError<E> {
    Sdk(SdkError<E>),
    Deadline,
}

fn code_of<E: ProvideErrorMetadata>(e: &CallError<E>) -> Option<&str> {
    match e {
        CallError::Sdk(SdkError::ServiceError(service)) => service.err().code(),
        _ => None,
    }
}

fn build_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("building a DynamoDB request: {e}"))
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn string(item: &Item, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn link_item(link: &Link) -> Item {
    let mut item = DynamoStore::key(link.code.clone(), LINK_SK);
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
    item
}

fn parse_link(code: &str, item: &Item) -> Result<Link, StoreError> {
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
    })
}

#[async_trait]
impl LinkStore for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn get(&self, code: &str) -> Result<Option<Link>, StoreError> {
        // Strongly consistent: a link created on another instance a moment ago must be found.
        let out = self
            .call(self.read_item(code, LINK_SK).send())
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
                    .set_key(Some(Self::key(code, LINK_SK)))
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
                let sk = item.get(SK)?.clone();
                Some(HashMap::from([
                    (PK.to_owned(), AttributeValue::S(code.to_owned())),
                    (SK.to_owned(), sk),
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
                    .set_key(Some(Self::key(COUNTER_PK, COUNTER_SK)))
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
            .ok_or_else(|| StoreError::Internal("counter update returned no next_id".into()))?;
        Ok(end.saturating_sub(count)..end)
    }

    async fn add_clicks(&self, deltas: &[ClickDelta]) -> Result<(), FlushError> {
        let permits = Arc::new(Semaphore::new(self.flush_concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, delta) in deltas.iter().enumerate() {
            let (store, delta, permits) = (self.clone(), delta.clone(), Arc::clone(&permits));
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (i, store.add_one(&delta).await)
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
                    first_error.get_or_insert(StoreError::Internal(join.to_string()));
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
                self.read_item(code, LINK_SK)
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
                .set_key(Some(Self::key(COUNTER_PK, COUNTER_SK)))
                .send(),
        )
        .await
        .map(|_| ())
        .map_err(|e| self.classify(e))
    }

    async fn close(&self) {}
}
