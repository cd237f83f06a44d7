//! Active reconciliation: the open API is the truth, callbacks are hints. Queries unpaid orders whose
//! callback may have been lost, expires and closes the ones left unpaid, refunds failed top-ups, and
//! drives every open refund to its end. Safe on every replica at once: each change is a conditional
//! update, and every WeChat call here is idempotent (same `out_trade_no`, same `out_refund_no`).

use chrono::Duration;
use sea_orm::sea_query::{Condition, Expr, NullOrdering, Order};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::AlertKind;
use crate::app::AppState;
use crate::domain::{beijing_today, now_utc, OrderEvent, OrderStatus, RefundStatus};
use crate::entities::order;
use crate::lifecycle::{react, react_to_finding, refund_policy, transition, Happened};
use crate::services::payments::{confirm_from_query, Confirmation, Finding};
use crate::services::reconciliation::day_report;
use crate::services::refunds;
use crate::services::ServiceError;

/// WeChat refuses `closeorder` within 5 minutes of the prepay.
const CLOSE_NOT_BEFORE_MINUTES: i64 = 5;

/// What one reconciliation pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Unpaid orders queried at WeChat.
    pub queried: u64,
    /// Found paid (a lost callback) and moved to paid by this pass.
    pub recovered: u64,
    /// Closed (expired, or closed at WeChat).
    pub closed: u64,
    /// Refunds opened for failed top-ups.
    pub refunds_opened: u64,
    /// Refunds that reached success in this pass.
    pub refunds_completed: u64,
    /// Orders left `refunding` though every refund of theirs had settled (the process stopped between
    /// a refund's success and the order's), moved on by this pass.
    pub orders_settled: u64,
    /// Unpaid orders WeChat reports in a way that does not fit them (another amount, `REFUND`, a payment
    /// by another transaction than the one recorded meanwhile).
    pub anomalies: u64,
    /// Orders of today and yesterday (UTC+8) whose books do not balance (each alerted once).
    pub mismatches: u64,
    pub errors: u64,
}

pub async fn run_once(state: &AppState) -> Result<ReconcileReport, DbErr> {
    let started = std::time::Instant::now();
    let mut report = ReconcileReport::default();
    reconcile_unpaid(state, &mut report).await?;
    refund_failed_top_ups(state, &mut report).await?;
    drive_refunds(state, &mut report).await?;
    report.orders_settled = refunds::settle_stranded_orders(&state.db, state.settings.fulfilment.batch_size).await?;
    check_books(state, &mut report).await?;
    metrics::counter!("job_runs_total", "job" => "reconcile").increment(1);
    metrics::histogram!("job_duration_seconds", "job" => "reconcile").record(started.elapsed().as_secs_f64());
    Ok(report)
}

/// [`run_once`] for the scheduler: logs the report or the error.
pub async fn run_logged(state: &AppState) {
    match run_once(state).await {
        Ok(report) if report != ReconcileReport::default() => tracing::info!(?report, "job.reconcile finished"),
        Ok(_) => tracing::debug!("job.reconcile: nothing to do"),
        Err(error) => tracing::error!(%error, "job.reconcile failed"),
    }
}

async fn reconcile_unpaid(state: &AppState, report: &mut ReconcileReport) -> Result<(), DbErr> {
    let lifecycle = &state.settings.lifecycle;
    let now = now_utc();
    let queried_before = now - duration(lifecycle.reconcile_grace);
    let expired_before = now - duration(lifecycle.order_expiry);
    // Least recently asked first: an order WeChat keeps answering strangely (an anomaly) moves to the
    // back instead of starving the others.
    let candidates = order::Entity::find()
        .filter(order::Column::Status.eq(OrderStatus::Unpaid))
        .filter(
            Condition::any()
                .add(order::Column::PrepayAt.lte(queried_before))
                .add(order::Column::CreatedAt.lte(expired_before)),
        )
        .order_by_with_nulls(order::Column::LastQueriedAt, Order::Asc, NullOrdering::First)
        .order_by_asc(order::Column::CreatedAt)
        .limit(state.settings.fulfilment.batch_size)
        .all(&state.db)
        .await?;
    for order in candidates {
        if let Err(error) = reconcile_one(state, &order, now, expired_before, report).await {
            tracing::error!(order_number = order.order_number, %error, "reconcile: could not settle the order");
            report.errors += 1;
        }
    }
    Ok(())
}

