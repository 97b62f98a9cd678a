//! Admission control toward the table: an adaptive limit on calls in flight (AIMD, the idea of
//! Netflix's concurrency-limits), with priority classes and a short queue deadline.
//!
//! When the table slows down, calls pile up in flight and each waits longer; past the store
//! timeout they fail while the table still spends its capacity on them. The limit keeps the
//! calls in flight near what the table answers within `latency_target_ms`: it grows by one
//! per round of fast calls that used it, and shrinks by a tenth on a slow or failed call. A
//! call that finds no room waits `queue_timeout_ms` for one and is then refused at once, so
//! the client hears 503 with `Retry-After` instead of a long wait for a likely timeout.
//!
//! Classes fill different shares of the limit, so a flood of one kind cannot starve a more
//! important one: lookups (uncached redirects) may take all of it, writes 90%, statistics 70%,
//! click flushes 50%.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::config::AdmissionSettings;
use crate::store::StoreError;
use crate::telemetry::Metrics;
use crate::telemetry::STORE_CLASSES;

/// What a call is for; decides how much of the limit it may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reading one link: uncached redirects, previews.
    Read = 0,
    /// Creates, deletes, disables, id leases, secrets.
    Write = 1,
    /// Reading a link's statistics.
    Stats = 2,
    /// Writing click counts.
    Clicks = 3,
}

impl Class {
    fn label(self) -> &'static str {
        STORE_CLASSES[self as usize]
    }

    /// The share of the limit this class may fill.
    fn share(self) -> f64 {
        match self {
            Class::Read => 1.0,
            Class::Write => 0.9,
            Class::Stats => 0.7,
            Class::Clicks => 0.5,
        }
    }
}

/// How a call went, as the limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The table answered (an error it chose to give included).
    Answered,
    /// No answer in time, throttled, or unreachable: the table is past what it can take.
    Dropped,
    /// Tells nothing about the table (e.g. the caller went away).
    Ignored,
}

struct State {
    limit: f64,
    in_flight: u32,
    waiting: u32,
    last_decrease: Option<Instant>,
}

pub struct Admission {
    settings: AdmissionSettings,
    state: Mutex<State>,
    released: Notify,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(settings: &AdmissionSettings, metrics: Arc<Metrics>) -> Self {
        let limit = f64::from(settings.initial_limit.get());
        metrics.store_limit.set(limit as u64);
        Self {
            settings: settings.clone(),
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                waiting: 0,
                last_decrease: None,
            }),
            released: Notify::new(),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain numbers; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current limit, rounded down.
    #[cfg(test)]
    fn limit(&self) -> u32 {
        self.state().limit as u32
    }

    fn try_enter(&self, class: Class, state: &mut State) -> bool {
        let room = ((state.limit * class.share()) as u32).max(1);
        if state.in_flight < room {
            state.in_flight += 1;
            self.metrics.store_in_flight.set(u64::from(state.in_flight));
            true
        } else {
            false
        }
    }

    /// A place for one call of `class`, after at most `queue_timeout_ms`; `Overloaded` when
    /// there is none. Dropping the permit without [`Permit::finish`] frees the place and
    /// leaves the limit as it is.
    pub async fn admit(&self, class: Class) -> Result<Permit<'_>, StoreError> {
        let queued = {
            let mut state = self.state();
            if self.try_enter(class, &mut state) {
                false
            } else if state.waiting >= state.limit as u32 {
                // No more waiters than places: a longer queue would only wait into the timeout.
                return Err(self.shed(class, &state));
            } else {
                state.waiting += 1;
                true
            }
        };
        if queued {
            let admitted = self.wait(class).await;
            let mut state = self.state();
            state.waiting -= 1;
            if !admitted {
                return Err(self.shed(class, &state));
            }
        }
        self.metrics.store_admitted[class as usize].inc();
        Ok(Permit {
            admission: self,
            started: Instant::now(),
            outcome: Outcome::Ignored,
        })
    }

    /// Waits for a released place until the queue deadline; `true` once entered.
    async fn wait(&self, class: Class) -> bool {
        let deadline = tokio::time::Instant::now() + self.settings.queue_timeout;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between is not missed.
            released.as_mut().enable();
            let entered = self.try_enter(class, &mut self.state());
            if entered {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    fn shed(&self, class: Class, state: &State) -> StoreError {
        self.metrics.store_shed[class as usize].inc();
        StoreError::Overloaded {
            class: class.label(),
            limit: state.limit as u32,
        }
    }

    fn release(&self, started: Instant, outcome: Outcome) {
        let latency = started.elapsed();
        let mut state = self.state();
        let used = state.in_flight;
        state.in_flight -= 1;
        let slow = latency > self.settings.latency_target;
        match outcome {
            Outcome::Ignored => {}
            Outcome::Dropped => self.decrease(&mut state),
            Outcome::Answered if slow => self.decrease(&mut state),
            Outcome::Answered => {
                // Grow only while the limit is in use: an idle limit proves nothing.
                if f64::from(used) * 2.0 >= state.limit {
                    let max = f64::from(self.settings.max_limit.get());
                    state.limit = (state.limit + 1.0 / state.limit).min(max);
                }
            }
        }
        self.metrics.store_in_flight.set(u64::from(state.in_flight));
        self.metrics.store_limit.set(state.limit as u64);
        drop(state);
        self.released.notify_waiters();
    }

    /// Cuts the limit by a tenth, once per latency target: the calls that come back slow
    /// together all report the same congestion.
    fn decrease(&self, state: &mut State) {
        let now = Instant::now();
        if state
            .last_decrease
            .is_some_and(|at| now.duration_since(at) < self.settings.latency_target)
        {
            return;
        }
        state.last_decrease = Some(now);
        let min = f64::from(self.settings.min_limit.get());
        state.limit = (state.limit * 0.9).max(min);
    }
}

/// A place for one call; frees it when dropped.
pub struct Permit<'a> {
    admission: &'a Admission,
    started: Instant,
    outcome: Outcome,
}

