use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery};
use super::orders::{page_params, utc, utc_opt, OrderResponse};
use crate::app::AppState;
use crate::domain::OrderStatus;
use crate::entities::{fulfilment_attempt, order, payment_event};
use crate::error::{from_db, ApiError, ErrorBody};
use crate::jobs::compensate::{self, SweepReport};
use crate::services::admin::{self, OrderFilter};

/// An operator: `Authorization: Bearer <ADMIN_TOKEN>`. Without a configured token the admin surface
/// does not exist (404), so a forgotten token cannot leave it open.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.settings.admin_token.as_deref() else {
            return Err(ApiError::not_found("NOT_FOUND", "no such endpoint"));
        };
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An order as operators see it: the buyer's view plus fulfilment internals.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminOrderResponse {
    #[serde(flatten)]
    pub order: OrderResponse,
    pub openid: String,
    /// The latest payment anomaly (a callback that did not match), if any.
    pub anomaly: Option<String>,
    pub fulfil_attempts: i32,
    pub submitted: bool,
    pub lease_owner: Option<String>,
    /// While recharging: when the claim lapses (a crashed worker) or the next retry is due.
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub recharge_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub provider_reference: Option<String>,
    pub failure_reason: Option<String>,
}

impl TryFrom<order::Model> for AdminOrderResponse {
    type Error = ApiError;
    fn try_from(o: order::Model) -> Result<Self, ApiError> {
        Ok(AdminOrderResponse {
            openid: o.openid.clone(),
            anomaly: o.anomaly.clone(),
            fulfil_attempts: o.fulfil_attempts,
            submitted: o.submitted,
            lease_owner: o.lease_owner.clone(),
            lease_expires_at: utc_opt(o.lease_expires_at),
            recharge_at: utc_opt(o.recharge_at),
            delivered_at: utc_opt(o.delivered_at),
            provider_reference: o.provider_reference.clone(),
            failure_reason: o.failure_reason.clone(),
            order: o.try_into()?,
        })
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentEventResponse {
    pub id: i64,
    /// `payment_callback`.
    pub kind: String,
    /// `received`, `accepted`, `duplicate`, `anomaly`, `not_success`, `unknown_order`, `malformed`.
    pub outcome: String,
    pub detail: Option<String>,
    /// The audited headers, as a JSON object in a string.
    pub headers: String,
    /// The raw body.
    pub body: String,
    pub received_at: DateTime<Utc>,
}

impl From<payment_event::Model> for PaymentEventResponse {
    fn from(e: payment_event::Model) -> Self {
        PaymentEventResponse {
            id: e.id,
            kind: e.kind,
            outcome: e.outcome,
            detail: e.detail,
            headers: e.headers,
            body: e.body,
            received_at: utc(e.received_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptResponse {
    pub attempt: i32,
    /// `query` or `submit`.
    pub action: String,
    /// `delivered`, `pending`, `failed`, `refused`, `not_found`, `unknown`.
    pub outcome: String,
    pub message: Option<String>,
    pub latency_ms: i64,
    pub worker: String,
    pub created_at: DateTime<Utc>,
}

impl From<fulfilment_attempt::Model> for AttemptResponse {
    fn from(a: fulfilment_attempt::Model) -> Self {
        AttemptResponse {
            attempt: a.attempt,
            action: a.action,
            outcome: a.outcome,
            message: a.message,
            latency_ms: a.latency_ms,
            worker: a.worker,
            created_at: utc(a.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderHistoryResponse {
    pub order: AdminOrderResponse,
    pub payment_events: Vec<PaymentEventResponse>,
    pub attempts: Vec<AttemptResponse>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminOrderPage {
    pub items: Vec<AdminOrderResponse>,
    pub page: u64,
    pub page_size: u64,
    pub total: u64,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AdminOrdersQuery {
    /// `unpaid`, `paid`, `recharging`, `success`, `failed`, `refunding`, `refunded`, `closed`.
    pub status: Option<String>,
    /// `true`: only orders with a payment anomaly.
    pub anomaly: Option<bool>,
    /// An order number or a phone number, matched exactly.
    pub q: Option<String>,
    pub page: Option<u64>,
    pub page_size: Option<u64>,
}

/// Every order, newest first, filtered by status, anomalies, or an order/phone number.
#[utoipa::path(get, path = "/admin/orders", tag = "admin", security(("admin" = [])),
    params(AdminOrdersQuery),
    responses(
        (status = 200, description = "One page of orders", body = AdminOrderPage),
        (status = 400, description = "`INVALID_REQUEST`: unknown status or page out of range", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
    ))]
pub async fn list_orders(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<AdminOrdersQuery>,
) -> Result<Json<AdminOrderPage>, ApiError> {
    let (page, page_size) = page_params(query.page, query.page_size)?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<OrderStatus>()
                .map_err(|_| ApiError::bad_request("INVALID_REQUEST", format!("unknown status {s:?}")))?,
        ),
        None => None,
    };
    let filter = OrderFilter { status, anomalies_only: query.anomaly.unwrap_or(false), search: query.q };
    let (items, total) = admin::list_orders(&state.db, &filter, page, page_size).await?;
    let items = items.into_iter().map(AdminOrderResponse::try_from).collect::<Result<_, _>>()?;
    Ok(Json(AdminOrderPage { items, page, page_size, total }))
}

/// One order with its full history: payment deliveries and carrier calls.
#[utoipa::path(get, path = "/admin/orders/{orderNumber}", tag = "admin", security(("admin" = [])),
    params(("orderNumber" = String, Path)),
    responses(
        (status = 200, description = "The order and its history", body = OrderHistoryResponse),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`", body = ErrorBody),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(order_number): ApiPath<String>,
) -> Result<Json<OrderHistoryResponse>, ApiError> {
    let history = admin::order_history(&state.db, &order_number).await?;
    Ok(Json(OrderHistoryResponse {
        order: history.order.try_into()?,
        payment_events: history.payment_events.into_iter().map(Into::into).collect(),
        attempts: history.attempts.into_iter().map(Into::into).collect(),
    }))
}

/// Puts a `failed` order back in line for delivery and starts it. The carrier is queried before any
/// new submit, so a retry never delivers twice.
#[utoipa::path(post, path = "/admin/orders/{orderNumber}/retry", tag = "admin", security(("admin" = [])),
    params(("orderNumber" = String, Path)),
    responses(
        (status = 200, description = "The order, due again", body = AdminOrderResponse),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`ORDER_NOT_RETRYABLE`: only failed orders", body = ErrorBody),
    ))]
pub async fn retry_order(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(order_number): ApiPath<String>,
) -> Result<Json<AdminOrderResponse>, ApiError> {
    let order = admin::retry_order(&state.db, &order_number).await?;
    state.fulfiller.spawn(order.order_number.clone());
    Ok(Json(order.try_into()?))
}

/// Runs the compensation sweep now, for an external timer while the service scales to zero.
#[utoipa::path(post, path = "/jobs/compensate", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "What the sweep did", body = SweepReport),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
    ))]
pub async fn run_compensation(State(state): State<AppState>, _admin: Admin) -> Result<Json<SweepReport>, ApiError> {
    Ok(Json(compensate::run_once(&state).await.map_err(from_db)?))
}
