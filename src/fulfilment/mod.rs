//! Exactly-once top-up delivery. Every function here is safe to call twice, from any number of tasks in
//! any number of replicas:
//! 1. an order is worked on only by the worker whose conditional `UPDATE` claimed it (a lease that
//!    expires, so a dead worker is replaced);
//! 2. every later write is guarded by `status = 'recharging' AND lease_owner = <me>`;
//! 3. once a submit may have reached the carrier (`submitted`), the next attempt queries the carrier by
//!    reference and submits again only if the carrier has never heard of it.

mod http;
mod provider;
mod sandbox;

use chrono::Duration as ChronoDuration;
use rand::distr::Alphanumeric;
use rand::Rng;
use sea_orm::sea_query::{Condition, Expr, SimpleExpr};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

use crate::config::{FulfilmentSettings, TopUpProviderKind, TopUpSettings};
use crate::domain::{now_utc, OrderEvent, OrderStatus};
use crate::entities::{fulfilment_attempt, order};

pub use http::HttpProvider;
pub use provider::{ProviderError, Receipt, TopUpProvider, TopUpRequest, TopUpState};
pub use sandbox::SandboxProvider;

/// What one call to [`Fulfiller::fulfil_order`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FulfilOutcome {
    /// The carrier confirmed the top-up; the order is `success`.
    Delivered,
    /// Outcome unknown or pending; the claim was given back until the next retry time.
    Retrying,
    /// The carrier refused, or the attempts ran out; the order is `failed`.
    Failed,
    /// The order was not due, or another worker holds it.
    NotClaimed,
}

/// Builds the configured carrier adapter.
pub fn provider_from_settings(settings: &TopUpSettings) -> Result<Arc<dyn TopUpProvider>, reqwest::Error> {
    Ok(match settings.provider {
        TopUpProviderKind::Sandbox => Arc::new(SandboxProvider::default()),
        TopUpProviderKind::Http => Arc::new(HttpProvider::new(
            settings.api_url.as_deref().unwrap_or_default(),
            settings.api_token.clone(),
            settings.timeout,
        )?),
    })
}

/// Delivers paid orders. Cheap to clone; all clones share one worker identity and task tracker.
#[derive(Clone)]
pub struct Fulfiller {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    provider: Arc<dyn TopUpProvider>,
    settings: FulfilmentSettings,
    worker: String,
    tasks: TaskTracker,
    on_failed: Option<FailureHook>,
}

/// Called with the order number and the reason after an order is marked `failed` (alert, refund).
pub type FailureHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

impl Fulfiller {
    pub fn new(
        db: DatabaseConnection,
        provider: Arc<dyn TopUpProvider>,
        settings: FulfilmentSettings,
        on_failed: Option<FailureHook>,
    ) -> Self {
        let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(10).map(char::from).collect();
        let worker = format!("w-{suffix}");
        Fulfiller { inner: Arc::new(Inner { db, provider, settings, worker, tasks: TaskTracker::new(), on_failed }) }
    }

    /// This instance's name in `lease_owner`.
    pub fn worker(&self) -> &str {
        &self.inner.worker
    }

    pub fn settings(&self) -> &FulfilmentSettings {
        &self.inner.settings
    }

