//! This instance's wall clock against a clock the fleet shares. kurz decides expiry, creation
//! times and the day a click counts for by the wall clock, so an instance whose clock is off
//! answers 410 early (or redirects late) and refuses expiries that are still in the future.
//! That is this instance's own fault, like draining: past `server.max_clock_skew_ms` it logs a
//! warning and `/readyz` answers 503 naming the skew, so the load balancer sends elsewhere.
//!
//! The reference is the `Date` of a DynamoDB answer (to the second, so taken as its middle: off
//! by up to half a second more; AWS's clock, which no host of the fleet can set wrong) or, on
//! the embedded store, Redis's `TIME`, asked every [`CHECK_INTERVAL`] off the request path and
//! compared with this clock at the middle of the round trip: the measurement is off by at most
//! half the round trip, and one whose round trip took longer than [`MAX_ROUND_TRIP`] is
//! dropped. On the embedded store alone there is no reference: nothing is measured and
//! readiness ignores the clock.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, TimeReference};
use crate::telemetry::Metrics;

/// How often the clock is compared with the reference.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// A comparison whose round trip took longer says too little (its error is half of it).
pub const MAX_ROUND_TRIP: Duration = Duration::from_secs(1);

/// What the last comparison found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockState {
    /// There is no reference to compare with.
    Off,
    /// Not measured yet (or the reference has not answered yet).
    Unknown,
    /// Within the bound (or the bound is 0).
    Ok { skew_ms: i64 },
    /// Past the bound: this instance is not ready.
    Skewed {
        skew_ms: i64,
        reference: &'static str,
        max_ms: i64,
    },
}

impl ClockState {
    /// The `checks.clock` value of `/readyz`.
    pub fn describe(self) -> String {
        match self {
            ClockState::Off => "off".into(),
            ClockState::Unknown => "unknown".into(),
            ClockState::Ok { .. } => "ok".into(),
            ClockState::Skewed {
                skew_ms,
                reference,
                max_ms,
            } => format!(
                "{:.1} s {} {reference}'s clock (server.max_clock_skew_ms is {max_ms})",
                skew_ms.unsigned_abs() as f64 / 1000.0,
                if skew_ms > 0 { "ahead of" } else { "behind" },
            ),
        }
    }
}

/// The last measured skew, shared by the checker and `/readyz`.
pub struct ClockSkew {
    /// Past this many ms either way the instance is not ready (0: never).
    max_ms: i64,
    skew_ms: AtomicI64,
    measured: AtomicBool,
    past: AtomicBool,
    reference: OnceLock<&'static str>,
}

impl ClockSkew {
    pub fn new(max: Duration) -> Self {
        Self {
            max_ms: i64::try_from(max.as_millis()).unwrap_or(i64::MAX),
            skew_ms: AtomicI64::new(0),
            measured: AtomicBool::new(false),
            past: AtomicBool::new(false),
            reference: OnceLock::new(),
        }
    }

    /// Compares `clock` with `reference` once: `Some(own - reference)` in ms, or `None` (and
    /// the last measurement stands) when the reference does not answer. The reference read
    /// its clock somewhere within the round trip; taking the middle of our readings before and
    /// after halves the error.
    pub async fn measure(
        &self,
        clock: &Clock,
        reference: &dyn TimeReference,
        metrics: &Metrics,
    ) -> Option<i64> {
        let _ = self.reference.set(reference.name());
        let before = clock.now_ms();
        let theirs = reference.now_ms().await?;
        let after = clock.now_ms();
        if after - before > MAX_ROUND_TRIP.as_millis() as i64 {
            return None;
        }
        // A clock stepped back meanwhile: the later reading is the one that holds.
        let ours = if after >= before {
            before + (after - before) / 2
        } else {
            after
        };
        let skew_ms = ours - theirs;
        self.record(skew_ms, reference.name(), metrics);
        Some(skew_ms)
    }

    fn record(&self, skew_ms: i64, reference: &'static str, metrics: &Metrics) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
        self.measured.store(true, Ordering::Release);
        metrics.clock_skew.set(skew_ms as f64 / 1000.0);
        let past = self.max_ms > 0 && skew_ms.unsigned_abs() > self.max_ms.unsigned_abs();
        metrics.clock_skewed.set(u64::from(past));
        if self.past.swap(past, Ordering::Relaxed) == past {
            return;
        }
        let skew_seconds = skew_ms as f64 / 1000.0;
        if past {
            tracing::warn!(
                skew_seconds,
                reference,
                max_clock_skew_ms = self.max_ms,
                "clock skew: this instance's clock is off the reference's by more than \
                 server.max_clock_skew_ms; /readyz answers 503 until it is right (expiry is \
                 decided by this clock)"
            );
        } else {
            tracing::info!(
                skew_seconds,
                reference,
                "clock skew back within server.max_clock_skew_ms; /readyz answers 200 again"
            );
        }
    }

