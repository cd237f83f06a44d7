use rand::distr::Alphanumeric;
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, SqlErr, TransactionTrait,
};
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{
    CloseOutcome, PaymentParams, PaymentStatus, Prepay, PrepayRequest, RefundRequest, RefundState, TradeState,
    WechatError,
};
use crate::domain::now_utc;
use crate::entities::sandbox_payment::{self, SandboxTradeState};
use crate::entities::sandbox_refund;

/// The simulated WeChat side used when `PAYMENT_SANDBOX=true`: no network, clearly fake parameters
/// (`paySign` starts with `SANDBOX`) that `wx.requestPayment` would refuse, and answers that agree with
/// each other (a payment marked paid queries as SUCCESS, a refunded one as REFUND).
///
/// Its state is the database's `sandbox_payments` and `sandbox_refunds`, so it survives restarts and
/// every replica on the database agrees. Each operation is one conditional write (or one transaction of
/// them) whose guard decides, never a read then a write: like the platform, every call here is safe to
/// repeat and to race. A database failure is answered as the platform answers its own, `SYSTEMERROR`
/// (call again with the same parameters).
///
/// Like the platform, it delivers payment and refund results over HTTP to the service's own callback
/// URLs (camelCase body, `X-WX-SOURCE` header), so the production code path runs.
#[derive(Clone)]
pub struct Sandbox {
    db: DatabaseConnection,
    callbacks: Arc<Callbacks>,
}

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
    /// The sandbox's tables could not be read or written; nothing was paid. Try again.
    #[error("the sandbox is unavailable; try again")]
    Unavailable,
}

impl From<SandboxTradeState> for TradeState {
    fn from(state: SandboxTradeState) -> Self {
        match state {
            SandboxTradeState::NotPay => TradeState::NotPay,
            SandboxTradeState::Success => TradeState::Success,
            SandboxTradeState::Refund => TradeState::Refund,
            SandboxTradeState::Closed => TradeState::Closed,
        }
    }
}

