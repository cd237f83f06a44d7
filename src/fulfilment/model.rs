//! An exhaustive model check of the order, fulfilment and refund protocol, for one order whose carrier
//! reference is its order number. A breadth-first search visits every state reachable within the bounds
//! below (the order row, the carrier, the payer's money, the refund and the worker replicas), checks the
//! safety properties in each, then checks that every reachable state can still finish.
//!
//! # Modelled
//! - The order row. Every write is one conditional `UPDATE` (an atomic compare-and-set) whose status
//!   guard is `status IN OrderStatus::sources(event)` and whose target is `OrderStatus::apply(event)`;
//!   a refund from `paid` also honours `requires_nothing_submitted`. Fields: status, version
//!   (`fulfil_attempts`, bumped by every claim and never reset), `submitted`, the lease (owner, attempt,
//!   live or lapsed), `budget_from` (the version at the last operator retry), `paid`, the refund.
//! - Payment: the payer pays at most once, while the order is unpaid; up to `notices` deliveries of it
//!   (callbacks, duplicates, reconciliation) race with each other and with expiry. A payment that lands
//!   on a closed order opens its whole refund in the same write.
//! - The claim: enabled on a `FulfilmentStarted` source that is `paid` or whose lease is lapsed or
//!   cleared (a retry whose time came, an unresolved order's next sweep). The read it compares against
//!   is folded into the write: the only field the worker keeps from it, `submitted`, changes only with
//!   the version the write compares. The claim sets `submitted` and sends `first_call(submitted before)`.
//! - Carrier calls as messages: a request on the wire reaches the carrier or is lost; the reply comes
//!   back or is lost; a loss reaches the worker as `Answer::Unknown`. The carrier is `NotReceived`,
//!   `Pending`, `Delivered` or `Failed`; a submit it has never seen becomes any of the last three, any
//!   other request only reports; a pending top-up later completes either way.
//! - The worker acts on each answer through `next_step`; every write after the claim is also guarded by
//!   `status = recharging AND lease = (me, my attempt)`, and a write that matches nothing is dropped.
//!   `RetryLater` clears the lease (when the retry time comes is up to the scheduler).
//! - Leases lapse, never while their holder has a call in flight. A busy worker may crash or shut down
//!   (and a fresh replica starts in its place); at shutdown it releases its lease iff
//!   `may_release(call in flight)`. A stopped or crashed worker's request may still reach the carrier.
//! - The automatic refund of a failed order (by the worker, or the reconciliation job if the worker
//!   stopped first); operator retry, mark-delivered (only when the carrier delivered) and refund of an
//!   unresolved order (only when the carrier never received it or failed it and nothing is on the
//!   wire); the refund itself: pending, accepted, succeeded (a retryable error keeps it pending).
//!
//! # Trusted, not modelled
//! - Timing. An attempt runs from its claim to its last write within its lease (the lease outlasts two
//!   carrier timeouts, and the worker's own steps between calls take no time against it), so a worker's
//!   steps between two calls are atomic here; and a request reaches the carrier, if ever, before its
//!   sender's timeout fires (the retry backoff outlasts the timeout). Both are load-bearing: a lease
//!   that lapses between a claim and its submit, or a timed-out submit that lands after the next
//!   attempt's query, puts two submits on the wire.
//! - The carrier tells the truth, keeps one top-up per reference and answers a repeated submit with its
//!   state; the operator's check with the carrier; WeChat settles an accepted refund; the database
//!   applies each conditional `UPDATE` atomically and the worker's writes succeed or the worker crashes.
//! - That the async worker, the sweeps and the refund service perform exactly these steps: the model
//!   runs the state machine and the decisions of `policy`, not that code.
//! - Out of scope: several orders, amounts (one price), partial refunds of delivered orders, payment
//!   verification, and crashes of idle workers (they hold no lease).
//!
//! # Bounds
//! Two replicas: budget 3, up to 2 crashes, 1 shutdown, 2 payment deliveries, 2 operator retries and
//! 2 sweeps of an unresolved order. Three replicas: budget 3, 1 crash, 1 shutdown, 2 deliveries,
//! 1 retry, 1 sweep. Mark-delivered and the operator refund end the order, so they happen at most once.
//!
//! # Properties
//! 1. At most one submit is outstanding (sent, not yet answered or timed out), and each is the first
//!    call of a never-submitted order or follows a query of the same attempt that found nothing.
//! 2. Never delivered and refunded.
//! 3. Money balances: paid = delivered + refunded + in flight (paid, neither delivered nor refunded,
//!    and `paid`/`recharging`/`unresolved`, `failed` awaiting its refund, or a refund open); `success`
//!    only if the carrier delivered; `failed`/`refunding`/`refunded` only if it did not receive or failed.
//!
//! Liveness, under fair scheduling: from every reachable state some done state is reachable (delivered
//! and `success`, `refunded`, `closed` and never paid, or `unresolved` for an operator). Dead ends are
//! counted separately. Attempts end: the version never passes `Bounds::max_version` (which also keeps
//! the search finite under a policy that retries forever). Every kind of action must fire and every way
//! of finishing must be reached, so a guard that disables half the model fails the test instead of
//! passing it vacuously.
//!
//! # Reading a trace
//! A violation prints a shortest path from the initial state (unpaid, nothing sent, replicas idle), one
//! atomic step per line, then the state that breaks the property. `wN` is a replica: the first ones run
//! from the start, each crash or shutdown starts the next. `attempt N` is the version the claim wrote;
//! `(N used)` is what `next_step` is told. In the state, each worker line says what it has on the wire.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

