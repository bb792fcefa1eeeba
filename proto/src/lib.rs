//! Wire format of Berth: the only crate that knows how bytes on the network are laid out.
//!
//! It holds the generated Rust types and tonic 0.14 client/server code for two
//! protocols: the etcd-v3-compatible client API (packages `etcdserverpb`,
//! `mvccpb`, `authpb`, served so that unmodified etcd clients such as etcdctl
//! 3.4/3.5 work against Berth's store) and Berth's internal raft peer transport
//! (package `berth.raft.v1`, exposed here as [`raftpb`]). Besides the generated
//! code it offers a few small pure helpers about the wire-level semantics, such
//! as [`prefix_range_end`].
//!
//! Invariants: the etcd packages, service and method names, message names, field
//! numbers and enum values match etcd exactly; a field number is never
//! renumbered or reused. The raft
//! transport only carries an opaque envelope whose payload belongs to the raft
//! crate.
//!
//! What it does not know: storage, MVCC, raft logic, networking (no listeners,
//! no connections, no retries). Those live in the crates that use these types.

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

    #[test]
    fn prefix_range_end_increments_last_byte() {
        assert_eq!(prefix_range_end(b"a"), b"b".to_vec());
        assert_eq!(
            prefix_range_end(b"/registry/pods/"),
            b"/registry/pods0".to_vec()
        );
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
}
