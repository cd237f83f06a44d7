use chrono::Duration;
use futures::future::BoxFuture;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseExecutor, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, TransactionTrait,
};
use std::net::IpAddr;

use super::deliveries::{delivery_event, store_delivery, DeliveryLog, OwnedDelivery};
pub use super::deliveries::{CallbackDelivery, CallbackError};
use super::orders::{find_by_number, find_order};
use super::{refunds, ServiceError};
use crate::domain::{now_utc, Money, OrderEvent, OrderNumber, OrderStatus};
use crate::entities::{order, refund};
use crate::group_commit::{GroupCommit, Work};
use crate::lifecycle::{transition, Moved};
use crate::limits::{Paid, PaidOrders};
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
            CallbackOutcome::Confirmed(Confirmation::Paid(_)) => "accepted",
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

/// Handles a payment callback: check it against the order, confirm it with WeChat, make the one
/// `unpaid → paid` transition, and store the delivery with its outcome. Everything the decision writes
/// (the transition, an anomaly on the order, a late payment's refund) and the delivery are one
/// transaction, so a delivery costs one commit, and a crash leaves either all of it or none (the
/// platform then redelivers). The confirming query runs before the transaction, which never waits on
/// the network. Safe under any number of concurrent duplicate deliveries: the conditional update picks
/// exactly one winner.
pub async fn record_payment(
    db: &DatabaseConnection,
    writes: &GroupCommit,
    log: &DeliveryLog,
    wechat: &WechatPay,
    check: &CallbackCheck<'_>,
    delivery: CallbackDelivery<'_>,
) -> Result<CallbackOutcome, CallbackError> {
    let notice = match PaymentNotice::parse(delivery.body) {
        Ok(notice) => notice,
        Err(error) => {
            tracing::warn!(order_number = delivery.path_order_number, %error, "malformed payment callback");
            store_delivery(db, KIND, &delivery, "malformed", Some(error.to_string())).await?;
            metrics::counter!("payment_callbacks_total", "outcome" => "malformed").increment(1);
            return Err(CallbackError::Malformed);
        }
    };
    let mut turn = match check.turns {
        Some(turns)
            if OrderNumber::parse(delivery.path_order_number).is_some()
                && !known_redelivery(check, delivery.path_order_number, &notice) =>
        {
            Some(turns.take(delivery.path_order_number).await)
        }
        _ => None,
    };
    let decided = match decide(db, wechat, check, delivery.path_order_number, &notice).await {
        Ok(Verdict::Decided(outcome)) => {
            // Nothing changes on the order: the next copy may read it while this one is stored.
            turn = None;
            let event = delivery_event(KIND, &delivery, outcome.label(), stored_detail(&outcome));
            log.store(event).await?;
            Ok(outcome)
        }
        Ok(Verdict::Confirm { order, truth }) => {
            let recording =
                RecordConfirmed { order: order.clone(), truth: truth.clone(), delivery: (&delivery).into() };
            let recorded = writes.run(recording).await.unwrap_or_else(|error| Err(error.into()));
            if let (Ok(CallbackOutcome::Confirmed(Confirmation::Paid(_) | Confirmation::Duplicate)), Some(id)) =
                (&recorded, &truth.transaction_id)
            {
                remember_paid(check, &order.order_number, id, Money::from_stored(order.amount).to_fen());
            }
            recorded
        }
        Err(error) => Err(error),
    };
    drop(turn);
    let outcome = match decided {
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
            let _ = store_delivery(db, KIND, &delivery, label, Some(error.to_string())).await;
            return Err(error);
        }
    };
    if let Some(detail) = outcome.anomaly() {
        tracing::error!(order_number = delivery.path_order_number, detail, "payment callback anomaly");
    }
    match &outcome {
        CallbackOutcome::UnknownOrder => {
            tracing::error!(order_number = delivery.path_order_number, "payment callback for an unknown order")
        }
        CallbackOutcome::Rejected(reason) => {
            tracing::warn!(order_number = delivery.path_order_number, reason, "payment callback rejected")
        }
        _ => {}
    }
    metrics::counter!("payment_callbacks_total", "outcome" => outcome.label()).increment(1);
    tracing::info!(order_number = delivery.path_order_number, outcome = outcome.label(), "payment callback handled");
    Ok(outcome)
}

