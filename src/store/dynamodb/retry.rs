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
/// bound (50 ms for the first retry, doubling up to 1 s), so that callers that failed together
/// do not retry together.
pub fn backoff(retry: u32) -> Duration {
    let bound_ms = backoff_bound_ms(retry);
    jitter(bound_ms, getrandom::u64().unwrap_or(bound_ms / 2))
}

/// The most [`backoff`] waits before retry number `retry`, in milliseconds.
fn backoff_bound_ms(retry: u32) -> u64 {
    25u64.saturating_mul(1 << retry.min(6)).min(1_000)
}

/// A wait from 0 to `bound_ms` inclusive, picked by `random`.
fn jitter(bound_ms: u64, random: u64) -> Duration {
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
        // The bound doubles with each retry, then stays at 1 s.
        let bounds: Vec<u64> = (1..10).map(backoff_bound_ms).collect();
        assert_eq!(bounds, [50, 100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000]);
        // Full jitter: any wait from nothing to the bound, and never past it.
        for bound in [50, 1_000] {
            assert_eq!(jitter(bound, 0), Duration::ZERO);
            assert_eq!(jitter(bound, bound), Duration::from_millis(bound));
            assert_eq!(jitter(bound, bound + 1), Duration::ZERO);
            assert!(jitter(bound, u64::MAX) <= Duration::from_millis(bound));
        }
        for retry in 1..10 {
            for _ in 0..100 {
                assert!(backoff(retry) <= Duration::from_millis(backoff_bound_ms(retry)));
            }
        }
    }
}
