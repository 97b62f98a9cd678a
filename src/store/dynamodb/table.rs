//! Table set-up: `kurz init` creates the table (on-demand) and enables TTL, idempotently;
//! `kurz serve` only checks that the table is there.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use super::DynamoStore;
use super::error::build_error;
use super::item::{PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};
use crate::store::StoreError;

/// The DynamoDB operations only `kurz init` makes (an operator's credentials, not the
/// service's role).
pub const INIT_OPERATIONS: &[&str] = &[
    "CreateTable",
    "DescribeTable",
    "DescribeTimeToLive",
    "UpdateTimeToLive",
];

/// Longest `kurz init` waits for a new table to become ACTIVE.
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);

impl DynamoStore {
    /// Fails unless the table exists and is usable: `kurz serve` checks this at start-up.
    pub async fn verify_table(&self) -> Result<(), StoreError> {
        match self.describe_status().await? {
            Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
            Some(status) => Err(StoreError::unavailable(format!(
                "DynamoDB table '{}' is {status:?}, not ACTIVE",
                self.table
            ))),
            None => Err(StoreError::unavailable(format!(
                "DynamoDB table '{}' does not exist: run `kurz init` with the same settings to create it",
                self.table
            ))),
        }
    }

    async fn describe_status(&self) -> Result<Option<TableStatus>, StoreError> {
        let out = self
            .unadmitted(|| self.client.describe_table().table_name(&self.table).send())
            .await;
        match out {
            Ok(out) => Ok(out.table().and_then(|t| t.table_status().cloned())),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
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
            let create = self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
                .key_schema(key(SORT_KEY, KeyType::Range)?)
                .attribute_definitions(attribute(PARTITION_KEY)?)
                .attribute_definitions(attribute(SORT_KEY)?);
            let created = self.unadmitted(|| create.clone().send()).await;
            match created {
                Ok(_) => done.push(format!(
                    "created DynamoDB table '{}' (on-demand)",
                    self.table
                )),
                // Another `kurz init` got there first.
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(e) => return Err(self.classify(e)),
            }
        } else {
            done.push(format!("DynamoDB table '{}' exists", self.table));
        }
        self.wait_until_active().await?;

        let ttl = self
            .unadmitted(|| {
                self.client
                    .describe_time_to_live()
                    .table_name(&self.table)
                    .send()
            })
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
            self.unadmitted(|| {
                self.client
                    .update_time_to_live()
                    .table_name(&self.table)
                    .time_to_live_specification(spec.clone())
                    .send()
            })
            .await
            .map_err(|e| self.classify(e))?;
            done.push(format!("enabled TTL on '{TTL_ATTRIBUTE}'"));
        }
        Ok(done)
    }

    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
        loop {
            if self.describe_status().await? == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::unavailable(format!(
                    "DynamoDB table '{}' did not become ACTIVE within {ACTIVE_WITHIN:?}",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