    /// Starts fulfilling in the background (tracked, so shutdown can wait for it).
    pub fn spawn(&self, order_number: String) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            if let Err(error) = this.fulfil_order(&order_number).await {
                // The order stays due; the sweep picks it up.
                tracing::error!(order_number, %error, "fulfilment interrupted by a database error");
            }
        });
    }

    /// Claims the order if it is due, then delivers it, retries it later, or fails it.
    pub async fn fulfil_order(&self, order_number: &str) -> Result<FulfilOutcome, DbErr> {
        let db = &self.inner.db;
        let Some(seen) = order::Entity::find().filter(order::Column::OrderNumber.eq(order_number)).one(db).await?
        else {
            return Ok(FulfilOutcome::NotClaimed);
        };
        // Status layer: an order already delivered, failed, or held by a live claim is left alone.
        if !is_due(&seen, now_utc()) || !self.claim(&seen).await? {
            return Ok(FulfilOutcome::NotClaimed);
        }
        let attempt = seen.fulfil_attempts + 1;
        let order = order::Model { fulfil_attempts: attempt, ..seen };
        let span = tracing::info_span!("fulfilment.fulfil", order_number, attempt);
        let _guard = span.enter();

        // The claim marked the order `submitted`; what matters is whether an earlier attempt had.
        if order.submitted {
            let started = Instant::now();
            let answer = self.inner.provider.query(order_number).await;
            self.record(order_number, attempt, "query", &query_label(&answer), started).await?;
            match answer {
                Ok(Some(receipt)) => return self.settle(&order, receipt).await,
                Ok(None) => {} // never received: submitting is safe
                Err(error) => return self.retry_or_fail(&order, &error.to_string()).await,
            }
        }

        let request = TopUpRequest {
            reference: order.order_number.clone(),
            phone_number: order.phone_number.clone(),
            amount: order.face_value,
            currency: order.face_currency.clone(),
            product_code: order.product_code.clone(),
        };
        let started = Instant::now();
        let answer = self.inner.provider.submit(&request).await;
        let label = match &answer {
            Ok(receipt) => (state_label(receipt.state), receipt.message.clone()),
            Err(ProviderError::Refused(m)) => ("refused", Some(m.clone())),
            Err(ProviderError::Unknown(m)) => ("unknown", Some(m.clone())),
        };
        self.record(order_number, attempt, "submit", &label, started).await?;
        match answer {
            Ok(receipt) => self.settle(&order, receipt).await,
            Err(ProviderError::Refused(message)) => self.fail(&order, &message).await,
            Err(ProviderError::Unknown(message)) => self.retry_or_fail(&order, &message).await,
        }
    }

    /// Layer two: one conditional UPDATE takes the order if it is still exactly as `seen` (the attempt
    /// counter is its version) and due. Exactly one racer sees a row affected. The claim also records
    /// `submitted` before the carrier is called, so a crash mid-call leaves "query first" behind.
    async fn claim(&self, seen: &order::Model) -> Result<bool, DbErr> {
        let now = now_utc();
        let lease_until = now + chrono_duration(self.inner.settings.lease);
        let due = due_condition(now);
        let result = order::Entity::update_many()
            .col_expr(
                order::Column::Status,
                Expr::value(next(OrderStatus::Paid, OrderEvent::FulfilmentStarted).as_str()),
            )
            .col_expr(order::Column::LeaseOwner, Expr::value(self.worker()))
            .col_expr(order::Column::LeaseExpiresAt, Expr::value(lease_until))
            .col_expr(order::Column::RechargeAt, Expr::value(seen.recharge_at.unwrap_or(now)))
            .col_expr(order::Column::FulfilAttempts, Expr::value(seen.fulfil_attempts + 1))
            .col_expr(order::Column::Submitted, Expr::value(true))
            .col_expr(order::Column::UpdatedAt, Expr::value(now))
            .filter(order::Column::OrderNumber.eq(&seen.order_number))
            .filter(order::Column::FulfilAttempts.eq(seen.fulfil_attempts))
            .filter(due)
            .exec(&self.inner.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Writes `sets` only while this worker still holds the order's claim.
    async fn update_held(&self, order_number: &str, sets: Vec<(order::Column, SimpleExpr)>) -> Result<bool, DbErr> {
        let mut update = order::Entity::update_many().col_expr(order::Column::UpdatedAt, Expr::value(now_utc()));
        for (column, value) in sets {
            update = update.col_expr(column, value);
        }
        let result = update
            .filter(order::Column::OrderNumber.eq(order_number))
            .filter(order::Column::Status.eq(OrderStatus::Recharging.as_str()))
            .filter(order::Column::LeaseOwner.eq(self.worker()))
            .exec(&self.inner.db)
            .await?;
        if result.rows_affected == 0 {
            tracing::warn!(order_number, "claim lost before the result was written; the next holder will query");
        }
        Ok(result.rows_affected == 1)
    }

    async fn settle(&self, order: &order::Model, receipt: Receipt) -> Result<FulfilOutcome, DbErr> {
        match receipt.state {
            TopUpState::Delivered => self.deliver(order, receipt.provider_reference).await,
            TopUpState::Failed => {
                let message = receipt.message.unwrap_or_else(|| "carrier reported the top-up failed".into());
                self.fail(order, &message).await
            }
            TopUpState::Pending => self.retry_or_fail(order, "carrier reports the top-up pending").await,
        }
    }

    async fn deliver(&self, order: &order::Model, provider_reference: Option<String>) -> Result<FulfilOutcome, DbErr> {
        let to = next(OrderStatus::Recharging, OrderEvent::FulfilmentSucceeded);
        let written = self
            .update_held(
                &order.order_number,
                vec![
                    (order::Column::Status, Expr::value(to.as_str())),
                    (order::Column::DeliveredAt, Expr::value(now_utc())),
                    (order::Column::ProviderReference, Expr::value(provider_reference)),
                    (order::Column::FailureReason, Expr::value(Option::<String>::None)),
                    (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
                    (order::Column::LeaseExpiresAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
                ],
            )
            .await?;
        if !written {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::info!(order_number = order.order_number, "top-up delivered");
        Ok(FulfilOutcome::Delivered)
    }

    async fn fail(&self, order: &order::Model, reason: &str) -> Result<FulfilOutcome, DbErr> {
        let to = next(OrderStatus::Recharging, OrderEvent::FulfilmentFailed);
        let written = self
            .update_held(
                &order.order_number,
                vec![
                    (order::Column::Status, Expr::value(to.as_str())),
                    (order::Column::FailureReason, Expr::value(truncate(reason))),
                    (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
                    (order::Column::LeaseExpiresAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
                ],
            )
            .await?;
        if !written {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::error!(order_number = order.order_number, reason, "top-up failed for good");
        if let Some(hook) = &self.inner.on_failed {
            hook(&order.order_number, reason);
        }
        Ok(FulfilOutcome::Failed)
    }

    /// Gives the claim back until the next retry time, or fails the order when attempts are used up.
    async fn retry_or_fail(&self, order: &order::Model, reason: &str) -> Result<FulfilOutcome, DbErr> {
        let attempt = order.fulfil_attempts.max(1) as u32;
        if attempt >= self.inner.settings.max_attempts {
            return self.fail(order, &format!("gave up after {attempt} attempts: {reason}")).await;
        }
        let delay = retry_delay(attempt, &self.inner.settings, rand::rng().random_range(0.8..1.2));
        let written = self
            .update_held(
                &order.order_number,
                vec![
                    (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
                    (order::Column::LeaseExpiresAt, Expr::value(now_utc() + chrono_duration(delay))),
                    (order::Column::FailureReason, Expr::value(truncate(reason))),
                ],
            )
            .await?;
        if !written {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::warn!(
            order_number = order.order_number,
            attempt,
            retry_in_s = delay.as_secs(),
            reason,
            "top-up will be retried"
        );
        Ok(FulfilOutcome::Retrying)
    }

    async fn record(
        &self,
        order_number: &str,
        attempt: i32,
        action: &str,
        (outcome, message): &(&str, Option<String>),
        started: Instant,
    ) -> Result<(), DbErr> {
        let latency = started.elapsed();
        tracing::info!(order_number, attempt, action, outcome, latency_ms = latency.as_millis() as u64, "carrier call");
        let labels = [("action", action.to_string()), ("outcome", outcome.to_string())];
        metrics::counter!("fulfilment_attempts_total", &labels).increment(1);
        metrics::histogram!("carrier_call_duration_seconds", &labels[..1]).record(latency.as_secs_f64());
        fulfilment_attempt::ActiveModel {
            order_number: Set(order_number.to_string()),
            attempt: Set(attempt),
            action: Set(action.to_string()),
            outcome: Set(outcome.to_string()),
            message: Set(message.as_deref().map(truncate)),
            latency_ms: Set(latency.as_millis() as i64),
            worker: Set(self.worker().to_string()),
            created_at: Set(now_utc()),
            ..Default::default()
        }
        .insert(&self.inner.db)
        .await?;
        Ok(())
    }

    /// Stops taking work, waits up to `grace` for in-flight top-ups, then gives back the claims still
    /// held so another replica takes them over at once (it will query before submitting).
    pub async fn shutdown(&self, grace: Duration) -> Result<u64, DbErr> {
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("in-flight top-ups did not finish in time; releasing their claims");
        }
        self.release_claims().await
    }

    /// Expires every lease this worker holds.
    pub async fn release_claims(&self) -> Result<u64, DbErr> {
        let result = order::Entity::update_many()
            .col_expr(order::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(order::Column::LeaseExpiresAt, Expr::value(now_utc()))
            .filter(order::Column::Status.eq(OrderStatus::Recharging.as_str()))
            .filter(order::Column::LeaseOwner.eq(self.worker()))
            .exec(&self.inner.db)
            .await?;
        if result.rows_affected > 0 {
            tracing::info!(released = result.rows_affected, "claims released");
        }
        Ok(result.rows_affected)
    }
}

/// The SQL form of [`is_due`], for the claim's guard and the sweep's query.
pub fn due_condition(now: chrono::NaiveDateTime) -> Condition {
    Condition::any().add(order::Column::Status.eq(OrderStatus::Paid.as_str())).add(
        Condition::all()
            .add(order::Column::Status.eq(OrderStatus::Recharging.as_str()))
            .add(order::Column::LeaseExpiresAt.lte(now)),
    )
}

/// `paid`, or `recharging` whose lease has lapsed (a dead worker, or a retry whose time has come).
fn is_due(order: &order::Model, now: chrono::NaiveDateTime) -> bool {
    order.status == OrderStatus::Paid.as_str()
        || (order.status == OrderStatus::Recharging.as_str() && order.lease_expires_at.is_some_and(|t| t <= now))
}

fn next(from: OrderStatus, event: OrderEvent) -> OrderStatus {
    // The edges used here exist in the state machine; its unit tests pin them.
    from.apply(event).unwrap_or(from)
}

fn state_label(state: TopUpState) -> &'static str {
    match state {
        TopUpState::Delivered => "delivered",
        TopUpState::Pending => "pending",
        TopUpState::Failed => "failed",
    }
}

fn query_label(answer: &Result<Option<Receipt>, ProviderError>) -> (&'static str, Option<String>) {
    match answer {
        Ok(Some(receipt)) => (state_label(receipt.state), receipt.message.clone()),
        Ok(None) => ("not_found", None),
        Err(error) => ("unknown", Some(error.to_string())),
    }
}

/// Exponential backoff: `base · 2^(attempt-1)`, capped at `max`, times `jitter` (0.8–1.2 in use).
pub fn retry_delay(attempt: u32, settings: &FulfilmentSettings, jitter: f64) -> Duration {
    let exponential = settings.retry_base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    exponential.min(settings.retry_max).mul_f64(jitter)
}

fn chrono_duration(d: Duration) -> ChronoDuration {
    ChronoDuration::milliseconds(d.as_millis().min(i64::MAX as u128) as i64)
}

fn truncate(s: &str) -> String {
    s.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FulfilmentSettings {
        FulfilmentSettings {
            max_attempts: 6,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(600),
            lease: Duration::from_secs(60),
            concurrency: 8,
            batch_size: 100,
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = settings();
        assert_eq!(retry_delay(1, &s, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay(2, &s, 1.0), Duration::from_secs(60));
        assert_eq!(retry_delay(3, &s, 1.0), Duration::from_secs(120));
        assert_eq!(retry_delay(10, &s, 1.0), Duration::from_secs(600));
        assert_eq!(retry_delay(40, &s, 1.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_scales_the_delay() {
        let s = settings();
        assert_eq!(retry_delay(1, &s, 0.8), Duration::from_secs(24));
        assert_eq!(retry_delay(1, &s, 1.2), Duration::from_secs(36));
    }
}
