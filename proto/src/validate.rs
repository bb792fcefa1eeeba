//! Validation of objects, with Kubernetes' field paths and messages.
//!
//! [`validate`] checks one object and returns every problem found, each
//! with its field path (`spec.containers[0].image: Required value`). It is
//! meant to run after [`crate::defaults`] (as the API server does: default,
//! then validate), but it accepts undefaulted manifests too, since every
//! default it relies on is also accepted when absent.
//!
//! The format checks (DNS-1123 names, label keys and values, ports, IANA
//! service names, config keys, Go-style durations) are public for the API
//! server, the selector parser and the CLI.

use crate::appsv1;
use crate::coordinationv1;
use crate::corev1;
use crate::istiov1;
use crate::manifest::Object;
use crate::metav1::{self, IntOrString, LabelSelector, ObjectMeta};
use crate::networkingv1;
use crate::quantity::Quantity;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// One problem, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.template.spec.containers[0].image`.
    pub path: String,
    /// `Required value`, `Invalid value: "x": ...`, `Unsupported value: ...`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems of one object (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    /// The Kubernetes `Status` for a rejected write (code 422, reason
    /// `Invalid`, one cause per field), with Kubernetes' message:
    /// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: ...`.
    pub fn to_status(&self, rt: &crate::manifest::ResourceType, name: &str) -> metav1::Status {
        let qualified = if rt.group.is_empty() {
            rt.kind.to_string()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        metav1::Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            metadata: None,
            status: "Failure".into(),
            message: format!("{qualified} \"{name}\" is invalid: {self}"),
            reason: "Invalid".into(),
            details: Some(metav1::StatusDetails {
                name: name.to_string(),
                group: rt.group.to_string(),
                kind: rt.kind.to_string(),
                uid: String::new(),
                causes: self
                    .0
                    .iter()
                    .map(|e| metav1::StatusCause {
                        reason: e.message.split(':').next().unwrap_or_default().to_string(),
                        message: e.message.clone(),
                        field: e.path.clone(),
                    })
                    .collect(),
                retry_after_seconds: 0,
            }),
            code: 422,
        }
    }
}

/// A field path under construction.
#[derive(Clone, Debug)]
struct P(String);

impl P {
    fn root(name: &str) -> P {
        P(name.to_string())
    }
    fn f(&self, name: &str) -> P {
        if self.0.is_empty() {
            P(name.to_string())
        } else {
            P(format!("{}.{name}", self.0))
        }
    }
    fn i(&self, index: usize) -> P {
        P(format!("{}[{index}]", self.0))
    }
    fn k(&self, key: &str) -> P {
        P(format!("{}[{key}]", self.0))
    }
}

#[derive(Default)]
struct Errs(Vec<FieldError>);

impl Errs {
    fn push(&mut self, p: &P, message: String) {
        self.0.push(FieldError {
            path: p.0.clone(),
            message,
        });
    }
    fn required(&mut self, p: &P) {
        self.push(p, "Required value".into());
    }
    fn invalid(&mut self, p: &P, value: impl fmt::Display, why: &str) {
        self.push(p, format!("Invalid value: \"{value}\": {why}"));
    }
    fn invalid_num(&mut self, p: &P, value: impl fmt::Display, why: &str) {
        self.push(p, format!("Invalid value: {value}: {why}"));
    }
    fn unsupported(&mut self, p: &P, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        self.push(
            p,
            format!(
                "Unsupported value: \"{value}\": supported values: {}",
                list.join(", ")
            ),
        );
    }
    fn duplicate(&mut self, p: &P, value: impl fmt::Display) {
        self.push(p, format!("Duplicate value: \"{value}\""));
    }
    fn not_found(&mut self, p: &P, value: impl fmt::Display) {
        self.push(p, format!("Not found: \"{value}\""));
    }
    fn forbidden(&mut self, p: &P, why: &str) {
        self.push(p, format!("Forbidden: {why}"));
    }
    /// Runs a format check; a failure becomes an "Invalid value".
    fn check(&mut self, p: &P, value: &str, r: Result<(), String>) {
        if let Err(why) = r {
            self.invalid(p, value, &why);
        }
    }
    fn one_of(&mut self, p: &P, value: &str, supported: &[&str]) {
        if !supported.contains(&value) {
            self.unsupported(p, value, supported);
        }
    }
    fn opt_one_of(&mut self, p: &P, value: &str, supported: &[&str]) {
        if !value.is_empty() {
            self.one_of(p, value, supported);
        }
    }
}

// ------------------------------------------------------------ format checks

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// An RFC 1123 label: at most 63 characters, lowercase alphanumerics or
/// '-', starting and ending with an alphanumeric (`my-name`, `123-abc`).
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum);
    if !ok {
        errs.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name', or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_string(),
        );
    }
    join(errs)
}

/// An RFC 1123 subdomain: at most 253 characters, dot-separated RFC 1123
/// labels (`example.com`).
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| is_lower_alnum(c) || c == '-')
                && l.starts_with(is_lower_alnum)
                && l.ends_with(is_lower_alnum)
        });
    if !ok {
        errs.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    join(errs)
}

fn join(errs: Vec<String>) -> Result<(), String> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join(", "))
    }
}

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A qualified name (label and annotation keys, finalizers): an optional
/// DNS subdomain prefix and '/', then a name of at most 63 alphanumerics,
/// '-', '_' or '.', starting and ending with an alphanumeric
/// (`app`, `app.kubernetes.io/name`).
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else if let Err(e) = dns1123_subdomain(p) {
            errs.push(format!("prefix part {e}"));
        }
    }
    if name.contains('/') {
        errs.push(
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character, with an optional DNS subdomain \
             prefix and '/' (e.g. 'example.com/MyName')"
                .to_string(),
        );
    } else if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    } else if !is_name_part(name) {
        errs.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
             '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                .to_string(),
        );
    }
    join(errs)
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.',
/// starting and ending with an alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || is_name_part(s) {
        Ok(())
    } else if s.len() > 63 {
        Err("must be no more than 63 characters".to_string())
    } else {
        Err(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character (e.g. \
             'MyValue',  or 'my_value',  or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string(),
        )
    }
}

/// A port number: 1-65535.
pub fn port_number(p: i64) -> Result<(), String> {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        Err("must be between 1 and 65535, inclusive".to_string())
    }
}

/// An IANA service name (a named port): at most 15 lowercase alphanumerics
/// or '-', at least one letter, no "--", not starting or ending with '-'.
pub fn iana_svc_name(s: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    join(errs)
}

/// A ConfigMap/Secret key: at most 253 alphanumerics, '-', '_' or '.',
/// not "." or "..", not starting with "..".
pub fn config_key(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 253
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. \
             'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
             '[-._a-zA-Z0-9]+')"
                .to_string(),
        );
    }
    if s == "." || s == ".." || s.starts_with("..") {
        return Err("must not be '.' or '..' or start with '..'".to_string());
    }
    Ok(())
}

/// An environment variable name: printable ASCII without '='.
pub fn env_var_name(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '=') {
        Ok(())
    } else {
        Err(
            "a valid environment variable name must consist only of printable ASCII \
             characters other than '='"
                .to_string(),
        )
    }
}

/// A Go-style duration (`10s`, `1.5s`, `100ms`, `1h2m3s`; units ns, us, µs,
/// ms, s, m, h), as Istio's durations are written.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?} (e.g. 10s, 1.5s, 100ms, 1m30s)");
    if s.is_empty() {
        return Err(bad());
    }
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = s;
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_nanos(nanos.round() as u64))
}

/// An RFC 3339 timestamp (`2024-05-01T10:00:00Z`,
/// `2024-05-01T10:00:00.123456+02:00`): shape only.
pub fn rfc3339(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let mut ok = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if ok {
        let mut i = 19;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            ok = i > start;
        }
        let zone = &s[i.min(s.len())..];
        ok = ok
            && (zone == "Z"
                || zone == "z"
                || (zone.len() == 6
                    && matches!(zone.as_bytes()[0], b'+' | b'-')
                    && zone.as_bytes()[3] == b':'));
    }
    if ok {
        Ok(())
    } else {
        Err("must be an RFC 3339 timestamp (e.g. 2024-05-01T10:00:00Z)".to_string())
    }
}

fn ip_address(s: &str) -> Result<(), String> {
    s.parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string())
}

// ------------------------------------------------------------- entry point

/// Validates one object: metadata and the kind's own rules.
pub fn validate(obj: &Object) -> Result<(), ValidationErrors> {
    let mut e = Errs::default();
    let t = obj.resource_type();
    let (api_version, kind) = obj.type_meta();
    if !api_version.is_empty() && api_version != t.api_version {
        e.unsupported(&P::root("apiVersion"), api_version, &[t.api_version]);
    }
    if !kind.is_empty() && kind != t.kind {
        e.unsupported(&P::root("kind"), kind, &[t.kind]);
    }
    let name_check: fn(&str) -> Result<(), String> = match obj {
        Object::Namespace(_) | Object::Service(_) => dns1123_label,
        _ => dns1123_subdomain,
    };
    let meta = P::root("metadata");
    match obj.metadata() {
        Some(m) => object_meta(&mut e, &meta, m, t.namespaced, name_check),
        None => e.required(&meta.f("name")),
    }
    match obj {
        Object::Namespace(_) => {}
        Object::Pod(o) => match &o.spec {
            Some(s) => pod_spec(&mut e, &P::root("spec"), s),
            None => e.required(&P::root("spec")),
        },
        Object::Node(o) => node(&mut e, o),
        Object::Service(o) => match &o.spec {
            Some(s) => service_spec(&mut e, &P::root("spec"), s),
            None => e.required(&P::root("spec")),
        },
        Object::Endpoints(o) => endpoints(&mut e, o),
        Object::ConfigMap(o) => config_map(&mut e, o),
        Object::Secret(o) => secret(&mut e, o),
        Object::ReplicaSet(o) => replica_set(&mut e, o),
        Object::Deployment(o) => deployment(&mut e, o),
        Object::ResourceQuota(o) => resource_quota(&mut e, o),
        Object::LimitRange(o) => limit_range(&mut e, o),
        Object::Lease(o) => lease(&mut e, o),
        Object::Event(o) => event(&mut e, o),
        Object::Ingress(o) => ingress(&mut e, o),
        Object::VirtualService(o) => virtual_service(&mut e, o),
        Object::DestinationRule(o) => destination_rule(&mut e, o),
        Object::Gateway(o) => gateway(&mut e, o),
    }
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(e.0))
    }
}

