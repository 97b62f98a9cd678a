//! Click statistics, for the admin or a key with the `stats` scope (its own links only):
//! - `GET /api/v1/links/{code}/stats`: one link over a period (`from`, `to`; hourly or daily),
//!   with totals, humans, bots, unique visitors, the series and the top values of each
//!   dimension asked for (`breakdown`, `top`), and, as before, the all-time clicks per day;
//! - `GET /api/v1/stats`: the caller's most clicked links over a period.
//!
//! Both answer JSON, or CSV for `Accept: text/csv`. Clicks reach the store once per flush
//! interval, so the figures lag by up to one interval. The adding up is
//! [`crate::analytics::report`]'s; this parses the period and shapes the answer.

use std::collections::BTreeMap;

use actix_web::http::header::ACCEPT;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Caller, code_param, no_such_link};
use crate::analytics::report::{self, Granularity, Report};
use crate::analytics::uniques::STANDARD_ERROR;
use crate::analytics::{Dimension, MS_PER_HOUR, hour_of};
use crate::clock;
use crate::links::ListQuery;
use crate::store::Scope;

const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;
/// The period when `from` is not given: this much before `to`.
const DEFAULT_DAYS: i64 = 30;
const DEFAULT_HOURS: i64 = 48;
/// Longest hourly period: a month of hours (744 points).
const MAX_HOURLY_DAYS: i64 = 31;
/// Longest daily period: ten years of days.
const MAX_DAILY_DAYS: i64 = 3_660;
/// Values per dimension by default, and at most.
const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 100;
/// Links in the top-links answer by default, and at most.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Most links the top-links answer reads (each a store read); past it, `partial`.
pub const MAX_SCANNED: usize = 10_000;
/// Links whose rollups are read at once for the top-links answer.
const READS_IN_FLIGHT: usize = 16;

#[derive(Serialize)]
struct StatsView<'a> {
    code: &'a str,
    total_clicks: u64,
    last_click_at: Option<String>,
    /// All-time clicks per day, as before periods existed.
    daily: Vec<DayView>,
    from: String,
    to: String,
    granularity: &'static str,
    clicks: u64,
    humans: u64,
    bots: u64,
    uniques: u64,
    uniques_standard_error: f64,
    series: Vec<PointView>,
    breakdown: BTreeMap<&'static str, Vec<ValueView>>,
}

#[derive(Serialize)]
struct DayView {
    date: String,
    clicks: u64,
}

#[derive(Serialize)]
struct PointView {
    at: String,
    clicks: u64,
    humans: u64,
    bots: u64,
    uniques: u64,
}

#[derive(Serialize)]
struct ValueView {
    value: String,
    clicks: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    breakdown: Option<String>,
    top: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// A period checked: its first and last millisecond.
#[derive(Debug, Clone, Copy)]
struct Period {
    from_ms: i64,
    to_ms: i64,
}

impl Period {
    fn first_hour(self) -> u32 {
        hour_of(self.from_ms)
    }

    fn last_hour(self) -> u32 {
        hour_of(self.to_ms)
    }
}

/// Who may read `code`'s statistics: the admin, or the key that owns it (another key's link
/// is "no such link" to a key, whether or not it exists).
async fn authorised(state: &AppState, caller: &Caller, code: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::ApiKey(_) => {
            state
                .links
                .get(code)
                .await?
                .filter(|link| caller.may_read(link))
                .ok_or_else(|| no_such_link(code))?;
            Ok(())
        }
        Caller::Anonymous => Err(unauthorised()),
    }
}

fn unauthorised() -> ApiError {
    ApiError::Unauthorized(
        "statistics need the admin token, or an API key with the 'stats' scope for its own links"
            .into(),
    )
}

