use std::fmt;
use std::str::FromStr;

/// Where an order is in its life. States only move forward; see [`OrderStatus::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Unpaid,
    Paid,
    Recharging,
    Success,
    Failed,
    Refunding,
    Refunded,
    Closed,
}

/// Something that happened to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// WeChat confirmed the payment (callback or active query).
    PaymentConfirmed,
    /// The order expired unpaid and its payment was closed.
    Expired,
    /// A worker claimed the top-up.
    FulfilmentStarted,
    /// The carrier confirmed delivery.
    FulfilmentSucceeded,
    /// The carrier refused for good, or the retries ran out.
    FulfilmentFailed,
    /// An operator asked to try a failed top-up again.
    RetryRequested,
    /// A refund was requested (operator, or automatic after a failure or a late payment).
    RefundRequested,
    /// WeChat confirmed the refund.
    RefundSucceeded,
}

/// The event does not apply to the order's current state.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot take {event:?}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Unpaid,
        OrderStatus::Paid,
        OrderStatus::Recharging,
        OrderStatus::Success,
        OrderStatus::Failed,
        OrderStatus::Refunding,
        OrderStatus::Refunded,
        OrderStatus::Closed,
    ];

    /// The state machine. Every edge is listed; everything else is refused, so a late or duplicate
    /// event can never move an order backwards.
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus, TransitionError> {
        use OrderEvent as E;
        use OrderStatus as S;
        let next = match (self, event) {
            (S::Unpaid, E::PaymentConfirmed) => S::Paid,
            (S::Unpaid, E::Expired) => S::Closed,
            // Money that arrives for a closed order is sent back.
            (S::Closed, E::PaymentConfirmed) => S::Refunding,
            (S::Paid, E::FulfilmentStarted) => S::Recharging,
            (S::Recharging, E::FulfilmentSucceeded) => S::Success,
            (S::Recharging, E::FulfilmentFailed) => S::Failed,
            (S::Failed, E::RetryRequested) => S::Paid,
            (S::Paid | S::Failed | S::Success, E::RefundRequested) => S::Refunding,
            (S::Refunding, E::RefundSucceeded) => S::Refunded,
            // A partial refund settled; more of the payment may still be refunded.
            (S::Refunded, E::RefundRequested) => S::Refunding,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }

    /// The states `event` can leave from: the guard of the conditional `UPDATE`.
    pub fn sources(event: OrderEvent) -> Vec<OrderStatus> {
        Self::ALL.into_iter().filter(|s| s.apply(event).is_ok()).collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Unpaid => "unpaid",
            OrderStatus::Paid => "paid",
            OrderStatus::Recharging => "recharging",
            OrderStatus::Success => "success",
            OrderStatus::Failed => "failed",
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
    fn fulfilment_can_fail() {
        assert_eq!(S::Recharging.apply(E::FulfilmentFailed), Ok(S::Failed));
    }

    #[test]
    fn an_operator_retry_makes_a_failed_order_due() {
        assert_eq!(S::Failed.apply(E::RetryRequested), Ok(S::Paid));
    }

    #[test]
    fn refunds_start_from_paid_failed_or_success_and_end_refunded() {
        for from in [S::Paid, S::Failed, S::Success] {
            assert_eq!(from.apply(E::RefundRequested), Ok(S::Refunding));
        }
        assert_eq!(S::Refunding.apply(E::RefundSucceeded), Ok(S::Refunded));
    }

    #[test]
    fn a_partially_refunded_order_can_be_refunded_further() {
        assert_eq!(S::Refunded.apply(E::RefundRequested), Ok(S::Refunding));
    }

    #[test]
    fn duplicate_payment_events_never_move_a_paid_order() {
        for from in [S::Paid, S::Recharging, S::Success, S::Failed, S::Refunding, S::Refunded] {
            assert!(from.apply(E::PaymentConfirmed).is_err(), "{from}");
        }
    }

    #[test]
    fn terminal_states_take_no_fulfilment_or_expiry_event() {
        for from in [S::Success, S::Refunded, S::Closed] {
            for event in
                [E::FulfilmentStarted, E::FulfilmentSucceeded, E::FulfilmentFailed, E::Expired, E::RetryRequested]
            {
                assert!(from.apply(event).is_err(), "{from} {event:?}");
            }
        }
    }

    #[test]
    fn sources_are_the_guard_of_each_event() {
        assert_eq!(S::sources(E::PaymentConfirmed), vec![S::Unpaid, S::Closed]);
        assert_eq!(S::sources(E::FulfilmentStarted), vec![S::Paid]);
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(s));
        }
        assert_eq!("PAID".parse::<S>(), Err(()));
    }
}
