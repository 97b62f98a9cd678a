//! The classifier against real user agents, referrers and the MaxMind test databases.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::analytics::{Headers, Visits};

/// Human user agents labelled by hand: (User-Agent, device, browser, OS); an in-app browser
/// is named after its app.
const HUMANS: &[(&str, &str, &str, &str)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "macOS",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "Linux",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "desktop",
        "Firefox",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
        "desktop",
        "Firefox",
        "macOS",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "desktop",
        "Firefox",
        "Linux",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        "desktop",
        "Safari",
        "macOS",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "desktop",
        "Edge",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "desktop",
        "Edge",
        "macOS",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
        "desktop",
        "Opera",
        "Windows",
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "ChromeOS",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 YaBrowser/24.10.0.0 Safari/537.36",
        "desktop",
        "Yandex Browser",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Vivaldi/7.0.3495.18",
        "desktop",
        "Vivaldi",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
        "desktop",
        "Internet Explorer",
        "Windows",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "mobile",
        "Safari",
        "iOS",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        "mobile",
        "Chrome",
        "iOS",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
        "mobile",
        "Firefox",
        "iOS",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/131.2903.68 Mobile/15E148 Safari/605.1.15",
        "mobile",
        "Edge",
        "iOS",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        "mobile",
        "Chrome",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
        "mobile",
        "Chrome",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        "mobile",
        "Samsung Internet",
        "Android",
    ),
    (
        "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        "mobile",
        "Firefox",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 OPR/86.0.0.0",
        "mobile",
        "Opera",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0",
        "mobile",
        "Edge",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-A536B; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36",
        "mobile",
        "Chrome",
        "Android",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/489.0.0.39.108;FBBV/668282476;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.6.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/670040396]",
        "mobile",
        "Facebook",
        "iOS",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-G991B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 Instagram 357.0.0.25.101 Android (34/14; 420dpi; 1080x2176; samsung; SM-G991B; o1s; exynos2100; en_US; 664245343)",
        "mobile",
        "Instagram",
        "Android",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 357.0.0.22.103 (iPhone15,3; iOS 18_1; en_US; en; scale=3.00; 1290x2796; 662040920)",
        "mobile",
        "Instagram",
        "iOS",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S911B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/490.0.0.42.108;]",
        "mobile",
        "Facebook",
        "Android",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        "tablet",
        "Safari",
        "iOS",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        "tablet",
        "Chrome",
        "iOS",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "tablet",
        "Chrome",
        "Android",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Safari/537.36",
        "tablet",
        "Samsung Internet",
        "Android",
    ),
    (
        "Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0",
        "tablet",
        "Firefox",
        "Android",
    ),
];

/// Crawlers, link-preview fetchers, monitors, HTTP libraries and headless browsers.
const BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; GPTBot/1.2; +https://openai.com/gptbot",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Slack-ImgProxy (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "WhatsApp/2.23.20.0 A",
    "WhatsApp/2.23.20.0",
    "TelegramBot (like TwitterBot)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 skype-url-preview@microsoft.com",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.116 Safari/537.36 StatusCake",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "axios/1.7.7",
    "okhttp/4.12.0",
];

/// A visit with these headers, as the click recorder keeps them.
fn visit(user_agent: &str, referer: &str, country: &str, ip: &str) -> Visits {
    Visits::of(
        "abc",
        0,
        &Headers {
            user_agent: user_agent.as_bytes(),
            referer: referer.as_bytes(),
            country: country.as_bytes(),
            client_ip: ip.parse().expect("an address"),
        },
    )
}