pub async fn stats(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Stats, "reading statistics")?;
    let code = code_param(&req)?;
    let params: StatsParams = query(&req)?;
    let now = state.links.clock().now_ms();
    let granularity = match params.granularity.as_deref() {
        None => Granularity::Day,
        Some(text) => Granularity::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!("granularity must be 'hour' or 'day'; got '{text}'"))
        })?,
    };
    let period = period(
        params.from.as_deref(),
        params.to.as_deref(),
        granularity,
        now,
        state.reports.hourly_retention_days,
    )?;
    let dimensions = match params.breakdown.as_deref() {
        None => Dimension::ALL.to_vec(),
        Some(text) => dimensions(text)?,
    };
    let top = count_param("top", params.top.as_deref(), DEFAULT_TOP, MAX_TOP)?;
    authorised(&state, &caller, code).await?;

    let stats = state
        .links
        .stats(code)
        .await?
        .ok_or_else(|| no_such_link(code))?;
    let stored = state
        .links
        .analytics(code, period.first_hour(), period.last_hour())
        .await?
        .ok_or_else(|| no_such_link(code))?;
    let report = report::report(
        &report::Request {
            granularity,
            from_hour: period.first_hour(),
            to_hour: period.last_hour(),
            dimensions: &dimensions,
            top,
            cap: state.reports.max_values_per_dimension,
        },
        &stored.hourly,
        &stored.daily,
    );
    if wants_csv(&req) {
        return Ok(match report.breakdown.as_slice() {
            [(dimension, values)] if params.breakdown.is_some() => csv(
                &format!("{code}-{}.csv", dimension.name()),
                ["value", "clicks"],
                values.iter().map(|(v, n)| [v.to_string(), n.to_string()]),
            ),
            _ => csv(
                &format!("{code}-{}.csv", granularity.name()),
                ["at", "clicks", "humans", "bots", "uniques"],
                report.series.iter().map(|p| {
                    [
                        point_at(p.at, granularity),
                        p.clicks.to_string(),
                        p.humans.to_string(),
                        p.bots.to_string(),
                        p.uniques.to_string(),
                    ]
                }),
            ),
        });
    }
    Ok(HttpResponse::Ok().json(StatsView {
        code,
        total_clicks: stats.total_clicks,
        last_click_at: stats.last_click_ms.map(clock::format_rfc3339),
        daily: stats
            .daily
            .into_iter()
            .map(|(day, clicks)| DayView {
                date: clock::format_day(day),
                clicks,
            })
            .collect(),
        from: clock::format_rfc3339(period.from_ms),
        to: clock::format_rfc3339(period.to_ms),
        granularity: granularity.name(),
        clicks: report.clicks,
        humans: report.humans,
        bots: report.bots,
        uniques: report.uniques,
        uniques_standard_error: STANDARD_ERROR,
        series: report
            .series
            .iter()
            .map(|p| PointView {
                at: point_at(p.at, granularity),
                clicks: p.clicks,
                humans: p.humans,
                bots: p.bots,
                uniques: p.uniques,
            })
            .collect(),
        breakdown: report
            .breakdown
            .into_iter()
            .map(|(dimension, values)| {
                let values = values
                    .into_iter()
                    .map(|(value, clicks)| ValueView {
                        value: value.to_string(),
                        clicks,
                    })
                    .collect();
                (dimension.name(), values)
            })
            .collect(),
    }))
}

#[derive(Serialize)]
struct TopView {
    from: String,
    to: String,
    links: Vec<TopLinkView>,
    /// True when the caller has more than [`MAX_SCANNED`] links: only that many were read.
    partial: bool,
}

#[derive(Serialize)]
struct TopLinkView {
    code: String,
    short_url: String,
    clicks: u64,
    humans: u64,
    bots: u64,
    uniques: u64,
}

