//! Generates the Rust types and tonic client/server code for the etcd v3 API
//! protos, Berth's internal raft transport proto, and Berth's resource API
//! (`berth/{meta,core,apps,coordination,networking,istio_networking,resources,agent}.proto`).
//! Needs `protoc` on PATH (or `PROTOC` set); nothing is downloaded.
//!
//! The resource kinds also get serde derives for Kubernetes-style JSON/YAML.
//! Those attributes are computed from the protos' own descriptors, so the
//! `.proto` files stay the one source of truth for names:
//! - every field is renamed to its proto3 JSON name (lowerCamelCase, or the
//!   explicit `json_name` where Kubernetes spells it otherwise: `podIP`);
//! - values equal to their default (empty, zero, false, None) are skipped when
//!   serializing, like Go's `omitempty`, except the few fields in
//!   `ALWAYS_SERIALIZED`;
//! - `map<string, bytes>` and `bytes` fields are base64 strings;
//! - the quantity fields in `QUANTITY_FIELDS` also accept a bare number.
//!
//! Unknown fields are rejected (`deny_unknown_fields`) and missing ones take
//! their default (`default`).

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::HashMap;

/// Files of the resource API, relative to this crate (the include root), so
/// they import each other as "berth/meta.proto" as a Python client would.
const API_PROTOS: &[&str] = &[
    "berth/meta.proto",
    "berth/core.proto",
    "berth/apps.proto",
    "berth/coordination.proto",
    "berth/networking.proto",
    "berth/istio_networking.proto",
    "berth/resources.proto",
    "berth/agent.proto",
];

/// Packages whose messages are JSON/YAML objects (manifests).
const SERDE_PACKAGES: &[&str] = &[
    "berth.meta.v1",
    "berth.core.v1",
    "berth.apps.v1",
    "berth.coordination.v1",
    "berth.networking.v1",
    "berth.istio.networking.v1",
];

/// Messages with a hand-written serde implementation.
const CUSTOM_SERDE: &[&str] = &[".berth.meta.v1.IntOrString"];

/// Quantity-valued fields (a string, or a bare number in manifests).
const QUANTITY_FIELDS: &[&str] = &[
    ".berth.core.v1.PodSpec.overhead",
    ".berth.core.v1.ResourceRequirements.limits",
    ".berth.core.v1.ResourceRequirements.requests",
    ".berth.core.v1.ResourceFieldSelector.divisor",
    ".berth.core.v1.EmptyDirVolumeSource.size_limit",
    ".berth.core.v1.NodeStatus.capacity",
    ".berth.core.v1.NodeStatus.allocatable",
    ".berth.core.v1.ResourceQuotaSpec.hard",
    ".berth.core.v1.ResourceQuotaStatus.hard",
    ".berth.core.v1.ResourceQuotaStatus.used",
    ".berth.core.v1.LimitRangeItem.max",
    ".berth.core.v1.LimitRangeItem.min",
    ".berth.core.v1.LimitRangeItem.default",
    ".berth.core.v1.LimitRangeItem.default_request",
    ".berth.core.v1.LimitRangeItem.max_limit_request_ratio",
];

/// Fields Kubernetes prints even when zero/false (no `omitempty` there).
const ALWAYS_SERIALIZED: &[&str] = &[
    ".berth.core.v1.ContainerStatus.ready",
    ".berth.core.v1.ContainerStatus.restart_count",
    ".berth.core.v1.ContainerStateTerminated.exit_code",
    ".berth.apps.v1.ReplicaSetStatus.replicas",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_etcd_and_raft()?;
    compile_api()?;
    Ok(())
}

fn compile_etcd_and_raft() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "etcd/mvccpb/kv.proto",
        "etcd/authpb/auth.proto",
        "etcd/etcdserverpb/rpc.proto",
        "berth/raft.proto",
    ];
    // rpc.proto imports "mvccpb/kv.proto" and "authpb/auth.proto", so `etcd`
    // is an include root. Each file must be reachable through exactly one root,
    // or protoc would see it twice under two names.
    let includes = ["etcd", "berth"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &includes)?;
    Ok(())
}