/// Validates a label selector string's parsed form or a LabelSelector
/// message's requirements (shared with the selector parser).
pub fn validate_label_selector(sel: &LabelSelector) -> Result<(), ValidationErrors> {
    let mut e = Errs::default();
    label_selector(&mut e, &P::root(""), sel);
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(e.0))
    }
}

// ---------------------------------------------------------------- metadata

fn object_meta(
    e: &mut Errs,
    p: &P,
    m: &ObjectMeta,
    namespaced: bool,
    name_check: fn(&str) -> Result<(), String>,
) {
    if m.name.is_empty() {
        if m.generate_name.is_empty() {
            e.required(&p.f("name"));
        } else {
            // A generated name is the prefix plus 5 random characters.
            let sample = format!("{}a", m.generate_name);
            if let Err(why) = name_check(&sample) {
                e.invalid(&p.f("generateName"), &m.generate_name, &why);
            }
        }
    } else {
        e.check(&p.f("name"), &m.name, name_check(&m.name));
    }
    if namespaced {
        if !m.namespace.is_empty() {
            e.check(&p.f("namespace"), &m.namespace, dns1123_label(&m.namespace));
        }
    } else if !m.namespace.is_empty() {
        e.forbidden(&p.f("namespace"), "not allowed on this type");
    }
    labels(e, &p.f("labels"), &m.labels);
    let mut size = 0;
    for (k, v) in &m.annotations {
        e.check(&p.f("annotations"), k, qualified_name(k));
        size += k.len() + v.len();
    }
    if size > 256 * 1024 {
        e.push(
            &p.f("annotations"),
            "Too long: must have at most 262144 bytes".into(),
        );
    }
    for (i, o) in m.owner_references.iter().enumerate() {
        let op = p.f("ownerReferences").i(i);
        for (f, v) in [
            ("apiVersion", &o.api_version),
            ("kind", &o.kind),
            ("name", &o.name),
            ("uid", &o.uid),
        ] {
            if v.is_empty() {
                e.required(&op.f(f));
            }
        }
    }
    if m.owner_references
        .iter()
        .filter(|o| o.controller == Some(true))
        .count()
        > 1
    {
        e.invalid(
            &p.f("ownerReferences"),
            "",
            "Only one reference can have Controller set to true",
        );
    }
    for (i, f) in m.finalizers.iter().enumerate() {
        e.check(&p.f("finalizers").i(i), f, qualified_name(f));
    }
    if m.deletion_grace_period_seconds.is_some_and(|s| s < 0) {
        e.invalid_num(
            &p.f("deletionGracePeriodSeconds"),
            m.deletion_grace_period_seconds.unwrap_or_default(),
            "must be greater than or equal to 0",
        );
    }
    for (f, v) in [
        ("creationTimestamp", &m.creation_timestamp),
        ("deletionTimestamp", &m.deletion_timestamp),
    ] {
        if !v.is_empty() {
            e.check(&p.f(f), v, rfc3339(v));
        }
    }
}

fn labels(e: &mut Errs, p: &P, l: &BTreeMap<String, String>) {
    for (k, v) in l {
        e.check(p, k, qualified_name(k));
        e.check(&p.k(k), v, label_value(v));
    }
}

fn label_selector(e: &mut Errs, p: &P, s: &LabelSelector) {
    labels(e, &p.f("matchLabels"), &s.match_labels);
    for (i, r) in s.match_expressions.iter().enumerate() {
        let rp = p.f("matchExpressions").i(i);
        selector_requirement(e, &rp, &r.key, &r.operator, &r.values, false);
    }
}

