//! The decisions of a fulfilment attempt, as pure functions: what the carrier's answer proves and what
//! to do next. The worker in `mod.rs` and the protocol model in `model/` both call these, so the
//! model checks the rules the service runs.

use std::time::Duration;

/// A carrier call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Query,
    Submit,
}

/// What a carrier call told us, reduced to what it proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// The carrier confirmed delivery.
    Delivered,
    /// The carrier holds the top-up and has not finished it.
    Pending,
    /// The carrier reported the top-up failed, or refused the request for good (a 4xx other than
    /// 408/409/429): proof that nothing was delivered.
    Refused,
    /// A query found no top-up under our reference: the carrier never received it.
    NeverReceived,
    /// Timeout, 5xx, 408/409/429, an unreadable body: the top-up may or may not exist.
    Unknown,
}

/// What the attempt does after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// `recharging → success`.
    Deliver,
    /// `recharging → failed` (the refund follows): only on proof.
    Fail,
    /// Submit now (the carrier never received the reference, or nothing was submitted yet).
    Submit,
    /// Give the claim back until the next retry time; the next attempt queries first.
    RetryLater,
    /// The budget is used up without proof either way: `recharging → unresolved`, for an operator, and
    /// still queried on a capped backoff.
    Unresolved,
}

/// The rule: deliver on a confirmation, fail only on proof, submit only when the carrier never received
/// the reference, and never turn an unknown or pending outcome into a failure, whatever the budget.
pub fn next_step(call: Call, answer: Answer, attempts_used: u32, budget: u32) -> Step {
    match (call, answer) {
        (_, Answer::Delivered) => Step::Deliver,
        (_, Answer::Refused) => Step::Fail,
        (Call::Query, Answer::NeverReceived) => Step::Submit,
        // A submit is never answered "never received"; treat a confused adapter as unknown.
        (Call::Submit, Answer::NeverReceived) | (_, Answer::Pending | Answer::Unknown) => {
            if attempts_used >= budget {
                Step::Unresolved
            } else {
                Step::RetryLater
            }
        }
    }
}

/// Whether the first call of an attempt is a query: once a submit may have reached the carrier
/// (`submitted`), the reference is looked up before anything is sent again.
pub fn first_call(submitted_before: bool) -> Call {
    if submitted_before {
        Call::Query
    } else {
        Call::Submit
    }
}

/// Whether shutdown may hand this claim over to another replica now. A claim whose carrier call is
/// still running keeps its lease to its natural expiry (which outlasts the call's timeout): handing it
/// over would let another worker submit while this submit is still on the wire.
pub fn may_release(call_in_flight: bool) -> bool {
    !call_in_flight
}

/// Exponential backoff: `base · 2^(n-1)`, capped at `max`, times `jitter` (0.8–1.2 in use).
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    exponential.min(max).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_unknown_are_never_a_failure() {
        for answer in [Answer::Pending, Answer::Unknown] {
            for call in [Call::Query, Call::Submit] {
                assert_eq!(next_step(call, answer, 1, 6), Step::RetryLater);
                assert_eq!(next_step(call, answer, 6, 6), Step::Unresolved);
                assert_eq!(next_step(call, answer, 60, 6), Step::Unresolved);
            }
        }
    }

    #[test]
    fn only_a_refusal_fails() {
        assert_eq!(next_step(Call::Submit, Answer::Refused, 1, 6), Step::Fail);
        assert_eq!(next_step(Call::Query, Answer::Refused, 9, 6), Step::Fail);
    }

    #[test]
    fn a_reference_the_carrier_never_received_is_submitted() {
        assert_eq!(next_step(Call::Query, Answer::NeverReceived, 9, 6), Step::Submit);
        assert_eq!(next_step(Call::Submit, Answer::NeverReceived, 1, 6), Step::RetryLater);
    }

    #[test]
    fn a_confirmation_delivers_from_either_call() {
        assert_eq!(next_step(Call::Query, Answer::Delivered, 9, 6), Step::Deliver);
        assert_eq!(next_step(Call::Submit, Answer::Delivered, 1, 6), Step::Deliver);
    }

    #[test]
    fn a_submitted_reference_is_queried_first() {
        assert_eq!(first_call(true), Call::Query);
        assert_eq!(first_call(false), Call::Submit);
    }

    #[test]
    fn an_in_flight_call_keeps_its_claim() {
        assert!(!may_release(true));
        assert!(may_release(false));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(600));
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(120));
        assert_eq!(backoff(40, base, max, 1.0), Duration::from_secs(600));
        assert_eq!(backoff(1, base, max, 0.8), Duration::from_secs(24));
    }
}