use super::policy::{self, first_call, Answer, Call, Step};
use crate::domain::{OrderEvent, OrderStatus, RefundScope};

/// The signature of `policy::next_step`.
type NextStep = fn(Call, Answer, u32, u32) -> Step;

/// The decisions under test. The real ones by default; the tests swap in mutants to show the checker
/// finds what the real rules prevent.
#[derive(Clone, Copy)]
struct Rules {
    next_step: NextStep,
    may_release: fn(bool) -> bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { next_step: policy::next_step, may_release: policy::may_release }
    }
}

/// How far the exploration goes. Every count is an upper bound; each action it limits may also never
/// happen.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Replicas running at the start. A crashed or stopped one is replaced by a fresh replica.
    workers: u8,
    /// The attempt budget handed to `next_step`.
    budget: u8,
    crashes: u8,
    shutdowns: u8,
    /// Deliveries of the one payment (callbacks, duplicates, the reconciliation query).
    notices: u8,
    /// Operator retries of a failed or unresolved order.
    retries: u8,
    /// Later sweeps that claim an unresolved order for its next query.
    sweeps: u8,
}

impl Bounds {
    /// The most claims an order can see: a budget's worth per budget window (the first and one per
    /// operator retry), plus one per sweep of an unresolved order, plus one per crash or shutdown that
    /// cut an attempt short once its budget was used up. A version past this means attempts never end.
    fn max_version(self) -> u8 {
        self.budget * (self.retries + 1) + self.sweeps + self.crashes + self.shutdowns
    }
}

const MAX_WORKERS: usize = 5;

/// The carrier's record of the top-up under our reference (the order number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Carrier {
    NotReceived,
    Pending,
    Delivered,
    Failed,
}

/// The order's whole refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Refund {
    None,
    /// Open, not yet accepted by WeChat (a retryable error leaves it here).
    Pending,
    /// Accepted by WeChat, not yet settled.
    Submitted,
    Succeeded,
}

impl Refund {
    fn is_open(self) -> bool {
        matches!(self, Refund::Pending | Refund::Submitted)
    }
}

/// The payer's money at WeChat, and how many notifications of it are still to land.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Payment {
    NotMade,
    Made { notices_left: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Lease {
    owner: u8,
    attempt: u8,
    live: bool,
}

/// Where a worker's carrier call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// The request is on the wire: it will reach the carrier or be lost.
    Request,
    /// The carrier answered; the answer is on its way back (it may be lost: a timeout).
    Reply(Answer),
}

/// What a worker remembers of the attempt it is working on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Attempt {
    /// The version its claim wrote: the attempt number, half of its lease.
    number: u8,
    /// `version - budget_from` at the claim, handed to `next_step`.
    used: u8,
    call: Call,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Worker {
    /// A replica not started yet: it comes up when another crashes or shuts down.
    Spare,
    Idle,
    /// Working on an attempt. Its steps between calls take no time, so it always has a call in flight.
    Busy(Attempt),
    /// Crashed or shut down; the request it last sent may still be on the wire.
    Down(Option<Call>),
}

impl Worker {
    fn has_call_in_flight(self) -> bool {
        matches!(self, Worker::Busy(_) | Worker::Down(Some(_)))
    }

    fn submit_outstanding(self) -> bool {
        matches!(self, Worker::Busy(Attempt { call: Call::Submit, .. }) | Worker::Down(Some(Call::Submit)))
    }
}

/// One order, the carrier, the payer's money and the workers. Small and `Copy`: it is its own key in
/// the set of states seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    status: OrderStatus,
    /// `fulfil_attempts`: bumped by every claim, never reset.
    version: u8,
    /// The version at the last operator retry: attempts used = `version - budget_from`.
    budget_from: u8,
    /// Set by the claim before the carrier is called.
    submitted: bool,
    lease: Option<Lease>,
    refund: Refund,
    /// The order row records the payment.
    paid: bool,
    payment: Payment,
    carrier: Carrier,
    workers: [Worker; MAX_WORKERS],
    crashes_left: u8,
    shutdowns_left: u8,
    retries_left: u8,
    sweeps_left: u8,
    /// A submit was sent that was neither the first call of a never-submitted order nor the answer to a
    /// query that found nothing (property 1).
    unjustified_submit: bool,
}

/// Why a worker sees the answer it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Reply,
    ReplyLost,
    RequestLost,
}

/// One step of the protocol, as printed in a trace.
#[derive(Clone, Copy, Debug)]
enum Action {
    Pay,
    Notify { to: Option<OrderStatus> },
    Expire,
    Claim { w: u8, from: OrderStatus, attempt: u8, submitted_before: bool, call: Call },
    Receive { w: u8, call: Call, carrier: Carrier, answer: Answer },
    LoseRequest { w: u8, call: Call },
    Handle { w: u8, call: Call, answer: Answer, delivery: Delivery, step: Step, written: bool },
    CarrierCompletes { to: Carrier },
    Lapse { owner: u8 },
    Crash { w: u8, replacement: u8 },
    Shutdown { w: u8, released: bool, replacement: u8 },
    AutoRefund,
    OperatorRetries,
    OperatorMarksDelivered,
    OperatorRefunds,
    RefundAccepted,
    RefundSucceeded,
}

