//! Wall-clock time. Times are kept as Unix milliseconds inside kurz and formatted as RFC 3339
//! (UTC) only at the edges; click statistics bucket by UTC day number.
//!
//! Whatever decides by the wall clock (expiry, creation times, the day a click counts for)
//! reads a [`Clock`] handed down from start-up, so tests can set the time instead of sleeping.
//! A [`TimeReference`] is a clock elsewhere (Redis's, the store's) to compare it with.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const MS_PER_DAY: i64 = 86_400_000;

/// The wall clock kurz decides by: the system's, or (in tests) one that moves only when told.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `start_ms` until [`advance`](Self::advance)d.
    pub fn manual(start_ms: i64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => system_now_ms(),
            Some(now) => now.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward (every clone sees it); the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual {
            now.fetch_add(
                i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
                Ordering::Relaxed,
            );
        }
    }
}

/// A wall clock kurz can compare its own with (Redis's, the store's), for
/// [`crate::health::ClockSkew`].
#[async_trait::async_trait]
pub trait TimeReference: Send + Sync + 'static {
    /// Its name, for logs and `/readyz` (`redis`).
    fn name(&self) -> &'static str;

    /// Its time now, in Unix milliseconds; `None` when it does not answer.
    async fn now_ms(&self) -> Option<i64>;
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate) into Unix
/// milliseconds.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let mut parts = text.split_ascii_whitespace();
    let (_weekday, day, month, year, hms, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)?;
    let month = time::Month::try_from(u8::try_from(month + 1).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let at = date.with_hms(h, m, s).ok()?.assume_utc();
    at.unix_timestamp().checked_mul(1000)
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn system_now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g. `2026-11-23T08:30:00.123Z`.
pub fn format_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The UTC day number (days since 1970-01-01) a timestamp falls on.
pub fn day_of(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(MS_PER_DAY)).unwrap_or(0)
}

/// `YYYY-MM-DD` for a UTC day number.
pub fn format_day(day: u32) -> String {
    let date = OffsetDateTime::from_unix_timestamp(i64::from(day) * 86_400)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The UTC day number of a `YYYY-MM-DD` date.
pub fn parse_day(text: &str) -> Option<u32> {
    let mut parts = text.splitn(3, '-');
    let mut part = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
    };
    let (year, month, day) = (part(4)?, part(2)?, part(2)?);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(year), month, u8::try_from(day).ok()?).ok()?;
    let midnight = date.midnight().assume_utc().unix_timestamp();
    u32::try_from(midnight.div_euclid(86_400)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_as_dates() {
        for day in [0, 20_415, 40_000] {
            assert_eq!(parse_day(&format_day(day)), Some(day));
        }
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("1969-12-31"), None, "before day 0");
        assert_eq!(parse_day("yesterday"), None);
    }

    #[test]
    fn rfc3339_round_trips_and_days_are_utc() {
        let ms = parse_rfc3339("2026-11-23T23:59:59.500+00:00").expect("valid");
        assert_eq!(format_rfc3339(ms), "2026-11-23T23:59:59.5Z");
        assert_eq!(format_day(day_of(ms)), "2026-11-23");
        let later = parse_rfc3339("2026-11-24T01:00:00+02:00").expect("valid");
        assert_eq!(format_day(day_of(later)), "2026-11-23");
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }

    #[test]
    fn http_dates_parse_to_the_second() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            parse_rfc3339("1994-11-06T08:49:37Z")
        );
        assert_eq!(
            parse_http_date("Wed, 02 Dec 2026 05:19:00 GMT"),
            Some(1_796_188_740_000)
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        other.advance(Duration::from_millis(2_500));
        assert_eq!(clock.now_ms(), 3_500);
        let system = Clock::system();
        system.advance(Duration::from_secs(3_600));
        assert!((system.now_ms() - system_now_ms()).abs() < 60_000);
    }
}
