//! DynamoDB's clock, for an instance to compare its own with (see `health::skew`): the `Date`
//! header of the answer to one small read (the counter item), which every answer carries (an
//! error one too). To the second, so taken as the middle of that second.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

use super::item::{COUNTER_PK, COUNTER_SK, key};
use crate::clock::{TimeReference, parse_http_date};

/// Reads DynamoDB's time from its answers (see the module docs).
pub struct DynamoClock {
    pub(super) client: Client,
    pub(super) table: String,
}

#[async_trait::async_trait]
impl TimeReference for DynamoClock {
    fn name(&self) -> &'static str {
        "dynamodb"
    }

    async fn now_ms(&self) -> Option<i64> {
        let date = Arc::new(Mutex::new(None));
        // The answer itself does not matter, only that one came (within the SDK's timeouts).
        let _ = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(COUNTER_PK, COUNTER_SK)))
            .customize()
            .interceptor(DateHeader(Arc::clone(&date)))
            .send()
            .await;
        let seconds = date.lock().ok()?.take()?;
        Some(seconds + 500)
    }
}

/// Keeps the `Date` of the answer, in Unix milliseconds.
#[derive(Debug)]
struct DateHeader(Arc<Mutex<Option<i64>>>);

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "kurz::DateHeader"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(parse_http_date);
        if let (Some(date), Ok(mut seen)) = (date, self.0.lock()) {
            *seen = Some(date);
        }
        Ok(())
    }
}
