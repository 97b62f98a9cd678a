//! Pages for people: the home page with the form that shortens a link, the preview of where a
//! short link goes (`/{code}+`), the page where a key holder or the admin manages links, the
//! admin's click statistics, and the static files they use. The home, manage and statistics
//! pages are shells: their scripts call the same JSON API programs use, with the same limits
//! and the same authentication. Errors here answer an HTML page to a
//! browser ([`ApiError::for_client`]).

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};
use actix_web::{HttpRequest, HttpResponse};

use super::html::{self, escape};
use super::{ApiError, AppState, code_param, lookup, no_such_link, redirect_target, valid_code};
use crate::clock;

/// `GET /`: the form that shortens a link.
pub async fn home() -> HttpResponse {
    html::page(StatusCode::OK, "Shorten a link", HOME, Some("home.js"))
}

const HOME: &str = r#"<h1>Shorten a link</h1>
<form id="shorten" class="card" autocomplete="off">
  <div class="field">
    <label for="url">Long URL</label>
    <input id="url" name="url" type="url" required placeholder="https://example.com/a/long/path" inputmode="url">
  </div>
  <div class="row">
    <div class="field">
      <label for="alias">Custom alias <span class="hint">(optional)</span></label>
      <input id="alias" name="alias" pattern="[A-Za-z0-9_\-]{3,64}" aria-describedby="alias-hint" spellcheck="false">
      <p id="alias-hint" class="hint">3 to 64 letters, digits, - or _</p>
    </div>
    <div class="field">
      <label for="expires">Expires <span class="hint">(optional)</span></label>
      <input id="expires" name="expires" type="datetime-local" aria-describedby="expires-hint">
      <p id="expires-hint" class="hint">In your time zone</p>
    </div>
  </div>
  <div class="field" id="key-field" hidden>
    <label for="api-key">API key</label>
    <input id="api-key" name="api-key" type="password" aria-describedby="key-hint">
    <p id="key-hint" class="hint">This kurz needs an API key to create links. It is kept in this browser tab only.</p>
  </div>
  <button type="submit">Shorten</button>
  <p id="status" class="status" role="status" aria-live="polite"></p>
</form>
<noscript><p class="card">This form needs JavaScript. Programs can use the API: <code>POST /api/v1/links</code>.</p></noscript>
<section id="result" class="card result" hidden aria-labelledby="result-title">
  <h2 id="result-title">Your short link</h2>
  <div class="copy">
    <input id="short-url" readonly aria-label="Short link">
    <button type="button" id="copy">Copy</button>
  </div>
  <p id="copied" class="hint" role="status" aria-live="polite"></p>
  <p class="links"><a id="short-link" href="/">Open</a> <a id="preview-link" href="/">Preview</a> <a id="stats-link" href="/">Clicks (admin)</a></p>
  <img id="qr" class="qr" alt="QR code of the short link" width="200" height="200" src="data:,">
  <p class="hint"><a id="qr-png" href="/" download>Download the QR code (PNG)</a></p>
</section>"#;

/// `GET /admin/links`: a key holder's links (the admin's: everyone's) to search, edit, disable
/// and enable. The key or token is asked for on the page and sent by its script to the links
/// API, which decides what the caller may see and change; this page itself is no secret.
pub async fn manage() -> HttpResponse {
    html::page(StatusCode::OK, "Manage links", MANAGE, Some("manage.js"))
}

const MANAGE: &str = r#"<h1>Manage links</h1>
<form id="token-form" class="card" hidden>
  <div class="field">
    <label for="token">API key or admin token</label>
    <input id="token" name="token" type="password" required autocomplete="current-password" aria-describedby="token-hint">
    <p id="token-hint" class="hint">An API key shows the links it made; the admin token shows every link. Asked once, kept in this browser tab only.</p>
  </div>
  <button type="submit">Show links</button>
</form>
<p id="status" class="status" role="status" aria-live="polite"></p>
<section id="manage" hidden aria-labelledby="links-title">
  <form id="filters" class="card" role="search" aria-label="Filter links">
    <div class="row">
      <div class="field">
        <label for="q">Search</label>
        <input id="q" name="q" type="search" maxlength="200" aria-describedby="q-hint" spellcheck="false">
        <p id="q-hint" class="hint">In the code, destination or title</p>
      </div>
      <div class="field">
        <label for="tag">Tag</label>
        <select id="tag" name="tag" aria-describedby="tag-hint"><option value="">Any tag</option></select>
        <p id="tag-hint" class="hint"></p>
      </div>
      <div class="field">
        <label for="state">State</label>
        <select id="state" name="state">
          <option value="">Any state</option>
          <option value="active">Active</option>
          <option value="expired">Expired</option>
          <option value="disabled">Disabled</option>
        </select>
      </div>
    </div>
    <p class="actions"><button type="submit">Search</button> <button type="button" id="forget" class="secondary">Forget the token</button></p>
  </form>
  <h2 id="links-title">Links</h2>
  <p id="count" class="hint" role="status" aria-live="polite"></p>
  <ul id="links" class="link-list"></ul>
  <p class="actions"><button type="button" id="more" class="secondary" hidden>Load more</button></p>
