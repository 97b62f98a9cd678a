//! The links API: create (`POST /api/v1/links`), read, update and delete
//! (`/api/v1/links/{code}`).
//!
//! Links are scoped to the API key that made them: another key sees a 404, the owner may
//! delete its own, the admin sees and manages all. Every create, edit (disable, enable) and
//! delete is logged on the `kurz::audit` target with the code, the link's owner, the client IP
//! and the URL's host, and, for edits and deletes, who did it (`by`: a key id or `admin`).

use actix_web::http::header::{CONTENT_LENGTH, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};

use super::errors::{RATELIMIT, RATELIMIT_POLICY};
use super::{ApiError, AppState, Caller, code_param, no_such_link};
use crate::base_url::BaseUrl;
use crate::clock;
use crate::code::parse_alias;
use crate::limits::{Bucket, Verdict};
use crate::links::{
    Cursor, LinkEdit, LinkState, ListQuery, NewLink, etag, normalise_tags, normalise_title,
};
use crate::store::{Link, Scope};

const ALLOWED_REDIRECTS: [u16; 4] = [301, 302, 307, 308];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLinkRequest {
    url: String,
    alias: Option<String>,
    expires_at: Option<String>,
    redirect_status: Option<u16>,
    title: Option<String>,
    tags: Option<Vec<String>>,
    forward_query: Option<bool>,
    analytics: Option<bool>,
}

/// A link as the API shows it: every field of [`Link`] under its own name (times as RFC 3339,
/// without the `_ms`), but those [`HIDDEN`] (a test holds the two to each other).
#[derive(Serialize)]
struct LinkView<'a> {
    code: &'a str,
    short_url: String,
    url: &'a str,
    created_at: String,
    expires_at: Option<String>,
    redirect_status: u16,
    title: Option<&'a str>,
    tags: &'a [String],
    forward_query: bool,
    analytics: bool,
    disabled: bool,
    disabled_reason: Option<&'a str>,
}

/// Fields of [`Link`] the API does not show, and why.
#[cfg(test)]
const HIDDEN: &[(&str, &str)] = &[
    ("owner", "a key's fingerprint: the caller knows its own key"),
    ("revision", "sent as the ETag header"),
];

impl<'a> LinkView<'a> {
    fn new(link: &'a Link, base: &BaseUrl) -> Self {
        Self {
            code: &link.code,
            short_url: base.short_url(&link.code),
            url: &link.url,
            created_at: clock::format_rfc3339(link.created_at_ms),
            expires_at: link.expires_at_ms.map(clock::format_rfc3339),
            redirect_status: link.redirect_status,
            title: link.title.as_deref(),
            tags: &link.tags,
            forward_query: link.forward_query,
            analytics: link.analytics,
            disabled: link.disabled.is_some(),
            disabled_reason: link.disabled.as_ref().map(|d| d.reason.as_str()),
        }
    }
}

/// `PATCH /api/v1/links/{code}`: each field present is changed; `null` clears `expires_at`
/// and `title`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLinkRequest {
    url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    redirect_status: Option<u16>,
    #[serde(default, deserialize_with = "present")]
    title: Option<Option<String>>,
    tags: Option<Vec<String>>,
    forward_query: Option<bool>,
    analytics: Option<bool>,
    disabled: Option<bool>,
    reason: Option<String>,
}

/// A field that is present, `null` or not: `Some(None)` for `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Longest reason for disabling a link.
const MAX_REASON_LEN: usize = 500;

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Create, "creating links")?;
    let client = state.proxies.client_label(&req);
    let verdict = take_create_allowance(&state, &caller, &state.proxies.rate_key(&req)).await?;
    let body = read_json_body(&req, payload, &state, state.limits.max_body_bytes).await?;
    let input: CreateLinkRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not a valid link: {e}")))?;
    let created = create_item(&state, &caller, &client, input, idempotency_key(&req)?).await?;
    let view = LinkView::new(&created.link, &state.base_url);
    let mut response = HttpResponse::Created();
    response.insert_header((LOCATION, view.short_url.as_str()));
    response.insert_header((ETAG, etag(&created.link)));
    if created.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    if let Some(verdict) = &verdict {
        add_rate_headers(&mut response, verdict);
    }
    Ok(response.json(view))
}