impl Action {
    const KINDS: [&'static str; 17] = [
        "pay",
        "notify",
        "expire",
        "claim",
        "receive",
        "lose request",
        "handle",
        "carrier completes",
        "lapse",
        "crash",
        "shutdown",
        "auto refund",
        "operator retries",
        "operator marks delivered",
        "operator refunds",
        "refund accepted",
        "refund succeeded",
    ];

    fn kind(self) -> usize {
        match self {
            Action::Pay => 0,
            Action::Notify { .. } => 1,
            Action::Expire => 2,
            Action::Claim { .. } => 3,
            Action::Receive { .. } => 4,
            Action::LoseRequest { .. } => 5,
            Action::Handle { .. } => 6,
            Action::CarrierCompletes { .. } => 7,
            Action::Lapse { .. } => 8,
            Action::Crash { .. } => 9,
            Action::Shutdown { .. } => 10,
            Action::AutoRefund => 11,
            Action::OperatorRetries => 12,
            Action::OperatorMarksDelivered => 13,
            Action::OperatorRefunds => 14,
            Action::RefundAccepted => 15,
            Action::RefundSucceeded => 16,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Pay => write!(f, "the payer pays at WeChat"),
            Action::Notify { to: Some(to) } => write!(f, "a payment notification lands: order -> {to}"),
            Action::Notify { to: None } => write!(f, "a duplicate payment notification matches nothing"),
            Action::Expire => write!(f, "the order expires unpaid (WeChat confirmed the close): -> closed"),
            Action::Claim { w, from, attempt, submitted_before, call } => write!(
                f,
                "w{w} claims the {from} order: attempt {attempt}, submitted before = {submitted_before}, sends {call:?}"
            ),
            Action::Receive { w, call, carrier, answer } => {
                write!(f, "the carrier receives w{w}'s {call:?}: carrier {carrier:?}, answers {answer:?}")
            }
            Action::LoseRequest { w, call } => write!(f, "w{w}'s {call:?} is lost on the wire (w{w} is down)"),
            Action::Handle { w, call, answer, delivery, step, written } => {
                let how = match delivery {
                    Delivery::Reply => "",
                    Delivery::ReplyLost => " (the reply was lost: timeout)",
                    Delivery::RequestLost => " (the request was lost: timeout)",
                };
                write!(f, "w{w} gets {answer:?} for its {call:?}{how}: next_step -> {step:?}")?;
                match step {
                    Step::Submit => write!(f, ", sends Submit"),
                    _ if !written => write!(f, ", its write matches nothing (claim lost)"),
                    _ => Ok(()),
                }
            }
            Action::CarrierCompletes { to } => write!(f, "the carrier completes the pending top-up: {to:?}"),
            Action::Lapse { owner } => write!(f, "w{owner}'s lease lapses"),
            Action::Crash { w, replacement } => write!(f, "w{w} crashes (replica w{replacement} starts)"),
            Action::Shutdown { w, released, replacement } => {
                let lease = if released { "releases its lease" } else { "keeps its lease to expiry" };
                write!(f, "w{w} shuts down and {lease} (replica w{replacement} starts)")
            }
            Action::AutoRefund => write!(f, "the failed order's whole refund opens: -> refunding"),
            Action::OperatorRetries => write!(f, "an operator retries the order: -> paid"),
            Action::OperatorMarksDelivered => write!(f, "an operator marks the order delivered: -> success"),
            Action::OperatorRefunds => write!(f, "an operator refunds the unresolved order: -> refunding"),
            Action::RefundAccepted => write!(f, "WeChat accepts the refund"),
            Action::RefundSucceeded => write!(f, "the refund succeeds: -> refunded"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status={} version={} budget_from={} submitted={} paid={} refund={:?} carrier={:?}",
            self.status, self.version, self.budget_from, self.submitted, self.paid, self.refund, self.carrier
        )?;
        match self.lease {
            Some(Lease { owner, attempt, live }) => {
                write!(f, " lease=w{owner}/attempt {attempt} ({})", if live { "live" } else { "lapsed" })?
            }
            None => write!(f, " lease=none")?,
        }
        match self.payment {
            Payment::NotMade => write!(f, " payment=not made")?,
            Payment::Made { notices_left } => write!(f, " payment=made (notices left: {notices_left})")?,
        }
        for (w, worker) in self.workers.iter().enumerate() {
            match worker {
                Worker::Spare => {}
                Worker::Idle => write!(f, "\n    w{w}: idle")?,
                Worker::Busy(a) => {
                    write!(f, "\n    w{w}: attempt {} ({} used), {:?} ", a.number, a.used, a.call)?;
                    match a.phase {
                        Phase::Request => write!(f, "on the wire")?,
                        Phase::Reply(answer) => write!(f, "answered {answer:?}, reply on the wire")?,
                    }
                }
                Worker::Down(Some(call)) => write!(f, "\n    w{w}: down, its {call:?} still on the wire")?,
                Worker::Down(None) => write!(f, "\n    w{w}: down")?,
            }
        }
        write!(
            f,
            "\n    left: {} crashes, {} shutdowns, {} retries, {} sweeps",
            self.crashes_left, self.shutdowns_left, self.retries_left, self.sweeps_left
        )
    }
}

/// The transition's guard and target: `status IN sources(event)`, then `apply(event)`.
fn fire(status: OrderStatus, event: OrderEvent) -> Option<OrderStatus> {
    if OrderStatus::sources(event).contains(&status) {
        Some(status.apply(event).expect("every source of an event takes it"))
    } else {
        None
    }
}

/// Opening a whole refund, with the extra guard of a refund from `paid`.
fn whole_refund(s: &State) -> Option<OrderStatus> {
    let event = OrderEvent::RefundRequested(RefundScope::Whole);
    if s.status.requires_nothing_submitted(event) && s.submitted {
        return None;
    }
    fire(s.status, event)
}

/// What the carrier does with a request: its new state and its answer. A submit it has never seen
/// starts the top-up (which may finish or fail at once); anything else only reports.
fn carrier_receives(carrier: Carrier, call: Call) -> Vec<(Carrier, Answer)> {
    let report = |c: Carrier| match c {
        Carrier::NotReceived => Answer::NeverReceived,
        Carrier::Pending => Answer::Pending,
        Carrier::Delivered => Answer::Delivered,
        Carrier::Failed => Answer::Refused,
    };
    match (call, carrier) {
        (Call::Submit, Carrier::NotReceived) => {
            [Carrier::Pending, Carrier::Delivered, Carrier::Failed].into_iter().map(|c| (c, report(c))).collect()
        }
        (_, c) => vec![(c, report(c))],
    }
}

struct Model {
    rules: Rules,
    bounds: Bounds,
}

impl Model {
    fn initial(&self) -> State {
        let b = self.bounds;
        assert!(usize::from(b.workers + b.crashes + b.shutdowns) <= MAX_WORKERS, "too many replicas for MAX_WORKERS");
        let mut workers = [Worker::Spare; MAX_WORKERS];
        for worker in workers.iter_mut().take(usize::from(b.workers)) {
            *worker = Worker::Idle;
        }
        State {
            status: OrderStatus::Unpaid,
            version: 0,
            budget_from: 0,
            submitted: false,
            lease: None,
            refund: Refund::None,
            paid: false,
            payment: Payment::NotMade,
            carrier: Carrier::NotReceived,
            workers,
            crashes_left: b.crashes,
            shutdowns_left: b.shutdowns,
            retries_left: b.retries,
            sweeps_left: b.sweeps,
            unjustified_submit: false,
        }
    }

