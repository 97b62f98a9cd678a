//! `GET /api/v1/links/{code}/qr`: a QR code of the short URL, for anyone (it shows nothing the
//! short link itself does not). SVG unless `?format=png`; `?size=` in pixels. The code is
//! looked up as a redirect does ([`lookup`](super::lookup)): through the cache, with unknown
//! codes spending the client's misses budget.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, X_CONTENT_TYPE_OPTIONS};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{ApiError, AppState, code_param, lookup, redirect_target};
use crate::qr;

/// Size of the image when `size` is not given.
const DEFAULT_SIZE: u32 = 256;

#[derive(Deserialize)]
struct QrQuery {
    format: Option<String>,
    size: Option<String>,
}

enum Format {
    Svg,
    Png,
}

pub async fn qr(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let code = code_param(&req)?;
    let query = web::Query::<QrQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
    let format = match query.format.as_deref() {
        None | Some("svg") => Format::Svg,
        Some("png") => Format::Png,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be 'svg' or 'png'; got '{other}'"
            )));
        }
    };
    let size = match query.size.as_deref() {
        None => DEFAULT_SIZE,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|s| qr::SIZES.contains(s))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "size must be a whole number of pixels from {} to {}; got '{text}'",
                    qr::SIZES.start(),
                    qr::SIZES.end()
                ))
            })?,
    };

    let now = state.links.clock().now_ms();
    redirect_target(code, lookup::resolve(&state, &req, code, now).await?)?;

    let short_url = state.base_url.short_url(code);
    let internal = |e: qr::QrError| ApiError::Internal(e.to_string());
    let (content_type, extension, body) = match format {
        Format::Svg => (
            "image/svg+xml",
            "svg",
            qr::svg(&short_url, size).map_err(internal)?.into_bytes(),
        ),
        Format::Png => (
            "image/png",
            "png",
            qr::png(&short_url, size).map_err(internal)?,
        ),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        // The image encodes the short URL, which depends on the code alone.
        .insert_header((CACHE_CONTROL, "public, max-age=86400"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("inline; filename=\"kurz-{code}.{extension}\""),
        ))
        .body(body))
}
