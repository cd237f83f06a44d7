use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::{
    CloseOutcome, PaymentParams, PaymentStatus, Prepay, PrepayRequest, RefundRequest, RefundState, TradeState,
    WechatError,
};

/// The simulated WeChat side used when `PAYMENT_SANDBOX=true`: no network, clearly fake parameters
/// (`paySign` starts with `SANDBOX`) that `wx.requestPayment` would refuse, and answers that agree with
/// each other (a payment marked paid queries as SUCCESS, a refunded one as REFUND). State lives in this
/// process only.
///
/// Like the platform, it delivers payment and refund results over HTTP to the service's own callback
/// URLs (camelCase body, `X-WX-SOURCE` header), so the production code path runs.
#[derive(Clone, Default)]
pub struct Sandbox {
    state: Arc<Mutex<State>>,
    callbacks: Arc<Callbacks>,
}

#[derive(Default)]
struct Callbacks {
    /// `http://127.0.0.1:<port>`, known once the listener is bound.
    base: OnceLock<String>,
    payment_path: String,
    refund_path: String,
    mch_id: String,
    http: reqwest::Client,
}

/// How the simulated platform delivers a payment result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Once,
    /// Twice at the same moment.
    Twice,
    /// After [`LATE_DELIVERY`], in the background.
    Late,
    /// Not at all: only reconciliation can find the payment.
    Never,
}

/// How long a `Late` delivery waits.
pub const LATE_DELIVERY: Duration = Duration::from_secs(5);

/// What the simulated payment did.
#[derive(Clone, Debug)]
pub struct SandboxPayment {
    pub transaction_id: String,
    /// The HTTP status and `errcode` of each delivery made before returning.
    pub answers: Vec<(u16, Option<i64>)>,
}

/// Why the simulated user could not pay.
#[derive(Debug, thiserror::Error)]
pub enum SandboxPayError {
    #[error("the order has no prepay in the sandbox; call POST /payment/create first")]
    NoPrepay,
    #[error("the sandbox payment for this order was closed")]
    Closed,
}

#[derive(Default)]
struct State {
    payments: HashMap<String, SimPayment>,
    /// out_refund_no → (out_trade_no, fen)
    refunds: HashMap<String, (String, i64)>,
}

struct SimPayment {
    total_fee: i64,
    state: TradeState,
    transaction_id: Option<String>,
    time_end: Option<String>,
}

