//! Clicks with details waiting for the click flusher, as one shard of the click recorder holds
//! them: every visit's code and headers in one text buffer, and a fixed-size entry per visit
//! saying where its parts are.
//!
//! A redirect that records details only appends to the two buffers, so once they have grown
//! to a flush interval's worth it allocates nothing; the flusher takes the full buffers at a
//! drain, leaves empty ones it used before in their place, and reads the visits from them
//! where they lie. A visit of its own allocation each, made on an HTTP worker and freed by
//! the flusher's thread, took an allocation per click on the redirect path and the costliest
//! kind of free (of another thread's memory) in the flusher.

use std::net::IpAddr;

use super::{Headers, Visit};

/// Where one visit's parts are in the text buffer: its code, then its `User-Agent`, then its
/// `Referer`, from `start`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at_ms: i64,
    start: usize,
    code_len: u32,
    agent_len: u32,
    referer_len: u32,
    country: [u8; 2],
    client_ip: IpAddr,
}

/// Visits (code, time and headers), in the order they were recorded.
#[derive(Debug, Default)]
pub struct Visits {
    entries: Vec<Entry>,
    text: String,
}

impl Visits {
    /// Keeps a click on `code` at `at_ms` with the details in `headers`, each header cut to
    /// [`Visit::MAX_HEADER`] bytes at a character boundary, bytes that are not UTF-8 replaced.
    pub fn push(&mut self, code: &str, at_ms: i64, headers: &Headers) {
        let (agent, referer) = (
            Visit::header(headers.user_agent),
            Visit::header(headers.referer),
        );
        let start = self.text.len();
        self.text.push_str(code);
        self.text.push_str(&agent);
        self.text.push_str(&referer);
        let country = match headers.country.trim_ascii() {
            &[a, b] => [a, b],
            _ => [0, 0],
        };
        // Each part is at most MAX_HEADER bytes, or a code (a link's, far shorter).
        let len = |part: &str| u32::try_from(part.len()).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            at_ms,
            start,
            code_len: len(code),
            agent_len: len(&agent),
            referer_len: len(&referer),
            country,
            client_ip: headers.client_ip,
        });
    }

    /// (code, time, visit) of each, in the order they were recorded.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64, Visit<'_>)> {
        self.entries.iter().map(|e| {
            let code_end = e.start + e.code_len as usize;
            let agent_end = code_end + e.agent_len as usize;
            let referer_end = agent_end + e.referer_len as usize;
            let visit = Visit {
                user_agent: &self.text[code_end..agent_end],
                referer: &self.text[agent_end..referer_end],
                country: e.country,
                client_ip: e.client_ip,
            };
            (&self.text[e.start..code_end], e.at_ms, visit)
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the buffers, keeping the room they have.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.text.clear();
    }

    /// Bytes the buffers hold room for.
    pub fn capacity_bytes(&self) -> usize {
        self.text.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// One visit on `code`, for tests: its headers as `push` keeps them.
    #[cfg(test)]
    pub fn of(code: &str, at_ms: i64, headers: &Headers) -> Self {
        let mut visits = Self::default();
        visits.push(code, at_ms, headers);
        visits
    }

    /// The first visit, for tests.
    #[cfg(test)]
    pub fn first(&self) -> Visit<'_> {
        self.iter().next().expect("a visit").2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_read_back_as_recorded_with_headers_cut_at_a_character_boundary() {
        let long = "é".repeat(600);
        let ip = IpAddr::from([192, 0, 2, 1]);
        let mut visits = Visits::default();
        visits.push(
            "abc",
            5,
            &Headers {
                user_agent: long.as_bytes(),
                referer: b"https://a.example/",
                country: b" DE ",
                client_ip: ip,
            },
        );
        for (code, country) in [("d", &b""[..]), ("e", b"DEU"), ("f", b"\xff\xfe")] {
            visits.push(
                code,
                6,
                &Headers {
                    user_agent: b"ab\xffcd",
                    referer: b"",
                    country,
                    client_ip: ip,
                },
            );
        }
        let read: Vec<_> = visits.iter().collect();
        assert_eq!(read.len(), 4);
        let (code, at, first) = read[0];
        assert_eq!((code, at), ("abc", 5));
        assert_eq!(first.user_agent(), Visit::header(long.as_bytes()));
        assert!(first.user_agent().len() <= Visit::MAX_HEADER);
        assert_eq!(first.referer(), "https://a.example/");
        assert_eq!((first.country(), first.client_ip), ("DE", ip));
        for (i, code) in ["d", "e", "f"].into_iter().enumerate() {
            let (c, at, visit) = read[i + 1];
            assert_eq!((c, at), (code, 6));
            assert_eq!(visit.user_agent(), "ab\u{fffd}cd");
            assert_eq!((visit.referer(), visit.country()), ("", ""));
        }
        let room = visits.capacity_bytes();
        visits.clear();
        assert!(visits.is_empty() && visits.iter().next().is_none());
        assert_eq!(visits.capacity_bytes(), room, "cleared, the room stays");
    }
}
