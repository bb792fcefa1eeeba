//! Kubernetes resource quantities: `500m`, `2`, `1.5`, `.5`, `1Gi`, `100Mi`,
//! `1e3`, `5k`, `-1`.
//!
//! Grammar (as Kubernetes'): a signed decimal number (`1`, `1.5`, `.5`,
//! `1.`), then at most one suffix: binary `Ki Mi Gi Ti Pi Ei`, decimal
//! `n u m k M G T P E` (none = 1), or a decimal exponent `e<int>`/`E<int>`.
//! Quantities stay in objects as the strings written; [`Quantity`] gives
//! their value in thousandths ("milli-units": millicores for cpu, thousandths
//! of a byte for memory), rounded up as Kubernetes' `MilliValue` does.

use std::fmt;
use std::str::FromStr;

/// A parsed quantity: its value in thousandths of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    milli: i128,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    /// The rejected input.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quantity {:?} {}; quantities must match the regular expression \
             '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (e.g. 500m, 2, 1.5, 1Gi, 100Mi)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for QuantityError {}

/// Largest accepted magnitude in milli-units: Kubernetes caps quantities at
/// what an int64 holds (in units), which this comfortably covers.
const MAX_MILLI: i128 = (i64::MAX as i128) * 1000;

impl Quantity {
    /// Parses a quantity string.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let err = |reason| QuantityError {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("is empty"));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let negative = match bytes[0] {
            b'-' => {
                i += 1;
                true
            }
            b'+' => {
                i += 1;
                false
            }
            _ => false,
        };
        // Digits, with at most one '.', at least one digit.
        let mut mantissa: i128 = 0;
        let mut scale: i32 = 0; // value = mantissa * 10^scale
        let mut digits = 0;
        let mut seen_dot = false;
        while i < bytes.len() {
            match bytes[i] {
                c @ b'0'..=b'9' => {
                    digits += 1;
                    // Past ~30 significant digits, further ones cannot matter
                    // at milli precision without overflowing anyway.
                    if mantissa < 10i128.pow(30) {
                        mantissa = mantissa * 10 + i128::from(c - b'0');
                        if seen_dot {
                            scale -= 1;
                        }
                    } else if !seen_dot {
                        scale += 1;
                    }
                }
                b'.' if !seen_dot => seen_dot = true,
                b'.' => return Err(err("has more than one decimal point")),
                _ => break,
            }
            i += 1;
        }
        if digits == 0 {
            return Err(err("has no digits"));
        }
        let suffix = &s[i..];
        let mut binary: i128 = 1;
        match suffix {
            "" => {}
            "n" => scale -= 9,
            "u" => scale -= 6,
            "m" => scale -= 3,
            "k" => scale += 3,
            "M" => scale += 6,
            "G" => scale += 9,
            "T" => scale += 12,
            "P" => scale += 15,
            "E" => scale += 18,
            "Ki" => binary = 1 << 10,
            "Mi" => binary = 1 << 20,
            "Gi" => binary = 1 << 30,
            "Ti" => binary = 1 << 40,
            "Pi" => binary = 1 << 50,
            "Ei" => binary = 1 << 60,
            _ if suffix.starts_with(['e', 'E']) => {
                let exp = &suffix[1..];
                let body = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) || body.len() > 4 {
                    return Err(err("has a malformed exponent"));
                }
                scale += exp.parse::<i32>().map_err(|_| err("has a malformed exponent"))?;
            }
            _ => return Err(err("has an unknown suffix")),
        }
        // milli = mantissa * binary * 10^(scale + 3), rounded up (away from
        // zero for the magnitude, as Kubernetes rounds MilliValue up).
        let mut v = mantissa.checked_mul(binary).ok_or_else(|| err("is too large"))?;
        let exp = scale + 3;
        if exp >= 0 {
            for _ in 0..exp {
                if v == 0 {
                    break;
                }
                v = v.checked_mul(10).ok_or_else(|| err("is too large"))?;
                if v > MAX_MILLI {
                    return Err(err("is too large"));
                }
            }
        } else {
            let div = if -exp > 38 {
                None
            } else {
                10i128.checked_pow((-exp) as u32)
            };
            v = match div {
                Some(d) => (v + d - 1) / d,
                None => i128::from(v > 0),
            };
        }
        if v > MAX_MILLI {
            return Err(err("is too large"));
        }
        Ok(Quantity {
            milli: if negative { -v } else { v },
        })
    }

    /// The value in thousandths of a unit (millicores for cpu).
    pub fn milli_value(&self) -> i128 {
        self.milli
    }

    /// The value in units (bytes for memory), rounded up.
    pub fn value(&self) -> i128 {
        let q = self.milli.div_euclid(1000);
        if self.milli.rem_euclid(1000) == 0 {
            q
        } else {
            q + 1
        }
    }

    /// A quantity of whole units.
    pub fn from_units(units: i64) -> Quantity {
        Quantity {
            milli: i128::from(units) * 1000,
        }
    }

    /// A quantity of thousandths of a unit.
    pub fn from_milli(milli: i64) -> Quantity {
        Quantity {
            milli: i128::from(milli),
        }
    }

    /// True when negative.
    pub fn is_negative(&self) -> bool {
        self.milli < 0
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// The canonical form: whole units without a suffix (`2`, `1073741824`), or
/// milli-units with `m` (`500m`).
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 == 0 {
            write!(f, "{}", self.milli / 1000)
        } else {
            write!(f, "{}m", self.milli)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_to_milli_units() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("1", 1000),
            ("2", 2000),
            ("+2", 2000),
            ("500m", 500),
            ("0.5", 500),
            (".5", 500),
            ("1.", 1000),
            ("1.5", 1500),
            ("100m", 100),
            ("1k", 1_000_000),
            ("5M", 5_000_000_000),
            ("1Ki", 1024 * 1000),
            ("100Mi", 100 * (1 << 20) * 1000),
            ("1000Mi", 1000 * (1 << 20) * 1000),
            ("1Gi", (1 << 30) * 1000),
            ("1.5Gi", 3 * (1 << 29) * 1000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e-3", 1),
            ("12e+2", 1_200_000),
            ("1u", 1),   // rounded up
            ("1n", 1),   // rounded up
            ("0.1m", 1), // rounded up
            ("-1", -1000),
            ("-500m", -500),
            ("1Ei", (1i128 << 60) * 1000),
        ];
        for (s, milli) in cases {
            assert_eq!(Quantity::parse(s).map(|q| q.milli_value()), Ok(*milli), "{s}");
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("m", "has no digits"),
            (".", "has no digits"),
            ("-", "has no digits"),
            ("1.2.3", "has more than one decimal point"),
            ("1Kb", "has an unknown suffix"),
            ("1 Gi", "has an unknown suffix"),
            ("1mi", "has an unknown suffix"),
            ("1K", "has an unknown suffix"),
            ("abc", "has no digits"),
            ("1e", "has a malformed exponent"),
            ("1e1.5", "has a malformed exponent"),
            ("1e99999", "has a malformed exponent"),
            ("100000000000000000000000Ei", "is too large"),
        ];
        for (s, reason) in cases {
            assert_eq!(Quantity::parse(s).map_err(|e| e.reason), Err(*reason), "{s}");
        }
    }

    #[test]
    fn canonical_display_and_units() {
        assert_eq!(Quantity::parse("0.5").unwrap().to_string(), "500m");
        assert_eq!(Quantity::parse("1Ki").unwrap().to_string(), "1024");
        assert_eq!(Quantity::parse("1500m").unwrap().value(), 2);
        assert_eq!(Quantity::parse("1Gi").unwrap().value(), 1 << 30);
        assert!(Quantity::parse("1Gi").unwrap() > Quantity::parse("1G").unwrap());
        assert_eq!(Quantity::from_milli(250).to_string(), "250m");
        assert_eq!(Quantity::from_units(3), Quantity::parse("3").unwrap());
    }
}
