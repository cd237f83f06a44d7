//! Refunds: opened in one transaction with the order's refund counter (so the total never exceeds what
//! was paid, whatever runs at the same time), then submitted to WeChat with an `out_refund_no` fixed
//! before the first call and reused on every retry, then confirmed with `queryrefund`.

use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, TransactionTrait,
};

use super::orders::{find_by_number, transition};
use super::payments::{set_event_outcome, store_delivery, CallbackDelivery, CallbackError};
use super::{stored_status, ServiceError};
use crate::domain::{now_utc, Money, OrderEvent, OrderStatus};
use crate::entities::{order, refund};
use crate::wechat::{RefundRequest, RefundState, WechatError, WechatPay};

/// Who asked for a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundSource {
    Operator,
    /// The top-up failed for good.
    AutoFailed,
    /// The payment arrived after the order had been closed.
    AutoClosed,
}

impl RefundSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundSource::Operator => "operator",
            RefundSource::AutoFailed => "auto_failed",
            RefundSource::AutoClosed => "auto_closed",
        }
    }
}

/// Refund row states.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SUBMITTED: &str = "submitted";
    pub const SUCCESS: &str = "success";
    pub const FAILED: &str = "failed";
}

/// Opens a refund of `amount` (default: all that is left) for an order that was paid.
pub async fn open_refund(
    db: &DatabaseConnection,
    order_number: &str,
    amount: Option<Money>,
    reason: &str,
    source: RefundSource,
) -> Result<refund::Model, ServiceError> {
    let order = find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    let status = stored_status(&order.status)?;
    // Further partial refunds may be opened while earlier ones are under way.
    let to = match status {
        OrderStatus::Refunding => OrderStatus::Refunding,
        other => other.apply(OrderEvent::RefundRequested).map_err(|_| ServiceError::OrderNotRefundable(status))?,
    };
    open(db, &order, status, to, amount, reason, source, vec![]).await
}

/// The late payment of a closed order: records the payment and opens a full refund, atomically.
pub(crate) async fn refund_late_payment(
    db: &DatabaseConnection,
    order: &order::Model,
    payment: Vec<(order::Column, SimpleExpr)>,
) -> Result<refund::Model, ServiceError> {
    let to = OrderStatus::Closed
        .apply(OrderEvent::PaymentConfirmed)
        .map_err(|_| ServiceError::OrderNotRefundable(OrderStatus::Closed))?;
    let reason = "payment arrived after the order was closed";
    open(db, order, OrderStatus::Closed, to, None, reason, RefundSource::AutoClosed, payment).await
}

#[allow(clippy::too_many_arguments)]
async fn open(
    db: &DatabaseConnection,
    order: &order::Model,
    from: OrderStatus,
    to: OrderStatus,
    amount: Option<Money>,
    reason: &str,
    source: RefundSource,
    extra: Vec<(order::Column, SimpleExpr)>,
) -> Result<refund::Model, ServiceError> {
    let paid = Money::from_stored(order.amount);
    let requested = Money::from_stored(order.refund_requested);
    let remaining = Money::from_stored((paid.yuan() - requested.yuan()).max(rust_decimal::Decimal::ZERO));
    let amount = amount.unwrap_or(remaining);
    if amount.to_fen() <= 0 || amount > remaining {
        return Err(ServiceError::RefundAmount(remaining));
    }
    let seq = order.refund_seq + 1;
    let out_refund_no = format!("R{}{seq:02}", order.order_number);
    let now = now_utc();

    let txn = db.begin().await?;
    let mut update = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to.as_str()))
        .col_expr(order::Column::RefundRequested, Expr::value(requested.yuan() + amount.yuan()))
        .col_expr(order::Column::RefundSeq, Expr::value(seq))
        .col_expr(order::Column::UpdatedAt, Expr::value(now));
    for (column, value) in extra {
        update = update.col_expr(column, value);
    }
    // The refund counter versions the order: two requests racing cannot both pass this guard.
    let result = update
        .filter(order::Column::OrderNumber.eq(&order.order_number))
        .filter(order::Column::Status.eq(from.as_str()))
        .filter(order::Column::RefundSeq.eq(order.refund_seq))
        .exec(&txn)
        .await?;
    if result.rows_affected != 1 {
        txn.rollback().await?;
        return Err(ServiceError::OrderChanged);
    }
    let row = refund::ActiveModel {
        order_number: Set(order.order_number.clone()),
        out_refund_no: Set(out_refund_no),
        amount: Set(amount.yuan()),
        reason: Set(reason.chars().take(250).collect()),
        source: Set(source.as_str().into()),
        status: Set(status::PENDING.into()),
        refund_id: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    tracing::info!(order_number = order.order_number, out_refund_no = row.out_refund_no, amount = %amount, source = source.as_str(), "refund opened");
    Ok(row)
}