    /// Every enabled action and the state it leads to.
    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        self.payment(s, out);
        for w in 0..MAX_WORKERS {
            self.worker(s, w, out);
        }
        self.environment(s, out);
    }

    fn payment(&self, s: &State, out: &mut Vec<(Action, State)>) {
        // The payer can pay while WeChat's order is open, i.e. before the close was confirmed.
        if s.payment == Payment::NotMade && s.status == OrderStatus::Unpaid {
            let mut t = *s;
            t.payment = Payment::Made { notices_left: self.bounds.notices };
            out.push((Action::Pay, t));
        }
        if let Payment::Made { notices_left } = s.payment {
            if notices_left > 0 {
                let mut t = *s;
                t.payment = Payment::Made { notices_left: notices_left - 1 };
                let to = fire(s.status, OrderEvent::PaymentConfirmed);
                if let Some(to) = to {
                    t.status = to;
                    t.paid = true;
                    // A payment for a closed order opens its whole refund in the same transaction.
                    if to == OrderStatus::Refunding {
                        t.refund = Refund::Pending;
                    }
                }
                out.push((Action::Notify { to }, t));
            }
        }
        // Expiry races with a payment whose notification has not landed yet.
        if let Some(to) = fire(s.status, OrderEvent::Expired) {
            let mut t = *s;
            t.status = to;
            out.push((Action::Expire, t));
        }
    }

    fn worker(&self, s: &State, w: usize, out: &mut Vec<(Action, State)>) {
        let id = w as u8;
        match s.workers[w] {
            Worker::Spare | Worker::Down(None) => {}
            Worker::Idle => self.claim(s, w, out),
            Worker::Down(Some(call)) => {
                for (carrier, answer) in carrier_receives(s.carrier, call) {
                    let mut t = *s;
                    t.carrier = carrier;
                    t.workers[w] = Worker::Down(None);
                    out.push((Action::Receive { w: id, call, carrier, answer }, t));
                }
                let mut t = *s;
                t.workers[w] = Worker::Down(None);
                out.push((Action::LoseRequest { w: id, call }, t));
            }
            Worker::Busy(attempt) => {
                match attempt.phase {
                    Phase::Request => {
                        for (carrier, answer) in carrier_receives(s.carrier, attempt.call) {
                            let mut t = *s;
                            t.carrier = carrier;
                            t.workers[w] = Worker::Busy(Attempt { phase: Phase::Reply(answer), ..attempt });
                            out.push((Action::Receive { w: id, call: attempt.call, carrier, answer }, t));
                        }
                        out.push(self.handle(s, w, attempt, Answer::Unknown, Delivery::RequestLost));
                    }
                    Phase::Reply(answer) => {
                        out.push(self.handle(s, w, attempt, answer, Delivery::Reply));
                        if answer != Answer::Unknown {
                            out.push(self.handle(s, w, attempt, Answer::Unknown, Delivery::ReplyLost));
                        }
                    }
                }
                self.crash_or_stop(s, w, attempt, out);
            }
        }
    }