fn random(n: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

impl Sandbox {
    pub fn new(payment_path: &str, refund_path: &str, mch_id: Option<&str>) -> Self {
        Sandbox {
            state: Arc::default(),
            callbacks: Arc::new(Callbacks {
                base: OnceLock::new(),
                payment_path: payment_path.to_string(),
                refund_path: refund_path.to_string(),
                mch_id: mch_id.unwrap_or("1900000000").to_string(),
                http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
            }),
        }
    }

    /// Where the service listens, for delivering callbacks to it.
    pub fn set_base(&self, base: String) {
        let _ = self.callbacks.base.set(base);
    }

    /// Plays the user paying and the platform calling back.
    pub async fn pay(
        &self,
        order_number: &str,
        openid: &str,
        delivery: Delivery,
        wrong_amount: bool,
    ) -> Result<SandboxPayment, SandboxPayError> {
        let known = self.state().payments.get(order_number).map(|p| p.state.clone());
        match known {
            None => return Err(SandboxPayError::NoPrepay),
            Some(TradeState::Closed) => return Err(SandboxPayError::Closed),
            Some(_) => {}
        }
        let (transaction_id, time_end, fen) = self.mark_paid(order_number).ok_or(SandboxPayError::Closed)?;
        let fee = if wrong_amount { fen - 1 } else { fen };
        let body = json!({
            "returnCode": "SUCCESS", "appid": "wxsandbox0000000000", "mchId": "1800780001",
            "subAppid": "wxsandbox0000000000", "subMchId": self.callbacks.mch_id, "nonceStr": random(16),
            "resultCode": "SUCCESS", "openid": "oSandboxProvider000000000000", "isSubscribe": "N",
            "subOpenid": openid, "subIsSubscribe": "N", "tradeType": "JSAPI", "bankType": "OTHERS",
            "totalFee": fee, "feeType": "CNY", "cashFee": fee, "transactionId": transaction_id,
            "outTradeNo": order_number, "timeEnd": time_end,
        });
        let path = format!("{}/{order_number}", self.callbacks.payment_path);
        let answers = match delivery {
            Delivery::Never => vec![],
            Delivery::Once => vec![self.deliver(&path, &body).await],
            Delivery::Twice => {
                let (a, b) = tokio::join!(self.deliver(&path, &body), self.deliver(&path, &body));
                vec![a, b]
            }
            Delivery::Late => {
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LATE_DELIVERY).await;
                    this.deliver(&path, &body).await;
                });
                vec![]
            }
        };
        Ok(SandboxPayment { transaction_id, answers })
    }

    /// POSTs a result to the service the way the platform does.
    async fn deliver(&self, path: &str, body: &serde_json::Value) -> (u16, Option<i64>) {
        let Some(base) = self.callbacks.base.get() else {
            tracing::warn!(path, "sandbox: service address unknown; callback not delivered");
            return (0, None);
        };
        let sent =
            self.callbacks.http.post(format!("{base}{path}")).header("X-WX-SOURCE", "sandbox").json(body).send().await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let errcode = response.json::<serde_json::Value>().await.ok().and_then(|v| v["errcode"].as_i64());
                tracing::info!(path, status, ?errcode, "sandbox: callback delivered");
                (status, errcode)
            }
            Err(error) => {
                tracing::warn!(path, error = %error.without_url(), "sandbox: callback not delivered");
                (0, None)
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn unified_order(&self, request: &PrepayRequest) -> Prepay {
        let order_number = request.order_number.to_string();
        self.state().payments.entry(order_number.clone()).or_insert(SimPayment {
            total_fee: request.amount.to_fen(),
            state: TradeState::NotPay,
            transaction_id: None,
            time_end: None,
        });
        let nonce = random(16);
        let prepay_id = format!("sandbox_{order_number}");
        Prepay {
            params: PaymentParams {
                app_id: "wxsandbox0000000000".into(),
                time_stamp: chrono::Utc::now().timestamp().to_string(),
                nonce_str: nonce.clone(),
                package: format!("prepay_id={prepay_id}"),
                sign_type: "MD5".into(),
                pay_sign: format!("SANDBOX-{nonce}"),
            },
            prepay_id,
        }
    }

    /// Plays the user paying: the payment becomes SUCCESS. Returns the transaction id and `timeEnd`,
    /// or `None` when there is no prepay for the order or it was closed.
    pub fn mark_paid(&self, order_number: &str) -> Option<(String, String, i64)> {
        let mut state = self.state();
        let payment = state.payments.get_mut(order_number)?;
        if payment.state == TradeState::NotPay {
            let beijing = chrono::Utc::now() + chrono::Duration::hours(8);
            payment.state = TradeState::Success;
            payment.transaction_id = Some(format!("4200SANDBOX{}", random(16)));
            payment.time_end = Some(beijing.format("%Y%m%d%H%M%S").to_string());
        }
        if !payment.state.is_paid() {
            return None;
        }
        Some((payment.transaction_id.clone()?, payment.time_end.clone()?, payment.total_fee))
    }

    pub fn query_order(&self, order_number: &str) -> PaymentStatus {
        match self.state().payments.get(order_number) {
            Some(p) => PaymentStatus::from_wire(
                p.state.clone(),
                Some(p.total_fee),
                p.transaction_id.clone(),
                p.time_end.as_deref(),
            ),
            None => PaymentStatus::not_exist(),
        }
    }

    pub fn close_order(&self, order_number: &str) -> Result<CloseOutcome, WechatError> {
        let mut state = self.state();
        let Some(payment) = state.payments.get_mut(order_number) else {
            return Ok(CloseOutcome::NotFound);
        };
        match payment.state {
            TradeState::NotPay => {
                payment.state = TradeState::Closed;
                Ok(CloseOutcome::Closed)
            }
            TradeState::Closed => Ok(CloseOutcome::AlreadyClosed),
            _ => Ok(CloseOutcome::Paid),
        }
    }

    pub fn refund(&self, request: &RefundRequest) -> Result<Option<String>, WechatError> {
        let mut state = self.state();
        if state.refunds.contains_key(&request.out_refund_no) {
            return Ok(Some(format!("sandbox_refund_{}", request.out_refund_no)));
        }
        let already: i64 =
            state.refunds.values().filter(|(order, _)| order == &request.order_number).map(|(_, fen)| fen).sum();
        let Some(payment) = state.payments.get_mut(&request.order_number) else {
            return Err(business("ORDERNOTEXIST", "订单不存在"));
        };
        if !payment.state.is_paid() {
            return Err(business("TRADE_STATE_ERROR", "订单状态错误"));
        }
        if already + request.refund.to_fen() > payment.total_fee {
            return Err(business("INVALID_REQUEST", "退款金额大于支付金额"));
        }
        payment.state = TradeState::Refund;
        let total_fee = payment.total_fee;
        state.refunds.insert(request.out_refund_no.clone(), (request.order_number.clone(), request.refund.to_fen()));
        drop(state);
        let refund_id = format!("sandbox_refund_{}", request.out_refund_no);
        // The platform reports the result a moment later, to the refund request's container.path.
        let body = json!({
            "returnCode": "SUCCESS", "outTradeNo": request.order_number, "outRefundNo": request.out_refund_no,
            "refundId": refund_id, "totalFee": total_fee, "refundFee": request.refund.to_fen(),
            "settlementRefundFee": request.refund.to_fen(), "refundStatus": "SUCCESS",
            "successTime": (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S").to_string(),
            "refundRecvAccout": "支付用户零钱", "refundAccount": "REFUND_SOURCE_UNSETTLED_FUNDS",
            "refundRequestSource": "API",
        });
        if self.callbacks.base.get().is_some() {
            let this = self.clone();
            let path = format!("{}/{}", self.callbacks.refund_path, request.order_number);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                this.deliver(&path, &body).await;
            });
        }
        Ok(Some(refund_id))
    }

    pub fn query_refund(&self, out_refund_no: &str) -> RefundState {
        if self.state().refunds.contains_key(out_refund_no) {
            RefundState::Success
        } else {
            RefundState::NotFound
        }
    }
}

