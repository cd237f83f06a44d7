use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "ok")]
    pub database: &'static str,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// `true` when WeChat is simulated.
    pub sandbox: bool,
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/health", tag = "service",
    responses(
        (status = 200, description = "Service and database are up", body = HealthResponse),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the database does not answer", body = ErrorBody),
    ))]
pub async fn health(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    state.db.ping().await.map_err(|error| {
        tracing::error!(%error, "health check: database unavailable");
        ApiError::Unavailable
    })?;
    Ok(Json(HealthResponse {
        status: "ok",
        database: "ok",
        version: env!("CARGO_PKG_VERSION"),
        sandbox: state.settings.wechat.sandbox,
    }))
}
