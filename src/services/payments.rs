use chrono::Duration;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
};
use std::net::IpAddr;

use super::orders::{find_by_number, find_order, transition};
use super::{refunds, stored_status, ServiceError};
use crate::domain::{beijing_to_utc, now_utc, Money, OrderEvent, OrderNumber, OrderStatus};
use crate::entities::{order, payment_event, refund};
use crate::wechat::{PaymentNotice, PaymentParams, PrepayRequest, WechatError, WechatPay};

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
    let status = stored_status(&order.status)?;
    if status != OrderStatus::Unpaid {
        return Err(ServiceError::OrderNotPayable(status));
    }
    // An order past its expiry is about to be closed; a payment now would only have to be refunded.
    if now_utc() - order.created_at >= Duration::milliseconds(order_expiry.as_millis() as i64) {
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
        .filter(order::Column::Status.eq(OrderStatus::Unpaid.as_str()))
        .exec(db)
        .await?;
    if stored.rows_affected == 0 {
        let current = find_order(db, openid, order_number).await?;
        return Err(ServiceError::OrderNotPayable(stored_status(&current.status)?));
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

/// One delivery of the platform's payment callback, as received.
pub struct CallbackDelivery<'a> {
    pub path_order_number: &'a str,
    /// The headers that matter for audit, as a JSON object.
    pub headers: String,
    pub body: &'a [u8],
}

/// What a callback delivery did. All of these are acknowledged to the platform with errcode 0:
/// redelivering would not change them.
#[derive(Debug, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// This delivery moved the order from unpaid to paid.
    Accepted,
    /// The payment arrived for a closed order: recorded, and a full refund opened.
    LatePayment(refund::Model),
    /// The order had already been marked paid by this same payment.
    Duplicate,
    /// The delivery does not match the order; recorded, never marks it paid.
    Anomaly(String),
    /// `returnCode`/`resultCode` are not SUCCESS: nothing to do.
    NotSuccess,
    /// No such order here.
    UnknownOrder,
}

impl CallbackOutcome {
    fn label(&self) -> &'static str {
        match self {
            CallbackOutcome::Accepted => "accepted",
            CallbackOutcome::LatePayment(_) => "late_payment",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::Anomaly(_) => "anomaly",
            CallbackOutcome::NotSuccess => "not_success",
            CallbackOutcome::UnknownOrder => "unknown_order",
        }
    }
}

/// Why a delivery could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The body is not JSON: stored, answered 400.
    #[error("callback body is not a JSON object")]
    Malformed,
    /// Transient: nothing was decided; the platform should redeliver.
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    /// The confirming `queryorder` failed: nothing was decided; the platform should redeliver.
    #[error("payment could not be confirmed with WeChat: {0}")]
    Unconfirmed(#[from] WechatError),
}

impl From<ServiceError> for CallbackError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Wechat(e) => CallbackError::Unconfirmed(e),
            ServiceError::Database(e) => CallbackError::Database(e),
            other => CallbackError::Database(sea_orm::DbErr::Custom(other.to_string())),
        }
    }
}

/// Handles a payment callback: store it, check it against the order, make the one `unpaid → paid`
/// transition. Safe under any number of concurrent duplicate deliveries: the conditional update picks
/// exactly one winner.
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
            let label = if matches!(error, CallbackError::Unconfirmed(_)) { "unconfirmed" } else { "error" };
            metrics::counter!("payment_callbacks_total", "outcome" => label).increment(1);
            // Best effort: the answer asks for redelivery either way.
            let _ = set_event_outcome(db, event.id, label, Some(error.to_string())).await;
            return Err(error);
        }
    };
    let detail = match &outcome {
        CallbackOutcome::Anomaly(detail) => {
            tracing::error!(
                order_number = delivery.path_order_number,
                detail = detail.as_str(),
                "payment callback anomaly"
            );
            record_anomaly(db, delivery.path_order_number, detail).await?;
            Some(detail.clone())
        }
        CallbackOutcome::UnknownOrder => {
            tracing::error!(order_number = delivery.path_order_number, "payment callback for an unknown order");
            None
        }
        _ => None,
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
    /// Confirm with `/_/pay/queryorder` before marking paid.
    pub verify: bool,
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
        return Ok(CallbackOutcome::Anomaly(mismatch));
    }
    let transaction_id = notice.transaction_id.clone().unwrap_or_default();
    let status = stored_status(&order.status)?;
    if check.verify && matches!(status, OrderStatus::Unpaid | OrderStatus::Closed) {
        // The callback carries no signature: only WeChat's own answer makes the order paid.
        let truth = wechat.query_order(path_order_number).await?;
        let expected_fen = Money::from_stored(order.amount).to_fen();
        if !truth.trade_state.is_paid() || truth.total_fee != Some(expected_fen) {
            return Ok(CallbackOutcome::Anomaly(format!(
                "callback not confirmed by queryorder: trade_state {:?}, total_fee {:?} (order {expected_fen} fen); forged or mistaken",
                truth.trade_state, truth.total_fee
            )));
        }
    }
    let paid_at = notice.time_end.as_deref().and_then(beijing_to_utc).unwrap_or_else(|| {
        tracing::warn!(order_number = path_order_number, time_end = ?notice.time_end, "timeEnd unreadable; using the time received");
        now_utc()
    });
    let confirmation = confirm_payment(db, &order, &transaction_id, paid_at).await?;
    Ok(match confirmation {
        Confirmation::Paid => CallbackOutcome::Accepted,
        Confirmation::LatePayment(refund) => CallbackOutcome::LatePayment(refund),
        Confirmation::Duplicate => CallbackOutcome::Duplicate,
        Confirmation::SecondPayment(detail) => CallbackOutcome::Anomaly(detail),
    })
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

