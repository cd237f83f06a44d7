use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

use super::extract::ApiPath;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::services::orders::find_by_number;
use crate::wechat::{Delivery, SandboxPayError, WechatPay};

/// How the simulated platform reports the payment.
#[derive(Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryDto {
    /// One callback, now.
    #[default]
    Once,
    /// Two identical callbacks at the same moment.
    Twice,
    /// One callback, 5 seconds later.
    Late,
    /// No callback: reconciliation (`POST /jobs/reconcile`, or the next tick) finds the payment.
    Never,
}

#[derive(Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SandboxPayRequest {
    pub deliver: DeliveryDto,
    /// Send a `totalFee` one fen short, to see an anomaly.
    pub wrong_amount: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPayResponse {
    pub order_number: String,
    #[schema(example = "4200SANDBOXa1b2c3d4e5f6g7h8")]
    pub transaction_id: String,
    /// The service's answers to the callbacks delivered before this response (none for late/never).
    pub callback_answers: Vec<CallbackAnswerDto>,
}

#[derive(Serialize, ToSchema)]
pub struct CallbackAnswerDto {
    pub status: u16,
    pub errcode: Option<i64>,
}

/// Sandbox only (404 otherwise): plays the user paying. The simulated WeChat side marks the payment paid
/// and delivers the payment callback over HTTP to this service's own callback URL, in the platform's
/// format, so the production path runs. Call `POST /payment/create` first, as the mini-program would.
#[utoipa::path(post, path = "/sandbox/orders/{orderNumber}/pay", tag = "sandbox",
    params(("orderNumber" = String, Path, pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$", example = "ORD1763900000000Ab3x")),
    request_body(content = SandboxPayRequest, description = "Optional (any content type); defaults to one callback now"),
    responses(
        (status = 200, description = "Paid in the sandbox", body = SandboxPayResponse, links(
            ("AdminGetOrder" = (operation_id = "admin_get_order", parameters(("orderNumber" = "$response.body#/orderNumber")))),
            ("RefundOrder" = (operation_id = "refund_order", parameters(("orderNumber" = "$response.body#/orderNumber")))),
            ("RetryOrder" = (operation_id = "retry_order", parameters(("orderNumber" = "$response.body#/orderNumber")))),
            ("MarkDelivered" = (operation_id = "mark_delivered", parameters(("orderNumber" = "$response.body#/orderNumber")))),
        )),
        (status = 400, description = "`INVALID_JSON`: the body is not JSON; `INVALID_REQUEST`: the body could not be read, or the path is not UTF-8", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND` (sandbox off) or `ORDER_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`NO_PREPAY`: call /payment/create first; or `ORDER_NOT_PAYABLE`: closed", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn pay_sandbox_order(
    State(state): State<AppState>,
    ApiPath(order_number): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SandboxPayResponse>, ApiError> {
    let WechatPay::Sandbox(sandbox) = &state.wechat else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such endpoint"));
    };
    let body = body?;
    // Like ApiJson's answers, without requiring a content type: not JSON is 400, the wrong shape 422.
    let request: SandboxPayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SandboxPayRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::InvalidBody(e.to_string()),
            _ => ApiError::new(ErrorCode::InvalidJson, "request body is not valid JSON"),
        })?
    };
    let order = find_by_number(&state.db, &order_number)
        .await
        .map_err(crate::error::from_db)?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound, "order not found"))?;
    let delivery = match request.deliver {
        DeliveryDto::Once => Delivery::Once,
        DeliveryDto::Twice => Delivery::Twice,
        DeliveryDto::Late => Delivery::Late,
        DeliveryDto::Never => Delivery::Never,
    };
    let paid =
        sandbox.pay(&order.order_number, &order.openid, delivery, request.wrong_amount).await.map_err(|e| match e {
            SandboxPayError::NoPrepay => ApiError::new(ErrorCode::NoPrepay, e.to_string()),
            SandboxPayError::Closed => ApiError::new(ErrorCode::OrderNotPayable, e.to_string()),
            SandboxPayError::Unavailable => ApiError::Unavailable,
        })?;
    Ok(Json(SandboxPayResponse {
        order_number: order.order_number,
        transaction_id: paid.transaction_id,
        callback_answers: paid
            .answers
            .into_iter()
            .map(|(status, errcode)| CallbackAnswerDto { status, errcode })
            .collect(),
    }))
}
