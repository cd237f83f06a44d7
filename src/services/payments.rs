use chrono::Duration;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use std::net::IpAddr;

use super::deliveries::{set_event_outcome, store_delivery};
pub use super::deliveries::{CallbackDelivery, CallbackError};
use super::orders::{find_by_number, find_order};
use super::{refunds, ServiceError};
use crate::domain::{now_utc, Money, OrderEvent, OrderNumber, OrderStatus};
use crate::entities::{order, refund};
use crate::lifecycle::transition;
use crate::wechat::{PaymentNotice, PaymentParams, PaymentStatus, PrepayRequest, TradeState, WechatPay};

/// A prepay id lives two hours at WeChat; one younger than this is handed out again instead of asking
/// for a new one (the user closed the payment sheet and tapped "pay" again).
const PREPAY_REUSE_MINUTES: i64 = 100;

/// Returns `wx.requestPayment` parameters for the caller's unpaid order, reusing a prepay still valid.
pub async fn create_payment(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    openid: &str,
    order_number: &str,
    client_ip: IpAddr,
    order_expiry: std::time::Duration,
) -> Result<PaymentParams, ServiceError> {
    let order = find_order(db, openid, order_number).await?;
    if order.status != OrderStatus::Unpaid {
        return Err(ServiceError::OrderNotPayable(order.status));
    }
    // An order past its expiry is about to be closed; a payment now would only have to be refunded.
    let expiry = Duration::milliseconds(i64::try_from(order_expiry.as_millis()).unwrap_or(i64::MAX / 2));
    if now_utc() - order.created_at >= expiry {
        return Err(ServiceError::OrderNotPayable(OrderStatus::Closed));
    }
    if let Some(params) = reusable_prepay(&order) {
        return Ok(params);
    }
    let number = OrderNumber::parse(&order.order_number).ok_or(ServiceError::OrderNotFound)?;
    let request = PrepayRequest {
        order_number: number,
        description: order.product_name.clone(),
        openid: order.openid.clone(),
        amount: Money::from_stored(order.amount),
        client_ip,
    };
    let prepay = wechat.unified_order(&request).await?;
    let params_json = serde_json::to_string(&prepay.params).map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    // Stored only while the order is still unpaid: a payment that landed meanwhile wins.
    let stored = order::Entity::update_many()
        .col_expr(order::Column::PrepayId, Expr::value(prepay.prepay_id.clone()))
        .col_expr(order::Column::PrepayParams, Expr::value(params_json))
        .col_expr(order::Column::PrepayAt, Expr::value(now_utc()))
        .col_expr(order::Column::UpdatedAt, Expr::value(now_utc()))
        .filter(order::Column::OrderNumber.eq(&order.order_number))
        .filter(order::Column::Status.eq(OrderStatus::Unpaid))
        .exec(db)
        .await?;
    if stored.rows_affected == 0 {
        let current = find_order(db, openid, order_number).await?;
        return Err(ServiceError::OrderNotPayable(current.status));
    }
    Ok(prepay.params)
}

fn reusable_prepay(order: &order::Model) -> Option<PaymentParams> {
    let created = order.prepay_at?;
    if now_utc() - created >= Duration::minutes(PREPAY_REUSE_MINUTES) {
        return None;
    }
    serde_json::from_str(order.prepay_params.as_deref()?).ok()
}

/// What a callback delivery did. All of these are acknowledged to the platform with errcode 0:
/// redelivering would not change them.
#[derive(Debug)]
pub enum CallbackOutcome {
    /// WeChat confirmed the payment; what it did to the order.
    Confirmed(Confirmation),
    /// WeChat's own answer does not fit the order (another amount, a second payment): recorded on the
    /// order and alerted, never marks it paid.
    Anomaly(String),
    /// The unsigned body does not fit the order, or WeChat contradicts it: anyone can POST one, so it
    /// is recorded with the delivery only (counted, logged), never on the order and never alerted.
    Rejected(String),
    /// `returnCode`/`resultCode` are not SUCCESS, or WeChat does not report the order paid: nothing to do.
    NotSuccess,
    /// The order is paid already and the delivery names another transaction than WeChat's: ignored.
    Contradicted,
    /// No such order here.
    UnknownOrder,
}