/// Takes one create from the caller's rate limit (the admin has none): 429 when it is spent.
/// `client` is the client as rate limits count it.
async fn take_create_allowance(
    state: &AppState,
    caller: &Caller,
    client: &str,
) -> Result<Option<Verdict>, ApiError> {
    let verdict = match caller {
        Caller::Admin => None,
        Caller::ApiKey(key) => state.rate.check(Bucket::CreatesPerKey, &key.id).await,
        Caller::Anonymous => state.rate.check(Bucket::CreatesPerIp, client).await,
    };
    match verdict {
        Some(verdict) if !verdict.allowed => Err(ApiError::TooManyRequests {
            what: "creating links",
            verdict,
        }),
        verdict => Ok(verdict),
    }
}

/// Checks one create request's fields and creates the link (the rate limit already taken).
async fn create_item(
    state: &AppState,
    caller: &Caller,
    client: &str,
    input: CreateLinkRequest,
    idempotency_key: Option<String>,
) -> Result<crate::links::Created, ApiError> {
    let checked = state
        .urls
        .check(&input.url)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let alias = input
        .alias
        .as_deref()
        .map(parse_alias)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .map(str::to_owned);
    let now = state.links.clock().now_ms();
    let expires_at_ms = input
        .expires_at
        .as_deref()
        .map(|text| parse_expiry(text, now))
        .transpose()?;
    let redirect_status = input
        .redirect_status
        .map(|s| redirect_status_field(s, caller))
        .transpose()?
        .unwrap_or(302);
    let title = input
        .title
        .as_deref()
        .map(title_field)
        .transpose()?
        .flatten();
    let tags = input.tags.as_deref().map(tags_field).transpose()?;

    let host = checked.host.clone();
    let created = state
        .links
        .create(NewLink {
            link: Link {
                code: alias.unwrap_or_default(),
                url: checked.url,
                expires_at_ms,
                redirect_status,
                title,
                tags: tags.unwrap_or_default(),
                forward_query: input.forward_query.unwrap_or(true),
                analytics: input.analytics.unwrap_or(true),
                owner: caller.owner(),
                ..Link::default()
            },
            host: checked.host,
            idempotency_key,
        })
        .await?;
    if !created.replayed {
        tracing::info!(
            target: "kurz::audit",
            event = "link_created",
            code = %created.link.code,
            owner = created.link.owner.as_deref().unwrap_or("anonymous"),
            client_ip = %client,
            host = %host,
            "link created"
        );
    }
    Ok(created)
}

/// Most links one bulk create holds.
pub const MAX_BULK: usize = 1_000;
/// Links of one bulk create in flight at once (each a store write).
const BULK_CONCURRENCY: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    links: Vec<serde_json::Value>,
}

/// One item's outcome: the link, or the problem it met.
#[derive(Serialize)]
struct BulkResult<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<LinkView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<super::errors::Problem>,
}

/// `POST /api/v1/links/bulk`: up to [`MAX_BULK`] links, one result per item in the order
/// given. Each item is checked and created as `POST /api/v1/links` would, counts against the
/// rate limit as one create, and is idempotent under the request's `Idempotency-Key` (item
/// `i` under `KEY#i`): a retried bulk request gets the same links back.
pub async fn bulk_create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Create, "creating links")?;
    let client = state.proxies.client_label(&req);
    let key = idempotency_key(&req)?;
    let body = read_json_body(&req, payload, &state, state.limits.max_bulk_body_bytes).await?;
    let input: BulkRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body must be {{\"links\": [link, ...]}}, each link as POST /api/v1/links takes it: {e}"
        ))
    })?;
    if input.links.is_empty() || input.links.len() > MAX_BULK {
        return Err(ApiError::BadRequest(format!(
            "links must hold 1 to {MAX_BULK} links; got {}",
            input.links.len()
        )));
    }
    let rate_key = state.proxies.rate_key(&req);
    let (state_ref, caller_ref, client_ref) = (&state, &caller, client.as_str());
    let rate_key = rate_key.as_str();
    // Items run concurrently, so an alias given twice would go to whichever ran first: the
    // first in the request takes it, the others are refused here.
    let mut first_with_alias: std::collections::HashMap<String, usize> = Default::default();
    let items: Vec<(usize, serde_json::Value, Option<usize>)> = input
        .links
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let alias = item
                .get("alias")
                .and_then(|a| a.as_str())
                .map(str::to_owned);
            let earlier = alias.map(|alias| *first_with_alias.entry(alias).or_insert(i));
            (i, item, earlier.filter(|&first| first != i))
        })
        .collect();
    let outcomes: Vec<Result<crate::links::Created, ApiError>> = futures_util::stream::iter(items)
        .map(|(i, item, earlier)| {
            let key = key.as_ref().map(|k| format!("{k}#{i}"));
            async move {
                if let Some(first) = earlier {
                    return Err(ApiError::Conflict(format!(
                        "links[{i}] asks for the alias links[{first}] of this request asks for"
                    )));
                }
                let item: CreateLinkRequest = serde_json::from_value(item).map_err(|e| {
                    ApiError::BadRequest(format!("links[{i}] is not a valid link: {e}"))
                })?;
                take_create_allowance(state_ref, caller_ref, rate_key).await?;
                create_item(state_ref, caller_ref, client_ref, item, key).await
            }
        })
        .buffered(BULK_CONCURRENCY)
        .collect()
        .await;
    let created = outcomes.iter().filter(|o| o.is_ok()).count();
    let results: Vec<BulkResult> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(created) => BulkResult {
                status: 201,
                link: Some(LinkView::new(&created.link, &state.base_url)),
                problem: None,
            },
            Err(error) => BulkResult {
                status: error.status_code().as_u16(),
                link: None,
                problem: Some(error.problem()),
            },
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "created": created,
        "failed": results.len() - created,
        "results": results,
    })))
}