</section>
<noscript><p class="card">This page needs JavaScript. Programs can use the API: <code>GET /api/v1/links</code>.</p></noscript>"#;

/// `GET /admin/links/{code}`: click statistics, for the admin or the key that owns the link.
/// The token is asked for on the page and sent by its script to the stats API; this page
/// itself is no secret. Every value from a click's headers reaches it through that script as
/// text (`textContent`), never as markup.
pub async fn stats(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let raw_code = code_param(&req).map_err(|e| e.for_client(&req))?;
    let code = escape(raw_code);
    let breakdowns: String = [
        ("country", "Country"),
        ("referrer", "Referrer"),
        ("device", "Device"),
        ("browser", "Browser"),
        ("os", "Operating system"),
    ]
    .iter()
    .map(|(id, name)| {
        format!(
            r#"
    <table id="by-{id}" class="breakdown">
      <caption>{name}</caption>
      <thead><tr><th scope="col">{name}</th><th scope="col">Clicks</th></tr></thead>
      <tbody></tbody>
    </table>"#
        )
    })
    .collect();
    let main = format!(
        r#"<h1>Clicks for <code>{code}</code></h1>
<div id="stats-page" data-code="{code}"></div>
<form id="token-form" class="card" hidden>
  <div class="field">
    <label for="admin-token">Admin token or API key</label>
    <input id="admin-token" name="admin-token" type="password" required autocomplete="current-password" aria-describedby="token-hint">
    <p id="token-hint" class="hint">The admin token, or the API key that made this link (with the <code>stats</code> scope). Asked once, kept in this browser tab only.</p>
  </div>
  <button type="submit">Show clicks</button>
</form>
<p id="status" class="status" role="status" aria-live="polite"></p>
<section id="stats" class="card" hidden aria-labelledby="chart-title">
  <dl class="totals">
    <div><dt>Total clicks</dt><dd id="total">0</dd></div>
    <div><dt>Last click</dt><dd id="last">never</dd></div>
  </dl>
  <h2 id="chart-title">Clicks per day, last 30 days (UTC)</h2>
  <dl class="totals">
    <div><dt>Clicks</dt><dd id="period-clicks">0</dd></div>
    <div><dt>People</dt><dd id="period-humans">0</dd></div>
    <div><dt>Bots</dt><dd id="period-bots">0</dd></div>
    <div><dt>Unique visitors</dt><dd id="period-uniques">0</dd></div>
  </dl>
  <figure class="chart">
    <svg id="chart" role="img" aria-labelledby="chart-title" aria-describedby="chart-summary" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    <div class="axis" aria-hidden="true"><span id="axis-first"></span><span id="axis-last"></span></div>
    <figcaption id="chart-summary"></figcaption>
  </figure>
  <table id="daily">
    <caption>Clicks per day (UTC), days with clicks</caption>
    <thead><tr><th scope="col">Day</th><th scope="col">Clicks</th></tr></thead>
    <tbody></tbody>
  </table>
  <h2 id="breakdown-title">Where people came from and what they used, last 30 days</h2>
  <p id="breakdown-hint" class="hint">Clicks by people (bots left out), the ten most frequent values of each.</p>
  <div id="breakdowns" class="breakdowns" aria-describedby="breakdown-hint">{breakdowns}
  </div>
  <p class="actions"><button type="button" id="refresh">Refresh</button> <button type="button" id="forget" class="secondary">Forget the token</button></p>
</section>
<p><a href="/{code}+">Where this link goes</a></p>"#
    );
    Ok(html::page(
        StatusCode::OK,
        &format!("Clicks for {raw_code}"),
        &main,
        Some("stats.js"),
    ))
}

/// `GET /static/{file}`: the stylesheet and scripts, compiled in. Pages link them with a
/// version in the query, so they can be cached for good.
pub async fn asset(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let name = req.match_info().get("file").unwrap_or_default();
    let Some(asset) = html::asset(name) else {
        return Err(ApiError::NotFound(format!("no static file named '{name}'")).for_client(&req));
    };
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.body))
}

