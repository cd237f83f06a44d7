//! Refunds: opened in one transaction with the order's refund counter (so the total never exceeds what
//! was paid, whatever runs at the same time), then submitted to WeChat with an `out_refund_no` fixed
//! before the first call and reused on every retry, then confirmed with `queryrefund`.

use rand::Rng;
use sea_orm::sea_query::{Condition, Expr, NullOrdering, Order, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::deliveries::{store_delivery, CallbackDelivery, CallbackError};
use super::orders::find_by_number;
use super::ServiceError;
use crate::config::LifecycleSettings;
use crate::domain::{now_utc, Money, OrderEvent, OrderStatus, RefundScope, RefundStatus};
use crate::entities::{order, refund};
use crate::fulfilment::policy::backoff;
use crate::lifecycle::{transition, Moved};
use crate::wechat::{RefundRequest, RefundState, WechatPay};

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

/// Opens a refund of `amount` (default: all that is left) for an order that was paid. An unresolved
/// order (the carrier never proved either way) is refunded only with `proof`: the carrier's own "never
/// received" or "failed", or an operator's recorded reason for forcing it.
pub async fn open_refund(
    db: &DatabaseConnection,
    order_number: &str,
    amount: Option<Money>,
    reason: &str,
    source: RefundSource,
) -> Result<refund::Model, ServiceError> {
    let order = find_by_number(db, order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    if order.status == OrderStatus::Unresolved {
        return Err(ServiceError::RefundNeedsProof);
    }
    open(db, &order, amount, reason, source, vec![]).await
}

/// The refund of an unresolved order, on proof that nothing was delivered (see [`open_refund`]).
pub async fn open_unresolved_refund(
    db: &DatabaseConnection,
    order: &order::Model,
    reason: &str,
) -> Result<refund::Model, ServiceError> {
    if order.status != OrderStatus::Unresolved {
        return Err(ServiceError::OrderChanged);
    }
    open(db, order, None, reason, RefundSource::Operator, vec![]).await
}

/// The late payment of a closed order: records the payment and opens a full refund, atomically.
pub(crate) async fn refund_late_payment(
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
    order: &order::Model,
    payment: Vec<(order::Column, SimpleExpr)>,
) -> Result<refund::Model, ServiceError> {
    let reason = "payment arrived after the order was closed";
    open(db, order, None, reason, RefundSource::AutoClosed, payment).await
}

async fn open(
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
    order: &order::Model,
    amount: Option<Money>,
    reason: &str,
    source: RefundSource,
    extra: Vec<(order::Column, SimpleExpr)>,
) -> Result<refund::Model, ServiceError> {
    let paid = Money::from_stored(order.amount);
    let requested = Money::from_stored(order.refund_requested);
    let remaining = paid.saturating_sub(requested);
    // Nothing left is the order's state (a conflict), not a wrong amount: no amount could succeed.
    if remaining == Money::ZERO {
        return Err(ServiceError::NothingToRefund(order.status));
    }
    let amount = amount.unwrap_or(remaining);
    if amount.to_fen() <= 0 || amount > remaining {
        return Err(ServiceError::RefundAmount(remaining));
    }
    // A late payment is `PaymentConfirmed` on a closed order (the state machine sends it to refunding).
    // Anyone else asking to refund a closed order asks to refund money that never arrived: refused.
    let event = if order.status == OrderStatus::Closed && source == RefundSource::AutoClosed {
        OrderEvent::PaymentConfirmed
    } else {
        OrderEvent::RefundRequested(if amount == remaining { RefundScope::Whole } else { RefundScope::Partial })
    };
    if let Err(refused) = order.status.apply(event) {
        let whole = OrderEvent::RefundRequested(RefundScope::Whole);
        return Err(match event {
            OrderEvent::RefundRequested(RefundScope::Partial) if order.status.can_take(whole) => {
                ServiceError::PartialRefundUndelivered
            }
            _ => ServiceError::OrderNotRefundable(refused.from),
        });
    }
    // A paid order whose submit may have reached the carrier (an earlier attempt, then a retry) could be
    // delivered: only its fulfilment's outcome decides.
    if order.status.requires_nothing_submitted(event) && order.submitted {
        return Err(ServiceError::OrderNotRefundable(order.status));
    }
    let seq = order.refund_seq + 1;
    let out_refund_no = format!("R{}{seq:02}", order.order_number);
    let txn = db.begin().await?;
    let mut sets = vec![
        (order::Column::RefundRequested, Expr::value(requested.yuan() + amount.yuan())),
        (order::Column::RefundSeq, Expr::value(seq)),
    ];
    sets.extend(extra);
    // The refund counter versions the order: two requests racing cannot both pass this guard; the claim
    // version pins an unresolved order to the state its proof was read in.
    let guard = Condition::all()
        .add(order::Column::RefundSeq.eq(order.refund_seq))
        .add(order::Column::FulfilAttempts.eq(order.fulfil_attempts));
    let moved = transition(&txn, order, event, sets, guard).await?;
    let txn = keep_if_moved(txn, moved).await?;
    let reason: String = reason.chars().take(250).collect();
    let row = insert_pending(&txn, &order.order_number, out_refund_no, amount.yuan(), reason, source.as_str()).await?;
    txn.commit().await?;
    tracing::info!(order_number = order.order_number, out_refund_no = row.out_refund_no, amount = %amount, source = source.as_str(), "refund opened");
    Ok(row)
}

/// The transaction, if the order's transition won; rolled back with the reason otherwise.
async fn keep_if_moved(txn: DatabaseTransaction, moved: Moved) -> Result<DatabaseTransaction, ServiceError> {
    match moved {
        Moved::Won { .. } => Ok(txn),
        Moved::Lost => {
            txn.rollback().await?;
            Err(ServiceError::OrderChanged)
        }
        Moved::Refused(refused) => {
            txn.rollback().await?;
            Err(ServiceError::OrderNotRefundable(refused.from))
        }
    }
}

/// A new refund row, `pending`, not sent yet.
async fn insert_pending(
    txn: &DatabaseTransaction,
    order_number: &str,
    out_refund_no: String,
    amount: rust_decimal::Decimal,
    reason: String,
    source: &str,
) -> Result<refund::Model, DbErr> {
    let now = now_utc();
    refund::ActiveModel {
        order_number: Set(order_number.to_string()),
        out_refund_no: Set(out_refund_no),
        amount: Set(amount),
        reason: Set(reason),
        source: Set(source.to_string()),
        status: Set(RefundStatus::Pending),
        refund_id: Set(None),
        attempts: Set(0),
        refusals: Set(0),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        next_attempt_at: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await
}

/// What driving a refund needs from the settings.
#[derive(Clone, Copy, Debug)]
pub struct RefundPolicy {
    /// Permanent refusals before a refund is `failed` for an operator.
    pub max_attempts: u32,
    pub retry_base: std::time::Duration,
    pub retry_max: std::time::Duration,
}

impl RefundPolicy {
    pub fn from_settings(settings: &LifecycleSettings) -> Self {
        RefundPolicy {
            max_attempts: settings.refund_max_attempts,
            retry_base: settings.refund_retry_base,
            retry_max: settings.refund_retry_max,
        }
    }

    fn next_attempt(&self, attempts: u32) -> chrono::NaiveDateTime {
        let delay = backoff(attempts, self.retry_base, self.retry_max, rand::rng().random_range(0.8..1.2));
        now_utc() + chrono::Duration::milliseconds(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2))
    }
}

/// Asks WeChat for a pending refund (same `out_refund_no` every time). Accepted → `submitted`. Transient
/// answers (outages, `SYSTEMERROR`, `FREQUENCY_LIMITED`, `NOTENOUGH`, errcodes) stay `pending` with a
/// backoff and never use up the budget; a permanent refusal `max_attempts` times → `failed` for an
/// operator.
pub async fn submit_refund(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    refund: &refund::Model,
    policy: &RefundPolicy,
) -> Result<refund::Model, ServiceError> {
    if refund.status != RefundStatus::Pending {
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
    match wechat.refund(&request).await {
        // WeChat's acceptance is the truth: it wins over a failure another caller recorded meanwhile.
        Ok(refund_id) => {
            let sets = vec![
                (refund::Column::Status, Expr::value(RefundStatus::Submitted)),
                (refund::Column::RefundId, Expr::value(refund_id)),
                (refund::Column::LastError, Expr::value(Option::<String>::None)),
                (refund::Column::NextAttemptAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
            ];
            let guard = refund::Column::Status.is_in([RefundStatus::Pending, RefundStatus::Failed]);
            Ok(update_refund(db, refund, guard, sets).await?)
        }
        Err(error) => {
            let attempts = refund.attempts.saturating_add(1);
            // Only a permanent refusal uses up the budget; a retryable answer is tried again on the backoff.
            let refusals = if error.is_transient() { refund.refusals } else { refund.refusals.saturating_add(1) };
            let give_up = !error.is_transient() && u32::try_from(refusals).unwrap_or(u32::MAX) >= policy.max_attempts;
            if give_up {
                tracing::error!(out_refund_no = refund.out_refund_no, %error, "refund refused for good; needs an operator");
            } else {
                tracing::warn!(out_refund_no = refund.out_refund_no, %error, attempts, "refund not accepted; will retry");
            }
            let status = if give_up { RefundStatus::Failed } else { RefundStatus::Pending };
            let sets = vec![
                (refund::Column::Attempts, Expr::value(attempts)),
                (refund::Column::Refusals, Expr::value(refusals)),
                (refund::Column::LastError, Expr::value(error.to_string().chars().take(500).collect::<String>())),
                (refund::Column::Status, Expr::value(status)),
                (refund::Column::NextAttemptAt, Expr::value(policy.next_attempt(attempts.unsigned_abs()))),
            ];
            // The attempt counter versions the row: a slower caller's failure never overwrites a
            // submit another caller got accepted meanwhile.
            let guard = Condition::all()
                .add(refund::Column::Status.eq(RefundStatus::Pending))
                .add(refund::Column::Attempts.eq(refund.attempts));
            Ok(update_refund(db, refund, guard, sets).await?)
        }
    }
}

/// WeChat answered `NOTENOUGH` last: the merchant's balance must be topped up before this refund can go.
pub fn waiting_for_merchant_funds(refund: &refund::Model) -> bool {
    refund.status == RefundStatus::Pending && refund.last_error.as_deref().is_some_and(|e| e.contains("NOTENOUGH"))
}

/// Asks WeChat where a refund stands and records it; settles the order when its refunds are done. A
/// `failed` refund is asked too: WeChat may have done it after all.
pub async fn confirm_refund(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    refund: &refund::Model,
) -> Result<refund::Model, ServiceError> {
    if refund.status == RefundStatus::Success {
        return Ok(refund.clone());
    }
    let state = wechat.query_refund(&refund.out_refund_no).await?;
    record_refund_state(db, refund, state).await
}

/// Records what `queryrefund` answered for `refund` (see [`confirm_refund`]).
async fn record_refund_state(
    db: &impl ConnectionTrait,
    refund: &refund::Model,
    state: RefundState,
) -> Result<refund::Model, ServiceError> {
    let not_done = refund::Column::Status.is_in([RefundStatus::Pending, RefundStatus::Submitted, RefundStatus::Failed]);
    let updated = match state {
        RefundState::Success => {
            let sets = vec![(refund::Column::Status, Expr::value(RefundStatus::Success))];
            let done = update_refund(db, refund, not_done, sets).await?;
            settle_order(db, &refund.order_number).await?;
            done
        }
        RefundState::Processing if refund.status == RefundStatus::Failed => {
            let sets = vec![(refund::Column::Status, Expr::value(RefundStatus::Submitted))];
            update_refund(db, refund, refund::Column::Status.eq(RefundStatus::Failed), sets).await?
        }
        RefundState::Change | RefundState::Closed if refund.status != RefundStatus::Failed => {
            tracing::error!(out_refund_no = refund.out_refund_no, ?state, "refund failed at WeChat; needs an operator");
            let sets = vec![
                (refund::Column::Status, Expr::value(RefundStatus::Failed)),
                (refund::Column::LastError, Expr::value(refund_state_text(&state))),
            ];
            let open = refund::Column::Status.is_in([RefundStatus::Pending, RefundStatus::Submitted]);
            update_refund(db, refund, open, sets).await?
        }
        // Accepted earlier but unknown to WeChat now: send it again under the same number.
        RefundState::NotFound if refund.status == RefundStatus::Submitted => {
            let sets = vec![(refund::Column::Status, Expr::value(RefundStatus::Pending))];
            update_refund(db, refund, refund::Column::Status.eq(RefundStatus::Submitted), sets).await?
        }
        RefundState::NotFound
        | RefundState::Processing
        | RefundState::Change
        | RefundState::Closed
        | RefundState::Other(_) => refund.clone(),
    };
    Ok(updated)
}

fn refund_state_text(state: &RefundState) -> String {
    match state {
        RefundState::Change => "WeChat could not return the money to the payer's account (CHANGE)".into(),
        RefundState::Closed => "WeChat closed the refund (REFUNDCLOSE)".into(),
        RefundState::Success => "refunded".into(),
        RefundState::Processing => "WeChat is processing the refund".into(),
        RefundState::NotFound => "WeChat has no such refund".into(),
        RefundState::Other(other) => format!("WeChat refund status {other}"),
    }
}

/// Once every refund of the order has succeeded (or was replaced by one that did): `refunding →
/// refunded`, or back to `success` when a delivered order keeps part of its payment. The refund counter is part of
/// the guard: a refund opened meanwhile keeps the order `refunding`.
async fn settle_order(db: &impl ConnectionTrait, order_number: &str) -> Result<bool, DbErr> {
    let Some(order) = find_by_number(db, order_number).await? else {
        return Ok(false);
    };
    let refunds = refunds_of(db, order_number).await?;
    if order.status != OrderStatus::Refunding || !refunds.iter().all(|r| r.status.is_settled()) {
        return Ok(false);
    }
    // Every refund settled, so what was asked for is what came back.
    let kept = Money::from_stored(order.amount).saturating_sub(Money::from_stored(order.refund_requested));
    let event = if kept > Money::ZERO && order.delivered_at.is_some() {
        OrderEvent::PartialRefundSucceeded
    } else {
        OrderEvent::RefundSucceeded
    };
    let guard = Condition::all().add(order::Column::RefundSeq.eq(order.refund_seq));
    let won = transition(db, &order, event, vec![], guard).await?.won();
    if won {
        tracing::info!(order_number, kept = %kept, "order refunded");
    }
    Ok(won)
}

/// Orders still `refunding` whose refunds have all settled: a refund's success was written and the
/// process stopped before the order's (nothing drives a settled refund again). Settles each as
/// [`settle_order`] would have; returns how many moved.
pub async fn settle_stranded_orders(db: &impl ConnectionTrait, limit: u64) -> Result<u64, DbErr> {
    use sea_orm::sea_query::Query;
    use sea_orm::QuerySelect;
    let unsettled: Vec<RefundStatus> = RefundStatus::ALL.into_iter().filter(|s| !s.is_settled()).collect();
    let open = Query::select()
        .column(refund::Column::OrderNumber)
        .from(refund::Entity)
        .and_where(refund::Column::Status.is_in(unsettled))
        .to_owned();
    let stranded: Vec<String> = order::Entity::find()
        .select_only()
        .column(order::Column::OrderNumber)
        .filter(order::Column::Status.eq(OrderStatus::Refunding))
        .filter(order::Column::OrderNumber.not_in_subquery(open))
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    let mut settled = 0;
    for number in stranded {
        if settle_order(db, &number).await? {
            tracing::warn!(order_number = number, "order settled after its refunds were found done");
            settled += 1;
        }
    }
    Ok(settled)
}

pub async fn refunds_of(db: &impl ConnectionTrait, order_number: &str) -> Result<Vec<refund::Model>, DbErr> {
    refund::Entity::find()
        .filter(refund::Column::OrderNumber.eq(order_number))
        .order_by_asc(refund::Column::Id)
        .all(db)
        .await
}

/// Refunds still to be driven whose time has come, oldest first: open ones past their backoff, and
/// failed ones, re-queried on the same backoff in case WeChat did them after all.
pub async fn due_refunds(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<refund::Model>, DbErr> {
    use sea_orm::QuerySelect;
    let now = now_utc();
    refund::Entity::find()
        .filter(refund::Column::Status.is_in([RefundStatus::Pending, RefundStatus::Submitted, RefundStatus::Failed]))
        .filter(
            Condition::any().add(refund::Column::NextAttemptAt.is_null()).add(refund::Column::NextAttemptAt.lte(now)),
        )
        .order_by_with_nulls(refund::Column::NextAttemptAt, Order::Asc, NullOrdering::First)
        .order_by_asc(refund::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Submits a pending refund, then confirms it once: what a request or a sweep does with each refund.
/// A failed refund is only re-queried (then pushed back on its backoff); submitting it again is an
/// operator's decision ([`retry_refund`]).
pub async fn drive_refund(
    db: &impl ConnectionTrait,
    wechat: &WechatPay,
    refund: &refund::Model,
    policy: &RefundPolicy,
) -> Result<refund::Model, ServiceError> {
    if refund.status == RefundStatus::Failed {
        let confirmed = confirm_refund(db, wechat, refund).await?;
        if confirmed.status == RefundStatus::Failed {
            let attempts = confirmed.attempts.unsigned_abs().max(1);
            let sets = vec![(refund::Column::NextAttemptAt, Expr::value(policy.next_attempt(attempts)))];
            return Ok(update_refund(db, &confirmed, refund::Column::Status.eq(RefundStatus::Failed), sets).await?);
        }
        return Ok(confirmed);
    }
    let refund = submit_refund(db, wechat, refund, policy).await?;
    if refund.status == RefundStatus::Submitted {
        return confirm_refund(db, wechat, &refund).await;
    }
    Ok(refund)
}

/// The refund under `out_refund_no`, which an operator may act on only while it is `failed`.
async fn failed_refund(db: &DatabaseConnection, out_refund_no: &str) -> Result<refund::Model, ServiceError> {
    let refund = refund::Entity::find()
        .filter(refund::Column::OutRefundNo.eq(out_refund_no))
        .one(db)
        .await?
        .ok_or(ServiceError::RefundNotFound)?;
    if refund.status != RefundStatus::Failed {
        return Err(ServiceError::RefundNotRetryable(refund.status));
    }
    Ok(refund)
}

/// An operator's retry of a failed refund: WeChat is asked first (it may have done it after all), then
/// the same `out_refund_no` is sent again. The amount stays counted against the order throughout.
pub async fn retry_refund(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    out_refund_no: &str,
    policy: &RefundPolicy,
) -> Result<refund::Model, ServiceError> {
    let refund = failed_refund(db, out_refund_no).await?;
    let confirmed = confirm_refund(db, wechat, &refund).await?;
    if confirmed.status != RefundStatus::Failed {
        return Ok(confirmed);
    }
    let sets = vec![
        (refund::Column::Status, Expr::value(RefundStatus::Pending)),
        (refund::Column::NextAttemptAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
    ];
    let reopened = update_refund(db, &confirmed, refund::Column::Status.eq(RefundStatus::Failed), sets).await?;
    tracing::info!(out_refund_no, "operator retry: refund sent again");
    // One more permanent refusal fails it again at once: a budget spent is not given back.
    let policy = RefundPolicy { max_attempts: 0, ..*policy };
    drive_refund(db, wechat, &reopened, &policy).await
}

/// An operator's replacement of a failed refund that WeChat proves it never paid: it has no refund under
/// that number, or it closed it (`REFUNDCLOSE`, where sending the same number again cannot work). In one
/// transaction the old refund becomes `replaced` and a new one for the same amount, under the next
/// `out_refund_no`, takes its place; the amount counted against the order does not change, so nothing
/// can be refunded twice. WeChat's other answers change nothing here: a refund it did or is doing is
/// recorded as such, and one it could not pay out (`CHANGE`) is settled in the merchant platform.
pub async fn replace_refund(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    out_refund_no: &str,
    policy: &RefundPolicy,
) -> Result<refund::Model, ServiceError> {
    let old = failed_refund(db, out_refund_no).await?;
    let state = wechat.query_refund(out_refund_no).await?;
    match state {
        RefundState::NotFound | RefundState::Closed => {}
        RefundState::Success | RefundState::Processing => return record_refund_state(db, &old, state).await,
        RefundState::Change | RefundState::Other(_) => {
            return Err(ServiceError::RefundNotReplaceable(refund_state_text(&state)))
        }
    }
    let order = find_by_number(db, &old.order_number).await?.ok_or(ServiceError::OrderNotFound)?;
    let amount = Money::from_stored(old.amount);
    // The same amount again: a refund request to the order's state machine, which keeps it `refunding`.
    let scope = if amount == Money::from_stored(order.amount) { RefundScope::Whole } else { RefundScope::Partial };
    let event = OrderEvent::RefundRequested(scope);
    let seq = order.refund_seq + 1;
    let new_number = format!("R{}{seq:02}", order.order_number);
    let proof = refund_state_text(&state);
    let txn = db.begin().await?;
    let retired = refund::Entity::update_many()
        .col_expr(refund::Column::Status, Expr::value(RefundStatus::Replaced))
        .col_expr(refund::Column::LastError, Expr::value(format!("{proof}; replaced by {new_number}")))
        .col_expr(refund::Column::NextAttemptAt, Expr::value(Option::<chrono::NaiveDateTime>::None))
        .col_expr(refund::Column::UpdatedAt, Expr::value(now_utc()))
        .filter(refund::Column::Id.eq(old.id))
        .filter(refund::Column::Status.eq(RefundStatus::Failed))
        .exec(&txn)
        .await?;
    let guard = Condition::all().add(order::Column::RefundSeq.eq(order.refund_seq));
    let sets = vec![(order::Column::RefundSeq, Expr::value(seq))];
    let moved =
        if retired.rows_affected == 1 { transition(&txn, &order, event, sets, guard).await? } else { Moved::Lost };
    let txn = keep_if_moved(txn, moved).await?;
    let replacement =
        insert_pending(&txn, &order.order_number, new_number, old.amount, old.reason.clone(), &old.source).await?;
    txn.commit().await?;
    tracing::info!(out_refund_no, replacement = replacement.out_refund_no, proof, "operator replaced a failed refund");
    drive_refund(db, wechat, &replacement, policy).await
}

/// The automatic refund of a top-up that failed for good. Safe to call any number of times: only the
/// first opens a refund (the order leaves `failed`).
pub async fn refund_failed_top_up(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    order_number: &str,
    policy: &RefundPolicy,
) -> Result<Option<refund::Model>, ServiceError> {
    let reason = "the top-up could not be delivered";
    let Some(order) = find_by_number(db, order_number).await? else {
        return Ok(None);
    };
    if order.status != OrderStatus::Failed || order.refund_seq > 0 {
        return Ok(None);
    }
    match open(db, &order, None, reason, RefundSource::AutoFailed, vec![]).await {
        Ok(refund) => Ok(Some(drive_refund(db, wechat, &refund, policy).await?)),
        Err(ServiceError::OrderNotRefundable(_) | ServiceError::OrderChanged) => Ok(None),
        Err(other) => Err(other),
    }
}

async fn update_refund(
    db: &impl ConnectionTrait,
    refund: &refund::Model,
    guard: impl sea_orm::sea_query::IntoCondition,
    sets: Vec<(refund::Column, SimpleExpr)>,
) -> Result<refund::Model, DbErr> {
    let mut update = refund::Entity::update_many().col_expr(refund::Column::UpdatedAt, Expr::value(now_utc()));
    for (column, value) in sets {
        update = update.col_expr(column, value);
    }
    update.filter(refund::Column::Id.eq(refund.id)).filter(guard).exec(db).await?;
    refund::Entity::find_by_id(refund.id).one(db).await?.ok_or(DbErr::RecordNotFound(refund.out_refund_no.clone()))
}

/// Handles the platform's refund notification: stores it, then confirms every open refund of the order
/// with `queryrefund` (the notification itself is never trusted).
pub async fn record_refund_notification(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    delivery: CallbackDelivery<'_>,
) -> Result<Vec<refund::Model>, CallbackError> {
    const KIND: &str = "refund_callback";
    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(delivery.body).is_err() {
        store_delivery(db, KIND, &delivery, "malformed", None).await?;
        return Err(CallbackError::Malformed);
    }
    let open: Vec<refund::Model> =
        refunds_of(db, delivery.path_order_number).await?.into_iter().filter(|r| r.status.is_open()).collect();
    let mut settled = Vec::new();
    let mut confirmed_refunds = Vec::new();
    for refund in &open {
        let confirmed = confirm_refund(db, wechat, refund).await.map_err(CallbackError::from);
        match confirmed {
            Ok(r) => {
                settled.push(format!("{} {}", r.out_refund_no, r.status));
                confirmed_refunds.push(r);
            }
            Err(error) => {
                // Best effort: the answer asks for redelivery either way.
                let _ = store_delivery(db, KIND, &delivery, "unconfirmed", Some(error.to_string())).await;
                return Err(error);
            }
        }
    }
    let detail = if settled.is_empty() { "no open refund".to_string() } else { settled.join(", ") };
    store_delivery(db, KIND, &delivery, "confirmed", Some(detail)).await?;
    Ok(confirmed_refunds)
}