fn add_rate_headers(response: &mut actix_web::HttpResponseBuilder, verdict: &Verdict) {
    response.insert_header((RATELIMIT_POLICY, verdict.policy_header()));
    response.insert_header((RATELIMIT, verdict.limit_header()));
}

pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Read, "reading a link")?;
    let code = code_param(&req)?;
    // Open to anyone when no keys are set: each store read spends the misses budget.
    if matches!(caller, Caller::Anonymous) {
        super::lookup::take_miss(&state, &state.proxies.rate_key(&req)).await?;
    }
    let link = state
        .links
        .get(code)
        .await?
        .filter(|link| caller.may_read(link))
        .ok_or_else(|| no_such_link(code))?;
    let tag = etag(&link);
    let unchanged = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if unchanged {
        return Ok(HttpResponse::NotModified()
            .insert_header((ETAG, tag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((ETAG, tag))
        .json(LinkView::new(&link, &state.base_url)))
}

pub async fn delete(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Delete, "deleting a link")?;
    if !caller.is_keyed() {
        return Err(ApiError::Unauthorized(
            "deleting a link needs the admin token or the API key that created it".into(),
        ));
    }
    let code = code_param(&req)?;
    // Another key's link is "no such link" to this key, whether or not it exists.
    if caller != Caller::Admin {
        state
            .links
            .get(code)
            .await?
            .filter(|link| caller.may_delete(link))
            .ok_or_else(|| no_such_link(code))?;
    }
    if let Some(link) = state.links.delete(code).await? {
        tracing::info!(
            target: "kurz::audit",
            event = "link_deleted",
            code,
            by = caller.owner().as_deref().unwrap_or("anonymous"),
            owner = link.owner.as_deref().unwrap_or("anonymous"),
            client_ip = %state.proxies.client_label(&req),
            host = %url_host(&link.url),
            "link deleted"
        );
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(no_such_link(code))
    }
}

/// Edits a link (its owner, or the admin): destination, expiry, redirect status, title,
/// tags, query forwarding, analytics, disabled. With `If-Match`, only while the link is that version
/// (412 otherwise). A link the admin disabled stays disabled until the admin enables it.
pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Edit, "editing a link")?;
    if !caller.is_keyed() {
        return Err(ApiError::Unauthorized(
            "editing a link needs the admin token or the API key that created it".into(),
        ));
    }
    let code = code_param(&req)?;
    let body = read_json_body(&req, payload, &state, state.limits.max_body_bytes).await?;
    let input: UpdateLinkRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body must be an object of the fields to change (url, expires_at, \
             redirect_status, title, tags, forward_query, analytics, disabled, reason): {e}"
        ))
    })?;
    let if_match = match req.headers().get(IF_MATCH) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::BadRequest(
                "If-Match must be an entity tag such as \"1700000000000.3\"".into(),
            )
        })?),
    };
    let edit = parse_edit(input, &state, &caller)?;
    let by_admin = caller == Caller::Admin;
    let link = state
        .links
        .edit(
            code,
            if_match,
            by_admin,
            |link| caller.may_delete(link),
            &edit,
        )
        .await
        .map_err(|e| match e {
            crate::links::EditError::Missing => no_such_link(code),
            e => e.into(),
        })?;
    tracing::info!(
        target: "kurz::audit",
        event = match &edit.disabled {
            Some(Some(_)) => "link_disabled",
            Some(None) => "link_enabled",
            None => "link_edited",
        },
        code,
        by = caller.owner().as_deref().unwrap_or("anonymous"),
        owner = link.owner.as_deref().unwrap_or("anonymous"),
        client_ip = %state.proxies.client_label(&req),
        host = %url_host(&link.url),
        revision = link.revision,
        url_changed = edit.url.is_some(),
        "link updated"
    );
    Ok(HttpResponse::Ok()
        .insert_header((ETAG, etag(&link)))
        .json(LinkView::new(&link, &state.base_url)))
}

