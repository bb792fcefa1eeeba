//! Sequential models for the linearizability checker, each with its decoding from histories.
//!
//! Conventions shared by the models: a `fail` operation definitely did not happen and is left
//! out, except a `fail` cas without an `error`, which is Jepsen's "the compare did not match"
//! and is checked as such; an `info` read is left out (it changes nothing); an `info` write or
//! cas may have taken effect at any time after its invoke, or never.

mod etcd;
mod kv;
mod register;

pub use etcd::{EtcdInput, EtcdKey, EtcdOp, EtcdOutput, EtcdRegister};
pub use kv::{KvInput, KvOp, KvOutput, KvRegister};
pub use register::{Register, RegisterInput, RegisterOutput};

use serde_json::Value;

use crate::history::{Operation, Outcome};
use crate::Error;

/// What a model makes of an operation's outcome, before looking at its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Completed `ok`.
    Ok,
    /// A cas that completed `fail` without an error: the compare did not match.
    CompareFailed,
    /// Indeterminate.
    Unknown,
    /// Leave the operation out.
    Skip,
}

fn seen(op: &Operation, is_read: bool, is_cas: bool) -> Seen {
    match op.outcome {
        Outcome::Ok => Seen::Ok,
        Outcome::Fail if is_cas && op.error.is_none() => Seen::CompareFailed,
        Outcome::Fail => Seen::Skip,
        Outcome::Info if is_read => Seen::Skip,
        Outcome::Info => Seen::Unknown,
    }
}

fn int(op: &Operation, value: &Value, what: &str) -> Result<i64, Error> {
    value.as_i64().ok_or_else(|| {
        Error::bad_op(
            op.invoke,
            &op.f,
            format!("{what} must be an integer, got {value}"),
        )
    })
}

fn opt_int(op: &Operation, value: &Value, what: &str) -> Result<Option<i64>, Error> {
    if value.is_null() {
        Ok(None)
    } else {
        int(op, value, what).map(Some)
    }
}

/// `[a, b]` as two integers.
fn int_pair(op: &Operation, value: &Value, what: &str) -> Result<(i64, i64), Error> {
    match value.as_array().map(Vec::as_slice) {
        Some([a, b]) => Ok((int(op, a, what)?, int(op, b, what)?)),
        _ => Err(Error::bad_op(
            op.invoke,
            &op.f,
            format!("{what} must be [a b], got {value}"),
        )),
    }
}

fn key(op: &Operation) -> Result<String, Error> {
    op.key
        .clone()
        .ok_or_else(|| Error::bad_op(op.invoke, &op.f, "missing key"))
}

fn unknown_function(op: &Operation) -> Error {
    Error::bad_op(op.invoke, &op.f, "unknown function for this model")
}
