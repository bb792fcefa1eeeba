//! berth-client: how every Berth component reaches the control plane.
//!
//! Role: dial servers (the one place outbound connections are built, see [`dial`]; and its
//! counterpart [`listen`], where every Berth listener is bound, servers' and agents'), fail over
//! across a list of server addresses, and wrap the etcd-v3 services in a small typed client.
//! [`ResourceClient`] is typed CRUD over the `Resources` service (a [`Resource`] trait maps each
//! Rust type to its `Object` variant and plural), with gRPC codes mapped to [`ClientError`]
//! variants callers match (NotFound, AlreadyExists, Conflict, Invalid, Expired, Unavailable);
//! its watches reconnect to any server and resume from the last resourceVersion seen, and end
//! with `Expired` when that revision was compacted (the caller relists).
//! [`ResourceClient::bind`] is the pods/binding subresource schedulers bind with.
//! [`ResourceClient::watch_many`] opens one `WatchMany` stream carrying many watches (by
//! caller-chosen ids; an event arrives once with the ids of every watch it is for); it does not
//! reconnect by itself.
//! [`agent`]: the path to node agents (logs, exec, image import), dialed by the API server, and
//! [`ProxyClient`], the CLI's way to it through the API server.
//! [`Informer`] lists then watches one resource type into a cache (`namespace/name` -> object),
//! relists on `Expired`, hands cache changes to a bounded channel, and answers by namespace or
//! by registered index functions. [`leader::LeaderElector`] elects one leader per coordination
//! Lease (create or take over when expired, renew by resourceVersion compare-and-swap, step down
//! past the renew deadline), with time from an injectable [`leader::Clock`].
//!
//! Invariants: callers never build tonic channels themselves; a call that fails on one server
//! because it is unreachable is retried on the next one, never on a definite answer.
//!
//! It deliberately does not know: storage, Raft, or how servers are wired internally.

pub mod agent;
pub mod dial;
pub mod etcd;
pub mod informer;
pub mod leader;
pub mod listen;
pub mod resources;
mod servers;
pub mod watch_many;

pub use agent::ProxyClient;
pub use etcd::{ClientError, EtcdClient, EtcdWatch};
pub use informer::{Informer, InformerEvent};
pub use resources::{
    BindOutcome, BindRejectReason, BindRejected, ListParams, PatchParams, PodRef, Resource, ResourceClient,
    ResourceWatch, WatchEvent,
};
pub use watch_many::{ManyEvent, WatchMany};
