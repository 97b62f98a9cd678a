//! Retries of transient DynamoDB failures, limited by a budget.
//!
//! Retries help when a failure is rare and hurt when the table is already struggling: every
//! caller retrying at once multiplies the load on it. The budget earns a fraction of a retry
//! with every call and spends a whole one per retry, so however many calls fail, retries add
//! at most that fraction of extra calls, plus a small reserve for a quiet instance.

use std::sync::Mutex;
use std::time::Duration;

/// Retries a quiet instance may make before its calls have earned any.
const RESERVE: u64 = 10;
/// The budget counts in hundredths of a retry, so a percentage adds up exactly.
const RETRY: u64 = 100;

pub struct RetryBudget {
    /// Hundredths of a retry earned per call: the percentage.
    earned_per_call: u64,
    balance: Mutex<u64>,
}

impl RetryBudget {
    /// A budget of `percent` retries per hundred calls.
    pub fn new(percent: u32) -> Self {
        Self {
            earned_per_call: u64::from(percent),
            balance: Mutex::new(RESERVE * RETRY),
        }
    }

    fn balance(&self) -> std::sync::MutexGuard<'_, u64> {
        self.balance.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once per call (not per attempt).
    pub fn earn(&self) {
        let mut balance = self.balance();
        *balance = (*balance + self.earned_per_call).min(RESERVE * RETRY);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn spend(&self) -> bool {
        let mut balance = self.balance();
        if *balance >= RETRY {
            *balance -= RETRY;
            true
        } else {
            false
        }
    }
}

/// The wait before retry number `retry` (1 for the first): full jitter over an exponential
/// bound, 25 ms doubling up to 1 s, so that callers that failed together do not retry together.
pub fn backoff(retry: u32) -> Duration {
    let bound_ms = 25u64.saturating_mul(1 << retry.min(6)).min(1_000);
    let random = getrandom::u64().unwrap_or(bound_ms / 2);
    Duration::from_millis(random % (bound_ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_calls_plus_the_reserve() {
        let budget = RetryBudget::new(10);
        let mut retries = 0;
        let calls: u64 = 10_000;
        // Every call fails and asks for as many retries as it may get.
        for _ in 0..calls {
            budget.earn();
            while budget.spend() {
                retries += 1;
            }
        }
        assert!(retries <= calls / 10 + RESERVE, "{retries} retries");
        assert!(retries >= calls / 10 - 1, "{retries} retries");
    }

    #[test]
    fn a_zero_budget_allows_only_the_reserve() {
        let budget = RetryBudget::new(0);
        let granted = (0..100)
            .filter(|_| {
                budget.earn();
                budget.spend()
            })
            .count();
        assert_eq!(granted as u64, RESERVE);
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        for retry in 1..10 {
            let bound = 25u64 << retry.min(6);
            assert!(backoff(retry) <= Duration::from_millis(bound.min(1_000)));
        }
    }
}
