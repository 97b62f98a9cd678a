//! The country: the trusted proxy's header, else the country database, else `unknown`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use maxminddb::{Reader, path};

/// The country database (`analytics.country_database`, MaxMind DB format: GeoLite2 or GeoIP2
/// Country or City, or any database with `country.iso_code`), held whole in memory and
/// reloaded on SIGHUP. Shared by the click flusher, which looks addresses up, and the SIGHUP
/// task, which swaps in a new reader only once the new file has been read and checked whole.
pub struct Countries {
    path: Option<PathBuf>,
    reader: RwLock<Option<Arc<Reader<Vec<u8>>>>>,
}

impl Countries {
    /// Reads the database at `path` (none: no lookups); an error says why the file cannot be
    /// used.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        let reader = path.map(read).transpose()?;
        Ok(Self {
            path: path.map(Path::to_path_buf),
            reader: RwLock::new(reader.map(Arc::new)),
        })
    }

    /// Reads the file again; on failure the database in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fresh = Arc::new(read(path)?);
        *self.reader.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        Ok(())
    }

    /// The country the database places `ip` in (ISO 3166-1 alpha-2, uppercase), if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<Country> {
        let reader = self
            .reader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let code: Option<&str> = reader
            .lookup(ip)
            .ok()?
            .decode_path(&path!["country", "iso_code"])
            .ok()?;
        code.and_then(iso_code)
    }
}

/// Reads and checks a whole database file.
fn read(path: &Path) -> Result<Reader<Vec<u8>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read '{shown}': {e}"))?;
    let reader =
        Reader::from_source(bytes).map_err(|e| format!("'{shown}' is no MaxMind DB file: {e}"))?;
    reader
        .verify()
        .map_err(|e| format!("'{shown}' is a damaged MaxMind DB file: {e}"))?;
    Ok(reader)
}

/// What the trusted proxy's country header says: `Some(country)` when it names one (two
/// ASCII letters, uppercased), `Some("unknown")` for the values CloudFront and Cloudflare send
/// when they do not know (`XX`) or the client came through Tor (`T1`, whose exit node's
/// country would be no better), `None` when it says nothing usable (then the database is
/// asked).
pub fn from_header(value: &str) -> Option<Country> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("XX") || value.eq_ignore_ascii_case("T1") {
        return Some(Country::UNKNOWN);
    }
    iso_code(value)
}

/// A two-letter country code, uppercased; anything else is none.
fn iso_code(code: &str) -> Option<Country> {
    match *code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(Country(Some([
            a.to_ascii_uppercase(),
            b.to_ascii_uppercase(),
        ]))),
        _ => None,
    }
}

/// A country as a click records it: an ISO 3166-1 alpha-2 code (two uppercase ASCII letters),
/// or unknown. Held inline: the flusher finds one per click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country(Option<[u8; 2]>);

impl Country {
    pub const UNKNOWN: Self = Self(None);

    pub fn as_str(&self) -> &str {
        self.0
            .as_ref()
            .and_then(|code| std::str::from_utf8(code).ok())
            .unwrap_or("unknown")
    }
}
