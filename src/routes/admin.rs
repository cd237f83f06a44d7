use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use chrono::NaiveDate;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::orders::{page_params, utc, utc_opt, OrderResponse, PageQuery};
use crate::app::AppState;
use crate::domain::{beijing_today, Money, OrderStatus};
use crate::entities::{fulfilment_attempt, order, payment_event, refund};
use crate::error::{from_db, ApiError, ErrorBody, ErrorCode};
use crate::jobs::compensate::{self, SweepReport};
use crate::jobs::reconcile::{self, ReconcileReport};
use crate::lifecycle::{self, Happened};
use crate::services::admin::{self, OrderFilter};
use crate::services::orders as services_orders;
use crate::services::reconciliation::day_report;
use crate::services::refunds::{self, RefundSource};
use crate::services::ServiceError;

/// An operator: `Authorization: Bearer <ADMIN_TOKEN>`. Without a configured token the admin surface
/// does not exist (404), so a forgotten token cannot leave it open.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.settings.admin_token.as_deref() else {
            return Err(ApiError::new(ErrorCode::NotFound, "no such endpoint"));
        };
        if bears_token(&parts.headers, expected) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn parse_day(d: &str) -> Result<NaiveDate, ApiError> {
    crate::domain::parse_day(d).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))
}

/// `Authorization: Bearer <expected>`, compared in constant time.
pub(crate) fn bears_token(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    constant_time_eq(given.as_bytes(), expected.as_bytes())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
    pub closed_at: Option<DateTime<Utc>>,
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
            closed_at: utc_opt(o.closed_at),
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
    pub refunds: Vec<RefundResponse>,
    /// The subscribe messages to the buyer about this order.
    pub notifications: Vec<NotificationResponse>,
}

/// A subscribe message to the buyer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationResponse {
    /// `delivered`, `refunding`, `refunded`.
    #[schema(example = "delivered")]
    pub event: String,
    pub template_id: String,
    /// The message's `data`, as sent.
    pub data: serde_json::Value,
    /// `pending`, `sent`, `unsubscribed` (the buyer did not subscribe), `failed`, `recorded` (sandbox: not sent).
    #[schema(example = "sent")]
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<crate::entities::notification::Model> for NotificationResponse {
    fn from(n: crate::entities::notification::Model) -> Self {
        NotificationResponse {
            event: n.event,
            template_id: n.template_id,
            data: serde_json::from_str(&n.data).unwrap_or_default(),
            status: n.status,
            attempts: n.attempts,
            last_error: n.last_error,
            created_at: utc(n.created_at),
            sent_at: utc_opt(n.sent_at),
        }
    }
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminOrdersQuery {
    /// `unpaid`, `paid`, `recharging`, `success`, `failed`, `unresolved`, `refunding`, `refunded`, `closed`;
    /// empty: any.
    #[param(pattern = "^(unpaid|paid|recharging|success|failed|unresolved|refunding|refunded|closed)?$")]
    pub status: Option<String>,
    /// `true`: only orders with a payment anomaly.
    pub anomaly: Option<bool>,
    /// `true`: only orders with a `failed` refund (an operator retries or replaces it).
    pub refund_failed: Option<bool>,
    /// An order number or a phone number, matched exactly.
    pub q: Option<String>,
    /// 1-based page number, 1 to 1000000 (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u64>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u64>,
}

/// Every order, newest first, filtered by status, anomalies, failed refunds, or an order/phone number.
#[utoipa::path(get, path = "/admin/orders", operation_id = "admin_list_orders", tag = "admin", security(("admin" = [])),
    params(AdminOrdersQuery),
    responses(
        (status = 200, description = "One page of orders", body = AdminOrderPage),
        (status = 400, description = "`INVALID_REQUEST`: unknown status, anomaly or refundFailed not true or false, page out of range, or an unknown parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn list_orders(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<AdminOrdersQuery>,
) -> Result<Json<AdminOrderPage>, ApiError> {
    let paging = page_params(query.page, query.page_size)?;
    let (page, page_size) = (paging.page(), paging.size());
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<OrderStatus>()
                .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, format!("unknown status {s:?}")))?,
        ),
        None => None,
    };
    let filter = OrderFilter {
        status,
        anomalies_only: query.anomaly.unwrap_or(false),
        failed_refunds_only: query.refund_failed.unwrap_or(false),
        search: query.q,
    };
    let (items, total) = admin::list_orders(&state.db, &filter, paging).await?;
    let items = items.into_iter().map(AdminOrderResponse::try_from).collect::<Result<_, _>>()?;
    Ok(Json(AdminOrderPage { items, page, page_size, total }))
}

