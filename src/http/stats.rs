//! `GET /api/v1/links/{code}/stats` (the admin, or a key with the `stats` scope for its own
//! links): total clicks, last click, clicks per UTC day.
//! Clicks reach the store once per flush interval, so the figures lag by up to one interval.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{ApiError, AppState, Caller, code_param, no_such_link};
use crate::clock;
use crate::store::Scope;

#[derive(Serialize)]
struct StatsView<'a> {
    code: &'a str,
    total_clicks: u64,
    last_click_at: Option<String>,
    daily: Vec<DayView>,
}

#[derive(Serialize)]
struct DayView {
    date: String,
    clicks: u64,
}

pub async fn stats(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = super::auth::creator(&state, &req).await?;
    caller.require(Scope::Stats, "reading statistics")?;
    let code = code_param(&req)?;
    match &caller {
        Caller::Admin => {}
        Caller::ApiKey(_) => {
            // Another key's link is "no such link" to this key, whether or not it exists.
            state
                .links
                .get(code)
                .await?
                .filter(|link| caller.may_read(link))
                .ok_or_else(|| no_such_link(code))?;
        }
        Caller::Anonymous => {
            return Err(ApiError::Unauthorized(
                "statistics need the admin token, or an API key with the 'stats' scope for \
                 its own links"
                    .into(),
            ));
        }
    }
    let stats = state
        .links
        .stats(code)
        .await?
        .ok_or_else(|| no_such_link(code))?;
    Ok(HttpResponse::Ok().json(StatsView {
        code,
        total_clicks: stats.total_clicks,
        last_click_at: stats.last_click_ms.map(clock::format_rfc3339),
        daily: stats
            .daily
            .into_iter()
            .map(|(day, clicks)| DayView {
                date: clock::format_day(day),
                clicks,
            })
            .collect(),
    }))
}