async fn reconcile_one(
    state: &AppState,
    order: &order::Model,
    now: chrono::NaiveDateTime,
    expired_before: chrono::NaiveDateTime,
    report: &mut ReconcileReport,
) -> Result<(), ServiceError> {
    let expired = order.created_at <= expired_before;
    let Some(prepay_at) = order.prepay_at else {
        // Never sent to WeChat: nothing to ask or close there. The close requires the prepay to be
        // still absent, so a `/payment/create` storing one meanwhile wins.
        if expired && close(state, order).await? {
            report.closed += 1;
        }
        return Ok(());
    };
    report.queried += 1;
    mark_queried(state, order, now).await?;
    let truth = match state.wechat.query_order(&order.order_number).await {
        Ok(truth) => truth,
        Err(error) => {
            tracing::warn!(order_number = order.order_number, %error, "reconcile: queryorder failed");
            report.errors += 1;
            return Ok(());
        }
    };
    match confirm_from_query(&state.db, order, &truth).await? {
        Finding::NotPaid => {}
        finding => {
            match &finding {
                Finding::Confirmed(Confirmation::Paid(_)) => {
                    tracing::warn!(
                        order_number = order.order_number,
                        "payment found by query; its callback was lost or late"
                    );
                    report.recovered += 1;
                }
                Finding::Anomaly(_) | Finding::Confirmed(Confirmation::SecondPayment(_)) => report.anomalies += 1,
                _ => {}
            }
            react_to_finding(state, &order.order_number, finding).await?;
            return Ok(());
        }
    }
    // Not paid. Close only an expired order, only after WeChat confirms the payment cannot happen any
    // more (closeorder answers closed, already closed, or never existed); WeChat refuses within 5
    // minutes of the prepay.
    if !expired || now - prepay_at < Duration::minutes(CLOSE_NOT_BEFORE_MINUTES) {
        return Ok(());
    }
    match state.wechat.close_order(&order.order_number).await {
        Ok(outcome) if outcome.cannot_be_paid() => {
            if close(state, order).await? {
                report.closed += 1;
            }
        }
        // ORDERPAID: the next pass's query finds the payment.
        Ok(outcome) => tracing::warn!(order_number = order.order_number, ?outcome, "reconcile: not closed"),
        Err(error) => {
            tracing::warn!(order_number = order.order_number, %error, "reconcile: closeorder failed");
            report.errors += 1;
        }
    }
    Ok(())
}

async fn mark_queried(state: &AppState, order: &order::Model, now: chrono::NaiveDateTime) -> Result<(), DbErr> {
    order::Entity::update_many()
        .col_expr(order::Column::LastQueriedAt, Expr::value(now))
        .filter(order::Column::Id.eq(order.id))
        .exec(&state.db)
        .await?;
    Ok(())
}

/// `unpaid → closed` for the order as `seen`, guarded on the prepay the decision saw: a payment
/// recorded meanwhile wins, and so does a prepay stored meanwhile (it must be closed at WeChat first).
pub async fn close(state: &AppState, order: &order::Model) -> Result<bool, DbErr> {
    let guard = match order.prepay_at {
        Some(at) => Condition::all().add(order::Column::PrepayAt.eq(at)),
        None => Condition::all().add(order::Column::PrepayAt.is_null()),
    };
    let sets = vec![(order::Column::ClosedAt, Expr::value(now_utc()))];
    let closed = transition(&state.db, order, OrderEvent::Expired, sets, guard).await?.won();
    if closed {
        tracing::info!(order_number = order.order_number, "order closed unpaid");
    }
    Ok(closed)
}

/// Failed top-ups whose refund never opened (the process stopped between the two).
async fn refund_failed_top_ups(state: &AppState, report: &mut ReconcileReport) -> Result<(), DbErr> {
    if !state.settings.lifecycle.auto_refund_on_failure {
        return Ok(());
    }
    let failed: Vec<String> = order::Entity::find()
        .select_only()
        .column(order::Column::OrderNumber)
        .filter(order::Column::Status.eq(OrderStatus::Failed))
        .filter(order::Column::RefundSeq.eq(0))
        .limit(state.settings.fulfilment.batch_size)
        .into_tuple()
        .all(&state.db)
        .await?;
    let policy = refund_policy(state);
    for number in failed {
        match refunds::refund_failed_top_up(&state.db, &state.wechat, &number, &policy).await {
            Ok(Some(refund)) => {
                report.refunds_opened += 1;
                if refund.status == RefundStatus::Success {
                    report.refunds_completed += 1;
                }
                react(state, Happened::Refund(refund));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(order_number = number, %error, "reconcile: refund of a failed top-up");
                report.errors += 1;
            }
        }
    }
    Ok(())
}

async fn drive_refunds(state: &AppState, report: &mut ReconcileReport) -> Result<(), DbErr> {
    let policy = refund_policy(state);
    for refund in refunds::due_refunds(&state.db, state.settings.fulfilment.batch_size).await? {
        match refunds::drive_refund(&state.db, &state.wechat, &refund, &policy).await {
            Ok(done) => {
                if done.status == RefundStatus::Success {
                    report.refunds_completed += 1;
                }
                react(state, Happened::Refund(done));
            }
            Err(error) => {
                tracing::warn!(out_refund_no = refund.out_refund_no, %error, "reconcile: refund not settled yet");
                report.errors += 1;
            }
        }
    }
    Ok(())
}

/// Today's and yesterday's books (UTC+8): every order that does not balance is alerted, once.
async fn check_books(state: &AppState, report: &mut ReconcileReport) -> Result<(), DbErr> {
    let today = beijing_today();
    for date in [today - Duration::days(1), today] {
        for mismatch in day_report(&state.db, date).await?.mismatches {
            // A refund or a top-up still settling is in flight, not a mismatch; what is left is real.
            report.mismatches += 1;
            let message = format!(
                "{} (paid {}, delivered {}, refunded {}, in flight {})",
                mismatch.reason, mismatch.paid, mismatch.delivered, mismatch.refunded, mismatch.in_flight
            );
            state.alerter.raise(AlertKind::ReconciliationMismatch, &mismatch.order_number, &message);
        }
    }
    Ok(())
}

fn duration(d: std::time::Duration) -> Duration {
    Duration::milliseconds(d.as_millis().min(i64::MAX as u128) as i64)
}
