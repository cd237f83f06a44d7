//! The order's lifecycle in one place. Every status change goes through [`transition`], whose guard and
//! target come from the state machine (`domain::OrderStatus`); every reaction to a change (start the
//! top-up, refund a failed one, alert) is decided in [`react`]. Routes, jobs and the fulfilment worker
//! report what happened and call [`react`]; none of them decides a reaction on its own.
//!
//! Work that must finish once started (fulfilment, refunds) runs on tasks tracked by the fulfiller,
//! never on a request's future, so a caller that hangs up cannot cancel it.

mod transition;

pub use transition::{transition, transition_shared, Moved};

use crate::alerts::AlertKind;
use crate::app::AppState;
use crate::domain::RefundStatus;
use crate::entities::{order, refund};
use crate::fulfilment::FulfilOutcome;
use crate::notify::NotifyEvent;
use crate::services::payments::{self, Confirmation, Finding};
use crate::services::refunds;

/// Something happened to an order that may call for a reaction.
#[derive(Debug)]
pub enum Happened {
    /// `unpaid → paid`: start the top-up. `seen` is the order as the payment left it, when at hand:
    /// the top-up claims it without reading it first.
    Paid { order_number: String, seen: Option<Box<order::Model>> },
    /// An operator put a failed or unresolved top-up back in line: start it.
    RetryRequested { order_number: String },
    /// A fulfilment attempt ended, or an operator settled the top-up. `held` is the order as the
    /// attempt or the operator left it, when at hand: the buyer and the product are taken from it (they
    /// never change) instead of reading the order again.
    Fulfilment { order_number: String, outcome: FulfilOutcome, held: Option<Box<order::Model>> },
    /// A payment arrived for a closed order; its whole refund was opened with the payment.
    LatePayment(refund::Model),
    /// A payment or callback that does not fit the order (forged, another amount, a second payment).
    Anomaly { order_number: String, detail: String },
    /// A refund was opened or driven; it may have ended `failed`.
    Refund(refund::Model),
}

/// The reactions, all of them: this match is the only place that decides what follows a change.
/// Never waits: anything slow runs on a tracked task.
pub fn react(state: &AppState, happened: Happened) {
    match happened {
        Happened::Paid { order_number, seen } => start_fulfilment(state, order_number, seen.map(|seen| *seen)),
        Happened::RetryRequested { order_number } => start_fulfilment(state, order_number, None),
        Happened::Fulfilment { order_number, outcome, held } => match outcome {
            FulfilOutcome::Failed(reason) => {
                state.alerter.raise(AlertKind::TopUpFailed, &order_number, &reason);
                if state.settings.lifecycle.auto_refund_on_failure {
                    refund_failed_top_up(state, order_number);
                }
            }
            FulfilOutcome::Unresolved(reason) => {
                state.alerter.raise(AlertKind::TopUpUnresolved, &order_number, &reason);
            }
            FulfilOutcome::Delivered => match held {
                Some(order) => state.notifier.notify_order(*order, NotifyEvent::Delivered, None),
                None => state.notifier.notify(&order_number, NotifyEvent::Delivered, None),
            },
            FulfilOutcome::Retrying | FulfilOutcome::NotClaimed => {}
        },
        Happened::LatePayment(refund) => drive_refund(state, refund),
        Happened::Anomaly { order_number, detail } => state.alerter.raise(AlertKind::Anomaly, &order_number, &detail),
        Happened::Refund(refund) => {
            // The buyer hears that money is on its way back when the service opened the refund itself
            // (the top-up failed, or the payment came too late), and when any refund completes.
            let automatic = refund.source != refunds::RefundSource::Operator.as_str();
            if automatic && refund.status != RefundStatus::Failed {
                state.notifier.notify(&refund.order_number, NotifyEvent::Refunding, None);
            }
            if refund.status == RefundStatus::Success {
                state.notifier.notify(&refund.order_number, NotifyEvent::Refunded, None);
            }
            if refunds::waiting_for_merchant_funds(&refund) {
                let message = format!(
                    "refund {} of {} yuan waits: the WeChat Pay merchant balance is too low (NOTENOUGH); top it up and the refund is retried",
                    refund.out_refund_no, refund.amount
                );
                state.alerter.raise(AlertKind::MerchantFundsLow, &refund.order_number, &message);
            }
            if refund.status == RefundStatus::Failed {
                let message = format!(
                    "refund {} of {} yuan failed: {}",
                    refund.out_refund_no,
                    refund.amount,
                    refund.last_error.as_deref().unwrap_or("no reason given")
                );
                state.alerter.raise(AlertKind::RefundFailed, &refund.order_number, &message);
            }
        }
    }
}

