//! The refunds model: the whole refund of one paid order, from the moment it is opened, driven by
//! concurrent callers against WeChat's refund semantics (`services/refunds.rs`).
//!
//! # Modelled
//! - The order row (`refunding` or `refunded`, `refund_requested`, `refund_seq`) and up to two refund
//!   rows (status, `attempts`, whether its amount is counted in `refund_requested`). The first is open
//!   at the start; an operator may open another while something is left to refund.
//! - WeChat's record of each `out_refund_no`: absent, processing, succeeded, closed (`REFUNDCLOSE`)
//!   or abnormal (`CHANGE`, which the merchant settles at WeChat's platform: it may succeed later).
//!   A request for an absent refund is accepted, answered `SYSTEMERROR` (created or not),
//!   `FREQUENCY_LIMITED`/`NOTENOUGH` (not created) or refused for good (not created); a request for a
//!   refund WeChat has is answered with it (idempotent on `out_refund_no`), and a closed one is tried
//!   again. A processing refund succeeds, closes or turns abnormal; an abnormal one may succeed.
//! - Drivers, each the steps of one call of `drive_refund`, `confirm_refund` or `retry_refund`: the
//!   reconciliation sweep (every replica; a failed refund is only re-queried), the platform's refund
//!   notification (duplicates, or none at all), and the operator's retry (query first, then the same
//!   `out_refund_no` with a budget of zero). A driver reads the row, calls WeChat (the request or its
//!   answer may be lost: a timeout, transient), then writes under the guard `submit_refund` or
//!   `confirm_refund` uses; a confirmed success then settles the order (`settle_order`, guarded on
//!   `refund_seq`). A driver may crash between any two steps (but see the trust below).
//!
//! # Trusted, not modelled
//! - WeChat answers per its documented semantics (above); the database applies each conditional
//!   `UPDATE` atomically; the code performs exactly these steps.
//! - A driver may stop between writing a refund's success and settling the order; reconciliation's
//!   `settle_stranded_orders` then settles it (`without_the_stranded_order_sweep_an_order_stays_refunding`
//!   shows the order would otherwise stay `refunding` for good).
//! - Amounts: one price, whole refunds (the counter guard on `refund_requested` is what keeps
//!   partial refunds within the payment; one whole refund exercises the same guard).
//!
//! # Bounds
//! Two drivers, 1 transient answer (a lost request or reply counts as one), 2 permanent refusals,
//! a refusal budget (`REFUND_MAX_ATTEMPTS`) of 2, one refund notification, one operator retry, one
//! crash.
//!
//! # Properties
//! 1. WeChat pays back at most what was paid, and no more than that is ever counted as requested.
//! 2. A refund WeChat has (processing, succeeded, or abnormal) keeps its amount counted: it is never
//!    treated as not performed, so no second refund number is opened for the same money.
//! 3. The rows tell the truth: a `success` row only for a refund WeChat succeeded; a `refunded` order
//!    only when all its refunds succeeded.
//!
//! Liveness: from every state the order can reach `refunded`, or a `failed` refund for an operator
//! that WeChat does not hold (refused, closed or abnormal); a failed refund WeChat did after all is
//! always settled.
//!
//! # Mutants
//! Releasing a failed refund's amount (a new refund number becomes possible), an operator retry under a
//! new `out_refund_no`, counting an accepted refund as succeeded, and never re-querying failed refunds.

use std::fmt;

use super::{check, Outcome, Property, Report, Spec};
use crate::domain::{OrderEvent, OrderStatus, RefundScope, RefundStatus};

const ROWS: usize = 2;
const DRIVERS: usize = 2;
/// `REFUND_MAX_ATTEMPTS` as the model runs it.
const MAX_ATTEMPTS: u8 = 2;

/// The decisions under test, as `services/refunds.rs` makes them; the mutants flip one.
#[derive(Clone, Copy, Default)]
struct Rules {
    /// Mutant: a refund that ends `failed` gives its amount back to the order.
    release_failed: bool,
    /// Mutant: the operator's retry opens a new refund number for the same money.
    retry_new_number: bool,
    /// Mutant: WeChat's acceptance is recorded as success (no `queryrefund`).
    success_on_acceptance: bool,
    /// Mutant: the sweep leaves failed refunds alone.
    no_requery: bool,
    /// Mutant: reconciliation does not settle orders left `refunding` after all their refunds settled
    /// (`settle_stranded_orders`).
    no_stranded_sweep: bool,
}