const KIND: &str = "payment_callback";

/// What is stored with the delivery besides its outcome.
fn stored_detail(outcome: &CallbackOutcome) -> Option<String> {
    match outcome {
        CallbackOutcome::Contradicted => Some("transactionId differs from WeChat's record; ignored".to_string()),
        CallbackOutcome::Rejected(reason) => Some(reason.clone()),
        other => other.anomaly().map(str::to_string),
    }
}

/// [`record_confirmed_once`] as a write that may share its commit with others (see
/// [`crate::group_commit`]): in a batch, its statements run in the batch's transaction.
struct RecordConfirmed {
    order: Box<order::Model>,
    truth: PaymentStatus,
    delivery: OwnedDelivery,
}

impl Work for RecordConfirmed {
    type Output = Result<CallbackOutcome, CallbackError>;

    fn run<'c>(&'c self, db: &'c DatabaseExecutor<'c>) -> BoxFuture<'c, Result<Self::Output, DbErr>> {
        Box::pin(async move {
            let delivery = self.delivery.borrow();
            match db {
                DatabaseExecutor::Connection(_) => {
                    match record_confirmed_once(db, &self.order, &self.truth, &delivery).await {
                        Err(CallbackError::Database(error)) => Err(error),
                        recorded => Ok(recorded),
                    }
                }
                // In the batch's transaction, without a savepoint of its own (two round trips fewer):
                // whatever is not an outcome fails the batch, which is rolled back and whose writes
                // then run alone, where this one is its own transaction again and its error is
                // answered as it would be without the batch. A conflict is such a failure too (on
                // MySQL it rolls back the batch's whole transaction), run again alone.
                _ => match record_confirmed_in(db, &self.order, &self.truth, &delivery).await {
                    Ok(outcome) => Ok(Ok(outcome)),
                    Err(CallbackError::Database(error)) => Err(error),
                    Err(other) => Err(DbErr::Custom(format!("the callback runs alone: {other}"))),
                },
            }
        })
    }
}

/// Records what WeChat confirmed and the delivery, in one transaction. Alone, a transaction the
/// database chose as a deadlock's victim kept nothing and is run again by the writer
/// (`group_commit::CONFLICT_TRIES`).
async fn record_confirmed_once(
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
    order: &order::Model,
    truth: &PaymentStatus,
    delivery: &CallbackDelivery<'_>,
) -> Result<CallbackOutcome, CallbackError> {
    let txn = db.begin().await?;
    let recorded = record_confirmed_in(&txn, order, truth, delivery).await;
    match recorded {
        Ok(outcome) => {
            txn.commit().await?;
            Ok(outcome)
        }
        Err(error) => {
            // Released before the failure is stored: SQLite's pool holds one connection.
            txn.rollback().await?;
            Err(error)
        }
    }
}

/// What [`record_confirmed_once`] runs in its transaction: the statements, on `db` as given.
async fn record_confirmed_in(
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
    order: &order::Model,
    truth: &PaymentStatus,
    delivery: &CallbackDelivery<'_>,
) -> Result<CallbackOutcome, CallbackError> {
    let awaiting_payment = order.status.can_take(OrderEvent::PaymentConfirmed);
    let outcome = match confirm_from_query(db, order, truth).await? {
        Finding::Confirmed(confirmation) => CallbackOutcome::Confirmed(confirmation),
        Finding::NotPaid if awaiting_payment => CallbackOutcome::Rejected(format!(
            "the callback said the order was paid, but WeChat reports it {}: forged or mistaken",
            truth.trade_state.describe()
        )),
        Finding::NotPaid => CallbackOutcome::NotSuccess,
        Finding::Anomaly(detail) => CallbackOutcome::Anomaly(detail),
    };
    if let Some(detail) = outcome.anomaly() {
        record_anomaly(db, &order.order_number, detail).await?;
    }
    store_delivery(db, KIND, delivery, outcome.label(), stored_detail(&outcome)).await?;
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
    /// Takes an order's callbacks one at a time: the copies of a delivery that arrive together (the
    /// platform retries, a proxy duplicates) then find the order paid by the first, and cost one read
    /// (none once `paid` knows the order) and one insert each instead of a `queryorder` and a
    /// transaction that changes nothing.
    pub turns: Option<&'a crate::limits::Turns>,
    /// The orders this instance has seen paid: a copy that matches one is a redelivery, stored without
    /// reading the order or waiting its turn.
    pub paid: Option<&'a PaidOrders>,
}