impl CallbackOutcome {
    fn label(&self) -> &'static str {
        match self {
            CallbackOutcome::Confirmed(Confirmation::Paid) => "accepted",
            CallbackOutcome::Confirmed(Confirmation::LatePayment(_)) => "late_payment",
            CallbackOutcome::Confirmed(Confirmation::Duplicate) => "duplicate",
            CallbackOutcome::Confirmed(Confirmation::SecondPayment(_)) | CallbackOutcome::Anomaly(_) => "anomaly",
            CallbackOutcome::Rejected(_) => "rejected",
            CallbackOutcome::NotSuccess => "not_success",
            CallbackOutcome::Contradicted => "contradicted",
            CallbackOutcome::UnknownOrder => "unknown_order",
        }
    }

    /// The detail stored with the delivery and, for anomalies, on the order.
    pub fn anomaly(&self) -> Option<&str> {
        match self {
            CallbackOutcome::Anomaly(detail) | CallbackOutcome::Confirmed(Confirmation::SecondPayment(detail)) => {
                Some(detail)
            }
            _ => None,
        }
    }
}

/// Handles a payment callback: store it, check it against the order, confirm it with WeChat, make the
/// one `unpaid → paid` transition. Safe under any number of concurrent duplicate deliveries: the
/// conditional update picks exactly one winner.
pub async fn record_payment(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    check: &CallbackCheck<'_>,
    delivery: CallbackDelivery<'_>,
) -> Result<CallbackOutcome, CallbackError> {
    let event = store_delivery(db, "payment_callback", &delivery).await?;

    let notice = match PaymentNotice::parse(delivery.body) {
        Ok(notice) => notice,
        Err(error) => {
            tracing::warn!(order_number = delivery.path_order_number, %error, "malformed payment callback");
            set_event_outcome(db, event.id, "malformed", Some(error.to_string())).await?;
            metrics::counter!("payment_callbacks_total", "outcome" => "malformed").increment(1);
            return Err(CallbackError::Malformed);
        }
    };
    let outcome = match decide(db, wechat, check, delivery.path_order_number, &notice).await {
        Ok(outcome) => outcome,
        Err(error) => {
            let label = match error {
                CallbackError::Unconfirmed(_) => "unconfirmed",
                CallbackError::Unprocessable(_) => "unprocessable",
                CallbackError::RateLimited(_) => "rate_limited",
                CallbackError::Malformed | CallbackError::Database(_) => "error",
            };
            metrics::counter!("payment_callbacks_total", "outcome" => label).increment(1);
            // Best effort: the answer asks for redelivery either way.
            let _ = set_event_outcome(db, event.id, label, Some(error.to_string())).await;
            return Err(error);
        }
    };
    if let Some(detail) = outcome.anomaly() {
        tracing::error!(order_number = delivery.path_order_number, detail, "payment callback anomaly");
        record_anomaly(db, delivery.path_order_number, detail).await?;
    }
    if matches!(outcome, CallbackOutcome::UnknownOrder) {
        tracing::error!(order_number = delivery.path_order_number, "payment callback for an unknown order");
    }
    let detail = match &outcome {
        CallbackOutcome::Contradicted => Some("transactionId differs from WeChat's record; ignored".to_string()),
        CallbackOutcome::Rejected(reason) => {
            tracing::warn!(order_number = delivery.path_order_number, reason, "payment callback rejected");
            Some(reason.clone())
        }
        other => other.anomaly().map(str::to_string),
    };
    set_event_outcome(db, event.id, outcome.label(), detail).await?;
    metrics::counter!("payment_callbacks_total", "outcome" => outcome.label()).increment(1);
    tracing::info!(order_number = delivery.path_order_number, outcome = outcome.label(), "payment callback handled");
    Ok(outcome)
}

/// How callbacks are checked.
pub struct CallbackCheck<'a> {
    /// The configured merchant; callbacks for another are anomalies.
    pub mch_id: Option<&'a str>,
    /// Confirm with `/_/pay/queryorder` before marking paid. Off only in development: the body is then
    /// taken as WeChat's word.
    pub verify: bool,
    /// Bounds the `queryorder` calls callbacks trigger per order (anyone can POST a callback).
    pub query_limit: Option<&'a crate::limits::Limit>,
}

