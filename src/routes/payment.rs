use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use super::identity::{client_ip, from_platform, Caller};
use crate::app::AppState;
use crate::domain::now_utc;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::lifecycle::{self, Happened};
use crate::services::payments::{self, CallbackCheck, CallbackDelivery, CallbackError, CallbackOutcome};
use crate::services::refunds;
use crate::wechat::PaymentParams;

/// Headers kept with each callback for audit.
const AUDITED_HEADERS: &[&str] = &[
    "x-wx-source",
    "x-wx-env",
    "x-wx-service",
    "x-wx-appid",
    "content-type",
    "user-agent",
    "x-forwarded-for",
    "x-original-forwarded-for",
    "x-request-id",
];

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentRequest {
    #[schema(example = "ORD1763900000000Ab3x", pattern = "^ORD[0-9]{13}[A-Za-z0-9]{4}$")]
    pub order_number: String,
}

/// Pass as is to `wx.requestPayment`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentParamsResponse {
    #[schema(example = "wxd2565e6a04246fd1")]
    pub app_id: String,
    /// Seconds since the epoch, as a string.
    #[schema(example = "1647841885")]
    pub time_stamp: String,
    #[schema(example = "BfM1ojiTfFCbpmkL")]
    pub nonce_str: String,
    #[schema(example = "prepay_id=wx2825019415cb82821e6a15a7c113510000")]
    pub package: String,
    #[schema(example = "MD5")]
    pub sign_type: String,
    #[schema(example = "038EE415FD025B0D37717E8A1D6C34B6")]
    pub pay_sign: String,
}

impl From<PaymentParams> for PaymentParamsResponse {
    fn from(p: PaymentParams) -> Self {
        PaymentParamsResponse {
            app_id: p.app_id,
            time_stamp: p.time_stamp,
            nonce_str: p.nonce_str,
            package: p.package,
            sign_type: p.sign_type,
            pay_sign: p.pay_sign,
        }
    }
}

/// Creates (or reuses) the WeChat prepay for an unpaid order and returns the `wx.requestPayment`
/// parameters. In sandbox mode they are fake (`paySign` starts with `SANDBOX`).
#[utoipa::path(post, path = "/payment/create", tag = "payment", security(("openid" = [])),
    request_body = CreatePaymentRequest,
    responses(
        (status = 200, description = "Parameters for wx.requestPayment", body = PaymentParamsResponse, links(
            ("GetOrder" = (operation_id = "get_order", parameters(("orderNumber" = "$request.body#/orderNumber")))),
            ("PaySandboxOrder" = (operation_id = "pay_sandbox_order", parameters(("orderNumber" = "$request.body#/orderNumber")))),
        )),
        (status = 400, description = "`INVALID_JSON`: the body is not JSON; `INVALID_REQUEST`: the body could not be read", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = ErrorBody),
        (status = 404, description = "`ORDER_NOT_FOUND`: unknown (none exists outside the pattern), or another user's", body = ErrorBody),
        (status = 409, description = "`ORDER_NOT_PAYABLE`: the order is not unpaid", body = ErrorBody,
            example = json!({"code": "ORDER_NOT_PAYABLE", "message": "order is paid; only unpaid orders can be paid"})),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: orderNumber missing or not a string", body = ErrorBody),
        (status = 502, description = "`WECHAT_ERROR`: WeChat Pay refused or failed", body = ErrorBody,
            example = json!({"code": "WECHAT_ERROR", "message": "WeChat Pay refused the order: PARAM_ERROR 无效的openid"})),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreatePaymentRequest>,
) -> Result<Json<PaymentParamsResponse>, ApiError> {
    state.limits.payments.check(&caller.openid).map_err(ApiError::RateLimited)?;
    let ip = client_ip(&headers, state.settings.wechat.server_ip);
    let expiry = state.settings.lifecycle.order_expiry;
    let params =
        payments::create_payment(&state.db, &state.wechat, &caller.openid, &request.order_number, ip, expiry).await?;
    Ok(Json(params.into()))
}

