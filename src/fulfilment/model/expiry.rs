//! The expiry model: one unpaid order, the buyer asking to pay, the payer, WeChat's trade, payment
//! notifications and reconciliation's expiry (`services/payments.rs`, `jobs/reconcile.rs`).
//!
//! # Modelled
//! - WeChat's trade under the order number: no prepay yet, open (payable by whoever holds the
//!   `wx.requestPayment` parameters), paid, or closed.
//! - The order row: status, `prepay_at` (a version: each store is a new value), and the clock passing
//!   the order's expiry.
//! - `create_payment`, called twice (two taps on "pay", or two replicas): it reads the order (unpaid,
//!   not expired by its own clock, which may lag behind reconciliation's within the skew), hands out
//!   the stored prepay if there is one, else calls `unified_order` (WeChat opens the trade, or refuses a
//!   closed or paid one) and stores the prepay under `status = unpaid`; the parameters reach the payer
//!   only after that store.
//! - Reconciliation on two replicas, any number of passes. From its snapshot: without a prepay, an
//!   expired order is closed under `prepay_at IS NULL`; with one, it asks `queryorder` (a payment found
//!   is recorded) and, if expired, calls `closeorder` (closed, already closed or not found mean it
//!   cannot be paid; `ORDERPAID` or an error leave the order) and closes it under `prepay_at = <seen>`.
//!   Every step is separate, so prepay stores, payments and the other replica interleave with it.
//! - The payer pays an open trade it holds parameters for; its notification (once) is confirmed with
//!   `queryorder` and recorded: `unpaid → paid`, or `closed → refunding` with the whole refund.
//!
//! # Trusted, not modelled
//! The payer pays only with parameters the service handed out; WeChat answers `queryorder`,
//! `unified_order` and `closeorder` per its documentation (a closed trade takes no payment); each
//! conditional `UPDATE` is atomic. What happens after `paid` or `refunding` is the other models'.
//!
//! # Bounds
//! Two `create_payment` calls, two reconciliation replicas, one payment notification, clocks that
//! may disagree on the expiry.
//!
//! # Properties
//! 1. A closed order cannot be paid: WeChat's trade is closed, or no payer holds the parameters of an
//!    open one, and it is never paid (so a late payment, the refund path, never arises here).
//! 2. The status tells the truth: `paid` or `refunding` only for a payment WeChat has.
//!
//! Liveness: from every state the order can end paid and recorded, refunded, or closed and unpayable.
//!
//! # Mutants
//! Closing without WeChat's confirmation (finding 7), a close not guarded on the prepay it saw, and a
//! prepay stored on an order that is no longer unpaid.

use std::fmt;

use super::{check, Outcome, Property, Report, Spec};
use crate::domain::{OrderEvent, OrderStatus};

const CREATORS: usize = 2;
const RECONCILERS: usize = 2;

#[derive(Clone, Copy, Default)]
struct Rules {
    /// Mutant: an expired order WeChat reports unpaid is closed without `closeorder`.
    close_without_closeorder: bool,
    /// Mutant: the close is guarded on the status only, not on the prepay the decision saw.
    close_ignores_prepay: bool,
    /// Mutant: the prepay is stored whatever the order's status.
    store_ignores_status: bool,
}

