//! From transactions to anomalies that need no cycle (G1a, G1b, internal, incompatible orders,
//! duplicates, phantoms) and to the dependency graph.
//!
//! Appends to a key are unique, so a read list names its writers, and the longest read of a key
//! gives its version order (every other read must be a prefix of it). From that order:
//! consecutive appends by different transactions give write-write edges; a read whose last
//! element was appended by T gives T -wr-> reader; a read of a prefix that stops before the
//! next element, appended by T, gives reader -rw-> T.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::txn::{Mop, Txn};
use super::{AppendAnomaly, Dep};
use crate::history::Outcome;
use crate::Error;

pub(crate) struct Edge {
    pub(crate) to: usize,
    pub(crate) dep: Dep,
    pub(crate) key: String,
    /// The element that carries the dependency (see [`super::CycleStep`]).
    pub(crate) value: i64,
}

/// Dependencies between transactions (by position in the txn list), without duplicates.
pub(crate) struct Graph {
    pub(crate) edges: Vec<Vec<Edge>>,
    seen: HashSet<(usize, usize, Dep)>,
}

impl Graph {
    pub(crate) fn new(nodes: usize) -> Self {
        Graph {
            edges: (0..nodes).map(|_| Vec::new()).collect(),
            seen: HashSet::new(),
        }
    }

    pub(crate) fn add(&mut self, from: usize, to: usize, dep: Dep, key: &str, value: i64) {
        if from != to && self.seen.insert((from, to, dep)) {
            self.edges[from].push(Edge {
                to,
                dep,
                key: key.to_string(),
                value,
            });
        }
    }
}

/// Who appended what.
struct Writes<'t> {
    appender: HashMap<(&'t str, i64), usize>,
    last_append: HashMap<(usize, &'t str), i64>,
}

impl Writes<'_> {
    /// The appender of an element, unless its transaction failed.
    fn live(&self, txns: &[Txn], key: &str, value: i64) -> Option<usize> {
        self.appender
            .get(&(key, value))
            .copied()
            .filter(|&t| txns[t].outcome != Outcome::Fail)
    }
}

/// Non-cycle anomalies and the dependency graph.
pub(crate) fn infer(txns: &[Txn]) -> Result<(Graph, Vec<AppendAnomaly>), Error> {
    let writes = writes(txns)?;
    let mut anomalies = Vec::new();
    for txn in txns {
        internal(txn, &mut anomalies);
    }
    let orders = version_orders(txns, &mut anomalies);
    read_anomalies(txns, &writes, &mut anomalies);
    Ok((dependencies(txns, &writes, &orders), anomalies))
}

fn writes(txns: &[Txn]) -> Result<Writes<'_>, Error> {
    let mut w = Writes {
        appender: HashMap::new(),
        last_append: HashMap::new(),
    };
    for (t, txn) in txns.iter().enumerate() {
        for (key, value) in txn.appends() {
            if let Some(other) = w.appender.insert((key, value), t) {
                let message = format!(
                    "{value} appended to {key} twice (also by the txn at {})",
                    txns[other].index
                );
                return Err(Error::bad_op(txn.index, "txn", message));
            }
            w.last_append.insert((t, key), value);
        }
    }
    Ok(w)
}

/// A transaction must see its own appends, and the same list again if it reads twice.
fn internal(txn: &Txn, anomalies: &mut Vec<AppendAnomaly>) {
    let mut state: HashMap<&str, (Option<Vec<i64>>, Vec<i64>)> = HashMap::new();
    for mop in &txn.mops {
        match mop {
            Mop::Append { key, value } => state.entry(key).or_default().1.push(*value),
            Mop::Read {
                key,
                values: Some(read),
            } => {
                let (prefix, own) = state.entry(key).or_default();
                let (expected, whole) = match prefix {
                    Some(p) => ([p.as_slice(), own.as_slice()].concat(), true),
                    None => (own.clone(), false),
                };
                if (whole && *read != expected) || (!whole && !read.ends_with(&expected)) {
                    anomalies.push(AppendAnomaly::Internal {
                        txn: txn.index,
                        key: key.clone(),
                        read: read.clone(),
                        expected,
                        whole,
                    });
                }
                *prefix = Some(read.clone());
                own.clear();
            }
            Mop::Read { values: None, .. } => {}
        }
    }
}

