//! Exactly-once top-up delivery. Every function here is safe to call twice, from any number of tasks in
//! any number of replicas:
//! 1. an order is worked on only by the worker whose conditional `UPDATE` claimed it: the claim bumps
//!    the order's version (`fulfil_attempts`) and takes a lease that expires, so a dead worker is
//!    replaced;
//! 2. every later write is guarded by `status = 'recharging' AND lease_owner = <me> AND fulfil_attempts
//!    = <my claim>`: a stale task, even of this same process, can never write over a newer claim;
//! 3. once a submit may have reached the carrier (`submitted`), the next attempt queries the carrier by
//!    reference and submits again only if the carrier has never heard of it;
//! 4. only proof fails a top-up (see [`policy`]); an outcome still unknown when the budget runs out
//!    leaves the order `unresolved`, queried on a capped backoff until it settles or an operator does.
//!
//! What happens after an outcome (the refund of a failed top-up, alerts) is decided in
//! `crate::lifecycle`, not here.
//!
//! Lease times are this replica's clock compared with times other replicas wrote: replicas' clocks must
//! agree to well under the lease's margin over twice the carrier timeout (30 s by default); cloud
//! hosting's containers share the host's NTP-disciplined clock. A skew beyond that only lets a
//! second worker query (and, if the carrier has not seen the reference yet, submit the same
//! reference) early; the carrier's idempotency on the reference and guard 2 still hold.

mod http;
#[cfg(test)]
mod model;
pub mod policy;
mod provider;
mod reloadly;
mod sandbox;

use chrono::Duration as ChronoDuration;
use rand::distr::Alphanumeric;
use rand::Rng;
use sea_orm::sea_query::{Condition, Expr, SimpleExpr};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

use crate::config::{FulfilmentSettings, TopUpProviderKind, TopUpSettings};
use crate::domain::{now_utc, OrderEvent, OrderStatus};
use crate::entities::{fulfilment_attempt, order};
use crate::group_commit::GroupCommit;
use crate::lifecycle::transition_shared;
use policy::{Answer, Call, Step};

pub use http::HttpProvider;
pub use provider::{ProviderError, Receipt, TopUpProvider, TopUpRequest, TopUpState};
pub use reloadly::ReloadlyProvider;
pub use sandbox::SandboxProvider;

/// What one call to [`Fulfiller::fulfil_order`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FulfilOutcome {
    /// The carrier confirmed the top-up; the order is `success`.
    Delivered,
    /// Outcome unknown or pending; the claim was given back until the next retry time.
    Retrying,
    /// The carrier proved the top-up was not delivered; the order is `failed` (with the reason).
    Failed(String),
    /// The budget ran out without proof either way; the order is `unresolved` (with the reason).
    Unresolved(String),
    /// The order was not due, another worker holds it, or the claim was lost before the result was
    /// written.
    NotClaimed,
}

/// What one attempt did, with the order as it held it when it claimed one: the reactions to a delivery
/// take the buyer and the product from it instead of reading the order again (they never change).
#[derive(Debug)]
pub struct Attempt {
    pub outcome: FulfilOutcome,
    pub order: Option<order::Model>,
}

/// Builds the configured carrier adapter. The sandbox carrier keeps what it received in `db`, written
/// through `writes`.
pub fn provider_from_settings(
    settings: &TopUpSettings,
    db: &DatabaseConnection,
    writes: &GroupCommit,
) -> Result<Arc<dyn TopUpProvider>, reqwest::Error> {
    Ok(match settings.provider {
        TopUpProviderKind::Sandbox => Arc::new(SandboxProvider::new(db.clone(), writes.clone())),
        TopUpProviderKind::Http => Arc::new(HttpProvider::new(
            settings.api_url.as_deref().unwrap_or_default(),
            settings.api_token.clone(),
            settings.timeout,
        )?),
        TopUpProviderKind::Reloadly => ReloadlyProvider::from_settings(settings)?,
    })
}

