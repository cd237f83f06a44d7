use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::identity::Caller;
use crate::app::AppState;
use crate::domain::{Money, OrderStatus, Paging, PhoneNumber};
use crate::entities::order;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::lifecycle;
use crate::services::orders;
use crate::services::payments;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrderRequest {
    /// A product's `id` from `GET /products`.
    #[schema(example = 1, minimum = 1, maximum = 2147483647)]
    pub product_id: i32,
    /// Optional `+`, then 6 to 15 digits.
    #[schema(example = "+97688112233", pattern = "^\\+?[0-9]{6,15}$")]
    pub phone_number: String,
}

/// Where an order is in its life.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatusDto {
    Unpaid,
    Paid,
    Recharging,
    Success,
    Failed,
    /// The carrier has not said whether the top-up arrived; it is still being asked, and an operator
    /// settles it. Not refunded unless the carrier proves it failed.
    Unresolved,
    Refunding,
    Refunded,
    Closed,
}

impl From<OrderStatus> for OrderStatusDto {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::Unpaid => OrderStatusDto::Unpaid,
            OrderStatus::Paid => OrderStatusDto::Paid,
            OrderStatus::Recharging => OrderStatusDto::Recharging,
            OrderStatus::Success => OrderStatusDto::Success,
            OrderStatus::Failed => OrderStatusDto::Failed,
            OrderStatus::Unresolved => OrderStatusDto::Unresolved,
            OrderStatus::Refunding => OrderStatusDto::Refunding,
            OrderStatus::Refunded => OrderStatusDto::Refunded,
            OrderStatus::Closed => OrderStatusDto::Closed,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderResponse {
    #[schema(example = "ORD1763900000000Ab3x")]
    pub order_number: String,
    #[schema(example = 1)]
    pub product_id: i32,
    #[schema(example = "Unitel 5,000 MNT")]
    pub product_name: String,
    #[schema(example = "+97688112233")]
    pub phone_number: String,
    /// In yuan.
    #[schema(example = "12.00")]
    pub amount: String,
    pub status: OrderStatusDto,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// In yuan: the part of the payment refunded or on its way back ("0.00" when none). A delivered order
    /// refunded in part is `success` again once that part is back, with this amount.
    #[schema(example = "0.00")]
    pub refund_amount: String,
}

impl TryFrom<order::Model> for OrderResponse {
    type Error = ApiError;
    fn try_from(o: order::Model) -> Result<Self, ApiError> {
        Ok(OrderResponse {
            status: o.status.into(),
            order_number: o.order_number,
            product_id: o.product_id,
            product_name: o.product_name,
            phone_number: o.phone_number,
            amount: Money::from_stored(o.amount).to_string(),
            created_at: utc(o.created_at),
            updated_at: utc(o.updated_at),
            paid_at: o.paid_at.map(utc),
            transaction_id: o.transaction_id,
            refund_amount: Money::from_stored(o.refund_requested).to_string(),
        })
    }
}

/// One of the caller's orders, with what the buyer was told about it in WeChat.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderDetailResponse {
    #[serde(flatten)]
    pub order: OrderResponse,
    /// The subscribe messages about this order, oldest first (none until it is delivered or refunded).
    pub notifications: Vec<BuyerNotification>,
}

/// A subscribe message about the order, as the buyer sees it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuyerNotification {
    /// `delivered` (the top-up arrived), `refunding` (the money is on its way back), `refunded`.
    #[schema(example = "delivered")]
    pub event: String,
    /// `pending`, `sent`, `unsubscribed` (the buyer did not subscribe), `failed`, `recorded` (sandbox: not sent).
    #[schema(example = "sent")]
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<crate::entities::notification::Model> for BuyerNotification {
    fn from(n: crate::entities::notification::Model) -> Self {
        BuyerNotification {
            event: n.event,
            status: n.status,
            created_at: utc(n.created_at),
            sent_at: utc_opt(n.sent_at),
        }
    }
}

pub(crate) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number, 1 to 1000000 (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u64>,
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub items: Vec<OrderResponse>,
    pub page: u64,
    pub page_size: u64,
    pub total: u64,
}

/// Validates 1-based `page` (default 1) and `pageSize` (1 to 100, default 20).
pub fn page_params(page: Option<u64>, page_size: Option<u64>) -> Result<Paging, ApiError> {
    Paging::new(page, page_size).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))
}

pub(crate) fn utc_opt(t: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    t.map(utc)
}