/// Records a payment WeChat confirmed (by callback or by query). Layer one of exactly-once: only the
/// caller whose `UPDATE … WHERE status = 'unpaid'` matched gets [`Confirmation::Paid`], however many
/// callbacks, queries and replicas race.
pub async fn confirm_payment(
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
    let to = OrderStatus::Unpaid.apply(OrderEvent::PaymentConfirmed).unwrap_or(OrderStatus::Paid);
    if transition(db, &order.order_number, &[OrderStatus::Unpaid], to, payment()).await? {
        return Ok(Confirmation::Paid);
    }
    let current = find_by_number(db, &order.order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    let status = stored_status(&current.status)?;
    if status == OrderStatus::Closed {
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
            "second payment {transaction_id} for an order already paid by {}",
            current.transaction_id.as_deref().unwrap_or("-")
        )))
    }
}

/// What makes a successful notification not belong to this order, if anything.
fn mismatch(order: &order::Model, expected_mch_id: Option<&str>, notice: &PaymentNotice) -> Option<String> {
    if notice.out_trade_no.as_deref() != Some(order.order_number.as_str()) {
        return Some(format!("outTradeNo {:?} does not match the order", notice.out_trade_no));
    }
    let expected_fen = Money::from_stored(order.amount).to_fen();
    if notice.total_fee != Some(expected_fen) {
        return Some(format!("totalFee {:?} does not match the order amount {expected_fen} fen", notice.total_fee));
    }
    if let Some(mch_id) = expected_mch_id {
        if notice.sub_mch_id.as_deref() != Some(mch_id) {
            return Some(format!("subMchId {:?} is not this merchant", notice.sub_mch_id));
        }
    }
    if notice.transaction_id.as_deref().is_none_or(str::is_empty) {
        return Some("transactionId is missing".into());
    }
    None
}

async fn record_anomaly(db: &impl ConnectionTrait, order_number: &str, detail: &str) -> Result<(), sea_orm::DbErr> {
    order::Entity::update_many()
        .col_expr(order::Column::Anomaly, Expr::value(truncate(detail, 500)))
        .col_expr(order::Column::UpdatedAt, Expr::value(now_utc()))
        .filter(order::Column::OrderNumber.eq(order_number))
        .exec(db)
        .await?;
    Ok(())
}

/// Stores a delivery as received, before anything is decided, for audit.
pub(crate) async fn store_delivery(
    db: &impl ConnectionTrait,
    kind: &str,
    delivery: &CallbackDelivery<'_>,
) -> Result<payment_event::Model, sea_orm::DbErr> {
    payment_event::ActiveModel {
        order_number: Set(delivery.path_order_number.chars().take(64).collect()),
        kind: Set(kind.into()),
        outcome: Set("received".into()),
        detail: Set(None),
        headers: Set(delivery.headers.clone()),
        body: Set(String::from_utf8_lossy(delivery.body).into_owned()),
        received_at: Set(now_utc()),
        ..Default::default()
    }
    .insert(db)
    .await
}

pub(crate) async fn set_event_outcome(
    db: &impl ConnectionTrait,
    event_id: i64,
    outcome: &str,
    detail: Option<String>,
) -> Result<(), sea_orm::DbErr> {
    payment_event::Entity::update_many()
        .col_expr(payment_event::Column::Outcome, Expr::value(outcome))
        .col_expr(payment_event::Column::Detail, Expr::value(detail.map(|d| truncate(&d, 500))))
        .filter(payment_event::Column::Id.eq(event_id))
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
) -> Result<Option<Confirmation>, ServiceError> {
    if order.status != OrderStatus::Unpaid.as_str() || order.prepay_at.is_none() {
        return Ok(None);
    }
    let now = now_utc();
    let threshold = now - Duration::milliseconds(interval.as_millis() as i64);
    // The rate limit is a conditional update, so replicas share it.
    let slot = order::Entity::update_many()
        .col_expr(order::Column::LastQueriedAt, Expr::value(now))
        .filter(order::Column::OrderNumber.eq(&order.order_number))
        .filter(order::Column::Status.eq(OrderStatus::Unpaid.as_str()))
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
    let expected_fen = Money::from_stored(order.amount).to_fen();
    if !truth.trade_state.is_paid() || truth.total_fee != Some(expected_fen) {
        return Ok(None);
    }
    let transaction_id = truth.transaction_id.unwrap_or_default();
    let paid_at = truth.time_end.as_deref().and_then(beijing_to_utc).unwrap_or(now);
    Ok(Some(confirm_payment(db, order, &transaction_id, paid_at).await?))
}
