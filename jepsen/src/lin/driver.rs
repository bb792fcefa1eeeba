//! Runs the partition searches: interleaved in slices of steps, over one or more threads, until
//! every partition is linearized, one is refuted, or the budget runs out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::search::{PartitionSearch, Progress};
use super::{CheckOptions, Counterexample, LinOp, Model, ModelOp, OpSummary, Verdict};

type Partition<'a, M> = (String, Vec<&'a ModelOp<M>>);

/// What the threads share: the stop flag, the step count, and the results.
struct Shared<'o> {
    options: &'o CheckOptions,
    started: Instant,
    stop: AtomicBool,
    steps: AtomicU64,
    illegal: Mutex<Option<Counterexample>>,
    exhausted: Mutex<Option<String>>,
    unresolved: Mutex<Vec<String>>,
}

pub(super) fn check<M: Model>(
    model: &M,
    partitions: Vec<Partition<'_, M>>,
    options: &CheckOptions,
) -> Verdict {
    let shared = Shared {
        options,
        started: Instant::now(),
        stop: AtomicBool::new(false),
        steps: AtomicU64::new(0),
        illegal: Mutex::new(None),
        exhausted: Mutex::new(None),
        unresolved: Mutex::new(Vec::new()),
    };
    let threads = options.threads.clamp(1, partitions.len().max(1));
    if threads == 1 {
        run_group(model, partitions, &shared);
    } else {
        let mut groups: Vec<Vec<Partition<'_, M>>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, partition) in partitions.into_iter().enumerate() {
            groups[i % threads].push(partition);
        }
        std::thread::scope(|scope| {
            for group in groups {
                let shared = &shared;
                scope.spawn(move || run_group(model, group, shared));
            }
        });
    }
    verdict(shared)
}

fn verdict(shared: Shared<'_>) -> Verdict {
    if let Some(counterexample) = shared.illegal.into_inner().expect("no poisoned lock") {
        return Verdict::Illegal(Box::new(counterexample));
    }
    let mut unresolved = shared.unresolved.into_inner().expect("no poisoned lock");
    match shared.exhausted.into_inner().expect("no poisoned lock") {
        Some(reason) => {
            unresolved.sort();
            Verdict::Unknown { reason, unresolved }
        }
        None => Verdict::Ok,
    }
}

/// Round-robin over this group's partitions, one slice of steps each.
fn run_group<M: Model>(model: &M, group: Vec<Partition<'_, M>>, shared: &Shared<'_>) {
    let mut active: VecDeque<(String, PartitionSearch<'_, M>)> = group
        .into_iter()
        .map(|(name, ops)| (name, PartitionSearch::new(model, ops)))
        .collect();
    while let Some((name, mut search)) = active.pop_front() {
        if shared.stop.load(Ordering::Relaxed) {
            active.push_front((name, search));
            break;
        }
        let before = search.steps();
        let progress = search.run(shared.options.slice_steps);
        shared.steps.fetch_add(search.steps() - before, Ordering::Relaxed);
        match progress {
            Progress::Linearizable => {}
            Progress::Illegal => {
                report_illegal(shared, counterexample(&name, &search));
                return;
            }
            Progress::Pending => {
                active.push_back((name, search));
                if let Some(reason) = budget_exhausted(shared) {
                    report_exhausted(shared, reason);
                    break;
                }
            }
        }
    }
    let mut unresolved = shared.unresolved.lock().expect("no poisoned lock");
    unresolved.extend(active.into_iter().map(|(name, _)| name));
}

fn budget_exhausted(shared: &Shared<'_>) -> Option<String> {
    let options = shared.options;
    let steps = shared.steps.load(Ordering::Relaxed);
    if let Some(max) = options.max_steps.filter(|&max| steps >= max) {
        return Some(format!("step budget of {max} exhausted"));
    }
    let elapsed = shared.started.elapsed();
    if let Some(limit) = options.time_limit.filter(|&limit| elapsed >= limit) {
        return Some(format!("time limit of {limit:?} exhausted after {steps} steps"));
    }
    None
}

fn report_illegal(shared: &Shared<'_>, counterexample: Counterexample) {
    let mut illegal = shared.illegal.lock().expect("no poisoned lock");
    illegal.get_or_insert(counterexample);
    shared.stop.store(true, Ordering::Relaxed);
}

fn report_exhausted(shared: &Shared<'_>, reason: String) {
    let mut exhausted = shared.exhausted.lock().expect("no poisoned lock");
    exhausted.get_or_insert(reason);
    shared.stop.store(true, Ordering::Relaxed);
}

fn counterexample<M: Model>(partition: &str, search: &PartitionSearch<'_, M>) -> Counterexample {
    let longest = search.longest().expect("a refuted search has reached a return");
    let ops = search.ops();
    Counterexample {
        partition: partition.to_string(),
        prefix: longest.prefix.iter().map(|&i| summary(ops[i])).collect(),
        state: format!("{:?}", longest.state),
        blocked: summary(ops[longest.blocked]),
    }
}

fn summary<I: std::fmt::Debug, O: std::fmt::Debug>(op: &LinOp<I, O>) -> OpSummary {
    OpSummary {
        id: op.id,
        call: op.call,
        ret: op.ret,
        input: format!("{:?}", op.input),
        output: format!("{:?}", op.output),
    }
}
