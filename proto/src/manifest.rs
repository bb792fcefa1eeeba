//! Manifests: YAML/JSON text to typed objects and back, the table of
//! supported kinds and resource names, registry keys, protobuf encoding.
//!
//! An [`Object`] is one object of any supported kind (it is the generated
//! oneof of [`apiv1::Object`], so it converts to and from the gRPC message
//! for free). [`parse`] reads a multi-document YAML stream (block or flow
//! style) or a stream of JSON objects; a `kind: List` document is expanded
//! into its items. Kinds are dispatched on `apiVersion` and `kind`; unknown
//! fields, wrong types and unsupported kinds are errors that name the
//! document, the object and the field path:
//!
//! ```text
//! document 2 (Deployment web): spec.template.spec.containers[0].imagePullPolicyy: unknown field
//! ```
//!
//! `null` values count as absent (as Kubernetes reads them). Serialization
//! ([`to_yaml`], [`to_json`]) skips empty values and sorts keys, as
//! `kubectl get -o yaml` prints them.
//!
//! Stored values are the kind's own message protobuf-encoded
//! ([`Object::encode_to_vec`]), under [`Object::key`]:
//! `/registry/<plural>/<namespace>/<name>`, or `/registry/<plural>/<name>`
//! for cluster-scoped kinds.

use crate::apiv1::{self, object::Kind};
use crate::metav1::ObjectMeta;
use crate::{appsv1, coordinationv1, corev1, istiov1, networkingv1};
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// One object of a supported kind: the generated oneof of [`apiv1::Object`].
pub type Object = Kind;

/// A supported kind and its resource names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// `Deployment`.
    pub kind: &'static str,
    /// `apps/v1`.
    pub api_version: &'static str,
    /// `apps` (empty for the core group).
    pub group: &'static str,
    /// Lowercase plural, the resource name in keys and requests: `deployments`.
    pub plural: &'static str,
    /// Lowercase singular: `deployment`.
    pub singular: &'static str,
    /// kubectl's short names: `deploy`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

const fn rt(
    kind: &'static str,
    api_version: &'static str,
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        kind,
        api_version,
        group,
        plural,
        singular,
        short_names,
        namespaced,
    }
}

/// Every supported kind, in the order of [`apiv1::Object`]'s oneof.
pub const RESOURCE_TYPES: &[ResourceType] = &[
    rt("Namespace", "v1", "", "namespaces", "namespace", &["ns"], false),
    rt("Pod", "v1", "", "pods", "pod", &["po"], true),
    rt("Node", "v1", "", "nodes", "node", &["no"], false),
    rt("Service", "v1", "", "services", "service", &["svc"], true),
    rt("Endpoints", "v1", "", "endpoints", "endpoints", &["ep"], true),
    rt("ConfigMap", "v1", "", "configmaps", "configmap", &["cm"], true),
    rt("Secret", "v1", "", "secrets", "secret", &[], true),
    rt(
        "ReplicaSet",
        "apps/v1",
        "apps",
        "replicasets",
        "replicaset",
        &["rs"],
        true,
    ),
    rt(
        "Deployment",
        "apps/v1",
        "apps",
        "deployments",
        "deployment",
        &["deploy"],
        true,
    ),
    rt(
        "ResourceQuota",
        "v1",
        "",
        "resourcequotas",
        "resourcequota",
        &["quota"],
        true,
    ),
    rt(
        "LimitRange",
        "v1",
        "",
        "limitranges",
        "limitrange",
        &["limits"],
        true,
    ),
    rt(
        "Lease",
        "coordination.k8s.io/v1",
        "coordination.k8s.io",
        "leases",
        "lease",
        &[],
        true,
    ),
    rt("Event", "v1", "", "events", "event", &["ev"], true),
    rt(
        "Ingress",
        "networking.k8s.io/v1",
        "networking.k8s.io",
        "ingresses",
        "ingress",
        &["ing"],
        true,
    ),
    rt(
        "VirtualService",
        "networking.istio.io/v1",
        "networking.istio.io",
        "virtualservices",
        "virtualservice",
        &["vs"],
        true,
    ),
    rt(
        "DestinationRule",
        "networking.istio.io/v1",
        "networking.istio.io",
        "destinationrules",
        "destinationrule",
        &["dr"],
        true,
    ),
    rt(
        "Gateway",
        "networking.istio.io/v1",
        "networking.istio.io",
        "gateways",
        "gateway",
        &["gw"],
        true,
    ),
];