/// One order with its full history: payment deliveries, carrier calls and refunds.
#[utoipa::path(get, path = "/admin/orders/{orderNumber}", operation_id = "admin_get_order", tag = "admin", security(("admin" = [])),
    params(("orderNumber" = String, Path, pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$", example = "ORD1763900000000Ab3x")),
    responses(
        (status = 200, description = "The order and its history", body = OrderHistoryResponse),
        (status = 400, description = "`INVALID_REQUEST`: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
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
        refunds: history.refunds.into_iter().map(Into::into).collect(),
        notifications: history.notifications.into_iter().map(Into::into).collect(),
    }))
}

/// Puts a `failed` or `unresolved` order back in line for delivery and starts it, with a fresh attempt
/// budget. The carrier is queried before any new submit, so a retry never delivers twice.
#[utoipa::path(post, path = "/admin/orders/{orderNumber}/retry", tag = "admin", security(("admin" = [])),
    params(("orderNumber" = String, Path, pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$", example = "ORD1763900000000Ab3x")),
    responses(
        (status = 200, description = "The order, due again", body = AdminOrderResponse),
        (status = 400, description = "`INVALID_REQUEST`: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`ORDER_NOT_RETRYABLE`: only failed or unresolved orders; `ORDER_CHANGED`", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn retry_order(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(order_number): ApiPath<String>,
) -> Result<Json<AdminOrderResponse>, ApiError> {
    // The retry and the start of its delivery finish even if the operator hangs up.
    let task_state = state.clone();
    let order = lifecycle::to_completion(async move {
        let order = admin::retry_order(&task_state.db, &order_number).await?;
        lifecycle::react(&task_state, Happened::RetryRequested { order_number: order.order_number.clone() });
        Ok::<_, crate::services::ServiceError>(order)
    })
    .await??;
    Ok(Json(order.try_into()?))
}

/// Runs the compensation sweep now, for an external timer while the service scales to zero.
#[utoipa::path(post, path = "/jobs/compensate", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "What the sweep did", body = SweepReport),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn run_compensation(State(state): State<AppState>, _admin: Admin) -> Result<Json<SweepReport>, ApiError> {
    Ok(Json(compensate::run_once(&state).await.map_err(from_db)?))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundOrderRequest {
    /// Shown to the payer by WeChat (at most 80 characters are sent); not blank.
    #[schema(example = "customer asked to cancel", min_length = 1)]
    pub reason: String,
    /// Yuan, a decimal string with at most two decimals; all that is left to refund when omitted. Only a
    /// delivered order can be refunded in part (it is `success` again once that part is back).
    #[schema(example = "5.00", pattern = "^[0-9]{1,10}(\\.[0-9]{1,2})?$")]
    pub amount: Option<String>,
    /// For an `unresolved` order only: refund even though the carrier has not proved the top-up failed
    /// (the operator checked another way). Recorded with the reason. Without it, the carrier is asked
    /// and the refund goes ahead only if it never received the top-up or reports it failed.
    #[serde(default)]
    pub force: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkDeliveredRequest {
    /// How the operator knows the top-up arrived (kept on the order); not blank.
    #[schema(example = "carrier portal shows transaction 88123 delivered", min_length = 1)]
    pub note: String,
}

/// Settles an `unresolved` order as delivered, once the operator has checked with the carrier.
#[utoipa::path(post, path = "/admin/orders/{orderNumber}/mark-delivered", tag = "admin", security(("admin" = [])),
    params(("orderNumber" = String, Path, pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$", example = "ORD1763900000000Ab3x")),
    request_body = MarkDeliveredRequest,
    responses(
        (status = 200, description = "The order, now `success`", body = AdminOrderResponse),
        (status = 400, description = "`INVALID_REQUEST`: note is blank, the body could not be read, or the path is not UTF-8; `INVALID_JSON`: the body is not JSON", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`ORDER_NOT_UNRESOLVED` or `ORDER_CHANGED`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: note missing or not a string", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn mark_delivered(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(order_number): ApiPath<String>,
    ApiJson(request): ApiJson<MarkDeliveredRequest>,
) -> Result<Json<AdminOrderResponse>, ApiError> {
    let note = request.note.trim().chars().take(400).collect::<String>();
    if note.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "note is required"));
    }
    // Settled and the buyer told, even if the operator hangs up.
    let task_state = state.clone();
    let order = lifecycle::to_completion(async move {
        let order = admin::mark_delivered(&task_state.db, &order_number, &note).await?;
        let outcome = crate::fulfilment::FulfilOutcome::Delivered;
        let (order_number, held) = (order.order_number.clone(), Some(Box::new(order.clone())));
        lifecycle::react(&task_state, Happened::Fulfilment { order_number, outcome, held });
        Ok::<_, crate::services::ServiceError>(order)
    })
    .await??;
    Ok(Json(order.try_into()?))
}

/// Sends a `failed` refund again under the same `out_refund_no`, after asking WeChat where it stands
/// (it may have happened after all). The amount stays counted against the order throughout.
#[utoipa::path(post, path = "/admin/refunds/{outRefundNo}/retry", tag = "admin", security(("admin" = [])),
    params(("outRefundNo" = String, Path, example = "RORD1763900000000Ab3x01")),
    responses(
        (status = 200, description = "The refund, as far as it got", body = RefundResponse),
        (status = 400, description = "`INVALID_REQUEST`: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`REFUND_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`REFUND_NOT_RETRYABLE`: only failed refunds", body = ErrorBody),
        (status = 502, description = "`WECHAT_ERROR`: WeChat could not be asked; nothing changed", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn retry_refund(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(out_refund_no): ApiPath<String>,
) -> Result<Json<RefundResponse>, ApiError> {
    act_on_refund(state, move |s, policy| async move {
        refunds::retry_refund(&s.db, &s.wechat, &out_refund_no, &policy).await
    })
    .await
}

/// Runs an operator's action on a refund to its end (a hang-up cannot cut it short), then reacts to
/// where the refund stands.
async fn act_on_refund<F, Fut>(state: AppState, action: F) -> Result<Json<RefundResponse>, ApiError>
where
    F: FnOnce(AppState, refunds::RefundPolicy) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<crate::entities::refund::Model, crate::services::ServiceError>> + Send,
{
    let refund = lifecycle::to_completion(async move {
        let policy = lifecycle::refund_policy(&state);
        let refund = action(state.clone(), policy).await?;
        lifecycle::react(&state, Happened::Refund(refund.clone()));
        Ok::<_, crate::services::ServiceError>(refund)
    })
    .await??;
    Ok(Json(refund.into()))
}

/// Replaces a `failed` refund that WeChat proves it never paid (it has no such refund, or closed it) with
/// a new `out_refund_no` for the same amount, and sends that. WeChat is asked first: a refund it did or
/// is doing is recorded as such instead; any other answer changes nothing (409).
#[utoipa::path(post, path = "/admin/refunds/{outRefundNo}/replace", tag = "admin", security(("admin" = [])),
    params(("outRefundNo" = String, Path, example = "RORD1763900000000Ab3x01")),
    responses(
        (status = 200, description = "The new refund as far as it got, or the old one if WeChat did it after all", body = RefundResponse),
        (status = 400, description = "`INVALID_REQUEST`: the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`REFUND_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`REFUND_NOT_RETRYABLE`: only failed refunds; `REFUND_NOT_REPLACEABLE`: WeChat's answer proves nothing; `ORDER_CHANGED`", body = ErrorBody),
        (status = 502, description = "`WECHAT_ERROR`: WeChat could not be asked; nothing changed", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn replace_refund(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(out_refund_no): ApiPath<String>,
) -> Result<Json<RefundResponse>, ApiError> {
    act_on_refund(state, move |s, policy| async move {
        refunds::replace_refund(&s.db, &s.wechat, &out_refund_no, &policy).await
    })
    .await
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundResponse {
    #[schema(example = "RORD1763900000000Ab3x01")]
    pub out_refund_no: String,
    #[schema(example = "12.00")]
    pub amount: String,
    pub reason: String,
    /// `operator`, `auto_failed`, `auto_closed`.
    pub source: String,
    /// `pending`, `submitted`, `success`, `failed`, `replaced` (WeChat proved it never paid it; a newer
    /// refund took its place).
    pub status: String,
    pub refund_id: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<refund::Model> for RefundResponse {
    fn from(r: refund::Model) -> Self {
        RefundResponse {
            out_refund_no: r.out_refund_no,
            amount: Money::from_stored(r.amount).to_string(),
            reason: r.reason,
            source: r.source,
            status: r.status.to_string(),
            refund_id: r.refund_id,
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        }
    }
}

/// Refunds a paid order, whole or in part. The refund number is stored before WeChat is called and
/// reused on every retry; the refunds of an order never add up to more than it paid.
#[utoipa::path(post, path = "/admin/orders/{orderNumber}/refund", tag = "admin", security(("admin" = [])),
    params(("orderNumber" = String, Path, pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$", example = "ORD1763900000000Ab3x")),
    request_body = RefundOrderRequest,
    responses(
        (status = 200, description = "The refund, as far as it got (`success` once WeChat confirms)", body = RefundResponse, links(
            ("RetryRefund" = (operation_id = "retry_refund", parameters(("outRefundNo" = "$response.body#/outRefundNo")))),
        )),
        (status = 400, description = "`INVALID_REFUND_AMOUNT`: not a decimal string with at most two decimals, zero, or more than is left (while something is); `INVALID_REQUEST`: reason is blank, the body could not be read, or the path is not UTF-8; `INVALID_JSON`: the body is not JSON", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`ORDER_NOT_REFUNDABLE` (unpaid, being delivered, closed, nothing left to refund, or paid with a submit that may have reached the carrier), `PARTIAL_REFUND_UNDELIVERED`, `REFUND_NEEDS_PROOF` (unresolved, the carrier has not proved non-delivery, no `force`), or `ORDER_CHANGED`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: reason missing, or a field of the wrong type", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn refund_order(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(order_number): ApiPath<String>,
    ApiJson(request): ApiJson<RefundOrderRequest>,
) -> Result<Json<RefundResponse>, ApiError> {
    let amount = request
        .amount
        .as_deref()
        .map(Money::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidRefundAmount, e.to_string()))?;
    let reason = request.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "reason is required"));
    }
    // Opening the refund and its first submit finish even if the operator's browser hangs up.
    let task_state = state.clone();
    let refund = lifecycle::to_completion(async move {
        let db = &task_state.db;
        let order = services_orders::find_by_number(db, &order_number).await?.ok_or(ServiceError::OrderNotFound)?;
        let refund = if order.status == OrderStatus::Unresolved {
            if amount.is_some_and(|a| a < Money::from_stored(order.amount)) {
                return Err(ServiceError::PartialRefundUndelivered);
            }
            let proof = if request.force {
                format!("forced by an operator: {reason}")
            } else {
                let proof = task_state.fulfiller.proof_of_non_delivery(&order_number).await;
                format!("{}: {reason}", proof.ok_or(ServiceError::RefundNeedsProof)?)
            };
            refunds::open_unresolved_refund(db, &order, &proof).await?
        } else {
            refunds::open_refund(db, &order_number, amount, &reason, RefundSource::Operator).await?
        };
        let policy = lifecycle::refund_policy(&task_state);
        // A WeChat failure here is not the caller's error: the refund is open and will be retried.
        let refund = match refunds::drive_refund(db, &task_state.wechat, &refund, &policy).await {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(out_refund_no = refund.out_refund_no, %error, "refund not settled yet; reconciliation will retry");
                refunds::refunds_of(db, &order_number).await?.into_iter().find(|r| r.id == refund.id).unwrap_or(refund)
            }
        };
        lifecycle::react(&task_state, Happened::Refund(refund.clone()));
        Ok(refund)
    })
    .await??;
    Ok(Json(refund.into()))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReconciliationQuery {
    /// A day in UTC+8, `YYYY-MM-DD` from 2000-01-01 to 2999-12-31; today (UTC+8) when omitted.
    #[param(value_type = Option<NaiveDate>, pattern = "^2[0-9]{3}-[0-9]{2}-[0-9]{2}$", example = "2026-11-23")]
    pub date: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MismatchResponse {
    pub order_number: String,
    pub status: String,
    pub paid: String,
    pub delivered: String,
    pub refunded: String,
    pub in_flight: String,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciliationResponse {
    #[schema(example = "2026-11-23")]
    pub date: String,
    pub paid_count: u64,
    #[schema(example = "120.00")]
    pub paid_total: String,
    pub delivered_total: String,
    pub refunded_total: String,
    pub in_flight_total: String,
    /// `true` when `paid = delivered + refunded + in flight` holds for every order.
    pub balanced: bool,
    pub mismatches: Vec<MismatchResponse>,
}

/// The books for one day (UTC+8): paid, delivered, refunded and in-flight totals, and every order that
/// breaks `paid = delivered + refunded + in flight`.
#[utoipa::path(get, path = "/admin/reconciliation", tag = "admin", security(("admin" = [])),
    params(ReconciliationQuery),
    responses(
        (status = 200, description = "The day's totals and mismatches", body = ReconciliationResponse),
        (status = 400, description = "`INVALID_REQUEST`: date is not a YYYY-MM-DD day from 2000-01-01 to 2999-12-31, or an unknown parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn reconciliation(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<ReconciliationQuery>,
) -> Result<Json<ReconciliationResponse>, ApiError> {
    let date = match query.date.as_deref() {
        Some(d) => parse_day(d)?,
        None => beijing_today(),
    };
    let report = day_report(&state.db, date).await.map_err(from_db)?;
    Ok(Json(ReconciliationResponse {
        date: report.date.to_string(),
        paid_count: report.paid_count,
        paid_total: report.paid_total.to_string(),
        delivered_total: report.delivered_total.to_string(),
        refunded_total: report.refunded_total.to_string(),
        in_flight_total: report.in_flight_total.to_string(),
        balanced: report.mismatches.is_empty(),
        mismatches: report
            .mismatches
            .into_iter()
            .map(|m| MismatchResponse {
                order_number: m.order_number,
                status: m.status,
                paid: m.paid.to_string(),
                delivered: m.delivered.to_string(),
                refunded: m.refunded.to_string(),
                in_flight: m.in_flight.to_string(),
                reason: m.reason,
            })
            .collect(),
    }))
}

/// Runs reconciliation now: lost callbacks, expiry, automatic refunds, open refunds.
#[utoipa::path(post, path = "/jobs/reconcile", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "What the pass did", body = ReconcileReport),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn run_reconciliation(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ReconcileReport>, ApiError> {
    Ok(Json(reconcile::run_once(&state).await.map_err(from_db)?))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertResponse {
    /// `anomaly`, `topup_failed`, `refund_failed`, `reconciliation_mismatch`.
    pub kind: String,
    pub order_number: String,
    pub message: String,
    /// `pending`, `sent`, `failed`, `rate_limited`, `disabled` (no ALERT_WEBHOOK_URL).
    pub delivery: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertPage {
    pub items: Vec<AlertResponse>,
    pub page: u64,
    pub page_size: u64,
    pub total: u64,
}

/// Alerts raised (one per order and kind), newest first, with how each was delivered.
#[utoipa::path(get, path = "/admin/alerts", tag = "admin", security(("admin" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of alerts", body = AlertPage),
        (status = 400, description = "`INVALID_REQUEST`: page or pageSize out of range, or an unknown parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn list_alerts(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    let paging = page_params(query.page, query.page_size)?;
    let (page, page_size) = (paging.page(), paging.size());
    let (items, total) = admin::list_alerts(&state.db, paging).await?;
    let items = items
        .into_iter()
        .map(|a| AlertResponse {
            kind: a.kind,
            order_number: a.order_number,
            message: a.message,
            delivery: a.delivery,
            created_at: utc(a.created_at),
            sent_at: utc_opt(a.sent_at),
        })
        .collect();
    Ok(Json(AlertPage { items, page, page_size, total }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// First day, `YYYY-MM-DD` (UTC+8) from 2000-01-01 to 2999-12-31; default: 6 days before `to`.
    #[param(value_type = Option<NaiveDate>, pattern = "^2[0-9]{3}-[0-9]{2}-[0-9]{2}$", example = "2026-11-17")]
    pub from: Option<String>,
    /// Last day, inclusive, at most 366 days after `from`; default: today (UTC+8).
    #[param(value_type = Option<NaiveDate>, pattern = "^2[0-9]{3}-[0-9]{2}-[0-9]{2}$", example = "2026-11-23")]
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    pub from: String,
    pub to: String,
    pub placed: u64,
    pub paid: u64,
    pub delivered: u64,
    pub failed: u64,
    pub refunded: u64,
    /// paid ÷ placed, 0–1; null without orders.
    pub payment_success_rate: Option<f64>,
    /// delivered ÷ (delivered + failed), 0–1.
    pub top_up_success_rate: Option<f64>,
    #[schema(example = "120.00")]
    pub paid_total: String,
    pub delivered_total: String,
    pub refunded_total: String,
    /// Payment to delivery, milliseconds.
    pub top_up_latency_p50_ms: Option<i64>,
    pub top_up_latency_p90_ms: Option<i64>,
    pub top_up_latency_p99_ms: Option<i64>,
    /// 24 counts: orders placed per hour of the day, UTC+8.
    pub orders_by_hour: Vec<u64>,
}

/// Orders placed, paid, delivered, failed and refunded over Beijing days, with rates, amounts, top-up
/// latency percentiles and orders per hour of day.
#[utoipa::path(get, path = "/admin/stats", tag = "admin", security(("admin" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "Statistics for the range", body = StatsResponse),
        (status = 400, description = "`INVALID_REQUEST`: a day not YYYY-MM-DD from 2000-01-01 to 2999-12-31, from after to, more than 366 days, or an unknown parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn get_stats(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<StatsResponse>, ApiError> {
    let (from, to) =
        crate::domain::day_range(query.from.as_deref(), query.to.as_deref(), beijing_today()).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "dates must be YYYY-MM-DD between 2000-01-01 and 2999-12-31, from not after to, at most 366 days apart",
            )
        })?;
    let s = crate::services::stats::stats(&state.db, from, to).await.map_err(from_db)?;
    let latency = s.top_up_latency_ms;
    Ok(Json(StatsResponse {
        from: from.to_string(),
        to: to.to_string(),
        placed: s.placed,
        paid: s.paid,
        delivered: s.delivered,
        failed: s.failed,
        refunded: s.refunded,
        payment_success_rate: s.payment_success_rate,
        top_up_success_rate: s.top_up_success_rate,
        paid_total: s.paid_total.to_string(),
        delivered_total: s.delivered_total.to_string(),
        refunded_total: s.refunded_total.to_string(),
        top_up_latency_p50_ms: latency.map(|l| l[0]),
        top_up_latency_p90_ms: latency.map(|l| l[1]),
        top_up_latency_p99_ms: latency.map(|l| l[2]),
        orders_by_hour: s.orders_by_hour.to_vec(),
    }))
}