/// Delivers paid orders. Cheap to clone; all clones share one worker identity, one task tracker and one
/// record of the orders in hand.
#[derive(Clone)]
pub struct Fulfiller {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    /// Where the attempt's writes go: they share commits with whatever else is written meanwhile.
    writes: GroupCommit,
    provider: Arc<dyn TopUpProvider>,
    settings: FulfilmentSettings,
    worker: String,
    tasks: TaskTracker,
    /// Orders an attempt of this process is working on (from before its claim to its last write, or a
    /// carrier query for an operator), with how many: their claims are never handed over.
    in_hand: Mutex<HashMap<String, usize>>,
}

/// Counts an order as in hand for as long as it lives. Counted, not flagged: a second attempt at the
/// same order in this process (a duplicate callback) that finds nothing to claim must not un-mark the
/// first one's.
struct InHand<'a> {
    in_hand: &'a Mutex<HashMap<String, usize>>,
    order_number: String,
}

impl<'a> InHand<'a> {
    fn hold(in_hand: &'a Mutex<HashMap<String, usize>>, order_number: &str) -> Self {
        if let Ok(mut held) = in_hand.lock() {
            *held.entry(order_number.to_string()).or_insert(0) += 1;
        }
        InHand { in_hand, order_number: order_number.to_string() }
    }
}

impl Drop for InHand<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.in_hand.lock() {
            if let Some(count) = held.get_mut(&self.order_number) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    held.remove(&self.order_number);
                }
            }
        }
    }
}

/// The claim an attempt holds: the order as claimed, and the facts its decisions rest on.
struct Claim {
    order: order::Model,
    attempt: i32,
    submitted_before: bool,
}

impl Fulfiller {
    pub fn new(
        db: DatabaseConnection,
        writes: GroupCommit,
        provider: Arc<dyn TopUpProvider>,
        settings: FulfilmentSettings,
    ) -> Self {
        let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(10).map(char::from).collect();
        let worker = format!("w-{suffix}");
        let inner =
            Inner { db, writes, provider, settings, worker, tasks: TaskTracker::new(), in_hand: Mutex::default() };
        Fulfiller { inner: Arc::new(inner) }
    }

    /// This instance's name in `lease_owner`.
    pub fn worker(&self) -> &str {
        &self.inner.worker
    }

    pub fn settings(&self) -> &FulfilmentSettings {
        &self.inner.settings
    }

