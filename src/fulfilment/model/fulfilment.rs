//! The fulfilment model: one order whose carrier reference is its order number, from the payment to
//! delivery, refund or an operator. A state is the order row, the carrier, the payer's money, the
//! refund and the worker replicas with their tasks.
//!
//! # Modelled
//! - The order row. Every write is one conditional `UPDATE` (an atomic compare-and-set) whose status
//!   guard is `status IN OrderStatus::sources(event)` and whose target is `OrderStatus::apply(event)`;
//!   a refund from `paid` also honours `requires_nothing_submitted`. Fields: status, version
//!   (`fulfil_attempts`, bumped by every claim and never reset), `submitted`, the lease (owner process,
//!   attempt, live or lapsed), `budget_from` (the version at the last operator retry), `paid`, the
//!   refund and who opened it.
//! - Payment: the payer pays at most once, while the order is unpaid; up to `notices` deliveries of it
//!   (callbacks, duplicates, reconciliation) race with each other and with expiry. Expiry here may
//!   close an order whose payment has not landed yet (more than `jobs/reconcile.rs` allows: the expiry
//!   model shows a confirmed close leaves nothing to pay); a payment that lands on a closed order opens
//!   its whole refund in the same write.
//! - The claim: enabled on a `FulfilmentStarted` source that is `paid` or whose lease is lapsed or
//!   cleared (a retry whose time came, an unresolved order's next sweep). The read it compares against
//!   (or the copy the payment left) is folded into the write: the fields the worker keeps from it,
//!   `submitted` and `budget_from`, are in the write's guard beside the version. The claim sets
//!   `submitted` and sends `first_call(submitted before)`.
//! - Carrier calls as messages: a request on the wire reaches the carrier or is lost; the reply comes
//!   back or is lost; a loss reaches the worker as `Answer::Unknown`. The carrier is `NotReceived`,
//!   `Pending`, `Delivered` or `Failed`; a submit it has never seen becomes any of the last three, any
//!   other request only reports; a pending top-up later completes either way.
//! - The worker acts on each answer through `next_step`; every write after the claim is also guarded by
//!   `status = recharging AND lease_owner = me AND fulfil_attempts = my claim's version`, and a write
//!   that matches nothing is dropped. `RetryLater` clears the lease (when the retry time comes is up to
//!   the scheduler).
//! - A process runs up to `tasks` attempts at once (a background task and a sweep of the same replica),
//!   and the lease names the process, so two attempts of one process can race. A lease lapses on its
//!   own once its holder's calls are over; up to `overruns` times it lapses while its holder still has
//!   an answer in hand (a pause, a slow database, a clock ahead within the skew): another claim, by the
//!   same process or another, then runs beside the old attempt, which still acts on its answer (and may
//!   submit after a query that found nothing).
//! - A busy worker may crash or shut down (and a fresh replica starts in its place); at shutdown it
//!   releases its lease iff `may_release(call in flight)`. A stopped or crashed worker's request may
//!   still reach the carrier.
//! - The automatic refund of a failed order (by the worker, or the reconciliation job if the worker
//!   stopped first); operator retry, mark-delivered (only when the carrier delivered); the operator's
//!   whole refund of a `paid` order (only while nothing was submitted), of an `unresolved` order on the
//!   carrier's answer that it never received the top-up or failed it (the proof is read and the refund
//!   opened on the same version), and the forced refund of an `unresolved` order with a recorded reason,
//!   whatever the carrier did; the refund itself: pending, accepted, succeeded (the refunds model checks
//!   what lies behind these three steps).
//!
//! # Trusted, not modelled
//! - Timing. A request reaches the carrier, if ever, before its sender's timeout fires, and the lease
//!   outlasts two carrier timeouts: so a lease lapses during a call only while the holder has its
//!   answer (or its timeout) in hand, never while its request is on the wire or a crashed worker's
//!   request may still land. A worker's steps between two calls are atomic: no pause between a
//!   decision and the request it sends. With overruns, the operator's proof of non-delivery is read only
//!   once no earlier attempt is still running (`Bounds::proof_waits_for_stale_attempts`); the test
//!   `a_proof_read_beside_a_stale_attempt_can_be_wrong` shows why that is trusted.
//! - The carrier tells the truth, keeps one top-up per reference and answers a repeated submit with its
//!   state; the operator's check with the carrier before mark-delivered; the database applies each
//!   conditional `UPDATE` atomically and the worker's writes succeed or the worker crashes.
//! - That the async worker, the sweeps and the refund service perform exactly these steps: the model
//!   runs the state machine and the decisions of `policy`, not that code.
//! - The forced refund of an unresolved order: an operator's decision, trusted. It is the one way the
//!   model reaches a top-up both delivered and refunded (properties 2 and 3 exempt it, and
//!   `a_forced_refund_is_the_only_way_to_deliver_and_refund` shows it is needed).
//! - Out of scope: several orders, amounts (one price), refunds of delivered orders (an operator's
//!   goodwill), payment verification, and crashes of idle workers (they hold no lease).
//!
//! # Bounds
//! Two replicas: budget 3, up to 2 crashes, 1 shutdown, 2 payment deliveries, 2 operator retries and
//! 2 sweeps of an unresolved order. Three replicas: budget 3, 1 crash, 1 shutdown, 2 deliveries,
//! 1 retry, 1 sweep. Stale attempts: two processes of two tasks each, budget 2, 1 overrun, 1 delivery,
//! 1 retry, 1 sweep, no crash or shutdown. The operator's refunds and mark-delivered end the order, so
//! they happen at most once.
//!
//! # Properties
//! 1. Every submit is the first call of a never-submitted order or follows a query of the same attempt
//!    that found nothing; and at most one submit of an attempt that did not overrun its lease is
//!    outstanding (sent, not yet answered or timed out). An overrun attempt's submit may join one on
//!    the wire; the carrier's one top-up per reference makes that harmless.
//! 2. Never delivered and refunded (unless an operator forced the refund).
//! 3. Money balances: paid = delivered + refunded + in flight (paid, neither delivered nor refunded,
//!    and `paid`/`recharging`/`unresolved`, `failed` awaiting its refund, or a refund open); `success`
//!    only if the carrier delivered; `failed`/`refunding`/`refunded` only if it did not receive or failed
//!    (unless forced).
//!
//! Liveness, under fair scheduling: from every reachable state some done state is reachable (delivered
//! and `success`, `refunded`, `closed` and never paid, or `unresolved` for an operator). Dead ends are
//! counted separately. Attempts end: the version never passes `Bounds::max_version` (which also keeps
//! the search finite under a policy that retries forever). Every kind of action must fire and every way
//! of finishing must be reached, so a guard that disables half the model fails the test instead of
//! passing it vacuously.
//!
//! # Mutants
//! Each test below swaps one decision for a broken one and asserts the checker prints a counterexample:
//! failing on an exhausted budget (finding 1) and on a timeout, resubmitting on pending, retrying
//! forever, releasing an in-flight claim at shutdown (finding 4), guarding writes on the owner only
//! (finding 5), refunding a `paid` order after a submit (finding 3), and dropping a late payment.
//!
//! # Reading a trace
//! A violation prints a shortest path from the initial state (unpaid, nothing sent, replicas idle), one
//! atomic step per line, then the state that breaks the property. `wN` is a replica (`wN.k` its task k
//! when a replica runs several): the first ones run from the start, each crash or shutdown starts the
//! next. `attempt N` is the version the claim wrote; `(N used)` is what `next_step` is told. In the
//! state, each worker line says what it has on the wire.