    /// The claim: one conditional UPDATE on the version (the read it compares against is folded in: the
    /// only field the worker keeps from it, `submitted`, changes only with the version).
    fn claim(&self, s: &State, w: usize, out: &mut Vec<(Action, State)>) {
        let Some(to) = fire(s.status, OrderEvent::FulfilmentStarted) else { return };
        let due = s.status == OrderStatus::Paid || !s.lease.is_some_and(|lease| lease.live);
        let sweep = s.status == OrderStatus::Unresolved;
        if !due || (sweep && s.sweeps_left == 0) {
            return;
        }
        let mut t = *s;
        t.status = to;
        t.version = s.version + 1;
        t.submitted = true;
        t.lease = Some(Lease { owner: w as u8, attempt: t.version, live: true });
        if sweep {
            t.sweeps_left -= 1;
        }
        let call = first_call(s.submitted);
        if call == Call::Submit && s.submitted {
            t.unjustified_submit = true;
        }
        let used = t.version - t.budget_from;
        t.workers[w] = Worker::Busy(Attempt { number: t.version, used, call, phase: Phase::Request });
        let action =
            Action::Claim { w: w as u8, from: s.status, attempt: t.version, submitted_before: s.submitted, call };
        out.push((action, t));
    }

    /// A worker acts on an answer: `next_step`, then a write guarded by its claim, or the next call.
    fn handle(&self, s: &State, w: usize, attempt: Attempt, answer: Answer, delivery: Delivery) -> (Action, State) {
        let step = (self.rules.next_step)(attempt.call, answer, u32::from(attempt.used), u32::from(self.bounds.budget));
        let mut t = *s;
        t.workers[w] = Worker::Idle;
        let held = s.status == OrderStatus::Recharging
            && s.lease.is_some_and(|lease| usize::from(lease.owner) == w && lease.attempt == attempt.number);
        let mut write = |event: OrderEvent| match fire(s.status, event) {
            Some(to) if held => {
                t.status = to;
                t.lease = None;
                true
            }
            _ => false,
        };
        let written = match step {
            Step::Deliver => write(OrderEvent::FulfilmentSucceeded),
            Step::Fail => write(OrderEvent::FulfilmentRefused),
            Step::Unresolved => write(OrderEvent::FulfilmentUnresolved),
            Step::RetryLater => {
                // The claim is given back until the retry time; when it comes is up to the scheduler.
                if held {
                    t.lease = None;
                }
                held
            }
            Step::Submit => {
                if !(attempt.call == Call::Query && answer == Answer::NeverReceived) {
                    t.unjustified_submit = true;
                }
                t.workers[w] = Worker::Busy(Attempt { call: Call::Submit, phase: Phase::Request, ..attempt });
                true
            }
        };
        (Action::Handle { w: w as u8, call: attempt.call, answer, delivery, step, written }, t)
    }

    /// A busy worker crashes or shuts down, and a fresh replica takes its place. (An idle worker holds no
    /// lease, so stopping it would only rename it.)
    fn crash_or_stop(&self, s: &State, w: usize, attempt: Attempt, out: &mut Vec<(Action, State)>) {
        let Some(spare) = s.workers.iter().position(|worker| *worker == Worker::Spare) else { return };
        let on_the_wire = (attempt.phase == Phase::Request).then_some(attempt.call);
        let mut t = *s;
        t.workers[w] = Worker::Down(on_the_wire);
        t.workers[spare] = Worker::Idle;
        if s.crashes_left > 0 {
            let mut t = t;
            t.crashes_left -= 1;
            out.push((Action::Crash { w: w as u8, replacement: spare as u8 }, t));
        }
        if s.shutdowns_left > 0 {
            t.shutdowns_left -= 1;
            // `release_claims`: status = recharging AND lease owner = me. A busy worker's call is in flight.
            let mine =
                s.status == OrderStatus::Recharging && s.lease.is_some_and(|lease| usize::from(lease.owner) == w);
            let released = mine && (self.rules.may_release)(true);
            if released {
                t.lease = s.lease.map(|lease| Lease { live: false, ..lease });
            }
            out.push((Action::Shutdown { w: w as u8, released, replacement: spare as u8 }, t));
        }
    }