impl Permit<'_> {
    /// Frees the place, telling the limit how the call went.
    pub fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.admission.release(self.started, self.outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    const TARGET: Duration = Duration::from_millis(250);

    fn admission(initial: u32, queue_ms: u64) -> Admission {
        let n = |n| NonZeroU32::new(n).expect("non-zero");
        let settings = AdmissionSettings {
            initial_limit: n(initial),
            min_limit: n(2),
            max_limit: n(20),
            latency_target: TARGET,
            queue_timeout: Duration::from_millis(queue_ms),
        };
        Admission::new(&settings, Arc::new(Metrics::default()))
    }

    #[tokio::test]
    async fn lower_classes_leave_room_for_higher_ones() {
        let admission = admission(10, 0);
        let mut held = Vec::new();
        // Click flushes may fill half of the limit, no more.
        while let Ok(p) = admission.admit(Class::Clicks).await {
            held.push(p);
        }
        assert_eq!(held.len(), 5);
        while let Ok(p) = admission.admit(Class::Stats).await {
            held.push(p);
        }
        assert_eq!(held.len(), 7);
        while let Ok(p) = admission.admit(Class::Write).await {
            held.push(p);
        }
        assert_eq!(held.len(), 9);
        // Lookups still get the last place.
        held.push(
            admission
                .admit(Class::Read)
                .await
                .expect("a lookup gets in"),
        );
        let refused = admission.admit(Class::Read).await.err().expect("full");
        assert!(matches!(
            refused,
            StoreError::Overloaded {
                class: "read",
                limit: 10
            }
        ));
        assert!(refused.is_transient());
        assert_eq!(admission.metrics.store_shed[Class::Read as usize].get(), 1);
        assert_eq!(
            admission.metrics.store_admitted[Class::Clicks as usize].get(),
            5
        );
        assert_eq!(admission.metrics.store_in_flight.get(), 10);
        held.clear();
        assert_eq!(admission.metrics.store_in_flight.get(), 0);
        assert_eq!(
            admission.limit(),
            10,
            "dropped permits leave the limit alone"
        );
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_place_a_finished_one_frees() {
        let admission = Arc::new(admission(2, 5_000));
        let first = admission.admit(Class::Write).await.expect("admitted");
        // The write share of a limit of 2 is one place.
        let waiter = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move { admission.admit(Class::Write).await.is_ok() })
        };
        tokio::task::yield_now().await;
        first.finish(Outcome::Answered);
        assert!(
            waiter.await.expect("join"),
            "the waiter is let in on release"
        );
    }

    #[tokio::test]
    async fn a_full_limit_refuses_after_the_queue_deadline_and_bounds_the_queue() {
        let admission = Arc::new(admission(2, 200));
        let _held = admission.admit(Class::Write).await.expect("admitted");
        // Two may wait (as many as the limit); a third is refused without waiting.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let admission = Arc::clone(&admission);
                tokio::spawn(async move { admission.admit(Class::Write).await.is_err() })
            })
            .collect();
        while admission.state().waiting < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            admission.admit(Class::Write).await,
            Err(StoreError::Overloaded { .. })
        ));
        assert_eq!(admission.state().waiting, 2, "the third never queued");
        for waiter in waiters {
            assert!(waiter.await.expect("join"), "refused at the queue deadline");
        }
        assert_eq!(admission.state().waiting, 0);
        assert_eq!(admission.metrics.store_shed[Class::Write as usize].get(), 3);
    }

    #[tokio::test]
    async fn the_limit_grows_while_used_and_fast_and_shrinks_on_trouble() {
        let admission = admission(10, 0);
        // Fast answers with the limit filled: it grows by about half a place per round (the
        // calls that finish while more than half of it is in use count).
        for _ in 0..10 {
            let mut held = Vec::new();
            while let Ok(permit) = admission.admit(Class::Read).await {
                held.push(permit);
            }
            for permit in held {
                permit.finish(Outcome::Answered);
            }
        }
        let grown = admission.limit();
        assert!((13..=20).contains(&grown), "grew to {grown}");
        // Fast answers on an idle limit prove nothing.
        for _ in 0..50 {
            let permit = admission.admit(Class::Read).await.expect("admitted");
            permit.finish(Outcome::Answered);
        }
        assert_eq!(admission.limit(), grown);
        // A dropped call cuts a tenth; more trouble within the same target window does not.
        let before = admission.state().limit;
        admission
            .admit(Class::Read)
            .await
            .expect("admitted")
            .finish(Outcome::Dropped);
        let cut = admission.limit();
        assert_eq!(cut, (before * 0.9) as u32);
        for _ in 0..5 {
            admission
                .admit(Class::Read)
                .await
                .expect("admitted")
                .finish(Outcome::Dropped);
        }
        assert_eq!(admission.limit(), cut);
        assert_eq!(admission.metrics.store_limit.get(), u64::from(cut));
    }

    #[tokio::test]
    async fn repeated_trouble_stops_at_the_minimum() {
        let mut admission = admission(10, 0);
        admission.settings.latency_target = Duration::ZERO;
        for _ in 0..100 {
            admission
                .admit(Class::Read)
                .await
                .expect("admitted")
                .finish(Outcome::Dropped);
        }
        assert_eq!(admission.limit(), 2);
    }
}
