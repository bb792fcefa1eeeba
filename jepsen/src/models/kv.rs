//! A string register per key with get, put and append, every key initially `""`: the model of
//! Porcupine's kv histories, partitioned by key.

use serde_json::Value;

use crate::history::Operation;
use crate::lin::{Decode, Model};
use crate::Error;

use super::{key, seen, unknown_function, Seen};

/// The per-key string register.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvRegister;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvInput {
    pub key: String,
    pub op: KvOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Get,
    Put(String),
    Append(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The value a get returned.
    Value(String),
    /// A put or append completed.
    Done,
    /// Indeterminate: legal in any state.
    Unknown,
}

impl Model for KvRegister {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, input: &KvInput, output: &KvOutput) -> Option<String> {
        match (&input.op, output) {
            (KvOp::Get, KvOutput::Value(v)) => (v == state).then(|| state.clone()),
            (KvOp::Get, KvOutput::Unknown) => Some(state.clone()),
            (KvOp::Put(v), KvOutput::Done | KvOutput::Unknown) => Some(v.clone()),
            (KvOp::Append(v), KvOutput::Done | KvOutput::Unknown) => Some(format!("{state}{v}")),
            _ => None,
        }
    }

    fn partition(&self, input: &KvInput) -> String {
        input.key.clone()
    }
}

impl Decode for KvRegister {
    fn decode(&self, op: &Operation) -> Result<Option<(KvInput, KvOutput)>, Error> {
        let key = key(op)?;
        let (kv_op, is_read) = match op.f.as_str() {
            "get" => (KvOp::Get, true),
            "put" => (KvOp::Put(string(op, &op.input)?), false),
            "append" => (KvOp::Append(string(op, &op.input)?), false),
            _ => return Err(unknown_function(op)),
        };
        let output = match (seen(op, is_read, false), is_read) {
            (Seen::Ok, true) => KvOutput::Value(string(op, &op.output)?),
            (Seen::Ok, false) => KvOutput::Done,
            (Seen::Unknown, _) => KvOutput::Unknown,
            _ => return Ok(None),
        };
        Ok(Some((KvInput { key, op: kv_op }, output)))
    }
}

/// A string value; nil reads as the empty string (the initial value).
fn string(op: &Operation, value: &Value) -> Result<String, Error> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        other => Err(crate::Error::bad_op(
            op.invoke,
            &op.f,
            format!("value must be a string, got {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(op: KvOp) -> KvInput {
        KvInput { key: "k".into(), op }
    }

    #[test]
    fn steps() {
        let m = KvRegister;
        let s = m.init();
        let s = m
            .step(&s, &input(KvOp::Append("x 1 y".into())), &KvOutput::Done)
            .unwrap();
        let s = m
            .step(&s, &input(KvOp::Append("x 2 y".into())), &KvOutput::Unknown)
            .unwrap();
        assert_eq!(s, "x 1 yx 2 y");
        assert!(m
            .step(&s, &input(KvOp::Get), &KvOutput::Value("x 1 y".into()))
            .is_none());
        assert_eq!(
            m.step(&s, &input(KvOp::Get), &KvOutput::Value(s.clone())),
            Some(s.clone())
        );
        assert_eq!(
            m.step(&s, &input(KvOp::Put("z".into())), &KvOutput::Done),
            Some("z".into())
        );
        assert!(m
            .step(&s, &input(KvOp::Put("z".into())), &KvOutput::Value("z".into()))
            .is_none());
        assert_eq!(m.partition(&input(KvOp::Get)), "k");
    }
}
