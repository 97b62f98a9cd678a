//! `Accept` negotiation for errors on paths people open in a browser: a browser that ranks
//! `text/html` above JSON gets an HTML page; API clients (no `Accept`, `*/*`, JSON) keep
//! problem+json. Read only on the error path, never for a redirect that succeeds.

/// Whether `accept` ranks `text/html` strictly above JSON (`application/json` or
/// `application/problem+json`). A tie goes to JSON, so `*/*` keeps problem+json.
pub fn prefers_html(accept: &str) -> bool {
    let html = quality(accept, "text", "html");
    let json =
        quality(accept, "application", "json").max(quality(accept, "application", "problem+json"));
    html > json
}

/// Whether `accept` ranks `text/csv` strictly above JSON: a tie (`*/*`, nothing) keeps JSON.
pub fn prefers_csv(accept: &str) -> bool {
    let csv = quality(accept, "text", "csv");
    let json = quality(accept, "application", "json");
    csv > json
}

/// The weight `accept` gives `kind/subtype`, in thousandths (RFC 9110, section 12.5.1): the
/// most specific matching range decides (`text/html` over `text/*` over `*/*`); 0 when none
/// matches. Ranges that do not parse are ignored.
fn quality(accept: &str, kind: &str, subtype: &str) -> u16 {
    let mut best: Option<(u8, u16)> = None; // (specificity, weight)
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let Some((k, s)) = parts.next().and_then(|media| media.trim().split_once('/')) else {
            continue;
        };
        let (k, s) = (k.trim(), s.trim());
        let specificity = if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) {
            3
        } else if k.eq_ignore_ascii_case(kind) && s == "*" {
            2
        } else if k == "*" && s == "*" {
            1
        } else {
            continue;
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1000), |(_, value)| parse_q(value.trim()));
        let Some(q) = q else { continue };
        // Equally specific ranges: the higher weight wins.
        if best
            .is_none_or(|(spec, weight)| specificity > spec || (specificity == spec && q > weight))
        {
            best = Some((specificity, q));
        }
    }
    best.map_or(0, |(_, q)| q)
}

/// A q-value (`0`, `0.5`, `1.000`: at most three decimals, at most 1) in thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html() {
        for accept in [
            // What browsers send for a page.
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
            "text/html",
            "text/*",
            "text/html;q=0.9, application/json;q=0.5",
            "application/json;q=0.1, TEXT/HTML",
            "text/html;level=1;q=1, */*;q=0.5",
        ] {
            assert!(prefers_html(accept), "{accept}");
        }
    }

    #[test]
    fn api_clients_get_problem_json() {
        for accept in [
            "",
            "*/*",
            "application/json",
            "application/problem+json",
            "application/json, text/html",
            "text/html;q=0.5, application/json",
            "text/html;q=0.5, application/*;q=0.6",
            "text/html;q=0, */*",
            "text/plain",
            // An image request (an <img> of the QR code) ties at */*.
            "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
            "text/html;q=2",
            "text/html;q=abc",
            "garbage",
        ] {
            assert!(!prefers_html(accept), "{accept}");
        }
    }

    #[test]
    fn csv_only_when_asked_above_json() {
        for accept in ["text/csv", "text/csv, application/json;q=0.5", "text/*"] {
            assert!(prefers_csv(accept), "{accept}");
        }
        for accept in [
            "",
            "*/*",
            "application/json",
            "text/csv;q=0.5, application/json",
        ] {
            assert!(!prefers_csv(accept), "{accept}");
        }
    }

    #[test]
    fn the_most_specific_range_decides() {
        assert_eq!(
            quality("text/*;q=0.3, text/html;q=0.7", "text", "html"),
            700
        );
        assert_eq!(quality("text/html;q=0.2, */*", "text", "html"), 200);
        assert_eq!(quality("*/*;q=0.4", "application", "json"), 400);
        assert_eq!(quality("text/plain", "text", "html"), 0);
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.05"), Some(50));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0."), Some(0));
        for bad in ["1.5", "2", "0.1234", "-0.5", "x", "", ".5"] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
    }
}
