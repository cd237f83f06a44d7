use chrono::Duration;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use std::net::IpAddr;

use super::orders::{find_by_number, find_order, transition};
use super::{stored_status, ServiceError};
use crate::domain::{beijing_to_utc, now_utc, Money, OrderEvent, OrderNumber, OrderStatus};
use crate::entities::{order, payment_event};
use crate::wechat::{PaymentNotice, PaymentParams, PrepayRequest, WechatPay};

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
) -> Result<PaymentParams, ServiceError> {
    let order = find_order(db, openid, order_number).await?;
    let status = stored_status(&order.status)?;
    if status != OrderStatus::Unpaid {
        return Err(ServiceError::OrderNotPayable(status));
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
}

/// Handles a payment callback: store it, check it against the order, make the one `unpaid → paid`
/// transition. Safe under any number of concurrent duplicate deliveries: the conditional update picks
/// exactly one winner.
pub async fn record_payment(
    db: &impl ConnectionTrait,
    expected_mch_id: Option<&str>,
    delivery: CallbackDelivery<'_>,
) -> Result<CallbackOutcome, CallbackError> {
    let event = payment_event::ActiveModel {
        order_number: Set(delivery.path_order_number.chars().take(64).collect()),
        kind: Set("payment_callback".into()),
        outcome: Set("received".into()),
        detail: Set(None),
        headers: Set(delivery.headers),
        body: Set(String::from_utf8_lossy(delivery.body).into_owned()),
        received_at: Set(now_utc()),
        ..Default::default()
    }
    .insert(db)
    .await?;

    let notice = match PaymentNotice::parse(delivery.body) {
        Ok(notice) => notice,
        Err(error) => {
            tracing::warn!(order_number = delivery.path_order_number, %error, "malformed payment callback");
            set_event_outcome(db, event.id, "malformed", Some(error.to_string())).await?;
            return Err(CallbackError::Malformed);
        }
    };
    let outcome = decide(db, expected_mch_id, delivery.path_order_number, &notice).await?;
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
    tracing::info!(order_number = delivery.path_order_number, outcome = outcome.label(), "payment callback handled");
    Ok(outcome)
}

async fn decide(
    db: &impl ConnectionTrait,
    expected_mch_id: Option<&str>,
    path_order_number: &str,
    notice: &PaymentNotice,
) -> Result<CallbackOutcome, sea_orm::DbErr> {
    if OrderNumber::parse(path_order_number).is_none() {
        return Ok(CallbackOutcome::UnknownOrder);
    }
    let Some(order) = find_by_number(db, path_order_number).await? else {
        return Ok(CallbackOutcome::UnknownOrder);
    };
    if !notice.is_success() {
        return Ok(CallbackOutcome::NotSuccess);
    }
    if let Some(mismatch) = mismatch(&order, expected_mch_id, notice) {
        return Ok(CallbackOutcome::Anomaly(mismatch));
    }
    let transaction_id = notice.transaction_id.clone().unwrap_or_default();
    let paid_at = notice.time_end.as_deref().and_then(beijing_to_utc).unwrap_or_else(|| {
        tracing::warn!(order_number = path_order_number, time_end = ?notice.time_end, "timeEnd unreadable; using the time received");
        now_utc()
    });
    // Layer one of exactly-once: only the delivery whose UPDATE matched `status = 'unpaid'` wins.
    let won = transition(
        db,
        path_order_number,
        &[OrderStatus::Unpaid],
        OrderStatus::Unpaid.apply(OrderEvent::PaymentConfirmed).unwrap_or(OrderStatus::Paid),
        vec![
            (order::Column::TransactionId, Expr::value(transaction_id.clone())),
            (order::Column::PaidAt, Expr::value(paid_at)),
        ],
    )
    .await?;
    if won {
        return Ok(CallbackOutcome::Accepted);
    }
    let current =
        find_by_number(db, path_order_number).await?.ok_or(sea_orm::DbErr::RecordNotFound(path_order_number.into()))?;
    let status = stored_status(&current.status)?;
    if status == OrderStatus::Closed {
        return Ok(CallbackOutcome::Anomaly(format!("payment {transaction_id} arrived for a closed order")));
    }
    if current.transaction_id.as_deref() == Some(transaction_id.as_str()) {
        Ok(CallbackOutcome::Duplicate)
    } else {
        Ok(CallbackOutcome::Anomaly(format!(
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

async fn set_event_outcome(
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