impl ResourceType {
    /// Finds a resource type by any name a user may type, case-insensitively:
    /// plural (`deployments`), singular (`deployment`), short name (`deploy`),
    /// kind (`Deployment`), or plural qualified by group
    /// (`deployments.apps`, `gateways.networking.istio.io`).
    pub fn lookup(name: &str) -> Option<&'static ResourceType> {
        let n = name.to_ascii_lowercase();
        RESOURCE_TYPES.iter().find(|t| {
            t.plural == n
                || t.singular == n
                || t.short_names.contains(&n.as_str())
                || t.kind.eq_ignore_ascii_case(&n)
                || (!t.group.is_empty() && n == format!("{}.{}", t.plural, t.group))
        })
    }

    /// The resource type of `kind` in `api_version`. The error says what is
    /// wrong: an unknown kind, or a known kind in an unsupported apiVersion.
    pub fn for_kind(api_version: &str, kind: &str) -> Result<&'static ResourceType, String> {
        if let Some(t) = RESOURCE_TYPES
            .iter()
            .find(|t| t.kind == kind && t.api_version == api_version)
        {
            return Ok(t);
        }
        match RESOURCE_TYPES.iter().find(|t| t.kind == kind) {
            Some(t) => Err(format!(
                "unsupported apiVersion {api_version:?} for kind {kind} (supported: {})",
                t.api_version
            )),
            None => Err(format!("unsupported kind {kind} (apiVersion {api_version:?})")),
        }
    }

    /// The registry key of an object of this type.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{}/{}", self.plural, namespace, name)
        } else {
            format!("/registry/{}/{}", self.plural, name)
        }
    }

    /// The key prefix of all objects of this type (`namespace` empty), or of
    /// those in one namespace. Always ends with `/`.
    pub fn key_prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("/registry/{}/{}/", self.plural, namespace)
        } else {
            format!("/registry/{}/", self.plural)
        }
    }

    /// Decodes a stored value (the kind's own message) into an [`Object`]
    /// with apiVersion and kind set.
    pub fn decode(&self, bytes: &[u8]) -> Result<Object, prost::DecodeError> {
        fn d<T: Message + Default>(b: &[u8]) -> Result<T, prost::DecodeError> {
            T::decode(b)
        }
        let mut obj = match self.kind {
            "Namespace" => Kind::Namespace(d(bytes)?),
            "Pod" => Kind::Pod(d(bytes)?),
            "Node" => Kind::Node(d(bytes)?),
            "Service" => Kind::Service(d(bytes)?),
            "Endpoints" => Kind::Endpoints(d(bytes)?),
            "ConfigMap" => Kind::ConfigMap(d(bytes)?),
            "Secret" => Kind::Secret(d(bytes)?),
            "ReplicaSet" => Kind::ReplicaSet(d(bytes)?),
            "Deployment" => Kind::Deployment(d(bytes)?),
            "ResourceQuota" => Kind::ResourceQuota(d(bytes)?),
            "LimitRange" => Kind::LimitRange(d(bytes)?),
            "Lease" => Kind::Lease(d(bytes)?),
            "Event" => Kind::Event(d(bytes)?),
            "Ingress" => Kind::Ingress(d(bytes)?),
            "VirtualService" => Kind::VirtualService(d(bytes)?),
            "DestinationRule" => Kind::DestinationRule(d(bytes)?),
            "Gateway" => Kind::Gateway(d(bytes)?),
            other => unreachable!("kind {other} in RESOURCE_TYPES without a decoder"),
        };
        obj.set_type_meta();
        Ok(obj)
    }
}

