//! Table set-up: `kurz init` creates the table (on-demand) and enables TTL, idempotently;
//! `kurz serve` only checks that the table is there.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::DynamoStore;
use super::error::build_error;
use super::item::{
    ALL_INDEX, ALL_INDEX_PK, INDEX_SK, Item, LINK_SK, OWNER_INDEX, OWNER_INDEX_PK, PARTITION_KEY,
    SORT_KEY, TTL_ATTRIBUTE, link_item, parse_link, string,
};
use crate::store::StoreError;

/// The list indexes: (name, partition key attribute). Both sort by [`INDEX_SK`] and project
/// every attribute, so a page of links is one `Query` per index partition and nothing more.
pub const INDEXES: [(&str, &str); 2] = [(OWNER_INDEX, OWNER_INDEX_PK), (ALL_INDEX, ALL_INDEX_PK)];

/// The DynamoDB operations only `kurz init` makes (an operator's credentials, not the
/// service's role).
pub const INIT_OPERATIONS: &[&str] = &[
    "CreateTable",
    "DescribeTable",
    "DescribeTimeToLive",
    "Scan",
    "UpdateItem",
    "UpdateTable",
    "UpdateTimeToLive",
];

/// Longest `kurz init` waits for a new table to become ACTIVE. An index added to a table
/// that holds items is waited for as long as DynamoDB takes to build it (hours, on a large
/// table), with a line in the log every [`PROGRESS_EVERY`].
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

