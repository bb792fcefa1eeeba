//! Registers on several keys through the etcd v3 API, as Berth's register workload uses them:
//! range reads (which also return the key's version), puts, and compare-and-set transactions
//! comparing either the value or the version. Partitioned by key; every key starts absent
//! (version 0).
//!
//! History shapes (the key in the entry's `key`): `read` completes with `null` (absent), a bare
//! integer (value only) or `{"value": v, "version": n}`; `write` invokes with `v`; `cas` invokes
//! with `[from, to]` (compare on the value); `cas-version` invokes with `[version, to]` (compare
//! on the version; 0 means "absent", i.e. create). A cas whose compare did not match completes
//! `fail` without an `error`.

use serde_json::Value;

use crate::history::Operation;
use crate::lin::{Decode, Model};
use crate::Error;

use super::{int, int_pair, key, seen, unknown_function, Seen};

/// The per-key etcd register model.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdRegister;

/// One key's state: its value (`None`: absent) and its etcd version (puts since creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EtcdKey {
    pub value: Option<i64>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdInput {
    pub key: String,
    pub op: EtcdOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdOp {
    Read,
    Write(i64),
    Cas { from: i64, to: i64 },
    CasVersion { version: u64, to: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdOutput {
    /// Key absent.
    Absent,
    /// The value read, and its version if the client recorded it.
    Read {
        value: i64,
        version: Option<u64>,
    },
    Written,
    /// Whether the compare matched.
    Cas(bool),
    /// Indeterminate: legal in any state.
    Unknown,
}

impl Model for EtcdRegister {
    type State = EtcdKey;
    type Input = EtcdInput;
    type Output = EtcdOutput;

    fn init(&self) -> EtcdKey {
        EtcdKey::default()
    }

    fn step(&self, state: &EtcdKey, input: &EtcdInput, output: &EtcdOutput) -> Option<EtcdKey> {
        match (input.op, *output) {
            (EtcdOp::Read, EtcdOutput::Absent) => state.value.is_none().then_some(*state),
            (EtcdOp::Read, EtcdOutput::Read { value, version }) => {
                let same_version = version.is_none_or(|v| v == state.version);
                (state.value == Some(value) && same_version).then_some(*state)
            }
            (EtcdOp::Read, EtcdOutput::Unknown) => Some(*state),
            (EtcdOp::Write(v), EtcdOutput::Written | EtcdOutput::Unknown) => Some(put(state, v)),
            (op @ (EtcdOp::Cas { .. } | EtcdOp::CasVersion { .. }), out) => cas(state, op, out),
            _ => None,
        }
    }

    fn partition(&self, input: &EtcdInput) -> String {
        input.key.clone()
    }
}

fn put(state: &EtcdKey, value: i64) -> EtcdKey {
    EtcdKey {
        value: Some(value),
        version: state.version + 1,
    }
}

fn cas(state: &EtcdKey, op: EtcdOp, output: EtcdOutput) -> Option<EtcdKey> {
    let (matches, to) = match op {
        EtcdOp::Cas { from, to } => (state.value == Some(from), to),
        EtcdOp::CasVersion { version, to } => (state.version == version, to),
        _ => return None,
    };
    match output {
        EtcdOutput::Cas(succeeded) => {
            (succeeded == matches).then(|| if matches { put(state, to) } else { *state })
        }
        EtcdOutput::Unknown => Some(if matches { put(state, to) } else { *state }),
        _ => None,
    }
}

impl Decode for EtcdRegister {
    fn decode(&self, op: &Operation) -> Result<Option<(EtcdInput, EtcdOutput)>, Error> {
        let key = key(op)?;
        let (etcd_op, is_read, is_cas) = match op.f.as_str() {
            "read" => (EtcdOp::Read, true, false),
            "write" => (EtcdOp::Write(int(op, &op.input, "written value")?), false, false),
            "cas" => {
                let (from, to) = int_pair(op, &op.input, "cas argument")?;
                (EtcdOp::Cas { from, to }, false, true)
            }
            "cas-version" => {
                let (version, to) = int_pair(op, &op.input, "cas-version argument")?;
                let version = u64::try_from(version)
                    .map_err(|_| Error::bad_op(op.invoke, &op.f, "version must not be negative"))?;
                (EtcdOp::CasVersion { version, to }, false, true)
            }
            _ => return Err(unknown_function(op)),
        };
        let output = match seen(op, is_read, is_cas) {
            Seen::Ok if is_read => read_output(op)?,
            Seen::Ok if is_cas => EtcdOutput::Cas(true),
            Seen::Ok => EtcdOutput::Written,
            Seen::CompareFailed => EtcdOutput::Cas(false),
            Seen::Unknown => EtcdOutput::Unknown,
            Seen::Skip => return Ok(None),
        };
        Ok(Some((EtcdInput { key, op: etcd_op }, output)))
    }
}

fn read_output(op: &Operation) -> Result<EtcdOutput, Error> {
    match &op.output {
        Value::Null => Ok(EtcdOutput::Absent),
        Value::Object(fields) => {
            let value = int(op, fields.get("value").unwrap_or(&Value::Null), "read value")?;
            let version = fields.get("version").and_then(Value::as_u64);
            if version.is_none() {
                return Err(Error::bad_op(
                    op.invoke,
                    &op.f,
                    "read version must be a non-negative integer",
                ));
            }
            Ok(EtcdOutput::Read { value, version })
        }
        other => Ok(EtcdOutput::Read {
            value: int(op, other, "read value")?,
            version: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(state: EtcdKey, op: EtcdOp, out: EtcdOutput) -> Option<EtcdKey> {
        EtcdRegister.step(&state, &EtcdInput { key: "k".into(), op }, &out)
    }

    #[test]
    fn versions_count_puts() {
        let s = EtcdRegister.init();
        assert_eq!(step(s, EtcdOp::Read, EtcdOutput::Absent), Some(s));
        let s = step(s, EtcdOp::Write(5), EtcdOutput::Written).unwrap();
        assert_eq!(
            s,
            EtcdKey {
                value: Some(5),
                version: 1
            }
        );
        let read = |version| EtcdOutput::Read { value: 5, version };
        assert_eq!(step(s, EtcdOp::Read, read(Some(1))), Some(s));
        assert_eq!(step(s, EtcdOp::Read, read(None)), Some(s));
        assert_eq!(step(s, EtcdOp::Read, read(Some(2))), None);
        assert_eq!(step(s, EtcdOp::Read, EtcdOutput::Absent), None);
    }

    #[test]
    fn cas_on_value_and_on_version() {
        let s = EtcdKey {
            value: Some(1),
            version: 3,
        };
        let by_value = EtcdOp::Cas { from: 1, to: 2 };
        assert_eq!(
            step(s, by_value, EtcdOutput::Cas(true)),
            Some(EtcdKey {
                value: Some(2),
                version: 4
            })
        );
        assert_eq!(step(s, by_value, EtcdOutput::Cas(false)), None);
        let by_version = EtcdOp::CasVersion { version: 2, to: 9 };
        assert_eq!(step(s, by_version, EtcdOutput::Cas(false)), Some(s));
        assert_eq!(step(s, by_version, EtcdOutput::Cas(true)), None);
        let create = EtcdOp::CasVersion { version: 0, to: 7 };
        let absent = EtcdKey::default();
        assert_eq!(
            step(absent, create, EtcdOutput::Unknown),
            Some(EtcdKey {
                value: Some(7),
                version: 1
            })
        );
        assert_eq!(step(s, create, EtcdOutput::Unknown), Some(s));
        assert_eq!(step(s, by_value, EtcdOutput::Written), None);
    }
}