fn random(n: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

/// `time_end` on the wire: `yyyyMMddHHmmss` in Beijing time.
fn time_end(paid_at: chrono::NaiveDateTime) -> String {
    (paid_at + chrono::Duration::hours(8)).format("%Y%m%d%H%M%S").to_string()
}

fn is_duplicate(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl Sandbox {
    pub fn new(db: DatabaseConnection, payment_path: &str, refund_path: &str, mch_id: Option<&str>) -> Self {
        Sandbox {
            db,
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
        let (transaction_id, time_end, fen) = self.mark_paid(order_number).await?;
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

    async fn payment(&self, order_number: &str) -> Result<Option<sandbox_payment::Model>, DbErr> {
        sandbox_payment::Entity::find()
            .filter(sandbox_payment::Column::OrderNumber.eq(order_number))
            .one(&self.db)
            .await
    }

    pub async fn unified_order(&self, request: &PrepayRequest) -> Result<Prepay, WechatError> {
        let order_number = request.order_number.to_string();
        let row = sandbox_payment::ActiveModel {
            order_number: Set(order_number.clone()),
            total_fee: Set(request.amount.to_fen()),
            refunded_fee: Set(0),
            state: Set(SandboxTradeState::NotPay),
            transaction_id: Set(None),
            created_at: Set(now_utc()),
            paid_at: Set(None),
            ..Default::default()
        };
        match sandbox_payment::Entity::insert(row).exec(&self.db).await {
            Ok(_) => {}
            // The same order again: WeChat keys prepays by out_trade_no, the first one stands.
            Err(e) if is_duplicate(&e) => {}
            Err(e) => return Err(try_again(e)),
        }
        let nonce = random(16);
        let prepay_id = format!("sandbox_{order_number}");
        Ok(Prepay {
            params: PaymentParams {
                app_id: "wxsandbox0000000000".into(),
                time_stamp: chrono::Utc::now().timestamp().to_string(),
                nonce_str: nonce.clone(),
                package: format!("prepay_id={prepay_id}"),
                sign_type: "MD5".into(),
                pay_sign: format!("SANDBOX-{nonce}"),
            },
            prepay_id,
        })
    }

    /// Plays the user paying: the payment becomes SUCCESS, once. Returns the transaction id, `timeEnd`
    /// and the amount in fen (the first payment's, when it was paid already).
    pub async fn mark_paid(&self, order_number: &str) -> Result<(String, String, i64), SandboxPayError> {
        let unavailable = |error: DbErr| {
            tracing::warn!(order_number, %error, "sandbox: cannot mark the payment paid");
            SandboxPayError::Unavailable
        };
        // Only from NOTPAY: a second pay, here or on another replica, leaves the first one's ids.
        sandbox_payment::Entity::update_many()
            .col_expr(sandbox_payment::Column::State, Expr::value(SandboxTradeState::Success))
            .col_expr(sandbox_payment::Column::TransactionId, Expr::value(format!("4200SANDBOX{}", random(16))))
            .col_expr(sandbox_payment::Column::PaidAt, Expr::value(now_utc()))
            .filter(sandbox_payment::Column::OrderNumber.eq(order_number))
            .filter(sandbox_payment::Column::State.eq(SandboxTradeState::NotPay))
            .exec(&self.db)
            .await
            .map_err(unavailable)?;
        let payment = self.payment(order_number).await.map_err(unavailable)?.ok_or(SandboxPayError::NoPrepay)?;
        match (payment.state, payment.transaction_id, payment.paid_at) {
            (SandboxTradeState::Success | SandboxTradeState::Refund, Some(id), Some(at)) => {
                Ok((id, time_end(at), payment.total_fee))
            }
            (SandboxTradeState::Closed, ..) => Err(SandboxPayError::Closed),
            // Prepaid between the update and the read (on another replica): not paid; try again.
            _ => Err(SandboxPayError::Unavailable),
        }
    }

    pub async fn query_order(&self, order_number: &str) -> Result<PaymentStatus, WechatError> {
        Ok(match self.payment(order_number).await.map_err(try_again)? {
            Some(p) => PaymentStatus::from_wire(
                p.state.into(),
                Some(p.total_fee),
                p.transaction_id,
                p.paid_at.map(time_end).as_deref(),
            ),
            None => PaymentStatus::not_exist(),
        })
    }

    pub async fn close_order(&self, order_number: &str) -> Result<CloseOutcome, WechatError> {
        let closed = sandbox_payment::Entity::update_many()
            .col_expr(sandbox_payment::Column::State, Expr::value(SandboxTradeState::Closed))
            .filter(sandbox_payment::Column::OrderNumber.eq(order_number))
            .filter(sandbox_payment::Column::State.eq(SandboxTradeState::NotPay))
            .exec(&self.db)
            .await
            .map_err(try_again)?;
        if closed.rows_affected > 0 {
            return Ok(CloseOutcome::Closed);
        }
        match self.payment(order_number).await.map_err(try_again)?.map(|p| p.state) {
            None => Ok(CloseOutcome::NotFound),
            Some(SandboxTradeState::Closed) => Ok(CloseOutcome::AlreadyClosed),
            Some(SandboxTradeState::Success | SandboxTradeState::Refund) => Ok(CloseOutcome::Paid),
            // Prepaid between the update and the read (on another replica): ask again.
            Some(SandboxTradeState::NotPay) => Err(system_error()),
        }
    }

    /// Accepts a refund once per `out_refund_no` (a repeat is accepted again and refunds nothing more),
    /// only of a paid payment and never beyond what it paid; the refund row and the payment's refunded
    /// amount are written in one transaction, so racing refunds on any replica cannot overdraw it.
    pub async fn refund(&self, request: &RefundRequest) -> Result<Option<String>, WechatError> {
        let fen = request.refund.to_fen();
        let refund_id = format!("sandbox_refund_{}", request.out_refund_no);
        let txn = self.db.begin().await.map_err(try_again)?;
        let row = sandbox_refund::ActiveModel {
            out_refund_no: Set(request.out_refund_no.clone()),
            order_number: Set(request.order_number.clone()),
            refund_fee: Set(fen),
            created_at: Set(now_utc()),
            ..Default::default()
        };
        match sandbox_refund::Entity::insert(row).exec(&txn).await {
            Ok(_) => {}
            Err(e) if is_duplicate(&e) => {
                txn.rollback().await.map_err(try_again)?;
                return Ok(Some(refund_id));
            }
            Err(e) => return Err(try_again(e)),
        }
        let refunded = Expr::col(sandbox_payment::Column::RefundedFee).add(fen);
        let applied = sandbox_payment::Entity::update_many()
            .col_expr(sandbox_payment::Column::RefundedFee, refunded.clone())
            .col_expr(sandbox_payment::Column::State, Expr::value(SandboxTradeState::Refund))
            .filter(sandbox_payment::Column::OrderNumber.eq(&request.order_number))
            .filter(sandbox_payment::Column::State.is_in([SandboxTradeState::Success, SandboxTradeState::Refund]))
            // The guard is in the write: two refunds racing cannot both fit in what is left.
            .filter(refunded.lte(Expr::col(sandbox_payment::Column::TotalFee)))
            .exec(&txn)
            .await
            .map_err(try_again)?;
        let payment = sandbox_payment::Entity::find()
            .filter(sandbox_payment::Column::OrderNumber.eq(&request.order_number))
            .one(&txn)
            .await
            .map_err(try_again)?;
        let total_fee = match payment {
            Some(p) if applied.rows_affected > 0 => p.total_fee,
            refused => {
                txn.rollback().await.map_err(try_again)?;
                return Err(match refused {
                    None => business("ORDERNOTEXIST", "订单不存在"),
                    Some(p) if !TradeState::from(p.state).is_paid() => business("TRADE_STATE_ERROR", "订单状态错误"),
                    Some(_) => business("INVALID_REQUEST", "退款金额大于支付金额"),
                });
            }
        };
        txn.commit().await.map_err(try_again)?;
        // The platform reports the result a moment later, to the refund request's container.path.
        let body = json!({
            "returnCode": "SUCCESS", "outTradeNo": request.order_number, "outRefundNo": request.out_refund_no,
            "refundId": refund_id, "totalFee": total_fee, "refundFee": fen,
            "settlementRefundFee": fen, "refundStatus": "SUCCESS",
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

    pub async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, WechatError> {
        let found = sandbox_refund::Entity::find()
            .filter(sandbox_refund::Column::OutRefundNo.eq(out_refund_no))
            .one(&self.db)
            .await
            .map_err(try_again)?;
        Ok(if found.is_some() { RefundState::Success } else { RefundState::NotFound })
    }
}

fn business(code: &str, description: &str) -> WechatError {
    WechatError::Business { err_code: code.into(), err_code_des: description.into() }
}

/// WeChat's own "system error, call again with the same parameters": transient for every caller.
fn system_error() -> WechatError {
    business("SYSTEMERROR", "系统错误")
}

/// The sandbox's tables failed: logged here, answered as the platform answers its own failures.
fn try_again(error: DbErr) -> WechatError {
    tracing::warn!(%error, "sandbox: database call failed");
    system_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, OrderNumber};
    use migration::{Migrator, MigratorTrait};

    /// A migrated in-memory database (one connection, so every call sees the same one).
    async fn database() -> DatabaseConnection {
        let db = crate::app::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    fn sandbox_on(db: &DatabaseConnection) -> Sandbox {
        Sandbox::new(db.clone(), "/payment/callback", "/payment/refund-callback", None)
    }

    async fn sandbox() -> Sandbox {
        sandbox_on(&database().await)
    }

    async fn prepay(sandbox: &Sandbox, fen: i64) -> String {
        let number = OrderNumber::generate(1_700_000_000_000);
        sandbox
            .unified_order(&PrepayRequest {
                order_number: number.clone(),
                description: "x".into(),
                openid: "o".into(),
                amount: Money::from_fen(fen).unwrap(),
                client_ip: "127.0.0.1".parse().unwrap(),
            })
            .await
            .unwrap();
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

    fn err_code(result: Result<Option<String>, WechatError>) -> String {
        match result {
            Err(WechatError::Business { err_code, .. }) => err_code,
            other => panic!("expected a business error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_agree_through_pay_and_refund() {
        let sandbox = sandbox().await;
        let number = prepay(&sandbox, 1200).await;
        assert_eq!(sandbox.query_order(&number).await.unwrap().trade_state, TradeState::NotPay);
        let (transaction_id, time_end, fen) = sandbox.mark_paid(&number).await.unwrap();
        assert_eq!(fen, 1200);
        let status = sandbox.query_order(&number).await.unwrap();
        assert_eq!((status.trade_state, status.total.map(|m| m.to_fen())), (TradeState::Success, Some(1200)));
        assert_eq!(status.transaction_id.as_deref(), Some(transaction_id.as_str()));
        assert_eq!(status.paid_at, crate::domain::beijing_to_utc(&time_end));
        assert_eq!(sandbox.close_order(&number).await.unwrap(), CloseOutcome::Paid);
        assert_eq!(sandbox.query_refund("R1").await.unwrap(), RefundState::NotFound);
        sandbox.refund(&refund(&number, "R1", 1200)).await.unwrap();
        assert_eq!(sandbox.query_refund("R1").await.unwrap(), RefundState::Success);
        assert_eq!(sandbox.query_order(&number).await.unwrap().trade_state, TradeState::Refund);
    }

    #[tokio::test]
    async fn a_closed_payment_cannot_be_paid_and_refunds_cannot_exceed_it() {
        let sandbox = sandbox().await;
        let closed = prepay(&sandbox, 1200).await;
        assert_eq!(sandbox.close_order(&closed).await.unwrap(), CloseOutcome::Closed);
        assert_eq!(sandbox.close_order(&closed).await.unwrap(), CloseOutcome::AlreadyClosed);
        assert!(matches!(sandbox.mark_paid(&closed).await, Err(SandboxPayError::Closed)));
        assert_eq!(err_code(sandbox.refund(&refund(&closed, "R0", 100)).await), "TRADE_STATE_ERROR");
        let paid = prepay(&sandbox, 1200).await;
        sandbox.mark_paid(&paid).await.unwrap();
        sandbox.refund(&refund(&paid, "R1", 1000)).await.unwrap();
        assert_eq!(err_code(sandbox.refund(&refund(&paid, "R2", 201)).await), "INVALID_REQUEST");
        assert_eq!(sandbox.query_refund("R2").await.unwrap(), RefundState::NotFound, "a refused refund leaves nothing");
        assert!(sandbox.refund(&refund(&paid, "R1", 1000)).await.is_ok(), "a retry with the same number is fine");
        sandbox.refund(&refund(&paid, "R3", 200)).await.unwrap();
        assert_eq!(err_code(sandbox.refund(&refund("ORD0000000000000zzzz", "R4", 1)).await), "ORDERNOTEXIST");
        assert!(matches!(sandbox.mark_paid("ORD0000000000000zzzz").await, Err(SandboxPayError::NoPrepay)));
        assert_eq!(sandbox.close_order("ORD0000000000000zzzz").await.unwrap(), CloseOutcome::NotFound);
    }

    #[tokio::test]
    async fn another_instance_on_the_same_database_answers_the_same() {
        let db = database().await;
        let first = sandbox_on(&db);
        let number = prepay(&first, 1200).await;
        // The same order again, even with another amount, keeps the first prepay.
        let again = sandbox_on(&db);
        again
            .unified_order(&PrepayRequest {
                order_number: OrderNumber::parse(&number).unwrap(),
                description: "x".into(),
                openid: "o".into(),
                amount: Money::from_fen(1).unwrap(),
                client_ip: "127.0.0.1".parse().unwrap(),
            })
            .await
            .unwrap();
        let (transaction_id, _, fen) = again.mark_paid(&number).await.unwrap();
        assert_eq!(fen, 1200);
        assert_eq!(first.mark_paid(&number).await.unwrap().0, transaction_id, "paid once, whoever asks");
        again.refund(&refund(&number, "R1", 700)).await.unwrap();
        assert_eq!(first.query_refund("R1").await.unwrap(), RefundState::Success);
        assert_eq!(err_code(first.refund(&refund(&number, "R2", 501)).await), "INVALID_REQUEST");
    }

    #[tokio::test]
    async fn racing_refunds_never_add_up_to_more_than_was_paid() {
        let db = database().await;
        let sandbox = sandbox_on(&db);
        let number = prepay(&sandbox, 1200).await;
        sandbox.mark_paid(&number).await.unwrap();
        let requests: Vec<RefundRequest> = (0..10).map(|i| refund(&number, &format!("R{i}"), 500)).collect();
        let replicas: Vec<Sandbox> = requests.iter().map(|_| sandbox_on(&db)).collect();
        let answers = futures::future::join_all(replicas.iter().zip(&requests).map(|(s, r)| s.refund(r))).await;
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 2, "{answers:?}");
        let payment = sandbox.payment(&number).await.unwrap().unwrap();
        assert_eq!((payment.refunded_fee, payment.state), (1000, SandboxTradeState::Refund));
    }
}
