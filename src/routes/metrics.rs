use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sea_orm::{ColumnTrait, EntityTrait, QuerySelect};

use crate::app::AppState;
use crate::domain::OrderStatus;
use crate::entities::order;
use crate::error::{from_db, ApiError, ErrorBody};
use crate::telemetry::metrics_handle;

/// Prometheus metrics: HTTP requests by route and status with latency histograms, WeChat and carrier
/// calls by endpoint and outcome, callbacks by outcome, job runs, and orders by status. Needs the admin
/// bearer token when one is configured.
#[utoipa::path(get, path = "/metrics", tag = "service", security((), ("admin" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "`UNAUTHORIZED`: ADMIN_TOKEN is set and was not given", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the order counts could not be read", body = ErrorBody),
    ))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(expected) = state.settings.admin_token.as_deref() {
        if !super::admin::bears_token(&headers, expected) {
            return Err(ApiError::Unauthorized);
        }
    }
    let counts: Vec<(String, i64)> = order::Entity::find()
        .select_only()
        .column(order::Column::Status)
        .column_as(order::Column::Id.count(), "count")
        .group_by(order::Column::Status)
        .into_tuple()
        .all(&state.db)
        .await
        .map_err(from_db)?;
    for status in OrderStatus::ALL {
        let count = counts.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, c)| *c);
        metrics::gauge!("orders", "status" => status.as_str()).set(count as f64);
    }
    let body = metrics_handle().render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
