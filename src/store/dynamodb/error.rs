//! How DynamoDB failures become [`StoreError`]s: by the SDK's error kind and the service's
//! error code, never by matching text. The SDK error is kept as the typed source.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;

use crate::store::StoreError;

/// Why an SDK call failed: the SDK's error, or our own deadline. Errors are the cold path, and
/// matching on the SDK error in place is clearer than boxing it.
#[allow(clippy::large_enum_variant)]
pub(super) enum CallError<E> {
    Sdk(SdkError<E>),
    Deadline,
    /// Admission control refused the call; nothing was sent.
    Refused(StoreError),
}

/// Service error codes worth a retry: throttling and DynamoDB's own transient failures.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
];

/// The cancellation code DynamoDB gives a transaction item whose condition failed.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// Cancellation codes that pass on their own: another transaction in flight on an item, or
/// throttling. Nothing of the transaction was written.
/// (The conflict first: see [`cancelled_by_conflict`].)
const TRANSIENT_CANCELLATIONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

impl<E> CallError<E>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    /// The service's error code (e.g. `ResourceNotFoundException`), if DynamoDB answered.
    pub(super) fn code(&self) -> Option<&str> {
        match self {
            CallError::Sdk(SdkError::ServiceError(service)) => service.err().code(),
            _ => None,
        }
    }

    /// The service error itself, for the typed checks an operation offers.
    pub(super) fn service_error(&self) -> Option<&E> {
        match self {
            CallError::Sdk(SdkError::ServiceError(service)) => Some(service.err()),
            _ => None,
        }
    }

    /// Transient failures (no answer, throttling) are `Unavailable`; a stalled call is a
    /// `Timeout`; anything else is `Internal`. `table` names the table in the message.
    pub(super) fn classify(self, table: &str, timeout: Duration) -> StoreError {
        let e = match self {
            CallError::Deadline => return StoreError::Timeout(timeout),
            CallError::Refused(e) => return e,
            CallError::Sdk(e) => e,
        };
        match &e {
            SdkError::TimeoutError(_) => return StoreError::Timeout(timeout),
            SdkError::ServiceError(service)
                if service.err().code() == Some("ResourceNotFoundException") =>
            {
                return StoreError::Unavailable {
                    reason: format!("DynamoDB table '{table}' does not exist: run `kurz init`"),
                    source: Some(Arc::new(e)),
                };
            }
            _ => {}
        }
        let transient = is_transient(&e);
        let reason = DisplayErrorContext(&e).to_string();
        let source = Some(Arc::new(e) as crate::store::ErrorSource);
        if transient {
            StoreError::Unavailable { reason, source }
        } else {
            StoreError::Internal { reason, source }
        }
    }
}

/// Whether a failure may pass on its own (worth a retry, and a 503 rather than a 500): no
/// answer in time, no connection, an unreadable response, throttling, or a server error.
pub(super) fn is_transient<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            service.raw().status().is_server_error()
                || service
                    .err()
                    .code()
                    .is_some_and(|code| TRANSIENT_CODES.contains(&code))
        }
        _ => false,
    }
}

/// Whether the transaction item at `index` was cancelled because its condition failed.
pub(super) fn condition_failed(reasons: &[CancellationReason], index: usize) -> bool {
    reasons.get(index).and_then(CancellationReason::code) == Some(CONDITION_FAILED)
}

/// Whether a cancelled transaction failed only for reasons that pass on their own (and for
/// none that will not, such as a failed condition).
pub(super) fn cancelled_transiently(reasons: &[CancellationReason]) -> bool {
    cancelled_only_for(reasons, TRANSIENT_CANCELLATIONS)
}

/// Whether a cancelled transaction met only other transactions in flight on its items.
pub(super) fn cancelled_by_conflict(reasons: &[CancellationReason]) -> bool {
    cancelled_only_for(reasons, &TRANSIENT_CANCELLATIONS[..1])
}

/// Whether some item of a cancelled transaction has one of `codes` and every other none.
fn cancelled_only_for(reasons: &[CancellationReason], codes: &[&str]) -> bool {
    let given = || reasons.iter().filter_map(CancellationReason::code);
    given().any(|code| codes.contains(&code))
        && given().all(|code| code == "None" || codes.contains(&code))
}

/// A failed `TransactWriteItems` as a [`StoreError`]: a transaction cancelled only for
/// transient reasons is `Unavailable` (a 503 worth retrying, never a 500), the rest as
/// [`CallError::classify`] has them.
pub(super) fn cancellation_error(
    e: CallError<TransactWriteItemsError>,
    table: &str,
    timeout: Duration,
) -> StoreError {
    let transient = matches!(
        e.service_error(),
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled))
            if cancelled_transiently(cancelled.cancellation_reasons())
    );
    match (transient, e) {
        (true, CallError::Sdk(sdk)) => StoreError::Unavailable {
            reason: DisplayErrorContext(&sdk).to_string(),
            source: Some(Arc::new(sdk)),
        },
        (_, e) => e.classify(table, timeout),
    }
}

pub(super) fn build_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(format!("building a DynamoDB request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[&str]) -> Vec<CancellationReason> {
        codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect()
    }

    #[test]
    fn a_conflict_or_throttling_cancels_transiently_a_failed_condition_never() {
        assert!(cancelled_transiently(&reasons(&[
            "None",
            "TransactionConflict"
        ])));
        assert!(cancelled_transiently(&reasons(&[
            "ThrottlingError",
            "None"
        ])));
        assert!(!cancelled_transiently(&reasons(&["None", "None"])));
        assert!(!cancelled_transiently(&reasons(&[
            "ConditionalCheckFailed",
            "TransactionConflict"
        ])));
        assert!(!cancelled_transiently(&reasons(&["ValidationError"])));
        // Only a conflict is tried again at once (throttling waits for the retry budget).
        assert!(cancelled_by_conflict(&reasons(&[
            "None",
            "TransactionConflict"
        ])));
        assert!(!cancelled_by_conflict(&reasons(&[
            "ThrottlingError",
            "None"
        ])));
    }
}