#[derive(Clone, Copy, Debug)]
struct Bounds {
    transients: u8,
    refusals: u8,
    notices: u8,
    retries: u8,
    crashes: u8,
    /// Trusted: no crash between a refund's success and the order's settle.
    settle_with_success: bool,
}

/// WeChat's record of one `out_refund_no`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Wechat {
    Absent,
    Processing,
    Succeeded,
    /// `REFUNDCLOSE`: not refunded; a request under the same number tries again.
    Closed,
    /// `CHANGE`: the money could not reach the payer; settled by hand at WeChat, it may still succeed.
    Abnormal,
}

impl Wechat {
    /// WeChat holds (or paid back) the money of this refund.
    fn has_it(self) -> bool {
        matches!(self, Wechat::Processing | Wechat::Succeeded | Wechat::Abnormal)
    }
}

/// What a refund request came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Answer {
    Accepted,
    /// Outages, timeouts, `SYSTEMERROR`, `FREQUENCY_LIMITED`, `NOTENOUGH`.
    Transient,
    /// Refused for good.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Row {
    status: RefundStatus,
    attempts: u8,
    /// Permanent refusals: what the budget limits (`attempts` counts every try and versions the row).
    refusals: u8,
    /// Its amount is part of `refund_requested`.
    counted: bool,
}

/// Who started a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    Sweep,
    Notification,
    Operator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Driver {
    Idle,
    /// `submit_refund` with the row as read: its `attempts`, and the budget (zero for an operator's retry).
    Submit {
        row: u8,
        seen_attempts: u8,
        budget: u8,
        answer: Option<Answer>,
    },
    /// `confirm_refund` with the row's status as read; `None` while the query is on its way.
    Confirm {
        row: u8,
        seen: RefundStatus,
        caller: Caller,
        state: Option<Wechat>,
    },
    /// `settle_order` after a success.
    Settle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    status: OrderStatus,
    /// `refund_requested`, in units of the price (paid = 1).
    requested: u8,
    rows: [Option<Row>; ROWS],
    wechat: [Wechat; ROWS],
    drivers: [Driver; DRIVERS],
    transients_left: u8,
    refusals_left: u8,
    notices_left: u8,
    retries_left: u8,
    crashes_left: u8,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Start { d: u8, row: u8, caller: Caller, seen: RefundStatus },
    WechatReceives { d: u8, row: u8, to: Wechat, answer: Answer },
    RequestLost { d: u8 },
    SubmitWrites { d: u8, answer: Answer, lost: bool, to: RefundStatus },
    WechatAnswersQuery { d: u8, state: Wechat },
    QueryFails { d: u8 },
    ConfirmWrites { d: u8, state: Wechat, to: RefundStatus },
    Settles { d: u8, to: OrderStatus },
    WechatMoves { row: u8, to: Wechat },
    OperatorOpens { row: u8 },
    Crash { d: u8 },
}

const KINDS: [&str; 11] = [
    "start",
    "wechat receives",
    "request lost",
    "submit writes",
    "wechat answers a query",
    "query fails",
    "confirm writes",
    "settle",
    "wechat moves",
    "operator opens a refund",
    "crash",
];