async fn decide(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    check: &CallbackCheck<'_>,
    path_order_number: &str,
    notice: &PaymentNotice,
) -> Result<CallbackOutcome, CallbackError> {
    if OrderNumber::parse(path_order_number).is_none() {
        return Ok(CallbackOutcome::UnknownOrder);
    }
    let Some(order) = find_by_number(db, path_order_number).await? else {
        return Ok(CallbackOutcome::UnknownOrder);
    };
    if !notice.is_success() {
        return Ok(CallbackOutcome::NotSuccess);
    }
    if let Some(mismatch) = mismatch(&order, check.mch_id, notice) {
        return Ok(CallbackOutcome::Rejected(mismatch));
    }
    let awaiting_payment = order.status.can_take(OrderEvent::PaymentConfirmed);
    // A redelivery for an order already paid by this transaction changes nothing: no query needed.
    if !awaiting_payment && order.transaction_id.is_some() && order.transaction_id == notice.transaction_id {
        return Ok(CallbackOutcome::Confirmed(Confirmation::Duplicate));
    }
    // The callback carries no signature: only WeChat's own answer makes the order paid, and what is
    // stored (transaction id, paid time) is what WeChat says, never what the body says.
    let truth = if check.verify {
        if let Some(limit) = check.query_limit {
            limit.check(path_order_number).map_err(CallbackError::RateLimited)?;
        }
        wechat.query_order(path_order_number).await?
    } else {
        notice.as_payment_status()
    };
    if !awaiting_payment && truth.transaction_id.is_some() && truth.transaction_id == order.transaction_id {
        return Ok(CallbackOutcome::Contradicted);
    }
    Ok(match confirm_from_query(db, &order, &truth).await? {
        Finding::Confirmed(confirmation) => CallbackOutcome::Confirmed(confirmation),
        Finding::NotPaid => {
            if awaiting_payment {
                CallbackOutcome::Rejected(format!(
                    "the callback said the order was paid, but WeChat reports it {}: forged or mistaken",
                    truth.trade_state.describe()
                ))
            } else {
                CallbackOutcome::NotSuccess
            }
        }
        Finding::Anomaly(detail) => CallbackOutcome::Anomaly(detail),
    })
}

/// What WeChat's answer about a payment means for the order.
#[derive(Debug)]
pub enum Finding {
    /// WeChat reports the order paid with its amount; what recording it did.
    Confirmed(Confirmation),
    /// WeChat does not report a payment (yet): nothing to record.
    NotPaid,
    /// WeChat reports something that does not fit the order (another amount, a refund of a payment
    /// never recorded); recorded for an operator, never acted on.
    Anomaly(String),
}

/// The one reading of a `queryorder` answer, for the callback, `?refresh=true` and reconciliation:
/// `SUCCESS` with the order's amount and a transaction id records the payment (exactly once);
/// another amount, or `REFUND` on an order never recorded as paid, is an anomaly.
pub async fn confirm_from_query(
    db: &DatabaseConnection,
    order: &order::Model,
    truth: &PaymentStatus,
) -> Result<Finding, ServiceError> {
    let expected = Money::from_stored(order.amount);
    let awaiting_payment = order.status.can_take(OrderEvent::PaymentConfirmed);
    match truth.trade_state {
        TradeState::Success => {}
        TradeState::Refund if awaiting_payment => {
            return Ok(Finding::Anomaly(
                "WeChat reports this order paid and (partly) refunded, but no payment was ever recorded for it".into(),
            ))
        }
        _ => return Ok(Finding::NotPaid),
    }
    if truth.total != Some(expected) {
        let reported = truth.total.map_or_else(|| "no amount".to_string(), |m| format!("{m} yuan"));
        return Ok(Finding::Anomaly(format!(
            "WeChat reports a payment of {reported} for an order of {expected} yuan; not recorded"
        )));
    }
    let Some(transaction_id) = truth.transaction_id.as_deref() else {
        return Ok(Finding::Anomaly("WeChat reports the order paid but gives no transaction id".into()));
    };
    let paid_at = truth.paid_at.unwrap_or_else(|| {
        tracing::warn!(order_number = order.order_number, "WeChat gave no readable time_end; using the time received");
        now_utc()
    });
    Ok(Finding::Confirmed(confirm_payment(db, order, transaction_id, paid_at).await?))
}

/// What a confirmed payment did to its order.
#[derive(Debug)]
pub enum Confirmation {
    /// `unpaid → paid`: this caller made the transition; fulfilment should start.
    Paid,
    /// `closed → refunding`: recorded, and a full refund opened.
    LatePayment(refund::Model),
    /// Already recorded with this transaction.
    Duplicate,
    /// Already paid by another transaction (an anomaly, with its detail).
    SecondPayment(String),
}