    pub fn state(&self) -> ClockState {
        let Some(&reference) = self.reference.get() else {
            return ClockState::Off;
        };
        if !self.measured.load(Ordering::Acquire) {
            return ClockState::Unknown;
        }
        let skew_ms = self.skew_ms.load(Ordering::Relaxed);
        if self.past.load(Ordering::Relaxed) {
            ClockState::Skewed {
                skew_ms,
                reference,
                max_ms: self.max_ms,
            }
        } else {
            ClockState::Ok { skew_ms }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::Mutex;

    /// A reference that answers with what it is told to, taking `trip` of our `clock` to.
    struct Fake {
        now_ms: Mutex<Option<i64>>,
        trip: Duration,
        clock: Clock,
    }

    #[async_trait::async_trait]
    impl TimeReference for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn now_ms(&self) -> Option<i64> {
            self.clock.advance(self.trip);
            *self.now_ms.lock().expect("lock")
        }
    }

    const T: i64 = 1_800_000_000_000;

    #[tokio::test]
    async fn the_skew_is_own_minus_reference_at_the_middle_of_the_round_trip() {
        let metrics = Metrics::default();
        let skew = ClockSkew::new(Duration::from_secs(5));
        let clock = Clock::manual(T);
        // The reference answers 400 ms after the question: it read its clock about 200 ms
        // after ours said T, so a reference that says T + 200 agrees with us.
        let reference = Fake {
            now_ms: Mutex::new(Some(T + 200)),
            trip: Duration::from_millis(400),
            clock: clock.clone(),
        };
        assert_eq!(skew.state(), ClockState::Off, "before any reference");
        assert_eq!(skew.measure(&clock, &reference, &metrics).await, Some(0));
        assert_eq!(skew.state(), ClockState::Ok { skew_ms: 0 });

        // Five minutes ahead of it (libfaketime's +300 s in the chaos scenario); our clock now
        // says T + 400 when asking.
        *reference.now_ms.lock().expect("lock") = Some(T + 600 - 300_000);
        assert_eq!(
            skew.measure(&clock, &reference, &metrics).await,
            Some(300_000)
        );
        assert!((metrics.clock_skew.get() - 300.0).abs() < 1e-9);
        assert_eq!(metrics.clock_skewed.get(), 1);
        let state = skew.state();
        assert_eq!(
            state,
            ClockState::Skewed {
                skew_ms: 300_000,
                reference: "fake",
                max_ms: 5_000
            }
        );
        assert_eq!(
            state.describe(),
            "300.0 s ahead of fake's clock (server.max_clock_skew_ms is 5000)"
        );
    }

    #[tokio::test]
    async fn past_the_bound_either_way_and_back_within_it() {
        let metrics = Metrics::default();
        let skew = ClockSkew::new(Duration::from_millis(5_000));
        let clock = Clock::manual(T);
        let reference = Fake {
            now_ms: Mutex::new(None),
            trip: Duration::ZERO,
            clock: clock.clone(),
        };
        assert_eq!(skew.measure(&clock, &reference, &metrics).await, None);
        assert_eq!(skew.state(), ClockState::Unknown, "no answer yet");

        for (theirs, past) in [
            (T - 5_000, false), // exactly at the bound: still within
            (T - 5_001, true),
            (T + 5_001, true), // behind
            (T + 4_000, false),
        ] {
            *reference.now_ms.lock().expect("lock") = Some(theirs);
            skew.measure(&clock, &reference, &metrics).await;
            assert_eq!(
                matches!(skew.state(), ClockState::Skewed { .. }),
                past,
                "reference at T{:+} ms",
                theirs - T
            );
            assert_eq!(metrics.clock_skewed.get(), u64::from(past));
        }
        assert!((metrics.clock_skew.get() - -4.0).abs() < 1e-9);

        // A reference that stops answering leaves the last measurement standing.
        *reference.now_ms.lock().expect("lock") = Some(T - 60_000);
        skew.measure(&clock, &reference, &metrics).await;
        *reference.now_ms.lock().expect("lock") = None;
        skew.measure(&clock, &reference, &metrics).await;
        assert!(matches!(
            skew.state(),
            ClockState::Skewed {
                skew_ms: 60_000,
                ..
            }
        ));
        assert!(
            ClockState::Skewed {
                skew_ms: -60_000,
                reference: "redis",
                max_ms: 5_000
            }
            .describe()
            .starts_with("60.0 s behind redis's clock")
        );

        // One that answers too slowly says too little: dropped, the last one stands.
        let slow = Fake {
            now_ms: Mutex::new(Some(T)),
            trip: MAX_ROUND_TRIP + Duration::from_millis(2),
            clock: clock.clone(),
        };
        assert_eq!(skew.measure(&clock, &slow, &metrics).await, None);
        assert!((metrics.clock_skew.get() - 60.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_bound_of_zero_measures_but_never_takes_the_instance_out() {
        let metrics = Arc::new(Metrics::default());
        let skew = ClockSkew::new(Duration::ZERO);
        let clock = Clock::manual(T);
        let reference = Fake {
            now_ms: Mutex::new(Some(T - 3_600_000)),
            trip: Duration::ZERO,
            clock: clock.clone(),
        };
        assert_eq!(
            skew.measure(&clock, &reference, &metrics).await,
            Some(3_600_000)
        );
        assert_eq!(skew.state(), ClockState::Ok { skew_ms: 3_600_000 });
        assert_eq!(metrics.clock_skewed.get(), 0);
    }
}
