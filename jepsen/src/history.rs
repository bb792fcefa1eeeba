//! The operation history, as Jepsen records it, and the pairing of invokes with completions.
//!
//! A history is a list of [`Op`] entries in the order they happened. A client process first
//! records an `invoke`, then exactly one completion: `ok` (it happened), `fail` (it definitely did
//! not happen) or `info` (indeterminate: it may or may not have taken effect, at any time after
//! its invoke). Histories are saved as JSON Lines, one entry per line, so they can be checked
//! offline.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Who performed an operation: a numbered client, or a named actor such as `"nemesis"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(id) => write!(f, "{id}"),
            Process::Named(name) => f.write_str(name),
        }
    }
}

/// The kind of a history entry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl OpType {
    fn name(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }
}

/// One history entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Op {
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The function: `read`, `write`, `cas`, `add`, `txn`, ...
    pub f: String,
    /// The key, for workloads over several keys (Jepsen's `:key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The argument (on an invoke) or the result (on a completion); its shape belongs to the
    /// workload and is interpreted by the model or checker.
    #[serde(default)]
    pub value: Value,
    /// Monotonic time in nanoseconds since the start of the test.
    pub time: u64,
    /// Why an operation failed or is indeterminate, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// An entry with no key and no error.
    pub fn new(process: Process, kind: OpType, f: &str, value: Value, time: u64) -> Self {
        Op {
            process,
            kind,
            f: f.to_string(),
            key: None,
            value,
            time,
            error: None,
        }
    }

    /// The same entry with a key.
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// The same entry with an error.
    pub fn with_error(mut self, error: &str) -> Self {
        self.error = Some(error.to_string());
        self
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It happened; its return time is known.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// It may or may not have happened, at any time after its invoke (also: never completed).
    Info,
}

/// An invoke paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub process: Process,
    pub f: String,
    pub key: Option<String>,
    pub outcome: Outcome,
    /// Index of the invoke in the history.
    pub invoke: usize,
    /// Index of the completion in the history (`None` if the process never completed it).
    pub completion: Option<usize>,
    /// The invoke's value.
    pub input: Value,
    /// The completion's value (`Null` without a completion).
    pub output: Value,
    /// The completion's error, if any.
    pub error: Option<String>,
    /// Invoke time (ns).
    pub call: u64,
    /// Completion time (ns) for `ok` and `fail`; `None` (+infinity) for indeterminate ones.
    pub ret: Option<u64>,
}

/// A whole history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_ops(ops: Vec<Op>) -> Self {
        History { ops }
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Reads JSON Lines (one entry per line; blank lines are ignored).
    pub fn read_jsonl(reader: impl BufRead) -> Result<Self, Error> {
        let mut ops = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| Error::Parse {
                line: i + 1,
                message: e.to_string(),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(&line).map_err(|e| Error::Parse {
                line: i + 1,
                message: e.to_string(),
            })?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// Writes JSON Lines, one entry per line.
    pub fn write_jsonl(&self, mut writer: impl Write) -> std::io::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut writer, op)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()
    }

    pub fn read_jsonl_file(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        Self::read_jsonl(BufReader::new(file))
    }

    pub fn write_jsonl_file(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: path.into(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        self.write_jsonl(BufWriter::new(file)).map_err(io)
    }

    /// Pairs every invoke with its completion: a completion pairs with the latest open invoke
    /// of the same process. Invokes never completed count as indeterminate (`info`).
    /// Operations come back in invoke order.
    pub fn pair(&self) -> Result<Vec<Operation>, Error> {
        let mut open: HashMap<&Process, Vec<usize>> = HashMap::new();
        let mut ops: Vec<Option<Operation>> = Vec::new();
        let mut slot_of_invoke: HashMap<usize, usize> = HashMap::new();
        for (index, op) in self.ops.iter().enumerate() {
            if op.kind == OpType::Invoke {
                open.entry(&op.process).or_default().push(index);
                slot_of_invoke.insert(index, ops.len());
                ops.push(Some(open_operation(index, op)));
                continue;
            }
            let invoke = open
                .get_mut(&op.process)
                .and_then(Vec::pop)
                .ok_or_else(|| Error::Unpaired {
                    index,
                    process: op.process.clone(),
                    kind: op.kind.name(),
                })?;
            let slot = slot_of_invoke[&invoke];
            let operation = ops[slot].as_mut().expect("slot filled at invoke");
            complete(operation, index, op)?;
        }
        Ok(ops.into_iter().flatten().collect())
    }
}

