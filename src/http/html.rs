//! HTML for people: the page layout, escaping, the static assets compiled into the binary, and
//! the headers every page carries. Pages are plain `format!` over escaped values; no template
//! engine, no build step. Scripts and styles only ever come from `/static/` (the
//! Content-Security-Policy allows nothing inline).

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{HttpResponse, HttpResponseBuilder};
use sha2::{Digest, Sha256};

/// Nothing but kurz's own scripts, styles, images and API; no inline script or style, no
/// framing, no form posting elsewhere.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// A file served under `/static/`, compiled in.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const ASSETS: &[Asset] = &[
    Asset {
        name: "kurz.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("static/kurz.css"),
    },
    Asset {
        name: "home.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/home.js"),
    },
    Asset {
        name: "stats.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/stats.js"),
    },
    Asset {
        name: "manage.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/manage.js"),
    },
];

pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// A digest of every asset: pages link `/static/{name}?v={version}`, so the long cache
/// lifetime of assets never serves a stale file after an upgrade.
fn assets_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.name.as_bytes());
            h.update([0]);
            h.update(a.body.as_bytes());
        }
        hex::encode(&h.finalize()[..6])
    });
    &VERSION
}

pub fn asset_url(name: &str) -> String {
    format!("/static/{name}?v={}", assets_version())
}

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, safe in element content and quoted
/// attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Sets the headers every HTML page carries.
pub fn page_headers(response: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    response
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
        ))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((REFERRER_POLICY, "no-referrer"))
        .insert_header((CACHE_CONTROL, "no-cache"))
}

/// A whole page: `title` (plain text), `main` (HTML, already escaped where it must be) and
/// optionally one script from [`ASSETS`].
pub fn page(status: StatusCode, title: &str, main: &str, script: Option<&str>) -> HttpResponse {
    let head = script.map_or_else(String::new, |name| {
        format!(r#"<script src="{}" defer></script>"#, asset_url(name))
    });
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · kurz</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{css}">
{head}
</head>
<body>
<header class="bar"><a class="brand" href="/">kurz</a></header>
<main>
{main}
</main>
</body>
</html>
"#,
        title = escape(title),
        css = asset_url("kurz.css"),
    );
    page_headers(&mut HttpResponse::build(status)).body(body)
}

/// The page for an error, with the status it would have had as problem+json.
pub fn error_page(status: StatusCode, detail: &str) -> HttpResponse {
    let heading = match status.as_u16() {
        404 => "Nothing here",
        410 => "This link is no longer available",
        401 | 403 => "Not allowed",
        503 => "kurz is busy, try again in a moment",
        500..=599 => "Something went wrong on our side",
        _ => "That did not work",
    };
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let main = format!(
        r#"<section class="card error">
<h1>{heading}</h1>
<p class="detail">{detail}</p>
<p class="code">{title}</p>
<p><a href="/">Shorten a link</a></p>
</section>"#,
        detail = escape(&capitalised(detail)),
        title = escape(&title),
    );
    page(status, &title, &main, None)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_gives_meaning_to() {
        assert_eq!(
            escape(r#"https://x.example/?a=<script>&b="c"'"#),
            "https://x.example/?a=&lt;script&gt;&amp;b=&quot;c&quot;&#39;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn assets_are_found_by_name_and_versioned() {
        assert!(asset("kurz.css").is_some());
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset_url("home.js").starts_with("/static/home.js?v="));
    }

    #[test]
    fn details_start_with_a_capital() {
        assert_eq!(capitalised("no short link"), "No short link");
        assert_eq!(capitalised(""), "");
    }
}
