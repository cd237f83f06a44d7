//! Scheduled work. Each job is a `run_once(&state) -> Report` that is safe to run on every replica at
//! the same time and twice in a row: correctness comes from the claims it takes, not from being alone.

pub mod compensate;
pub mod reconcile;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::app::AppState;

fn fail<'a>(
    var: &'static str,
    cron: &'a str,
) -> impl Fn(tokio_cron_scheduler::JobSchedulerError) -> SchedulerError + 'a {
    move |source| SchedulerError { var, cron: cron.to_string(), source }
}

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var} {cron:?} is not a six-field cron (sec min hour day month weekday): {source}")]
pub struct SchedulerError {
    var: &'static str,
    cron: String,
    source: tokio_cron_scheduler::JobSchedulerError,
}

/// The cron jobs, their schedules read and checked, not yet running.
pub struct Jobs {
    jobs: [Job; 2],
}

/// Reads the schedules: the compensation sweep on `COMPENSATION_CRON`, reconciliation on
/// `RECONCILE_CRON`. A schedule that is not a cron is an error here, before the instance serves.
pub fn prepare(state: &AppState) -> Result<Jobs, SchedulerError> {
    let compensation = state.settings.compensation_cron.as_str();
    let job_state = state.clone();
    let compensate = Job::new_async(compensation, move |_id, _lock| {
        let state = job_state.clone();
        Box::pin(crate::telemetry::contain_panics("compensate", async move { compensate::run_logged(&state).await }))
    })
    .map_err(fail("COMPENSATION_CRON", compensation))?;

    let reconciliation = state.settings.lifecycle.reconcile_cron.as_str();
    let job_state = state.clone();
    let reconcile = Job::new_async(reconciliation, move |_id, _lock| {
        let state = job_state.clone();
        Box::pin(crate::telemetry::contain_panics("reconcile", async move { reconcile::run_logged(&state).await }))
    })
    .map_err(fail("RECONCILE_CRON", reconciliation))?;
    Ok(Jobs { jobs: [compensate, reconcile] })
}

impl Jobs {
    /// Starts the scheduler with the jobs (in memory: it fails only if its own tasks are gone).
    pub async fn start(self) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        for job in self.jobs {
            scheduler.add(job).await?;
        }
        scheduler.start().await?;
        Ok(scheduler)
    }
}
