//! What the stats API answers, made from a link's stored rollups: totals, a series of hours or
//! days (every one in the period, zero where nothing was clicked), and the top values of each
//! dimension asked for. Pure: the handler reads the store and shapes the answer, this adds up.
//!
//! Totals, series and breakdowns come from the same rollups (hourly ones for an hourly
//! report, daily ones for a daily report), so a breakdown's values add up to the period's
//! human clicks. Uniques add up per day: a visitor counts once a day, so a period's uniques
//! are the sum of its days' estimates (an hourly report merges the hours of each day first).

use super::{Dimension, Rollup, Uniques, Values, day_of_hour};

/// How finely a report's series is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Granularity::Hour, Granularity::Day]
            .into_iter()
            .find(|g| g.name() == name)
    }
}

/// One hour or day of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    /// The hour number (hours since 1970-01-01T00:00Z) or day number.
    pub at: u32,
    pub clicks: u64,
    pub humans: u64,
    pub bots: u64,
    pub uniques: u64,
}

/// A link's clicks over a period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub clicks: u64,
    pub humans: u64,
    pub bots: u64,
    /// The sum of the period's daily unique visitors.
    pub uniques: u64,
    /// Every hour or day of the period, oldest first.
    pub series: Vec<Point>,
    /// Per dimension asked for, its most clicked values (most first, ties by value).
    pub breakdown: Vec<(Dimension, Values)>,
}

/// What a report covers and shows.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub granularity: Granularity,
    /// The first and last hour of the period (inclusive); a daily report covers the days
    /// they fall on.
    pub from_hour: u32,
    pub to_hour: u32,
    pub dimensions: &'a [Dimension],
    /// Values shown per dimension.
    pub top: usize,
    /// `analytics.max_values_per_dimension`: values kept when rollups are merged.
    pub cap: usize,
}

/// The report of `request` from `hourly` or `daily` rollups ((hour or day number, rollup),
/// ascending; those outside the period are ignored).
pub fn report(request: &Request, hourly: &[(u32, Rollup)], daily: &[(u32, Rollup)]) -> Report {
    let (first, last, rollups) = match request.granularity {
        Granularity::Hour => (request.from_hour, request.to_hour, hourly),
        Granularity::Day => (
            day_of_hour(request.from_hour),
            day_of_hour(request.to_hour),
            daily,
        ),
    };
    let in_period: Vec<&(u32, Rollup)> = rollups
        .iter()
        .filter(|(at, _)| (first..=last).contains(at))
        .collect();
    let mut total = Rollup::default();
    // Uniques of each day, merged from its hours for an hourly report.
    let mut days: Vec<(u32, Uniques)> = Vec::new();
    for (at, rollup) in &in_period {
        total.merge(rollup, request.cap);
        let day = match request.granularity {
            Granularity::Hour => day_of_hour(*at),
            Granularity::Day => *at,
        };
        match days.last_mut() {
            Some((d, uniques)) if *d == day => uniques.merge(&rollup.uniques),
            _ => days.push((day, rollup.uniques.clone())),
        }
    }
    let mut found = in_period.iter().peekable();
    let series = (first..=last)
        .map(|at| match found.next_if(|(a, _)| *a == at) {
            Some((_, rollup)) => Point {
                at,
                clicks: rollup.clicks,
                humans: rollup.humans,
                bots: rollup.bots,
                // Estimating sorts the sketch's buffer in place: a copy.
                uniques: rollup.uniques.clone().estimate(),
            },
            None => Point {
                at,
                ..Point::default()
            },
        })
        .collect();
    Report {
        clicks: total.clicks,
        humans: total.humans,
        bots: total.bots,
        uniques: days.iter_mut().map(|(_, u)| u.estimate()).sum(),
        series,
        breakdown: request
            .dimensions
            .iter()
            .map(|&d| (d, top(total.values(d), request.top)))
            .collect(),
    }
}

/// The `n` most clicked values (`other` among them, as any value), most first, ties by value.
pub fn top(values: &[(std::sync::Arc<str>, u64)], n: usize) -> Values {
    let mut sorted: Values = values.iter().filter(|(_, c)| *c > 0).cloned().collect();
    sorted.sort_by(|(va, ca), (vb, cb)| cb.cmp(ca).then_with(|| va.cmp(vb)));
    sorted.truncate(n);
    sorted
}

