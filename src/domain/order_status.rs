use sea_orm::entity::prelude::{DeriveActiveEnum, EnumIter, StringLen};
use std::fmt;
use std::str::FromStr;

/// Where an order is in its life. States only move forward, except that a delivered order being refunded
/// in part is delivered again once that part is back; see [`OrderStatus::apply`]. Stored as its
/// lower-case name (the `orders.status` column), so the entity reads and writes this enum directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum OrderStatus {
    #[sea_orm(string_value = "unpaid")]
    Unpaid,
    #[sea_orm(string_value = "paid")]
    Paid,
    #[sea_orm(string_value = "recharging")]
    Recharging,
    #[sea_orm(string_value = "success")]
    Success,
    /// The carrier proved the top-up was not delivered (it refused, or reported it failed).
    #[sea_orm(string_value = "failed")]
    Failed,
    /// The attempt budget ran out while the outcome was unknown or pending: the carrier is still asked
    /// (with a capped backoff) and an operator settles it. Never refunded without proof.
    #[sea_orm(string_value = "unresolved")]
    Unresolved,
    #[sea_orm(string_value = "refunding")]
    Refunding,
    #[sea_orm(string_value = "refunded")]
    Refunded,
    #[sea_orm(string_value = "closed")]
    Closed,
}

/// How much of the payment a refund asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundScope {
    /// All that is left.
    Whole,
    /// Part of what is left.
    Partial,
}

/// Something that happened to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// WeChat confirmed the payment (callback or active query).
    PaymentConfirmed,
    /// The order expired unpaid and WeChat confirmed its payment cannot happen any more.
    Expired,
    /// A worker claimed the top-up (a first claim, a retry whose time has come, a lapsed lease, or the
    /// next query of an unresolved order).
    FulfilmentStarted,
    /// The carrier confirmed delivery.
    FulfilmentSucceeded,
    /// The carrier proved the top-up was not delivered: it reported `failed` or refused the request.
    FulfilmentRefused,
    /// The attempt budget ran out without an answer that proves either way.
    FulfilmentUnresolved,
    /// An operator settled an unresolved order as delivered (checked with the carrier out of band).
    MarkedDelivered,
    /// An operator asked to try a failed or unresolved top-up again (the carrier is queried first).
    RetryRequested,
    /// A refund was opened (operator, or automatic after a failure or a late payment).
    RefundRequested(RefundScope),
    /// Every refund of the order succeeded at WeChat, and together they returned all that was paid.
    RefundSucceeded,
    /// Every refund of a delivered order succeeded at WeChat, and part of the payment is kept: the order
    /// is delivered, with a refund.
    PartialRefundSucceeded,
}