impl DynamoStore {
    /// Fails unless the table exists and is usable: `kurz serve` checks this at start-up.
    pub async fn verify_table(&self) -> Result<(), StoreError> {
        match self.describe().await? {
            Some((TableStatus::Active | TableStatus::Updating, present)) => {
                let missing = missing_indexes(&present);
                if missing.is_empty() {
                    return Ok(());
                }
                let names: Vec<&str> = missing.iter().map(|(name, _)| *name).collect();
                Err(StoreError::unavailable(format!(
                    "DynamoDB table '{}' lacks the list index(es) {}: run `kurz init` with the same settings to add them",
                    self.table,
                    names.join(", ")
                )))
            }
            Some((status, _)) => Err(StoreError::unavailable(format!(
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
        Ok(self.describe().await?.map(|(status, _)| status))
    }

    /// The table's status and its indexes' (name, status), `None` when there is no table.
    async fn describe(
        &self,
    ) -> Result<Option<(TableStatus, Vec<(String, IndexStatus)>)>, StoreError> {
        let out = self
            .unadmitted(|| self.client.describe_table().table_name(&self.table).send())
            .await;
        match out {
            Ok(out) => Ok(out.table().and_then(|t| {
                let indexes = t
                    .global_secondary_indexes()
                    .iter()
                    .filter_map(|i| Some((i.index_name()?.to_owned(), i.index_status()?.clone())))
                    .collect();
                Some((t.table_status()?.clone(), indexes))
            })),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// The list indexes that `kurz init` has yet to create.
    fn index_keys(partition: &str) -> Result<Vec<KeySchemaElement>, StoreError> {
        [(partition, KeyType::Hash), (INDEX_SK, KeyType::Range)]
            .into_iter()
            .map(|(name, kind)| key_element(name, kind))
            .collect()
    }

    fn all_projected() -> Projection {
        Projection::builder()
            .projection_type(ProjectionType::All)
            .build()
    }

    /// Adds the list indexes a table made before them lacks, one at a time (DynamoDB builds
    /// one new index per table at once), then gives the links written before them the
    /// indexes' keys.
    async fn add_list_indexes(&self, done: &mut Vec<String>) -> Result<(), StoreError> {
        let present = self.describe().await?.map(|(_, i)| i).unwrap_or_default();
        for (name, partition) in missing_indexes(&present) {
            let index = CreateGlobalSecondaryIndexAction::builder()
                .index_name(name)
                .set_key_schema(Some(Self::index_keys(partition)?))
                .projection(Self::all_projected())
                .build()
                .map_err(build_error)?;
            let update = self
                .client
                .update_table()
                .table_name(&self.table)
                .attribute_definitions(string_attribute(partition)?)
                .attribute_definitions(string_attribute(INDEX_SK)?)
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder().create(index).build(),
                );
            self.unadmitted(|| update.clone().send())
                .await
                .map_err(|e| self.classify(e))?;
            self.wait_until_active().await?;
            done.push(format!("added the list index '{name}'"));
        }
        let indexed = self.index_old_links().await?;
        if indexed > 0 {
            done.push(format!(
                "indexed {indexed} links written before the list indexes"
            ));
        }
        Ok(())
    }

    /// Sets the list indexes' keys on every link item without them (a `Scan`, once, by
    /// `kurz init`; links made since carry them from their first write).
    async fn index_old_links(&self) -> Result<u64, StoreError> {
        let mut start: Option<Item> = None;
        let mut indexed = 0;
        loop {
            let scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :link AND attribute_not_exists(#k)")
                .expression_attribute_names("#k", INDEX_SK)
                .expression_attribute_values(":link", AttributeValue::S(LINK_SK.into()))
                .set_exclusive_start_key(start.clone());
            let out = self
                .unadmitted(|| scan.clone().send())
                .await
                .map_err(|e| self.classify(e))?;
            for item in out.items() {
                let code = string(item, PARTITION_KEY).unwrap_or_default();
                let Ok(link) = parse_link(&code, item) else {
                    continue; // unreadable: a redirect reports it, a list cannot show it
                };
                let keys = link_item(&link, None);
                let mut update = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(super::item::key(code, LINK_SK)))
                    .update_expression("SET #o = :o, #a = :a, #k = :k")
                    .condition_expression("attribute_exists(pk)");
                for (alias, attribute) in
                    [("o", OWNER_INDEX_PK), ("a", ALL_INDEX_PK), ("k", INDEX_SK)]
                {
                    if let Some(value) = keys.get(attribute) {
                        update = update
                            .expression_attribute_names(format!("#{alias}"), attribute)
                            .expression_attribute_values(format!(":{alias}"), value.clone());
                    }
                }
                match self.unadmitted(|| update.clone().send()).await {
                    Ok(_) => indexed += 1,
                    // Deleted meanwhile.
                    Err(e)
                        if e.service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                    Err(e) => return Err(self.classify(e)),
                }
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(indexed),
            }
        }
    }

    /// Creates the table (on-demand billing) if missing, waits for it, enables TTL.
    pub async fn init(&self) -> Result<Vec<String>, StoreError> {
        let mut done = Vec::new();
        if self.describe_status().await?.is_none() {
            let key = key_element;
            let attribute = string_attribute;
            let mut create = self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
                .key_schema(key(SORT_KEY, KeyType::Range)?)
                .attribute_definitions(attribute(PARTITION_KEY)?)
                .attribute_definitions(attribute(SORT_KEY)?)
                .attribute_definitions(attribute(INDEX_SK)?);
            for (name, partition) in INDEXES {
                create = create
                    .attribute_definitions(attribute(partition)?)
                    .global_secondary_indexes(
                        GlobalSecondaryIndex::builder()
                            .index_name(name)
                            .set_key_schema(Some(Self::index_keys(partition)?))
                            .projection(Self::all_projected())
                            .build()
                            .map_err(build_error)?,
                    );
            }
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
        self.add_list_indexes(&mut done).await?;

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
        if self.region.is_some() {
            self.enable_stream(&mut done).await?;
        }
        Ok(done)
    }

    /// A table in several regions replicates through its stream (new and old images, as
    /// DynamoDB global tables need); a region's table made by `kurz init` gets one. A stream
    /// of another view is left as it is, and said.
    async fn enable_stream(&self, done: &mut Vec<String>) -> Result<(), StoreError> {
        let out = self
            .unadmitted(|| self.client.describe_table().table_name(&self.table).send())
            .await
            .map_err(|e| self.classify(e))?;
        let stream = out.table().and_then(|t| t.stream_specification());
        match stream.filter(|s| s.stream_enabled()) {
            Some(s) if s.stream_view_type() == Some(&StreamViewType::NewAndOldImages) => {
                done.push("stream of new and old images already enabled".into());
                return Ok(());
            }
            Some(s) => {
                done.push(format!(
                    "the table's stream shows {:?}, not new and old images: a global table \
                     needs NEW_AND_OLD_IMAGES",
                    s.stream_view_type()
                ));
                return Ok(());
            }
            None => {}
        }
        let spec = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build()
            .map_err(build_error)?;
        self.unadmitted(|| {
            self.client
                .update_table()
                .table_name(&self.table)
                .stream_specification(spec.clone())
                .send()
        })
        .await
        .map_err(|e| self.classify(e))?;
        self.wait_until_active().await?;
        done.push("enabled the table's stream (new and old images), for replication".into());
        Ok(())
    }

    /// Waits until the table and its indexes are ACTIVE: the table itself for at most
    /// [`ACTIVE_WITHIN`]; an index being built for as long as it takes (stopping `kurz init`
    /// then is safe: run again, it waits for the same index and goes on).
    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        let mut next_progress = started + PROGRESS_EVERY;
        loop {
            let building: Vec<String> = match self.describe().await? {
                // UPDATING: an index is being added (no deadline either).
                Some((status @ (TableStatus::Active | TableStatus::Updating), indexes)) => {
                    let table =
                        (status != TableStatus::Active).then(|| format!("the table ({status})"));
                    table
                        .into_iter()
                        .chain(
                            indexes
                                .into_iter()
                                .filter(|(_, status)| *status != IndexStatus::Active)
                                .map(|(name, status)| format!("index '{name}' ({status})")),
                        )
                        .collect()
                }
                _ if started.elapsed() > ACTIVE_WITHIN => {
                    return Err(StoreError::unavailable(format!(
                        "DynamoDB table '{}' did not become ACTIVE within {ACTIVE_WITHIN:?}",
                        self.table
                    )));
                }
                _ => vec!["the table".to_owned()],
            };
            if building.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= next_progress {
                tracing::info!(
                    table = %self.table,
                    waiting_for = %building.join(", "),
                    waited_s = started.elapsed().as_secs(),
                    "DynamoDB is still building; stopping now is safe, `kurz init` again waits on"
                );
                next_progress += PROGRESS_EVERY;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(build_error)
}

fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(build_error)
}

/// The list indexes not among `present` (name, status) ones.
fn missing_indexes(present: &[(String, IndexStatus)]) -> Vec<(&'static str, &'static str)> {
    INDEXES
        .into_iter()
        .filter(|(name, _)| !present.iter().any(|(n, _)| n == name))
        .collect()
}