    /// The carrier, the lease clock, the refund job, the reconciliation sweep and the operator.
    fn environment(&self, s: &State, out: &mut Vec<(Action, State)>) {
        if s.carrier == Carrier::Pending {
            for to in [Carrier::Delivered, Carrier::Failed] {
                let mut t = *s;
                t.carrier = to;
                out.push((Action::CarrierCompletes { to }, t));
            }
        }
        // A lease outlasts two carrier timeouts, so it never lapses while its holder has a call in flight.
        if let Some(lease) = s.lease {
            if lease.live && !s.workers[usize::from(lease.owner)].has_call_in_flight() {
                let mut t = *s;
                t.lease = Some(Lease { live: false, ..lease });
                out.push((Action::Lapse { owner: lease.owner }, t));
            }
        }
        // The failing worker opens the refund; the reconciliation job opens it if the worker stopped first.
        if s.status == OrderStatus::Failed {
            if let Some(to) = whole_refund(s) {
                let mut t = *s;
                t.status = to;
                t.refund = Refund::Pending;
                out.push((Action::AutoRefund, t));
            }
        }
        if s.retries_left > 0 {
            if let Some(to) = fire(s.status, OrderEvent::RetryRequested) {
                let mut t = *s;
                t.status = to;
                t.budget_from = s.version;
                t.retries_left -= 1;
                out.push((Action::OperatorRetries, t));
            }
        }
        // The operator checked with the carrier (trusted).
        if s.carrier == Carrier::Delivered {
            if let Some(to) = fire(s.status, OrderEvent::MarkedDelivered) {
                let mut t = *s;
                t.status = to;
                out.push((Action::OperatorMarksDelivered, t));
            }
        }
        // The proof: the carrier never got it or failed it, and nothing is on its way there.
        let proof = matches!(s.carrier, Carrier::NotReceived | Carrier::Failed)
            && !s.workers.iter().any(|worker| worker.has_call_in_flight());
        if s.status == OrderStatus::Unresolved && proof {
            if let Some(to) = whole_refund(s) {
                let mut t = *s;
                t.status = to;
                t.refund = Refund::Pending;
                out.push((Action::OperatorRefunds, t));
            }
        }
        // A retryable refund error (SYSTEMERROR, NOTENOUGH, a timeout) leaves the refund pending: a
        // self-loop, which adds no state.
        if s.refund == Refund::Pending {
            let mut t = *s;
            t.refund = Refund::Submitted;
            out.push((Action::RefundAccepted, t));
        }
        if s.refund == Refund::Submitted {
            if let Some(to) = fire(s.status, OrderEvent::RefundSucceeded) {
                let mut t = *s;
                t.status = to;
                t.refund = Refund::Succeeded;
                out.push((Action::RefundSucceeded, t));
            }
        }
    }
}

/// A safety property: its name, and what is wrong with a state that breaks it.
type Property = (&'static str, fn(&State) -> Option<String>);

/// The safety properties, checked in every reachable state.
const PROPERTIES: [Property; 3] = [
    ("property 1, one submit at a time", one_submit_at_a_time),
    ("property 2, never delivered and refunded", never_delivered_and_refunded),
    ("property 3, money balances and the status tells the truth", money_balances),
];

/// At most one submit outstanding, and each one sent as the first call of a never-submitted order or
/// right after a query of the same attempt found nothing.
fn one_submit_at_a_time(s: &State) -> Option<String> {
    let outstanding = s.workers.iter().filter(|worker| worker.submit_outstanding()).count();
    if outstanding > 1 {
        return Some(format!("{outstanding} submits outstanding"));
    }
    s.unjustified_submit.then(|| "a submit sent without a query that found nothing".into())
}

fn never_delivered_and_refunded(s: &State) -> Option<String> {
    (s.carrier == Carrier::Delivered && s.refund != Refund::None)
        .then(|| format!("the carrier delivered and the refund is {:?}", s.refund))
}

/// paid = delivered + refunded + in flight, and the status tells the truth about the carrier.
fn money_balances(s: &State) -> Option<String> {
    let delivered = s.carrier == Carrier::Delivered;
    let refunded = s.refund == Refund::Succeeded;
    // A failed order whose refund is still to open holds the money too.
    let held = s.status.is_delivering() || s.status == OrderStatus::Failed || s.refund.is_open();
    let in_flight = s.paid && !delivered && !refunded && held;
    let [paid, delivered_n, refunded_n, in_flight_n] = [s.paid, delivered, refunded, in_flight].map(u8::from);
    if paid != delivered_n + refunded_n + in_flight_n {
        return Some(format!(
            "paid {paid} != delivered {delivered_n} + refunded {refunded_n} + in flight {in_flight_n}"
        ));
    }
    if s.status == OrderStatus::Success && !delivered {
        return Some(format!("success while the carrier is {:?}", s.carrier));
    }
    let undelivered = matches!(s.carrier, Carrier::NotReceived | Carrier::Failed);
    if matches!(s.status, OrderStatus::Failed | OrderStatus::Refunding | OrderStatus::Refunded) && !undelivered {
        return Some(format!("{} while the carrier is {:?}", s.status, s.carrier));
    }
    None
}

/// The first property in `properties` that `s` breaks.
fn violation(s: &State, properties: &[Property]) -> Option<(&'static str, String)> {
    properties.iter().find_map(|(name, property)| property(s).map(|detail| (*name, detail)))
}

/// The order needs nothing more: delivered, refunded, closed without a payment, or flagged for an
/// operator.
fn done(s: &State) -> bool {
    match s.status {
        OrderStatus::Success => s.carrier == Carrier::Delivered,
        OrderStatus::Refunded | OrderStatus::Unresolved => true,
        OrderStatus::Closed => s.payment == Payment::NotMade,
        _ => false,
    }
}

/// A way an order can finish, and which states show it.
type Outcome = (&'static str, fn(&State) -> bool);

/// The ways an order can finish; each must be reachable (a vacuity check).
const OUTCOMES: [Outcome; 6] = [
    ("delivered", |s| s.status == OrderStatus::Success),
    ("refunded after a carrier failure", |s| s.status == OrderStatus::Refunded && s.carrier == Carrier::Failed),
    ("refunded, never received by the carrier", |s| {
        s.status == OrderStatus::Refunded && s.carrier == Carrier::NotReceived && s.version > 0
    }),
    ("refunded after a late payment", |s| s.status == OrderStatus::Refunded && s.version == 0),
    ("closed unpaid", |s| s.status == OrderStatus::Closed && s.payment == Payment::NotMade),
    ("unresolved", |s| s.status == OrderStatus::Unresolved),
];

/// A shortest path to a state, and what is wrong with it.
struct Counterexample {
    property: &'static str,
    detail: String,
    trace: Vec<String>,
    state: String,
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} violated: {}", self.property, self.detail)?;
        for (n, action) in self.trace.iter().enumerate() {
            writeln!(f, "  {:>2}. {action}", n + 1)?;
        }
        write!(f, "  state: {}", self.state)
    }
}