/// Runs `work` on its own task and waits for it: if the caller hangs up (axum drops the handler's
/// future), the work still runs to its end.
pub async fn to_completion<T, F>(work: F) -> Result<T, Interrupted>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    tokio::spawn(work).await.map_err(|error| {
        tracing::error!(%error, "a task that must finish was interrupted");
        Interrupted
    })
}

/// A task run by [`to_completion`] panicked (answered 500; the sweeps pick up whatever it left).
#[derive(Debug, thiserror::Error)]
#[error("the work was interrupted")]
pub struct Interrupted;

/// Passes what recording a confirmed payment did on: a new payment starts the top-up, a late one is
/// refunded, a second one is alerted (its detail is already on the order).
pub fn react_to_confirmation(state: &AppState, order_number: &str, confirmation: Confirmation) {
    let order_number = order_number.to_string();
    match confirmation {
        Confirmation::Paid(seen) => react(state, Happened::Paid { order_number, seen: Some(seen) }),
        Confirmation::LatePayment(refund) => react(state, Happened::LatePayment(refund)),
        Confirmation::SecondPayment(detail) => react(state, Happened::Anomaly { order_number, detail }),
        Confirmation::Duplicate => {}
    }
}

/// Passes what a payment query found on: an anomaly (another amount, a second payment) is recorded on
/// the order first, then everything goes through [`react_to_confirmation`] or is alerted.
pub async fn react_to_finding(state: &AppState, order_number: &str, finding: Finding) -> Result<(), sea_orm::DbErr> {
    match finding {
        Finding::Confirmed(Confirmation::SecondPayment(detail)) | Finding::Anomaly(detail) => {
            payments::record_anomaly(&state.db, order_number, &detail).await?;
            react(state, Happened::Anomaly { order_number: order_number.to_string(), detail });
        }
        Finding::Confirmed(confirmation) => react_to_confirmation(state, order_number, confirmation),
        Finding::NotPaid => {}
    }
    Ok(())
}

/// Fulfils the order now and reacts to the outcome: what the background task, the sweep and tests run.
pub async fn fulfil(state: &AppState, order_number: &str) -> Result<FulfilOutcome, sea_orm::DbErr> {
    fulfil_seen(state, order_number, None).await
}

/// [`fulfil`], trying the claim on the order as the caller last wrote it (see `Fulfiller::attempt`).
async fn fulfil_seen(
    state: &AppState,
    order_number: &str,
    seen: Option<order::Model>,
) -> Result<FulfilOutcome, sea_orm::DbErr> {
    let attempt = state.fulfiller.attempt(order_number, seen).await?;
    let (outcome, held) = (attempt.outcome, attempt.order.map(Box::new));
    react(state, Happened::Fulfilment { order_number: order_number.to_string(), outcome: outcome.clone(), held });
    Ok(outcome)
}

/// Starts fulfilment in the background and never delays the caller. If this process dies first, the
/// sweep finds the order.
fn start_fulfilment(state: &AppState, order_number: String, seen: Option<order::Model>) {
    tracing::info!(order_number, "starting fulfilment");
    let task_state = state.clone();
    state.fulfiller.track(async move {
        if let Err(error) = fulfil_seen(&task_state, &order_number, seen).await {
            // The order stays due; the sweep picks it up.
            tracing::error!(order_number, %error, "fulfilment interrupted by a database error");
        }
    });
}

fn refund_failed_top_up(state: &AppState, order_number: String) {
    let task_state = state.clone();
    state.fulfiller.track(async move {
        match refunds::refund_failed_top_up(
            &task_state.db,
            &task_state.wechat,
            &order_number,
            &refund_policy(&task_state),
        )
        .await
        {
            Ok(Some(refund)) => react(&task_state, Happened::Refund(refund)),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(order_number, %error, "automatic refund not settled yet; reconciliation will retry");
            }
        }
    });
}

/// Submits and confirms an opened refund in the background; reconciliation finishes what this does not.
pub fn drive_refund(state: &AppState, refund: refund::Model) {
    let task_state = state.clone();
    state.fulfiller.track(async move {
        match refunds::drive_refund(&task_state.db, &task_state.wechat, &refund, &refund_policy(&task_state)).await {
            Ok(done) => react(&task_state, Happened::Refund(done)),
            Err(error) => {
                tracing::warn!(out_refund_no = refund.out_refund_no, %error, "refund not settled yet; reconciliation will retry");
            }
        }
    });
}

pub fn refund_policy(state: &AppState) -> refunds::RefundPolicy {
    refunds::RefundPolicy::from_settings(&state.settings.lifecycle)
}
