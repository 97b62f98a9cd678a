//! Folding one flush interval's visits into rollups per code per hour, in the click flusher.

use std::collections::HashMap;

use super::classify::Classifier;
use super::uniques::DayKey;
use super::{Rollup, Visit, hour_of};

/// Classifies visits, hashes their visitors with the day's key, and adds them to rollups.
pub struct Aggregator {
    classifier: Classifier,
    /// Values kept per dimension per rollup.
    cap: usize,
    /// Keys of the days in use, and whether each is the fleet's (read from the store) or only
    /// this instance's stand-in.
    keys: HashMap<u32, (DayKey, bool)>,
}

impl Aggregator {
    pub fn new(classifier: Classifier, cap: usize) -> Self {
        Self {
            classifier,
            cap,
            keys: HashMap::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn classifier(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    /// Whether visits of `day` still need the fleet's key.
    pub fn needs_key(&self, day: u32) -> bool {
        !self.keys.get(&day).is_some_and(|(_, shared)| *shared)
    }

    pub fn has_key(&self, day: u32) -> bool {
        self.keys.contains_key(&day)
    }

    pub fn set_key(&mut self, key: DayKey, shared: bool) {
        self.keys.insert(key.day, (key, shared));
    }

    /// Forgets the keys of days before `day`.
    pub fn forget_before(&mut self, day: u32) {
        self.keys.retain(|&d, _| d >= day);
    }

    /// Adds one visit at `at_ms` to `hours` (ascending by hour); `true` when it was a bot.
    pub fn add(&mut self, hours: &mut Vec<(u32, Rollup)>, at_ms: i64, visit: &Visit) -> bool {
        let hour = hour_of(at_ms);
        let classified = self.classifier.classify(visit);
        let visitor = self
            .keys
            .get(&crate::clock::day_of(at_ms))
            .map_or(0, |(key, _)| {
                key.visitor(visit.client_ip, visit.user_agent())
            });
        rollup_for(hours, hour).add(&classified, visitor, self.cap);
        classified.bot
    }
}

/// The rollup of `hour` in `hours` (ascending by hour), made when missing.
pub fn rollup_for(hours: &mut Vec<(u32, Rollup)>, hour: u32) -> &mut Rollup {
    let i = match hours.binary_search_by_key(&hour, |(h, _)| *h) {
        Ok(i) => i,
        Err(i) => {
            hours.insert(i, (hour, Rollup::default()));
            i
        }
    };
    &mut hours[i].1
}
