//! Business statistics over a range of Beijing (UTC+8) days, for the operator view.

use chrono::{Duration, NaiveDate, Timelike};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use crate::domain::{Money, OrderStatus};
use crate::entities::{order, refund};

#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub placed: u64,
    pub paid: u64,
    pub delivered: u64,
    pub failed: u64,
    pub refunded: u64,
    /// paid / placed.
    pub payment_success_rate: Option<f64>,
    /// delivered / (delivered + failed).
    pub top_up_success_rate: Option<f64>,
    pub paid_total: Money,
    pub delivered_total: Money,
    pub refunded_total: Money,
    /// From payment to delivery, in milliseconds: p50, p90, p99.
    pub top_up_latency_ms: Option<[i64; 3]>,
    /// Orders placed per hour of the day (UTC+8), index 0 = 00:00–00:59.
    pub orders_by_hour: [u64; 24],
}

/// Orders placed from `from` to `to` (inclusive, Beijing days).
pub async fn stats(db: &impl ConnectionTrait, from: NaiveDate, to: NaiveDate) -> Result<Stats, DbErr> {
    let start = from.and_hms_opt(0, 0, 0).unwrap_or_default() - Duration::hours(8);
    let end = to.and_hms_opt(0, 0, 0).unwrap_or_default() - Duration::hours(8) + Duration::days(1);
    let orders = order::Entity::find()
        .filter(order::Column::CreatedAt.gte(start))
        .filter(order::Column::CreatedAt.lt(end))
        .all(db)
        .await?;
    let mut refunded_total = Decimal::ZERO;
    for chunk in orders.chunks(500) {
        let numbers = chunk.iter().map(|o| o.order_number.clone());
        let rows = refund::Entity::find()
            .filter(refund::Column::OrderNumber.is_in(numbers))
            .filter(refund::Column::Status.eq(crate::domain::RefundStatus::Success))
            .all(db)
            .await?;
        refunded_total += rows.iter().map(|r| Money::from_stored(r.amount).yuan()).sum::<Decimal>();
    }

    let mut s = Stats {
        placed: orders.len() as u64,
        paid: 0,
        delivered: 0,
        failed: 0,
        refunded: 0,
        payment_success_rate: None,
        top_up_success_rate: None,
        paid_total: Money::from_stored(Decimal::ZERO),
        delivered_total: Money::from_stored(Decimal::ZERO),
        refunded_total: Money::from_stored(refunded_total),
        top_up_latency_ms: None,
        orders_by_hour: [0; 24],
    };
    let (mut paid_total, mut delivered_total) = (Decimal::ZERO, Decimal::ZERO);
    let mut latencies = Vec::new();
    for o in &orders {
        let amount = Money::from_stored(o.amount).yuan();
        s.orders_by_hour[(o.created_at + Duration::hours(8)).hour() as usize] += 1;
        if o.paid_at.is_some() {
            s.paid += 1;
            paid_total += amount;
        }
        if let (Some(paid), Some(delivered)) = (o.paid_at, o.delivered_at) {
            s.delivered += 1;
            delivered_total += amount;
            latencies.push((delivered - paid).num_milliseconds().max(0));
        }
        let gave_up = o.delivered_at.is_none() && o.fulfil_attempts > 0 && o.failure_reason.is_some();
        if o.status == OrderStatus::Failed || (gave_up && o.refund_seq > 0) {
            s.failed += 1;
        }
        if o.status == OrderStatus::Refunded {
            s.refunded += 1;
        }
    }
    s.paid_total = Money::from_stored(paid_total);
    s.delivered_total = Money::from_stored(delivered_total);
    s.payment_success_rate = (s.placed > 0).then(|| s.paid as f64 / s.placed as f64);
    s.top_up_success_rate = (s.delivered + s.failed > 0).then(|| s.delivered as f64 / (s.delivered + s.failed) as f64);
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        s.top_up_latency_ms = Some([at(0.5), at(0.9), at(0.99)]);
    }
    Ok(s)
}
