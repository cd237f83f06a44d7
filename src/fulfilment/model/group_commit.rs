//! The group-commit model: writes queued to one writer that commits them together
//! (`group_commit.rs`).
//!
//! # Modelled
//! - Three writes, each sent by its caller once, in any order and at any time.
//! - The writer takes any non-empty set of the queued writes, at most [`MAX_BATCH`] (the real one
//!   takes them in queue order: a subset of what this allows). A batch of one runs alone, or together
//!   when the writer holds a session (an open transaction kept between batches on a server).
//! - Together: the writes run one after the other in one transaction; a run is taken or refused. The
//!   first refusal rolls the transaction back; otherwise the commit succeeds or fails (and keeps
//!   nothing). After a rollback or a failed commit every write of the batch runs alone.
//! - Alone: one write in its own autocommit, taken (kept at once) or refused (nothing kept).
//! - A write may panic while the batch runs: the transaction is dropped (nothing of it kept), the
//!   results not yet kept are forgotten, and the batch is answered.
//! - Answers: each write of the batch, after the batch ended, with its result if that was kept.
//! - One crash at any point: what is committed stays, the open transaction and the queue are lost,
//!   and the callers of the writes in flight see their connection drop (their outcome unknown to them).
//!
//! # Trusted, not modelled
//! A transaction keeps all of its statements or none; a refused statement keeps nothing (SQLite rolls
//! back a failed statement); a failed `COMMIT` keeps nothing; the work itself is correct alone.
//!
//! # Properties
//! 1. An answer "done" is durable: the write is committed, once.
//! 2. No write is committed twice (the batch and its rerun alone).
//! 3. An answer "failed" kept nothing of the write.
//!
//! Liveness: every write can end answered or lost to the crash.
//!
//! # Mutants
//! Answering each write as soon as it ran in the batch, counting a failed commit as kept, running the
//! batch alone again without rolling it back, and forgetting kept results on a panic.

use std::fmt;

use super::{check, Outcome, Property, Report, Spec};

const WRITES: usize = 3;
const MAX_BATCH: u8 = 2;