use std::fmt;

use super::{check, Outcome, Property, Report, Spec};
use crate::domain::{OrderEvent, OrderStatus, RefundScope};
use crate::fulfilment::policy::{self, first_call, Answer, Call, Step};

/// The signature of `policy::next_step`.
type NextStep = fn(Call, Answer, u32, u32) -> Step;

/// The decisions under test. The real ones by default; the tests swap in mutants to show the checker
/// finds what the real rules prevent.
#[derive(Clone, Copy)]
struct Rules {
    next_step: NextStep,
    may_release: fn(bool) -> bool,
    /// Writes after the claim compare `fulfil_attempts` with the claim's version, not only the owner.
    attempt_guard: bool,
    /// A refund from `paid` honours `requires_nothing_submitted` (`submitted = false` in its guard).
    paid_refund_guard: bool,
    /// A payment that lands on a closed order is recorded and its whole refund opened.
    late_payment_refund: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            next_step: policy::next_step,
            may_release: policy::may_release,
            attempt_guard: true,
            paid_refund_guard: true,
            late_payment_refund: true,
        }
    }
}

/// How far the exploration goes. Every count is an upper bound; each action it limits may also never
/// happen.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// Replicas running at the start. A crashed or stopped one is replaced by a fresh replica.
    workers: u8,
    /// Attempts one replica runs at once (more than one only without crashes and shutdowns).
    tasks: u8,
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
    /// Leases that lapse while their holder still has an answer in hand.
    overruns: u8,
    /// Trusted: the operator's proof of non-delivery is read only while no attempt is running.
    proof_waits_for_stale_attempts: bool,
}