struct Report {
    bounds: Bounds,
    states: usize,
    transitions: usize,
    depth: usize,
    violation: Option<Counterexample>,
    /// Reachable states with no enabled action that are not done.
    dead_ends: usize,
    /// Reachable states from which no done state is reachable.
    stuck: usize,
    stuck_example: Option<Counterexample>,
    /// Kinds of action that never fired, and outcomes never reached (a vacuity check).
    unfired: Vec<&'static str>,
    unreached: Vec<&'static str>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(violation) = &self.violation {
            let (states, depth) = (self.states, self.depth);
            return write!(f, "{:?}: stopped after {states} states, depth {depth}\n{violation}", self.bounds);
        }
        write!(
            f,
            "{:?}: {} states, {} transitions, depth {}, {} dead ends, {} states that cannot finish",
            self.bounds, self.states, self.transitions, self.depth, self.dead_ends, self.stuck
        )?;
        if !self.unfired.is_empty() {
            write!(f, "\nnever fired: {:?}", self.unfired)?;
        }
        if !self.unreached.is_empty() {
            write!(f, "\nnever reached: {:?}", self.unreached)?;
        }
        if let Some(stuck) = &self.stuck_example {
            write!(f, "\n{stuck}")?;
        }
        Ok(())
    }
}

/// Breadth-first search over every reachable state, stopping at the first safety violation (so its
/// trace is a shortest one), then a backward search from the done states for liveness.
fn check(rules: Rules, bounds: Bounds, properties: &[Property]) -> Report {
    let model = Model { rules, bounds };
    let initial = model.initial();
    let mut ids: HashMap<State, u32> = HashMap::from([(initial, 0)]);
    let mut states = vec![initial];
    let mut parents: Vec<Option<(u32, Action)>> = vec![None];
    let mut depths: Vec<u16> = vec![0];
    let mut edges: Vec<(u32, u32)> = Vec::new();
    let mut fired = [false; Action::KINDS.len()];
    let mut report = Report {
        bounds,
        states: 0,
        transitions: 0,
        depth: 0,
        violation: None,
        dead_ends: 0,
        stuck: 0,
        stuck_example: None,
        unfired: vec![],
        unreached: vec![],
    };
    if let Some((property, detail)) = violation(&initial, properties) {
        report.violation = Some(Counterexample { property, detail, trace: vec![], state: initial.to_string() });
    }
    let mut successors = Vec::new();
    let mut next = 0;
    'search: while next < states.len() && report.violation.is_none() {
        let s = states[next];
        successors.clear();
        model.successors(&s, &mut successors);
        if successors.is_empty() && !done(&s) {
            report.dead_ends += 1;
        }
        for &(action, t) in &successors {
            fired[action.kind()] = true;
            let id = match ids.entry(t) {
                Entry::Occupied(entry) => *entry.get(),
                Entry::Vacant(entry) => {
                    let id = states.len() as u32;
                    entry.insert(id);
                    states.push(t);
                    parents.push(Some((next as u32, action)));
                    depths.push(depths[next] + 1);
                    // A new state is checked once, on discovery: in breadth-first order, so the first
                    // violation found is one at the least depth.
                    let runaway = (t.version > bounds.max_version()).then(|| {
                        ("liveness, attempts end", format!("version {} > {}", t.version, bounds.max_version()))
                    });
                    if let Some((property, detail)) = runaway.or_else(|| violation(&t, properties)) {
                        let trace = trace_to(&parents, id);
                        report.violation = Some(Counterexample { property, detail, trace, state: t.to_string() });
                        edges.push((next as u32, id));
                        break 'search;
                    }
                    id
                }
            };
            edges.push((next as u32, id));
        }
        next += 1;
    }
    report.states = states.len();
    report.transitions = edges.len();
    report.depth = usize::from(depths.iter().copied().max().unwrap_or(0));
    if report.violation.is_some() {
        return report;
    }
    report.unfired = Action::KINDS.iter().zip(fired).filter(|(_, fired)| !fired).map(|(kind, _)| *kind).collect();
    report.unreached =
        OUTCOMES.iter().filter(|(_, reached)| !states.iter().any(reached)).map(|(outcome, _)| *outcome).collect();
    let can_finish = can_finish(&states, &edges);
    let stuck: Vec<usize> = (0..states.len()).filter(|&i| !can_finish[i]).collect();
    report.stuck = stuck.len();
    report.stuck_example = stuck.first().map(|&i| Counterexample {
        property: "liveness, every order can finish",
        detail: "no done state is reachable from here".into(),
        trace: trace_to(&parents, i as u32),
        state: states[i].to_string(),
    });
    report
}