impl Action {
    fn kind(self) -> usize {
        match self {
            Action::Start { .. } => 0,
            Action::WechatReceives { .. } => 1,
            Action::RequestLost { .. } => 2,
            Action::SubmitWrites { .. } => 3,
            Action::WechatAnswersQuery { .. } => 4,
            Action::QueryFails { .. } => 5,
            Action::ConfirmWrites { .. } => 6,
            Action::Settles { .. } => 7,
            Action::WechatMoves { .. } => 8,
            Action::OperatorOpens { .. } => 9,
            Action::Crash { .. } => 10,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Start { d, row, caller, seen } => write!(f, "d{d} ({caller:?}) reads R{} as {seen}", row + 1),
            Action::WechatReceives { d, row, to, answer } => {
                write!(f, "WeChat receives d{d}'s refund request for R{}: {to:?}, answers {answer:?}", row + 1)
            }
            Action::RequestLost { d } => write!(f, "d{d}'s refund request is lost"),
            Action::SubmitWrites { d, answer, lost, to } => {
                let how = if lost { " (the answer was lost: timeout)" } else { "" };
                write!(f, "d{d} gets {answer:?}{how}: the row is {to}")
            }
            Action::WechatAnswersQuery { d, state } => write!(f, "WeChat answers d{d}'s queryrefund: {state:?}"),
            Action::QueryFails { d } => write!(f, "d{d}'s queryrefund fails (nothing written)"),
            Action::ConfirmWrites { d, state, to } => write!(f, "d{d} acts on {state:?}: the row is {to}"),
            Action::Settles { d, to } => write!(f, "d{d} settles the order: {to}"),
            Action::WechatMoves { row, to } => write!(f, "WeChat moves R{}: {to:?}", row + 1),
            Action::OperatorOpens { row } => write!(f, "an operator opens refund R{} for what is left", row + 1),
            Action::Crash { d } => write!(f, "d{d} crashes"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order={} requested={}", self.status, self.requested)?;
        for (i, row) in self.rows.iter().enumerate() {
            if let Some(row) = row {
                let counted = if row.counted { "counted" } else { "released" };
                write!(
                    f,
                    "\n    R{}: {} ({} attempts, {counted}), WeChat {:?}",
                    i + 1,
                    row.status,
                    row.attempts,
                    self.wechat[i]
                )?;
            }
        }
        for (d, driver) in self.drivers.iter().enumerate() {
            write!(f, "\n    d{d}: {driver:?}")?;
        }
        write!(
            f,
            "\n    left: {} transients, {} refusals, {} notices, {} retries, {} crashes",
            self.transients_left, self.refusals_left, self.notices_left, self.retries_left, self.crashes_left
        )
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
        let opened = Row { status: RefundStatus::Pending, attempts: 0, refusals: 0, counted: true };
        State {
            status: OrderStatus::Refunding,
            requested: 1,
            rows: [Some(opened), None],
            wechat: [Wechat::Absent; ROWS],
            drivers: [Driver::Idle; DRIVERS],
            transients_left: b.transients,
            refusals_left: b.refusals,
            notices_left: b.notices,
            retries_left: b.retries,
            crashes_left: b.crashes,
        }
    }

    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        for d in 0..DRIVERS {
            self.driver(s, d, out);
        }
        self.wechat(s, out);
        self.operator_opens(s, out);
    }

    fn done(&self, s: &State) -> bool {
        done(s)
    }

    fn outcomes(&self) -> &'static [Outcome<State>] {
        &OUTCOMES
    }

    fn describe(&self) -> String {
        format!("refunds {:?}", self.bounds)
    }

    fn switched_off(&self) -> Vec<&'static str> {
        // Only a mutant leaves anything to refund.
        let opens = self.rules.release_failed || self.rules.retry_new_number;
        if opens {
            vec![]
        } else {
            vec!["operator opens a refund"]
        }
    }
}