/// Whether the notice is a redelivery for an order this instance has seen paid: the same checks, in
/// the same order, that `decide` makes on the order's row, on facts that never change once paid.
fn known_redelivery(check: &CallbackCheck<'_>, order_number: &str, notice: &PaymentNotice) -> bool {
    let Some(paid) = check.paid.and_then(|kept| kept.get(order_number)) else {
        return false;
    };
    notice.is_success()
        && mismatch(order_number, paid.fen, check.mch_id, notice).is_none()
        && notice.transaction_id.as_deref() == Some(paid.transaction_id.as_str())
}

fn remember_paid(check: &CallbackCheck<'_>, order_number: &str, transaction_id: &str, fen: i64) {
    if let Some(kept) = check.paid {
        kept.remember(order_number, Paid { transaction_id: transaction_id.to_string(), fen });
    }
}

/// What the reads and the confirming query decided, before anything is written.
enum Verdict {
    /// Nothing to record on the order.
    Decided(CallbackOutcome),
    /// WeChat's answer is to be recorded (`confirm_from_query`).
    Confirm { order: Box<order::Model>, truth: PaymentStatus },
}

async fn decide(
    db: &DatabaseConnection,
    wechat: &WechatPay,
    check: &CallbackCheck<'_>,
    path_order_number: &str,
    notice: &PaymentNotice,
) -> Result<Verdict, CallbackError> {
    if OrderNumber::parse(path_order_number).is_none() {
        return Ok(Verdict::Decided(CallbackOutcome::UnknownOrder));
    }
    if known_redelivery(check, path_order_number, notice) {
        return Ok(Verdict::Decided(CallbackOutcome::Confirmed(Confirmation::Duplicate)));
    }
    let Some(order) = find_by_number(db, path_order_number).await? else {
        return Ok(Verdict::Decided(CallbackOutcome::UnknownOrder));
    };
    if !notice.is_success() {
        return Ok(Verdict::Decided(CallbackOutcome::NotSuccess));
    }
    let fen = Money::from_stored(order.amount).to_fen();
    if let Some(mismatch) = mismatch(&order.order_number, fen, check.mch_id, notice) {
        return Ok(Verdict::Decided(CallbackOutcome::Rejected(mismatch)));
    }
    let awaiting_payment = order.status.can_take(OrderEvent::PaymentConfirmed);
    // A redelivery for an order already paid by this transaction changes nothing: no query needed.
    if let (false, Some(transaction_id)) = (awaiting_payment, &order.transaction_id) {
        if notice.transaction_id.as_ref() == Some(transaction_id) {
            remember_paid(check, &order.order_number, transaction_id, fen);
            return Ok(Verdict::Decided(CallbackOutcome::Confirmed(Confirmation::Duplicate)));
        }
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
        return Ok(Verdict::Decided(CallbackOutcome::Contradicted));
    }
    Ok(Verdict::Confirm { order: Box::new(order), truth })
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
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
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
    /// `unpaid → paid`: this caller made the transition (carried: the order as it left it); fulfilment
    /// should start.
    Paid(Box<order::Model>),
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
    db: &(impl ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>),
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
        if let Moved::Won { to, .. } = moved {
            let paid = order::Model {
                status: to,
                transaction_id: Some(transaction_id.to_string()),
                paid_at: Some(paid_at),
                ..order.clone()
            };
            return Ok(Confirmation::Paid(Box::new(paid)));
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
fn mismatch(
    order_number: &str,
    expected_fen: i64,
    expected_mch_id: Option<&str>,
    notice: &PaymentNotice,
) -> Option<String> {
    if notice.out_trade_no.as_deref() != Some(order_number) {
        return Some("the callback's outTradeNo names another order".into());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;
    use crate::services::orders::place_order;
    use crate::wechat::Sandbox;
    use sea_orm::Statement;
    use std::sync::{Arc, Mutex};

    /// A migrated in-memory database that logs the first words of every write statement it runs.
    async fn logged_database() -> (DatabaseConnection, Arc<Mutex<Vec<String>>>) {
        crate::services::testing::logged_database(|sql| {
            let write = ["INSERT", "UPDATE", "DELETE"].iter().any(|w| sql.starts_with(w));
            write.then(|| sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ").replace(['"', '`'], ""))
        })
        .await
    }

    fn body(order_number: &str) -> Vec<u8> {
        serde_json::json!({
            "returnCode": "SUCCESS", "resultCode": "SUCCESS", "outTradeNo": order_number, "totalFee": 1200,
            "transactionId": "4200004561202203217657282768", "timeEnd": "20261123120000",
        })
        .to_string()
        .into_bytes()
    }

    async fn deliver(db: &DatabaseConnection, order_number: &str) -> Result<CallbackOutcome, CallbackError> {
        deliver_body(db, order_number, body(order_number), None).await
    }

    async fn deliver_body(
        db: &DatabaseConnection,
        order_number: &str,
        body: Vec<u8>,
        paid: Option<&PaidOrders>,
    ) -> Result<CallbackOutcome, CallbackError> {
        deliver_through(db, &GroupCommit::new(db.clone()), order_number, body, paid).await
    }

    async fn deliver_through(
        db: &DatabaseConnection,
        writes: &GroupCommit,
        order_number: &str,
        body: Vec<u8>,
        paid: Option<&PaidOrders>,
    ) -> Result<CallbackOutcome, CallbackError> {
        let wechat =
            WechatPay::Sandbox(Sandbox::new(db.clone(), "/payment/callback", "/payment/refund-callback", None));
        // The body is taken as WeChat's word, as in development.
        let check = CallbackCheck { mch_id: None, verify: false, query_limit: None, turns: None, paid };
        let delivery = CallbackDelivery {
            path_order_number: order_number,
            headers: "{}".into(),
            body: &body,
            received_at: now_utc(),
        };
        record_payment(db, writes, &DeliveryLog::new(db, writes.clone()), &wechat, &check, delivery).await
    }

    async fn order(db: &DatabaseConnection) -> order::Model {
        place_order(db, "oTestBuyer", 1, &PhoneNumber::parse("+8613800000000").unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_delivery_is_one_write_and_the_paying_one_writes_its_transition_with_it() {
        let (db, writes) = logged_database().await;
        let order = order(&db).await;
        writes.lock().unwrap().clear();

        assert!(matches!(
            deliver(&db, &order.order_number).await.unwrap(),
            CallbackOutcome::Confirmed(Confirmation::Paid(_))
        ));
        assert_eq!(*writes.lock().unwrap(), ["UPDATE orders SET", "INSERT INTO payment_events"]);
        writes.lock().unwrap().clear();

        let again = deliver(&db, &order.order_number).await.unwrap();
        assert!(matches!(again, CallbackOutcome::Confirmed(Confirmation::Duplicate)), "{again:?}");
        assert_eq!(*writes.lock().unwrap(), ["INSERT INTO payment_events"]);
        let events = crate::entities::payment_event::Entity::find().all(&db).await.unwrap();
        let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["accepted", "duplicate"]);
    }

    /// Once this instance has seen an order paid, a copy of its callback is stored without reading the
    /// order; a copy that does not match what was seen (another transaction, another amount) is read
    /// and decided as before.
    #[tokio::test]
    async fn a_redelivery_for_an_order_seen_paid_is_stored_without_a_read() {
        let (db, statements) = crate::services::testing::logged_database(|sql| {
            Some(sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ").replace(['"', '`'], ""))
        })
        .await;
        let order = order(&db).await;
        let paid = PaidOrders::new(16);
        let number = order.order_number.as_str();
        let delivered = deliver_body(&db, number, body(number), Some(&paid)).await.unwrap();
        assert!(matches!(delivered, CallbackOutcome::Confirmed(Confirmation::Paid(_))), "{delivered:?}");
        statements.lock().unwrap().clear();

        let again = deliver_body(&db, number, body(number), Some(&paid)).await.unwrap();
        assert!(matches!(again, CallbackOutcome::Confirmed(Confirmation::Duplicate)), "{again:?}");
        assert_eq!(*statements.lock().unwrap(), ["INSERT INTO payment_events"]);
        statements.lock().unwrap().clear();

        let with = |field: &str, value: serde_json::Value| {
            let mut notice: serde_json::Value = serde_json::from_slice(&body(number)).unwrap();
            notice[field] = value;
            notice.to_string().into_bytes()
        };
        let other_payment = deliver_body(&db, number, with("transactionId", "4200OTHER".into()), Some(&paid)).await;
        assert!(
            matches!(other_payment, Ok(CallbackOutcome::Confirmed(Confirmation::SecondPayment(_)))),
            "{other_payment:?}"
        );
        let other_amount = deliver_body(&db, number, with("totalFee", 1.into()), Some(&paid)).await;
        assert!(matches!(other_amount, Ok(CallbackOutcome::Rejected(_))), "{other_amount:?}");
        let reads = statements.lock().unwrap().iter().filter(|s| s.starts_with("SELECT")).count();
        assert!(reads >= 2, "each mismatching copy reads the order: {:?}", statements.lock().unwrap());
    }

    /// The paying callbacks of several orders, and their copies, share commits: each order is still
    /// paid once, and a write refused beside them (the batch rolled back and run alone) changes none
    /// of that.
    #[tokio::test]
    async fn paying_callbacks_that_share_a_commit_pay_each_order_once() {
        let (db, _) = logged_database().await;
        let writes = GroupCommit::new(db.clone());
        let mut numbers = Vec::new();
        for _ in 0..4 {
            numbers.push(order(&db).await.order_number);
        }
        let copies = numbers.iter().flat_map(|n| [n, n, n]).map(|n| deliver_through(&db, &writes, n, body(n), None));
        let copies = futures::future::join_all(copies);

        // Without turns, every copy reads the order unpaid and queues its transaction; the refused
        // write comes last in their batch, after their transitions ran in it.
        let (outcomes, refused) =
            crate::group_commit::testing::one_batch(&writes, copies, 12, crate::group_commit::testing::Refused).await;

        assert!(refused.is_err());
        let paid =
            outcomes.iter().filter(|o| matches!(o, Ok(CallbackOutcome::Confirmed(Confirmation::Paid(_))))).count();
        assert_eq!(paid, 4, "{outcomes:?}");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let events = crate::entities::payment_event::Entity::find().all(&db).await.unwrap();
        assert_eq!(events.len(), 12, "each copy is stored once");
        assert_eq!(events.iter().filter(|e| e.outcome == "accepted").count(), 4);
        for number in &numbers {
            let stored = find_by_number(&db, number).await.unwrap().unwrap();
            assert_eq!(stored.status, OrderStatus::Paid);
        }
    }

    /// Storing the paying delivery fails after its transition was written (a full disk, a dropped
    /// connection): the transition is undone with it, so the order is still unpaid and the platform's
    /// redelivery pays it and starts the top-up. Written separately, the order would be paid with no
    /// delivery saying so, and the redelivery would be a "duplicate" that starts nothing.
    #[tokio::test]
    async fn a_transition_is_not_kept_when_its_delivery_cannot_be_stored() {
        let (db, _) = logged_database().await;
        let order = order(&db).await;
        let refuse = |sql: &str| Statement::from_string(db.get_database_backend(), sql.to_string());
        for event in ["INSERT", "UPDATE"] {
            db.execute_raw(refuse(&format!(
                "CREATE TRIGGER refuse_{event} BEFORE {event} ON payment_events WHEN NEW.outcome = 'accepted' \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )))
            .await
            .unwrap();
        }

        let failed = deliver(&db, &order.order_number).await;
        assert!(matches!(failed, Err(CallbackError::Database(_))), "{failed:?}");
        let current = find_by_number(&db, &order.order_number).await.unwrap().unwrap();
        assert_eq!(current.status, OrderStatus::Unpaid);
        assert_eq!(current.transaction_id, None);
        let events = crate::entities::payment_event::Entity::find().all(&db).await.unwrap();
        assert_eq!(events.iter().map(|e| e.outcome.as_str()).collect::<Vec<_>>(), ["error"]);

        for event in ["INSERT", "UPDATE"] {
            db.execute_raw(refuse(&format!("DROP TRIGGER refuse_{event}"))).await.unwrap();
        }
        let redelivered = deliver(&db, &order.order_number).await.unwrap();
        assert!(matches!(redelivered, CallbackOutcome::Confirmed(Confirmation::Paid(_))), "{redelivered:?}");
    }
}