/// Records a payment WeChat confirmed. Layer one of exactly-once: only the caller whose
/// `UPDATE … WHERE status = 'unpaid'` matched gets [`Confirmation::Paid`], however many callbacks,
/// queries and replicas race.
async fn confirm_payment(
    db: &DatabaseConnection,
    order: &order::Model,
    transaction_id: &str,
    paid_at: chrono::NaiveDateTime,
) -> Result<Confirmation, ServiceError> {
    let payment = || {
        vec![
            (order::Column::TransactionId, Expr::value(transaction_id.to_string())),
            (order::Column::PaidAt, Expr::value(paid_at)),
        ]
    };
    if order.status == OrderStatus::Unpaid {
        let moved = transition(db, order, OrderEvent::PaymentConfirmed, payment(), Condition::all()).await?;
        if moved.won() {
            return Ok(Confirmation::Paid);
        }
    }
    let current = find_by_number(db, &order.order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    if current.status == OrderStatus::Closed {
        tracing::warn!(
            order_number = order.order_number,
            transaction_id,
            "payment arrived for a closed order; refunding it"
        );
        return match refunds::refund_late_payment(db, &current, payment()).await {
            Ok(refund) => Ok(Confirmation::LatePayment(refund)),
            // Another delivery got there first.
            Err(ServiceError::OrderChanged) => Ok(Confirmation::Duplicate),
            Err(other) => Err(other),
        };
    }
    if current.transaction_id.as_deref() == Some(transaction_id) {
        Ok(Confirmation::Duplicate)
    } else {
        Ok(Confirmation::SecondPayment(format!(
            "WeChat reports payment {transaction_id} for an order already paid by {}",
            current.transaction_id.as_deref().unwrap_or("an unrecorded transaction")
        )))
    }
}

/// What makes a successful notification not belong to this order, if anything.
fn mismatch(order: &order::Model, expected_mch_id: Option<&str>, notice: &PaymentNotice) -> Option<String> {
    if notice.out_trade_no.as_deref() != Some(order.order_number.as_str()) {
        return Some("the callback's outTradeNo names another order".into());
    }
    let expected_fen = Money::from_stored(order.amount).to_fen();
    if notice.total.map(Money::to_fen) != Some(expected_fen) {
        let said = notice.total.map_or_else(|| "no amount".to_string(), |m| format!("{} fen", m.to_fen()));
        return Some(format!("the callback's totalFee is {said}, the order is {expected_fen} fen"));
    }
    if let Some(mch_id) = expected_mch_id {
        if notice.sub_mch_id.as_deref() != Some(mch_id) {
            return Some("the callback's subMchId is another merchant's".into());
        }
    }
    if notice.transaction_id.as_deref().is_none_or(str::is_empty) {
        return Some("the callback has no transactionId".into());
    }
    None
}

/// Stores the latest anomaly on the order, for operators.
pub async fn record_anomaly(db: &impl ConnectionTrait, order_number: &str, detail: &str) -> Result<(), sea_orm::DbErr> {
    order::Entity::update_many()
        .col_expr(order::Column::Anomaly, Expr::value(truncate(detail, 500)))
        .col_expr(order::Column::UpdatedAt, Expr::value(now_utc()))
        .filter(order::Column::OrderNumber.eq(order_number))
        .exec(db)
        .await?;
    Ok(())
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// For `GET /orders/{n}?refresh=true` right after `wx.requestPayment`: asks WeChat about an unpaid
/// order with a prepay, at most once per `interval` per order (whoever asks), and records a payment it
/// finds exactly as a callback would. A failed query changes nothing; the order is shown as it is.
pub async fn refresh_payment(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    order: &order::Model,
    interval: std::time::Duration,
) -> Result<Option<Finding>, ServiceError> {
    if order.status != OrderStatus::Unpaid || order.prepay_at.is_none() {
        return Ok(None);
    }
    let now = now_utc();
    let threshold = now - Duration::milliseconds(i64::try_from(interval.as_millis()).unwrap_or(i64::MAX / 2));
    // The rate limit is a conditional update, so replicas share it.
    let slot = order::Entity::update_many()
        .col_expr(order::Column::LastQueriedAt, Expr::value(now))
        .filter(order::Column::OrderNumber.eq(&order.order_number))
        .filter(order::Column::Status.eq(OrderStatus::Unpaid))
        .filter(
            sea_orm::Condition::any()
                .add(order::Column::LastQueriedAt.is_null())
                .add(order::Column::LastQueriedAt.lte(threshold)),
        )
        .exec(db)
        .await?;
    if slot.rows_affected == 0 {
        return Ok(None);
    }
    let truth = match wechat.query_order(&order.order_number).await {
        Ok(truth) => truth,
        Err(error) => {
            tracing::warn!(order_number = order.order_number, %error, "refresh: queryorder failed");
            return Ok(None);
        }
    };
    Ok(Some(confirm_from_query(db, order, &truth).await?))
}