/// `GET /api/v1/stats`: the caller's links (the admin's: everyone's) with the most clicks over
/// a period of days, most first (ties by code); links without clicks in it are left out. At
/// most [`MAX_SCANNED`] links are read, newest first.
pub async fn top_links(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Stats, "reading statistics")?;
    let scopes = caller.list_scopes().ok_or_else(unauthorised)?;
    let params: TopParams = query(&req)?;
    let now = state.links.clock().now_ms();
    let period = period(
        params.from.as_deref(),
        params.to.as_deref(),
        Granularity::Day,
        now,
        state.reports.hourly_retention_days,
    )?;
    let limit = count_param("limit", params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;

    let mut codes: Vec<String> = Vec::new();
    let mut list = ListQuery {
        scopes,
        limit: 1_000,
        ..ListQuery::default()
    };
    let mut partial = false;
    loop {
        list.limit = (MAX_SCANNED - codes.len()).min(1_000);
        let page = state.links.list(&list).await?;
        codes.extend(page.links.into_iter().map(|link| link.code));
        let Some(next) = page.next else { break };
        list.cursor = Some(next);
        if codes.len() >= MAX_SCANNED {
            // A full page names where the next would start; whether one is there is a read.
            list.limit = 1;
            partial = !state.links.list(&list).await?.links.is_empty();
            break;
        }
    }
    let request = report::Request {
        granularity: Granularity::Day,
        from_hour: period.first_hour(),
        to_hour: period.last_hour(),
        dimensions: &[],
        top: 0,
        cap: state.reports.max_values_per_dimension,
    };
    let (from_hour, to_hour) = day_hours(period);
    let reports: Vec<Result<Option<(String, Report)>, ApiError>> =
        futures_util::stream::iter(codes)
            .map(|code| {
                let (state, request) = (&state, &request);
                async move {
                    let stored = state.links.analytics(&code, from_hour, to_hour).await?;
                    Ok(stored.map(|s| (code, report::report(request, &s.hourly, &s.daily))))
                }
            })
            .buffer_unordered(READS_IN_FLIGHT)
            .collect()
            .await;
    let mut links: Vec<(String, Report)> = Vec::new();
    for found in reports {
        // A link deleted since it was listed has no stats: left out.
        if let Some((code, report)) = found?
            && report.clicks > 0
        {
            links.push((code, report));
        }
    }
    links.sort_by(|(ca, a), (cb, b)| b.clicks.cmp(&a.clicks).then_with(|| ca.cmp(cb)));
    links.truncate(limit);
    let links: Vec<TopLinkView> = links
        .into_iter()
        .map(|(code, r)| TopLinkView {
            short_url: state.base_url.short_url(&code),
            code,
            clicks: r.clicks,
            humans: r.humans,
            bots: r.bots,
            uniques: r.uniques,
        })
        .collect();
    if wants_csv(&req) {
        let mut response = csv(
            "top-links.csv",
            ["code", "short_url", "clicks", "humans", "bots", "uniques"],
            links.iter().map(|l| {
                [
                    l.code.clone(),
                    l.short_url.clone(),
                    l.clicks.to_string(),
                    l.humans.to_string(),
                    l.bots.to_string(),
                    l.uniques.to_string(),
                ]
            }),
        );
        if partial {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("kurz-partial"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
        }
        return Ok(response);
    }
    Ok(HttpResponse::Ok().json(TopView {
        from: clock::format_rfc3339(period.from_ms),
        to: clock::format_rfc3339(period.to_ms),
        links,
        partial,
    }))
}

/// The first and last hour of the days a period covers.
fn day_hours(period: Period) -> (u32, u32) {
    let first = clock::day_of(period.from_ms) * 24;
    let last = clock::day_of(period.to_ms) * 24 + 23;
    (first, last)
}

/// The period of `from` and `to` (RFC 3339 or `YYYY-MM-DD`; a `to` date includes its day),
/// defaulting to now and to the last 30 days (daily) or 48 hours (hourly) before `to`.
fn period(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Granularity,
    now_ms: i64,
    hourly_retention_days: u32,
) -> Result<Period, ApiError> {
    let to_ms = to
        .map(|t| instant("to", t, true))
        .transpose()?
        .unwrap_or(now_ms);
    let from_ms = match from {
        Some(text) => instant("from", text, false)?,
        None => {
            let back = match granularity {
                Granularity::Hour => DEFAULT_HOURS * MS_PER_HOUR,
                Granularity::Day => DEFAULT_DAYS * MS_PER_DAY,
            };
            (to_ms - back).max(0)
        }
    };
    if from_ms > to_ms {
        return Err(ApiError::BadRequest(format!(
            "from ({}) is after to ({})",
            clock::format_rfc3339(from_ms),
            clock::format_rfc3339(to_ms)
        )));
    }
    let span_days = to_ms.div_euclid(MS_PER_DAY) - from_ms.div_euclid(MS_PER_DAY) + 1;
    match granularity {
        Granularity::Hour => {
            if to_ms - from_ms >= MAX_HOURLY_DAYS * MS_PER_DAY {
                return Err(ApiError::BadRequest(format!(
                    "an hourly period spans at most {MAX_HOURLY_DAYS} days; use \
                     granularity=day for longer ones"
                )));
            }
            let kept_from = (now_ms - i64::from(hourly_retention_days) * MS_PER_DAY)
                .div_euclid(MS_PER_HOUR)
                * MS_PER_HOUR;
            if from_ms < kept_from {
                return Err(ApiError::BadRequest(format!(
                    "hourly figures are kept for {hourly_retention_days} days \
                     (analytics.hourly_retention_days): from must be {} or later; use \
                     granularity=day for older periods",
                    clock::format_rfc3339(kept_from)
                )));
            }
        }
        Granularity::Day if span_days > MAX_DAILY_DAYS => {
            return Err(ApiError::BadRequest(format!(
                "a daily period spans at most {MAX_DAILY_DAYS} days"
            )));
        }
        Granularity::Day => {}
    }
    Ok(Period { from_ms, to_ms })
}

/// `text` as Unix milliseconds: RFC 3339, or a `YYYY-MM-DD` UTC date (its first millisecond,
/// or its last for the end of a period). Before 1970 is refused.
fn instant(name: &str, text: &str, end_of_day: bool) -> Result<i64, ApiError> {
    let parsed = clock::parse_rfc3339(text).or_else(|| {
        clock::parse_day(text).map(|day| {
            let start = i64::from(day) * MS_PER_DAY;
            if end_of_day {
                start + MS_PER_DAY - 1
            } else {
                start
            }
        })
    });
    match parsed {
        // Hour numbers are u32: good until the year 491,000.
        Some(ms) if (0..i64::from(u32::MAX) * MS_PER_HOUR).contains(&ms) => Ok(ms),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{name} must be from 1970 on; got '{text}'"
        ))),
        None => Err(ApiError::BadRequest(format!(
            "{name} must be an RFC 3339 timestamp such as 2026-11-23T08:00:00Z or a date such \
             as 2026-11-23; got '{text}'"
        ))),
    }
}