impl Bounds {
    /// The most claims an order can see: a budget's worth per budget window (the first and one per
    /// operator retry), plus one per sweep of an unresolved order, plus one per crash, shutdown or
    /// overrun that cut an attempt short once its budget was used up. A version past this means
    /// attempts never end.
    fn max_version(self) -> u8 {
        self.budget * (self.retries + 1) + self.sweeps + self.crashes + self.shutdowns + self.overruns
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

/// Who opened the refund (the refund row's `source` and reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Opener {
    Nobody,
    /// The top-up failed (the worker, or reconciliation if the worker stopped first).
    TopUpFailed,
    /// The payment landed on a closed order.
    LatePayment,
    /// An operator, for a `paid` order nothing was submitted for.
    OperatorBeforeSubmit,
    /// An operator, for an `unresolved` order the carrier never received or failed.
    OperatorOnProof,
    /// An operator forced the refund of an `unresolved` order, with a recorded reason.
    OperatorForced,
}

/// The payer's money at WeChat, and how many notifications of it are still to land.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Payment {
    NotMade,
    Made { notices_left: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Lease {
    /// The process (`lease_owner`), not the task.
    owner: u8,
    attempt: u8,
    live: bool,
}

/// Where a worker's carrier call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// The request is on the wire: it will reach the carrier or be lost.
    Request,
    /// The carrier answered; the answer is on its way back (it may be lost: a timeout). `Unknown`: the
    /// request was lost and the worker's timeout is still to fire (only with overruns).
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
    /// Its lease lapsed while it was still working (a ghost: the worker does not know).
    overran: bool,
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
    /// A submit on the wire from an attempt still within its lease (or a crashed worker's).
    fn submit_in_term(self) -> bool {
        matches!(
            self,
            Worker::Busy(Attempt { call: Call::Submit, phase: Phase::Request, overran: false, .. })
                | Worker::Down(Some(Call::Submit))
        )
    }
}

/// A worker slot as printed: `wN`, or `wN.k` for task k of replica N when replicas run several tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Who {
    slot: u8,
    tasks: u8,
}

impl Who {
    fn process(self) -> u8 {
        self.slot / self.tasks
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tasks == 1 {
            write!(f, "w{}", self.slot)
        } else {
            write!(f, "w{}.{}", self.process(), self.slot % self.tasks)
        }
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
    opener: Opener,
    /// The order row records the payment.
    paid: bool,
    payment: Payment,
    carrier: Carrier,
    workers: [Worker; MAX_WORKERS],
    /// Tasks per replica (the same in every state; for printing).
    tasks: u8,
    crashes_left: u8,
    shutdowns_left: u8,
    retries_left: u8,
    sweeps_left: u8,
    overruns_left: u8,
    /// A submit was sent that was neither the first call of a never-submitted order nor the answer to a
    /// query that found nothing (property 1).
    unjustified_submit: bool,
}

impl State {
    fn who(&self, w: usize) -> Who {
        Who { slot: w as u8, tasks: self.tasks }
    }

