//! One register with read, write and compare-and-set, initially nil: the model of Jepsen's etcd
//! histories (`:read nil|v`, `:write v`, `:cas [from to]`).

use crate::history::Operation;
use crate::lin::{Decode, Model};
use crate::Error;

use super::{int, int_pair, opt_int, seen, unknown_function, Seen};

/// The single-register model (one partition).
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterInput {
    Read,
    Write(i64),
    Cas { from: i64, to: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutput {
    /// The value read (`None`: nil).
    Read(Option<i64>),
    Written,
    /// Whether the compare matched.
    Cas(bool),
    /// Indeterminate: legal in any state.
    Unknown,
}

impl Model for Register {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> Option<Option<i64>> {
        use RegisterInput as I;
        use RegisterOutput as O;
        match (input, output) {
            (I::Read, O::Read(v)) => (v == state).then_some(*state),
            (I::Read, O::Unknown) => Some(*state),
            (I::Write(v), O::Written | O::Unknown) => Some(Some(*v)),
            (I::Cas { from, to }, O::Cas(true)) => (*state == Some(*from)).then_some(Some(*to)),
            (I::Cas { from, .. }, O::Cas(false)) => (*state != Some(*from)).then_some(*state),
            (I::Cas { from, to }, O::Unknown) => Some(if *state == Some(*from) { Some(*to) } else { *state }),
            _ => None,
        }
    }
}

impl Decode for Register {
    fn decode(&self, op: &Operation) -> Result<Option<(RegisterInput, RegisterOutput)>, Error> {
        let decoded = match op.f.as_str() {
            "read" => match seen(op, true, false) {
                Seen::Ok => Some((
                    RegisterInput::Read,
                    RegisterOutput::Read(opt_int(op, &op.output, "read value")?),
                )),
                _ => None,
            },
            "write" => {
                let input = RegisterInput::Write(int(op, &op.input, "written value")?);
                match seen(op, false, false) {
                    Seen::Ok => Some((input, RegisterOutput::Written)),
                    Seen::Unknown => Some((input, RegisterOutput::Unknown)),
                    _ => None,
                }
            }
            "cas" => {
                let (from, to) = int_pair(op, &op.input, "cas argument")?;
                let input = RegisterInput::Cas { from, to };
                match seen(op, false, true) {
                    Seen::Ok => Some((input, RegisterOutput::Cas(true))),
                    Seen::CompareFailed => Some((input, RegisterOutput::Cas(false))),
                    Seen::Unknown => Some((input, RegisterOutput::Unknown)),
                    Seen::Skip => None,
                }
            }
            _ => return Err(unknown_function(op)),
        };
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegisterInput as I;
    use RegisterOutput as O;

    #[test]
    fn steps() {
        let m = Register;
        assert_eq!(m.step(&None, &I::Read, &O::Read(None)), Some(None));
        assert_eq!(m.step(&Some(1), &I::Read, &O::Read(None)), None);
        assert_eq!(m.step(&Some(1), &I::Read, &O::Unknown), Some(Some(1)));
        assert_eq!(m.step(&None, &I::Write(2), &O::Written), Some(Some(2)));
        assert_eq!(
            m.step(&Some(1), &I::Cas { from: 1, to: 3 }, &O::Cas(true)),
            Some(Some(3))
        );
        assert_eq!(m.step(&Some(2), &I::Cas { from: 1, to: 3 }, &O::Cas(true)), None);
        assert_eq!(
            m.step(&Some(2), &I::Cas { from: 1, to: 3 }, &O::Cas(false)),
            Some(Some(2))
        );
        assert_eq!(m.step(&Some(1), &I::Cas { from: 1, to: 3 }, &O::Cas(false)), None);
        assert_eq!(
            m.step(&Some(1), &I::Cas { from: 1, to: 3 }, &O::Unknown),
            Some(Some(3))
        );
        assert_eq!(m.step(&None, &I::Cas { from: 1, to: 3 }, &O::Unknown), Some(None));
        assert_eq!(m.step(&None, &I::Write(1), &O::Read(None)), None);
    }
}
