//! The Wing–Gong/Lowe search over one partition, as Porcupine does it, made resumable so that
//! partitions can be interleaved and stopped.
//!
//! Calls and returns are nodes of a doubly linked list in time order. The search walks the list
//! from the head: at a call it tries to linearize the operation now (the model accepts its
//! output in the current state, and the pair (linearized set, new state) was never seen), and if
//! so lifts the call and its return out of the list and starts again from the head. Reaching a
//! return means that operation's deadline passed without it being linearized: undo the last
//! linearization (backtrack) and try the next call after it. An empty list is a linearization;
//! backtracking past the first step refutes the partition.

use super::bitset::Bitset;
use super::cache::Cache;
use super::{LinOp, Model, ModelOp};

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

struct Node {
    /// The operation (index into the partition's ops).
    op: usize,
    /// For a call: its return node. For a return (and the head): `NIL`.
    matching: usize,
    prev: usize,
    next: usize,
}

/// Where a search stands after a slice of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    Pending,
    Linearizable,
    Illegal,
}

/// The longest linearizable prefix seen, and the operation whose return was reached right after
/// it (the one that could not be linearized next).
pub(crate) struct Longest<S> {
    pub(crate) prefix: Vec<usize>,
    pub(crate) blocked: usize,
    pub(crate) state: S,
}

pub(crate) struct PartitionSearch<'a, M: Model> {
    model: &'a M,
    ops: Vec<&'a ModelOp<M>>,
    nodes: Vec<Node>,
    cursor: usize,
    state: M::State,
    linearized: Bitset,
    cache: Cache<M::State>,
    /// The linearized calls, in order, each with the state before it.
    calls: Vec<(usize, M::State)>,
    longest: Option<Longest<M::State>>,
    steps: u64,
}

impl<'a, M: Model> PartitionSearch<'a, M> {
    pub(crate) fn new(model: &'a M, ops: Vec<&'a ModelOp<M>>) -> Self {
        let nodes = build_list(&ops);
        PartitionSearch {
            model,
            linearized: Bitset::new(ops.len()),
            ops,
            cursor: nodes[HEAD].next,
            nodes,
            state: model.init(),
            cache: Cache::new(),
            calls: Vec::new(),
            longest: None,
            steps: 0,
        }
    }

    pub(crate) fn ops(&self) -> &[&'a ModelOp<M>] {
        &self.ops
    }

    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    pub(crate) fn longest(&self) -> Option<&Longest<M::State>> {
        self.longest.as_ref()
    }

    /// Runs at most `budget` steps.
    pub(crate) fn run(&mut self, budget: u64) -> Progress {
        for _ in 0..budget {
            if self.nodes[HEAD].next == NIL {
                return Progress::Linearizable;
            }
            self.steps += 1;
            if self.nodes[self.cursor].matching != NIL {
                self.try_linearize(self.cursor);
            } else if !self.backtrack() {
                return Progress::Illegal;
            }
        }
        if self.nodes[HEAD].next == NIL {
            Progress::Linearizable
        } else {
            Progress::Pending
        }
    }

    fn try_linearize(&mut self, call: usize) {
        let op_index = self.nodes[call].op;
        let op = self.ops[op_index];
        if let Some(next_state) = self.model.step(&self.state, &op.input, &op.output) {
            if self.cache.insert_with(&self.linearized, op_index, &next_state) {
                let before = std::mem::replace(&mut self.state, next_state);
                self.calls.push((call, before));
                self.linearized.set(op_index);
                self.lift(call);
                self.cursor = self.nodes[HEAD].next;
                return;
            }
        }
        self.cursor = self.nodes[call].next;
    }

    /// At a return whose call is not linearized: undo the last step. False if there is none.
    fn backtrack(&mut self) -> bool {
        self.record_longest();
        let Some((call, state)) = self.calls.pop() else {
            return false;
        };
        self.state = state;
        self.linearized.clear(self.nodes[call].op);
        self.unlift(call);
        self.cursor = self.nodes[call].next;
        true
    }

    fn record_longest(&mut self) {
        if self
            .longest
            .as_ref()
            .is_some_and(|l| l.prefix.len() >= self.calls.len())
        {
            return;
        }
        self.longest = Some(Longest {
            prefix: self.calls.iter().map(|&(call, _)| self.nodes[call].op).collect(),
            blocked: self.nodes[self.cursor].op,
            state: self.state.clone(),
        });
    }

    fn lift(&mut self, call: usize) {
        let (prev, next) = (self.nodes[call].prev, self.nodes[call].next);
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev; // a call is always followed by (at least) its return
        let ret = self.nodes[call].matching;
        let (prev, next) = (self.nodes[ret].prev, self.nodes[ret].next);
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].matching;
        let (prev, next) = (self.nodes[ret].prev, self.nodes[ret].next);
        self.nodes[prev].next = ret;
        if next != NIL {
            self.nodes[next].prev = ret;
        }
        let (prev, next) = (self.nodes[call].prev, self.nodes[call].next);
        self.nodes[prev].next = call;
        self.nodes[next].prev = call;
    }
}

/// The head, then every call and return in time order. At equal times calls come first (the
/// operations overlap); an indeterminate operation returns at +infinity.
fn build_list<I, O>(ops: &[&LinOp<I, O>]) -> Vec<Node> {
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort_unstable();
    let len = events.len() + 1;
    let mut nodes: Vec<Node> = (0..len)
        .map(|n| Node {
            op: if n == HEAD { NIL } else { events[n - 1].2 },
            matching: NIL,
            prev: if n == HEAD { NIL } else { n - 1 },
            next: if n + 1 < len { n + 1 } else { NIL },
        })
        .collect();
    let mut return_node = vec![NIL; ops.len()];
    for (n, &(_, is_return, op)) in events.iter().enumerate() {
        if is_return {
            return_node[op] = n + 1;
        }
    }
    for (n, &(_, is_return, op)) in events.iter().enumerate() {
        if !is_return {
            nodes[n + 1].matching = return_node[op];
        }
    }
    nodes
}
