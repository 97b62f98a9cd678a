//! The domain denylist: a file of domains, one a line (`#` starts a comment), each covering
//! its subdomains. Links to a listed domain are refused at create and answer 410 at redirect,
//! including links made before the domain was listed. The file is read at start-up and again
//! on SIGHUP; a reload that fails keeps the list in force.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub struct Denylist {
    path: Option<PathBuf>,
    domains: RwLock<Arc<HashSet<String>>>,
}

impl Denylist {
    /// An empty list that never changes.
    pub fn empty() -> Self {
        Self {
            path: None,
            domains: RwLock::new(Arc::new(HashSet::new())),
        }
    }

    /// The list in `path` (none: an empty list that never changes).
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let domains = match path {
            Some(path) => read(path)?,
            None => HashSet::new(),
        };
        Ok(Self {
            path: path.map(Path::to_owned),
            domains: RwLock::new(Arc::new(domains)),
        })
    }

    /// Reads the file again; the number of domains now listed.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let domains = read(path)?;
        let count = domains.len();
        *self.domains.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(domains);
        Ok(count)
    }

    fn current(&self) -> Arc<HashSet<String>> {
        Arc::clone(&self.domains.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The listed domain `host` falls under, if any (`host` is itself listed or a subdomain).
    pub fn covering(&self, host: &str) -> Option<String> {
        let domains = self.current();
        if domains.is_empty() {
            return None;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = host.as_str();
        loop {
            if domains.contains(rest) {
                return Some(rest.to_owned());
            }
            rest = rest.split_once('.')?.1;
        }
    }
}

fn read(path: &Path) -> Result<HashSet<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the denylist {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|d| {
            d.trim_start_matches("*.")
                .trim_matches('.')
                .to_ascii_lowercase()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_domains_cover_their_subdomains_and_reload_replaces_the_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deny.txt");
        std::fs::write(
            &path,
            "# phishing\nEvil.example\n*.bad.test # wildcard form\n\n",
        )
        .expect("write");
        let list = Denylist::load(Some(&path)).expect("loads");
        assert_eq!(list.covering("evil.example"), Some("evil.example".into()));
        assert_eq!(
            list.covering("login.EVIL.example."),
            Some("evil.example".into())
        );
        assert_eq!(list.covering("x.bad.test"), Some("bad.test".into()));
        assert_eq!(list.covering("notevil.example"), None);
        assert_eq!(list.covering("example"), None);

        std::fs::write(&path, "other.example\n").expect("write");
        assert_eq!(list.reload(), Ok(1));
        assert_eq!(list.covering("evil.example"), None);
        assert_eq!(
            list.covering("a.other.example"),
            Some("other.example".into())
        );

        std::fs::remove_file(&path).expect("remove");
        assert!(list.reload().is_err(), "a failed reload is reported");
        assert_eq!(
            list.covering("other.example"),
            Some("other.example".into()),
            "and keeps the list"
        );
        assert!(Denylist::load(Some(&path)).is_err());
    }
}
