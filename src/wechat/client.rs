use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

use super::wire::{
    self, Container, Empty, Envelope, OrderRef, QueryOrderResponse, RefundRef, RefundResponse, UnifiedOrderRequest,
    UnifiedOrderResponse,
};
use super::{
    CloseOutcome, PaymentParams, PaymentStatus, Prepay, PrepayRequest, RefundRequest, RefundState, TradeState,
    WechatError,
};
use crate::config::WechatSettings;

/// `body` is at most 128 characters on the wire.
const MAX_BODY_CHARS: usize = 128;

/// The open API over the platform's private link: plain HTTP, no token, no signature.
#[derive(Clone)]
pub struct OpenApiClient {
    http: reqwest::Client,
    target: Arc<Target>,
}

struct Target {
    base: String,
    mch_id: String,
    env_id: String,
    callback_service: String,
    callback_path: String,
    refund_callback_path: String,
}

/// The v2 status fields every `respdata` carries.
#[derive(Deserialize)]
struct RespData<T> {
    return_code: Option<String>,
    return_msg: Option<String>,
    result_code: Option<String>,
    err_code: Option<String>,
    err_code_des: Option<String>,
    #[serde(flatten)]
    body: T,
}

impl OpenApiClient {
    pub fn new(settings: &WechatSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // The platform answers 302 when a request is not what it expects; following it hides the cause.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        // Presence of these is checked when the settings are loaded (they are required outside sandbox).
        let target = Target {
            base: settings.api_base.clone(),
            mch_id: settings.mch_id.clone().unwrap_or_default(),
            env_id: settings.env_id.clone().unwrap_or_default(),
            callback_service: settings.callback_service.clone().unwrap_or_default(),
            callback_path: settings.callback_path.clone(),
            refund_callback_path: settings.refund_callback_path.clone(),
        };
        Ok(OpenApiClient { http, target: Arc::new(target) })
    }

    pub async fn unified_order(&self, request: &PrepayRequest) -> Result<Prepay, WechatError> {
        let order_number = request.order_number.as_str();
        let body = UnifiedOrderRequest {
            body: request.description.chars().take(MAX_BODY_CHARS).collect(),
            openid: &request.openid,
            out_trade_no: order_number,
            spbill_create_ip: request.client_ip.to_string(),
            env_id: &self.target.env_id,
            sub_mch_id: &self.target.mch_id,
            total_fee: request.amount.to_fen(),
            callback_type: 2,
            container: Container {
                service: &self.target.callback_service,
                path: format!("{}/{order_number}", self.target.callback_path),
            },
        };
        let answer: UnifiedOrderResponse = self.call("unifiedOrder", order_number, &body).await?;
        let prepay_id = answer.prepay_id.filter(|id| !id.is_empty());
        let payment = answer.payment;
        // WeChat has been seen to send a `payment` object with `package: "prepay_id="` on failure, so the
        // prepay id must be present on its own and in the package.
        match (prepay_id, payment) {
            (Some(prepay_id), Some(p)) => {
                let package = p.package.unwrap_or_default();
                if package.strip_prefix("prepay_id=").is_none_or(str::is_empty) {
                    return Err(WechatError::MissingPrepay);
                }
                let time_stamp = match p.time_stamp {
                    Some(serde_json::Value::String(s)) => s,
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => return Err(WechatError::Malformed("payment.timeStamp missing".into())),
                };
                Ok(Prepay {
                    prepay_id,
                    params: PaymentParams {
                        app_id: p.app_id.unwrap_or_default(),
                        time_stamp,
                        nonce_str: p.nonce_str.unwrap_or_default(),
                        package,
                        sign_type: p.sign_type.unwrap_or_default(),
                        pay_sign: p.pay_sign.unwrap_or_default(),
                    },
                })
            }
            _ => Err(WechatError::MissingPrepay),
        }
    }