impl Model {
    fn driver(&self, s: &State, d: usize, out: &mut Vec<(Action, State)>) {
        let id = d as u8;
        match s.drivers[d] {
            Driver::Idle => self.start(s, d, out),
            Driver::Submit { row, seen_attempts, budget, answer: None } => {
                let r = usize::from(row);
                let mut outcomes = vec![];
                match s.wechat[r] {
                    Wechat::Absent => {
                        outcomes.push((Wechat::Processing, Answer::Accepted));
                        if s.transients_left > 0 {
                            // SYSTEMERROR may or may not have created the refund.
                            outcomes.push((Wechat::Processing, Answer::Transient));
                            outcomes.push((Wechat::Absent, Answer::Transient));
                        }
                        if s.refusals_left > 0 {
                            outcomes.push((Wechat::Absent, Answer::Refused));
                        }
                    }
                    Wechat::Closed => outcomes.push((Wechat::Processing, Answer::Accepted)),
                    held => outcomes.push((held, Answer::Accepted)),
                }
                for (to, answer) in outcomes {
                    let mut t = *s;
                    t.wechat[r] = to;
                    match answer {
                        Answer::Transient => t.transients_left -= 1,
                        Answer::Refused => t.refusals_left -= 1,
                        Answer::Accepted => {}
                    }
                    t.drivers[d] = Driver::Submit { row, seen_attempts, budget, answer: Some(answer) };
                    out.push((Action::WechatReceives { d: id, row, to, answer }, t));
                }
                if s.transients_left > 0 {
                    let mut t = *s;
                    t.transients_left -= 1;
                    t.drivers[d] = Driver::Submit { row, seen_attempts, budget, answer: Some(Answer::Transient) };
                    out.push((Action::RequestLost { d: id }, t));
                }
                self.crash(s, d, out);
            }
            Driver::Submit { row, seen_attempts, budget, answer: Some(answer) } => {
                out.push(self.submit_writes(s, d, row, seen_attempts, budget, answer, false));
                if answer != Answer::Transient && s.transients_left > 0 {
                    let mut t = *s;
                    t.transients_left -= 1;
                    let (action, u) = self.submit_writes(&t, d, row, seen_attempts, budget, Answer::Transient, true);
                    out.push((action, u));
                }
                self.crash(s, d, out);
            }
            Driver::Confirm { row, seen, caller, state: None } => {
                let mut t = *s;
                t.drivers[d] = Driver::Confirm { row, seen, caller, state: Some(s.wechat[usize::from(row)]) };
                out.push((Action::WechatAnswersQuery { d: id, state: s.wechat[usize::from(row)] }, t));
                let mut t = *s;
                t.drivers[d] = Driver::Idle;
                out.push((Action::QueryFails { d: id }, t));
                self.crash(s, d, out);
            }
            Driver::Confirm { row, seen, caller, state: Some(state) } => {
                out.push(self.confirm_writes(s, d, row, seen, caller, state));
                self.crash(s, d, out);
            }
            Driver::Settle => {
                // `settle_order`: refunding, every refund success, guarded on `refund_seq`.
                let mut t = *s;
                t.drivers[d] = Driver::Idle;
                let all_done = s.rows.iter().flatten().all(|r| r.status == RefundStatus::Success);
                let to = if all_done { fire(s.status, OrderEvent::RefundSucceeded) } else { None };
                if let Some(to) = to {
                    t.status = to;
                }
                out.push((Action::Settles { d: id, to: t.status }, t));
                if !self.bounds.settle_with_success {
                    self.crash(s, d, out);
                }
            }
        }
    }

    /// A driver starts on a row: the sweep on every row still to be driven (`due_refunds`), the
    /// notification on the open ones, the operator's retry on a failed one.
    fn start(&self, s: &State, d: usize, out: &mut Vec<(Action, State)>) {
        // `settle_stranded_orders`: an order still refunding whose refunds are all settled.
        let all_settled = s.rows.iter().flatten().all(|r| r.status == RefundStatus::Success);
        if !self.rules.no_stranded_sweep && s.status == OrderStatus::Refunding && all_settled {
            let mut t = *s;
            t.drivers[d] = Driver::Settle;
            out.push((Action::Start { d: d as u8, row: 0, caller: Caller::Sweep, seen: RefundStatus::Success }, t));
        }
        for (r, row) in s.rows.iter().enumerate() {
            let Some(row) = row else { continue };
            let mut callers = vec![];
            match row.status {
                RefundStatus::Success => {}
                RefundStatus::Failed if self.rules.no_requery => {}
                _ => callers.push(Caller::Sweep),
            }
            // WeChat notifies once the refund is settled at its end.
            let settled = matches!(s.wechat[r], Wechat::Succeeded | Wechat::Closed | Wechat::Abnormal);
            if s.notices_left > 0 && settled && row.status.is_open() {
                callers.push(Caller::Notification);
            }
            if s.retries_left > 0 && row.status == RefundStatus::Failed {
                callers.push(Caller::Operator);
            }
            for caller in callers {
                let mut t = *s;
                match caller {
                    Caller::Notification => t.notices_left -= 1,
                    Caller::Operator => t.retries_left -= 1,
                    Caller::Sweep => {}
                }
                let row_id = r as u8;
                t.drivers[d] = match (caller, row.status) {
                    (Caller::Sweep, RefundStatus::Pending) => {
                        Driver::Submit { row: row_id, seen_attempts: row.attempts, budget: MAX_ATTEMPTS, answer: None }
                    }
                    _ => Driver::Confirm { row: row_id, seen: row.status, caller, state: None },
                };
                out.push((Action::Start { d: d as u8, row: row_id, caller, seen: row.status }, t));
            }
        }
    }

