//! HTTP handlers, the route table, and request observation. Handlers stay thin: parse and check
//! the request, call [`crate::links::LinkService`], shape the response. Pages for people
//! ([`pages`], [`html`]) sit beside the API they call.

mod accept;
mod api_keys;
mod auth;
mod client;
mod errors;
mod health;
mod html;
mod links;
mod lookup;
mod observe;
mod pages;
mod qr;
mod redirect;
mod stats;

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpRequest, web};

pub use auth::{Auth, Caller, KeyId};
pub use client::TrustedProxies;
pub use errors::ApiError;
pub use health::PublicMetrics;
pub use observe::observe;

use crate::base_url::BaseUrl;
use crate::config::LimitSettings;
use crate::health::Health;
use crate::limits::RateLimits;
use crate::links::{LinkService, UrlPolicy};
use crate::telemetry::{Metrics, RequestIds, Tracer};

/// Everything a handler needs, built once at start-up.
pub struct AppState {
    pub links: LinkService,
    pub auth: Auth,
    pub base_url: BaseUrl,
    /// The rules long URLs are held to.
    pub urls: UrlPolicy,
    pub limits: LimitSettings,
    pub rate: RateLimits,
    pub proxies: TrustedProxies,
    /// Longest a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// How long browsers may keep a permanent redirect, and its ready header value.
    pub browser_max_age: std::time::Duration,
    pub permanent_cache_control: actix_web::http::header::HeaderValue,
    pub metrics: Arc<Metrics>,
    /// Who `/metrics` on the public listener is for.
    pub public_metrics: PublicMetrics,
    pub request_ids: RequestIds,
    /// Set when traces are on (`telemetry.otlp_endpoint`).
    pub tracer: Option<Arc<Tracer>>,
    pub health: Arc<Health>,
    pub analytics: AnalyticsCapture,
    pub reports: Reports,
}

/// What the stats API reads rollups with (see [`crate::analytics::report`]).
#[derive(Debug, Clone, Copy)]
pub struct Reports {
    /// `analytics.max_values_per_dimension`: values kept when rollups are merged.
    pub max_values_per_dimension: usize,
    /// `analytics.hourly_retention_days`: how far back an hourly report may start.
    pub hourly_retention_days: u32,
}

/// What a redirect hands over for a click's details (see [`crate::analytics`]).
#[derive(Debug, Clone, Default)]
pub struct AnalyticsCapture {
    /// `analytics.enabled`.
    pub enabled: bool,
    /// `analytics.country_header`, believed from trusted proxies only.
    pub country_header: Option<actix_web::http::header::HeaderName>,
}

/// Declares [`Endpoint`]: one line per endpoint, `Variant => "metric label", [METHODS] "path",
/// handler;`. The metric label, the methods, the path and the handler live only here.
macro_rules! endpoints {
    ($( $variant:ident => $label:literal, [$($method:ident),+] $path:literal, $handler:path; )*) => {
        /// Every endpoint kurz serves. [`configure`] registers exactly these, `/metrics` labels
        /// by them, the tests hold `openapi.yaml` to them, and the first segment of every path
        /// is a reserved alias (a test checks it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Endpoint { $($variant,)* }

        impl Endpoint {
            pub const ALL: &[Endpoint] = &[$(Endpoint::$variant,)*];

            /// The metric label of each endpoint in [`ALL`](Self::ALL)'s order, then one for
            /// requests no endpoint matched.
            pub const METRIC_LABELS: &[&str] = &[$($label,)* "unmatched"];

            pub fn label(self) -> &'static str {
                match self { $(Endpoint::$variant => $label,)* }
            }

            pub fn methods(self) -> &'static [Method] {
                match self { $(Endpoint::$variant => &[$(Method::$method),+],)* }
            }

            pub fn path(self) -> &'static str {
                match self { $(Endpoint::$variant => $path,)* }
            }

            fn route(self, method: Method) -> actix_web::Route {
                match self { $(Endpoint::$variant => web::method(method).to($handler),)* }
            }
        }
    };
}