/// Runs `$body` with `$o` bound to the kind's message, whatever the kind.
macro_rules! with_inner {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Kind::Namespace($o) => $body,
            Kind::Pod($o) => $body,
            Kind::Node($o) => $body,
            Kind::Service($o) => $body,
            Kind::Endpoints($o) => $body,
            Kind::ConfigMap($o) => $body,
            Kind::Secret($o) => $body,
            Kind::ReplicaSet($o) => $body,
            Kind::Deployment($o) => $body,
            Kind::ResourceQuota($o) => $body,
            Kind::LimitRange($o) => $body,
            Kind::Lease($o) => $body,
            Kind::Event($o) => $body,
            Kind::Ingress($o) => $body,
            Kind::VirtualService($o) => $body,
            Kind::DestinationRule($o) => $body,
            Kind::Gateway($o) => $body,
        }
    };
}

impl Kind {
    /// The kind's entry in [`RESOURCE_TYPES`].
    pub fn resource_type(&self) -> &'static ResourceType {
        let i = match self {
            Kind::Namespace(_) => 0,
            Kind::Pod(_) => 1,
            Kind::Node(_) => 2,
            Kind::Service(_) => 3,
            Kind::Endpoints(_) => 4,
            Kind::ConfigMap(_) => 5,
            Kind::Secret(_) => 6,
            Kind::ReplicaSet(_) => 7,
            Kind::Deployment(_) => 8,
            Kind::ResourceQuota(_) => 9,
            Kind::LimitRange(_) => 10,
            Kind::Lease(_) => 11,
            Kind::Event(_) => 12,
            Kind::Ingress(_) => 13,
            Kind::VirtualService(_) => 14,
            Kind::DestinationRule(_) => 15,
            Kind::Gateway(_) => 16,
        };
        &RESOURCE_TYPES[i]
    }

    /// The kind name (`Pod`).
    pub fn kind_name(&self) -> &'static str {
        self.resource_type().kind
    }

    /// The object's metadata, if it has any.
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        with_inner!(self, o => o.metadata.as_ref())
    }

    /// The object's metadata, created empty if absent.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        with_inner!(self, o => o.metadata.get_or_insert_with(Default::default))
    }

    /// `metadata.name` ("" if unset).
    pub fn name(&self) -> &str {
        self.metadata().map_or("", |m| m.name.as_str())
    }

    /// `metadata.namespace` ("" if unset).
    pub fn namespace(&self) -> &str {
        self.metadata().map_or("", |m| m.namespace.as_str())
    }

    /// The registry key (`/registry/pods/default/web`).
    pub fn key(&self) -> String {
        self.resource_type().key(self.namespace(), self.name())
    }

    /// The object's `apiVersion` and `kind` fields as written in it.
    pub fn type_meta(&self) -> (&str, &str) {
        with_inner!(self, o => (o.api_version.as_str(), o.kind.as_str()))
    }

    /// Sets `apiVersion` and `kind` to the kind's own.
    pub fn set_type_meta(&mut self) {
        let t = self.resource_type();
        with_inner!(self, o => {
            o.api_version = t.api_version.to_string();
            o.kind = t.kind.to_string();
        })
    }

    /// The stored form: the kind's own message, protobuf-encoded.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        with_inner!(self, o => o.encode_to_vec())
    }

    /// The object as a JSON value with Kubernetes field names.
    pub fn to_json_value(&self) -> Value {
        with_inner!(self, o => serde_json::to_value(o)).expect("generated resource types always serialize")
    }

    /// Reads one object from a JSON value (one manifest document): dispatches
    /// on `apiVersion`/`kind`, then deserializes strictly. `null`s are
    /// treated as absent.
    pub fn from_value(value: Value) -> Result<Object, ManifestError> {
        let mut value = value;
        strip_nulls(&mut value);
        let Value::Object(map) = &value else {
            return Err(ManifestError::new(
                "",
                format!("expected an object, found {}", type_name(&value)),
            ));
        };
        let field = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        let kind = field("kind");
        let api_version = field("apiVersion");
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let err = |path: &str, message: String| ManifestError {
            document: None,
            kind: kind.clone(),
            name: name.clone(),
            path: path.to_string(),
            message,
        };
        let Some(k) = kind.as_deref() else {
            return Err(err("kind", "required field is missing (or not a string)".into()));
        };
        let Some(av) = api_version.as_deref() else {
            return Err(err(
                "apiVersion",
                "required field is missing (or not a string)".into(),
            ));
        };
        let t = ResourceType::for_kind(av, k).map_err(|m| err("", m))?;
        fn typed<T: DeserializeOwned>(v: Value) -> Result<T, (String, String)> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                split_serde_error(if path == "." { "" } else { &path }, &e.inner().to_string())
            })
        }
        let result = match t.kind {
            "Namespace" => typed::<corev1::Namespace>(value).map(Kind::Namespace),
            "Pod" => typed::<corev1::Pod>(value).map(Kind::Pod),
            "Node" => typed::<corev1::Node>(value).map(Kind::Node),
            "Service" => typed::<corev1::Service>(value).map(Kind::Service),
            "Endpoints" => typed::<corev1::Endpoints>(value).map(Kind::Endpoints),
            "ConfigMap" => typed::<corev1::ConfigMap>(value).map(Kind::ConfigMap),
            "Secret" => typed::<corev1::Secret>(value).map(Kind::Secret),
            "ReplicaSet" => typed::<appsv1::ReplicaSet>(value).map(Kind::ReplicaSet),
            "Deployment" => typed::<appsv1::Deployment>(value).map(Kind::Deployment),
            "ResourceQuota" => typed::<corev1::ResourceQuota>(value).map(Kind::ResourceQuota),
            "LimitRange" => typed::<corev1::LimitRange>(value).map(Kind::LimitRange),
            "Lease" => typed::<coordinationv1::Lease>(value).map(Kind::Lease),
            "Event" => typed::<corev1::Event>(value).map(Kind::Event),
            "Ingress" => typed::<networkingv1::Ingress>(value).map(Kind::Ingress),
            "VirtualService" => typed::<istiov1::VirtualService>(value).map(Kind::VirtualService),
            "DestinationRule" => typed::<istiov1::DestinationRule>(value).map(Kind::DestinationRule),
            "Gateway" => typed::<istiov1::Gateway>(value).map(Kind::Gateway),
            other => unreachable!("kind {other} in RESOURCE_TYPES without a parser"),
        };
        result.map_err(|(path, message)| err(&path, message))
    }
}