    /// `submit_refund`'s write: acceptance wins over `pending` and `failed`; an error counts an attempt
    /// under `status = pending AND attempts = <read>`, and fails the refund only if permanent and the
    /// budget is spent.
    #[allow(clippy::too_many_arguments)]
    fn submit_writes(
        &self,
        s: &State,
        d: usize,
        row: u8,
        seen_attempts: u8,
        budget: u8,
        answer: Answer,
        lost: bool,
    ) -> (Action, State) {
        let r = usize::from(row);
        let mut t = *s;
        t.drivers[d] = Driver::Idle;
        let mut current = s.rows[r].expect("a driven row exists");
        match answer {
            Answer::Accepted => {
                if matches!(current.status, RefundStatus::Pending | RefundStatus::Failed) {
                    current.status = RefundStatus::Submitted;
                    if self.rules.success_on_acceptance {
                        current.status = RefundStatus::Success;
                        t.drivers[d] = Driver::Settle;
                    }
                }
                if current.status == RefundStatus::Submitted {
                    t.drivers[d] =
                        Driver::Confirm { row, seen: RefundStatus::Submitted, caller: Caller::Sweep, state: None };
                }
            }
            Answer::Transient | Answer::Refused => {
                if current.status == RefundStatus::Pending && current.attempts == seen_attempts {
                    current.attempts += 1;
                    if answer == Answer::Refused {
                        current.refusals += 1;
                    }
                    if answer == Answer::Refused && current.refusals >= budget {
                        self.fail(&mut t, &mut current);
                    }
                }
            }
        }
        t.rows[r] = Some(current);
        (Action::SubmitWrites { d: d as u8, answer, lost, to: current.status }, t)
    }

    /// A refund row becomes `failed` (and, for the mutant, gives its amount back).
    fn fail(&self, t: &mut State, row: &mut Row) {
        row.status = RefundStatus::Failed;
        if self.rules.release_failed && row.counted {
            row.counted = false;
            t.requested -= 1;
        }
    }

    /// `confirm_refund`'s write for WeChat's answer, then what the caller does next.
    fn confirm_writes(
        &self,
        s: &State,
        d: usize,
        row: u8,
        seen: RefundStatus,
        caller: Caller,
        state: Wechat,
    ) -> (Action, State) {
        let r = usize::from(row);
        let mut t = *s;
        t.drivers[d] = Driver::Idle;
        let mut current = s.rows[r].expect("a confirmed row exists");
        use RefundStatus::{Failed, Pending, Submitted, Success};
        // The decision on the status read (`seen`), then the write under its guard on the status now.
        let write: Option<(&[RefundStatus], RefundStatus)> = match state {
            Wechat::Succeeded => {
                t.drivers[d] = Driver::Settle;
                Some((&[Pending, Submitted, Failed], Success))
            }
            Wechat::Processing if seen == Failed => Some((&[Failed], Submitted)),
            Wechat::Closed | Wechat::Abnormal if seen != Failed => Some((&[Pending, Submitted], Failed)),
            Wechat::Absent if seen == Submitted => Some((&[Submitted], Pending)),
            _ => None,
        };
        if let Some((guard, to)) = write {
            if guard.contains(&current.status) {
                if to == Failed {
                    self.fail(&mut t, &mut current);
                } else {
                    current.status = to;
                }
            }
        }
        // `retry_refund`: still failed after the query, so sent again under the same number, with a
        // budget of zero (one more refusal fails it at once).
        if caller == Caller::Operator && current.status == RefundStatus::Failed && t.drivers[d] == Driver::Idle {
            if self.rules.retry_new_number {
                let new = if r + 1 < ROWS && t.rows[r + 1].is_none() { Some(r + 1) } else { None };
                if let Some(new) = new {
                    // The same money under a new number: the old row's amount moves to it.
                    current.counted = false;
                    t.rows[new] = Some(Row { status: RefundStatus::Pending, attempts: 0, refusals: 0, counted: true });
                    t.drivers[d] = Driver::Submit { row: new as u8, seen_attempts: 0, budget: 0, answer: None };
                }
            } else {
                current.status = RefundStatus::Pending;
                t.drivers[d] = Driver::Submit { row, seen_attempts: current.attempts, budget: 0, answer: None };
            }
        }
        t.rows[r] = Some(current);
        (Action::ConfirmWrites { d: d as u8, state, to: current.status }, t)
    }