    /// The refund an operator forced: the one trusted decision properties 2 and 3 exempt.
    fn forced(&self) -> bool {
        self.opener == Opener::OperatorForced
    }
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
    Notify { to: Option<OrderStatus>, dropped: bool },
    Expire,
    Claim { w: Who, from: OrderStatus, attempt: u8, submitted_before: bool, call: Call },
    Receive { w: Who, call: Call, carrier: Carrier, answer: Answer },
    LoseRequest { w: Who, call: Call, down: bool },
    Handle { w: Who, call: Call, answer: Answer, delivery: Delivery, step: Step, written: bool },
    CarrierCompletes { to: Carrier },
    Lapse { owner: u8 },
    Overrun { w: Who, attempt: u8 },
    Crash { w: Who, replacement: Who },
    Shutdown { w: Who, released: bool, replacement: Who },
    AutoRefund,
    OperatorRetries,
    OperatorMarksDelivered,
    OperatorRefundsPaid,
    OperatorRefundsOnProof,
    OperatorForcesRefund,
    RefundAccepted,
    RefundSucceeded,
}

const KINDS: [&str; 20] = [
    "pay",
    "notify",
    "expire",
    "claim",
    "receive",
    "lose request",
    "handle",
    "carrier completes",
    "lapse",
    "overrun",
    "crash",
    "shutdown",
    "auto refund",
    "operator retries",
    "operator marks delivered",
    "operator refunds a paid order",
    "operator refunds on proof",
    "operator forces a refund",
    "refund accepted",
    "refund succeeded",
];

impl Action {
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
            Action::Overrun { .. } => 9,
            Action::Crash { .. } => 10,
            Action::Shutdown { .. } => 11,
            Action::AutoRefund => 12,
            Action::OperatorRetries => 13,
            Action::OperatorMarksDelivered => 14,
            Action::OperatorRefundsPaid => 15,
            Action::OperatorRefundsOnProof => 16,
            Action::OperatorForcesRefund => 17,
            Action::RefundAccepted => 18,
            Action::RefundSucceeded => 19,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Pay => write!(f, "the payer pays at WeChat"),
            Action::Notify { to: Some(to), .. } => write!(f, "a payment notification lands: order -> {to}"),
            Action::Notify { to: None, dropped: true } => {
                write!(f, "a payment notification lands on the closed order and is dropped")
            }
            Action::Notify { to: None, dropped: false } => {
                write!(f, "a duplicate payment notification matches nothing")
            }
            Action::Expire => write!(f, "the order expires unpaid: -> closed"),
            Action::Claim { w, from, attempt, submitted_before, call } => write!(
                f,
                "{w} claims the {from} order: attempt {attempt}, submitted before = {submitted_before}, sends {call:?}"
            ),
            Action::Receive { w, call, carrier, answer } => {
                write!(f, "the carrier receives {w}'s {call:?}: carrier {carrier:?}, answers {answer:?}")
            }
            Action::LoseRequest { w, call, down: true } => {
                write!(f, "{w}'s {call:?} is lost on the wire ({w} is down)")
            }
            Action::LoseRequest { w, call, down: false } => {
                write!(f, "{w}'s {call:?} is lost on the wire ({w} will time out)")
            }
            Action::Handle { w, call, answer, delivery, step, written } => {
                let how = match delivery {
                    Delivery::Reply => "",
                    Delivery::ReplyLost => " (the reply was lost: timeout)",
                    Delivery::RequestLost => " (the request was lost: timeout)",
                };
                write!(f, "{w} gets {answer:?} for its {call:?}{how}: next_step -> {step:?}")?;
                match step {
                    Step::Submit => write!(f, ", sends Submit"),
                    _ if !written => write!(f, ", its write matches nothing (claim lost)"),
                    _ => Ok(()),
                }
            }
            Action::CarrierCompletes { to } => write!(f, "the carrier completes the pending top-up: {to:?}"),
            Action::Lapse { owner } => write!(f, "w{owner}'s lease lapses"),
            Action::Overrun { w, attempt } => {
                write!(f, "{w}'s lease for attempt {attempt} lapses while it still holds its answer (a pause)")
            }
            Action::Crash { w, replacement } => write!(f, "{w} crashes (replica {replacement} starts)"),
            Action::Shutdown { w, released, replacement } => {
                let lease = if released { "releases its lease" } else { "keeps its lease to expiry" };
                write!(f, "{w} shuts down and {lease} (replica {replacement} starts)")
            }
            Action::AutoRefund => write!(f, "the failed order's whole refund opens: -> refunding"),
            Action::OperatorRetries => write!(f, "an operator retries the order: -> paid"),
            Action::OperatorMarksDelivered => write!(f, "an operator marks the order delivered: -> success"),
            Action::OperatorRefundsPaid => write!(f, "an operator refunds the paid order: -> refunding"),
            Action::OperatorRefundsOnProof => {
                write!(f, "an operator refunds the unresolved order on the carrier's answer: -> refunding")
            }
            Action::OperatorForcesRefund => {
                write!(f, "an operator forces the refund of the unresolved order (reason recorded): -> refunding")
            }
            Action::RefundAccepted => write!(f, "WeChat accepts the refund"),
            Action::RefundSucceeded => write!(f, "the refund succeeds: -> refunded"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status={} version={} budget_from={} submitted={} paid={} refund={:?} (by {:?}) carrier={:?}",
            self.status,
            self.version,
            self.budget_from,
            self.submitted,
            self.paid,
            self.refund,
            self.opener,
            self.carrier
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
            let who = self.who(w);
            match worker {
                Worker::Spare => {}
                Worker::Idle => write!(f, "\n    {who}: idle")?,
                Worker::Busy(a) => {
                    write!(f, "\n    {who}: attempt {} ({} used), {:?} ", a.number, a.used, a.call)?;
                    match a.phase {
                        Phase::Request => write!(f, "on the wire")?,
                        Phase::Reply(Answer::Unknown) => write!(f, "lost, timeout to come")?,
                        Phase::Reply(answer) => write!(f, "answered {answer:?}, reply on the wire")?,
                    }
                    if a.overran {
                        write!(f, " (overran its lease)")?;
                    }
                }
                Worker::Down(Some(call)) => write!(f, "\n    {who}: down, its {call:?} still on the wire")?,
                Worker::Down(None) => write!(f, "\n    {who}: down")?,
            }
        }
        write!(
            f,
            "\n    left: {} crashes, {} shutdowns, {} retries, {} sweeps, {} overruns",
            self.crashes_left, self.shutdowns_left, self.retries_left, self.sweeps_left, self.overruns_left
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

impl Spec for Model {
    type State = State;
    type Action = Action;

    fn kinds(&self) -> &'static [&'static str] {
        &KINDS
    }

    fn kind(&self, action: &Action) -> usize {
        action.kind()
    }

    fn initial(&self) -> State {
        let b = self.bounds;
        let slots = usize::from(b.workers * b.tasks + b.crashes + b.shutdowns);
        assert!(slots <= MAX_WORKERS, "too many replicas for MAX_WORKERS");
        assert!(b.tasks == 1 || b.crashes + b.shutdowns == 0, "replicas with several tasks never stop here");
        let mut workers = [Worker::Spare; MAX_WORKERS];
        for worker in workers.iter_mut().take(usize::from(b.workers * b.tasks)) {
            *worker = Worker::Idle;
        }
        State {
            status: OrderStatus::Unpaid,
            version: 0,
            budget_from: 0,
            submitted: false,
            lease: None,
            refund: Refund::None,
            opener: Opener::Nobody,
            paid: false,
            payment: Payment::NotMade,
            carrier: Carrier::NotReceived,
            workers,
            tasks: b.tasks,
            crashes_left: b.crashes,
            shutdowns_left: b.shutdowns,
            retries_left: b.retries,
            sweeps_left: b.sweeps,
            overruns_left: b.overruns,
            unjustified_submit: false,
        }
    }

    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        self.payment(s, out);
        for w in 0..MAX_WORKERS {
            self.worker(s, w, out);
        }
        self.environment(s, out);
    }

