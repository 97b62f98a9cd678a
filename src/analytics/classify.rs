//! What a click was: whether a bot sent it, its device, browser and OS, where it came from
//! (the referrer's host) and the country. Run by the click flusher, off the redirect path.
//!
//! # Choices and their figures
//!
//! - **Browser and OS**: the uap-core rules (`classify/uap-core-regexes.json`, uap-core
//!   0.18.0) through the `ua-parser` crate, the ua-parser project's own Rust implementation,
//!   chosen by measurement over 34 human user agents labelled by hand (desktop Chrome, Firefox,
//!   Safari, Edge, Opera, Yandex, Vivaldi, IE 11; iPhone Safari, Chrome, Firefox, Edge;
//!   Android Chrome, Samsung Internet, Firefox, Opera, Edge, WebView; iPad and Android
//!   tablets; Facebook and Instagram in-app browsers) and 29 bots: the three uap-core based
//!   crates (`ua-parser`, `uaparser`, `user-agent-parser`) named the browser and OS of all 34;
//!   `woothee` 29 browsers (in-app browsers and WebViews are "Webview" to it). A parse cost
//!   (release build, 2 shared cores) 11-15 µs with `ua-parser`'s three rule sets, 5.5 µs with
//!   the two kurz builds (browser and OS), against 1.0-1.5 µs for `woothee`, 0.2-0.45 ms for
//!   `user-agent-parser` and `uaparser`; built, kurz's two rule sets take 12 MiB and ~0.1 s
//!   (the other uap-core crates 210 MiB). Answers are cached by User-Agent string (10,000 at
//!   most, each key at most [`Visit::MAX_HEADER`] bytes: 5 MiB at worst), so a parse is paid
//!   once per distinct User-Agent and a flood of distinct ones costs its parses, never memory.
//! - **Device class** (`desktop`, `mobile`, `tablet`, `other`): a rule on the User-Agent's
//!   tokens ([`agent`]), since uap-core names device models, not classes; all 34 right.
//! - **Bots**: the `isbot` crate's patterns (the npm `isbot` list, crawlers, link-preview
//!   fetchers, monitors, HTTP libraries and headless browsers): 28 of the 29 bots, no human
//!   taken for one (npm `isbot` 5.2.3 also finds the 29th, a bare `WhatsApp/2.23.20.0`;
//!   WhatsApp's preview fetcher sends `WhatsApp/2.23.20.0 A`, which the crate finds). uap-core's
//!   own crawler class found 17-21 of them and costs the device rules above. A click with no
//!   User-Agent at all counts as a bot: no browser sends none.
//! - **Referrer**: the `Referer`'s host ([`referrer::host`]), `direct` without one.
//! - **Country**: the trusted proxy's header, else the country database
//!   ([`Countries`], `maxminddb`), else `unknown` ([`country`]).

mod agent;
mod country;
mod referrer;

use std::sync::Arc;

use quick_cache::UnitWeighter;
use quick_cache::unsync::Cache;

pub use country::{Countries, Country};

use self::agent::Agent;
use super::{Classified, Visit};

/// Most User-Agents whose answers are kept.
const CACHED_AGENTS: usize = 10_000;
/// Most referrer origins (`scheme://host`) whose host is kept.
const CACHED_ORIGINS: usize = 10_000;

/// Seeded hashing for headers from the internet (as the L1 cache's keys): a few
/// instructions per word, where the default (SipHash) took a visible share of the flusher's
/// time hashing user agents.
type Seeded = foldhash::fast::RandomState;

/// A cache of at most `items` answers.
fn cache<V: Clone>(items: usize) -> Cache<Box<str>, V, UnitWeighter, Seeded> {
    Cache::with(
        items,
        items as u64,
        UnitWeighter,
        Seeded::default(),
        Default::default(),
    )
}

/// Classifies visits; owned by the click flusher (one thread), so its caches take no lock.
/// Answers are shared text ([`Arc<str>`]): a click adds references to rollups, not copies.
pub struct Classifier {
    countries: Arc<Countries>,
    agents: Cache<Box<str>, Agent, UnitWeighter, Seeded>,
    /// A referrer's origin (what comes before its path) -> its host.
    origins: Cache<Box<str>, Arc<str>, UnitWeighter, Seeded>,
    /// Countries and device classes: a few hundred values at most.
    words: std::collections::HashMap<Box<str>, Arc<str>, Seeded>,
}

impl Classifier {
    pub fn new(countries: Arc<Countries>) -> Self {
        Self {
            countries,
            agents: cache(CACHED_AGENTS),
            origins: cache(CACHED_ORIGINS),
            words: std::collections::HashMap::default(),
        }
    }

    /// `word` as shared text, made once.
    fn word(&mut self, word: &str) -> Arc<str> {
        if let Some(shared) = self.words.get(word) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = word.into();
        self.words.insert(word.into(), Arc::clone(&shared));
        shared
    }

    /// The referrer's host, looked up by its origin: the pages of one site share one answer.
    fn referrer(&mut self, referer: &str) -> Arc<str> {
        let origin = referrer::origin(referer);
        // Only URLs with a host; and a header cut at the limit may end inside its host, which
        // the whole text decides.
        let cacheable = origin.contains("//") && origin.len() + 3 < Visit::MAX_HEADER;
        if cacheable && let Some(host) = self.origins.get(origin) {
            return Arc::clone(host);
        }
        let host: Arc<str> = referrer::host(referer).into();
        if cacheable {
            self.origins.insert(origin.into(), Arc::clone(&host));
        }
        host
    }

    pub fn classify(&mut self, visit: &Visit) -> Classified {
        let agent = match self.agents.get(visit.user_agent()) {
            Some(agent) => agent.clone(),
            None => {
                let agent = agent::parse(visit.user_agent());
                self.agents.insert(visit.user_agent().into(), agent.clone());
                agent
            }
        };
        let country = country::from_header(visit.country())
            .or_else(|| self.countries.lookup(visit.client_ip))
            .unwrap_or(Country::UNKNOWN);
        Classified {
            bot: agent.bot,
            values: [
                self.referrer(visit.referer()),
                self.word(country.as_str()),
                self.word(agent.device),
                agent.browser,
                agent.os,
            ],
        }
    }

    /// User-Agents whose answers are cached.
    #[cfg(test)]
    fn cached_agents(&self) -> usize {
        self.agents.len()
    }
}

#[cfg(test)]
mod tests;