endpoints! {
    Healthz => "healthz", [GET] "/healthz", health::live;
    Readyz => "readyz", [GET] "/readyz", health::ready;
    Metrics => "metrics", [GET] "/metrics", health::metrics;
    CreateLink => "create_link", [POST] "/api/v1/links", links::create;
    ListLinks => "list_links", [GET] "/api/v1/links", links::list;
    // Before `{code}`: a path is matched against the resources in this order.
    BulkCreate => "bulk_create", [POST] "/api/v1/links/bulk", links::bulk_create;
    ExportLinks => "export_links", [GET] "/api/v1/links/export", links::export;
    ListTags => "list_tags", [GET] "/api/v1/tags", links::tags;
    CreateKey => "create_key", [POST] "/api/v1/keys", api_keys::create;
    ListKeys => "list_keys", [GET] "/api/v1/keys", api_keys::list;
    GetKey => "get_key", [GET] "/api/v1/keys/{id}", api_keys::get;
    RevokeKey => "revoke_key", [DELETE] "/api/v1/keys/{id}", api_keys::revoke;
    RotateKey => "rotate_key", [POST] "/api/v1/keys/{id}/rotate", api_keys::rotate;
    GetLink => "get_link", [GET] "/api/v1/links/{code}", links::get;
    DeleteLink => "delete_link", [DELETE] "/api/v1/links/{code}", links::delete;
    UpdateLink => "update_link", [PATCH] "/api/v1/links/{code}", links::update;
    LinkStats => "link_stats", [GET] "/api/v1/links/{code}/stats", stats::stats;
    TopLinks => "top_links", [GET] "/api/v1/stats", stats::top_links;
    LinkQr => "link_qr", [GET] "/api/v1/links/{code}/qr", qr::qr;
    Home => "home", [GET] "/", pages::home;
    ManagePage => "manage_page", [GET] "/admin/links", pages::manage;
    StatsPage => "stats_page", [GET] "/admin/links/{code}", pages::stats;
    Static => "static", [GET] "/static/{file}", pages::asset;
    // Not patterns: the fallback for any other single path segment, see `configure`.
    Redirect => "redirect", [GET, HEAD] "/{code}", redirect::fallback;
    Preview => "preview", [GET, HEAD] "/{code}+", redirect::fallback;
}

impl Endpoint {
    /// Endpoints served by the fallback rather than a registered resource (see `configure`).
    const FALLBACK: &[Endpoint] = &[Endpoint::Redirect, Endpoint::Preview];

    /// The endpoint serving `method` on the resource registered as `path`.
    pub fn find(path: &str, method: &Method) -> Option<Endpoint> {
        Self::ALL
            .iter()
            .copied()
            .find(|e| e.path() == path && e.methods().contains(method))
    }

    /// Index of this endpoint's metric label in [`METRIC_LABELS`](Self::METRIC_LABELS).
    pub fn metric_index(endpoint: Option<Endpoint>) -> usize {
        endpoint.map_or(Self::ALL.len(), |e| e as usize)
    }

    /// The methods served on `path` by any endpoint.
    fn methods_on(path: &str) -> Vec<Method> {
        Self::ALL
            .iter()
            .filter(|e| e.path() == path)
            .flat_map(|e| e.methods().iter().cloned())
            .collect()
    }
}

/// The links API's common prefix.
const API_PREFIX: &str = "/api/v1/links";

/// Prefixes whose routes sit in a scope of their own, matched by the prefix first, so a
/// redirect never pays for trying their patterns: a string comparison per scope, no more.
const SCOPES: &[&str] = &[API_PREFIX, "/admin", "/static"];

/// Registers every [`Endpoint`], one resource per path (named by its path, which is how the
/// request observer finds the endpoint); other methods on a known path answer 405 with
/// `Allow`.
///
/// `/{code}` and `/{code}+` are not patterns here but the fallback for whatever the table does
/// not match ([`redirect::fallback`]): the redirect, the hot path, then costs no pattern
/// matching, and the handful of fixed paths and scope prefixes are compared first.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut in_scopes: Vec<Vec<actix_web::Resource>> = SCOPES.iter().map(|_| Vec::new()).collect();
    let mut registered: Vec<&str> = Vec::new();
    for endpoint in Endpoint::ALL {
        let path = endpoint.path();
        if Endpoint::FALLBACK.contains(endpoint) || registered.contains(&path) {
            continue;
        }
        registered.push(path);
        let allow: String = Endpoint::methods_on(path)
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let scope = SCOPES.iter().position(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|p| p.starts_with('/'))
        });
        let in_scope = scope.map_or(path, |i| &path[SCOPES[i].len()..]);
        let mut resource = web::resource(in_scope).name(path);
        for same_path in Endpoint::ALL.iter().filter(|e| e.path() == path) {
            for method in same_path.methods() {
                resource = resource.route(same_path.route(method.clone()));
            }
        }
        resource = resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { Err::<actix_web::HttpResponse, _>(method_not_allowed(&req, allow)) }
        }));
        match scope {
            Some(i) => in_scopes[i].push(resource),
            None => {
                cfg.service(resource);
            }
        }
    }
    for (prefix, resources) in SCOPES.iter().zip(in_scopes) {
        let unmatched = if *prefix == API_PREFIX {
            web::to(not_found)
        } else {
            web::to(page_not_found)
        };
        let scope = web::scope(prefix).default_service(unmatched);
        cfg.service(resources.into_iter().fold(scope, actix_web::Scope::service));
    }
    cfg.default_service(web::to(redirect::fallback));
}

