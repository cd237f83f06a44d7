//! Exhaustive model checks of the order protocol, one order at a time. Each submodule is one model,
//! exhaustive within its own bounds, and documents what it models, what it trusts and which mutants
//! show that its properties can fail:
//! - [`fulfilment`]: payment, claims and leases, carrier calls, crashes, shutdown, stale attempts,
//!   operator actions, and the order's refund as one step per WeChat answer;
//! - [`refunds`]: one opened refund driven by concurrent sweeps, notifications and operator retries
//!   against WeChat's refund semantics (`services/refunds.rs`);
//! - [`expiry`]: payment creation, reconciliation's query and `closeorder`, and the payer
//!   (`services/payments.rs`, `jobs/reconcile.rs`);
//! - [`group_commit`]: writes that share a commit, their answers, failures, panics and a crash
//!   (`group_commit.rs`).
//!
//! The explorer here is shared: a breadth-first search over every reachable state that checks the
//! safety properties in each state on discovery (so a violation's trace is a shortest one), then a
//! backward search from the done states for liveness (from every reachable state some done state is
//! reachable), and a vacuity check (every kind of action fires, every outcome is reached).

mod expiry;
mod fulfilment;
mod group_commit;
mod refunds;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// A safety property: its name, and what is wrong with a state that breaks it.
type Property<S> = (&'static str, fn(&S) -> Option<String>);

/// A way the order can finish, and which states show it (each must be reached).
type Outcome<S> = (&'static str, fn(&S) -> bool);

/// A model the explorer can search.
trait Spec {
    /// Small and `Copy`: a state is its own key in the set of states seen.
    type State: Copy + Eq + Hash + fmt::Display + 'static;
    type Action: Copy + fmt::Display;

    /// The names of the kinds of action; every kind must fire.
    fn kinds(&self) -> &'static [&'static str];
    fn kind(&self, action: &Self::Action) -> usize;
    fn initial(&self) -> Self::State;
    /// Every enabled action and the state it leads to.
    fn successors(&self, s: &Self::State, out: &mut Vec<(Self::Action, Self::State)>);
    /// The order needs nothing more.
    fn done(&self, s: &Self::State) -> bool;
    fn outcomes(&self) -> &'static [Outcome<Self::State>];
    /// A state past the model's own limits (attempts that never end), as a violation.
    fn runaway(&self, _s: &Self::State) -> Option<(&'static str, String)> {
        None
    }
    /// The bounds, as printed in a report.
    fn describe(&self) -> String;
    /// Kinds of action these bounds switch off (not counted as vacuous).
    fn switched_off(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

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
    bounds: String,
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
            return write!(f, "{}: stopped after {states} states, depth {depth}\n{violation}", self.bounds);
        }
        write!(
            f,
            "{}: {} states, {} transitions, depth {}, {} dead ends, {} states that cannot finish",
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

impl Report {
    /// The real rules hold: no violation, no dead end, every state can finish, nothing vacuous.
    fn assert_holds(&self) {
        eprintln!("{self}");
        assert!(self.violation.is_none(), "the real rules break a safety property");
        assert_eq!(self.dead_ends, 0, "the real rules reach a dead end");
        assert_eq!(self.stuck, 0, "the real rules reach a state from which the order cannot finish");
        assert!(self.unfired.is_empty(), "some actions never fired: the model is partly vacuous");
        assert!(self.unreached.is_empty(), "some outcomes are never reached: the model is partly vacuous");
    }

    /// A mutant breaks the property named `expected` (a prefix), and the report shows its trace.
    fn assert_caught(self, expected: &str) -> Counterexample {
        eprintln!("{self}");
        let violation = self.violation.expect("the mutant breaks a safety property");
        assert!(violation.property.starts_with(expected), "{} is not {expected}", violation.property);
        violation
    }

    /// A mutant leaves some order unable to finish, and the report shows a trace to such a state.
    fn assert_stuck(self) -> Counterexample {
        eprintln!("{self}");
        assert!(self.violation.is_none(), "the mutant should break liveness, not safety");
        self.stuck_example.expect("the mutant leaves an order that cannot finish")
    }
}

/// Breadth-first search over every reachable state, stopping at the first safety violation (so its
/// trace is a shortest one), then a backward search from the done states for liveness.
fn check<M: Spec>(model: &M, properties: &[Property<M::State>]) -> Report {
    let violation = |s: &M::State| -> Option<(&'static str, String)> {
        model.runaway(s).or_else(|| properties.iter().find_map(|(name, property)| property(s).map(|d| (*name, d))))
    };
    let initial = model.initial();
    let mut ids: HashMap<M::State, u32> = HashMap::from([(initial, 0)]);
    let mut states = vec![initial];
    let mut parents: Vec<Option<(u32, M::Action)>> = vec![None];
    let mut depths: Vec<u16> = vec![0];
    let mut edges: Vec<(u32, u32)> = Vec::new();
    let mut fired = vec![false; model.kinds().len()];
    let mut report = Report {
        bounds: model.describe(),
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
    if let Some((property, detail)) = violation(&initial) {
        report.violation = Some(Counterexample { property, detail, trace: vec![], state: initial.to_string() });
    }
    let mut successors = Vec::new();
    let mut next = 0;
    'search: while next < states.len() && report.violation.is_none() {
        let s = states[next];
        successors.clear();
        model.successors(&s, &mut successors);
        if successors.is_empty() && !model.done(&s) {
            report.dead_ends += 1;
        }
        for &(action, t) in &successors {
            fired[model.kind(&action)] = true;
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
                    if let Some((property, detail)) = violation(&t) {
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
    let off = model.switched_off();
    report.unfired = model
        .kinds()
        .iter()
        .zip(fired)
        .filter(|(kind, fired)| !fired && !off.contains(kind))
        .map(|(kind, _)| *kind)
        .collect();
    report.unreached = model
        .outcomes()
        .iter()
        .filter(|(_, reached)| !states.iter().any(reached))
        .map(|(outcome, _)| *outcome)
        .collect();
    let can_finish = can_finish(model, &states, &edges);
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
fn can_finish<M: Spec>(model: &M, states: &[M::State], edges: &[(u32, u32)]) -> Vec<bool> {
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
    let mut reached: Vec<bool> = states.iter().map(|s| model.done(s)).collect();
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

fn trace_to<A: fmt::Display>(parents: &[Option<(u32, A)>], mut id: u32) -> Vec<String> {
    let mut trace = Vec::new();
    while let Some((parent, action)) = &parents[id as usize] {
        trace.push(action.to_string());
        id = *parent;
    }
    trace.reverse();
    trace
}
