//! The AWS SDK's shared configuration: one HTTPS client (rustls with ring), kurz's own
//! timeouts, no SDK retries (kurz retries itself, within budgets), and the region and static
//! credentials of `store.dynamodb` when they are set. The DynamoDB store, the click stream's
//! producer and `kurz aggregate` build their clients from it, each with its own endpoint.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::config::DynamoSettings;

/// Timeouts of one SDK call: the whole call, one attempt, connecting.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub operation: Duration,
    pub attempt: Duration,
    pub connect: Duration,
}

/// The SDK configuration of the store's table (`store.dynamodb`, its endpoint and the store's
/// timeouts): the store's, the region stream reader's and `kurz aggregate`'s.
pub async fn store_config(
    settings: &crate::config::StoreSettings,
) -> Result<aws_config::SdkConfig, String> {
    let dynamo = &settings.dynamodb;
    let timeouts = Timeouts {
        operation: settings.timeout,
        attempt: dynamo.attempt_timeout,
        connect: dynamo.connect_timeout,
    };
    sdk_config(dynamo, dynamo.endpoint_url.as_deref(), timeouts).await
}

/// The SDK configuration for `endpoint_url` (`None`: AWS's own), with the region and
/// credentials of `account`. Fails when no region is set anywhere.
pub async fn sdk_config(
    account: &DynamoSettings,
    endpoint_url: Option<&str>,
    timeouts: Timeouts,
) -> Result<aws_config::SdkConfig, String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(timeouts.operation)
                .operation_attempt_timeout(timeouts.attempt.min(timeouts.operation))
                .connect_timeout(timeouts.connect)
                .build(),
        )
        .retry_config(RetryConfig::disabled());
    if let Some(region) = &account.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(id), Some(secret)) = (&account.access_key_id, &account.secret_access_key) {
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
        return Err(
            "no AWS region: set store.dynamodb.region (KURZ__STORE__DYNAMODB__REGION) or AWS_REGION"
                .to_owned(),
        );
    }
    Ok(config)
}

/// The DynamoDB client of `config`, passing on the current trace (see [`TracePropagation`]).
pub fn dynamodb_client(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .interceptor(TracePropagation)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// The Kinesis client of `config`, passing on the current trace (see [`TracePropagation`]).
pub fn kinesis_client(config: &aws_config::SdkConfig) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::config::Builder::from(config)
        .interceptor(TracePropagation)
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// Adds `traceparent` and `X-Amzn-Trace-Id` to each request an SDK call made within a traced
/// request sends (every attempt), naming the call's span as the parent; outside one it adds
/// nothing. The headers are added after signing: SigV4 signs only the headers it lists.
#[derive(Debug)]
struct TracePropagation;

impl Intercept for TracePropagation {
    fn name(&self) -> &'static str {
        "kurz::TracePropagation"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(headers) = crate::telemetry::trace::outgoing_headers() {
            let request = context.request_mut().headers_mut();
            for (name, value) in headers {
                request.insert(name, value);
            }
        }
        Ok(())
    }
}

/// An SDK error in one line (any AWS service's: the SDKs share the error types), with the
/// service's code and message when there is one, else the chain of causes.
pub fn describe<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("error"),
            service.message().unwrap_or("no message")
        ),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}