fn selector_requirement(e: &mut Errs, p: &P, key: &str, op: &str, values: &[String], node: bool) {
    if key.is_empty() {
        e.required(&p.f("key"));
    } else {
        e.check(&p.f("key"), key, qualified_name(key));
    }
    match op {
        "In" | "NotIn" => {
            if values.is_empty() {
                e.push(
                    &p.f("values"),
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
                );
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                e.forbidden(
                    &p.f("values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                );
            }
        }
        "Gt" | "Lt" if node => {
            if values.len() != 1 || values[0].parse::<i64>().is_err() {
                e.push(
                    &p.f("values"),
                    "Required value: must be specified single integer value when `operator` is \
                     'Lt' or 'Gt'"
                        .into(),
                );
            }
        }
        _ if node => e.unsupported(
            &p.f("operator"),
            op,
            &["DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn"],
        ),
        _ => e.unsupported(&p.f("operator"), op, &["In", "NotIn", "Exists", "DoesNotExist"]),
    }
    if !node {
        for (i, v) in values.iter().enumerate() {
            e.check(&p.f("values").i(i), v, label_value(v));
        }
    }
}

fn quantity_map(e: &mut Errs, p: &P, m: &BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        e.check(p, k, qualified_name(k));
        match Quantity::parse(v) {
            Ok(q) if q.is_negative() => e.invalid(&p.k(k), v, "must be greater than or equal to 0"),
            Ok(q) => {
                out.insert(k.clone(), q);
            }
            Err(err) => e.invalid(&p.k(k), v, &err.to_string()),
        }
    }
    out
}

fn int_or_string_port(e: &mut Errs, p: &P, v: &Option<IntOrString>) {
    match v.as_ref().map(|v| &v.value) {
        None | Some(None) => e.required(p),
        Some(Some(metav1::int_or_string::Value::IntVal(n))) => {
            if let Err(why) = port_number(i64::from(*n)) {
                e.invalid_num(p, n, &why);
            }
        }
        Some(Some(metav1::int_or_string::Value::StrVal(s))) => {
            e.check(p, s, iana_svc_name(s));
        }
    }
}

fn non_negative(e: &mut Errs, p: &P, v: i64) {
    if v < 0 {
        e.invalid_num(p, v, "must be greater than or equal to 0");
    }
}

// --------------------------------------------------------------------- Pod

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn pod_spec(e: &mut Errs, p: &P, s: &corev1::PodSpec) {
    // Volumes.
    let mut volume_names = HashSet::new();
    for (i, v) in s.volumes.iter().enumerate() {
        let vp = p.f("volumes").i(i);
        if v.name.is_empty() {
            e.required(&vp.f("name"));
        } else {
            e.check(&vp.f("name"), &v.name, dns1123_label(&v.name));
            if !volume_names.insert(v.name.as_str()) {
                e.duplicate(&vp.f("name"), &v.name);
            }
        }
        volume_source(e, &vp, v);
    }

    // Containers.
    if s.containers.is_empty() {
        e.required(&p.f("containers"));
    }
    let mut container_names = HashSet::new();
    for (field, list, init) in [
        ("initContainers", &s.init_containers, true),
        ("containers", &s.containers, false),
    ] {
        for (i, c) in list.iter().enumerate() {
            let cp = p.f(field).i(i);
            container(e, &cp, c, &volume_names, init);
            if !c.name.is_empty() && !container_names.insert(c.name.as_str()) {
                e.duplicate(&cp.f("name"), &c.name);
            }
        }
    }

    e.opt_one_of(
        &p.f("restartPolicy"),
        &s.restart_policy,
        &["Always", "OnFailure", "Never"],
    );
    e.opt_one_of(
        &p.f("dnsPolicy"),
        &s.dns_policy,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if let Some(t) = s.termination_grace_period_seconds {
        non_negative(e, &p.f("terminationGracePeriodSeconds"), t);
    }
    if let Some(t) = s.active_deadline_seconds {
        if t <= 0 {
            e.invalid_num(&p.f("activeDeadlineSeconds"), t, "must be greater than 0");
        }
    }
    labels(e, &p.f("nodeSelector"), &s.node_selector);
    if !s.node_name.is_empty() {
        e.check(&p.f("nodeName"), &s.node_name, dns1123_subdomain(&s.node_name));
    }
    if !s.service_account_name.is_empty() {
        e.check(
            &p.f("serviceAccountName"),
            &s.service_account_name,
            dns1123_subdomain(&s.service_account_name),
        );
    }
    if !s.hostname.is_empty() {
        e.check(&p.f("hostname"), &s.hostname, dns1123_label(&s.hostname));
    }
    if !s.subdomain.is_empty() {
        e.check(&p.f("subdomain"), &s.subdomain, dns1123_label(&s.subdomain));
    }
    if let Some(a) = &s.affinity {
        affinity(e, &p.f("affinity"), a);
    }
    for (i, t) in s.tolerations.iter().enumerate() {
        toleration(e, &p.f("tolerations").i(i), t);
    }
    for (i, h) in s.host_aliases.iter().enumerate() {
        e.check(&p.f("hostAliases").i(i).f("ip"), &h.ip, ip_address(&h.ip));
    }
    if let Some(d) = &s.dns_config {
        if s.dns_policy == "None" && d.nameservers.is_empty() {
            e.push(
                &p.f("dnsConfig").f("nameservers"),
                "Required value: must provide at least one DNS nameserver when dnsPolicy is None".into(),
            );
        }
        for (i, n) in d.nameservers.iter().enumerate() {
            e.check(&p.f("dnsConfig").f("nameservers").i(i), n, ip_address(n));
        }
    } else if s.dns_policy == "None" {
        e.push(
            &p.f("dnsConfig"),
            "Required value: must provide `dnsConfig` when `dnsPolicy` is None".into(),
        );
    }
    quantity_map(e, &p.f("overhead"), &s.overhead);
    for (i, c) in s.topology_spread_constraints.iter().enumerate() {
        let tp = p.f("topologySpreadConstraints").i(i);
        if c.max_skew <= 0 {
            e.invalid_num(&tp.f("maxSkew"), c.max_skew, "must be greater than zero");
        }
        if c.topology_key.is_empty() {
            e.required(&tp.f("topologyKey"));
        }
        e.one_of(
            &tp.f("whenUnsatisfiable"),
            &c.when_unsatisfiable,
            &["DoNotSchedule", "ScheduleAnyway"],
        );
        if let Some(sel) = &c.label_selector {
            label_selector(e, &tp.f("labelSelector"), sel);
        }
    }
    for (i, s) in s.image_pull_secrets.iter().enumerate() {
        if s.name.is_empty() {
            e.required(&p.f("imagePullSecrets").i(i).f("name"));
        }
    }
}

fn volume_source(e: &mut Errs, p: &P, v: &corev1::Volume) {
    let mut n = 0;
    if let Some(h) = &v.host_path {
        n += 1;
        let hp = p.f("hostPath");
        if h.path.is_empty() {
            e.required(&hp.f("path"));
        }
        if let Some(t) = &h.r#type {
            e.opt_one_of(
                &hp.f("type"),
                t,
                &[
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
    }
    if let Some(d) = &v.empty_dir {
        n += 1;
        let dp = p.f("emptyDir");
        e.opt_one_of(&dp.f("medium"), &d.medium, &["Memory", "HugePages"]);
        if let Some(l) = &d.size_limit {
            match Quantity::parse(l) {
                Ok(q) if q.is_negative() => {
                    e.invalid(&dp.f("sizeLimit"), l, "must be greater than or equal to 0")
                }
                Ok(_) => {}
                Err(err) => e.invalid(&dp.f("sizeLimit"), l, &err.to_string()),
            }
        }
    }
    if let Some(s) = &v.secret {
        n += 1;
        let sp = p.f("secret");
        if s.secret_name.is_empty() {
            e.required(&sp.f("secretName"));
        } else {
            e.check(
                &sp.f("secretName"),
                &s.secret_name,
                dns1123_subdomain(&s.secret_name),
            );
        }
        key_to_paths(e, &sp.f("items"), &s.items);
        file_mode(e, &sp.f("defaultMode"), s.default_mode);
    }
    if let Some(c) = &v.config_map {
        n += 1;
        let cp = p.f("configMap");
        if c.name.is_empty() {
            e.required(&cp.f("name"));
        } else {
            e.check(&cp.f("name"), &c.name, dns1123_subdomain(&c.name));
        }
        key_to_paths(e, &cp.f("items"), &c.items);
        file_mode(e, &cp.f("defaultMode"), c.default_mode);
    }
    if let Some(c) = &v.persistent_volume_claim {
        n += 1;
        if c.claim_name.is_empty() {
            e.required(&p.f("persistentVolumeClaim").f("claimName"));
        }
    }
    if let Some(d) = &v.downward_api {
        n += 1;
        for (i, f) in d.items.iter().enumerate() {
            relative_path(e, &p.f("downwardAPI").f("items").i(i).f("path"), &f.path);
        }
    }
    if let Some(pr) = &v.projected {
        n += 1;
        for (i, s) in pr.sources.iter().enumerate() {
            let sp = p.f("projected").f("sources").i(i);
            let k = usize::from(s.secret.is_some())
                + usize::from(s.config_map.is_some())
                + usize::from(s.downward_api.is_some())
                + usize::from(s.service_account_token.is_some());
            if k != 1 {
                e.forbidden(&sp, "must specify exactly 1 projection type");
            }
        }
    }
    match n {
        0 => e.push(p, "Required value: must specify a volume type".into()),
        1 => {}
        _ => e.forbidden(p, "may not specify more than 1 volume type"),
    }
}

fn key_to_paths(e: &mut Errs, p: &P, items: &[corev1::KeyToPath]) {
    for (i, it) in items.iter().enumerate() {
        let ip = p.i(i);
        if it.key.is_empty() {
            e.required(&ip.f("key"));
        }
        relative_path(e, &ip.f("path"), &it.path);
        file_mode(e, &ip.f("mode"), it.mode);
    }
}

fn relative_path(e: &mut Errs, p: &P, path: &str) {
    if path.is_empty() {
        e.required(p);
    } else if path.starts_with('/') {
        e.invalid(p, path, "must be a relative path");
    } else if path.split('/').any(|s| s == "..") {
        e.invalid(p, path, "must not contain '..'");
    }
}

fn file_mode(e: &mut Errs, p: &P, mode: Option<i32>) {
    if let Some(m) = mode {
        if !(0..=0o777).contains(&m) {
            e.invalid_num(
                p,
                m,
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }
}

fn container(e: &mut Errs, p: &P, c: &corev1::Container, volumes: &HashSet<&str>, init: bool) {
    if c.name.is_empty() {
        e.required(&p.f("name"));
    } else {
        e.check(&p.f("name"), &c.name, dns1123_label(&c.name));
    }
    if c.image.trim().is_empty() {
        e.required(&p.f("image"));
    } else if c.image != c.image.trim() {
        e.invalid(
            &p.f("image"),
            &c.image,
            "must not have leading or trailing whitespace",
        );
    }
    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().enumerate() {
        let pp = p.f("ports").i(i);
        if let Err(why) = port_number(i64::from(port.container_port)) {
            if port.container_port == 0 {
                e.required(&pp.f("containerPort"));
            } else {
                e.invalid_num(&pp.f("containerPort"), port.container_port, &why);
            }
        }
        if port.host_port != 0 {
            if let Err(why) = port_number(i64::from(port.host_port)) {
                e.invalid_num(&pp.f("hostPort"), port.host_port, &why);
            }
        }
        e.opt_one_of(&pp.f("protocol"), &port.protocol, PROTOCOLS);
        if !port.name.is_empty() {
            e.check(&pp.f("name"), &port.name, iana_svc_name(&port.name));
            if !port_names.insert(port.name.as_str()) {
                e.duplicate(&pp.f("name"), &port.name);
            }
        }
        if !port.host_ip.is_empty() {
            e.check(&pp.f("hostIP"), &port.host_ip, ip_address(&port.host_ip));
        }
    }
    for (i, env) in c.env.iter().enumerate() {
        let ep = p.f("env").i(i);
        if env.name.is_empty() {
            e.required(&ep.f("name"));
        } else {
            e.check(&ep.f("name"), &env.name, env_var_name(&env.name));
        }
        if let Some(src) = &env.value_from {
            let vp = ep.f("valueFrom");
            let n = usize::from(src.field_ref.is_some())
                + usize::from(src.resource_field_ref.is_some())
                + usize::from(src.config_map_key_ref.is_some())
                + usize::from(src.secret_key_ref.is_some());
            if n != 1 {
                e.invalid(
                    &vp,
                    "",
                    "must specify exactly one of: `fieldRef`, `resourceFieldRef`, \
                     `configMapKeyRef` or `secretKeyRef`",
                );
            }
            if !env.value.is_empty() {
                e.invalid(&vp, "", "may not be specified when `value` is not empty");
            }
            if let Some(f) = &src.field_ref {
                if f.field_path.is_empty() {
                    e.required(&vp.f("fieldRef").f("fieldPath"));
                }
            }
            if let Some(r) = &src.resource_field_ref {
                if r.resource.is_empty() {
                    e.required(&vp.f("resourceFieldRef").f("resource"));
                }
            }
            if let Some(r) = &src.config_map_key_ref {
                if r.key.is_empty() {
                    e.required(&vp.f("configMapKeyRef").f("key"));
                }
            }
            if let Some(r) = &src.secret_key_ref {
                if r.key.is_empty() {
                    e.required(&vp.f("secretKeyRef").f("key"));
                }
            }
        }
    }
    for (i, src) in c.env_from.iter().enumerate() {
        let sp = p.f("envFrom").i(i);
        match (&src.config_map_ref, &src.secret_ref) {
            (Some(r), None) if r.name.is_empty() => e.required(&sp.f("configMapRef").f("name")),
            (None, Some(r)) if r.name.is_empty() => e.required(&sp.f("secretRef").f("name")),
            (Some(_), None) | (None, Some(_)) => {}
            _ => e.invalid(
                &sp,
                "",
                "must specify exactly one of: `configMapRef` or `secretRef`",
            ),
        }
    }
    if let Some(r) = &c.resources {
        let rp = p.f("resources");
        let limits = quantity_map(e, &rp.f("limits"), &r.limits);
        let requests = quantity_map(e, &rp.f("requests"), &r.requests);
        for (k, req) in &requests {
            if let Some(lim) = limits.get(k) {
                if req > lim {
                    e.invalid(
                        &rp.f("requests").k(k),
                        &r.requests[k],
                        &format!("must be less than or equal to {k} limit of {}", r.limits[k]),
                    );
                }
            }
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = p.f("volumeMounts").i(i);
        if m.name.is_empty() {
            e.required(&mp.f("name"));
        } else if !volumes.contains(m.name.as_str()) {
            e.not_found(&mp.f("name"), &m.name);
        }
        if m.mount_path.is_empty() {
            e.required(&mp.f("mountPath"));
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            e.invalid(&mp.f("mountPath"), &m.mount_path, "must be unique");
        }
        if m.sub_path.starts_with('/') || m.sub_path.split('/').any(|s| s == "..") {
            e.invalid(
                &mp.f("subPath"),
                &m.sub_path,
                "must be a relative path without '..'",
            );
        }
        if let Some(mode) = &m.mount_propagation {
            e.one_of(
                &mp.f("mountPropagation"),
                mode,
                &["Bidirectional", "HostToContainer", "None"],
            );
        }
    }
    for (f, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(pr) = probe {
            self::probe(e, &p.f(f), pr);
            if f != "readinessProbe" && pr.success_threshold > 1 {
                e.invalid_num(&p.f(f).f("successThreshold"), pr.success_threshold, "must be 1");
            }
        }
    }
    if init {
        for (f, set) in [
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
        ] {
            if set && c.restart_policy.as_deref() != Some("Always") {
                e.forbidden(
                    &p.f(f),
                    "may not be set for init containers without restartPolicy=Always",
                );
            }
        }
    }
    if let Some(l) = &c.lifecycle {
        for (f, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = h {
                let hp = p.f("lifecycle").f(f);
                let n = usize::from(h.exec.is_some())
                    + usize::from(h.http_get.is_some())
                    + usize::from(h.tcp_socket.is_some())
                    + usize::from(h.sleep.is_some());
                if n != 1 {
                    e.forbidden(&hp, "must specify exactly 1 handler type");
                }
                handlers(
                    e,
                    &hp,
                    h.exec.as_ref(),
                    h.http_get.as_ref(),
                    h.tcp_socket.as_ref(),
                );
            }
        }
    }
    e.opt_one_of(
        &p.f("imagePullPolicy"),
        &c.image_pull_policy,
        &["Always", "IfNotPresent", "Never"],
    );
    e.opt_one_of(
        &p.f("terminationMessagePolicy"),
        &c.termination_message_policy,
        &["File", "FallbackToLogsOnError"],
    );
    if let Some(rp) = &c.restart_policy {
        if init {
            e.one_of(&p.f("restartPolicy"), rp, &["Always"]);
        } else {
            e.forbidden(&p.f("restartPolicy"), "may not be set for non-init containers");
        }
    }
}

fn probe(e: &mut Errs, p: &P, pr: &corev1::Probe) {
    let n = usize::from(pr.exec.is_some())
        + usize::from(pr.http_get.is_some())
        + usize::from(pr.tcp_socket.is_some())
        + usize::from(pr.grpc.is_some());
    match n {
        0 => e.required(&p.f("handler")),
        1 => {}
        _ => e.forbidden(p, "may not specify more than 1 handler type"),
    }
    handlers(
        e,
        p,
        pr.exec.as_ref(),
        pr.http_get.as_ref(),
        pr.tcp_socket.as_ref(),
    );
    if let Some(g) = &pr.grpc {
        if let Err(why) = port_number(i64::from(g.port)) {
            e.invalid_num(&p.f("grpc").f("port"), g.port, &why);
        }
    }
    for (f, v) in [
        ("initialDelaySeconds", pr.initial_delay_seconds),
        ("timeoutSeconds", pr.timeout_seconds),
        ("periodSeconds", pr.period_seconds),
        ("successThreshold", pr.success_threshold),
        ("failureThreshold", pr.failure_threshold),
    ] {
        non_negative(e, &p.f(f), i64::from(v));
    }
    if let Some(t) = pr.termination_grace_period_seconds {
        if t <= 0 {
            e.invalid_num(&p.f("terminationGracePeriodSeconds"), t, "must be greater than 0");
        }
    }
}

fn handlers(
    e: &mut Errs,
    p: &P,
    exec: Option<&corev1::ExecAction>,
    http: Option<&corev1::HttpGetAction>,
    tcp: Option<&corev1::TcpSocketAction>,
) {
    if let Some(x) = exec {
        if x.command.is_empty() {
            e.required(&p.f("exec").f("command"));
        }
    }
    if let Some(h) = http {
        let hp = p.f("httpGet");
        int_or_string_port(e, &hp.f("port"), &h.port);
        e.opt_one_of(&hp.f("scheme"), &h.scheme, &["HTTP", "HTTPS"]);
        for (i, hdr) in h.http_headers.iter().enumerate() {
            if hdr.name.is_empty() {
                e.required(&hp.f("httpHeaders").i(i).f("name"));
            }
        }
    }
    if let Some(t) = tcp {
        int_or_string_port(e, &p.f("tcpSocket").f("port"), &t.port);
    }
}

fn affinity(e: &mut Errs, p: &P, a: &corev1::Affinity) {
    if let Some(na) = &a.node_affinity {
        let np = p.f("nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let rp = np.f("requiredDuringSchedulingIgnoredDuringExecution");
            if req.node_selector_terms.is_empty() {
                e.push(
                    &rp.f("nodeSelectorTerms"),
                    "Required value: must have at least one node selector term".into(),
                );
            }
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                node_selector_term(e, &rp.f("nodeSelectorTerms").i(i), t);
            }
        }
        for (i, t) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .enumerate()
        {
            let tp = np.f("preferredDuringSchedulingIgnoredDuringExecution").i(i);
            weight(e, &tp.f("weight"), t.weight);
            match &t.preference {
                Some(pref) => node_selector_term(e, &tp.f("preference"), pref),
                None => e.required(&tp.f("preference")),
            }
        }
    }
    for (f, terms) in [
        (
            "podAffinity",
            a.pod_affinity.as_ref().map(|x| {
                (
                    &x.required_during_scheduling_ignored_during_execution,
                    &x.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
        (
            "podAntiAffinity",
            a.pod_anti_affinity.as_ref().map(|x| {
                (
                    &x.required_during_scheduling_ignored_during_execution,
                    &x.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
    ] {
        let Some((required, preferred)) = terms else {
            continue;
        };
        let ap = p.f(f);
        for (i, t) in required.iter().enumerate() {
            pod_affinity_term(e, &ap.f("requiredDuringSchedulingIgnoredDuringExecution").i(i), t);
        }
        for (i, t) in preferred.iter().enumerate() {
            let tp = ap.f("preferredDuringSchedulingIgnoredDuringExecution").i(i);
            weight(e, &tp.f("weight"), t.weight);
            match &t.pod_affinity_term {
                Some(term) => pod_affinity_term(e, &tp.f("podAffinityTerm"), term),
                None => e.required(&tp.f("podAffinityTerm")),
            }
        }
    }
}

fn weight(e: &mut Errs, p: &P, w: i32) {
    if !(1..=100).contains(&w) {
        e.invalid_num(p, w, "must be in the range 1-100");
    }
}

fn node_selector_term(e: &mut Errs, p: &P, t: &corev1::NodeSelectorTerm) {
    for (i, r) in t.match_expressions.iter().enumerate() {
        selector_requirement(
            e,
            &p.f("matchExpressions").i(i),
            &r.key,
            &r.operator,
            &r.values,
            true,
        );
    }
    for (i, r) in t.match_fields.iter().enumerate() {
        let rp = p.f("matchFields").i(i);
        if r.key != "metadata.name" {
            e.unsupported(&rp.f("key"), &r.key, &["metadata.name"]);
        }
        if !matches!(r.operator.as_str(), "In" | "NotIn") {
            e.unsupported(&rp.f("operator"), &r.operator, &["In", "NotIn"]);
        }
        if r.values.len() != 1 {
            e.push(
                &rp.f("values"),
                "Required value: must be only one value when `operator` is 'In' or 'NotIn' for \
                 node field selector"
                    .into(),
            );
        }
    }
}

fn pod_affinity_term(e: &mut Errs, p: &P, t: &corev1::PodAffinityTerm) {
    if t.topology_key.is_empty() {
        e.push(&p.f("topologyKey"), "Required value: can not be empty".into());
    } else {
        e.check(
            &p.f("topologyKey"),
            &t.topology_key,
            qualified_name(&t.topology_key),
        );
    }
    if let Some(s) = &t.label_selector {
        label_selector(e, &p.f("labelSelector"), s);
    }
    if let Some(s) = &t.namespace_selector {
        label_selector(e, &p.f("namespaceSelector"), s);
    }
    for (i, n) in t.namespaces.iter().enumerate() {
        e.check(&p.f("namespaces").i(i), n, dns1123_label(n));
    }
}

fn toleration(e: &mut Errs, p: &P, t: &corev1::Toleration) {
    let op = if t.operator.is_empty() {
        "Equal"
    } else {
        t.operator.as_str()
    };
    if t.key.is_empty() {
        if op != "Exists" {
            e.invalid(
                &p.f("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values \
                 and all keys\"",
            );
        }
    } else {
        e.check(&p.f("key"), &t.key, qualified_name(&t.key));
    }
    match op {
        "Equal" => e.check(&p.f("value"), &t.value, label_value(&t.value)),
        "Exists" => {
            if !t.value.is_empty() {
                e.invalid(
                    &p.f("operator"),
                    &t.value,
                    "value must be empty when `operator` is 'Exists'",
                );
            }
        }
        _ => e.unsupported(&p.f("operator"), op, &["Equal", "Exists"]),
    }
    e.opt_one_of(
        &p.f("effect"),
        &t.effect,
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
    );
    if t.toleration_seconds.is_some() && t.effect != "NoExecute" {
        e.invalid(
            &p.f("effect"),
            &t.effect,
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        );
    }
}

// --------------------------------------------------------------------- Node

fn node(e: &mut Errs, n: &corev1::Node) {
    let p = P::root("spec");
    if let Some(s) = &n.spec {
        for (i, t) in s.taints.iter().enumerate() {
            let tp = p.f("taints").i(i);
            if t.key.is_empty() {
                e.required(&tp.f("key"));
            } else {
                e.check(&tp.f("key"), &t.key, qualified_name(&t.key));
            }
            e.check(&tp.f("value"), &t.value, label_value(&t.value));
            e.one_of(
                &tp.f("effect"),
                &t.effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
    if let Some(s) = &n.status {
        let sp = P::root("status");
        quantity_map(e, &sp.f("capacity"), &s.capacity);
        quantity_map(e, &sp.f("allocatable"), &s.allocatable);
    }
}

// ------------------------------------------------------------------ Service

fn service_spec(e: &mut Errs, p: &P, s: &corev1::ServiceSpec) {
    let ty = if s.r#type.is_empty() {
        "ClusterIP"
    } else {
        s.r#type.as_str()
    };
    e.one_of(
        &p.f("type"),
        ty,
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    let headless = s.cluster_ip == "None";
    if ty == "ExternalName" {
        if s.external_name.is_empty() {
            e.required(&p.f("externalName"));
        } else {
            e.check(
                &p.f("externalName"),
                &s.external_name,
                dns1123_subdomain(&s.external_name),
            );
        }
    } else if s.ports.is_empty() && !headless {
        e.required(&p.f("ports"));
    }
    let mut names = HashSet::new();
    let mut ports = HashSet::new();
    for (i, port) in s.ports.iter().enumerate() {
        let pp = p.f("ports").i(i);
        if port.name.is_empty() {
            if s.ports.len() > 1 {
                e.required(&pp.f("name"));
            }
        } else {
            e.check(&pp.f("name"), &port.name, dns1123_label(&port.name));
            if !names.insert(port.name.as_str()) {
                e.duplicate(&pp.f("name"), &port.name);
            }
        }
        if let Err(why) = port_number(i64::from(port.port)) {
            if port.port == 0 {
                e.required(&pp.f("port"));
            } else {
                e.invalid_num(&pp.f("port"), port.port, &why);
            }
        }
        let protocol = if port.protocol.is_empty() {
            "TCP"
        } else {
            port.protocol.as_str()
        };
        e.one_of(&pp.f("protocol"), protocol, PROTOCOLS);
        if !ports.insert((port.port, protocol)) {
            e.duplicate(&pp, format!("{}/{}", port.port, protocol));
        }
        if port.target_port.as_ref().is_some_and(|t| t.value.is_some()) {
            int_or_string_port(e, &pp.f("targetPort"), &port.target_port);
        }
        if port.node_port != 0 {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                e.forbidden(&pp.f("nodePort"), "may not be used when `type` is 'ClusterIP'");
            } else if let Err(why) = port_number(i64::from(port.node_port)) {
                e.invalid_num(&pp.f("nodePort"), port.node_port, &why);
            }
        }
    }
    labels(e, &p.f("selector"), &s.selector);
    if !s.cluster_ip.is_empty() && !headless {
        e.check(&p.f("clusterIP"), &s.cluster_ip, ip_address(&s.cluster_ip));
    }
    for (i, ip) in s.cluster_ips.iter().enumerate() {
        if !(i == 0 && ip == "None") {
            e.check(&p.f("clusterIPs").i(i), ip, ip_address(ip));
        }
    }
    for (i, ip) in s.external_ips.iter().enumerate() {
        e.check(&p.f("externalIPs").i(i), ip, ip_address(ip));
    }
    e.opt_one_of(
        &p.f("sessionAffinity"),
        &s.session_affinity,
        &["ClientIP", "None"],
    );
    e.opt_one_of(
        &p.f("externalTrafficPolicy"),
        &s.external_traffic_policy,
        &["Cluster", "Local"],
    );
    if let Some(pol) = &s.internal_traffic_policy {
        e.one_of(&p.f("internalTrafficPolicy"), pol, &["Cluster", "Local"]);
    }
    if let Some(t) = s
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
    {
        if !(1..=86400).contains(&t) {
            e.invalid_num(
                &p.f("sessionAffinityConfig").f("clientIP").f("timeoutSeconds"),
                t,
                "must be greater than 0 and less than 86400",
            );
        }
    }
}

// ---------------------------------------------------------------- Endpoints

fn endpoints(e: &mut Errs, o: &corev1::Endpoints) {
    for (i, s) in o.subsets.iter().enumerate() {
        let sp = P::root("subsets").i(i);
        for (f, list) in [
            ("addresses", &s.addresses),
            ("notReadyAddresses", &s.not_ready_addresses),
        ] {
            for (j, a) in list.iter().enumerate() {
                e.check(&sp.f(f).i(j).f("ip"), &a.ip, ip_address(&a.ip));
            }
        }
        for (j, port) in s.ports.iter().enumerate() {
            let pp = sp.f("ports").i(j);
            if let Err(why) = port_number(i64::from(port.port)) {
                e.invalid_num(&pp.f("port"), port.port, &why);
            }
            if !port.name.is_empty() {
                e.check(&pp.f("name"), &port.name, dns1123_label(&port.name));
            }
            e.opt_one_of(&pp.f("protocol"), &port.protocol, PROTOCOLS);
        }
    }
}

// --------------------------------------------------------- ConfigMap, Secret

fn config_map(e: &mut Errs, o: &corev1::ConfigMap) {
    for k in o.data.keys() {
        e.check(&P::root("data").k(k), k, config_key(k));
    }
    for k in o.binary_data.keys() {
        e.check(&P::root("binaryData").k(k), k, config_key(k));
        if o.data.contains_key(k) {
            e.invalid(&P::root("data").k(k), k, "duplicate of key present in binaryData");
        }
    }
    let size: usize = o.data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + o.binary_data
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > 1024 * 1024 {
        e.push(&P::root(""), "Too long: must have at most 1048576 bytes".into());
    }
}

fn secret(e: &mut Errs, o: &corev1::Secret) {
    for k in o.data.keys() {
        e.check(&P::root("data").k(k), k, config_key(k));
    }
    for k in o.string_data.keys() {
        e.check(&P::root("stringData").k(k), k, config_key(k));
    }
    let size: usize = o.data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + o.string_data
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > 1024 * 1024 {
        e.push(
            &P::root("data"),
            "Too long: must have at most 1048576 bytes".into(),
        );
    }
    if o.r#type == "kubernetes.io/tls" {
        for k in ["tls.crt", "tls.key"] {
            if !o.data.contains_key(k) && !o.string_data.contains_key(k) {
                e.required(&P::root("data").k(k));
            }
        }
    }
}

// ------------------------------------------------------ ReplicaSet, Deployment

fn workload(
    e: &mut Errs,
    p: &P,
    replicas: Option<i32>,
    selector: &Option<LabelSelector>,
    template: &Option<corev1::PodTemplateSpec>,
) {
    if let Some(r) = replicas {
        non_negative(e, &p.f("replicas"), i64::from(r));
    }
    let sp = p.f("selector");
    match selector {
        Some(s) if !s.match_labels.is_empty() || !s.match_expressions.is_empty() => label_selector(e, &sp, s),
        _ => e.push(
            &sp,
            "Required value: empty selector is invalid for deployment".into(),
        ),
    }
    let tp = p.f("template");
    let Some(t) = template else {
        e.required(&tp);
        return;
    };
    let labels_of = t.metadata.as_ref().map(|m| &m.labels);
    if let Some(m) = &t.metadata {
        labels(e, &tp.f("metadata").f("labels"), &m.labels);
    }
    if let (Some(s), Some(l)) = (selector, labels_of) {
        let empty = s.match_labels.is_empty() && s.match_expressions.is_empty();
        if !empty && !selector_matches(s, l) {
            e.invalid(
                &tp.f("metadata").f("labels"),
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                "`selector` does not match template `labels`",
            );
        }
    } else if selector.is_some() {
        e.invalid(
            &tp.f("metadata").f("labels"),
            "",
            "`selector` does not match template `labels`",
        );
    }
    match &t.spec {
        Some(s) => {
            pod_spec(e, &tp.f("spec"), s);
            if !s.restart_policy.is_empty() && s.restart_policy != "Always" {
                e.unsupported(&tp.f("spec").f("restartPolicy"), &s.restart_policy, &["Always"]);
            }
            if s.active_deadline_seconds.is_some() {
                e.forbidden(
                    &tp.f("spec").f("activeDeadlineSeconds"),
                    "activeDeadlineSeconds in ReplicaSet is not Supported",
                );
            }
        }
        None => e.required(&tp.f("spec")),
    }
}

/// True when `labels` satisfy the selector (matchLabels and
/// matchExpressions, ANDed). An empty selector matches everything.
pub fn selector_matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && s.match_expressions.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => v.is_some_and(|v| r.values.contains(v)),
                "NotIn" => v.is_none_or(|v| !r.values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

fn replica_set(e: &mut Errs, o: &appsv1::ReplicaSet) {
    let p = P::root("spec");
    let Some(s) = &o.spec else {
        e.required(&p);
        return;
    };
    workload(e, &p, s.replicas, &s.selector, &s.template);
    non_negative(e, &p.f("minReadySeconds"), i64::from(s.min_ready_seconds));
}

fn deployment(e: &mut Errs, o: &appsv1::Deployment) {
    let p = P::root("spec");
    let Some(s) = &o.spec else {
        e.required(&p);
        return;
    };
    workload(e, &p, s.replicas, &s.selector, &s.template);
    non_negative(e, &p.f("minReadySeconds"), i64::from(s.min_ready_seconds));
    if let Some(r) = s.revision_history_limit {
        non_negative(e, &p.f("revisionHistoryLimit"), i64::from(r));
    }
    if let Some(d) = s.progress_deadline_seconds {
        if d <= s.min_ready_seconds {
            e.invalid_num(
                &p.f("progressDeadlineSeconds"),
                d,
                "must be greater than minReadySeconds",
            );
        }
    }
    if let Some(st) = &s.strategy {
        let sp = p.f("strategy");
        let ty = if st.r#type.is_empty() {
            "RollingUpdate"
        } else {
            st.r#type.as_str()
        };
        e.one_of(&sp.f("type"), ty, &["Recreate", "RollingUpdate"]);
        if ty == "Recreate" && st.rolling_update.is_some() {
            e.forbidden(
                &sp.f("rollingUpdate"),
                "may not be specified when strategy `type` is 'Recreate'",
            );
        }
        if let Some(ru) = &st.rolling_update {
            let rp = sp.f("rollingUpdate");
            let unavailable = int_or_percent(e, &rp.f("maxUnavailable"), &ru.max_unavailable);
            let surge = int_or_percent(e, &rp.f("maxSurge"), &ru.max_surge);
            if let Some((true, pct)) = unavailable {
                if pct > 100 {
                    e.invalid(
                        &rp.f("maxUnavailable"),
                        ru.max_unavailable
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        "must not be greater than 100%",
                    );
                }
            }
            if unavailable.is_some_and(|u| u.1 == 0) && surge.is_some_and(|s| s.1 == 0) {
                e.invalid(&rp.f("maxUnavailable"), "0", "may not be 0 when `maxSurge` is 0");
            }
        }
    }
}

/// Reads an IntOrString that must be a non-negative integer or percentage:
/// returns (is a percentage, value) when set and well-formed.
fn int_or_percent(e: &mut Errs, p: &P, v: &Option<IntOrString>) -> Option<(bool, i64)> {
    let v = v.as_ref()?;
    match &v.value {
        None => None,
        Some(metav1::int_or_string::Value::IntVal(n)) => {
            if *n < 0 {
                e.invalid_num(p, n, "must be greater than or equal to 0");
            }
            Some((false, i64::from(*n)))
        }
        Some(metav1::int_or_string::Value::StrVal(s)) => {
            match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
                Some(n) if n >= 0 => Some((true, n)),
                _ => {
                    e.invalid(p, s, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
                    None
                }
            }
        }
    }
}

// ------------------------------------------------ ResourceQuota, LimitRange

fn resource_quota(e: &mut Errs, o: &corev1::ResourceQuota) {
    if let Some(s) = &o.spec {
        let p = P::root("spec");
        quantity_map(e, &p.f("hard"), &s.hard);
        for (i, scope) in s.scopes.iter().enumerate() {
            e.one_of(
                &p.f("scopes").i(i),
                scope,
                &[
                    "Terminating",
                    "NotTerminating",
                    "BestEffort",
                    "NotBestEffort",
                    "PriorityClass",
                    "CrossNamespacePodAffinity",
                ],
            );
        }
    }
    if let Some(s) = &o.status {
        quantity_map(e, &P::root("status").f("hard"), &s.hard);
        quantity_map(e, &P::root("status").f("used"), &s.used);
    }
}

fn limit_range(e: &mut Errs, o: &corev1::LimitRange) {
    let Some(s) = &o.spec else {
        e.required(&P::root("spec"));
        return;
    };
    for (i, item) in s.limits.iter().enumerate() {
        let p = P::root("spec").f("limits").i(i);
        e.one_of(
            &p.f("type"),
            &item.r#type,
            &["Container", "Pod", "PersistentVolumeClaim"],
        );
        let max = quantity_map(e, &p.f("max"), &item.max);
        let min = quantity_map(e, &p.f("min"), &item.min);
        let default = quantity_map(e, &p.f("default"), &item.default);
        let default_request = quantity_map(e, &p.f("defaultRequest"), &item.default_request);
        quantity_map(e, &p.f("maxLimitRequestRatio"), &item.max_limit_request_ratio);
        if item.r#type == "Pod" && !(item.default.is_empty() && item.default_request.is_empty()) {
            e.forbidden(&p.f("default"), "may not be specified when `type` is 'Pod'");
        }
        for (k, lo) in &min {
            if max.get(k).is_some_and(|hi| lo > hi) {
                e.invalid(
                    &p.f("min").k(k),
                    &item.min[k],
                    &format!(
                        "min value {} is greater than max value {}",
                        item.min[k], item.max[k]
                    ),
                );
            }
        }
        for (name, values, field) in [
            ("default", &default, "default"),
            ("defaultRequest", &default_request, "defaultRequest"),
        ] {
            for (k, v) in values {
                let raw = if name == "default" {
                    &item.default[k]
                } else {
                    &item.default_request[k]
                };
                if min.get(k).is_some_and(|lo| v < lo) || max.get(k).is_some_and(|hi| v > hi) {
                    e.invalid(
                        &p.f(field).k(k),
                        raw,
                        &format!("{name} value must be between min and max"),
                    );
                }
            }
        }
    }
}

// -------------------------------------------------------------- Lease, Event

fn lease(e: &mut Errs, o: &coordinationv1::Lease) {
    let Some(s) = &o.spec else { return };
    let p = P::root("spec");
    if let Some(d) = s.lease_duration_seconds {
        if d <= 0 {
            e.invalid_num(&p.f("leaseDurationSeconds"), d, "must be greater than 0");
        }
    }
    if let Some(t) = s.lease_transitions {
        non_negative(e, &p.f("leaseTransitions"), i64::from(t));
    }
    for (f, v) in [("acquireTime", &s.acquire_time), ("renewTime", &s.renew_time)] {
        if let Some(v) = v {
            e.check(&p.f(f), v, rfc3339(v));
        }
    }
}

fn event(e: &mut Errs, o: &corev1::Event) {
    let ns = o.metadata.as_ref().map_or("", |m| m.namespace.as_str());
    if let Some(inv) = &o.involved_object {
        if !inv.namespace.is_empty() && !ns.is_empty() && inv.namespace != ns {
            e.invalid(
                &P::root("involvedObject").f("namespace"),
                &inv.namespace,
                "does not match event.namespace",
            );
        }
    } else {
        e.required(&P::root("involvedObject"));
    }
    e.opt_one_of(&P::root("type"), &o.r#type, &["Normal", "Warning"]);
    if o.count < 0 {
        e.invalid_num(&P::root("count"), o.count, "must be greater than or equal to 0");
    }
}

// ------------------------------------------------------------------ Ingress

fn ingress(e: &mut Errs, o: &networkingv1::Ingress) {
    let p = P::root("spec");
    let Some(s) = &o.spec else {
        e.required(&p);
        return;
    };
    if s.default_backend.is_none() && s.rules.is_empty() {
        e.invalid(&p, "", "either `defaultBackend` or `rules` must be specified");
    }
    if let Some(b) = &s.default_backend {
        ingress_backend(e, &p.f("defaultBackend"), b);
    }
    for (i, t) in s.tls.iter().enumerate() {
        for (j, h) in t.hosts.iter().enumerate() {
            e.check(&p.f("tls").i(i).f("hosts").i(j), h, wildcard_host(h));
        }
    }
    for (i, r) in s.rules.iter().enumerate() {
        let rp = p.f("rules").i(i);
        if !r.host.is_empty() {
            e.check(&rp.f("host"), &r.host, wildcard_host(&r.host));
        }
        let Some(http) = &r.http else { continue };
        if http.paths.is_empty() {
            e.required(&rp.f("http").f("paths"));
        }
        for (j, path) in http.paths.iter().enumerate() {
            let pp = rp.f("http").f("paths").i(j);
            if path.path_type.is_empty() {
                e.push(
                    &pp.f("pathType"),
                    "Required value: pathType must be specified".into(),
                );
            } else {
                e.one_of(
                    &pp.f("pathType"),
                    &path.path_type,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                );
            }
            if matches!(path.path_type.as_str(), "Exact" | "Prefix") {
                if !path.path.starts_with('/') {
                    e.invalid(&pp.f("path"), &path.path, "must be an absolute path");
                }
                for bad in ["//", "/./", "/../", "%2f", "%2F"] {
                    if path.path.contains(bad) {
                        e.invalid(&pp.f("path"), &path.path, &format!("must not contain '{bad}'"));
                    }
                }
            } else if !path.path.is_empty() && !path.path.starts_with('/') {
                e.invalid(&pp.f("path"), &path.path, "must be an absolute path");
            }
            match &path.backend {
                Some(b) => ingress_backend(e, &pp.f("backend"), b),
                None => e.required(&pp.f("backend")),
            }
        }
    }
}

fn ingress_backend(e: &mut Errs, p: &P, b: &networkingv1::IngressBackend) {
    match (&b.service, &b.resource) {
        (Some(s), None) => {
            let sp = p.f("service");
            if s.name.is_empty() {
                e.required(&sp.f("name"));
            } else {
                e.check(&sp.f("name"), &s.name, dns1123_label(&s.name));
            }
            match &s.port {
                None => e.required(&sp.f("port")),
                Some(port) => match (port.name.is_empty(), port.number) {
                    (true, 0) => e.required(&sp.f("port")),
                    (true, n) => {
                        if let Err(why) = port_number(i64::from(n)) {
                            e.invalid_num(&sp.f("port").f("number"), n, &why);
                        }
                    }
                    (false, 0) => e.check(&sp.f("port").f("name"), &port.name, iana_svc_name(&port.name)),
                    (false, _) => e.invalid(
                        &sp.f("port"),
                        &port.name,
                        "cannot set both port name & port number",
                    ),
                },
            }
        }
        (None, Some(r)) => {
            if r.kind.is_empty() {
                e.required(&p.f("resource").f("kind"));
            }
            if r.name.is_empty() {
                e.required(&p.f("resource").f("name"));
            }
        }
        (Some(_), Some(_)) => e.invalid(p, "", "cannot set both resource and service backends"),
        (None, None) => e.invalid(p, "", "resource or service backend is required"),
    }
}

/// A host name, possibly with a leading `*.` wildcard (Ingress rules).
fn wildcard_host(h: &str) -> Result<(), String> {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Err("must be a DNS name, not an IP address".to_string());
    }
    dns1123_subdomain(h.strip_prefix("*.").unwrap_or(h))
}

// -------------------------------------------------------------------- Istio

/// An Istio host: `*`, a name with an optional leading `*.` wildcard
/// (`reviews`, `reviews.prod.svc.cluster.local`, `*.example.com`); Gateway
/// server hosts may carry a namespace prefix (`prod/*.example.com`).
fn istio_host(h: &str, allow_namespace: bool) -> Result<(), String> {
    let host = match h.split_once('/') {
        Some((ns, host)) if allow_namespace => {
            if !(ns == "*" || ns == "." || ns == "~" || dns1123_label(ns).is_ok()) {
                return Err("namespace part must be *, . or a namespace name".to_string());
            }
            host
        }
        Some(_) => return Err("must not contain '/'".to_string()),
        None => h,
    };
    if host == "*" {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("must be '*', or a DNS name with an optional leading '*.' wildcard".to_string())
    }
}

fn duration(e: &mut Errs, p: &P, v: &str) {
    if !v.is_empty() {
        match parse_duration(v) {
            Ok(d) if d < std::time::Duration::from_millis(1) && d != std::time::Duration::ZERO => {
                e.invalid(p, v, "duration must be at least 1ms")
            }
            Ok(_) => {}
            Err(why) => e.invalid(p, v, &why),
        }
    }
}

fn percent(e: &mut Errs, p: &P, v: &Option<istiov1::Percent>) {
    if let Some(v) = v {
        if !(0.0..=100.0).contains(&v.value) {
            e.invalid_num(&p.f("value"), v.value, "percentage must be in range 0-100");
        }
    }
}

fn string_match(e: &mut Errs, p: &P, m: &istiov1::StringMatch) {
    let n = usize::from(m.exact.is_some()) + usize::from(m.prefix.is_some()) + usize::from(m.regex.is_some());
    if n != 1 {
        e.invalid(p, "", "must specify exactly one of `exact`, `prefix` or `regex`");
    }
}

fn istio_destination(e: &mut Errs, p: &P, d: &Option<istiov1::Destination>) {
    let Some(d) = d else {
        e.required(p);
        return;
    };
    if d.host.is_empty() {
        e.required(&p.f("host"));
    } else {
        e.check(&p.f("host"), &d.host, istio_host(&d.host, false));
    }
    if !d.subset.is_empty() {
        e.check(&p.f("subset"), &d.subset, dns1123_label(&d.subset));
    }
    if let Some(port) = &d.port {
        if let Err(why) = port_number(i64::from(port.number)) {
            e.invalid_num(&p.f("port").f("number"), port.number, &why);
        }
    }
}

fn route_weights(e: &mut Errs, p: &P, weights: &[i32]) {
    for (i, w) in weights.iter().enumerate() {
        if !(0..=100).contains(w) {
            e.invalid_num(&p.i(i).f("weight"), w, "weight must be in range 0-100");
        }
    }
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if weights.len() > 1 && total == 0 {
        e.invalid(p, "", "total destination weight must be greater than 0");
    }
}

fn virtual_service(e: &mut Errs, o: &istiov1::VirtualService) {
    let p = P::root("spec");
    let Some(s) = &o.spec else {
        e.required(&p);
        return;
    };
    if s.hosts.is_empty() {
        e.push(
            &p.f("hosts"),
            "Required value: virtual service must have at least one host".into(),
        );
    }
    for (i, h) in s.hosts.iter().enumerate() {
        e.check(&p.f("hosts").i(i), h, istio_host(h, false));
    }
    for (i, g) in s.gateways.iter().enumerate() {
        if g.is_empty() {
            e.required(&p.f("gateways").i(i));
        }
    }
    if s.http.is_empty() && s.tcp.is_empty() && s.tls.is_empty() {
        e.push(
            &p,
            "Required value: http, tcp or tls must be provided in virtual service".into(),
        );
    }
    for (i, r) in s.http.iter().enumerate() {
        let rp = p.f("http").i(i);
        let has_other = r.redirect.is_some() || r.direct_response.is_some() || r.delegate.is_some();
        if r.route.is_empty() && !has_other {
            e.push(
                &rp.f("route"),
                "Required value: HTTP route, redirect, directResponse or delegate is required".into(),
            );
        }
        if !r.route.is_empty() && (r.redirect.is_some() || r.direct_response.is_some()) {
            e.invalid(
                &rp,
                "",
                "HTTP route cannot contain both route and redirect/directResponse",
            );
        }
        for (j, m) in r.r#match.iter().enumerate() {
            let mp = rp.f("match").i(j);
            for (f, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    string_match(e, &mp.f(f), sm);
                }
            }
            for (f, map) in [
                ("headers", &m.headers),
                ("queryParams", &m.query_params),
                ("withoutHeaders", &m.without_headers),
            ] {
                for (k, sm) in map {
                    if k.is_empty() {
                        e.required(&mp.f(f));
                    }
                    // An empty StringMatch on a header means "present".
                    if sm.exact.is_some() || sm.prefix.is_some() || sm.regex.is_some() {
                        string_match(e, &mp.f(f).k(k), sm);
                    }
                }
            }
            if m.port != 0 {
                if let Err(why) = port_number(i64::from(m.port)) {
                    e.invalid_num(&mp.f("port"), m.port, &why);
                }
            }
            labels(e, &mp.f("sourceLabels"), &m.source_labels);
        }
        for (j, d) in r.route.iter().enumerate() {
            istio_destination(e, &rp.f("route").i(j).f("destination"), &d.destination);
        }
        route_weights(
            e,
            &rp.f("route"),
            &r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
        );
        duration(e, &rp.f("timeout"), &r.timeout);
        if let Some(rt) = &r.retries {
            if rt.attempts < 0 {
                e.invalid_num(
                    &rp.f("retries").f("attempts"),
                    rt.attempts,
                    "attempts cannot be negative",
                );
            }
            duration(e, &rp.f("retries").f("perTryTimeout"), &rt.per_try_timeout);
        }
        if let Some(f) = &r.fault {
            let fp = rp.f("fault");
            if f.delay.is_none() && f.abort.is_none() {
                e.invalid(&fp, "", "fault must have an abort or delay");
            }
            if let Some(d) = &f.delay {
                let dp = fp.f("delay");
                match (d.fixed_delay.is_empty(), d.exponential_delay.is_empty()) {
                    (true, true) => e.required(&dp.f("fixedDelay")),
                    (false, false) => {
                        e.invalid(&dp, "", "only one of fixedDelay and exponentialDelay may be set")
                    }
                    _ => {}
                }
                duration(e, &dp.f("fixedDelay"), &d.fixed_delay);
                duration(e, &dp.f("exponentialDelay"), &d.exponential_delay);
                percent(e, &dp.f("percentage"), &d.percentage);
                if !(0..=100).contains(&d.percent) {
                    e.invalid_num(&dp.f("percent"), d.percent, "percentage must be in range 0-100");
                }
            }
            if let Some(a) = &f.abort {
                let ap = fp.f("abort");
                let n = usize::from(a.http_status != 0)
                    + usize::from(!a.grpc_status.is_empty())
                    + usize::from(!a.http2_error.is_empty());
                if n != 1 {
                    e.invalid(
                        &ap,
                        "",
                        "must specify exactly one of httpStatus, grpcStatus or http2Error",
                    );
                }
                if a.http_status != 0 && !(200..=599).contains(&a.http_status) {
                    e.invalid_num(&ap.f("httpStatus"), a.http_status, "must be in range 200-599");
                }
                percent(e, &ap.f("percentage"), &a.percentage);
            }
        }
        if let Some(rd) = &r.redirect {
            if rd.redirect_code != 0 && !(300..=399).contains(&rd.redirect_code) {
                e.invalid_num(
                    &rp.f("redirect").f("redirectCode"),
                    rd.redirect_code,
                    "must be a 3xx code",
                );
            }
            e.opt_one_of(
                &rp.f("redirect").f("derivePort"),
                &rd.derive_port,
                &["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"],
            );
        }
        if let Some(dr) = &r.direct_response {
            if !(200..=599).contains(&dr.status) {
                e.invalid_num(
                    &rp.f("directResponse").f("status"),
                    dr.status,
                    "must be in range 200-599",
                );
            }
        }
        if let Some(m) = &r.mirror {
            istio_destination(e, &rp.f("mirror"), &Some(m.clone()));
        }
        percent(e, &rp.f("mirrorPercentage"), &r.mirror_percentage);
        if let Some(c) = &r.cors_policy {
            for (j, o) in c.allow_origins.iter().enumerate() {
                string_match(e, &rp.f("corsPolicy").f("allowOrigins").i(j), o);
            }
            duration(e, &rp.f("corsPolicy").f("maxAge"), &c.max_age);
        }
    }
    for (i, r) in s.tcp.iter().enumerate() {
        let rp = p.f("tcp").i(i);
        if r.route.is_empty() {
            e.push(&rp.f("route"), "Required value: TCP route is required".into());
        }
        for (j, d) in r.route.iter().enumerate() {
            istio_destination(e, &rp.f("route").i(j).f("destination"), &d.destination);
        }
        route_weights(
            e,
            &rp.f("route"),
            &r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
        );
        for (j, m) in r.r#match.iter().enumerate() {
            if m.port != 0 {
                if let Err(why) = port_number(i64::from(m.port)) {
                    e.invalid_num(&rp.f("match").i(j).f("port"), m.port, &why);
                }
            }
        }
    }
    for (i, r) in s.tls.iter().enumerate() {
        let rp = p.f("tls").i(i);
        if r.r#match.is_empty() {
            e.push(
                &rp.f("match"),
                "Required value: TLS route must have at least one match condition".into(),
            );
        }
        for (j, m) in r.r#match.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                e.push(
                    &rp.f("match").i(j).f("sniHosts"),
                    "Required value: TLS match must have at least one SNI host".into(),
                );
            }
        }
        if r.route.is_empty() {
            e.push(&rp.f("route"), "Required value: TLS route is required".into());
        }
        for (j, d) in r.route.iter().enumerate() {
            istio_destination(e, &rp.f("route").i(j).f("destination"), &d.destination);
        }
        route_weights(
            e,
            &rp.f("route"),
            &r.route.iter().map(|d| d.weight).collect::<Vec<_>>(),
        );
    }
}

const LB_SIMPLE: &[&str] = &[
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];
const CLIENT_TLS_MODES: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

fn traffic_policy_parts(
    e: &mut Errs,
    p: &P,
    lb: &Option<istiov1::LoadBalancerSettings>,
    pool: &Option<istiov1::ConnectionPoolSettings>,
    od: &Option<istiov1::OutlierDetection>,
    tls: &Option<istiov1::ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        let lp = p.f("loadBalancer");
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            e.invalid(&lp, "", "only one of simple and consistentHash may be set");
        }
        if let Some(s) = &lb.simple {
            e.one_of(&lp.f("simple"), s, LB_SIMPLE);
        }
        duration(e, &lp.f("warmupDurationSecs"), &lb.warmup_duration_secs);
        if let Some(c) = &lb.consistent_hash {
            if let Some(cookie) = &c.http_cookie {
                if cookie.name.is_empty() {
                    e.required(&lp.f("consistentHash").f("httpCookie").f("name"));
                }
                duration(e, &lp.f("consistentHash").f("httpCookie").f("ttl"), &cookie.ttl);
            }
        }
    }
    if let Some(pool) = pool {
        let pp = p.f("connectionPool");
        if let Some(t) = &pool.tcp {
            non_negative(e, &pp.f("tcp").f("maxConnections"), i64::from(t.max_connections));
            duration(e, &pp.f("tcp").f("connectTimeout"), &t.connect_timeout);
            duration(
                e,
                &pp.f("tcp").f("maxConnectionDuration"),
                &t.max_connection_duration,
            );
            duration(e, &pp.f("tcp").f("idleTimeout"), &t.idle_timeout);
            if let Some(k) = &t.tcp_keepalive {
                duration(e, &pp.f("tcp").f("tcpKeepalive").f("time"), &k.time);
                duration(e, &pp.f("tcp").f("tcpKeepalive").f("interval"), &k.interval);
            }
        }
        if let Some(h) = &pool.http {
            let hp = pp.f("http");
            for (f, v) in [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("maxConcurrentStreams", h.max_concurrent_streams),
            ] {
                non_negative(e, &hp.f(f), i64::from(v));
            }
            duration(e, &hp.f("idleTimeout"), &h.idle_timeout);
            e.opt_one_of(
                &hp.f("h2UpgradePolicy"),
                &h.h2_upgrade_policy,
                &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            );
        }
    }
    if let Some(o) = od {
        let op = p.f("outlierDetection");
        duration(e, &op.f("interval"), &o.interval);
        duration(e, &op.f("baseEjectionTime"), &o.base_ejection_time);
        for (f, v) in [
            ("maxEjectionPercent", o.max_ejection_percent),
            ("minHealthPercent", o.min_health_percent),
        ] {
            if !(0..=100).contains(&v) {
                e.invalid_num(&op.f(f), v, "must be in range 0-100");
            }
        }
    }
    if let Some(t) = tls {
        e.opt_one_of(&p.f("tls").f("mode"), &t.mode, CLIENT_TLS_MODES);
    }
}

fn traffic_policy(e: &mut Errs, p: &P, t: &istiov1::TrafficPolicy) {
    traffic_policy_parts(
        e,
        p,
        &t.load_balancer,
        &t.connection_pool,
        &t.outlier_detection,
        &t.tls,
    );
    for (i, pl) in t.port_level_settings.iter().enumerate() {
        let pp = p.f("portLevelSettings").i(i);
        match &pl.port {
            Some(port) => {
                if let Err(why) = port_number(i64::from(port.number)) {
                    e.invalid_num(&pp.f("port").f("number"), port.number, &why);
                }
            }
            None => e.required(&pp.f("port")),
        }
        traffic_policy_parts(
            e,
            &pp,
            &pl.load_balancer,
            &pl.connection_pool,
            &pl.outlier_detection,
            &pl.tls,
        );
    }
}

fn destination_rule(e: &mut Errs, o: &istiov1::DestinationRule) {
    let p = P::root("spec");
    let Some(s) = &o.spec else {
        e.required(&p);
        return;
    };
    if s.host.is_empty() {
        e.required(&p.f("host"));
    } else {
        e.check(&p.f("host"), &s.host, istio_host(&s.host, false));
    }
    if let Some(t) = &s.traffic_policy {
        traffic_policy(e, &p.f("trafficPolicy"), t);
    }
    let mut names = HashSet::new();
    for (i, sub) in s.subsets.iter().enumerate() {
        let sp = p.f("subsets").i(i);
        if sub.name.is_empty() {
            e.required(&sp.f("name"));
        } else {
            e.check(&sp.f("name"), &sub.name, dns1123_label(&sub.name));
            if !names.insert(sub.name.as_str()) {
                e.duplicate(&sp.f("name"), &sub.name);
            }
        }
        labels(e, &sp.f("labels"), &sub.labels);
        if let Some(t) = &sub.traffic_policy {
            traffic_policy(e, &sp.f("trafficPolicy"), t);
        }
    }
    if let Some(w) = &s.workload_selector {
        labels(e, &p.f("workloadSelector").f("matchLabels"), &w.match_labels);
    }
}

const GATEWAY_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP",
];

fn gateway(e: &mut Errs, o: &istiov1::Gateway) {
    let p = P::root("spec");
    let Some(s) = &o.spec else {
        e.required(&p);
        return;
    };
    if s.servers.is_empty() {
        e.push(
            &p.f("servers"),
            "Required value: gateway must have at least one server".into(),
        );
    }
    labels(e, &p.f("selector"), &s.selector);
    for (i, srv) in s.servers.iter().enumerate() {
        let sp = p.f("servers").i(i);
        match &srv.port {
            None => e.required(&sp.f("port")),
            Some(port) => {
                if let Err(why) = port_number(i64::from(port.number)) {
                    e.invalid_num(&sp.f("port").f("number"), port.number, &why);
                }
                if port.protocol.is_empty() {
                    e.required(&sp.f("port").f("protocol"));
                } else if !GATEWAY_PROTOCOLS.contains(&port.protocol.to_ascii_uppercase().as_str()) {
                    e.unsupported(&sp.f("port").f("protocol"), &port.protocol, GATEWAY_PROTOCOLS);
                }
                if port.target_port != 0 {
                    if let Err(why) = port_number(i64::from(port.target_port)) {
                        e.invalid_num(&sp.f("port").f("targetPort"), port.target_port, &why);
                    }
                }
                let proto = port.protocol.to_ascii_uppercase();
                if (proto == "HTTPS" || proto == "TLS") && srv.tls.is_none() {
                    e.push(
                        &sp.f("tls"),
                        format!("Required value: server must have TLS settings for {proto} protocol"),
                    );
                }
            }
        }
        if srv.hosts.is_empty() {
            e.push(
                &sp.f("hosts"),
                "Required value: server config must contain at least one host".into(),
            );
        }
        for (j, h) in srv.hosts.iter().enumerate() {
            e.check(&sp.f("hosts").i(j), h, istio_host(h, true));
        }
        if let Some(t) = &srv.tls {
            e.opt_one_of(
                &sp.f("tls").f("mode"),
                &t.mode,
                &[
                    "PASSTHROUGH",
                    "SIMPLE",
                    "MUTUAL",
                    "AUTO_PASSTHROUGH",
                    "ISTIO_MUTUAL",
                    "OPTIONAL_MUTUAL",
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_checks() {
        type Check = fn(&str) -> Result<(), String>;
        let cases: &[(Check, &str, bool)] = &[
            (dns1123_label, "web", true),
            (dns1123_label, "web-1", true),
            (dns1123_label, "1web", true),
            (dns1123_label, "Web", false),
            (dns1123_label, "-web", false),
            (dns1123_label, "web-", false),
            (dns1123_label, "web.x", false),
            (dns1123_label, "", false),
            (dns1123_label, &"a".repeat(64), false),
            (dns1123_subdomain, "example.com", true),
            (dns1123_subdomain, "a.b-c.d", true),
            (dns1123_subdomain, "a..b", false),
            (dns1123_subdomain, "a_b", false),
            (dns1123_subdomain, "A.b", false),
            (qualified_name, "app", true),
            (qualified_name, "app.kubernetes.io/name", true),
            (qualified_name, "My_Key.1", true),
            (qualified_name, "/name", false),
            (qualified_name, "a/b/c", false),
            (qualified_name, "Example.com/x", false),
            (qualified_name, "-x", false),
            (label_value, "", true),
            (label_value, "v1.2_x-Y", true),
            (label_value, "has space", false),
            (label_value, "-x", false),
            (label_value, &"a".repeat(64), false),
            (iana_svc_name, "http", true),
            (iana_svc_name, "redis-server", true),
            (iana_svc_name, "8080", false),
            (iana_svc_name, "a--b", false),
            (iana_svc_name, "much-too-long-name", false),
            (config_key, "app.properties", true),
            (config_key, "KEY_1", true),
            (config_key, "..x", false),
            (config_key, "a/b", false),
            (env_var_name, "GET_HOSTS_FROM", true),
            (env_var_name, "A=B", false),
            (rfc3339, "2024-05-01T10:00:00Z", true),
            (rfc3339, "2024-05-01T10:00:00.123456+02:00", true),
            (rfc3339, "2024-05-01 10:00:00", false),
        ];
        for (f, input, ok) in cases {
            assert_eq!(f(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        let ok: &[(&str, Duration)] = &[
            ("7s", Duration::from_secs(7)),
            ("1.5s", Duration::from_millis(1500)),
            ("100ms", Duration::from_millis(100)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("0", Duration::ZERO),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(*d), "{s}");
        }
        for s in ["", "7", "s", "1x", "1.5.5s", "-1s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn selector_matching() {
        let sel = LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            match_expressions: vec![metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: vec!["db".into()],
            }],
        };
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(&sel, &l(&[("app", "web")])));
        assert!(selector_matches(&sel, &l(&[("app", "web"), ("tier", "fe")])));
        assert!(!selector_matches(&sel, &l(&[("app", "web"), ("tier", "db")])));
        assert!(!selector_matches(&sel, &l(&[("app", "api")])));
        assert!(selector_matches(&LabelSelector::default(), &l(&[])));
    }
}