fn open_operation(index: usize, op: &Op) -> Operation {
    Operation {
        process: op.process.clone(),
        f: op.f.clone(),
        key: op.key.clone(),
        outcome: Outcome::Info,
        invoke: index,
        completion: None,
        input: op.value.clone(),
        output: Value::Null,
        error: None,
        call: op.time,
        ret: None,
    }
}

fn complete(operation: &mut Operation, index: usize, op: &Op) -> Result<(), Error> {
    if op.f != operation.f {
        return Err(Error::MismatchedCompletion {
            index,
            f: op.f.clone(),
            invoked: operation.f.clone(),
        });
    }
    if op.time < operation.call {
        return Err(Error::CompletesBeforeInvoke {
            index,
            call: operation.call,
            ret: op.time,
        });
    }
    operation.completion = Some(index);
    operation.output = op.value.clone();
    operation.error = op.error.clone();
    if operation.key.is_none() {
        operation.key = op.key.clone();
    }
    (operation.outcome, operation.ret) = match op.kind {
        OpType::Ok => (Outcome::Ok, Some(op.time)),
        OpType::Fail => (Outcome::Fail, Some(op.time)),
        OpType::Info => (Outcome::Info, None),
        OpType::Invoke => unreachable!("invokes are not completions"),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(id: u64) -> Process {
        Process::Client(id)
    }

    #[test]
    fn jsonl_round_trip() {
        let mut h = History::new();
        h.push(Op::new(c(0), OpType::Invoke, "write", json!(3), 10).with_key("k"));
        h.push(Op::new(c(0), OpType::Info, "write", Value::Null, 20).with_error("timeout"));
        h.push(Op::new(
            Process::Named("nemesis".into()),
            OpType::Invoke,
            "kill",
            json!(["n1"]),
            30,
        ));
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().next().unwrap().contains(r#""type":"invoke""#));
        assert_eq!(History::read_jsonl(&buf[..]).unwrap(), h);
    }

    #[test]
    fn jsonl_reports_the_bad_line() {
        let text = "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"time\":1}\n\nnot json\n";
        match History::read_jsonl(text.as_bytes()) {
            Err(Error::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn jsonl_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("berth-jepsen-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let h = History::from_ops(vec![Op::new(c(1), OpType::Invoke, "read", Value::Null, 0)]);
        h.write_jsonl_file(&path).unwrap();
        assert_eq!(History::read_jsonl_file(&path).unwrap(), h);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(History::read_jsonl_file(&path), Err(Error::Io { .. })));
    }

    #[test]
    fn pairs_completions_with_the_latest_open_invoke_of_the_process() {
        let h = History::from_ops(vec![
            Op::new(c(0), OpType::Invoke, "write", json!(1), 0),
            Op::new(c(1), OpType::Invoke, "read", Value::Null, 1),
            Op::new(c(1), OpType::Ok, "read", json!(1), 2),
            Op::new(c(0), OpType::Fail, "write", json!(1), 3),
            Op::new(c(2), OpType::Invoke, "write", json!(2), 4),
            Op::new(c(2), OpType::Info, "write", json!(2), 5),
            Op::new(c(3), OpType::Invoke, "read", Value::Null, 6),
        ]);
        let ops = h.pair().unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(
            (ops[0].outcome, ops[0].completion, ops[0].ret),
            (Outcome::Fail, Some(3), Some(3))
        );
        assert_eq!(
            (ops[1].outcome, ops[1].output.clone(), ops[1].ret),
            (Outcome::Ok, json!(1), Some(2))
        );
        assert_eq!((ops[2].outcome, ops[2].ret), (Outcome::Info, None));
        assert_eq!(
            (ops[3].outcome, ops[3].completion, ops[3].ret),
            (Outcome::Info, None, None)
        );
    }

    #[test]
    fn pairing_rejects_orphans_mismatches_and_time_travel() {
        let orphan = History::from_ops(vec![Op::new(c(0), OpType::Ok, "read", Value::Null, 0)]);
        assert!(matches!(orphan.pair(), Err(Error::Unpaired { index: 0, .. })));
        let mismatch = History::from_ops(vec![
            Op::new(c(0), OpType::Invoke, "read", Value::Null, 0),
            Op::new(c(0), OpType::Ok, "write", json!(1), 1),
        ]);
        assert!(matches!(
            mismatch.pair(),
            Err(Error::MismatchedCompletion { index: 1, .. })
        ));
        let backwards = History::from_ops(vec![
            Op::new(c(0), OpType::Invoke, "read", Value::Null, 5),
            Op::new(c(0), OpType::Ok, "read", json!(1), 4),
        ]);
        assert!(matches!(
            backwards.pair(),
            Err(Error::CompletesBeforeInvoke { index: 1, .. })
        ));
    }
}