/// Places an order for a product. The price comes from the catalog.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("openid" = [])),
    request_body = CreateOrderRequest,
    responses(
        (status = 201, description = "The new unpaid order", body = OrderResponse, links(
            ("GetOrder" = (operation_id = "get_order", parameters(("orderNumber" = "$response.body#/orderNumber")))),
            ("CreatePayment" = (operation_id = "create_payment", request_body = json!({"orderNumber": "$response.body#/orderNumber"}))),
            ("AdminGetOrder" = (operation_id = "admin_get_order", parameters(("orderNumber" = "$response.body#/orderNumber")))),
            ("RefundOrder" = (operation_id = "refund_order", parameters(("orderNumber" = "$response.body#/orderNumber")))),
        )),
        (status = 200, description = "Only with ORDER_REUSE_WINDOW_SECONDS set: the caller's unpaid order for the same product and number placed within that window, handed back instead of a second one", body = OrderResponse),
        (status = 400, description = "`INVALID_PHONE_NUMBER`; `INVALID_JSON`: the body is not JSON; `INVALID_REQUEST`: the body could not be read", body = ErrorBody,
            example = json!({"code": "INVALID_PHONE_NUMBER", "message": "phoneNumber must be an optional + and 6 to 15 digits"})),
        (status = 401, description = "`UNAUTHORIZED`: no trusted openid", body = ErrorBody),
        (status = 404, description = "`PRODUCT_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`PRODUCT_UNAVAILABLE`: the product is not on sale", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: fields missing or of the wrong type", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateOrderRequest>,
) -> Result<(StatusCode, Json<OrderResponse>), ApiError> {
    state.limits.orders.check(&caller.openid).map_err(ApiError::RateLimited)?;
    let phone = PhoneNumber::parse(&request.phone_number).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidPhoneNumber, "phoneNumber must be an optional + and 6 to 15 digits")
    })?;
    // At most an hour (checked with the settings), so the conversion holds.
    let window = chrono::Duration::from_std(state.settings.lifecycle.order_reuse_window).unwrap_or_default();
    if !window.is_zero() {
        let since = crate::domain::now_utc() - window;
        if let Some(existing) =
            orders::recent_unpaid(&state.db, &caller.openid, request.product_id, &phone, since).await?
        {
            return Ok((StatusCode::OK, Json(existing.try_into()?)));
        }
    }
    let placing = orders::PlaceOrder { openid: caller.openid, product_id: request.product_id, phone };
    let order = state.orders.place(placing).await?;
    Ok((StatusCode::CREATED, Json(order.try_into()?)))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("openid" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of orders", body = OrderPage),
        (status = 400, description = "`INVALID_REQUEST`: page or pageSize out of range, or an unknown parameter", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let paging = page_params(query.page, query.page_size)?;
    let (page, page_size) = (paging.page(), paging.size());
    let (items, total) = orders::list_orders(&state.db, &caller.openid, paging).await?;
    let items = items.into_iter().map(OrderResponse::try_from).collect::<Result<_, _>>()?;
    Ok(Json(OrderPage { items, page, page_size, total }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetOrderQuery {
    /// `true` right after `wx.requestPayment` succeeds: an unpaid order is first checked with WeChat
    /// (at most once every few seconds per order), so the payment shows without waiting for the callback.
    pub refresh: Option<bool>,
}

/// One of the caller's orders. Another user's order is reported as not found.
#[utoipa::path(get, path = "/orders/{orderNumber}", tag = "orders", security(("openid" = [])),
    params(("orderNumber" = String, Path, pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$", example = "ORD1763900000000Ab3x"), GetOrderQuery),
    responses(
        (status = 200, description = "The order and its notifications", body = OrderDetailResponse),
        (status = 400, description = "`INVALID_REQUEST`: refresh is not true or false, an unknown parameter, or the path is not UTF-8", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`: no such order (none exists outside the pattern), or another user's", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(order_number): ApiPath<String>,
    ApiQuery(query): ApiQuery<GetOrderQuery>,
) -> Result<Json<OrderDetailResponse>, ApiError> {
    let mut order = orders::find_order(&state.db, &caller.openid, &order_number).await?;
    if query.refresh == Some(true) {
        // Recording a payment found now and starting its top-up finish even if the buyer hangs up.
        let task_state = state.clone();
        let seen = order.clone();
        lifecycle::to_completion(async move {
            let interval = task_state.settings.lifecycle.refresh_interval;
            let finding = payments::refresh_payment(&task_state.db, &task_state.wechat, &seen, interval).await?;
            if let Some(finding) = finding {
                lifecycle::react_to_finding(&task_state, &seen.order_number, finding).await?;
            }
            Ok::<_, crate::services::ServiceError>(())
        })
        .await??;
        order = orders::find_order(&state.db, &caller.openid, &order_number).await?;
    }
    let notifications = orders::notifications_of(&state.db, &order.order_number).await?;
    Ok(Json(OrderDetailResponse {
        order: order.try_into()?,
        notifications: notifications.into_iter().map(Into::into).collect(),
    }))
}