/// The platform's answer format: `{"errcode": 0, "errmsg": "ok"}` acknowledges; anything else makes it
/// redeliver. Failures also carry the usual `code` and `message`.
#[derive(Serialize, ToSchema)]
pub struct CallbackAnswer {
    #[schema(example = 0)]
    pub errcode: u16,
    #[schema(example = "ok")]
    pub errmsg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn acknowledge() -> Response {
    Json(CallbackAnswer { errcode: 0, errmsg: "ok".into(), code: None, message: None }).into_response()
}

fn refuse(error: ApiError) -> Response {
    let status = error.status();
    let body = error.body();
    let answer = CallbackAnswer {
        errcode: status.as_u16(),
        errmsg: body.message.clone(),
        code: Some(body.code),
        message: Some(body.message),
    };
    (status, Json(answer)).into_response()
}

/// The payment-result callback from WeChat Cloud Hosting (`callback_type` 2). Stored, checked against
/// the order (amount, merchant, order number), then the order moves to `paid` exactly once.
#[utoipa::path(post, path = "/payment/callback/{orderNumber}", tag = "payment",
    params(("orderNumber" = String, Path, description = "The order the prepay named in container.path")),
    request_body(content = Object, description = "The platform's camelCase notification",
        example = json!({"returnCode":"SUCCESS","resultCode":"SUCCESS","subMchId":"1712734762","totalFee":1200,
            "transactionId":"4200004561202203217657282768","outTradeNo":"ORD1763900000000Ab3x","timeEnd":"20220321132007"})),
    responses(
        (status = 200, description = "Recorded (paid, duplicate, or anomaly): errcode 0", body = CallbackAnswer),
        (status = 400, description = "`INVALID_JSON`: body is not a JSON object (stored, not acted on); `INVALID_REQUEST`: the body could not be read, or the path is not UTF-8", body = CallbackAnswer),
        (status = 401, description = "`UNTRUSTED_SOURCE`: production delivery without X-WX-SOURCE; nothing stored", body = CallbackAnswer),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = CallbackAnswer),
        (status = 502, description = "`WECHAT_ERROR`: queryorder could not confirm the payment; stored, not acted on, the platform will redeliver", body = CallbackAnswer),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: not recorded; the platform will redeliver", body = CallbackAnswer),
    ))]
pub async fn handle_payment_callback(
    State(state): State<AppState>,
    path: Result<ApiPath<String>, ApiError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let order_number = match path {
        Ok(ApiPath(order_number)) => order_number,
        Err(refused) => return refuse(refused),
    };
    let body = match platform_body(&state, &order_number, &headers, body, "payment") {
        Ok(body) => body,
        Err(refused) => return refuse(refused),
    };
    // Storing the delivery, deciding it and starting what follows finish even if the platform hangs
    // up: a cancelled handler would leave the delivery `received` and a paid order never fulfilled.
    let task_state = state.clone();
    let headers = audited_headers(&headers);
    let path_order_number = order_number.clone();
    let received_at = now_utc();
    let handled = lifecycle::to_completion(async move {
        let state = task_state;
        let delivery = CallbackDelivery { path_order_number: &path_order_number, headers, body: &body, received_at };
        let check = CallbackCheck {
            mch_id: state.settings.wechat.mch_id.as_deref(),
            verify: state.settings.lifecycle.callback_verify,
            query_limit: Some(&state.limits.callback_queries),
            turns: Some(&state.limits.callback_turns),
            paid: Some(&state.limits.paid_orders),
        };
        let order_number = path_order_number.clone();
        let outcome = match payments::record_payment(
            &state.db,
            &state.writes,
            &state.deliveries,
            &state.wechat,
            &check,
            delivery,
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(CallbackError::Unprocessable(detail)) => {
                // Redelivery cannot fix it, but a person must see it: money may have arrived.
                let alert = format!("a payment callback could not be processed: {detail}");
                lifecycle::react(&state, Happened::Anomaly { order_number, detail: alert });
                return Err(CallbackError::Unprocessable(detail));
            }
            Err(other) => return Err(other),
        };
        // The delivery's anomaly, if any, is already on the order (record_payment wrote it).
        match outcome {
            CallbackOutcome::Confirmed(confirmation) => {
                lifecycle::react_to_confirmation(&state, &order_number, confirmation)
            }
            CallbackOutcome::Anomaly(detail) => lifecycle::react(&state, Happened::Anomaly { order_number, detail }),
            CallbackOutcome::Rejected(_)
            | CallbackOutcome::NotSuccess
            | CallbackOutcome::Contradicted
            | CallbackOutcome::UnknownOrder => {}
        }
        Ok::<_, CallbackError>(())
    })
    .await;
    match handled {
        Ok(Ok(())) => acknowledge(),
        Ok(Err(error)) => callback_failure(&order_number, error),
        Err(interrupted) => refuse(interrupted.into()),
    }
}