/// `GET /{code}+`: where a short link goes, without going there and without counting a click.
/// Called by the redirect fallback for a segment that ends in `+`.
pub async fn preview(
    state: &AppState,
    req: &HttpRequest,
    code: &str,
) -> Result<HttpResponse, ApiError> {
    preview_page(state, req, code)
        .await
        .map_err(|e| e.for_client(req))
}

/// The page shows when the link was made, which only the store knows, so every preview reads
/// it: each one, found or not, takes one from the client's misses budget (people preview a
/// link now and then; a flood of previews would be a flood of store reads).
async fn preview_page(
    state: &AppState,
    req: &HttpRequest,
    code: &str,
) -> Result<HttpResponse, ApiError> {
    let code = valid_code(code)?;
    lookup::take_miss(state, &state.proxies.rate_key(req)).await?;
    let now = state.links.clock().now_ms();
    // Through the cache first, as a redirect: an unknown code costs no store read.
    redirect_target(code, state.links.resolve(code, now).await?)?;
    let link = state
        .links
        .get(code)
        .await?
        .ok_or_else(|| no_such_link(code))?;

    let parts = UrlParts::of(&link.url);
    let short_url = state.base_url.short_url(code);
    let created = clock::format_rfc3339(link.created_at_ms);
    let expires = link.expires_at_ms.map_or_else(
        || "never".to_owned(),
        |ms| {
            let at = clock::format_rfc3339(ms);
            format!(
                r#"<time datetime="{}">{}</time>"#,
                escape(&at),
                escape(&readable_time(&at))
            )
        },
    );
    let main = format!(
        r#"<section class="card preview">
<h1>Where this link goes</h1>
<p>The short link <code>{short_url}</code> leads to</p>
<p class="destination">{scheme}<strong class="host">{host}</strong>{port}{rest}</p>
<dl class="facts">
  <div><dt>Site</dt><dd><strong>{host}</strong></dd></div>
  <div><dt>Created</dt><dd><time datetime="{created}">{created_readable}</time></dd></div>
  <div><dt>Expires</dt><dd>{expires}</dd></div>
</dl>
<p><a class="button" href="{url}" rel="noopener noreferrer nofollow">Continue to {host}</a></p>
<p class="hint">Opening this page did not follow the link and counted no click.</p>
</section>"#,
        short_url = escape(&short_url),
        scheme = escape(parts.scheme),
        host = escape(&parts.host),
        port = escape(parts.port),
        rest = escape(parts.rest),
        created = escape(&created),
        created_readable = escape(&readable_time(&created)),
        url = escape(&link.url),
    );
    Ok(html::page(
        StatusCode::OK,
        &format!("Where {code} goes"),
        &main,
        None,
    ))
}

/// A long URL cut so that its host can stand out: `https://` `example.com` `:8443` `/path?q`.
/// The host is lower-cased (hosts are case-insensitive, and mixed case hides look-alikes).
#[derive(Debug, PartialEq, Eq)]
struct UrlParts<'a> {
    scheme: &'a str,
    host: String,
    port: &'a str,
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> Self {
        let (scheme, after) = url
            .find("://")
            .map_or(("", url), |i| (&url[..i + 3], &url[i + 3..]));
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let host_end = match authority.rfind(':') {
            Some(i)
                if authority[i + 1..].bytes().all(|b| b.is_ascii_digit())
                    && (authority[..i].ends_with(']') || !authority[..i].contains(':')) =>
            {
                i
            }
            _ => authority.len(),
        };
        let (host, port) = authority.split_at(host_end);
        Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            rest,
        }
    }
}

/// `2026-11-23 08:37 UTC` for an RFC 3339 UTC timestamp.
fn readable_time(rfc3339: &str) -> String {
    let minutes = rfc3339.get(..16).unwrap_or(rfc3339);
    format!("{} UTC", minutes.replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_cut_around_the_host() {
        let parts = UrlParts::of("https://Docs.Example.com:8443/a/b?c=d#e");
        assert_eq!(
            parts,
            UrlParts {
                scheme: "https://",
                host: "docs.example.com".into(),
                port: ":8443",
                rest: "/a/b?c=d#e",
            }
        );
        let parts = UrlParts::of("http://[::1]:8080?x");
        assert_eq!(
            (parts.host.as_str(), parts.port, parts.rest),
            ("[::1]", ":8080", "?x")
        );
        let parts = UrlParts::of("http://example.com");
        assert_eq!(
            (parts.host.as_str(), parts.port, parts.rest),
            ("example.com", "", "")
        );
    }

    #[test]
    fn times_read_as_minutes_in_utc() {
        assert_eq!(
            readable_time("2026-11-23T08:37:49.089Z"),
            "2026-11-23 08:37 UTC"
        );
    }
}