/// The dimensions a comma-separated `breakdown` names (empty: none), each once.
fn dimensions(text: &str) -> Result<Vec<Dimension>, ApiError> {
    let mut found = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let dimension = Dimension::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "breakdown names '{name}', which is no dimension; dimensions are {}",
                Dimension::ALL.map(Dimension::name).join(", ")
            ))
        })?;
        if !found.contains(&dimension) {
            found.push(dimension);
        }
    }
    Ok(found)
}

/// A whole-number parameter from 1 to `max`, `default` when absent.
fn count_param(
    name: &str,
    text: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must be a whole number from 1 to {max}; got '{text}'"
            ))
        })
}

/// An hour's RFC 3339 start, or a day's `YYYY-MM-DD`.
fn point_at(at: u32, granularity: Granularity) -> String {
    match granularity {
        Granularity::Hour => clock::format_rfc3339(i64::from(at) * MS_PER_HOUR),
        Granularity::Day => clock::format_day(at),
    }
}

fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(super::accept::prefers_csv)
}

/// A CSV answer: `header`, then `rows`, each field made safe to open in a spreadsheet.
fn csv<const N: usize>(
    filename: &str,
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> HttpResponse {
    let mut out = csv::Writer::from_writer(Vec::new());
    // Writing to memory fails only on a record of the wrong length, which [_; N] rules out.
    let _ = out.write_record(header);
    for row in rows {
        let _ = out.write_record(row.iter().map(|field| report::csv_safe(field).into_owned()));
    }
    let body = out.into_inner().unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(body)
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("query parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 20_000 * MS_PER_DAY + 10 * MS_PER_HOUR;

    fn detail(result: Result<Period, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(detail)) => detail,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn periods_default_to_the_last_30_days_or_48_hours() {
        let day = period(None, None, Granularity::Day, NOW, 30).expect("period");
        assert_eq!((day.from_ms, day.to_ms), (NOW - 30 * MS_PER_DAY, NOW));
        let hour = period(None, None, Granularity::Hour, NOW, 30).expect("period");
        assert_eq!(hour.from_ms, NOW - 48 * MS_PER_HOUR);
    }

    #[test]
    fn dates_cover_whole_days_and_rfc_3339_is_exact() {
        let p = period(
            Some("2024-10-04"),
            Some("2024-10-05"),
            Granularity::Day,
            NOW,
            30,
        )
        .expect("period");
        let start = i64::from(clock::parse_day("2024-10-04").expect("day")) * MS_PER_DAY;
        assert_eq!((p.from_ms, p.to_ms), (start, start + 2 * MS_PER_DAY - 1));
        let p = period(
            Some("2024-10-04T10:30:00+02:00"),
            None,
            Granularity::Day,
            NOW,
            30,
        )
        .expect("period");
        assert_eq!(p.from_ms, start + 8 * MS_PER_HOUR + 30 * 60_000);
    }

    #[test]
    fn bad_periods_say_what_is_wrong() {
        let bad = |from, to, g| detail(period(from, to, g, NOW, 30));
        assert!(bad(Some("2024-10-05"), Some("2024-10-04"), Granularity::Day).contains("after"));
        assert!(bad(Some("yesterday"), None, Granularity::Day).contains("RFC 3339"));
        assert!(bad(Some("1969-12-31T23:00:00Z"), None, Granularity::Day).contains("1970"));
        assert!(bad(Some("2000-01-01"), None, Granularity::Day).contains("at most 3660 days"));
        let old = clock::format_rfc3339(NOW - 40 * MS_PER_DAY);
        let to = clock::format_rfc3339(NOW - 35 * MS_PER_DAY);
        let retention = bad(Some(&old), Some(&to), Granularity::Hour);
        assert!(
            retention.contains("kept for 30 days (analytics.hourly_retention_days)"),
            "{retention}"
        );
        let long_from = clock::format_rfc3339(NOW - 31 * MS_PER_DAY);
        // Within the retention (60 days here) but longer than an hourly period may be.
        let long = detail(period(Some(&long_from), None, Granularity::Hour, NOW, 60));
        assert!(long.contains("at most 31 days"), "{long}");
        let month = clock::format_rfc3339(NOW - 30 * MS_PER_DAY);
        assert!(period(Some(&month), None, Granularity::Hour, NOW, 30).is_ok());
    }

    #[test]
    fn breakdowns_name_dimensions_once() {
        assert_eq!(
            dimensions("country, referrer,country").expect("dimensions"),
            vec![Dimension::Country, Dimension::Referrer]
        );
        assert_eq!(dimensions("").expect("none"), vec![]);
        match dimensions("referrer,city") {
            Err(ApiError::BadRequest(d)) => {
                assert!(
                    d.contains("'city'") && d.contains("referrer, country, device"),
                    "{d}"
                )
            }
            _ => panic!("city is no dimension"),
        }
    }
}
