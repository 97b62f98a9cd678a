//! HTTP handlers, the route table, and request observation. Handlers stay thin: parse and check
//! the request, call [`crate::links::LinkService`], shape the response.

mod auth;
mod errors;
mod health;
mod links;
mod observe;
mod redirect;
mod stats;

use std::sync::Arc;

use actix_web::{HttpRequest, web};

pub use auth::{Auth, Caller};
pub use errors::ApiError;
pub use observe::observe;

use crate::config::LimitSettings;
use crate::links::{BaseUrl, LinkService};
use crate::telemetry::{Metrics, RequestIds};

/// Everything a handler needs, built once at start-up.
pub struct AppState {
    pub links: LinkService,
    pub auth: Auth,
    pub base_url: BaseUrl,
    pub limits: LimitSettings,
    pub metrics: Arc<Metrics>,
    pub request_ids: RequestIds,
}

/// Every route kurz serves: (name, path, methods). [`configure`] registers exactly these, and
/// the tests hold `openapi.yaml` to the same table.
pub const ROUTES: &[(&str, &str, &[&str])] = &[
    ("healthz", "/healthz", &["GET"]),
    ("readyz", "/readyz", &["GET"]),
    ("metrics", "/metrics", &["GET"]),
    ("create_link", "/api/v1/links", &["POST"]),
    ("link", "/api/v1/links/{code}", &["GET", "DELETE"]),
    ("link_stats", "/api/v1/links/{code}/stats", &["GET"]),
    // Not a pattern: the fallback for any other single path segment, see `configure`.
    (REDIRECT, "/{code}", REDIRECT_METHODS),
];

fn handler(name: &str, method: &str) -> actix_web::Route {
    match (name, method) {
        ("healthz", "GET") => web::get().to(health::live),
        ("readyz", "GET") => web::get().to(health::ready),
        ("metrics", "GET") => web::get().to(health::metrics),
        ("create_link", "POST") => web::post().to(links::create),
        ("link", "GET") => web::get().to(links::get),
        ("link", "DELETE") => web::delete().to(links::delete),
        ("link_stats", "GET") => web::get().to(stats::stats),
        _ => web::route().to(not_found),
    }
}

/// The links API's common prefix. Its routes sit in one scope, matched by this prefix first,
/// so a redirect never pays for trying their patterns.
const API_PREFIX: &str = "/api/v1/links";

/// Registers [`ROUTES`]; other methods on a known path answer 405 with `Allow`.
///
/// `/{code}` is not a pattern here but the fallback for whatever the table does not match
/// ([`redirect::fallback`]): the redirect, the hot path, then costs no pattern matching, and
/// the handful of fixed paths are compared first.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut api = web::scope(API_PREFIX).default_service(web::to(not_found));
    for &(name, path, methods) in ROUTES {
        if name == REDIRECT {
            continue;
        }
        let mut resource = web::resource(path.strip_prefix(API_PREFIX).unwrap_or(path)).name(name);
        for method in methods {
            resource = resource.route(handler(name, method));
        }
        resource = resource.default_service(web::to(move |req: HttpRequest| async move {
            Err::<actix_web::HttpResponse, _>(method_not_allowed(&req, methods))
        }));
        if path.starts_with(API_PREFIX) {
            api = api.service(resource);
        } else {
            cfg.service(resource);
        }
    }
    cfg.service(api);
    cfg.default_service(web::to(redirect::fallback));
}

/// The route table's name for `/{code}`, and its methods.
const REDIRECT: &str = "redirect";
const REDIRECT_METHODS: &[&str] = &["GET", "HEAD"];

fn method_not_allowed(req: &HttpRequest, allow: &'static [&'static str]) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow,
    }
}

/// The answer for paths kurz does not serve.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "nothing is served at {}",
        req.path()
    )))
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

fn no_such_link(code: &str) -> ApiError {
    ApiError::NotFound(format!("no short link with code '{code}'"))
}