    pub async fn query_order(&self, order_number: &str) -> Result<PaymentStatus, WechatError> {
        let body = OrderRef { out_trade_no: order_number, sub_mch_id: &self.target.mch_id };
        let answer: QueryOrderResponse = match self.call("queryorder", order_number, &body).await {
            Err(WechatError::Business { err_code, .. }) if err_code == "ORDERNOTEXIST" => {
                return Ok(PaymentStatus::not_exist())
            }
            other => other?,
        };
        let total_fee = match answer.total_fee {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(PaymentStatus::from_wire(
            TradeState::parse(answer.trade_state.as_deref().unwrap_or_default()),
            total_fee,
            answer.transaction_id,
            answer.time_end.as_deref(),
        ))
    }

    pub async fn close_order(&self, order_number: &str) -> Result<CloseOutcome, WechatError> {
        let body = OrderRef { out_trade_no: order_number, sub_mch_id: &self.target.mch_id };
        match self.call::<_, Empty>("closeorder", order_number, &body).await {
            Ok(_) => Ok(CloseOutcome::Closed),
            Err(WechatError::Business { err_code, err_code_des }) => match err_code.as_str() {
                "ORDERCLOSED" => Ok(CloseOutcome::AlreadyClosed),
                "ORDERNOTEXIST" => Ok(CloseOutcome::NotFound),
                "ORDERPAID" => Ok(CloseOutcome::Paid),
                _ => Err(WechatError::Business { err_code, err_code_des }),
            },
            Err(other) => Err(other),
        }
    }

    pub async fn refund(&self, request: &RefundRequest) -> Result<Option<String>, WechatError> {
        let body = wire::RefundRequest {
            body: request.description.chars().take(MAX_BODY_CHARS).collect(),
            out_trade_no: &request.order_number,
            out_refund_no: &request.out_refund_no,
            env_id: &self.target.env_id,
            sub_mch_id: &self.target.mch_id,
            total_fee: request.total.to_fen(),
            refund_fee: request.refund.to_fen(),
            refund_desc: request.reason.chars().take(80).collect(),
            callback_type: 2,
            container: Container {
                service: &self.target.callback_service,
                path: format!("{}/{}", self.target.refund_callback_path, request.order_number),
            },
        };
        let answer: RefundResponse = self.call("refund", &request.order_number, &body).await?;
        Ok(answer.refund_id.filter(|id| !id.is_empty()))
    }

    pub async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, WechatError> {
        let body = RefundRef { out_refund_no, sub_mch_id: &self.target.mch_id };
        let answer: serde_json::Map<String, serde_json::Value> =
            match self.call("queryrefund", out_refund_no, &body).await {
                Err(WechatError::Business { err_code, .. }) if err_code == "REFUNDNOTEXIST" => {
                    return Ok(RefundState::NotFound)
                }
                other => other?,
            };
        refund_state(&answer, out_refund_no).ok_or_else(|| {
            let keys: Vec<&String> = answer.keys().collect();
            WechatError::Malformed(format!("queryrefund answer without a refund status; keys {keys:?}"))
        })
    }

    /// POSTs one open-API call and checks the envelope and the v2 status fields.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        order_number: &str,
        body: &B,
    ) -> Result<T, WechatError> {
        let started = Instant::now();
        let result = self.send(endpoint, body).await;
        let latency = started.elapsed();
        let latency_ms = latency.as_millis() as u64;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(WechatError::Timeout) => "timeout",
            Err(WechatError::Unreachable(_) | WechatError::HttpStatus(_) | WechatError::EmptyBody) => "unavailable",
            Err(WechatError::Malformed(_)) => "malformed",
            Err(_) => "refused",
        };
        metrics::counter!("wechat_calls_total", "endpoint" => endpoint, "outcome" => outcome).increment(1);
        metrics::histogram!("wechat_call_duration_seconds", "endpoint" => endpoint).record(latency.as_secs_f64());
        match &result {
            Ok((seqid, _)) => tracing::info!(
                endpoint,
                order_number,
                latency_ms,
                seqid = seqid.as_deref().unwrap_or("-"),
                "wechat call succeeded"
            ),
            Err(error) => tracing::warn!(endpoint, order_number, latency_ms, %error, "wechat call failed"),
        }
        result.map(|(_, body)| body)
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &B,
    ) -> Result<(Option<String>, T), WechatError> {
        let url = format!("{}/_/pay/{endpoint}", self.target.base);
        // `.json()` sets `Content-Type: application/json`, without which the platform answers 302/400.
        let response = self.http.post(url).json(body).send().await.map_err(transport)?;
        let status = response.status();
        let seqid = response.headers().get("x-openapi-seqid").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(WechatError::HttpStatus(status.as_u16()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(WechatError::EmptyBody);
        }
        let envelope: Envelope<RespData<T>> =
            serde_json::from_slice(&bytes).map_err(|e| WechatError::Malformed(e.to_string()))?;
        match envelope.errcode {
            Some(0) => {}
            Some(errcode) => return Err(WechatError::Api { errcode, errmsg: envelope.errmsg.unwrap_or_default() }),
            None => return Err(WechatError::Malformed("errcode missing".into())),
        }
        let data = envelope.respdata.ok_or_else(|| WechatError::Malformed("respdata missing".into()))?;
        if data.return_code.as_deref() != Some("SUCCESS") {
            return Err(WechatError::Refused { return_msg: data.return_msg.unwrap_or_default() });
        }
        if data.result_code.as_deref() != Some("SUCCESS") {
            return Err(WechatError::Business {
                err_code: data.err_code.unwrap_or_default(),
                err_code_des: data.err_code_des.unwrap_or_default(),
            });
        }
        Ok((seqid, data.body))
    }
}

/// The v2 answer lists refunds as `refund_status_0`, `out_refund_no_0`, …; lists of objects have been
/// seen through cloud hosting too. Both readings are accepted.
fn refund_state(answer: &serde_json::Map<String, serde_json::Value>, out_refund_no: &str) -> Option<RefundState> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let count = answer.get("refund_count").and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok())).unwrap_or(1);
    for i in 0..count.clamp(0, 50) {
        let number = answer.get(&format!("out_refund_no_{i}")).and_then(text);
        if number.as_deref().is_none_or(|n| n == out_refund_no) {
            if let Some(state) = answer.get(&format!("refund_status_{i}")).and_then(text) {
                return Some(RefundState::parse(&state));
            }
        }
    }
    for value in answer.values() {
        for item in value.as_array().into_iter().flatten() {
            let matches = item.get("out_refund_no").and_then(text).is_none_or(|n| n == out_refund_no);
            if let (true, Some(state)) = (matches, item.get("refund_status").and_then(text)) {
                return Some(RefundState::parse(&state));
            }
        }
    }
    answer.get("refund_status").and_then(text).map(|s| RefundState::parse(&s))
}

fn transport(error: reqwest::Error) -> WechatError {
    if error.is_timeout() {
        WechatError::Timeout
    } else if error.is_decode() || error.is_body() {
        WechatError::Malformed(error.to_string())
    } else {
        WechatError::Unreachable(error)
    }
}
