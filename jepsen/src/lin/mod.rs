//! Linearizability checking: the Wing–Gong/Lowe search with Porcupine's refinements.
//!
//! The history is split by the model's partition function (P-compositionality: a history is
//! linearizable iff every per-key sub-history is), and each partition is searched by a
//! depth-first search over a linked list of calls and returns with a cache of
//! (linearized set, model state) pairs, backtracking when a return is reached before its call
//! was linearized (see `search`). Partitions are searched interleaved, in slices of steps (and
//! optionally over several threads), and the check stops at the first refuted partition: one
//! partition may be very expensive to search while another refutes cheaply. A step and time
//! budget turns a search that would run too long into [`Verdict::Unknown`].

mod bitset;
mod cache;
mod driver;
mod search;

use std::fmt::{self, Debug};
use std::hash::Hash;
use std::time::Duration;

use serde::Serialize;

use crate::history::{History, Operation};
use crate::Error;

/// A sequential specification: the state machine that a linearizable history must agree with.
pub trait Model: Sync {
    type State: Clone + Eq + Hash + Debug + Send;
    type Input: Debug + Sync;
    type Output: Debug + Sync;

    /// The state before any operation (of each partition).
    fn init(&self) -> Self::State;

    /// Applies `input` in `state`: the new state if `output` is a legal result, else `None`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: &Self::Output) -> Option<Self::State>;

    /// The partition (independent sub-history) an operation belongs to. Operations of different
    /// partitions must never affect each other. One partition by default.
    fn partition(&self, _input: &Self::Input) -> String {
        String::new()
    }
}

/// How a model reads operations out of a recorded [`History`].
pub trait Decode: Model {
    /// The input and output of one paired operation, or `None` to leave it out (for example a
    /// failed write, which definitely did not happen). An indeterminate operation (`info`) must
    /// decode to an output the model accepts whatever the state.
    fn decode(&self, op: &Operation) -> Result<Decoded<Self::Input, Self::Output>, Error>;
}

/// What [`Decode::decode`] makes of one operation.
pub type Decoded<I, O> = Option<(I, O)>;

/// An operation of model `M`.
pub type ModelOp<M> = LinOp<<M as Model>::Input, <M as Model>::Output>;

/// One operation as the search sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct LinOp<I, O> {
    /// The caller's reference: for decoded histories, the index of the invoke in the history.
    pub id: usize,
    pub input: I,
    pub output: O,
    /// Invoke time.
    pub call: u64,
    /// Return time; `None` is +infinity (the operation is indeterminate).
    pub ret: Option<u64>,
}

/// Limits and parallelism of a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Threads to spread partitions over. With 1 (the default) the check is deterministic,
    /// including which refuted partition it reports.
    pub threads: usize,
    /// Steps a partition runs before the next one gets its turn.
    pub slice_steps: u64,
    /// Total search steps over all partitions before answering `Unknown`. This also bounds
    /// memory: each step adds at most one cache entry (about 100 bytes for a few hundred
    /// operations per partition).
    pub max_steps: Option<u64>,
    /// Wall-clock time before answering `Unknown`.
    pub time_limit: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            threads: 1,
            slice_steps: 1_000,
            max_steps: Some(20_000_000),
            time_limit: Some(Duration::from_secs(120)),
        }
    }
}

/// An operation in a counterexample, described by the model's types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpSummary {
    pub id: usize,
    pub call: u64,
    pub ret: Option<u64>,
    pub input: String,
    pub output: String,
}

/// Why a partition is not linearizable: the longest linearizable prefix the search found, and
/// the operation whose return came before it could be linearized after that prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counterexample {
    pub partition: String,
    pub prefix: Vec<OpSummary>,
    /// The model state after the prefix.
    pub state: String,
    pub blocked: OpSummary,
}

/// The answer of a linearizability check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Ok,
    Illegal(Box<Counterexample>),
    /// The budget ran out; `unresolved` partitions were neither proven nor refuted.
    Unknown {
        reason: String,
        unresolved: Vec<String>,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }

    pub fn is_illegal(&self) -> bool {
        matches!(self, Verdict::Illegal(_))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Verdict::Unknown { .. })
    }
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = self.ret.map_or_else(|| "inf".to_string(), |r| r.to_string());
        write!(
            f,
            "#{} [{}, {}] {} -> {}",
            self.id, self.call, ret, self.input, self.output
        )
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "partition {:?}: linearizable prefix of {} operations:",
            self.partition,
            self.prefix.len()
        )?;
        for op in &self.prefix {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "state after the prefix: {}", self.state)?;
        write!(f, "cannot linearize next: {}", self.blocked)
    }
}

/// Checks operations against a model.
pub fn check_operations<M: Model>(model: &M, ops: &[ModelOp<M>], options: &CheckOptions) -> Verdict {
    driver::check(model, partition(model, ops), options)
}

/// Pairs, decodes and checks a recorded history.
pub fn check_history<M: Decode>(
    model: &M,
    history: &History,
    options: &CheckOptions,
) -> Result<Verdict, Error> {
    let ops = decode_history(model, history)?;
    Ok(check_operations(model, &ops, options))
}

/// Pairs a history and decodes each operation with the model (ids are invoke indices).
pub fn decode_history<M: Decode>(model: &M, history: &History) -> Result<Vec<ModelOp<M>>, Error> {
    let mut ops = Vec::new();
    for op in history.pair()? {
        if let Some((input, output)) = model.decode(&op)? {
            ops.push(LinOp {
                id: op.invoke,
                input,
                output,
                call: op.call,
                ret: op.ret,
            });
        }
    }
    Ok(ops)
}

fn partition<'a, M: Model>(model: &M, ops: &'a [ModelOp<M>]) -> Vec<(String, Vec<&'a ModelOp<M>>)> {
    let mut partitions: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for op in ops {
        partitions.entry(model.partition(&op.input)).or_default().push(op);
    }
    partitions.into_iter().collect()
}