/// Asks WeChat for a pending refund (same `out_refund_no` every time). Accepted → `submitted`; refused
/// `REFUND_MAX_ATTEMPTS` times → `failed` for an operator.
pub async fn submit_refund(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    refund: &refund::Model,
    max_attempts: u32,
) -> Result<refund::Model, DbErr> {
    if refund.status != status::PENDING {
        return Ok(refund.clone());
    }
    let Some(order) = find_by_number(db, &refund.order_number).await? else {
        return Ok(refund.clone());
    };
    let request = RefundRequest {
        order_number: order.order_number.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        description: order.product_name.clone(),
        total: Money::from_stored(order.amount),
        refund: Money::from_stored(refund.amount),
        reason: refund.reason.clone(),
    };
    let sets: Vec<(refund::Column, SimpleExpr)> = match wechat.refund(&request).await {
        Ok(refund_id) => vec![
            (refund::Column::Status, Expr::value(status::SUBMITTED)),
            (refund::Column::RefundId, Expr::value(refund_id)),
            (refund::Column::LastError, Expr::value(Option::<String>::None)),
        ],
        Err(error) => {
            let attempts = refund.attempts + 1;
            let give_up = attempts as u32 >= max_attempts && !is_transient(&error);
            if give_up {
                tracing::error!(out_refund_no = refund.out_refund_no, %error, "refund refused for good; needs an operator");
            } else {
                tracing::warn!(out_refund_no = refund.out_refund_no, %error, attempts, "refund not accepted; will retry");
            }
            vec![
                (refund::Column::Attempts, Expr::value(attempts)),
                (refund::Column::LastError, Expr::value(error.to_string().chars().take(500).collect::<String>())),
                (refund::Column::Status, Expr::value(if give_up { status::FAILED } else { status::PENDING })),
            ]
        }
    };
    update_refund(db, refund, &[status::PENDING], sets).await
}

/// Timeouts and outages never use up the attempt budget: the same `out_refund_no` is simply sent again.
fn is_transient(error: &WechatError) -> bool {
    matches!(
        error,
        WechatError::Timeout | WechatError::Unreachable(_) | WechatError::HttpStatus(_) | WechatError::EmptyBody
    )
}

/// Asks WeChat where a refund stands and records it; settles the order when its refunds are done.
pub async fn confirm_refund(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    refund: &refund::Model,
) -> Result<refund::Model, ServiceError> {
    if refund.status == status::SUCCESS || refund.status == status::FAILED {
        return Ok(refund.clone());
    }
    let state = wechat.query_refund(&refund.out_refund_no).await?;
    let open = [status::PENDING, status::SUBMITTED];
    let updated = match state {
        RefundState::Success => {
            let done =
                update_refund(db, refund, &open, vec![(refund::Column::Status, Expr::value(status::SUCCESS))]).await?;
            settle_order(db, &refund.order_number).await?;
            done
        }
        RefundState::Change | RefundState::Closed => {
            tracing::error!(out_refund_no = refund.out_refund_no, ?state, "refund failed at WeChat; needs an operator");
            let sets = vec![
                (refund::Column::Status, Expr::value(status::FAILED)),
                (refund::Column::LastError, Expr::value(format!("WeChat refund status {state:?}"))),
            ];
            update_refund(db, refund, &open, sets).await?
        }
        // Accepted earlier but unknown to WeChat now: send it again under the same number.
        RefundState::NotFound if refund.status == status::SUBMITTED => {
            update_refund(
                db,
                refund,
                &[status::SUBMITTED],
                vec![(refund::Column::Status, Expr::value(status::PENDING))],
            )
            .await?
        }
        RefundState::NotFound | RefundState::Processing | RefundState::Other(_) => refund.clone(),
    };
    Ok(updated)
}

