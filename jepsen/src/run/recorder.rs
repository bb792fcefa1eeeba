//! The history being recorded: entries appended by every worker and the nemesis, stamped with
//! monotonic nanoseconds since the start of the run.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

use crate::history::{History, Op, OpType, Process};

pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends an entry stamped now.
    pub fn record(
        &self,
        process: &Process,
        kind: OpType,
        f: &str,
        key: Option<&str>,
        value: Value,
        error: Option<String>,
    ) {
        let mut ops = self.ops.lock().expect("no poisoned lock");
        // The time is taken under the lock, so entries are in time order.
        let mut op = Op::new(process.clone(), kind, f, value, self.now_ns());
        op.key = key.map(str::to_string);
        op.error = error;
        ops.push(op);
    }

    pub fn history(&self) -> History {
        History::from_ops(self.ops.lock().expect("no poisoned lock").clone())
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