/// The host of a stored (normalised) URL, for audit lines.
fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// An edit request checked exactly as a create's fields are.
fn parse_edit(
    input: UpdateLinkRequest,
    state: &AppState,
    caller: &Caller,
) -> Result<LinkEdit, ApiError> {
    if input
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_LEN)
    {
        return Err(ApiError::BadRequest(format!(
            "reason must be at most {MAX_REASON_LEN} characters"
        )));
    }
    let now = state.links.clock().now_ms();
    let edit = LinkEdit {
        url: input
            .url
            .as_deref()
            .map(|url| state.urls.check(url))
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        expires_at_ms: input
            .expires_at
            .map(|at| {
                at.as_deref()
                    .map(|text| parse_expiry(text, now))
                    .transpose()
            })
            .transpose()?,
        redirect_status: input
            .redirect_status
            .map(|s| redirect_status_field(s, caller))
            .transpose()?,
        title: input
            .title
            .map(|t| {
                t.as_deref()
                    .map(title_field)
                    .transpose()
                    .map(Option::flatten)
            })
            .transpose()?,
        tags: input.tags.as_deref().map(tags_field).transpose()?,
        forward_query: input.forward_query,
        analytics: input.analytics,
        disabled: input
            .disabled
            .map(|disabled| disabled.then(|| input.reason.unwrap_or_default())),
    };
    let nothing = edit.url.is_none()
        && edit.expires_at_ms.is_none()
        && edit.redirect_status.is_none()
        && edit.title.is_none()
        && edit.tags.is_none()
        && edit.forward_query.is_none()
        && edit.analytics.is_none()
        && edit.disabled.is_none();
    if nothing {
        return Err(ApiError::BadRequest(
            "the request body names no field to change".into(),
        ));
    }
    Ok(edit)
}

fn redirect_status_field(status: u16, caller: &Caller) -> Result<u16, ApiError> {
    match status {
        301 | 308 if !caller.is_keyed() => Err(ApiError::Forbidden(format!(
            "redirect_status {status} (permanent: browsers keep it) needs an API key; use 302 or 307"
        ))),
        s if ALLOWED_REDIRECTS.contains(&s) => Ok(s),
        s => Err(ApiError::BadRequest(format!(
            "redirect_status must be one of 301, 302, 307, 308; got {s}"
        ))),
    }
}

fn title_field(title: &str) -> Result<Option<String>, ApiError> {
    normalise_title(title).map_err(ApiError::BadRequest)
}

fn tags_field(tags: &[String]) -> Result<Vec<String>, ApiError> {
    normalise_tags(tags).map_err(ApiError::BadRequest)
}

/// Most links one page of `GET /api/v1/links` holds, and how many when `limit` is not given.
const MAX_PAGE: usize = 1_000;
const DEFAULT_PAGE: usize = 50;
/// Longest `q`, in characters.
const MAX_QUERY_TEXT: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
    tag: Option<String>,
    q: Option<String>,
    created_before: Option<String>,
    created_after: Option<String>,
    state: Option<String>,
}

