//! `GET /{code}` and `HEAD /{code}`: the hot path. Answered from the L1 cache when it can be;
//! the click is counted in memory. HEAD answers the same but counts no click (link checkers
//! and previewers use it).

use actix_web::http::header::LOCATION;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, AppState, code_param, no_such_link};
use crate::clock;
use crate::links::Resolved;

pub async fn redirect(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let code = code_param(&req)?;
    match state.links.resolve(code).await? {
        Resolved::Found(target) => {
            if req.method() != Method::HEAD {
                state.links.record_click(code);
            }
            let status = StatusCode::from_u16(target.redirect_status).unwrap_or(StatusCode::FOUND);
            Ok(HttpResponse::build(status)
                .insert_header((LOCATION, &*target.url))
                .finish())
        }
        Resolved::Expired(target) => Err(ApiError::Gone(format!(
            "short link '{code}' expired at {}",
            clock::format_rfc3339(target.expires_at_ms.unwrap_or_default())
        ))),
        Resolved::Missing => Err(no_such_link(code)),
    }
}
