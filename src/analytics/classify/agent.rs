//! The User-Agent: bot or not, device class, browser family, OS family.
//!
//! Browser and OS families come from the uap-core rules (`uap-core-regexes.json`, uap-core's
//! `regexes.yaml` as JSON so kurz's own `serde_json` reads it) through the `ua-parser` crate.
//! Only its user-agent and OS rules are built: its device rules (628 of the 1,175) would add
//! 13 MiB and 5 µs a parse to say "iPad" or "Spider", which the device rule below and the bot
//! list say as well. Bots are the `isbot` crate's patterns. Both are built once per process, on
//! the first click classified, so an instance that records none pays nothing.

use std::sync::LazyLock;

use ua_parser::{os, user_agent};

/// The uap-core rules, version and source in `README.md` beside this file.
const UAP_CORE: &str = include_str!("uap-core-regexes.json");

/// Longest browser or OS family kept; a longer one (a generic rule's capture) is `Other`.
const MAX_FAMILY: usize = 32;

/// What a User-Agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub bot: bool,
    pub device: &'static str,
    pub browser: std::sync::Arc<str>,
    pub os: std::sync::Arc<str>,
}

struct Rules {
    browsers: user_agent::Extractor<'static>,
    systems: os::Extractor<'static>,
}

static RULES: LazyLock<Option<Rules>> = LazyLock::new(|| {
    let built = serde_json::from_str::<ua_parser::Regexes<'static>>(UAP_CORE)
        .map_err(|e| e.to_string())
        .and_then(|regexes| {
            let browsers = user_agent::Builder::new()
                .push_all(regexes.user_agent_parsers)
                .map_err(|e| format!("{e:?}"))?
                .build()
                .map_err(|e| format!("{e:?}"))?;
            let systems = os::Builder::new()
                .push_all(regexes.os_parsers)
                .map_err(|e| format!("{e:?}"))?
                .build()
                .map_err(|e| format!("{e:?}"))?;
            Ok(Rules { browsers, systems })
        });
    match built {
        Ok(rules) => Some(rules),
        Err(error) => {
            // Tested not to happen (`the_uap_core_rules_build`); clicks then count browsers
            // and systems as `Other` rather than stop.
            tracing::error!(%error, "the user-agent rules do not build");
            None
        }
    }
});

static BOTS: LazyLock<isbot::Bots> = LazyLock::new(isbot::Bots::default);

/// Classifies one User-Agent (uncached: [`super::Classifier`] caches the answers).
pub fn parse(ua: &str) -> Agent {
    // No browser sends no User-Agent: an empty one is a script or a tool, counted as a bot.
    if ua.trim().is_empty() || BOTS.is_bot(ua) {
        return Agent {
            bot: true,
            device: "other",
            browser: "Other".into(),
            os: "Other".into(),
        };
    }
    let (browser, os) = match &*RULES {
        Some(rules) => (
            rules
                .browsers
                .extract(ua)
                .map_or("Other".into(), |v| browser_family(&v.family)),
            rules
                .systems
                .extract(ua)
                .map_or("Other".into(), |v| os_family(&v.os)),
        ),
        None => ("Other".into(), "Other".into()),
    };
    Agent {
        bot: false,
        device: device(ua, &os),
        browser: browser.into(),
        os: os.into(),
    }
}

/// The device class from the User-Agent's tokens (uap-core's device rules name models, not
/// classes): an iPad, a `Tablet`, a Kindle, or an Android without `Mobile` (Android's own
/// convention for tablets) is a tablet; an iPhone, an iPod, or any other `Mobile` is a phone;
/// a desktop system is a desktop. An iPad asking for the desktop site sends a Mac's
/// User-Agent and counts as a desktop: nothing in the header tells them apart.
fn device(ua: &str, os: &str) -> &'static str {
    let android = ua.contains("Android");
    if ua.contains("iPad")
        || ua.contains("Tablet")
        || ua.contains("Kindle")
        || ua.contains("Silk/")
        || (android && !ua.contains("Mobile"))
    {
        "tablet"
    } else if android
        || ua.contains("iPhone")
        || ua.contains("iPod")
        || ua.contains("Mobile")
        || ua.contains("Opera Mini")
        || matches!(os, "iOS" | "Windows Phone" | "KaiOS")
    {
        "mobile"
    } else if matches!(os, "Windows" | "macOS" | "Linux" | "ChromeOS") {
        "desktop"
    } else {
        "other"
    }
}

/// One name per browser: uap-core's phone and WebView variants fold into their family.
fn browser_family(family: &str) -> Box<str> {
    let folded = match family {
        "Mobile Safari" | "Mobile Safari UI/WKWebView" => "Safari",
        "Chrome Mobile" | "Chrome Mobile iOS" | "Chrome Mobile WebView" | "Chromium" => "Chrome",
        "Firefox Mobile" | "Firefox iOS" => "Firefox",
        "Edge Mobile" => "Edge",
        "Opera Mobile" => "Opera",
        "IE" | "IE Mobile" => "Internet Explorer",
        other => other,
    };
    tidy(folded)
}

/// One name per system: `Mac OS X` is macOS, Linux distributions are Linux.
fn os_family(family: &str) -> Box<str> {
    let folded = match family {
        "Mac OS X" => "macOS",
        "Chrome OS" => "ChromeOS",
        "Ubuntu" | "Kubuntu" | "Debian" | "Fedora" | "Red Hat" | "SUSE" | "openSUSE" | "Mint"
        | "Arch Linux" | "CentOS" | "Gentoo" | "Slackware" | "Mandriva" => "Linux",
        other => other,
    };
    tidy(folded)
}

/// A family as recorded: short and plain (generic uap-core rules capture product names from
/// the header), else `Other`.
fn tidy(family: &str) -> Box<str> {
    let plain = family
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_'));
    if family.is_empty() || family.len() > MAX_FAMILY || !plain {
        "Other".into()
    } else {
        family.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uap_core_rules_build() {
        assert!(RULES.is_some());
    }

    #[test]
    fn families_from_generic_rules_stay_short_and_plain() {
        assert_eq!(&*tidy("Chrome"), "Chrome");
        assert_eq!(&*tidy("Samsung Internet"), "Samsung Internet");
        assert_eq!(&*tidy("<script>"), "Other");
        assert_eq!(&*tidy(&"A".repeat(33)), "Other");
        assert_eq!(&*tidy(""), "Other");
    }
}