    fn done(&self, s: &State) -> bool {
        done(s)
    }

    fn outcomes(&self) -> &'static [Outcome<State>] {
        &OUTCOMES
    }

    fn runaway(&self, s: &State) -> Option<(&'static str, String)> {
        let max = self.bounds.max_version();
        (s.version > max).then(|| ("liveness, attempts end", format!("version {} > {max}", s.version)))
    }

    fn describe(&self) -> String {
        format!("{:?}", self.bounds)
    }

    fn switched_off(&self) -> Vec<&'static str> {
        let b = self.bounds;
        let off = [
            (b.overruns == 0, "overrun"),
            (b.crashes == 0, "crash"),
            (b.shutdowns == 0, "shutdown"),
            // Without a crash or a shutdown a lease only lapses by overrunning.
            (b.crashes + b.shutdowns == 0, "lapse"),
        ];
        off.into_iter().filter(|(off, _)| *off).map(|(_, kind)| kind).collect()
    }
}

impl Model {
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
                let dropped = s.status == OrderStatus::Closed && !self.rules.late_payment_refund;
                let to = fire(s.status, OrderEvent::PaymentConfirmed).filter(|_| !dropped);
                if let Some(to) = to {
                    t.status = to;
                    t.paid = true;
                    // A payment for a closed order opens its whole refund in the same transaction.
                    if to == OrderStatus::Refunding {
                        t.refund = Refund::Pending;
                        t.opener = Opener::LatePayment;
                    }
                }
                out.push((Action::Notify { to, dropped }, t));
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
        let who = s.who(w);
        match s.workers[w] {
            Worker::Spare | Worker::Down(None) => {}
            Worker::Idle => self.claim(s, w, out),
            Worker::Down(Some(call)) => {
                for (carrier, answer) in carrier_receives(s.carrier, call) {
                    let mut t = *s;
                    t.carrier = carrier;
                    t.workers[w] = Worker::Down(None);
                    out.push((Action::Receive { w: who, call, carrier, answer }, t));
                }
                let mut t = *s;
                t.workers[w] = Worker::Down(None);
                out.push((Action::LoseRequest { w: who, call, down: true }, t));
            }
            Worker::Busy(attempt) => {
                match attempt.phase {
                    Phase::Request => {
                        for (carrier, answer) in carrier_receives(s.carrier, attempt.call) {
                            let mut t = *s;
                            t.carrier = carrier;
                            t.workers[w] = Worker::Busy(Attempt { phase: Phase::Reply(answer), ..attempt });
                            out.push((Action::Receive { w: who, call: attempt.call, carrier, answer }, t));
                        }
                        if self.bounds.overruns > 0 {
                            // The loss and the timeout are two steps, so a lease can lapse between them.
                            let mut t = *s;
                            t.workers[w] = Worker::Busy(Attempt { phase: Phase::Reply(Answer::Unknown), ..attempt });
                            out.push((Action::LoseRequest { w: who, call: attempt.call, down: false }, t));
                        } else {
                            out.push(self.handle(s, w, attempt, Answer::Unknown, Delivery::RequestLost));
                        }
                    }
                    Phase::Reply(Answer::Unknown) => {
                        out.push(self.handle(s, w, attempt, Answer::Unknown, Delivery::RequestLost));
                    }
                    Phase::Reply(answer) => {
                        out.push(self.handle(s, w, attempt, answer, Delivery::Reply));
                        out.push(self.handle(s, w, attempt, Answer::Unknown, Delivery::ReplyLost));
                    }
                }
                self.crash_or_stop(s, w, attempt, out);
            }
        }
    }

    /// The claim: one conditional UPDATE on the version (the read it compares against is folded in: the
    /// fields the worker keeps from it, `submitted` and `budget_from`, are in the guard).
    fn claim(&self, s: &State, w: usize, out: &mut Vec<(Action, State)>) {
        let Some(to) = fire(s.status, OrderEvent::FulfilmentStarted) else { return };
        let due = s.status == OrderStatus::Paid || !s.lease.is_some_and(|lease| lease.live);
        let sweep = s.status == OrderStatus::Unresolved;
        if !due || (sweep && s.sweeps_left == 0) {
            return;
        }
        let who = s.who(w);
        let mut t = *s;
        t.status = to;
        t.version = s.version + 1;
        t.submitted = true;
        t.lease = Some(Lease { owner: who.process(), attempt: t.version, live: true });
        if sweep {
            t.sweeps_left -= 1;
        }
        let call = first_call(s.submitted);
        if call == Call::Submit && s.submitted {
            t.unjustified_submit = true;
        }
        let used = t.version - t.budget_from;
        t.workers[w] = Worker::Busy(Attempt { number: t.version, used, call, phase: Phase::Request, overran: false });
        let action = Action::Claim { w: who, from: s.status, attempt: t.version, submitted_before: s.submitted, call };
        out.push((action, t));
    }

    /// A worker acts on an answer: `next_step`, then a write guarded by its claim, or the next call.
    fn handle(&self, s: &State, w: usize, attempt: Attempt, answer: Answer, delivery: Delivery) -> (Action, State) {
        let step = (self.rules.next_step)(attempt.call, answer, u32::from(attempt.used), u32::from(self.bounds.budget));
        let who = s.who(w);
        let mut t = *s;
        t.workers[w] = Worker::Idle;
        // `status = recharging AND lease_owner = me AND fulfil_attempts = my claim's version`.
        let held = s.status == OrderStatus::Recharging
            && s.lease.is_some_and(|lease| {
                lease.owner == who.process() && (lease.attempt == attempt.number || !self.rules.attempt_guard)
            });
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
        (Action::Handle { w: who, call: attempt.call, answer, delivery, step, written }, t)
    }

    /// A busy worker crashes or shuts down, and a fresh replica takes its place. (An idle worker holds no
    /// lease, so stopping it would only rename it.)
    fn crash_or_stop(&self, s: &State, w: usize, attempt: Attempt, out: &mut Vec<(Action, State)>) {
        let Some(spare) = s.workers.iter().position(|worker| *worker == Worker::Spare) else { return };
        let (who, replacement) = (s.who(w), s.who(spare));
        let on_the_wire = (attempt.phase == Phase::Request).then_some(attempt.call);
        let mut t = *s;
        t.workers[w] = Worker::Down(on_the_wire);
        t.workers[spare] = Worker::Idle;
        if s.crashes_left > 0 {
            let mut t = t;
            t.crashes_left -= 1;
            out.push((Action::Crash { w: who, replacement }, t));
        }
        if s.shutdowns_left > 0 {
            t.shutdowns_left -= 1;
            // `release_claims`: status = recharging AND lease owner = me. A busy worker's call is in flight.
            let mine = s.status == OrderStatus::Recharging && s.lease.is_some_and(|lease| lease.owner == who.process());
            let released = mine && (self.rules.may_release)(true);
            if released {
                t.lease = s.lease.map(|lease| Lease { live: false, ..lease });
            }
            out.push((Action::Shutdown { w: who, released, replacement }, t));
        }
    }

    /// Opening a whole refund, with the extra guard of a refund from `paid`.
    fn whole_refund(&self, s: &State) -> Option<OrderStatus> {
        let event = OrderEvent::RefundRequested(RefundScope::Whole);
        if self.rules.paid_refund_guard && s.status.requires_nothing_submitted(event) && s.submitted {
            return None;
        }
        fire(s.status, event)
    }

    fn open_refund(&self, s: &State, opener: Opener, action: Action, out: &mut Vec<(Action, State)>) {
        if let Some(to) = self.whole_refund(s) {
            let mut t = *s;
            t.status = to;
            t.refund = Refund::Pending;
            t.opener = opener;
            out.push((action, t));
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
        self.lapse(s, out);
        // The failing worker opens the refund; the reconciliation job opens it if the worker stopped first.
        if s.status == OrderStatus::Failed {
            self.open_refund(s, Opener::TopUpFailed, Action::AutoRefund, out);
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
        if s.status == OrderStatus::Paid {
            self.open_refund(s, Opener::OperatorBeforeSubmit, Action::OperatorRefundsPaid, out);
        }
        if s.status == OrderStatus::Unresolved {
            // `proof_of_non_delivery`: the carrier's answer now; the refund opens on the version read
            // before it, so a claim in between (the only way a new submit can start) makes it lose.
            let nothing_running =
                !s.workers.iter().any(|worker| matches!(worker, Worker::Busy(_) | Worker::Down(Some(_))));
            let proof = matches!(s.carrier, Carrier::NotReceived | Carrier::Failed)
                && (nothing_running || !self.bounds.proof_waits_for_stale_attempts);
            if proof {
                self.open_refund(s, Opener::OperatorOnProof, Action::OperatorRefundsOnProof, out);
            }
            self.open_refund(s, Opener::OperatorForced, Action::OperatorForcesRefund, out);
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

    /// A lease lapses on its own once its holder's calls are over (a crashed or stopped holder, or one
    /// whose request has landed or been lost); or, up to `overruns` times, while its holder still has an
    /// answer in hand.
    fn lapse(&self, s: &State, out: &mut Vec<(Action, State)>) {
        let Some(lease) = s.lease.filter(|lease| lease.live) else { return };
        let holder = (0..MAX_WORKERS).find(|&w| {
            s.who(w).process() == lease.owner
                && match s.workers[w] {
                    Worker::Busy(attempt) => attempt.number == lease.attempt,
                    Worker::Down(Some(_)) => true,
                    _ => false,
                }
        });
        let mut t = *s;
        t.lease = Some(Lease { live: false, ..lease });
        match holder.map(|w| (w, s.workers[w])) {
            None => out.push((Action::Lapse { owner: lease.owner }, t)),
            Some((w, Worker::Busy(attempt))) if matches!(attempt.phase, Phase::Reply(_)) && s.overruns_left > 0 => {
                t.overruns_left -= 1;
                t.workers[w] = Worker::Busy(Attempt { overran: true, ..attempt });
                out.push((Action::Overrun { w: s.who(w), attempt: attempt.number }, t));
            }
            Some(_) => {}
        }
    }
}

/// The safety properties, checked in every reachable state.
const PROPERTIES: [Property<State>; 3] = [
    ("property 1, one submit at a time", one_submit_at_a_time),
    ("property 2, never delivered and refunded", never_delivered_and_refunded),
    ("property 3, money balances and the status tells the truth", money_balances),
];

/// Every submit sent as the first call of a never-submitted order or right after a query of the same
/// attempt found nothing; and at most one outstanding from attempts within their lease.
fn one_submit_at_a_time(s: &State) -> Option<String> {
    if s.unjustified_submit {
        return Some("a submit sent without a query that found nothing".into());
    }
    let outstanding = s.workers.iter().filter(|worker| worker.submit_in_term()).count();
    (outstanding > 1).then(|| format!("{outstanding} submits outstanding from attempts within their lease"))
}

fn never_delivered_and_refunded(s: &State) -> Option<String> {
    if s.forced() {
        return None;
    }
    strictly_never_delivered_and_refunded(s)
}

/// Property 2 without the operator's forced refund exempt.
fn strictly_never_delivered_and_refunded(s: &State) -> Option<String> {
    (s.carrier == Carrier::Delivered && s.refund != Refund::None)
        .then(|| format!("the carrier delivered and the refund is {:?} (opened by {:?})", s.refund, s.opener))
}

/// paid = delivered + refunded + in flight, and the status tells the truth about the carrier.
fn money_balances(s: &State) -> Option<String> {
    if s.forced() {
        return None;
    }
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

/// The ways an order can finish; each must be reachable (a vacuity check).
const OUTCOMES: [Outcome<State>; 9] = [
    ("delivered", |s| s.status == OrderStatus::Success),
    ("refunded after a carrier failure", |s| s.status == OrderStatus::Refunded && s.carrier == Carrier::Failed),
    ("refunded, never received by the carrier", |s| {
        s.status == OrderStatus::Refunded && s.carrier == Carrier::NotReceived && s.version > 0
    }),
    ("refunded after a late payment", |s| s.status == OrderStatus::Refunded && s.opener == Opener::LatePayment),
    ("refunded by an operator before any submit", |s| {
        s.status == OrderStatus::Refunded && s.opener == Opener::OperatorBeforeSubmit
    }),
    ("refunded by an operator on the carrier's proof", |s| {
        s.status == OrderStatus::Refunded && s.opener == Opener::OperatorOnProof
    }),
    ("refunded by an operator's forced decision", |s| s.status == OrderStatus::Refunded && s.forced()),
    ("closed unpaid", |s| s.status == OrderStatus::Closed && s.payment == Payment::NotMade),
    ("unresolved", |s| s.status == OrderStatus::Unresolved),
];

const TWO_WORKERS: Bounds = Bounds {
    workers: 2,
    tasks: 1,
    budget: 3,
    crashes: 2,
    shutdowns: 1,
    notices: 2,
    retries: 2,
    sweeps: 2,
    overruns: 0,
    proof_waits_for_stale_attempts: false,
};
const THREE_WORKERS: Bounds = Bounds {
    workers: 3,
    tasks: 1,
    budget: 3,
    crashes: 1,
    shutdowns: 1,
    notices: 2,
    retries: 1,
    sweeps: 1,
    overruns: 0,
    proof_waits_for_stale_attempts: false,
};
/// Two replicas of two tasks each whose leases can lapse mid-attempt: stale attempts of the same
/// process and of another.
const STALE_ATTEMPTS: Bounds = Bounds {
    workers: 2,
    tasks: 2,
    budget: 2,
    crashes: 0,
    shutdowns: 0,
    notices: 1,
    retries: 1,
    sweeps: 1,
    overruns: 1,
    proof_waits_for_stale_attempts: true,
};

fn run(rules: Rules, bounds: Bounds, properties: &[Property<State>]) -> Report {
    check(&Model { rules, bounds }, properties)
}

#[test]
fn the_real_rules_hold_with_two_workers() {
    run(Rules::default(), TWO_WORKERS, &PROPERTIES).assert_holds();
}

#[test]
fn the_real_rules_hold_with_three_workers() {
    run(Rules::default(), THREE_WORKERS, &PROPERTIES).assert_holds();
}

#[test]
fn the_real_rules_hold_with_stale_attempts() {
    run(Rules::default(), STALE_ATTEMPTS, &PROPERTIES).assert_holds();
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
    run(rules, TWO_WORKERS, &PROPERTIES).assert_caught("property 3");
    // Where it leads: the top-up delivered and its money refunded.
    run(rules, TWO_WORKERS, &PROPERTIES[1..2]).assert_caught("property 2");
}

/// Finding 4: handing over a claim at shutdown while its submit is still on the wire.
#[test]
fn releasing_a_claim_with_a_call_in_flight_is_caught() {
    let rules = Rules { may_release: |_| true, ..Rules::default() };
    run(rules, TWO_WORKERS, &PROPERTIES).assert_caught("property 1");
}

/// Finding 5: writes guarded on `lease_owner` alone. A stale attempt of the same process gives back
/// the newer attempt's claim while that one's submit is on the wire, and a third claim submits beside
/// it, although no attempt within its lease ever lost it.
#[test]
fn guarding_writes_on_the_owner_only_is_caught() {
    let rules = Rules { attempt_guard: false, ..Rules::default() };
    let violation = run(rules, STALE_ATTEMPTS, &PROPERTIES).assert_caught("property 1");
    assert!(violation.trace.iter().any(|step| step.contains("lapses while it still holds")), "{violation}");
}

/// Finding 3: an operator's whole refund of a `paid` order after a submit may have reached the carrier
/// (an operator retry puts a submitted order back to `paid`).
#[test]
fn refunding_a_paid_order_after_a_submit_is_caught() {
    let rules = Rules { paid_refund_guard: false, ..Rules::default() };
    run(rules, TWO_WORKERS, &PROPERTIES).assert_caught("property 3");
    let violation = run(rules, TWO_WORKERS, &PROPERTIES[1..2]).assert_caught("property 2");
    assert!(violation.trace.iter().any(|step| step.contains("refunds the paid order")), "{violation}");
}

/// A payment that lands on a closed order and is dropped: the money stays at WeChat, never refunded.
#[test]
fn dropping_a_late_payment_is_caught() {
    let rules = Rules { late_payment_refund: false, ..Rules::default() };
    let bounds = Bounds { crashes: 0, shutdowns: 0, retries: 0, sweeps: 0, ..TWO_WORKERS };
    let stuck = run(rules, bounds, &PROPERTIES).assert_stuck();
    assert!(stuck.state.contains("status=closed") && stuck.state.contains("payment=made"), "{stuck}");
}

/// The forced refund of an unresolved order is the one trusted operator decision: without its
/// exemption, property 2 fails, and only through it.
#[test]
fn a_forced_refund_is_the_only_way_to_deliver_and_refund() {
    let strict: [Property<State>; 1] = [("property 2 strictly", strictly_never_delivered_and_refunded)];
    let violation = run(Rules::default(), TWO_WORKERS, &strict).assert_caught("property 2");
    assert!(violation.trace.iter().any(|step| step.contains("forces the refund")), "{violation}");
}

/// What `proof_waits_for_stale_attempts` trusts: an attempt that overran its lease with "never
/// received" in hand still submits; if meanwhile the order went unresolved and an operator refunded it
/// on the carrier's "never received", the top-up arrives after the refund.
#[test]
fn a_proof_read_beside_a_stale_attempt_can_be_wrong() {
    let bounds = Bounds { proof_waits_for_stale_attempts: false, ..STALE_ATTEMPTS };
    let violation = run(Rules::default(), bounds, &PROPERTIES).assert_caught("property");
    assert!(violation.trace.iter().any(|step| step.contains("lapses while it still holds")), "{violation}");
    assert!(violation.trace.iter().any(|step| step.contains("on the carrier's answer")), "{violation}");
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
        run(Rules { next_step, ..Rules::default() }, TWO_WORKERS, &PROPERTIES).assert_caught(expected);
    }
}
