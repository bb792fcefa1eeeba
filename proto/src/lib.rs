//! Wire format of Berth: the only crate that knows how bytes on the network are laid out.
//!
//! It holds the generated Rust types and tonic 0.14 client/server code for three
//! protocols: the etcd-v3-compatible client API (packages `etcdserverpb`,
//! `mvccpb`, `authpb`, served so that unmodified etcd clients such as etcdctl
//! 3.4/3.5 work against Berth's store), Berth's internal raft peer transport
//! (package `berth.raft.v1`, exposed here as [`raftpb`]), and Berth's resource
//! API: Kubernetes-style kinds, one proto package per API group
//! (`berth.meta.v1` [`metav1`], `berth.core.v1` [`corev1`], `berth.apps.v1`
//! [`appsv1`], `berth.coordination.v1` [`coordinationv1`],
//! `berth.networking.v1` [`networkingv1`], `berth.istio.networking.v1`
//! [`istiov1`]) and the `Resources` service with its `Object` oneof
//! (`berth.api.v1`, [`apiv1`]), and the node agent's `NodeAgent` service with the API
//! server's `Proxy` in front of it (`berth.agent.v1`, [`agentv1`]). The `.proto` files under `berth/` are plain
//! proto3 that other languages' generators (Python grpcio-tools) use as they are.
//!
//! The kinds also read and write Kubernetes JSON/YAML: serde derives are added
//! at build time from the protos' JSON names (see `build.rs`). On top of the
//! types sit small pure helpers: [`manifest`] (multi-document YAML/JSON to
//! typed objects and back, errors with field paths, the kinds and resource
//! names table, registry keys, protobuf encoding of stored values),
//! [`validate`] (Kubernetes' validation rules with field paths),
//! [`defaults`] (Kubernetes' defaulting), [`quantity`] (`500m`, `1Gi`), [`selector`]
//! (label and field selector strings), and
//! [`prefix_range_end`].
//!
//! Invariants: the etcd packages, service and method names, message names, field
//! numbers and enum values match etcd exactly; a field number is never
//! renumbered or reused (the tests below fail if the basic ones move). The raft
//! transport only carries an opaque envelope whose payload belongs to the raft
//! crate. Resource field names are Kubernetes' own in JSON/YAML; unknown fields
//! are rejected.
//!
//! What it does not know: storage, MVCC, raft logic, networking (no listeners,
//! no connections, no retries). Those live in the crates that use these types.

pub mod codec;

/// etcd v3 client API: services KV, Watch, Lease, Cluster, Maintenance, Auth.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd v3 MVCC value types (`KeyValue`, `Event`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd v3 auth value types (`User`, `Role`, `Permission`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// Berth's internal peer transport (`berth.raft.v1`): service `Peer` carrying
/// opaque [`raftpb::RaftMessage`] envelopes.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod raftpb {
    tonic::include_proto!("berth.raft.v1");
}

/// Berth's resource API, one module per proto package (`berth.<group>.v1`).
/// The short aliases below ([`metav1`], [`corev1`], ...) are the usual way in.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod berth {
    /// `berth.meta.v1`: ObjectMeta, ListMeta, LabelSelector, IntOrString, Status.
    pub mod meta {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.meta.v1");
        }
    }
    /// `berth.core.v1`: kinds of apiVersion `v1`.
    pub mod core {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.core.v1");
        }
    }
    /// `berth.apps.v1`: kinds of apiVersion `apps/v1`.
    pub mod apps {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.apps.v1");
        }
    }
    /// `berth.coordination.v1`: kinds of apiVersion `coordination.k8s.io/v1`.
    pub mod coordination {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.coordination.v1");
        }
    }
    /// `berth.networking.v1`: kinds of apiVersion `networking.k8s.io/v1`.
    pub mod networking {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.networking.v1");
        }
    }
    /// `berth.istio.networking.v1`: kinds of apiVersion `networking.istio.io/v1`.
    pub mod istio {
        /// Istio networking.
        pub mod networking {
            /// Version 1.
            pub mod v1 {
                tonic::include_proto!("berth.istio.networking.v1");
            }
        }
    }
    /// `berth.agent.v1`: the node agent's `NodeAgent` service (logs, exec, image import)
    /// and the API server's `Proxy` service in front of it.
    pub mod agent {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.agent.v1");
        }
    }
    /// `berth.api.v1`: the `Resources` service and its messages.
    pub mod api {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("berth.api.v1");
        }
    }
}

pub use berth::agent::v1 as agentv1;
pub use berth::api::v1 as apiv1;
pub use berth::apps::v1 as appsv1;
pub use berth::coordination::v1 as coordinationv1;
pub use berth::core::v1 as corev1;
pub use berth::istio::networking::v1 as istiov1;
pub use berth::meta::v1 as metav1;
pub use berth::networking::v1 as networkingv1;

pub mod defaults;
pub mod finalizers;
pub mod hollow;
pub mod manifest;
pub mod quantity;
pub mod selector;
pub mod serde_util;
pub mod validate;

