//! The compensation sweep: finds paid orders whose top-up never started, retries whose time has
//! come, and claims whose lease expired, and fulfils them with bounded concurrency.

use futures::stream::{self, StreamExt};
use sea_orm::{DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use std::time::Instant;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::now_utc;
use crate::entities::order;
use crate::fulfilment::{due_condition, FulfilOutcome};

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Due orders found.
    pub scanned: u64,
    /// Delivered by this sweep.
    pub succeeded: u64,
    /// Given back for a later retry.
    pub retried: u64,
    /// Failed on the carrier's proof (the refund follows).
    pub failed: u64,
    /// Left (or kept) unresolved: the budget is used up and the outcome is still unknown.
    pub unresolved: u64,
    /// Taken meanwhile by another worker or replica.
    pub skipped: u64,
    /// Interrupted by a database error (they stay due).
    pub errors: u64,
    pub duration_ms: u64,
}

/// One sweep. Safe on every replica at once: each order is acted on only by the worker that claims it.
pub async fn run_once(state: &AppState) -> Result<SweepReport, DbErr> {
    let started = Instant::now();
    let settings = state.fulfiller.settings();
    let now = now_utc();
    let due = due_condition(now);
    let numbers: Vec<String> = order::Entity::find()
        .select_only()
        .column(order::Column::OrderNumber)
        .filter(due)
        .order_by_asc(order::Column::UpdatedAt)
        .limit(settings.batch_size)
        .into_tuple()
        .all(&state.db)
        .await?;

    let mut report = SweepReport { scanned: numbers.len() as u64, ..Default::default() };
    let outcomes: Vec<_> = stream::iter(numbers)
        .map(|number| {
            let state = state.clone();
            async move { crate::lifecycle::fulfil(&state, &number).await }
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    for outcome in outcomes {
        match outcome {
            Ok(FulfilOutcome::Delivered) => report.succeeded += 1,
            Ok(FulfilOutcome::Retrying) => report.retried += 1,
            Ok(FulfilOutcome::Failed(_)) => report.failed += 1,
            Ok(FulfilOutcome::Unresolved(_)) => report.unresolved += 1,
            Ok(FulfilOutcome::NotClaimed) => report.skipped += 1,
            Err(error) => {
                tracing::error!(%error, "sweep: fulfilment interrupted");
                report.errors += 1;
            }
        }
    }
    // Buyer notifications that met a transient error are sent again when due.
    if let Err(error) = state.notifier.retry_due().await {
        tracing::warn!(%error, "sweep: due notifications could not be retried");
    }
    // Housekeeping: idempotency keys are kept for 24 hours.
    if let Err(error) = crate::routes::idempotency::forget_expired(&state.db).await {
        tracing::warn!(%error, "sweep: expired idempotency keys could not be forgotten");
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    metrics::counter!("job_runs_total", "job" => "compensate").increment(1);
    metrics::histogram!("job_duration_seconds", "job" => "compensate").record(started.elapsed().as_secs_f64());
    Ok(report)
}

/// [`run_once`] for the scheduler: logs the report or the error.
pub async fn run_logged(state: &AppState) {
    match run_once(state).await {
        Ok(report) if report.scanned > 0 => tracing::info!(?report, "job.compensate finished"),
        Ok(_) => tracing::debug!("job.compensate: nothing due"),
        Err(error) => tracing::error!(%error, "job.compensate failed"),
    }
}