/// The event does not apply to the order's current state.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot take {event:?}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 9] = [
        OrderStatus::Unpaid,
        OrderStatus::Paid,
        OrderStatus::Recharging,
        OrderStatus::Success,
        OrderStatus::Failed,
        OrderStatus::Unresolved,
        OrderStatus::Refunding,
        OrderStatus::Refunded,
        OrderStatus::Closed,
    ];

    /// The state machine. Every edge is listed; everything else is refused, so a late or duplicate
    /// event can never move an order backwards.
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus, TransitionError> {
        use OrderEvent as E;
        use OrderStatus as S;
        use RefundScope::{Partial, Whole};
        let next = match (self, event) {
            (S::Unpaid, E::PaymentConfirmed) => S::Paid,
            (S::Unpaid, E::Expired) => S::Closed,
            // Money that arrives for a closed order is sent back.
            (S::Closed, E::PaymentConfirmed) => S::Refunding,
            // `recharging` again: a lapsed lease or a retry whose time has come (the claim adds the
            // lease condition); `unresolved`: its next query.
            (S::Paid | S::Recharging | S::Unresolved, E::FulfilmentStarted) => S::Recharging,
            (S::Recharging, E::FulfilmentSucceeded) => S::Success,
            (S::Recharging, E::FulfilmentRefused) => S::Failed,
            (S::Recharging, E::FulfilmentUnresolved) => S::Unresolved,
            (S::Unresolved, E::MarkedDelivered) => S::Success,
            (S::Failed | S::Unresolved, E::RetryRequested) => S::Paid,
            // An undelivered order is refunded whole, and only while no submit can have reached the
            // carrier (`paid` and never submitted: the refund's guard adds `submitted = false`), or once
            // the carrier proved it was not delivered (`failed`). An unresolved order needs that proof
            // or an operator's recorded reason (checked by the refund service).
            (S::Paid | S::Unresolved, E::RefundRequested(Whole)) => S::Refunding,
            // A failed top-up (proof nothing was delivered) is refunded whole.
            (S::Failed, E::RefundRequested(Whole)) => S::Refunding,
            // Delivered: whole or in part, also while other refunds are under way. (`refunded` with money
            // left is how partial refunds ended before they returned the order to `success`.)
            (S::Success | S::Refunding | S::Refunded, E::RefundRequested(Whole | Partial)) => S::Refunding,
            (S::Refunding, E::RefundSucceeded) => S::Refunded,
            // Part of a delivered order's payment is back and nothing else is open: delivered, with a refund.
            (S::Refunding, E::PartialRefundSucceeded) => S::Success,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }

    /// The states `event` can leave from: the guard of the conditional `UPDATE`.
    pub fn sources(event: OrderEvent) -> Vec<OrderStatus> {
        Self::ALL.into_iter().filter(|s| s.apply(event).is_ok()).collect()
    }

    /// Whether `event` applies to an order in this state.
    pub fn can_take(self, event: OrderEvent) -> bool {
        self.apply(event).is_ok()
    }

    /// A worker's claim holds an order in this state (with a lease): it is claimed again only once the
    /// lease has lapsed.
    pub fn is_leased(self) -> bool {
        matches!(self, OrderStatus::Recharging | OrderStatus::Unresolved)
    }

    /// `RefundRequested` from `paid` is allowed only while nothing was submitted to the carrier: the
    /// extra guard the transition adds for that source.
    pub fn requires_nothing_submitted(self, event: OrderEvent) -> bool {
        self == OrderStatus::Paid && matches!(event, OrderEvent::RefundRequested(_))
    }

    /// The top-up is still being worked on (counted as in flight in the books).
    pub fn is_delivering(self) -> bool {
        matches!(self, OrderStatus::Paid | OrderStatus::Recharging | OrderStatus::Unresolved)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Unpaid => "unpaid",
            OrderStatus::Paid => "paid",
            OrderStatus::Recharging => "recharging",
            OrderStatus::Success => "success",
            OrderStatus::Failed => "failed",
            OrderStatus::Unresolved => "unresolved",
            OrderStatus::Refunding => "refunding",
            OrderStatus::Refunded => "refunded",
            OrderStatus::Closed => "closed",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|status| status.as_str() == s).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::OrderEvent as E;
    use super::OrderStatus as S;
    use super::RefundScope::{Partial, Whole};
    use sea_orm::ActiveEnum;

    #[test]
    fn only_the_states_fulfilment_resumes_from_hold_a_lease() {
        // A leased state is one a claim can be taken again from, once the lease lapses; `paid` has none.
        for status in S::ALL {
            if status.is_leased() {
                assert!(status.can_take(E::FulfilmentStarted), "{status}");
            }
        }
        assert!(!S::Paid.is_leased());
        assert_eq!(S::sources(E::FulfilmentStarted), [S::Paid, S::Recharging, S::Unresolved]);
    }

    #[test]
    fn payment_moves_unpaid_to_paid() {
        assert_eq!(S::Unpaid.apply(E::PaymentConfirmed), Ok(S::Paid));
    }

    #[test]
    fn expiry_closes_an_unpaid_order() {
        assert_eq!(S::Unpaid.apply(E::Expired), Ok(S::Closed));
    }

    #[test]
    fn a_payment_for_a_closed_order_is_refunded() {
        assert_eq!(S::Closed.apply(E::PaymentConfirmed), Ok(S::Refunding));
    }

    #[test]
    fn fulfilment_goes_paid_recharging_success() {
        assert_eq!(S::Paid.apply(E::FulfilmentStarted), Ok(S::Recharging));
        assert_eq!(S::Recharging.apply(E::FulfilmentSucceeded), Ok(S::Success));
    }

    #[test]
    fn a_lapsed_claim_and_an_unresolved_order_can_be_claimed_again() {
        assert_eq!(S::Recharging.apply(E::FulfilmentStarted), Ok(S::Recharging));
        assert_eq!(S::Unresolved.apply(E::FulfilmentStarted), Ok(S::Recharging));
    }

    #[test]
    fn only_proof_fails_a_top_up() {
        assert_eq!(S::Recharging.apply(E::FulfilmentRefused), Ok(S::Failed));
        assert_eq!(S::Unresolved.apply(E::FulfilmentRefused).map_err(|e| e.from), Err(S::Unresolved));
    }

    #[test]
    fn an_exhausted_budget_leaves_the_order_unresolved() {
        assert_eq!(S::Recharging.apply(E::FulfilmentUnresolved), Ok(S::Unresolved));
    }

    #[test]
    fn an_operator_settles_an_unresolved_order_as_delivered() {
        assert_eq!(S::Unresolved.apply(E::MarkedDelivered), Ok(S::Success));
        for from in S::ALL.into_iter().filter(|s| *s != S::Unresolved) {
            assert!(from.apply(E::MarkedDelivered).is_err(), "{from}");
        }
    }

    #[test]
    fn an_operator_retry_makes_a_failed_or_unresolved_order_due() {
        assert_eq!(S::Failed.apply(E::RetryRequested), Ok(S::Paid));
        assert_eq!(S::Unresolved.apply(E::RetryRequested), Ok(S::Paid));
    }

    #[test]
    fn refunds_start_from_paid_failed_or_success_and_end_refunded() {
        for from in [S::Paid, S::Failed, S::Success] {
            assert_eq!(from.apply(E::RefundRequested(Whole)), Ok(S::Refunding));
        }
        assert_eq!(S::Refunding.apply(E::RefundSucceeded), Ok(S::Refunded));
    }

    #[test]
    fn a_delivered_order_refunded_in_part_is_delivered_again_and_only_it_can_be() {
        assert_eq!(S::Success.apply(E::RefundRequested(Partial)), Ok(S::Refunding));
        assert_eq!(S::Refunding.apply(E::PartialRefundSucceeded), Ok(S::Success));
        assert_eq!(S::sources(E::PartialRefundSucceeded), vec![S::Refunding]);
        // Nothing was delivered: all of it goes back.
        assert!(S::Failed.apply(E::RefundRequested(Partial)).is_err());
    }

    #[test]
    fn an_undelivered_order_is_only_refunded_whole() {
        assert!(S::Paid.apply(E::RefundRequested(Partial)).is_err());
        assert!(S::Unresolved.apply(E::RefundRequested(Partial)).is_err());
        assert!(S::Paid.requires_nothing_submitted(E::RefundRequested(Whole)));
        assert!(!S::Failed.requires_nothing_submitted(E::RefundRequested(Whole)));
    }

    #[test]
    fn an_order_being_delivered_cannot_be_refunded() {
        for scope in [Whole, Partial] {
            assert!(S::Recharging.apply(E::RefundRequested(scope)).is_err());
            assert!(S::Unpaid.apply(E::RefundRequested(scope)).is_err());
            assert!(S::Closed.apply(E::RefundRequested(scope)).is_err());
        }
    }

    #[test]
    fn a_partially_refunded_order_can_be_refunded_further() {
        assert_eq!(S::Refunded.apply(E::RefundRequested(Partial)), Ok(S::Refunding));
        assert_eq!(S::Refunding.apply(E::RefundRequested(Partial)), Ok(S::Refunding));
    }

    #[test]
    fn duplicate_payment_events_never_move_a_paid_order() {
        for from in S::ALL.into_iter().filter(|s| !matches!(s, S::Unpaid | S::Closed)) {
            assert!(from.apply(E::PaymentConfirmed).is_err(), "{from}");
        }
    }

    #[test]
    fn terminal_states_take_no_fulfilment_or_expiry_event() {
        for from in [S::Success, S::Refunded, S::Closed] {
            for event in [
                E::FulfilmentStarted,
                E::FulfilmentSucceeded,
                E::FulfilmentRefused,
                E::FulfilmentUnresolved,
                E::Expired,
                E::RetryRequested,
            ] {
                assert!(from.apply(event).is_err(), "{from} {event:?}");
            }
        }
    }

    #[test]
    fn sources_are_the_guard_of_each_event() {
        assert_eq!(S::sources(E::PaymentConfirmed), vec![S::Unpaid, S::Closed]);
        assert_eq!(S::sources(E::FulfilmentStarted), vec![S::Paid, S::Recharging, S::Unresolved]);
        assert_eq!(S::sources(E::RefundSucceeded), vec![S::Refunding]);
    }

    #[test]
    fn status_round_trips_through_its_name_and_its_column() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(s));
            assert_eq!(s.to_value(), s.as_str());
            assert_eq!(S::try_from_value(&s.as_str().to_string()), Ok(s));
        }
        assert_eq!("PAID".parse::<S>(), Err(()));
    }
}
