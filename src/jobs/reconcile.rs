//! Active reconciliation: the open API is the truth, callbacks are hints. Queries unpaid orders whose
//! callback may have been lost, expires and closes the ones left unpaid, refunds failed top-ups, and
//! drives every open refund to its end. Safe on every replica at once: each change is a conditional
//! update, and every WeChat call here is idempotent (same `out_trade_no`, same `out_refund_no`).

use chrono::Duration;
use sea_orm::sea_query::Condition;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::AlertKind;
use crate::app::AppState;
use crate::domain::{beijing_to_utc, beijing_today, now_utc, Money, OrderEvent, OrderStatus};
use crate::entities::order;
use crate::services::orders::transition;
use crate::services::payments::{confirm_payment, Confirmation};
use crate::services::reconciliation::day_report;
use crate::services::refunds::{self, status};
use crate::wechat::{TradeState, WechatError};

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
    let candidates = order::Entity::find()
        .filter(order::Column::Status.eq(OrderStatus::Unpaid.as_str()))
        .filter(
            Condition::any()
                .add(order::Column::PrepayAt.lte(queried_before))
                .add(order::Column::CreatedAt.lte(expired_before)),
        )
        .order_by_asc(order::Column::CreatedAt)
        .limit(state.settings.fulfilment.batch_size)
        .all(&state.db)
        .await?;
    for order in candidates {
        let expired = order.created_at <= expired_before;
        let Some(prepay_at) = order.prepay_at else {
            // Never sent to WeChat: nothing to ask or close there.
            if expired && close(state, &order.order_number).await? {
                report.closed += 1;
            }
            continue;
        };
        report.queried += 1;
        let truth = match state.wechat.query_order(&order.order_number).await {
            Ok(truth) => truth,
            Err(error) => {
                tracing::warn!(order_number = order.order_number, %error, "reconcile: queryorder failed");
                report.errors += 1;
                continue;
            }
        };
        let expected_fen = Money::from_stored(order.amount).to_fen();
        match truth.trade_state {
            TradeState::Success | TradeState::Refund if truth.total_fee == Some(expected_fen) => {
                let transaction_id = truth.transaction_id.clone().unwrap_or_default();
                let paid_at = truth.time_end.as_deref().and_then(beijing_to_utc).unwrap_or(now);
                match confirm_payment(&state.db, &order, &transaction_id, paid_at).await {
                    Ok(Confirmation::Paid) => {
                        tracing::warn!(
                            order_number = order.order_number,
                            "payment found by query; its callback was lost or late"
                        );
                        report.recovered += 1;
                        state.order_paid(&order.order_number);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(order_number = order.order_number, %error, "reconcile: could not record payment");
                        report.errors += 1;
                    }
                }
            }
            TradeState::Success | TradeState::Refund => {
                tracing::error!(order_number = order.order_number, total_fee = ?truth.total_fee, expected_fen, "queryorder amount differs from the order");
                report.errors += 1;
            }
            TradeState::Closed | TradeState::Revoked | TradeState::PayError => {
                report.closed += u64::from(close(state, &order.order_number).await?);
            }
            TradeState::NotPay | TradeState::UserPaying | TradeState::NotExist | TradeState::Other(_) if expired => {
                if now - prepay_at < Duration::minutes(CLOSE_NOT_BEFORE_MINUTES) {
                    continue;
                }
                match state.wechat.close_order(&order.order_number).await {
                    Ok(()) => {}
                    Err(WechatError::Business { err_code, .. })
                        if err_code == "ORDERCLOSED" || err_code == "ORDERNOTEXIST" => {}
                    Err(error) => {
                        // ORDERPAID included: the next pass's query finds the payment.
                        tracing::warn!(order_number = order.order_number, %error, "reconcile: closeorder failed");
                        report.errors += 1;
                        continue;
                    }
                }
                if close(state, &order.order_number).await? {
                    report.closed += 1;
                }
            }
            _ => {} // still waiting for the user
        }
    }
    Ok(())
}

/// `unpaid → closed`, guarded: a payment recorded meanwhile wins.
async fn close(state: &AppState, order_number: &str) -> Result<bool, DbErr> {
    let to = OrderStatus::Unpaid.apply(OrderEvent::Expired).unwrap_or(OrderStatus::Closed);
    let closed = transition(
        &state.db,
        order_number,
        &[OrderStatus::Unpaid],
        to,
        vec![(order::Column::ClosedAt, sea_orm::sea_query::Expr::value(now_utc()))],
    )
    .await?;
    if closed {
        tracing::info!(order_number, "order closed unpaid");
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
        .filter(order::Column::Status.eq(OrderStatus::Failed.as_str()))
        .filter(order::Column::RefundSeq.eq(0))
        .limit(state.settings.fulfilment.batch_size)
        .into_tuple()
        .all(&state.db)
        .await?;
    for number in failed {
        let max = state.settings.lifecycle.refund_max_attempts;
        match refunds::refund_failed_top_up(&state.db, &state.wechat, &number, max).await {
            Ok(Some(refund)) => {
                report.refunds_opened += 1;
                if refund.status == status::SUCCESS {
                    report.refunds_completed += 1;
                }
                state.alert_if_refund_failed(&refund);
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
    let max = state.settings.lifecycle.refund_max_attempts;
    for refund in refunds::open_refunds(&state.db, state.settings.fulfilment.batch_size).await? {
        match refunds::drive_refund(&state.db, &state.wechat, &refund, max).await {
            Ok(done) if done.status == status::SUCCESS => report.refunds_completed += 1,
            Ok(done) => state.alert_if_refund_failed(&done),
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