/// The longest read of each key; reports reads that are not prefixes of it, and duplicates.
fn version_orders(txns: &[Txn], anomalies: &mut Vec<AppendAnomaly>) -> BTreeMap<String, Vec<i64>> {
    let mut orders: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (key, read) in txns.iter().flat_map(Txn::reads) {
        let order = orders.entry(key.to_string()).or_default();
        if read.len() > order.len() {
            *order = read.to_vec();
        }
    }
    for txn in txns {
        for (key, read) in txn.reads() {
            let reader = txn.index;
            if has_duplicates(read) {
                anomalies.push(AppendAnomaly::DuplicateElements {
                    reader,
                    key: key.into(),
                    read: read.to_vec(),
                });
            }
            let longest = &orders[key];
            if !longest.starts_with(read) {
                let (key, read, longest) = (key.into(), read.to_vec(), longest.clone());
                anomalies.push(AppendAnomaly::IncompatibleOrder {
                    reader,
                    key,
                    read,
                    longest,
                });
            }
        }
    }
    orders
}

fn has_duplicates(read: &[i64]) -> bool {
    let mut seen = HashSet::new();
    !read.iter().all(|v| seen.insert(*v))
}

/// Elements no one appended, elements of failed transactions (G1a), and reads that end in the
/// middle of another transaction's appends to the key (G1b).
fn read_anomalies(txns: &[Txn], writes: &Writes<'_>, anomalies: &mut Vec<AppendAnomaly>) {
    for (r, txn) in txns.iter().enumerate() {
        for (key, read) in txn.reads() {
            let reader = txn.index;
            for &value in read {
                match writes.appender.get(&(key, value)) {
                    None => anomalies.push(AppendAnomaly::PhantomElement {
                        reader,
                        key: key.into(),
                        value,
                    }),
                    Some(&w) if txns[w].outcome == Outcome::Fail => {
                        let writer = txns[w].index;
                        anomalies.push(AppendAnomaly::G1a {
                            reader,
                            writer,
                            key: key.into(),
                            value,
                        });
                    }
                    Some(_) => {}
                }
            }
            let Some(&last) = read.last() else { continue };
            let Some(w) = writes.live(txns, key, last).filter(|&w| w != r) else {
                continue;
            };
            if writes.last_append[&(w, key)] != last {
                let writer = txns[w].index;
                anomalies.push(AppendAnomaly::G1b {
                    reader,
                    writer,
                    key: key.into(),
                    value: last,
                });
            }
        }
    }
}

fn dependencies(txns: &[Txn], writes: &Writes<'_>, orders: &BTreeMap<String, Vec<i64>>) -> Graph {
    let mut graph = Graph::new(txns.len());
    for (key, order) in orders {
        for pair in order.windows(2) {
            if let (Some(a), Some(b)) = (writes.live(txns, key, pair[0]), writes.live(txns, key, pair[1])) {
                graph.add(a, b, Dep::Ww, key, pair[1]);
            }
        }
    }
    for (r, txn) in txns.iter().enumerate() {
        for (key, read) in txn.reads() {
            if let Some(w) = read.last().and_then(|&last| writes.live(txns, key, last)) {
                graph.add(w, r, Dep::Wr, key, read[read.len() - 1]);
            }
            let order = &orders[key];
            if order.starts_with(read) && order.len() > read.len() {
                let next = order[read.len()];
                if let Some(w) = writes.live(txns, key, next) {
                    graph.add(r, w, Dep::Rw, key, next);
                }
            }
        }
    }
    graph
}