#[derive(Clone, Copy, Default)]
struct Rules {
    /// Mutant: a write is answered as soon as it ran in the batch.
    answer_before_commit: bool,
    /// Mutant: a failed commit is taken as kept.
    failed_commit_kept: bool,
    /// Mutant: after a refusal the batch runs alone without the rollback (its runs are committed too).
    no_rollback: bool,
    /// Mutant: a panic forgets every result, kept or not.
    panic_forgets_kept: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Unsent,
    Queued,
    Batched,
    /// Answered: `true` is "done".
    Answered(bool),
    /// In flight at the crash: the caller saw the connection drop.
    Lost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Write {
    phase: Phase,
    /// The result of its last run: `Some(true)` taken, `Some(false)` refused.
    result: Option<bool>,
    /// The result is final (kept alone, or its shared commit returned).
    kept: bool,
    /// Its statements are in the open transaction.
    open: bool,
    /// How often it is committed.
    committed: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Writer {
    Idle,
    /// Running the batch in one transaction: the next write to run, by index order.
    Together,
    /// Each write of the batch alone.
    Alone,
    /// The batch ended: its answers are due.
    Answering,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    writes: [Write; WRITES],
    writer: Writer,
    crashed: bool,
    /// A commit kept more than one write.
    shared: bool,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Send { w: u8 },
    Take { batch: u8, together: bool },
    RunTogether { w: u8, taken: bool },
    Commit { kept: bool },
    RunAlone { w: u8, taken: bool },
    Panic,
    Answer,
    Crash,
}

const KINDS: [&str; 8] = ["send", "take", "run together", "commit", "run alone", "panic", "answer", "crash"];

impl Action {
    fn kind(self) -> usize {
        match self {
            Action::Send { .. } => 0,
            Action::Take { .. } => 1,
            Action::RunTogether { .. } => 2,
            Action::Commit { .. } => 3,
            Action::RunAlone { .. } => 4,
            Action::Panic => 5,
            Action::Answer => 6,
            Action::Crash => 7,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Send { w } => write!(f, "w{w}'s caller queues it"),
            Action::Take { batch, together: true } => write!(f, "the writer takes the batch {batch:03b} together"),
            Action::Take { batch, together: false } => write!(f, "the writer takes the batch {batch:03b} alone"),
            Action::RunTogether { w, taken } => write!(f, "w{w} runs in the transaction: taken = {taken}"),
            Action::Commit { kept: true } => write!(f, "the batch commits"),
            Action::Commit { kept: false } => write!(f, "the batch's COMMIT fails"),
            Action::RunAlone { w, taken } => write!(f, "w{w} runs alone: taken = {taken}"),
            Action::Panic => write!(f, "a write panics"),
            Action::Answer => write!(f, "the batch is answered"),
            Action::Crash => write!(f, "the process crashes"),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writer {:?}, crashed = {}", self.writer, self.crashed)?;
        for (i, w) in self.writes.iter().enumerate() {
            write!(
                f,
                "; w{i} {:?} result {:?} kept {} open {} committed {}",
                w.phase, w.result, w.kept, w.open, w.committed
            )?;
        }
        Ok(())
    }
}

struct Model {
    rules: Rules,
}

impl Model {
    fn batched(s: &State) -> impl Iterator<Item = usize> + '_ {
        (0..WRITES).filter(|&i| s.writes[i].phase == Phase::Batched)
    }

    /// The batch's transaction is rolled back: nothing in it is kept.
    fn roll_back(&self, t: &mut State) {
        for w in &mut t.writes {
            if self.rules.no_rollback && w.open {
                w.committed += 1;
            }
            w.open = false;
        }
    }
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
        let write = Write { phase: Phase::Unsent, result: None, kept: false, open: false, committed: 0 };
        State { writes: [write; WRITES], writer: Writer::Idle, crashed: false, shared: false }
    }

    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        for i in 0..WRITES {
            if s.writes[i].phase == Phase::Unsent {
                let mut t = *s;
                t.writes[i].phase = Phase::Queued;
                out.push((Action::Send { w: i as u8 }, t));
            }
        }
        if !s.crashed && s.writes.iter().any(|w| matches!(w.phase, Phase::Queued | Phase::Batched)) {
            let mut t = *s;
            for w in &mut t.writes {
                w.open = false;
                if matches!(w.phase, Phase::Queued | Phase::Batched) {
                    w.phase = Phase::Lost;
                }
            }
            t.writer = Writer::Idle;
            t.crashed = true;
            out.push((Action::Crash, t));
        }
        match s.writer {
            Writer::Idle => {
                let queued: u8 = (0..WRITES).filter(|&i| s.writes[i].phase == Phase::Queued).map(|i| 1 << i).sum();
                for batch in 1..=queued {
                    if batch & !queued != 0 || batch.count_ones() > u32::from(MAX_BATCH) {
                        continue;
                    }
                    // A batch of several runs together; one runs alone, or in the writer's session.
                    let ways: &[bool] = if batch.count_ones() == 1 { &[false, true] } else { &[true] };
                    for &together in ways {
                        let mut t = *s;
                        for i in 0..WRITES {
                            if batch & (1 << i) != 0 {
                                t.writes[i] = Write { phase: Phase::Batched, result: None, kept: false, ..t.writes[i] };
                            }
                        }
                        t.writer = if together { Writer::Together } else { Writer::Alone };
                        out.push((Action::Take { batch, together }, t));
                    }
                }
            }
            Writer::Together => {
                match Self::batched(s).find(|&i| s.writes[i].result.is_none()) {
                    Some(i) => {
                        for taken in [true, false] {
                            let mut t = *s;
                            t.writes[i].result = Some(taken);
                            if taken {
                                t.writes[i].open = true;
                                if self.rules.answer_before_commit {
                                    t.writes[i].phase = Phase::Answered(true);
                                }
                            } else {
                                self.roll_back(&mut t);
                                for j in Self::batched(s) {
                                    t.writes[j].result = None;
                                }
                                t.writer = Writer::Alone;
                            }
                            out.push((Action::RunTogether { w: i as u8, taken }, t));
                        }
                    }
                    None => {
                        let mut t = *s;
                        for w in &mut t.writes {
                            if w.open {
                                w.committed += 1;
                                w.open = false;
                                w.kept = true;
                            }
                        }
                        t.shared = t.shared || Self::batched(s).count() > 1 || self.rules.answer_before_commit;
                        t.writer = Writer::Answering;
                        out.push((Action::Commit { kept: true }, t));
                        let mut t = *s;
                        if self.rules.failed_commit_kept {
                            for w in &mut t.writes {
                                w.kept |= w.open;
                                w.open = false;
                            }
                            t.writer = Writer::Answering;
                        } else {
                            self.roll_back(&mut t);
                            for j in Self::batched(s) {
                                t.writes[j].result = None;
                            }
                            t.writer = Writer::Alone;
                        }
                        out.push((Action::Commit { kept: false }, t));
                    }
                }
                let mut t = *s;
                for w in &mut t.writes {
                    w.open = false;
                    if w.phase == Phase::Batched && (!w.kept || self.rules.panic_forgets_kept) {
                        w.result = None;
                    }
                }
                t.writer = Writer::Answering;
                out.push((Action::Panic, t));
            }
            Writer::Alone => {
                match Self::batched(s).find(|&i| !s.writes[i].kept) {
                    Some(i) => {
                        for taken in [true, false] {
                            let mut t = *s;
                            t.writes[i].result = Some(taken);
                            t.writes[i].kept = true;
                            if taken {
                                t.writes[i].committed += 1;
                            }
                            out.push((Action::RunAlone { w: i as u8, taken }, t));
                        }
                    }
                    None => {
                        let mut t = *s;
                        t.writer = Writer::Answering;
                        out.push((Action::Answer, t));
                    }
                }
                let mut t = *s;
                for w in &mut t.writes {
                    if w.phase == Phase::Batched && (!w.kept || self.rules.panic_forgets_kept) {
                        w.result = None;
                    }
                }
                t.writer = Writer::Answering;
                out.push((Action::Panic, t));
            }
            Writer::Answering => {
                let mut t = *s;
                for w in &mut t.writes {
                    if w.phase == Phase::Batched {
                        w.phase = Phase::Answered(w.result == Some(true));
                    }
                }
                t.writer = Writer::Idle;
                out.push((Action::Answer, t));
            }
        }
    }