    fn crash(&self, s: &State, d: usize, out: &mut Vec<(Action, State)>) {
        if s.crashes_left > 0 {
            let mut t = *s;
            t.crashes_left -= 1;
            t.drivers[d] = Driver::Idle;
            out.push((Action::Crash { d: d as u8 }, t));
        }
    }

    fn wechat(&self, s: &State, out: &mut Vec<(Action, State)>) {
        for r in 0..ROWS {
            let moves: &[Wechat] = match s.wechat[r] {
                Wechat::Processing => &[Wechat::Succeeded, Wechat::Closed, Wechat::Abnormal],
                Wechat::Abnormal => &[Wechat::Succeeded],
                _ => &[],
            };
            for &to in moves {
                let mut t = *s;
                t.wechat[r] = to;
                out.push((Action::WechatMoves { row: r as u8, to }, t));
            }
        }
    }

    /// `open_refund` for what is left: only possible once some amount was given back (a mutant).
    fn operator_opens(&self, s: &State, out: &mut Vec<(Action, State)>) {
        let Some(r) = s.rows.iter().position(Option::is_none) else { return };
        if s.requested >= 1 {
            return;
        }
        if let Some(to) = fire(s.status, OrderEvent::RefundRequested(RefundScope::Whole)) {
            let mut t = *s;
            t.status = to;
            t.requested += 1;
            t.rows[r] = Some(Row { status: RefundStatus::Pending, attempts: 0, refusals: 0, counted: true });
            out.push((Action::OperatorOpens { row: r as u8 }, t));
        }
    }
}

fn fire(status: OrderStatus, event: OrderEvent) -> Option<OrderStatus> {
    status.apply(event).ok()
}

const PROPERTIES: [Property<State>; 3] = [
    ("property 1, WeChat pays back at most what was paid", paid_back_at_most_once),
    ("property 2, a refund WeChat has stays counted", performed_stays_counted),
    ("property 3, the rows tell the truth", rows_tell_the_truth),
];

fn paid_back_at_most_once(s: &State) -> Option<String> {
    let paid_back = s.wechat.iter().filter(|w| **w == Wechat::Succeeded).count();
    if paid_back > 1 {
        return Some(format!("WeChat paid back {paid_back} times a payment of 1"));
    }
    (s.requested > 1).then(|| format!("{} requested for a payment of 1", s.requested))
}

fn performed_stays_counted(s: &State) -> Option<String> {
    s.rows.iter().zip(s.wechat).enumerate().find_map(|(i, (row, wechat))| match row {
        Some(row) if wechat.has_it() && !row.counted => {
            Some(format!("WeChat has R{} ({wechat:?}) but its amount was released", i + 1))
        }
        _ => None,
    })
}

fn rows_tell_the_truth(s: &State) -> Option<String> {
    for (i, (row, wechat)) in s.rows.iter().zip(s.wechat).enumerate() {
        if let Some(row) = row {
            if row.status == RefundStatus::Success && wechat != Wechat::Succeeded {
                return Some(format!("R{} is success while WeChat has it {wechat:?}", i + 1));
            }
        }
    }
    let all_done = s.rows.iter().flatten().all(|r| r.status == RefundStatus::Success);
    (s.status == OrderStatus::Refunded && !all_done).then(|| "refunded while a refund is not success".into())
}

