//! Serde helpers that the generated resource types name in their attributes
//! (see `build.rs`), and the hand-written serde of [`IntOrString`].

use crate::metav1::{int_or_string, IntOrString};
use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// True when `v` equals its type's default: the `omitempty` test used for
/// every generated field.
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `map<string, bytes>` as a map of base64 strings (Secret `data`,
/// ConfigMap `binaryData`).
pub mod base64_map {
    use super::*;

    /// Serializes each value as standard base64.
    pub fn serialize<S: Serializer>(map: &BTreeMap<String, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_entry(k, &B64.encode(v))?;
        }
        m.end()
    }

    /// Decodes each value from standard base64 (whitespace ignored).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| decode_b64(&v).map(|b| (k, b)))
            .collect::<Result<_, String>>()
            .map_err(de::Error::custom)
    }
}

/// `optional bytes` as a base64 string.
pub mod base64_opt {
    use super::*;

    /// Serializes the value as standard base64.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&B64.encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Decodes a standard base64 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(v) => decode_b64(&v).map(Some).map_err(de::Error::custom),
            None => Ok(None),
        }
    }
}

fn decode_b64(v: &str) -> Result<Vec<u8>, String> {
    let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact.as_bytes())
        .map_err(|e| format!("illegal base64 data: {e}"))
}

/// A quantity: a string, or a bare number (`cpu: 2`, `memory: 1e9`) as
/// Kubernetes also accepts. Kept as written; see [`crate::quantity`].
struct QuantityVisitor;

impl Visitor<'_> for QuantityVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a quantity (string or number)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        if v.is_finite() {
            Ok(v.to_string())
        } else {
            Err(E::custom("quantity must be a finite number"))
        }
    }
}

struct QuantityString(String);

impl<'de> Deserialize<'de> for QuantityString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor).map(QuantityString)
    }
}

/// Deserializes a map of quantities (`resources.limits`).
pub fn quantity_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor;
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of quantities")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, QuantityString(v))) = a.next_entry::<String, QuantityString>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(MapVisitor)
}

/// Deserializes an optional quantity (`emptyDir.sizeLimit`).
pub fn quantity_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<QuantityString>::deserialize(d)?.map(|q| q.0))
}

impl IntOrString {
    /// An integer value (a port number, a count).
    pub fn int(v: i32) -> Self {
        IntOrString {
            value: Some(int_or_string::Value::IntVal(v)),
        }
    }

    /// A string value (a port name, a percentage such as "25%").
    pub fn string(v: impl Into<String>) -> Self {
        IntOrString {
            value: Some(int_or_string::Value::StrVal(v.into())),
        }
    }

    /// The integer, if this holds one.
    pub fn as_int(&self) -> Option<i32> {
        match &self.value {
            Some(int_or_string::Value::IntVal(v)) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this holds one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(int_or_string::Value::StrVal(v)) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(int_or_string::Value::IntVal(v)) => write!(f, "{v}"),
            Some(int_or_string::Value::StrVal(v)) => f.write_str(v),
            None => Ok(()),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Some(int_or_string::Value::IntVal(v)) => s.serialize_i32(*v),
            Some(int_or_string::Value::StrVal(v)) => s.serialize_str(v),
            None => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::string(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::int)
                    .map_err(|_| E::custom(format!("integer {v} out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::int)
                    .map_err(|_| E::custom(format!("integer {v} out of range")))
            }
        }
        d.deserialize_any(V)
    }
}