/// Which states reach a done state: a backward breadth-first search over the transitions.
fn can_finish(states: &[State], edges: &[(u32, u32)]) -> Vec<bool> {
    // Predecessor lists in one array, indexed by target.
    let mut start = vec![0usize; states.len() + 1];
    for &(_, to) in edges {
        start[to as usize + 1] += 1;
    }
    for i in 0..states.len() {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut preds = vec![0u32; edges.len()];
    for &(from, to) in edges {
        preds[fill[to as usize]] = from;
        fill[to as usize] += 1;
    }
    let mut reached: Vec<bool> = states.iter().map(done).collect();
    let mut queue: Vec<u32> = (0..states.len() as u32).filter(|&i| reached[i as usize]).collect();
    while let Some(i) = queue.pop() {
        for &p in &preds[start[i as usize]..start[i as usize + 1]] {
            if !reached[p as usize] {
                reached[p as usize] = true;
                queue.push(p);
            }
        }
    }
    reached
}

fn trace_to(parents: &[Option<(u32, Action)>], mut id: u32) -> Vec<String> {
    let mut trace = Vec::new();
    while let Some((parent, action)) = parents[id as usize] {
        trace.push(action.to_string());
        id = parent;
    }
    trace.reverse();
    trace
}

const TWO_WORKERS: Bounds =
    Bounds { workers: 2, budget: 3, crashes: 2, shutdowns: 1, notices: 2, retries: 2, sweeps: 2 };
const THREE_WORKERS: Bounds =
    Bounds { workers: 3, budget: 3, crashes: 1, shutdowns: 1, notices: 2, retries: 1, sweeps: 1 };

fn assert_holds(report: &Report) {
    eprintln!("{report}");
    assert!(report.violation.is_none(), "the real rules break a safety property");
    assert_eq!(report.dead_ends, 0, "the real rules reach a dead end");
    assert_eq!(report.stuck, 0, "the real rules reach a state from which the order cannot finish");
    assert!(report.unfired.is_empty(), "some actions never fired: the model is partly vacuous");
    assert!(report.unreached.is_empty(), "some outcomes are never reached: the model is partly vacuous");
}

#[test]
fn the_real_rules_hold_with_two_workers() {
    assert_holds(&check(Rules::default(), TWO_WORKERS, &PROPERTIES));
}

#[test]
fn the_real_rules_hold_with_three_workers() {
    assert_holds(&check(Rules::default(), THREE_WORKERS, &PROPERTIES));
}

/// Finding 1: failing (and so refunding) an order whose budget ran out while the carrier said pending,
/// or nothing.
#[test]
fn failing_an_order_whose_budget_ran_out_is_caught() {
    fn next_step(call: Call, answer: Answer, attempts_used: u32, budget: u32) -> Step {
        match policy::next_step(call, answer, attempts_used, budget) {
            Step::Unresolved => Step::Fail,
            step => step,
        }
    }
    let rules = Rules { next_step, ..Rules::default() };
    let report = check(rules, TWO_WORKERS, &PROPERTIES);
    eprintln!("{report}");
    let violation = report.violation.expect("the mutant breaks a safety property");
    assert!(violation.property.starts_with("property 3"), "{}", violation.property);
    // Where it leads: the top-up delivered and its money refunded.
    let report = check(rules, TWO_WORKERS, &PROPERTIES[1..2]);
    eprintln!("{report}");
    let violation = report.violation.expect("the mutant delivers and refunds");
    assert!(violation.property.starts_with("property 2"), "{}", violation.property);
}

/// Finding 4: handing over a claim at shutdown while its submit is still on the wire.
#[test]
fn releasing_a_claim_with_a_call_in_flight_is_caught() {
    let report = check(Rules { may_release: |_| true, ..Rules::default() }, TWO_WORKERS, &PROPERTIES);
    eprintln!("{report}");
    let violation = report.violation.expect("the mutant breaks a safety property");
    assert!(violation.property.starts_with("property 1"), "{}", violation.property);
}

/// Other broken decisions the checker must catch: failing on a timeout, submitting again on a pending
/// answer, and retrying forever instead of flagging the order for an operator.
#[test]
fn other_broken_decisions_are_caught() {
    fn fail_on_unknown(call: Call, answer: Answer, attempts_used: u32, budget: u32) -> Step {
        match answer {
            Answer::Unknown => Step::Fail,
            _ => policy::next_step(call, answer, attempts_used, budget),
        }
    }
    fn resubmit_on_pending(call: Call, answer: Answer, attempts_used: u32, budget: u32) -> Step {
        match answer {
            Answer::Pending => Step::Submit,
            _ => policy::next_step(call, answer, attempts_used, budget),
        }
    }
    fn retry_forever(call: Call, answer: Answer, attempts_used: u32, budget: u32) -> Step {
        match policy::next_step(call, answer, attempts_used, budget) {
            Step::Unresolved => Step::RetryLater,
            step => step,
        }
    }
    let mutants: [(NextStep, &str); 3] = [
        (fail_on_unknown, "property 3"),
        (resubmit_on_pending, "property 1"),
        (retry_forever, "liveness, attempts end"),
    ];
    for (next_step, expected) in mutants {
        let report = check(Rules { next_step, ..Rules::default() }, TWO_WORKERS, &PROPERTIES);
        eprintln!("{report}");
        let violation = report.violation.expect("the mutant breaks a property");
        assert!(violation.property.starts_with(expected), "{}", violation.property);
    }
}
