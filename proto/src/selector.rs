//! Label and field selectors in Kubernetes' string syntax, as `List` and
//! `Watch` requests carry them (`ListOptions.label_selector`,
//! `ListOptions.field_selector`).
//!
//! Label selectors: comma-separated requirements, all of which must hold:
//! `app=web`, `app==web`, `tier!=db`, `env in (prod, staging)`,
//! `env notin (dev)`, `canary` (key exists), `!canary` (key absent),
//! `replicas>1`, `replicas<5` (integer comparisons). Field selectors:
//! `metadata.name=web,spec.nodeName!=n1,status.phase=Running` over the fields
//! each kind supports ([`supported_fields`]); an unset field reads as "".

use crate::manifest::Object;
use crate::metav1::LabelSelector;
use crate::validate::{label_value, qualified_name};
use std::collections::BTreeMap;
use std::fmt;

/// A label requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `key=value`, `key==value`.
    Equals,
    /// `key!=value` (also true when the key is absent).
    NotEquals,
    /// `key in (a, b)`.
    In,
    /// `key notin (a, b)` (also true when the key is absent).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n`: the value is an integer greater than n.
    Gt,
    /// `key<n`: the value is an integer less than n.
    Lt,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: Op,
    /// Values (one for Equals/NotEquals/Gt/Lt, none for Exists/DoesNotExist).
    pub values: Vec<String>,
}

impl Requirement {
    /// True when `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => v.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(Ok(have)), Some(Ok(want))) = (
                    v.map(|v| v.parse::<i64>()),
                    self.values.first().map(|v| v.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A parsed label selector: requirements ANDed. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Parses the string syntax (empty or blank: everything).
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
            text: s,
        };
        let mut reqs = Vec::new();
        p.ws();
        if p.eof() {
            return Ok(Selector(reqs));
        }
        loop {
            reqs.push(p.requirement()?);
            p.ws();
            if p.eof() {
                break;
            }
            p.expect(b',')?;
        }
        Ok(Selector(reqs))
    }

    /// The selector of a `LabelSelector` message (matchLabels AND
    /// matchExpressions), checking its operators and syntax.
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Selector, String> {
        let mut reqs: Vec<Requirement> = ls
            .match_labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::Equals,
                values: vec![v.clone()],
            })
            .collect();
        for r in &ls.match_expressions {
            let op = match r.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            reqs.push(Requirement {
                key: r.key.clone(),
                op,
                values: r.values.clone(),
            });
        }
        for r in &reqs {
            check(r)?;
        }
        Ok(Selector(reqs))
    }

    /// True when every requirement holds.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    /// True when it has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values[0]),
                Op::NotEquals => format!("{}!={}", r.key, r.values[0]),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::Gt => format!("{}>{}", r.key, r.values[0]),
                Op::Lt => format!("{}<{}", r.key, r.values[0]),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn check(r: &Requirement) -> Result<(), String> {
    qualified_name(&r.key).map_err(|e| format!("invalid label key {:?}: {e}", r.key))?;
    match r.op {
        Op::In | Op::NotIn if r.values.is_empty() => {
            return Err(format!(
                "{}: for 'in', 'notin' operators, values set can't be empty",
                r.key
            ))
        }
        Op::Gt | Op::Lt if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() => {
            return Err(format!(
                "{}: for 'Gt', 'Lt' operators, the value must be an integer",
                r.key
            ))
        }
        _ => {}
    }
    for v in &r.values {
        label_value(v).map_err(|e| format!("invalid label value {v:?}: {e}"))?;
    }
    Ok(())
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn err(&self, what: &str) -> String {
        format!(
            "unable to parse label selector {:?} at position {}: {what}",
            self.text, self.i
        )
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }
    /// A key or value: everything up to whitespace or a delimiter.
    fn word(&mut self) -> &str {
        self.ws();
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| !c.is_ascii_whitespace() && !b",()=!<>".contains(&c))
        {
            self.i += 1;
        }
        &self.text[start..self.i]
    }
    fn requirement(&mut self) -> Result<Requirement, String> {
        self.ws();
        let negated = self.peek() == Some(b'!');
        if negated {
            self.i += 1;
        }
        let key = self.word().to_string();
        if key.is_empty() {
            return Err(self.err("expected a label key"));
        }
        let req = if negated {
            Requirement {
                key,
                op: Op::DoesNotExist,
                values: vec![],
            }
        } else {
            self.ws();
            let rest = &self.s[self.i..];
            let (op, len) = if rest.starts_with(b"==") {
                (Some(Op::Equals), 2)
            } else if rest.starts_with(b"!=") {
                (Some(Op::NotEquals), 2)
            } else if rest.starts_with(b"=") {
                (Some(Op::Equals), 1)
            } else if rest.starts_with(b">") {
                (Some(Op::Gt), 1)
            } else if rest.starts_with(b"<") {
                (Some(Op::Lt), 1)
            } else {
                (None, 0)
            };
            match op {
                Some(op) => {
                    self.i += len;
                    let v = self.word().to_string();
                    Requirement {
                        key,
                        op,
                        values: vec![v],
                    }
                }
                None if self.eof() || self.peek() == Some(b',') => Requirement {
                    key,
                    op: Op::Exists,
                    values: vec![],
                },
                None => {
                    let w = self.word().to_string();
                    let op = match w.as_str() {
                        "in" => Op::In,
                        "notin" => Op::NotIn,
                        _ => return Err(self.err(&format!("unknown operator {w:?}"))),
                    };
                    self.expect(b'(')?;
                    let mut values = Vec::new();
                    loop {
                        let v = self.word().to_string();
                        values.push(v);
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b')') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.err("expected ',' or ')'")),
                        }
                    }
                    values.retain(|v| !v.is_empty());
                    Requirement { key, op, values }
                }
            }
        };
        check(&req)?;
        Ok(req)
    }
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted field path (`spec.nodeName`).
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    /// The value compared against ("" matches unset).
    pub value: String,
}

