//! Hand-made histories for the tests: each entry gets the next tick as its time.

#![allow(dead_code)] // each test file uses part of it

use berth_jepsen::{History, Op, OpType, Process};
use serde_json::Value;

#[derive(Default)]
pub struct Recorder {
    history: History,
    /// Added to every later entry's time (see `wait`).
    offset_ns: u64,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, kind: OpType, process: u64, f: &str, key: Option<&str>, value: Value) -> &mut Self {
        let time = self.history.len() as u64 + self.offset_ns;
        let mut op = Op::new(Process::Client(process), kind, f, value, time);
        op.key = key.map(str::to_string);
        self.history.push(op);
        self
    }

    pub fn invoke(&mut self, process: u64, f: &str, value: Value) -> &mut Self {
        self.add(OpType::Invoke, process, f, None, value)
    }

    pub fn ok(&mut self, process: u64, f: &str, value: Value) -> &mut Self {
        self.add(OpType::Ok, process, f, None, value)
    }

    pub fn fail(&mut self, process: u64, f: &str, value: Value) -> &mut Self {
        self.add(OpType::Fail, process, f, None, value)
    }

    pub fn info(&mut self, process: u64, f: &str, value: Value) -> &mut Self {
        self.add(OpType::Info, process, f, None, value)
    }

    pub fn invoke_key(&mut self, process: u64, f: &str, key: &str, value: Value) -> &mut Self {
        self.add(OpType::Invoke, process, f, Some(key), value)
    }

    pub fn ok_key(&mut self, process: u64, f: &str, key: &str, value: Value) -> &mut Self {
        self.add(OpType::Ok, process, f, Some(key), value)
    }

    pub fn fail_key(&mut self, process: u64, f: &str, key: &str, value: Value) -> &mut Self {
        self.add(OpType::Fail, process, f, Some(key), value)
    }

    pub fn info_key(&mut self, process: u64, f: &str, key: &str, value: Value) -> &mut Self {
        self.add(OpType::Info, process, f, Some(key), value)
    }

    /// Lets `ns` pass before the next entry.
    pub fn wait(&mut self, ns: u64) -> &mut Self {
        self.offset_ns += ns;
        self
    }

    /// The time the next entry gets.
    pub fn now(&self) -> u64 {
        self.history.len() as u64 + self.offset_ns
    }

    /// Gives the last entry an error.
    pub fn error(&mut self, error: &str) -> &mut Self {
        let mut ops = self.history.ops().to_vec();
        ops.last_mut().expect("an entry").error = Some(error.to_string());
        self.history = History::from_ops(ops);
        self
    }

    /// An invoke immediately followed by its completion.
    pub fn call(&mut self, process: u64, f: &str, input: Value, kind: OpType, output: Value) -> &mut Self {
        self.invoke(process, f, input).add(kind, process, f, None, output)
    }

    pub fn history(&self) -> History {
        self.history.clone()
    }
}
