//! berth-node: the node agent (`berth agent`).
//!
//! Role: register this machine as a Node, keep its node Lease renewed and its conditions
//! reported, and run the pods bound to it: a sandbox per pod (network, IPC and UTS namespaces
//! bound under the agent's run dir, a parent cgroup), containers from the node's image store
//! (overlayfs rootfs, own mount and PID namespaces) through a [`runtime::Runtime`], volumes,
//! env, restart back-off, and pod status written back through UpdateStatus only.
//!
//! Invariants: one worker task per pod, so at most one sync of a pod runs at a time; syncs are
//! level-triggered (desired spec vs what runs) and idempotent; the agent sees only the pods
//! bound to it and only the ConfigMaps and Secrets those pods reference; secret contents live
//! on tmpfs only; everything a pod created on the machine (mounts, namespaces, cgroups) is gone
//! once its worker has finished tearing it down.
//!
//! It deliberately does not know: command-line flags, how the control plane stores objects,
//! pod networking beyond the [`netns::PodNetwork`] trait (the net crate implements it).

pub mod backoff;
pub mod cgroups;
pub mod env;
mod error;
pub mod image;
pub mod mount;
pub mod netns;
pub mod runtime;
pub mod status;
pub mod volumes;

pub use error::Error;