#[derive(Serialize)]
struct PageView<'a> {
    links: Vec<LinkView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `GET /api/v1/links`: the caller's links (the admin's: everyone's), newest first.
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Read, "listing links")?;
    let scopes = list_scopes(&caller, "listing links")?;
    let params: ListParams = query_params(&req)?;
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE}; got '{text}'"
                ))
            })?,
    };
    let cursor = params
        .cursor
        .as_deref()
        .map(|text| {
            Cursor::decode(text).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor is not one this service gave out (changed or cut?); pass next_cursor \
                     from the previous page as it is"
                        .into(),
                )
            })
        })
        .transpose()?;
    let tag = params
        .tag
        .as_deref()
        .map(|t| crate::links::normalise_tag(t).map_err(ApiError::BadRequest))
        .transpose()?;
    if params
        .q
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_TEXT)
    {
        return Err(ApiError::BadRequest(format!(
            "q must be at most {MAX_QUERY_TEXT} characters"
        )));
    }
    let time = |name: &str, text: Option<&str>| {
        text.map(|t| {
            clock::parse_rfc3339(t).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{name} must be an RFC 3339 timestamp such as 2030-01-31T12:00:00Z; got '{t}'"
                ))
            })
        })
        .transpose()
    };
    let link_state = params
        .state
        .as_deref()
        .map(|s| {
            LinkState::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "state must be one of {}; got '{s}'",
                    LinkState::NAMES.join(", ")
                ))
            })
        })
        .transpose()?;
    let query = ListQuery {
        scopes,
        tag,
        text: params.q.filter(|q| !q.is_empty()),
        created_before_ms: time("created_before", params.created_before.as_deref())?,
        created_after_ms: time("created_after", params.created_after.as_deref())?,
        state: link_state,
        limit,
        cursor,
    };
    let page = state.links.list(&query).await?;
    Ok(HttpResponse::Ok().json(PageView {
        links: page
            .links
            .iter()
            .map(|link| LinkView::new(link, &state.base_url))
            .collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// `GET /api/v1/links/export`: the caller's links (the admin's: everyone's) as NDJSON, every
/// field with click totals and daily counts, streamed a page at a time. A store failure part
/// way ends the stream without its last chunk, so the client sees it is incomplete.
pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Read, "exporting links")?;
    let scopes = list_scopes(&caller, "exporting links")?;
    let _: NoParams = query_params(&req)?;
    let lines = state.links.export(scopes).map(|page| {
        page.map(web::Bytes::from).map_err(|e| {
            tracing::warn!(error = %e, "export stopped part way: the store failed");
            ApiError::from(e)
        })
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Serialize)]
struct TagView<'a> {
    tag: &'a str,
    links: u64,
}

/// `GET /api/v1/tags`: the tags on the caller's links, with how many links carry each.
pub async fn tags(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Read, "listing tags")?;
    let scopes = list_scopes(&caller, "listing tags")?;
    let _: NoParams = query_params(&req)?;
    let counts = state.links.tags(&scopes).await?;
    let tags: Vec<TagView> = counts
        .tags
        .iter()
        .map(|t| TagView {
            tag: &t.tag,
            links: t.links,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tags": tags, "complete": counts.complete })))
}

/// Whose links `caller` may `what` (a list, an export, tag counts): 401 without a credential.
fn list_scopes(caller: &Caller, what: &str) -> Result<Vec<crate::store::ListScope>, ApiError> {
    caller.list_scopes().ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "{what} needs an API key (its own links) or the admin token (all)"
        ))
    })
}

fn query_params<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("query parameters: {e}")))
}

/// The body of a JSON request: 415 for another content type, 413 past `limits.max_body_bytes`,
/// 408 when it takes longer than `server.body_timeout_ms` to arrive, 400 when it cannot be read.
pub(super) async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let deadline = state.body_timeout;
    let content_type = req.content_type();
    let essence = content_type.trim().to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got '{}'",
            if content_type.is_empty() {
                "nothing"
            } else {
                content_type
            }
        )));
    }
    let too_large =
        || ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(deadline, payload.to_bytes_limited(limit));
    match read.await {
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            deadline.as_secs_f64()
        ))),
        Ok(Ok(Ok(bytes))) => Ok(bytes),
        Ok(Ok(Err(e))) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
        Ok(Err(_)) => Err(too_large()),
    }
}

/// An RFC 3339 expiry, which must be after `now_ms`.
fn parse_expiry(text: &str, now_ms: i64) -> Result<i64, ApiError> {
    let at = clock::parse_rfc3339(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "expires_at must be an RFC 3339 timestamp such as 2030-01-31T12:00:00Z; got '{text}'"
        ))
    })?;
    if at <= now_ms {
        return Err(ApiError::BadRequest(format!(
            "expires_at must be in the future; got '{text}'"
        )));
    }
    Ok(at)
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) => Ok(Some(key.to_owned())),
        _ => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_shows_every_field_of_a_link_but_the_hidden_ones() {
        let link = Link {
            code: "abc".into(),
            url: "https://example.com/".into(),
            ..Link::default()
        };
        let base = BaseUrl::parse("https://s.example").expect("a base URL");
        let view = serde_json::to_value(LinkView::new(&link, &base)).expect("json");
        let stored = serde_json::to_value(&link).expect("json");
        let (Some(view), Some(stored)) = (view.as_object(), stored.as_object()) else {
            panic!("objects")
        };
        for field in stored.keys() {
            let shown = view.contains_key(field)
                || view.contains_key(field.trim_end_matches("_ms"))
                || HIDDEN.iter().any(|(hidden, _)| hidden == field);
            assert!(
                shown,
                "Link's field '{field}' is neither in the API's view nor HIDDEN"
            );
        }
    }
}