#[derive(Clone, Copy, Debug)]
struct Bounds {
    notices: u8,
    /// `create_payment`'s clock may still say "not expired" after reconciliation's said "expired".
    skew: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Trade {
    NoPrepay,
    Open,
    Paid,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Creator {
    Unused,
    /// Read the order with a stored prepay: hands it out.
    Reusing,
    /// `unified_order` on its way.
    Calling,
    /// WeChat opened the trade; the prepay is to be stored.
    Storing,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reconciler {
    Idle,
    /// Snapshot without a prepay, expired: the close under `prepay_at IS NULL` is to come.
    CloseWithoutPrepay,
    /// `queryorder` on its way, with the snapshot's prepay and expiry.
    Query {
        prepay: u8,
        expired: bool,
    },
    /// WeChat reported the payment: it is to be recorded.
    Record,
    /// `closeorder` on its way.
    CloseOrder {
        prepay: u8,
    },
    /// WeChat confirmed the trade cannot be paid: the close under `prepay_at = <seen>` is to come.
    Close {
        prepay: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    status: OrderStatus,
    /// `prepay_at`: 0 is NULL, each store a new value.
    prepay: u8,
    expired: bool,
    trade: Trade,
    /// The payer holds the parameters of WeChat's prepay.
    payer_can_pay: bool,
    notices_left: u8,
    creators: [Creator; CREATORS],
    reconcilers: [Reconciler; RECONCILERS],
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Expire,
    CreateReads { c: u8, reuse: bool },
    CreateHandsOut { c: u8 },
    UnifiedOrder { c: u8, opened: bool },
    StorePrepay { c: u8, stored: bool },
    Snapshot { r: u8, prepay: u8, expired: bool },
    QueryOrder { r: u8, trade: Trade },
    RecordPayment { to: Option<OrderStatus> },
    CloseOrder { r: u8, trade: Trade, confirmed: bool },
    CloseOrderFails { r: u8 },
    Close { r: u8, closed: bool },
    Pay,
    Notify,
}

const KINDS: [&str; 13] = [
    "expire",
    "create reads",
    "create hands out",
    "unified order",
    "store prepay",
    "snapshot",
    "query order",
    "record payment",
    "close order",
    "close order fails",
    "close",
    "pay",
    "notify",
];

impl Action {
    fn kind(self) -> usize {
        match self {
            Action::Expire => 0,
            Action::CreateReads { .. } => 1,
            Action::CreateHandsOut { .. } => 2,
            Action::UnifiedOrder { .. } => 3,
            Action::StorePrepay { .. } => 4,
            Action::Snapshot { .. } => 5,
            Action::QueryOrder { .. } => 6,
            Action::RecordPayment { .. } => 7,
            Action::CloseOrder { .. } => 8,
            Action::CloseOrderFails { .. } => 9,
            Action::Close { .. } => 10,
            Action::Pay => 11,
            Action::Notify => 12,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Expire => write!(f, "the order's expiry passes"),
            Action::CreateReads { c, reuse: true } => {
                write!(f, "create_payment c{c} reads the unpaid order: a stored prepay")
            }
            Action::CreateReads { c, reuse: false } => {
                write!(f, "create_payment c{c} reads the unpaid order: calls unified_order")
            }
            Action::CreateHandsOut { c } => write!(f, "c{c} hands the stored prepay's parameters to the payer"),
            Action::UnifiedOrder { c, opened: true } => write!(f, "WeChat opens the trade for c{c}"),
            Action::UnifiedOrder { c, opened: false } => write!(f, "WeChat refuses c{c}'s unified_order"),
            Action::StorePrepay { c, stored: true } => {
                write!(f, "c{c} stores the prepay and hands the parameters to the payer")
            }
            Action::StorePrepay { c, stored: false } => {
                write!(f, "c{c}'s prepay store matches nothing (the order is not unpaid)")
            }
            Action::Snapshot { r, prepay, expired } => {
                write!(f, "reconciler r{r} reads the unpaid order: prepay {prepay}, expired = {expired}")
            }
            Action::QueryOrder { r, trade } => write!(f, "WeChat answers r{r}'s queryorder: {trade:?}"),
            Action::RecordPayment { to: Some(to) } => write!(f, "the confirmed payment is recorded: -> {to}"),
            Action::RecordPayment { to: None } => write!(f, "the confirmed payment is already recorded"),
            Action::CloseOrder { r, trade, confirmed } => {
                write!(f, "WeChat answers r{r}'s closeorder: trade {trade:?}, cannot be paid = {confirmed}")
            }
            Action::CloseOrderFails { r } => write!(f, "r{r}'s closeorder fails (within 5 minutes, or an outage)"),
            Action::Close { r, closed: true } => write!(f, "r{r} closes the order: -> closed"),
            Action::Close { r, closed: false } => write!(f, "r{r}'s close matches nothing"),
            Action::Pay => write!(f, "the payer pays at WeChat"),
            Action::Notify => write!(f, "the payment notification lands and is confirmed with queryorder"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status={} prepay={} expired={} trade={:?} payer can pay={} notices left={}\n    creators {:?}\n    reconcilers {:?}",
            self.status, self.prepay, self.expired, self.trade, self.payer_can_pay, self.notices_left, self.creators, self.reconcilers
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
        State {
            status: OrderStatus::Unpaid,
            prepay: 0,
            expired: false,
            trade: Trade::NoPrepay,
            payer_can_pay: false,
            notices_left: 0,
            creators: [Creator::Unused; CREATORS],
            reconcilers: [Reconciler::Idle; RECONCILERS],
        }
    }

    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        if !s.expired {
            let mut t = *s;
            t.expired = true;
            out.push((Action::Expire, t));
        }
        for c in 0..CREATORS {
            self.creator(s, c, out);
        }
        for r in 0..RECONCILERS {
            self.reconciler(s, r, out);
        }
        if s.payer_can_pay && s.trade == Trade::Open {
            let mut t = *s;
            t.trade = Trade::Paid;
            t.notices_left = self.bounds.notices;
            out.push((Action::Pay, t));
        }
        if s.notices_left > 0 {
            // The callback asks `queryorder`: WeChat reports the payment.
            let mut t = *s;
            t.notices_left -= 1;
            record(&mut t);
            out.push((Action::Notify, t));
        }
    }

    fn done(&self, s: &State) -> bool {
        match s.status {
            OrderStatus::Paid | OrderStatus::Refunding => s.trade == Trade::Paid,
            OrderStatus::Closed => unpayable(s),
            _ => false,
        }
    }

    fn outcomes(&self) -> &'static [Outcome<State>] {
        &OUTCOMES
    }

    fn describe(&self) -> String {
        format!("expiry {:?}", self.bounds)
    }
}

/// A closed trade, or an open one no payer holds the parameters of (and never a paid one).
fn unpayable(s: &State) -> bool {
    match s.trade {
        Trade::NoPrepay | Trade::Closed => true,
        Trade::Open => !s.payer_can_pay,
        Trade::Paid => false,
    }
}

/// `confirm_payment` for a payment WeChat confirmed: `unpaid → paid`, `closed → refunding`.
fn record(t: &mut State) -> Option<OrderStatus> {
    let to = t.status.apply(OrderEvent::PaymentConfirmed).ok();
    if let Some(to) = to {
        t.status = to;
    }
    to
}

impl Model {
    fn creator(&self, s: &State, c: usize, out: &mut Vec<(Action, State)>) {
        let id = c as u8;
        let mut t = *s;
        match s.creators[c] {
            Creator::Unused => {
                // Unpaid, and not expired by this replica's clock.
                if s.status != OrderStatus::Unpaid || (s.expired && !self.bounds.skew) {
                    return;
                }
                let reuse = s.prepay > 0;
                t.creators[c] = if reuse { Creator::Reusing } else { Creator::Calling };
                out.push((Action::CreateReads { c: id, reuse }, t));
            }
            Creator::Reusing => {
                t.creators[c] = Creator::Done;
                t.payer_can_pay = true;
                out.push((Action::CreateHandsOut { c: id }, t));
            }
            Creator::Calling => {
                let opened = matches!(s.trade, Trade::NoPrepay | Trade::Open);
                if opened {
                    t.trade = Trade::Open;
                    t.creators[c] = Creator::Storing;
                } else {
                    t.creators[c] = Creator::Done;
                }
                out.push((Action::UnifiedOrder { c: id, opened }, t));
            }
            Creator::Storing => {
                let stored = s.status == OrderStatus::Unpaid || self.rules.store_ignores_status;
                t.creators[c] = Creator::Done;
                if stored {
                    t.prepay = s.prepay + 1;
                    t.payer_can_pay = true;
                }
                out.push((Action::StorePrepay { c: id, stored }, t));
            }
            Creator::Done => {}
        }
    }

    fn reconciler(&self, s: &State, r: usize, out: &mut Vec<(Action, State)>) {
        let id = r as u8;
        let mut t = *s;
        match s.reconcilers[r] {
            Reconciler::Idle => {
                if s.status != OrderStatus::Unpaid || (s.prepay == 0 && !s.expired) {
                    return;
                }
                t.reconcilers[r] = if s.prepay == 0 {
                    Reconciler::CloseWithoutPrepay
                } else {
                    Reconciler::Query { prepay: s.prepay, expired: s.expired }
                };
                out.push((Action::Snapshot { r: id, prepay: s.prepay, expired: s.expired }, t));
            }
            Reconciler::CloseWithoutPrepay => out.push(self.close(s, r, 0)),
            Reconciler::Query { prepay, expired } => {
                t.reconcilers[r] = match s.trade {
                    Trade::Paid => Reconciler::Record,
                    _ if !expired => Reconciler::Idle,
                    _ if self.rules.close_without_closeorder => Reconciler::Close { prepay },
                    _ => Reconciler::CloseOrder { prepay },
                };
                out.push((Action::QueryOrder { r: id, trade: s.trade }, t));
            }
            Reconciler::Record => {
                t.reconcilers[r] = Reconciler::Idle;
                let to = record(&mut t);
                out.push((Action::RecordPayment { to }, t));
            }
            Reconciler::CloseOrder { prepay } => {
                // Closed, already closed, or not found: it cannot be paid; `ORDERPAID` leaves it.
                let confirmed = s.trade != Trade::Paid;
                if confirmed {
                    t.trade = if s.trade == Trade::NoPrepay { Trade::NoPrepay } else { Trade::Closed };
                    t.reconcilers[r] = Reconciler::Close { prepay };
                } else {
                    t.reconcilers[r] = Reconciler::Idle;
                }
                out.push((Action::CloseOrder { r: id, trade: t.trade, confirmed }, t));
                let mut t = *s;
                t.reconcilers[r] = Reconciler::Idle;
                out.push((Action::CloseOrderFails { r: id }, t));
            }
            Reconciler::Close { prepay } => out.push(self.close(s, r, prepay)),
        }
    }

    /// `close`: `unpaid → closed` under the prepay the decision saw.
    fn close(&self, s: &State, r: usize, prepay: u8) -> (Action, State) {
        let mut t = *s;
        t.reconcilers[r] = Reconciler::Idle;
        let guard = s.prepay == prepay || self.rules.close_ignores_prepay;
        let closed = match s.status.apply(OrderEvent::Expired) {
            Ok(to) if s.status == OrderStatus::Unpaid && guard => {
                t.status = to;
                true
            }
            _ => false,
        };
        (Action::Close { r: r as u8, closed }, t)
    }
}

const PROPERTIES: [Property<State>; 2] = [
    ("property 1, a closed order cannot be paid", |s| {
        (s.status == OrderStatus::Closed && !unpayable(s))
            .then(|| format!("closed while WeChat's trade is {:?} (payer can pay = {})", s.trade, s.payer_can_pay))
    }),
    ("property 2, the status tells the truth", |s| {
        (matches!(s.status, OrderStatus::Paid | OrderStatus::Refunding) && s.trade != Trade::Paid)
            .then(|| format!("{} while WeChat's trade is {:?}", s.status, s.trade))
    }),
];

const OUTCOMES: [Outcome<State>; 4] = [
    ("paid and recorded", |s| s.status == OrderStatus::Paid),
    ("closed before any prepay", |s| s.status == OrderStatus::Closed && s.trade == Trade::NoPrepay),
    ("closed after closeorder", |s| s.status == OrderStatus::Closed && s.trade == Trade::Closed),
    ("closed beside an open trade nobody can pay", |s| s.status == OrderStatus::Closed && s.trade == Trade::Open),
];

const BOUNDS: Bounds = Bounds { notices: 1, skew: true };

fn run(rules: Rules) -> Report {
    check(&Model { rules, bounds: BOUNDS }, &PROPERTIES)
}

#[test]
fn the_real_expiry_rules_hold() {
    run(Rules::default()).assert_holds();
}

/// Finding 7: closing an expired order WeChat reports unpaid without asking `closeorder` first.
#[test]
fn closing_without_closeorder_is_caught() {
    run(Rules { close_without_closeorder: true, ..Rules::default() }).assert_caught("property 1");
}

/// The close must be guarded on the prepay its decision saw: a prepay stored meanwhile wins.
#[test]
fn a_close_not_guarded_on_the_prepay_is_caught() {
    run(Rules { close_ignores_prepay: true, ..Rules::default() }).assert_caught("property 1");
}

/// The prepay store must require `unpaid`: a close that won must not be followed by a payable prepay.
#[test]
fn storing_a_prepay_on_a_closed_order_is_caught() {
    run(Rules { store_ignores_status: true, ..Rules::default() }).assert_caught("property 1");
}