fn compile_api() -> Result<(), Box<dyn std::error::Error>> {
    for p in API_PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = tonic_prost_build::Config::new().load_fds(API_PROTOS, &["."])?;
    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Small initial buffers per stream (many long-lived Watch streams).
        .codec_path("crate::codec::CompactCodec")
        // Sorted maps: deterministic encoding and output.
        .btree_map(".berth");
    for attr in serde_attributes(&fds) {
        builder = match attr {
            Attr::Type(path, a) => builder.type_attribute(path, a),
            Attr::Field(path, a) => builder.field_attribute(path, a),
        };
    }
    builder.compile_fds(fds)?;
    Ok(())
}

enum Attr {
    Type(String, String),
    Field(String, String),
}

fn serde_attributes(fds: &FileDescriptorSet) -> Vec<Attr> {
    // Every message by fully-qualified name, to recognize map entries.
    let mut messages: HashMap<String, &DescriptorProto> = HashMap::new();
    for file in &fds.file {
        let prefix = format!(".{}", file.package());
        for m in &file.message_type {
            index_messages(&prefix, m, &mut messages);
        }
    }

    let mut out = Vec::new();
    for file in &fds.file {
        if !SERDE_PACKAGES.contains(&file.package()) {
            continue;
        }
        let prefix = format!(".{}", file.package());
        for m in &file.message_type {
            let fq = format!("{prefix}.{}", m.name());
            if CUSTOM_SERDE.contains(&fq.as_str()) {
                continue;
            }
            // prost-build applies a type attribute to every type whose path
            // starts with the given one, so nested messages inherit this one
            // from their top-level message: registering them too would derive
            // twice.
            out.push(Attr::Type(
                fq.clone(),
                "#[derive(::serde::Serialize, ::serde::Deserialize)]\n\
                 #[serde(deny_unknown_fields, default)]"
                    .to_string(),
            ));
            field_attributes(&fq, m, &messages, &mut out);
        }
    }
    out
}

fn index_messages<'a>(prefix: &str, m: &'a DescriptorProto, out: &mut HashMap<String, &'a DescriptorProto>) {
    let fq = format!("{prefix}.{}", m.name());
    for n in &m.nested_type {
        index_messages(&fq, n, out);
    }
    out.insert(fq, m);
}

fn field_attributes(
    fq: &str,
    m: &DescriptorProto,
    messages: &HashMap<String, &DescriptorProto>,
    out: &mut Vec<Attr>,
) {
    for n in &m.nested_type {
        if !n.options.as_ref().is_some_and(|o| o.map_entry()) {
            field_attributes(&format!("{fq}.{}", n.name()), n, messages, out);
        }
    }
    for f in &m.field {
        let path = format!("{fq}.{}", f.name());
        let mut serde = vec![format!("rename = \"{}\"", f.json_name())];
        if !ALWAYS_SERIALIZED.contains(&path.as_str()) {
            serde.push("skip_serializing_if = \"crate::serde_util::is_default\"".to_string());
        }
        let map_value = (f.r#type() == Type::Message && f.label() == Label::Repeated)
            .then(|| messages.get(f.type_name()))
            .flatten()
            .filter(|e| e.options.as_ref().is_some_and(|o| o.map_entry()))
            .and_then(|e| e.field.iter().find(|v| v.name() == "value"));
        let quantity = QUANTITY_FIELDS.contains(&path.as_str());
        match map_value {
            Some(v) if v.r#type() == Type::Bytes => {
                serde.push("with = \"crate::serde_util::base64_map\"".to_string())
            }
            Some(_) if quantity => {
                serde.push("deserialize_with = \"crate::serde_util::quantity_map\"".to_string())
            }
            Some(_) => {}
            None if f.r#type() == Type::Bytes => {
                serde.push("with = \"crate::serde_util::base64_opt\"".to_string())
            }
            None if quantity => {
                serde.push("deserialize_with = \"crate::serde_util::quantity_opt\"".to_string())
            }
            None => {}
        }
        out.push(Attr::Field(path, format!("#[serde({})]", serde.join(", "))));
    }
}
