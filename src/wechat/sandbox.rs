use rand::distr::Alphanumeric;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{PaymentParams, PaymentStatus, Prepay, PrepayRequest, RefundRequest, RefundState, TradeState, WechatError};

/// The simulated WeChat side used when `PAYMENT_SANDBOX=true`: no network, clearly fake parameters
/// (`paySign` starts with `SANDBOX`) that `wx.requestPayment` would refuse, and answers that agree with
/// each other (a payment marked paid queries as SUCCESS, a refunded one as REFUND). State lives in this
/// process only.
#[derive(Clone, Default)]
pub struct Sandbox {
    state: Arc<Mutex<State>>,
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
            Some(p) => PaymentStatus {
                trade_state: p.state.clone(),
                total_fee: Some(p.total_fee),
                transaction_id: p.transaction_id.clone(),
                time_end: p.time_end.clone(),
            },
            None => PaymentStatus {
                trade_state: TradeState::NotExist,
                total_fee: None,
                transaction_id: None,
                time_end: None,
            },
        }
    }

    pub fn close_order(&self, order_number: &str) -> Result<(), WechatError> {
        let mut state = self.state();
        let Some(payment) = state.payments.get_mut(order_number) else {
            return Err(business("ORDERNOTEXIST", "订单不存在"));
        };
        match payment.state {
            TradeState::NotPay | TradeState::Closed => {
                payment.state = TradeState::Closed;
                Ok(())
            }
            _ => Err(business("ORDERPAID", "订单已支付")),
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
        state.refunds.insert(request.out_refund_no.clone(), (request.order_number.clone(), request.refund.to_fen()));
        Ok(Some(format!("sandbox_refund_{}", request.out_refund_no)))
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
        assert_eq!((status.trade_state, status.total_fee), (TradeState::Success, Some(1200)));
        assert!(sandbox.close_order(&number).is_err());
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
