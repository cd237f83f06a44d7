//! The books for one day (UTC+8): every payment is delivered, refunded, or still in flight.

use chrono::{Duration, NaiveDate};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use std::collections::HashMap;

use crate::domain::{Money, OrderStatus, RefundStatus};
use crate::entities::{order, refund};

/// Totals for the orders paid on one Beijing day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayReport {
    pub date: NaiveDate,
    pub paid_count: u64,
    pub paid_total: Money,
    pub delivered_total: Money,
    pub refunded_total: Money,
    pub in_flight_total: Money,
    /// Orders where `paid ≠ delivered + refunded + in flight`.
    pub mismatches: Vec<Mismatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub order_number: String,
    pub status: String,
    pub paid: Money,
    pub delivered: Money,
    pub refunded: Money,
    pub in_flight: Money,
    pub reason: String,
}

pub async fn day_report(db: &impl ConnectionTrait, date: NaiveDate) -> Result<DayReport, DbErr> {
    // Beijing midnight is 16:00 UTC the day before; no daylight saving.
    let start = date.and_hms_opt(0, 0, 0).unwrap_or_default() - Duration::hours(8);
    let end = start + Duration::days(1);
    let orders = order::Entity::find()
        .filter(order::Column::PaidAt.gte(start))
        .filter(order::Column::PaidAt.lt(end))
        .order_by_asc(order::Column::PaidAt)
        .all(db)
        .await?;
    let mut refunds: HashMap<String, Vec<refund::Model>> = HashMap::new();
    for chunk in orders.chunks(500) {
        let numbers = chunk.iter().map(|o| o.order_number.clone());
        for r in refund::Entity::find().filter(refund::Column::OrderNumber.is_in(numbers)).all(db).await? {
            refunds.entry(r.order_number.clone()).or_default().push(r);
        }
    }

    let zero = Decimal::ZERO;
    let (mut paid_total, mut delivered_total, mut refunded_total, mut in_flight_total) = (zero, zero, zero, zero);
    let mut mismatches = Vec::new();
    for o in &orders {
        let sum = |wanted: &[RefundStatus]| -> Decimal {
            let rows = refunds.get(&o.order_number).map(Vec::as_slice).unwrap_or_default();
            rows.iter().filter(|r| wanted.contains(&r.status)).map(|r| Money::from_stored(r.amount).yuan()).sum()
        };
        let paid = Money::from_stored(o.amount).yuan();
        let refunded = sum(&[RefundStatus::Success]);
        let refunding = sum(&RefundStatus::OPEN);
        let refund_failed = sum(&[RefundStatus::Failed]);
        let kept = paid - refunded - refunding - refund_failed;
        let delivered = if o.delivered_at.is_some() { kept } else { zero };
        // Unresolved counts as in flight: the carrier is still being asked, and nothing was refunded.
        let still_delivering = o.status.is_delivering();
        let in_flight = refunding + if still_delivering && o.delivered_at.is_none() { kept } else { zero };

        paid_total += paid;
        delivered_total += delivered;
        refunded_total += refunded;
        in_flight_total += in_flight;
        if delivered + refunded + in_flight != paid {
            let reason = if refund_failed > zero {
                "a refund failed at WeChat".to_string()
            } else if o.status == OrderStatus::Failed {
                "the top-up failed and the payment has not been refunded".to_string()
            } else {
                format!("{} order neither delivered, refunded nor in flight", o.status)
            };
            mismatches.push(Mismatch {
                order_number: o.order_number.clone(),
                status: o.status.to_string(),
                paid: Money::from_stored(paid),
                delivered: Money::from_stored(delivered),
                refunded: Money::from_stored(refunded),
                in_flight: Money::from_stored(in_flight),
                reason,
            });
        }
    }
    Ok(DayReport {
        date,
        paid_count: orders.len() as u64,
        paid_total: Money::from_stored(paid_total),
        delivered_total: Money::from_stored(delivered_total),
        refunded_total: Money::from_stored(refunded_total),
        in_flight_total: Money::from_stored(in_flight_total),
        mismatches,
    })
}
