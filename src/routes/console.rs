//! The web console: static files compiled into the binary (no CDN; it works offline).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::app::AppState;
use crate::error::{ApiError, ErrorCode};

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");

/// Served in development, or in production when an admin token is configured (the operator view
/// still needs the token for every call).
fn available(state: &AppState) -> Result<(), ApiError> {
    if state.settings.is_production() && state.settings.admin_token.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such endpoint"));
    }
    Ok(())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    available(&state)?;
    Ok(asset("text/html; charset=utf-8", INDEX))
}

pub async fn script(State(state): State<AppState>) -> Result<Response, ApiError> {
    available(&state)?;
    Ok(asset("text/javascript; charset=utf-8", SCRIPT))
}

pub async fn style(State(state): State<AppState>) -> Result<Response, ApiError> {
    available(&state)?;
    Ok(asset("text/css; charset=utf-8", STYLE))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleConfig {
    development: bool,
    sandbox: bool,
    /// Handed to the page in development only, so the operator view works without typing it.
    admin_token: Option<String>,
}

pub async fn config(State(state): State<AppState>) -> Result<Json<ConsoleConfig>, ApiError> {
    available(&state)?;
    let development = !state.settings.is_production();
    Ok(Json(ConsoleConfig {
        development,
        sandbox: state.settings.wechat.sandbox,
        admin_token: if development { state.settings.admin_token.clone() } else { None },
    }))
}