fn classifier() -> Classifier {
    Classifier::new(Arc::new(Countries::open(None).expect("no database")))
}

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[test]
fn browsers_systems_and_devices_of_real_user_agents() {
    let mut classifier = classifier();
    let mut wrong = Vec::new();
    for (ua, device, browser, os) in HUMANS {
        let c = classifier.classify(&visit(ua, "", "", "192.0.2.1").first());
        let got = (c.bot, &*c.values[2], &*c.values[3], &*c.values[4]);
        if got != (false, *device, *browser, *os) {
            wrong.push(format!("{ua}: want {device}/{browser}/{os}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        HUMANS.len(),
        wrong.join("\n")
    );
}

#[test]
fn crawlers_previewers_monitors_and_tools_are_bots() {
    let mut classifier = classifier();
    let missed: Vec<_> = BOTS
        .iter()
        .filter(|ua| {
            !classifier
                .classify(&visit(ua, "", "", "192.0.2.1").first())
                .bot
        })
        .collect();
    // The one the crate's list misses (npm isbot 5 finds it); WhatsApp's preview fetcher
    // itself sends a platform letter after the version.
    assert_eq!(missed, [&"WhatsApp/2.23.20.0"], "bots taken for humans");
}

#[test]
fn a_click_without_a_user_agent_is_a_bot() {
    let mut classifier = classifier();
    assert!(
        classifier
            .classify(&visit("", "", "", "192.0.2.1").first())
            .bot
    );
    assert!(
        classifier
            .classify(&visit("   ", "", "", "192.0.2.1").first())
            .bot
    );
}

#[test]
fn answers_are_cached_in_bounded_memory() {
    let mut classifier = classifier();
    let first = classifier.classify(&visit(CHROME, "", "", "192.0.2.1").first());
    assert_eq!(classifier.cached_agents(), 1);
    assert_eq!(
        classifier.classify(&visit(CHROME, "", "", "192.0.2.1").first()),
        first
    );
    assert_eq!(
        classifier.cached_agents(),
        1,
        "the same User-Agent is one entry"
    );
    // Twice as many distinct User-Agents as the cache holds.
    for i in 0..2 * CACHED_AGENTS {
        classifier.classify(&visit(&format!("{CHROME} Probe/{i}"), "", "", "192.0.2.1").first());
    }
    assert!(
        classifier.cached_agents() <= CACHED_AGENTS,
        "{} cached",
        classifier.cached_agents()
    );
}

fn referrer(referer: &str) -> Arc<str> {
    classifier()
        .classify(&visit(CHROME, referer, "", "192.0.2.1").first())
        .values[0]
        .clone()
}

#[test]
fn referrers_are_their_hosts_normalised() {
    let cases = [
        ("https://www.example.com/some/page?q=1", "example.com"),
        ("https://WWW.Example.COM:8443/", "example.com"),
        (
            "http://news.ycombinator.com/item?id=1",
            "news.ycombinator.com",
        ),
        ("https://t.co/abc", "t.co"),
        ("https://example.com.", "example.com"),
        (
            "https://user:secret@mail.example.org/inbox",
            "mail.example.org",
        ),
        (
            "android-app://com.Google.Android.gm/",
            "com.google.android.gm",
        ),
        ("https://bücher.example/", "xn--bcher-kva.example"),
        ("http://[2001:db8::1]:8080/x", "[2001:db8::1]"),
        ("http://192.0.2.7/", "192.0.2.7"),
    ];
    for (referer, host) in cases {
        assert_eq!(&*referrer(referer), host, "{referer}");
    }
}

#[test]
fn no_referrer_is_direct_and_garbage_is_unknown() {
    assert_eq!(&*referrer(""), "direct");
    assert_eq!(&*referrer("  "), "direct");
    for garbage in [
        "not a url",
        "/relative/path",
        "example.com",
        "file:///etc/passwd",
        "data:text/html,<script>alert(1)</script>",
        "javascript:alert(1)",
        "http://",
        "http://exa mple.com/",
        "https://<script>/",
        // Words that mean something else in the breakdowns.
        "http://other/",
        "http://direct/",
        "http://unknown/",
    ] {
        let host = referrer(garbage);
        assert_eq!(&*host, "unknown", "{garbage}");
    }
    // Binary: bytes that are not UTF-8 arrive replaced, NULs and controls as sent.
    let binary = Visits::of(
        "abc",
        0,
        &Headers {
            user_agent: CHROME.as_bytes(),
            referer: b"\xff\xfe\x00\x01http://\x80\x81/\x00",
            country: b"",
            client_ip: "192.0.2.1".parse().expect("an address"),
        },
    );
    let c = classifier().classify(&binary.first());
    assert_eq!(&*c.values[0], "unknown");
    assert_ne!(&*c.values[0], crate::analytics::OTHER);
}

#[test]
fn a_long_referrer_cut_to_what_a_visit_keeps_still_gives_its_host() {
    let long = format!("https://www.example.com/{}", "a".repeat(8 * 1024));
    let kept = Visit::header(long.as_bytes());
    assert_eq!(kept.len(), Visit::MAX_HEADER);
    assert_eq!(&*referrer(&long), "example.com");
    // Cut inside a multi-byte character in the path: still the host.
    let long = format!("https://example.org/{}", "é".repeat(4 * 1024));
    assert_eq!(&*referrer(&long), "example.org");
    // Cut inside the host itself: not a host that was never sent (here "analytics.ex").
    let long = format!("https://{}@analytics.example.com/", "u".repeat(490));
    assert_eq!(&*referrer(&long), "unknown");
    let long = format!("https://{}.example.com/", "a".repeat(8 * 1024));
    assert_eq!(&*referrer(&long), "unknown");
}

fn country(header: &str, ip: &str, countries: &Arc<Countries>) -> Arc<str> {
    Classifier::new(Arc::clone(countries))
        .classify(&visit(CHROME, "", header, ip).first())
        .values[1]
        .clone()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn the_proxy_header_names_the_country_when_it_is_two_letters() {
    let none = Arc::new(Countries::open(None).expect("no database"));
    let db = Arc::new(
        Countries::open(Some(&fixture("GeoLite2-Country-Test.mmdb"))).expect("the test db"),
    );
    // 81.2.69.142 is in GB in the test database; the header wins.
    for (header, want) in [("US", "US"), ("de", "DE"), (" fr ", "FR")] {
        assert_eq!(&*country(header, "81.2.69.142", &none), want, "{header}");
        assert_eq!(&*country(header, "81.2.69.142", &db), want, "{header}");
    }
    // CloudFront's and Cloudflare's "unknown" and "Tor": unknown, not the database's guess.
    for header in ["XX", "T1", "xx"] {
        assert_eq!(&*country(header, "81.2.69.142", &db), "unknown", "{header}");
    }
    // Anything else says nothing: the database is asked, else unknown.
    for header in ["", "USA", "1A", "U", "ÜS", "<b>", "\u{0}\u{0}"] {
        assert_eq!(&*country(header, "81.2.69.142", &db), "GB", "{header:?}");
        assert_eq!(
            &*country(header, "81.2.69.142", &none),
            "unknown",
            "{header:?}"
        );
    }
}

#[test]
fn the_country_database_places_addresses() {
    let db = Arc::new(
        Countries::open(Some(&fixture("GeoLite2-Country-Test.mmdb"))).expect("the test db"),
    );
    assert_eq!(&*country("", "81.2.69.142", &db), "GB");
    assert_eq!(&*country("", "89.160.20.128", &db), "SE");
    assert_eq!(&*country("", "2001:218::1", &db), "JP");
    // Addresses it does not hold.
    assert_eq!(&*country("", "127.0.0.1", &db), "unknown");
    assert_eq!(&*country("", "::1", &db), "unknown");
    assert_eq!(
        db.lookup("10.0.0.1".parse::<IpAddr>().expect("an address")),
        None
    );
}

#[test]
fn a_missing_or_malformed_database_is_an_error_saying_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nowhere.mmdb");
    let e = Countries::open(Some(&missing)).err().expect("missing");
    assert!(
        e.contains("cannot read") && e.contains("nowhere.mmdb"),
        "{e}"
    );
    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"this is no database").expect("write");
    let e = Countries::open(Some(&garbage)).err().expect("garbage");
    assert!(
        e.contains("no MaxMind DB file") && e.contains("garbage.mmdb"),
        "{e}"
    );
    // A real database cut in half loses its metadata, which is at its end.
    let bytes = std::fs::read(fixture("GeoLite2-Country-Test.mmdb")).expect("fixture");
    let cut = dir.path().join("cut.mmdb");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = Countries::open(Some(&cut)).err().expect("cut");
    assert!(e.contains("cut.mmdb"), "{e}");
}

#[test]
fn a_failed_reload_keeps_the_database_and_a_good_one_replaces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("country.mmdb");
    std::fs::copy(fixture("GeoLite2-Country-Test.mmdb"), &path).expect("copy");
    let db = Arc::new(Countries::open(Some(&path)).expect("opens"));
    let mut classifier = Classifier::new(Arc::clone(&db));
    let mut at = |ip: &str| {
        classifier
            .classify(&visit(CHROME, "", "", ip).first())
            .values[1]
            .clone()
    };
    assert_eq!(&*at("81.2.69.142"), "GB");
    assert_eq!(&*at(ONLY_IN_GEOIP2.0), "unknown");

    std::fs::write(&path, b"garbage").expect("write");
    let e = db.reload().expect_err("garbage does not load");
    assert!(e.contains("no MaxMind DB file"), "{e}");
    assert_eq!(&*at("81.2.69.142"), "GB", "the old database stays");
    std::fs::remove_file(&path).expect("remove");
    assert!(db.reload().expect_err("missing").contains("cannot read"));
    assert_eq!(&*at("81.2.69.142"), "GB", "the old database stays");

    std::fs::copy(fixture("GeoIP2-Country-Test.mmdb"), &path).expect("copy");
    db.reload().expect("a good database loads");
    assert_eq!(
        &*at(ONLY_IN_GEOIP2.0),
        ONLY_IN_GEOIP2.1,
        "the new database answers"
    );
}

/// An address the GeoIP2 test database places and the GeoLite2 one does not.
const ONLY_IN_GEOIP2: (&str, &str) = ("214.78.120.0", "US");