/// A parsed field selector: terms ANDed. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `a=b,c!=d` (`==` also accepted). Fields are checked against
    /// the kind's supported fields by [`FieldSelector::check_fields`].
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut out = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, negated, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid field selector term {term:?}: expected field=value or field!=value"
                ));
            };
            out.push(FieldRequirement {
                field: field.trim().to_string(),
                negated,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector(out))
    }

    /// Rejects fields the kind does not support, as Kubernetes does
    /// ("field label not supported").
    pub fn check_fields(&self, kind: &str) -> Result<(), String> {
        let supported = supported_fields(kind);
        for r in &self.0 {
            if !supported.contains(&r.field.as_str()) {
                return Err(format!(
                    "field label not supported: {} (supported for {kind}: {})",
                    r.field,
                    supported.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// True when every term holds for `obj`.
    pub fn matches(&self, obj: &Object) -> bool {
        self.0.iter().all(|r| {
            let v = field_value(obj, &r.field).unwrap_or_default();
            (v == r.value) != r.negated
        })
    }

    /// True when it has no term.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields a field selector may name for `kind`.
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Node" => &["metadata.name", "spec.unschedulable"],
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        "Event" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "ReplicaSet" => &["metadata.name", "metadata.namespace", "status.replicas"],
        "Namespace" => &["metadata.name", "status.phase"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The value of a supported field (`None` for an unsupported one; "" when
/// unset), as field selectors compare it.
pub fn field_value(obj: &Object, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return Some(obj.name().to_string()),
        "metadata.namespace" => return Some(obj.namespace().to_string()),
        _ => {}
    }
    let s = |v: &str| Some(v.to_string());
    match obj {
        Object::Pod(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            match field {
                "spec.nodeName" => s(&spec.node_name),
                "spec.restartPolicy" => s(&spec.restart_policy),
                "spec.schedulerName" => s(&spec.scheduler_name),
                "spec.serviceAccountName" => s(&spec.service_account_name),
                "spec.hostNetwork" => Some(spec.host_network.to_string()),
                "status.phase" => s(&status.phase),
                "status.podIP" => s(&status.pod_ip),
                "status.nominatedNodeName" => s(&status.nominated_node_name),
                _ => None,
            }
        }
        Object::Node(n) => match field {
            "spec.unschedulable" => Some(n.spec.as_ref().is_some_and(|s| s.unschedulable).to_string()),
            _ => None,
        },
        Object::Secret(sec) => match field {
            "type" => s(&sec.r#type),
            _ => None,
        },
        Object::Event(e) => {
            let io = e.involved_object.clone().unwrap_or_default();
            match field {
                "involvedObject.kind" => s(&io.kind),
                "involvedObject.namespace" => s(&io.namespace),
                "involvedObject.name" => s(&io.name),
                "involvedObject.uid" => s(&io.uid),
                "involvedObject.apiVersion" => s(&io.api_version),
                "involvedObject.resourceVersion" => s(&io.resource_version),
                "involvedObject.fieldPath" => s(&io.field_path),
                "reason" => s(&e.reason),
                "reportingComponent" => s(&e.reporting_component),
                "source" => s(&e.source.as_ref().map(|x| x.component.clone()).unwrap_or_default()),
                "type" => s(&e.r#type),
                _ => None,
            }
        }
        Object::ReplicaSet(r) => match field {
            "status.replicas" => Some(r.status.as_ref().map_or(0, |s| s.replicas).to_string()),
            _ => None,
        },
        Object::Namespace(n) => match field {
            "status.phase" => s(&n.status.as_ref().map(|x| x.phase.clone()).unwrap_or_default()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_parse_and_match() {
        let web = labels(&[("app", "web"), ("tier", "fe"), ("replicas", "3")]);
        let db = labels(&[("app", "db"), ("canary", "true")]);
        // (selector, matches web, matches db)
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, api)", true, false),
            ("app notin (web)", false, true),
            ("canary", false, true),
            ("!canary", true, false),
            ("app=web,tier=fe", true, false),
            (" app = web , tier != be ", true, false),
            ("replicas>2", true, false),
            ("replicas<2", false, false),
            ("tier notin (be)", true, true),
            ("app.kubernetes.io/name=web", false, false),
            ("app=", false, false),
        ];
        for (s, w, d) in cases {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((sel.matches(&web), sel.matches(&db)), (w, d), "{s}");
            // Display gives back an equivalent selector.
            assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel, "{s}");
        }
    }

    #[test]
    fn label_selector_errors() {
        for s in [
            "app in web",
            "app in (web",
            "app ~ web",
            "=web",
            "app=web,",
            "bad key=1",
            "app=bad value!",
            "app in ()",
            "replicas>x",
            "-app=1",
        ] {
            assert!(Selector::parse(s).is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn from_label_selector_message() {
        let ls = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![crate::metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: vec!["fe".into()],
            }],
        };
        let sel = Selector::from_label_selector(&ls).unwrap();
        assert_eq!(sel.to_string(), "app=web,tier in (fe)");
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe")])));
    }

    #[test]
    fn field_selectors() {
        let pod = manifest::parse_one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {nodeName: n1, containers: [{name: a, image: x}]}\nstatus: {phase: Running}\n",
        )
        .unwrap();
        let cases = [
            ("", true),
            ("metadata.name=p", true),
            ("metadata.name!=p", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName==n2", false),
            ("status.podIP=", true),
            ("metadata.namespace=ns", true),
        ];
        for (s, want) in cases {
            let fs = FieldSelector::parse(s).unwrap();
            fs.check_fields("Pod").unwrap();
            assert_eq!(fs.matches(&pod), want, "{s}");
        }
        assert!(FieldSelector::parse("spec.nodeName").is_err());
        let err = FieldSelector::parse("spec.foo=1")
            .unwrap()
            .check_fields("Pod")
            .unwrap_err();
        assert!(err.starts_with("field label not supported: spec.foo"), "{err}");
    }
}