/// Returns the `range_end` that selects every key starting with `prefix`, as
/// etcd clients compute it for `--prefix`.
///
/// The last byte below `0xff` is incremented and everything after it dropped
/// (`"a\xff"` gives `"b"`). When no such byte exists (empty prefix, or only
/// `0xff` bytes) the result is `[0]`, which etcd reads as "no upper bound".
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn prefix_range_end_increments_last_byte() {
        assert_eq!(prefix_range_end(b"a"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_range_end(b"aa"), b"ab".to_vec());
    }

    #[test]
    fn prefix_range_end_drops_trailing_ff() {
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"a\xfe\xff\xff"), b"a\xff".to_vec());
    }

    #[test]
    fn prefix_range_end_unbounded_cases() {
        assert_eq!(prefix_range_end(b""), vec![0]);
        assert_eq!(prefix_range_end(b"\xff"), vec![0]);
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
    }

    // Tag byte = (field_number << 3) | wire_type; wire type 0 = varint,
    // 2 = length-delimited. These pin etcd's field numbers.

    #[test]
    fn put_request_field_numbers() {
        let req = etcdserverpb::PutRequest {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), vec![0x0a, 1, b'a', 0x12, 1, b'b']);

        let req = etcdserverpb::PutRequest {
            lease: 7,
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), vec![0x18, 7, 0x20, 1, 0x28, 1, 0x30, 1]);
    }

    #[test]
    fn range_request_field_numbers() {
        let req = etcdserverpb::RangeRequest {
            key: b"k".to_vec(),
            range_end: vec![0],
            limit: 5,
            revision: 9,
            sort_order: etcdserverpb::range_request::SortOrder::Descend as i32,
            sort_target: etcdserverpb::range_request::SortTarget::Mod as i32,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        assert_eq!(
            req.encode_to_vec(),
            vec![
                0x0a, 1, b'k', // key = 1
                0x12, 1, 0, // range_end = 2
                0x18, 5, // limit = 3
                0x20, 9, // revision = 4
                0x28, 2, // sort_order = 5, DESCEND = 2
                0x30, 3, // sort_target = 6, MOD = 3
                0x38, 1, // serializable = 7
                0x40, 1, // keys_only = 8
                0x48, 1, // count_only = 9
                0x50, 1, // min_mod_revision = 10
                0x58, 2, // max_mod_revision = 11
                0x60, 3, // min_create_revision = 12
                0x68, 4, // max_create_revision = 13
            ]
        );
    }

    #[test]
    fn compare_and_watch_field_numbers() {
        let cmp = etcdserverpb::Compare {
            result: etcdserverpb::compare::CompareResult::NotEqual as i32,
            target: etcdserverpb::compare::CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(etcdserverpb::compare::TargetUnion::Lease(1)),
        };
        // range_end = 64 needs a two-byte tag: (64 << 3) | 2 = 0x202.
        assert_eq!(
            cmp.encode_to_vec(),
            vec![0x08, 3, 0x10, 4, 0x1a, 1, b'k', 0x40, 1, 0x82, 0x04, 1, b'z']
        );

        let resp = etcdserverpb::WatchResponse {
            watch_id: 1,
            compact_revision: 2,
            events: vec![crate::mvccpb::Event::default()],
            ..Default::default()
        };
        // events = 11: (11 << 3) | 2 = 0x5a.
        assert_eq!(resp.encode_to_vec(), vec![0x10, 1, 0x28, 2, 0x5a, 0]);
    }

    #[test]
    fn key_value_field_numbers() {
        let kv = mvccpb::KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 6,
        };
        assert_eq!(
            kv.encode_to_vec(),
            vec![0x0a, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 4, 0x2a, 1, b'v', 0x30, 6]
        );
    }

    #[test]
    fn resource_api_field_numbers() {
        use crate::apiv1::object::Kind;
        // Object's oneof: Deployment = 9, VirtualService = 15.
        let obj = apiv1::Object {
            kind: Some(Kind::Deployment(appsv1::Deployment::default())),
        };
        assert_eq!(obj.encode_to_vec(), vec![0x4a, 0]);
        let obj = apiv1::Object {
            kind: Some(Kind::VirtualService(istiov1::VirtualService::default())),
        };
        assert_eq!(obj.encode_to_vec(), vec![0x7a, 0]);
        // Every kind: apiVersion 1, kind 2, metadata 3; ObjectMeta.name 1.
        let pod = corev1::Pod {
            api_version: "v".into(),
            kind: "P".into(),
            metadata: Some(metav1::ObjectMeta {
                name: "a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod.encode_to_vec(),
            vec![0x0a, 1, b'v', 0x12, 1, b'P', 0x1a, 3, 0x0a, 1, b'a']
        );
        // `optional`: an explicit 0 is encoded, so it survives the store.
        let spec = appsv1::DeploymentSpec {
            replicas: Some(0),
            ..Default::default()
        };
        assert_eq!(spec.encode_to_vec(), vec![0x08, 0]);
    }

    #[test]
    fn raft_message_envelope() {
        let msg = raftpb::RaftMessage {
            payload: vec![1, 2, 3],
        };
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes, vec![0x0a, 3, 1, 2, 3]);
        assert_eq!(raftpb::RaftMessage::decode(bytes.as_slice()).unwrap(), msg);
    }
}