impl From<Object> for apiv1::Object {
    fn from(kind: Object) -> Self {
        apiv1::Object { kind: Some(kind) }
    }
}

impl TryFrom<apiv1::Object> for Object {
    type Error = ManifestError;
    fn try_from(o: apiv1::Object) -> Result<Self, Self::Error> {
        o.kind
            .ok_or_else(|| ManifestError::new("kind", "object of no kind (oneof unset)"))
    }
}

/// Turns serde's message into (path, message): an unknown field is named in
/// the path, as `spec.foo: unknown field`, without serde's list of expected
/// names.
fn split_serde_error(path: &str, msg: &str) -> (String, String) {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let field = &rest[..end];
            let full = if path.is_empty() {
                field.to_string()
            } else if path == field || path.ends_with(&format!(".{field}")) {
                path.to_string()
            } else {
                format!("{path}.{field}")
            };
            return (full, "unknown field".to_string());
        }
    }
    (path.to_string(), msg.to_string())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Removes `null` members of objects, recursively (Kubernetes reads a null
/// field as an absent one).
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// An error in a manifest: where (document, object, field path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based index of the document in the stream (with a `List` item:
    /// the index counts items in document order).
    pub document: Option<usize>,
    /// The document's kind, if it names one.
    pub kind: Option<String>,
    /// The document's metadata.name, if it has one.
    pub name: Option<String>,
    /// Field path (`spec.containers[0].image`); empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError {
            document: None,
            kind: None,
            name: None,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.document {
            write!(f, "document {d}")?;
            match (&self.kind, &self.name) {
                (Some(k), Some(n)) => write!(f, " ({k} {n})")?,
                (Some(k), None) => write!(f, " ({k})")?,
                (None, Some(n)) => write!(f, " ({n})")?,
                (None, None) => {}
            }
            f.write_str(": ")?;
        } else if let (Some(k), Some(n)) = (&self.kind, &self.name) {
            write!(f, "{k} {n}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Splits a manifest text into its documents as JSON values (1-based index,
/// value), skipping empty documents and expanding `kind: List`. Text whose
/// first non-blank character is `{` is read as a stream of JSON objects;
/// anything else as YAML (block or flow style, `---`-separated documents).
pub fn parse_documents(text: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    // JSON first when it looks like JSON; flow-style YAML also starts with
    // '{', so fall back to YAML, and report the JSON error only if YAML
    // cannot read the text either.
    let raw = if text.trim_start().starts_with('{') {
        match json_documents(text) {
            Ok(raw) => raw,
            Err(json_err) => yaml_documents(text).map_err(|_| json_err)?,
        }
    } else {
        yaml_documents(text)?
    };
    let mut out = Vec::new();
    for (i, mut v) in raw {
        strip_nulls(&mut v);
        if v.is_null() || v.as_object().is_some_and(|m| m.is_empty()) {
            continue;
        }
        let is_list = v.get("kind").and_then(Value::as_str) == Some("List")
            && v.get("apiVersion").and_then(Value::as_str) == Some("v1");
        if is_list {
            match v.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => out.extend(items.into_iter().map(|it| (i, it))),
                None => {}
                Some(_) => {
                    return Err(ManifestError {
                        document: Some(i),
                        kind: Some("List".into()),
                        ..ManifestError::new("items", "expected a list")
                    })
                }
            }
        } else {
            out.push((i, v));
        }
    }
    Ok(out)
}

fn json_documents(text: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
        .map(|(i, v)| {
            v.map(|v| (i + 1, v)).map_err(|e| ManifestError {
                document: Some(i + 1),
                ..ManifestError::new("", format!("invalid JSON: {e}"))
            })
        })
        .collect()
}

fn yaml_documents(text: &str) -> Result<Vec<(usize, Value)>, ManifestError> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc)
                .map(|v| (i + 1, v))
                .map_err(|e| ManifestError {
                    document: Some(i + 1),
                    ..ManifestError::new("", format!("invalid YAML: {e}"))
                })
        })
        .collect()
}