fn business(code: &str, description: &str) -> WechatError {
    WechatError::Business { err_code: code.into(), err_code_des: description.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, OrderNumber};

    fn prepay(sandbox: &Sandbox) -> String {
        let number = OrderNumber::generate(1_700_000_000_000);
        sandbox.unified_order(&PrepayRequest {
            order_number: number.clone(),
            description: "x".into(),
            openid: "o".into(),
            amount: Money::from_fen(1200).unwrap(),
            client_ip: "127.0.0.1".parse().unwrap(),
        });
        number.to_string()
    }

    fn refund(number: &str, no: &str, fen: i64) -> RefundRequest {
        RefundRequest {
            order_number: number.into(),
            out_refund_no: no.into(),
            description: "x".into(),
            total: Money::from_fen(1200).unwrap(),
            refund: Money::from_fen(fen).unwrap(),
            reason: "r".into(),
        }
    }

    #[test]
    fn answers_agree_through_pay_and_refund() {
        let sandbox = Sandbox::default();
        let number = prepay(&sandbox);
        assert_eq!(sandbox.query_order(&number).trade_state, TradeState::NotPay);
        assert!(sandbox.mark_paid(&number).is_some());
        let status = sandbox.query_order(&number);
        assert_eq!((status.trade_state, status.total.map(|m| m.to_fen())), (TradeState::Success, Some(1200)));
        assert_eq!(sandbox.close_order(&number).unwrap(), CloseOutcome::Paid);
        assert_eq!(sandbox.query_refund("R1"), RefundState::NotFound);
        sandbox.refund(&refund(&number, "R1", 1200)).unwrap();
        assert_eq!(sandbox.query_refund("R1"), RefundState::Success);
        assert_eq!(sandbox.query_order(&number).trade_state, TradeState::Refund);
    }

    #[test]
    fn a_closed_payment_cannot_be_paid_and_refunds_cannot_exceed_it() {
        let sandbox = Sandbox::default();
        let closed = prepay(&sandbox);
        sandbox.close_order(&closed).unwrap();
        assert!(sandbox.mark_paid(&closed).is_none());
        let paid = prepay(&sandbox);
        sandbox.mark_paid(&paid);
        sandbox.refund(&refund(&paid, "R1", 1000)).unwrap();
        assert!(sandbox.refund(&refund(&paid, "R2", 201)).is_err());
        assert!(sandbox.refund(&refund(&paid, "R1", 1000)).is_ok(), "a retry with the same number is fine");
    }
}