/// Refunded, or a failed refund WeChat does not hold, for an operator.
fn done(s: &State) -> bool {
    s.status == OrderStatus::Refunded
        || s.rows.iter().zip(s.wechat).any(|(row, wechat)| {
            row.is_some_and(|r| r.status == RefundStatus::Failed)
                && wechat != Wechat::Succeeded
                && wechat != Wechat::Processing
        })
}

const OUTCOMES: [Outcome<State>; 3] = [
    ("refunded", |s| s.status == OrderStatus::Refunded),
    ("failed for an operator after refusals", |s| {
        s.rows[0].is_some_and(|r| r.status == RefundStatus::Failed) && s.wechat[0] == Wechat::Absent
    }),
    ("failed at WeChat, for an operator", |s| {
        s.rows[0].is_some_and(|r| r.status == RefundStatus::Failed)
            && matches!(s.wechat[0], Wechat::Closed | Wechat::Abnormal)
    }),
];

const BOUNDS: Bounds =
    Bounds { transients: 1, refusals: 2, notices: 1, retries: 1, crashes: 1, settle_with_success: false };

fn run(rules: Rules, bounds: Bounds) -> Report {
    run_for(rules, bounds, &PROPERTIES)
}

fn run_for(rules: Rules, bounds: Bounds, properties: &[Property<State>]) -> Report {
    check(&Model { rules, bounds }, properties)
}

#[test]
fn the_real_refund_rules_hold() {
    run(Rules::default(), BOUNDS).assert_holds();
}

/// Giving a failed refund's amount back lets a second refund number go out for money WeChat may
/// still pay back under the first (an abnormal refund settled by hand).
#[test]
fn releasing_a_failed_refunds_amount_is_caught() {
    let violation = run(Rules { release_failed: true, ..Rules::default() }, BOUNDS).assert_caught("property");
    assert!(violation.property.starts_with("property 1") || violation.property.starts_with("property 2"));
}

/// The operator's retry must reuse the `out_refund_no`: under a new one WeChat pays back twice.
#[test]
fn retrying_a_refund_under_a_new_number_is_caught() {
    let rules = Rules { retry_new_number: true, ..Rules::default() };
    let violation = run(rules, BOUNDS).assert_caught("property");
    assert!(violation.property.starts_with("property 1") || violation.property.starts_with("property 2"));
    // Where it leads: the money paid back twice.
    run_for(rules, BOUNDS, &PROPERTIES[..1]).assert_caught("property 1");
}

/// An accepted refund is not a refunded one: WeChat may still close it.
#[test]
fn counting_an_accepted_refund_as_succeeded_is_caught() {
    run(Rules { success_on_acceptance: true, ..Rules::default() }, BOUNDS).assert_caught("property 3");
}

/// A failed refund WeChat performed after all is only found by asking again.
#[test]
fn never_requerying_failed_refunds_is_caught() {
    let bounds = Bounds { crashes: 0, retries: 0, ..BOUNDS };
    let stuck = run(Rules { no_requery: true, ..Rules::default() }, bounds).assert_stuck();
    assert!(stuck.state.contains("failed") && stuck.state.contains("WeChat Succeeded"), "{stuck}");
}

/// `confirm_refund` writes the refund's success, then `settle_order` moves the order; a process that
/// stops (or a database error) between the two would leave the order `refunding` for good, because
/// `due_refunds` and the notification skip `success` refunds. Reconciliation's stranded-order sweep is
/// what settles it: without it, the checker finds the dead end.
#[test]
fn without_the_stranded_order_sweep_an_order_stays_refunding() {
    let bounds = Bounds { transients: 0, refusals: 0, notices: 0, retries: 0, crashes: 1, settle_with_success: false };
    let stuck = run(Rules { no_stranded_sweep: true, ..Rules::default() }, bounds).assert_stuck();
    assert!(stuck.state.contains("order=refunding") && stuck.state.contains("R1: success"), "{stuck}");
}