    fn done(&self, s: &State) -> bool {
        s.writes.iter().all(|w| matches!(w.phase, Phase::Answered(_) | Phase::Lost))
    }

    fn outcomes(&self) -> &'static [Outcome<State>] {
        &OUTCOMES
    }

    fn describe(&self) -> String {
        format!("group commit, {WRITES} writes, batches of at most {MAX_BATCH}, one crash")
    }
}

const PROPERTIES: [Property<State>; 3] = [
    ("property 1, an answer \"done\" is durable", |s| {
        s.writes
            .iter()
            .position(|w| w.phase == Phase::Answered(true) && w.committed != 1)
            .map(|i| format!("w{i} answered done, committed {} times", s.writes[i].committed))
    }),
    ("property 2, no write is committed twice", |s| {
        s.writes.iter().position(|w| w.committed > 1).map(|i| format!("w{i} committed {} times", s.writes[i].committed))
    }),
    ("property 3, an answer \"failed\" kept nothing", |s| {
        s.writes
            .iter()
            .position(|w| w.phase == Phase::Answered(false) && w.committed > 0)
            .map(|i| format!("w{i} answered failed, committed {} times", s.writes[i].committed))
    }),
];

const OUTCOMES: [Outcome<State>; 5] = [
    ("every write done", |s| s.writes.iter().all(|w| w.phase == Phase::Answered(true))),
    ("a commit kept two writes", |s| s.shared),
    ("a write answered failed", |s| s.writes.iter().any(|w| w.phase == Phase::Answered(false))),
    ("a write lost to the crash, committed", |s| s.writes.iter().any(|w| w.phase == Phase::Lost && w.committed == 1)),
    ("a write lost to the crash, not committed", |s| {
        s.writes.iter().any(|w| w.phase == Phase::Lost && w.committed == 0)
    }),
];

fn run(rules: Rules) -> Report {
    check(&Model { rules }, &PROPERTIES)
}

#[test]
fn the_real_group_commit_rules_hold() {
    run(Rules::default()).assert_holds();
}

#[test]
fn answering_before_the_commit_is_caught() {
    run(Rules { answer_before_commit: true, ..Rules::default() }).assert_caught("property 1");
}

#[test]
fn taking_a_failed_commit_as_kept_is_caught() {
    run(Rules { failed_commit_kept: true, ..Rules::default() }).assert_caught("property 1");
}

#[test]
fn running_the_batch_alone_without_a_rollback_is_caught() {
    run(Rules { no_rollback: true, ..Rules::default() }).assert_caught("property 2");
}

#[test]
fn forgetting_kept_results_on_a_panic_is_caught() {
    run(Rules { panic_forgets_kept: true, ..Rules::default() }).assert_caught("property 3");
}