/// A CSV field that a spreadsheet would not run as a formula: one that begins with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a `'` in front (OWASP's advice for CSV
/// injection). Header values reach the breakdowns, so any of them may begin so.
pub fn csv_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}").into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{Classified, OTHER, human_click};

    fn bot() -> Classified {
        Classified {
            bot: true,
            values: std::array::from_fn(|_| "x".into()),
        }
    }

    /// A rollup of clicks from `referrers`, visitor `i` for the `i`-th, plus `bots` bot clicks.
    fn rollup(referrers: &[&str], visitors: std::ops::Range<u64>, bots: u64) -> Rollup {
        let mut r = Rollup::default();
        for (referrer, visitor) in referrers.iter().cycle().zip(visitors) {
            // Visitors are keyed hashes, uniform over u64: spread the small numbers likewise.
            r.add(
                &human_click(referrer),
                visitor.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                50,
            );
        }
        for _ in 0..bots {
            r.add(&bot(), 0, 50);
        }
        r
    }

    fn request(granularity: Granularity, from_hour: u32, to_hour: u32) -> Request<'static> {
        Request {
            granularity,
            from_hour,
            to_hour,
            dimensions: &Dimension::ALL,
            top: 10,
            cap: 50,
        }
    }

    #[test]
    fn an_hourly_report_has_every_hour_and_counts_a_visitor_once_a_day() {
        let day = 20_000;
        let h = day * 24;
        // Visitors 0..3 in hour 1 and again (with 3..5) in hour 3 of one day; 0..2 the next day.
        let hourly = vec![
            (h - 1, rollup(&["before.example"], 100..101, 0)),
            (h + 1, rollup(&["a.example"], 0..3, 1)),
            (h + 3, rollup(&["a.example", "b.example"], 0..5, 0)),
            (h + 25, rollup(&["b.example"], 0..2, 2)),
            (h + 30, rollup(&["after.example"], 0..1, 0)),
        ];
        let report = report(&request(Granularity::Hour, h, h + 25), &hourly, &[]);
        assert_eq!(
            report.series.len(),
            26,
            "every hour from the first to the last"
        );
        assert_eq!(
            report.series[0],
            Point {
                at: h,
                ..Point::default()
            }
        );
        assert_eq!(
            report.series[1],
            Point {
                at: h + 1,
                clicks: 4,
                humans: 3,
                bots: 1,
                uniques: 3
            }
        );
        assert_eq!(report.series[3].uniques, 5);
        assert_eq!(report.series[25].clicks, 4);
        assert_eq!((report.clicks, report.humans, report.bots), (13, 10, 3));
        // Day one: visitors 0..5 (0..3 came twice); day two: 0..2 again, counted again.
        assert_eq!(report.uniques, 5 + 2);
        let (dimension, referrers) = &report.breakdown[0];
        assert_eq!(*dimension, Dimension::Referrer);
        assert_eq!(
            referrers,
            &vec![("a.example".into(), 6), ("b.example".into(), 4)],
            "hours outside the period are left out"
        );
        assert_eq!(report.breakdown.len(), 5);
    }

    #[test]
    fn a_daily_report_uses_the_days_the_hours_fall_on() {
        let day = 20_000;
        let daily = vec![
            (day - 1, rollup(&["old.example"], 0..9, 0)),
            (day, rollup(&["a.example"], 0..4, 1)),
            (day + 2, rollup(&["b.example"], 0..3, 0)),
        ];
        // From the last hour of `day` to the first of `day + 2`: three days.
        let report = report(
            &request(Granularity::Day, day * 24 + 23, (day + 2) * 24),
            &[],
            &daily,
        );
        let days: Vec<(u32, u64)> = report.series.iter().map(|p| (p.at, p.clicks)).collect();
        assert_eq!(days, vec![(day, 5), (day + 1, 0), (day + 2, 3)]);
        assert_eq!((report.clicks, report.humans, report.bots), (8, 7, 1));
        assert_eq!(report.uniques, 4 + 3);
    }

    #[test]
    fn the_top_values_are_the_most_clicked_then_by_value_other_among_them() {
        // Out of order, so that the tie rule, not the input's order, puts a before c.
        let values: Vec<(std::sync::Arc<str>, u64)> = vec![
            ("c".into(), 2),
            ("b".into(), 5),
            ("a".into(), 2),
            (OTHER.into(), 7),
            ("z".into(), 0),
        ];
        let shown = |n| {
            top(&values, n)
                .into_iter()
                .map(|(v, c)| format!("{v}={c}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(shown(10), vec!["other=7", "b=5", "a=2", "c=2"]);
        assert_eq!(shown(3), vec!["other=7", "b=5", "a=2"]);
    }

    #[test]
    fn merged_rollups_keep_the_cap() {
        let hourly: Vec<(u32, Rollup)> = (0..4)
            .map(|i| {
                let referrer = format!("r{i}.example");
                (i, rollup(&[referrer.as_str()], 0..u64::from(i) + 1, 0))
            })
            .collect();
        let mut req = request(Granularity::Hour, 0, 3);
        req.cap = 2;
        let report = report(&req, &hourly, &[]);
        let referrers = &report.breakdown[0].1;
        assert_eq!(
            referrers,
            &vec![
                ("r3.example".into(), 4),
                (OTHER.into(), 3),
                ("r2.example".into(), 3)
            ]
        );
    }

    #[test]
    fn csv_fields_that_a_spreadsheet_would_run_are_neutralised() {
        for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv_safe(formula), format!("'{formula}"));
        }
        assert_eq!(csv_safe("example.com"), "example.com");
        assert_eq!(csv_safe("a=b"), "a=b");
    }
}
