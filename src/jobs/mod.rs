//! Scheduled work. Each job is a `run_once(&state) -> Report` that is safe to run on every replica at
//! the same time and twice in a row: correctness comes from the claims it takes, not from being alone.

pub mod compensate;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::app::AppState;

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: COMPENSATION_CRON {cron:?} is not a six-field cron (sec min hour day month weekday): {source}")]
pub struct SchedulerError {
    cron: String,
    source: tokio_cron_scheduler::JobSchedulerError,
}

/// Starts the cron jobs: the compensation sweep on `COMPENSATION_CRON`.
pub async fn start(state: &AppState) -> Result<JobScheduler, SchedulerError> {
    let cron = state.settings.compensation_cron.clone();
    let fail = |source| SchedulerError { cron: cron.clone(), source };
    let scheduler = JobScheduler::new().await.map_err(fail)?;
    let job_state = state.clone();
    let job = Job::new_async(cron.as_str(), move |_id, _lock| {
        let state = job_state.clone();
        Box::pin(async move {
            compensate::run_logged(&state).await;
        })
    })
    .map_err(fail)?;
    scheduler.add(job).await.map_err(fail)?;
    scheduler.start().await.map_err(fail)?;
    Ok(scheduler)
}