/// The admin listener (`server.admin_bind`): `/metrics` and `/healthz`, nothing else.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.route(
        Endpoint::Metrics.path(),
        web::get().to(|state: web::Data<AppState>| async move { health::render_metrics(&state) }),
    )
    .route(Endpoint::Healthz.path(), web::get().to(health::live))
    .default_service(web::to(not_found));
}

/// The methods `/{code}` answers, for `Allow`.
const REDIRECT_METHODS: &str = "GET, HEAD";

fn method_not_allowed(req: &HttpRequest, allow: impl Into<String>) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow: allow.into(),
    }
}

/// The answer for paths kurz does not serve.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(nothing_served(&req))
}

/// The answer for paths kurz does not serve, among pages: HTML for a browser.
async fn page_not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(nothing_served(&req).for_client(&req))
}

fn nothing_served(req: &HttpRequest) -> ApiError {
    ApiError::NotFound(format!("nothing is served at {}", req.path()))
}

/// The `{code}` path segment, if it could be a stored code; otherwise a 404.
fn code_param(req: &HttpRequest) -> Result<&str, ApiError> {
    valid_code(req.match_info().get("code").unwrap_or_default())
}

fn valid_code(code: &str) -> Result<&str, ApiError> {
    if crate::code::looks_like_code(code) {
        Ok(code)
    } else {
        Err(ApiError::NotFound(
            "no short link has this code: codes are 1-64 letters, digits, '-' or '_'".into(),
        ))
    }
}

/// The target of a link that redirects; the 410 or 404 a person or program gets otherwise.
fn redirect_target(
    code: &str,
    resolved: crate::links::Resolved,
) -> Result<crate::cache::Target, ApiError> {
    use crate::links::Resolved;
    match resolved {
        Resolved::Found(target) => Ok(target),
        Resolved::Expired(target) => Err(ApiError::Gone(format!(
            "short link '{code}' expired at {}",
            crate::clock::format_rfc3339(target.expires_at_ms.unwrap_or_default())
        ))),
        Resolved::Disabled => Err(ApiError::Gone(format!(
            "short link '{code}' has been disabled by the operator of this service"
        ))),
        Resolved::Blocked(domain) => Err(ApiError::Gone(format!(
            "short link '{code}' points to {domain}, which this service no longer redirects to \
             (policy: domain denylist)"
        ))),
        Resolved::Missing => Err(no_such_link(code)),
    }
}

fn no_such_link(code: &str) -> ApiError {
    ApiError::NotFound(format!("no short link with code '{code}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_segment_of_every_path_is_a_reserved_alias() {
        for endpoint in Endpoint::ALL {
            let first = endpoint
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            if first.is_empty() || first.starts_with('{') {
                continue; // `/` (the home page), `/{code}` and `/{code}+`
            }
            assert!(
                crate::code::is_reserved(first),
                "'{first}' (from {}) is not a reserved alias: a link could shadow the route",
                endpoint.path()
            );
        }
    }

    #[test]
    fn a_fixed_segment_beside_a_links_code_is_a_reserved_alias() {
        let prefix = format!("{API_PREFIX}/");
        for endpoint in Endpoint::ALL {
            let Some(rest) = endpoint.path().strip_prefix(&prefix) else {
                continue;
            };
            let segment = rest.split('/').next().unwrap_or_default();
            assert!(
                segment.starts_with('{') || crate::code::is_reserved(segment),
                "'{segment}' (from {}) is not a reserved alias: a link with that code could \
                 not be reached at /api/v1/links/{{code}}",
                endpoint.path()
            );
        }
    }

    #[test]
    fn labels_are_unique_and_match_the_metric_order() {
        let mut labels: Vec<&str> = Endpoint::METRIC_LABELS.to_vec();
        for (i, endpoint) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(labels[i], endpoint.label());
            assert_eq!(Endpoint::metric_index(Some(*endpoint)), i);
        }
        assert_eq!(labels[Endpoint::metric_index(None)], "unmatched");
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Endpoint::METRIC_LABELS.len());
    }

    #[test]
    fn find_maps_a_resource_and_method_to_its_endpoint() {
        let link = "/api/v1/links/{code}";
        assert_eq!(Endpoint::find(link, &Method::GET), Some(Endpoint::GetLink));
        assert_eq!(
            Endpoint::find(link, &Method::DELETE),
            Some(Endpoint::DeleteLink)
        );
        assert_eq!(Endpoint::find(link, &Method::PUT), None);
    }
}