/// The body of a delivery from the platform, or the refusal to answer: in production a delivery without
/// `X-WX-SOURCE` did not come through WeChat Cloud Hosting and changes nothing.
fn platform_body(
    state: &AppState,
    order_number: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: &'static str,
) -> Result<Bytes, ApiError> {
    if state.settings.is_production() && !from_platform(headers) {
        tracing::warn!(order_number, kind, "callback without X-WX-SOURCE refused");
        metrics::counter!("payment_callbacks_total", "outcome" => "refused").increment(1);
        return Err(ApiError::UntrustedSource);
    }
    body.map_err(ApiError::from)
}

/// The platform redelivers on anything but errcode 0: used for what another delivery can fix.
fn callback_failure(order_number: &str, error: CallbackError) -> Response {
    match error {
        CallbackError::Malformed => refuse(ApiError::new(ErrorCode::InvalidJson, "callback body is not a JSON object")),
        CallbackError::Unconfirmed(error) => {
            tracing::error!(order_number, %error, "callback could not be confirmed; asking for redelivery");
            refuse(ApiError::Wechat(error))
        }
        CallbackError::RateLimited(seconds) => {
            tracing::warn!(order_number, "callback asked for too many queryorder calls; the platform will redeliver");
            refuse(ApiError::RateLimited(seconds))
        }
        CallbackError::Unprocessable(detail) => {
            tracing::error!(
                order_number,
                detail,
                "callback cannot be processed; acknowledged so it is not redelivered"
            );
            acknowledge()
        }
        CallbackError::Database(error) => {
            tracing::error!(order_number, %error, "callback not recorded; asking for redelivery");
            refuse(ApiError::Unavailable)
        }
    }
}

/// The refund-result notification (its format is not documented: stored as received, then every open
/// refund of the order is confirmed with `queryrefund` by `out_refund_no`).
#[utoipa::path(post, path = "/payment/refund-callback/{orderNumber}", tag = "payment",
    params(("orderNumber" = String, Path)),
    request_body(content = Object, description = "The platform's refund notification, stored as received"),
    responses(
        (status = 200, description = "Stored and confirmed: errcode 0", body = CallbackAnswer),
        (status = 400, description = "`INVALID_JSON`: body is not a JSON object; `INVALID_REQUEST`: the body could not be read, or the path is not UTF-8", body = CallbackAnswer),
        (status = 401, description = "`UNTRUSTED_SOURCE`: production delivery without X-WX-SOURCE", body = CallbackAnswer),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = CallbackAnswer),
        (status = 502, description = "`WECHAT_ERROR`: queryrefund failed; the platform will redeliver", body = CallbackAnswer),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = CallbackAnswer),
    ))]
pub async fn handle_refund_callback(
    State(state): State<AppState>,
    path: Result<ApiPath<String>, ApiError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let order_number = match path {
        Ok(ApiPath(order_number)) => order_number,
        Err(refused) => return refuse(refused),
    };
    let body = match platform_body(&state, &order_number, &headers, body, "refund") {
        Ok(body) => body,
        Err(refused) => return refuse(refused),
    };
    let task_state = state.clone();
    let headers = audited_headers(&headers);
    let path_order_number = order_number.clone();
    let received_at = now_utc();
    let handled = lifecycle::to_completion(async move {
        let delivery = CallbackDelivery { path_order_number: &path_order_number, headers, body: &body, received_at };
        let confirmed = refunds::record_refund_notification(&task_state.db, &task_state.wechat, delivery).await?;
        // What the confirmation found is reacted to like any other refund outcome (alerts, the buyer's
        // notification).
        for refund in confirmed {
            lifecycle::react(&task_state, Happened::Refund(refund));
        }
        Ok::<_, CallbackError>(())
    })
    .await;
    match handled {
        Ok(Ok(())) => acknowledge(),
        Ok(Err(error)) => callback_failure(&order_number, error),
        Err(interrupted) => refuse(interrupted.into()),
    }
}

fn audited_headers(headers: &HeaderMap) -> String {
    let map: serde_json::Map<String, serde_json::Value> = AUDITED_HEADERS
        .iter()
        .filter_map(|name| Some((name.to_string(), headers.get(*name)?.to_str().ok()?.into())))
        .collect();
    serde_json::Value::Object(map).to_string()
}