    /// Runs `work` in the background, tracked so shutdown waits for it.
    pub fn track<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(crate::telemetry::contain_panics("fulfilment", work));
    }

    /// Claims the order if it is due, then delivers it, retries it later, fails it on proof, or leaves
    /// it unresolved.
    pub async fn fulfil_order(&self, order_number: &str) -> Result<FulfilOutcome, DbErr> {
        Ok(self.attempt(order_number, None).await?.outcome)
    }

    /// [`Fulfiller::fulfil_order`], with the order as the attempt held it. `seen` is the order as the
    /// caller last wrote it (the payment that made it due): the claim is tried on it without reading
    /// the order first. The claim's guard holds everything the attempt decides on, so a stale `seen`
    /// only loses the claim; the order is then read and decided again, as without it.
    pub async fn attempt(&self, order_number: &str, seen: Option<order::Model>) -> Result<Attempt, DbErr> {
        let span = tracing::info_span!("fulfilment.fulfil", order_number, attempt = tracing::field::Empty);
        tracing::Instrument::instrument(self.fulfil(order_number, seen), span).await
    }

    async fn fulfil(&self, order_number: &str, seen: Option<order::Model>) -> Result<Attempt, DbErr> {
        if let Some(seen) = seen.filter(|seen| seen.order_number == order_number) {
            let attempt = self.claim_and_work(seen).await?;
            if attempt.order.is_some() {
                return Ok(attempt);
            }
        }
        let db = &self.inner.db;
        match order::Entity::find().filter(order::Column::OrderNumber.eq(order_number)).one(db).await? {
            Some(seen) => self.claim_and_work(seen).await,
            None => Ok(Attempt { outcome: FulfilOutcome::NotClaimed, order: None }),
        }
    }

    /// Claims the order if `seen` is due and the database still holds it so, then works on it.
    async fn claim_and_work(&self, seen: order::Model) -> Result<Attempt, DbErr> {
        let unclaimed = Attempt { outcome: FulfilOutcome::NotClaimed, order: None };
        // Status layer: an order already delivered, failed, or held by a live claim is left alone.
        if !is_due(&seen, now_utc()) {
            return Ok(unclaimed);
        }
        // In hand from before the claim to the last write: shutdown hands over no claim of this attempt,
        // neither between its claim and first call nor between a query and the submit it leads to.
        let _in_hand = InHand::hold(&self.inner.in_hand, &seen.order_number);
        let Some(claim) = self.claim(&seen).await? else {
            return Ok(unclaimed);
        };
        let outcome = self.work(&claim).await?;
        Ok(Attempt { outcome, order: Some(claim.order) })
    }

    /// Calls the carrier for a claimed order until the policy reaches an outcome, and writes it.
    async fn work(&self, claim: &Claim) -> Result<FulfilOutcome, DbErr> {
        let mut call = policy::first_call(claim.submitted_before);
        loop {
            let answer = match call {
                Call::Query => self.query(claim).await?,
                Call::Submit => self.submit(claim).await?,
            };
            let (answer, message) = answer;
            let used = u32::try_from(claim.attempt.saturating_sub(claim.order.budget_from)).unwrap_or(u32::MAX).max(1);
            match policy::next_step(call, answer, used, self.inner.settings.max_attempts) {
                Step::Submit => {
                    // The query may have taken long enough for the lease to lapse and another attempt to
                    // claim the order: submit only while this claim still holds it (a write, so the check
                    // and the claim are ordered in the database).
                    if call == Call::Query && !self.update_held(claim, vec![]).await? {
                        return Ok(FulfilOutcome::NotClaimed);
                    }
                    call = Call::Submit
                }
                Step::Deliver => return self.deliver(claim, message).await,
                Step::Fail => {
                    let reason = message.unwrap_or_else(|| "the carrier reported the top-up failed".into());
                    return self.fail(claim, &reason).await;
                }
                Step::RetryLater => return self.retry_later(claim, used, &describe(answer, message)).await,
                Step::Unresolved => return self.unresolved(claim, used, &describe(answer, message)).await,
            }
        }
    }

    /// Layer two: one conditional UPDATE takes the order if it is still exactly as `seen` (the attempt
    /// counter is its version) and due. Exactly one racer sees a row affected. The claim also records
    /// `submitted` before the carrier is called, so a crash mid-call leaves "query first" behind. The
    /// guard also holds what the attempt decides on besides the status, `submitted` (submit or query
    /// first) and `budget_from` (the budget used), however old the copy it was given.
    async fn claim(&self, seen: &order::Model) -> Result<Option<Claim>, DbErr> {
        let now = now_utc();
        let attempt = seen.fulfil_attempts.saturating_add(1);
        let lease_until = now + chrono_duration(self.inner.settings.lease);
        let sets = vec![
            (order::Column::LeaseOwner, Expr::value(self.worker())),
            (order::Column::LeaseExpiresAt, Expr::value(lease_until)),
            (order::Column::RechargeAt, Expr::value(seen.recharge_at.unwrap_or(now))),
            (order::Column::FulfilAttempts, Expr::value(attempt)),
            (order::Column::Submitted, Expr::value(true)),
        ];
        let guard = Condition::all()
            .add(order::Column::FulfilAttempts.eq(seen.fulfil_attempts))
            .add(order::Column::Submitted.eq(seen.submitted))
            .add(order::Column::BudgetFrom.eq(seen.budget_from))
            .add(due_condition(now));
        if !transition_shared(&self.inner.writes, seen, OrderEvent::FulfilmentStarted, sets, guard).await?.won() {
            return Ok(None);
        }
        let order = order::Model {
            status: OrderStatus::Recharging,
            fulfil_attempts: attempt,
            lease_owner: Some(self.worker().to_string()),
            submitted: true,
            ..seen.clone()
        };
        tracing::Span::current().record("attempt", attempt);
        Ok(Some(Claim { order, attempt, submitted_before: seen.submitted }))
    }

    async fn query(&self, claim: &Claim) -> Result<(Answer, Option<String>), DbErr> {
        let number = &claim.order.order_number;
        let started = Instant::now();
        let answer = self.inner.provider.query(number).await;
        let (answer, message) = match answer {
            Ok(Some(receipt)) => receipt_answer(receipt),
            Ok(None) => (Answer::NeverReceived, None),
            // A failed query proves nothing, whatever its status code.
            Err(error) => (Answer::Unknown, Some(error.to_string())),
        };
        self.record(claim, "query", answer, message.as_deref(), started).await?;
        Ok((answer, message))
    }

    async fn submit(&self, claim: &Claim) -> Result<(Answer, Option<String>), DbErr> {
        let order = &claim.order;
        let request = TopUpRequest {
            reference: order.order_number.clone(),
            phone_number: order.phone_number.clone(),
            amount: order.face_value,
            currency: order.face_currency.clone(),
            product_code: order.product_code.clone(),
            // Orders placed before the catalog kept these were sold by product code.
            carrier_reference: order.carrier_reference.clone().unwrap_or_else(|| order.product_code.clone()),
            country: order.country.clone().unwrap_or_default(),
        };
        let started = Instant::now();
        let answer = self.inner.provider.submit(&request).await;
        let (answer, message) = match answer {
            Ok(receipt) => receipt_answer(receipt),
            Err(ProviderError::Refused(m)) => (Answer::Refused, Some(m)),
            Err(ProviderError::Unknown(m)) => (Answer::Unknown, Some(m)),
        };
        self.record(claim, "submit", answer, message.as_deref(), started).await?;
        Ok((answer, message))
    }

    /// Moves the claimed order by `event`, only while this very claim still holds it.
    async fn settle(
        &self,
        claim: &Claim,
        event: OrderEvent,
        sets: Vec<(order::Column, SimpleExpr)>,
    ) -> Result<bool, DbErr> {
        let guard = Condition::all()
            .add(order::Column::LeaseOwner.eq(self.worker()))
            .add(order::Column::FulfilAttempts.eq(claim.attempt));
        let moved = transition_shared(&self.inner.writes, &claim.order, event, sets, guard).await?;
        if !moved.won() {
            tracing::warn!(?moved, "claim lost before the result was written; the next holder will query");
        }
        Ok(moved.won())
    }

    /// Writes `sets` on the order while this claim still holds it, without a status change.
    async fn update_held(&self, claim: &Claim, sets: Vec<(order::Column, SimpleExpr)>) -> Result<bool, DbErr> {
        let mut update = order::Entity::update_many().col_expr(order::Column::UpdatedAt, Expr::value(now_utc()));
        for (column, value) in sets {
            update = update.col_expr(column, value);
        }
        let update = update
            .filter(order::Column::OrderNumber.eq(&claim.order.order_number))
            .filter(order::Column::Status.eq(OrderStatus::Recharging))
            .filter(order::Column::LeaseOwner.eq(self.worker()))
            .filter(order::Column::FulfilAttempts.eq(claim.attempt));
        let rows = self
            .inner
            .writes
            .write(move |db| {
                let update = update.clone();
                Box::pin(async move { Ok(update.exec(db).await?.rows_affected) })
            })
            .await?;
        if rows == 0 {
            tracing::warn!("claim lost before the result was written; the next holder will query");
        }
        Ok(rows == 1)
    }

    async fn deliver(&self, claim: &Claim, provider_reference: Option<String>) -> Result<FulfilOutcome, DbErr> {
        let sets = vec![
            (order::Column::DeliveredAt, Expr::value(now_utc())),
            (order::Column::ProviderReference, Expr::value(provider_reference.map(|r| truncate(&r, 128)))),
            (order::Column::FailureReason, Expr::value(Option::<String>::None)),
            (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
            (order::Column::LeaseExpiresAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
        ];
        if !self.settle(claim, OrderEvent::FulfilmentSucceeded, sets).await? {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::info!("top-up delivered");
        Ok(FulfilOutcome::Delivered)
    }

    async fn fail(&self, claim: &Claim, reason: &str) -> Result<FulfilOutcome, DbErr> {
        let sets = vec![
            (order::Column::FailureReason, Expr::value(truncate(reason, 500))),
            (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
            (order::Column::LeaseExpiresAt, Expr::value(Option::<chrono::NaiveDateTime>::None)),
        ];
        if !self.settle(claim, OrderEvent::FulfilmentRefused, sets).await? {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::error!(reason, "top-up failed: the carrier proved it was not delivered");
        Ok(FulfilOutcome::Failed(reason.to_string()))
    }

    /// The budget is used up without proof either way: hand the order to an operator, and keep asking
    /// the carrier on the capped backoff.
    async fn unresolved(&self, claim: &Claim, used: u32, reason: &str) -> Result<FulfilOutcome, DbErr> {
        let next = now_utc() + chrono_duration(self.delay(used));
        let reason = format!("outcome unknown after {used} attempts: {reason}");
        let sets = vec![
            (order::Column::FailureReason, Expr::value(truncate(&reason, 500))),
            (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
            (order::Column::LeaseExpiresAt, Expr::value(next)),
            (order::Column::UnresolvedAt, Expr::value(claim.order.unresolved_at.unwrap_or_else(now_utc))),
        ];
        if !self.settle(claim, OrderEvent::FulfilmentUnresolved, sets).await? {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::warn!(reason, "top-up unresolved; an operator must settle it, and the carrier is still asked");
        Ok(FulfilOutcome::Unresolved(reason))
    }

    /// Gives the claim back until the next retry time.
    async fn retry_later(&self, claim: &Claim, used: u32, reason: &str) -> Result<FulfilOutcome, DbErr> {
        let delay = self.delay(used);
        let sets = vec![
            (order::Column::LeaseOwner, Expr::value(Option::<String>::None)),
            (order::Column::LeaseExpiresAt, Expr::value(now_utc() + chrono_duration(delay))),
            (order::Column::FailureReason, Expr::value(truncate(reason, 500))),
        ];
        if !self.update_held(claim, sets).await? {
            return Ok(FulfilOutcome::NotClaimed);
        }
        tracing::warn!(retry_in_s = delay.as_secs(), reason, "top-up will be retried");
        Ok(FulfilOutcome::Retrying)
    }

    fn delay(&self, attempt: u32) -> Duration {
        let s = &self.inner.settings;
        policy::backoff(attempt, s.retry_base, s.retry_max, rand::rng().random_range(0.8..1.2))
    }

    async fn record(
        &self,
        claim: &Claim,
        action: &str,
        answer: Answer,
        message: Option<&str>,
        started: Instant,
    ) -> Result<(), DbErr> {
        let latency = started.elapsed();
        let outcome = answer_label(answer);
        tracing::info!(action, outcome, latency_ms = latency.as_millis() as u64, "carrier call");
        let labels = [("action", action.to_string()), ("outcome", outcome.to_string())];
        metrics::counter!("fulfilment_attempts_total", &labels).increment(1);
        metrics::histogram!("carrier_call_duration_seconds", &labels[..1]).record(latency.as_secs_f64());
        let row = fulfilment_attempt::ActiveModel {
            order_number: Set(claim.order.order_number.clone()),
            attempt: Set(claim.attempt),
            action: Set(action.to_string()),
            outcome: Set(outcome.to_string()),
            message: Set(message.map(|m| truncate(m, 500))),
            latency_ms: Set(i64::try_from(latency.as_millis()).unwrap_or(i64::MAX)),
            worker: Set(self.worker().to_string()),
            created_at: Set(now_utc()),
            ..Default::default()
        };
        self.inner
            .writes
            .write(move |db| {
                let row = row.clone();
                Box::pin(async move {
                    fulfilment_attempt::Entity::insert(row).exec_without_returning(db).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Asks the carrier whether an order's top-up provably did not happen: it never received the
    /// reference, or it reports the top-up failed. `Some(proof)` for an operator's refund of an
    /// unresolved order; `None` when the carrier says otherwise or cannot be asked.
    pub async fn proof_of_non_delivery(&self, order_number: &str) -> Option<String> {
        let answer = {
            let _in_hand = InHand::hold(&self.inner.in_hand, order_number);
            self.inner.provider.query(order_number).await
        };
        tracing::info!(order_number, answer = ?answer.as_ref().map(|r| r.as_ref().map(|r| r.state)), "carrier asked for proof of non-delivery");
        match answer {
            Ok(None) => Some("the carrier never received the top-up".into()),
            Ok(Some(receipt)) if receipt.state == TopUpState::Failed => {
                Some(format!("the carrier reports the top-up failed: {}", receipt.message.unwrap_or_default()))
            }
            Ok(Some(_)) | Err(_) => None,
        }
    }

    /// Stops taking work, waits up to `grace` for in-flight top-ups, then gives back the claims this
    /// worker holds that are idle, so another replica takes them over at once (it will query first).
    pub async fn shutdown(&self, grace: Duration) -> Result<u64, DbErr> {
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("in-flight top-ups did not finish in time; their claims lapse on their own");
        }
        self.release_claims().await
    }

    /// Expires the leases this worker holds that no attempt has in hand ([`policy::may_release`]). A
    /// claim still being worked on keeps its lease to its natural expiry, which outlasts the call's
    /// timeout: handing it over now could put a second submit on the wire beside this one's.
    pub async fn release_claims(&self) -> Result<u64, DbErr> {
        let in_hand: Vec<String> = match self.inner.in_hand.lock() {
            Ok(_) if policy::may_release(true) => Vec::new(),
            Ok(held) => held.keys().cloned().collect(),
            // A poisoned record of calls: release nothing rather than something in flight.
            Err(_) => return Ok(0),
        };
        let result = order::Entity::update_many()
            .col_expr(order::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(order::Column::LeaseExpiresAt, Expr::value(now_utc()))
            .filter(order::Column::Status.eq(OrderStatus::Recharging))
            .filter(order::Column::LeaseOwner.eq(self.worker()))
            .filter(order::Column::OrderNumber.is_not_in(in_hand))
            .exec(&self.inner.db)
            .await?;
        if result.rows_affected > 0 {
            tracing::info!(released = result.rows_affected, "idle claims released");
        }
        Ok(result.rows_affected)
    }
}

fn receipt_answer(receipt: Receipt) -> (Answer, Option<String>) {
    match receipt.state {
        TopUpState::Delivered => (Answer::Delivered, receipt.provider_reference),
        TopUpState::Pending => (Answer::Pending, receipt.message),
        TopUpState::Failed => (Answer::Refused, receipt.message),
    }
}

fn answer_label(answer: Answer) -> &'static str {
    match answer {
        Answer::Delivered => "delivered",
        Answer::Pending => "pending",
        Answer::Refused => "refused",
        Answer::NeverReceived => "not_found",
        Answer::Unknown => "unknown",
    }
}

fn describe(answer: Answer, message: Option<String>) -> String {
    match (answer, message) {
        (Answer::Pending, _) => "the carrier reports the top-up pending".into(),
        (_, Some(message)) => message,
        (answer, None) => format!("carrier answer {}", answer_label(answer)),
    }
}

/// The SQL form of [`is_due`], for the claim's guard and the sweep's query.
pub fn due_condition(now: chrono::NaiveDateTime) -> Condition {
    OrderStatus::sources(OrderEvent::FulfilmentStarted).into_iter().fold(Condition::any(), |any, status| {
        let this = Condition::all().add(order::Column::Status.eq(status));
        any.add(if status.is_leased() { this.add(order::Column::LeaseExpiresAt.lte(now)) } else { this })
    })
}

/// A state [`OrderEvent::FulfilmentStarted`] leaves from, and past its lease if it has one: `paid`, or
/// `recharging`/`unresolved` whose lease has lapsed (a dead worker, a retry whose time has come, the
/// next query of an unresolved order).
fn is_due(order: &order::Model, now: chrono::NaiveDateTime) -> bool {
    order.status.can_take(OrderEvent::FulfilmentStarted)
        && (!order.status.is_leased() || order.lease_expires_at.is_some_and(|t| t <= now))
}

fn chrono_duration(d: Duration) -> ChronoDuration {
    ChronoDuration::milliseconds(d.as_millis().min(i64::MAX as u128) as i64)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;
    use crate::entities::fulfilment_attempt;
    use crate::services::orders::{find_by_number, place_order};
    use sea_orm::QueryOrder;

    /// A sandbox carrier's fulfiller on a database that logs each statement's first words, and a paid
    /// order (as read back) that the sandbox delivers at once.
    async fn paid_order() -> (Fulfiller, DatabaseConnection, order::Model, Arc<Mutex<Vec<String>>>) {
        let (db, log) = crate::services::testing::logged_database(|sql| {
            Some(sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ").replace(['"', '`'], ""))
        })
        .await;
        let phone = PhoneNumber::parse("+8613800000012").unwrap();
        let number = place_order(&db, "oTestBuyer", 1, &phone).await.unwrap().order_number;
        crate::services::testing::mark_paid(&db, &number).await;
        let paid = find_by_number(&db, &number).await.unwrap().unwrap();
        let fulfiller = crate::services::testing::sandbox_fulfiller(&db, &GroupCommit::new(db.clone()));
        log.lock().unwrap().clear();
        (fulfiller, db, paid, log)
    }

    #[tokio::test]
    async fn an_order_the_caller_saw_paid_is_claimed_without_reading_it_first() {
        let (fulfiller, db, paid, log) = paid_order().await;
        let number = paid.order_number.clone();

        let attempt = fulfiller.attempt(&number, Some(paid)).await.unwrap();

        assert_eq!(attempt.outcome, FulfilOutcome::Delivered);
        assert_eq!(log.lock().unwrap().first().map(String::as_str), Some("UPDATE orders SET"), "{log:?}");
        assert!(!log.lock().unwrap().iter().any(|s| s.starts_with("SELECT") && s.contains("orders")), "{log:?}");
        let held = attempt.order.expect("the order the attempt claimed");
        assert_eq!((held.status, held.fulfil_attempts), (OrderStatus::Recharging, 1));
        assert_eq!(find_by_number(&db, &number).await.unwrap().unwrap().status, OrderStatus::Success);
    }

    /// A caller's copy that no longer says what the database holds loses the claim, and the order is
    /// read and decided again: here a claim of another attempt marked it `submitted` (the operator
    /// then put it back in line as `paid`), so the carrier is asked before anything is submitted.
    #[tokio::test]
    async fn a_stale_copy_loses_the_claim_and_the_order_is_read_and_decided_again() {
        let (fulfiller, db, paid, log) = paid_order().await;
        let number = paid.order_number.clone();
        order::Entity::update_many()
            .col_expr(order::Column::Submitted, Expr::value(true))
            .filter(order::Column::OrderNumber.eq(&number))
            .exec(&db)
            .await
            .unwrap();
        log.lock().unwrap().clear();

        let attempt = fulfiller.attempt(&number, Some(paid)).await.unwrap();

        assert_eq!(attempt.outcome, FulfilOutcome::Delivered);
        let log = log.lock().unwrap().clone();
        let read = log.iter().position(|s| s.starts_with("SELECT") && s.contains("orders")).expect("a read");
        assert!(log[..read].iter().all(|s| !s.starts_with("INSERT")), "nothing reached the carrier first: {log:?}");
        let calls: Vec<String> = fulfilment_attempt::Entity::find()
            .filter(fulfilment_attempt::Column::OrderNumber.eq(&number))
            .order_by_asc(fulfilment_attempt::Column::Id)
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|call| call.action)
            .collect();
        assert_eq!(calls, ["query", "submit"], "submitted before: the carrier is asked first");
    }
}