/// Parses a manifest text (see [`parse_documents`]) into typed objects;
/// fails on the first bad document.
pub fn parse(text: &str) -> Result<Vec<Object>, ManifestError> {
    parse_documents(text)?
        .into_iter()
        .map(|(i, v)| {
            Object::from_value(v).map_err(|e| ManifestError {
                document: Some(i),
                ..e
            })
        })
        .collect()
}

/// Parses a text that must hold exactly one object.
pub fn parse_one(text: &str) -> Result<Object, ManifestError> {
    let mut objs = parse(text)?;
    match objs.len() {
        1 => Ok(objs.remove(0)),
        n => Err(ManifestError::new(
            "",
            format!("expected exactly one object, found {n}"),
        )),
    }
}

/// Objects as YAML documents separated by `---`, keys sorted, empty values
/// left out (as `kubectl get -o yaml`).
pub fn to_yaml(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|o| {
            serde_yaml_ng::to_string(&o.to_json_value()).expect("a JSON value always serializes to YAML")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// One object as pretty JSON (keys sorted, empty values left out).
pub fn to_json(object: &Object) -> String {
    serde_json::to_string_pretty(&object.to_json_value()).expect("a JSON value always serializes")
}

/// Several objects as one pretty JSON `v1` `List`, as `kubectl get -o json`.
pub fn to_json_list(objects: &[Object]) -> String {
    let items: Vec<Value> = objects.iter().map(Object::to_json_value).collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    serde_json::to_string_pretty(&list).expect("a JSON value always serializes")
}