/// `refunding → refunded` once every refund of the order has succeeded.
async fn settle_order(db: &impl ConnectionTrait, order_number: &str) -> Result<(), DbErr> {
    let refunds = refunds_of(db, order_number).await?;
    if refunds.iter().all(|r| r.status == status::SUCCESS) {
        let to = OrderStatus::Refunding.apply(OrderEvent::RefundSucceeded).unwrap_or(OrderStatus::Refunded);
        if transition(db, order_number, &[OrderStatus::Refunding], to, vec![]).await? {
            tracing::info!(order_number, "order refunded");
        }
    }
    Ok(())
}

pub async fn refunds_of(db: &impl ConnectionTrait, order_number: &str) -> Result<Vec<refund::Model>, DbErr> {
    refund::Entity::find()
        .filter(refund::Column::OrderNumber.eq(order_number))
        .order_by_asc(refund::Column::Id)
        .all(db)
        .await
}

/// Refunds still to be driven to their end, oldest first.
pub async fn open_refunds(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<refund::Model>, DbErr> {
    use sea_orm::QuerySelect;
    refund::Entity::find()
        .filter(refund::Column::Status.is_in([status::PENDING, status::SUBMITTED]))
        .order_by_asc(refund::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Submits a pending refund, then confirms it once: what a request or a sweep does with each refund.
pub async fn drive_refund(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    refund: &refund::Model,
    max_attempts: u32,
) -> Result<refund::Model, ServiceError> {
    let refund = submit_refund(db, wechat, refund, max_attempts).await?;
    if refund.status == status::SUBMITTED {
        return confirm_refund(db, wechat, &refund).await;
    }
    Ok(refund)
}

/// The automatic refund of a top-up that failed for good. Safe to call any number of times: only the
/// first opens a refund (the order leaves `failed`).
pub async fn refund_failed_top_up(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    order_number: &str,
    max_attempts: u32,
) -> Result<Option<refund::Model>, ServiceError> {
    let reason = "the top-up could not be delivered";
    match open_refund(db, order_number, None, reason, RefundSource::AutoFailed).await {
        Ok(refund) => Ok(Some(drive_refund(db, wechat, &refund, max_attempts).await?)),
        Err(ServiceError::OrderNotRefundable(_) | ServiceError::OrderChanged) => Ok(None),
        Err(other) => Err(other),
    }
}

async fn update_refund(
    db: &impl ConnectionTrait,
    refund: &refund::Model,
    from: &[&str],
    sets: Vec<(refund::Column, SimpleExpr)>,
) -> Result<refund::Model, DbErr> {
    let mut update = refund::Entity::update_many().col_expr(refund::Column::UpdatedAt, Expr::value(now_utc()));
    for (column, value) in sets {
        update = update.col_expr(column, value);
    }
    update
        .filter(refund::Column::Id.eq(refund.id))
        .filter(refund::Column::Status.is_in(from.iter().copied()))
        .exec(db)
        .await?;
    refund::Entity::find_by_id(refund.id).one(db).await?.ok_or(DbErr::RecordNotFound(refund.out_refund_no.clone()))
}

/// Handles the platform's refund notification: stores it, then confirms every open refund of the order
/// with `queryrefund` (the notification itself is never trusted).
pub async fn record_refund_notification(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    delivery: CallbackDelivery<'_>,
) -> Result<(), CallbackError> {
    let event = store_delivery(db, "refund_callback", &delivery).await?;
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(delivery.body).is_err() {
        set_event_outcome(db, event.id, "malformed", None).await?;
        return Err(CallbackError::Malformed);
    }
    let open: Vec<refund::Model> = refunds_of(db, delivery.path_order_number)
        .await?
        .into_iter()
        .filter(|r| r.status == status::PENDING || r.status == status::SUBMITTED)
        .collect();
    let mut settled = Vec::new();
    for refund in &open {
        let confirmed = confirm_refund(db, wechat, refund).await.map_err(CallbackError::from);
        match confirmed {
            Ok(r) => settled.push(format!("{} {}", r.out_refund_no, r.status)),
            Err(error) => {
                let _ = set_event_outcome(db, event.id, "unconfirmed", Some(error.to_string())).await;
                return Err(error);
            }
        }
    }
    let detail = if settled.is_empty() { "no open refund".to_string() } else { settled.join(", ") };
    set_event_outcome(db, event.id, "confirmed", Some(detail)).await?;
    Ok(())
}
