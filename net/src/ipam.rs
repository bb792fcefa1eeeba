//! Per-node pod IP address management: which pod holds which address of the node's pod CIDR.
//!
//! Invariants: an address is held by at most one pod; every change is on disk (written to a
//! temporary file, synced, renamed over the state file, directory synced) before the caller
//! learns of it, so an agent restarted at any point never hands out an address still in use.
//! Addresses are handed out round-robin after the last one handed out rather than lowest-free,
//! so that a just-released address (still in peers' ARP caches and conntrack tables) is reused
//! as late as possible.
//!
//! Synchronous file I/O: callers on an async runtime run it on a blocking thread.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::cidr;
use crate::error::NetError;

/// The state file's name inside the state dir.
pub const IPAM_STATE_FILE: &str = "ipam.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpamState {
    pod_cidr: Ipv4Net,
    /// The address handed out last: the next search starts after it.
    last_allocated: Option<Ipv4Addr>,
    /// Pod uid → its address.
    allocations: BTreeMap<String, Ipv4Addr>,
}

/// The allocations of one node, persisted in `<state_dir>/ipam.json`.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    state: IpamState,
}

impl Ipam {
    /// Opens (or creates) the allocation state for `pod_cidr` in `state_dir`. A state file for
    /// another pod CIDR is taken over only when it holds no allocation.
    pub fn open(state_dir: &Path, pod_cidr: Ipv4Net) -> Result<Self, NetError> {
        cidr::check_pod_cidr("pod_cidr", pod_cidr)?;
        fs::create_dir_all(state_dir)
            .map_err(|e| NetError::io(format!("creating state dir {}", state_dir.display()), e))?;
        let path = state_dir.join(IPAM_STATE_FILE);
        let fresh = IpamState {
            pod_cidr,
            last_allocated: None,
            allocations: BTreeMap::new(),
        };
        let state = match fs::read(&path) {
            Ok(bytes) => Self::parse(&path, &bytes, pod_cidr)?.unwrap_or(fresh),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh,
            Err(e) => return Err(NetError::io(format!("reading {}", path.display()), e)),
        };
        let ipam = Self { path, state };
        ipam.persist()?;
        Ok(ipam)
    }

    /// The stored state if it is for `pod_cidr`; None if it is for another CIDR and empty.
    fn parse(path: &Path, bytes: &[u8], pod_cidr: Ipv4Net) -> Result<Option<IpamState>, NetError> {
        let corrupt = |reason: String| NetError::StateCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let state: IpamState = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.pod_cidr != pod_cidr {
            if state.allocations.is_empty() {
                return Ok(None);
            }
            return Err(NetError::PodCidrChanged {
                path: path.to_path_buf(),
                stored: state.pod_cidr,
                configured: pod_cidr,
                live: state.allocations.len(),
            });
        }
        let (first, last) = cidr::pod_range(pod_cidr);
        let mut seen = BTreeSet::new();
        for (uid, ip) in &state.allocations {
            if *ip < first || *ip > last {
                return Err(corrupt(format!(
                    "pod {uid} holds {ip}, outside the pod range of {pod_cidr}"
                )));
            }
            if !seen.insert(*ip) {
                return Err(corrupt(format!("{ip} is held by more than one pod")));
            }
        }
        Ok(Some(state))
    }

    /// The pod CIDR the addresses come from.
    pub fn pod_cidr(&self) -> Ipv4Net {
        self.state.pod_cidr
    }

    /// The address `pod_uid` holds, if any.
    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.state.allocations.get(pod_uid).copied()
    }

    /// Pod uid → address, for every pod holding one.
    pub fn allocations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.state.allocations
    }

    /// The address of `pod_uid`: the one it already holds, or a free one, persisted before
    /// this returns. Errors with the CIDR's name when none is free.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.get(pod_uid) {
            return Ok(ip);
        }
        let ip = self.next_free().ok_or(NetError::PoolExhausted {
            cidr: self.state.pod_cidr,
        })?;
        let mut next = self.state.clone();
        next.allocations.insert(pod_uid.to_string(), ip);
        next.last_allocated = Some(ip);
        self.commit(next)?;
        Ok(ip)
    }

    /// The first free address after the last one handed out, wrapping around the pod range.
    fn next_free(&self) -> Option<Ipv4Addr> {
        let (first, last) = cidr::pod_range(self.state.pod_cidr);
        let (first, last) = (u32::from(first), u32::from(last));
        let used: HashSet<u32> = self.state.allocations.values().map(|ip| u32::from(*ip)).collect();
        let start = match self.state.last_allocated.map(u32::from) {
            Some(prev) if prev >= first && prev < last => prev + 1,
            _ => first,
        };
        (start..=last)
            .chain(first..start)
            .find(|ip| !used.contains(ip))
            .map(Ipv4Addr::from)
    }

    /// Frees the address of `pod_uid`; returns it if there was one. Idempotent.
    pub fn release(&mut self, pod_uid: &str) -> Result<Option<Ipv4Addr>, NetError> {
        let Some(ip) = self.get(pod_uid) else {
            return Ok(None);
        };
        let mut next = self.state.clone();
        next.allocations.remove(pod_uid);
        self.commit(next)?;
        Ok(Some(ip))
    }

    /// Frees the addresses of every pod not in `live_pod_uids` (leaked by a detach that never
    /// ran); returns what it freed.
    pub fn retain_live(
        &mut self,
        live_pod_uids: &HashSet<String>,
    ) -> Result<Vec<(String, Ipv4Addr)>, NetError> {
        let mut next = self.state.clone();
        next.allocations.retain(|uid, _| live_pod_uids.contains(uid));
        let freed: Vec<(String, Ipv4Addr)> = self
            .state
            .allocations
            .iter()
            .filter(|(uid, _)| !live_pod_uids.contains(*uid))
            .map(|(uid, ip)| (uid.clone(), *ip))
            .collect();
        if !freed.is_empty() {
            self.commit(next)?;
        }
        Ok(freed)
    }

    /// Persists `next`, then makes it the state: memory never runs ahead of the disk.
    fn commit(&mut self, next: IpamState) -> Result<(), NetError> {
        write_atomically(
            &self.path,
            &serde_json::to_vec_pretty(&next).expect("IPAM state serializes"),
        )?;
        self.state = next;
        Ok(())
    }

    fn persist(&self) -> Result<(), NetError> {
        write_atomically(
            &self.path,
            &serde_json::to_vec_pretty(&self.state).expect("IPAM state serializes"),
        )
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content:
/// write a temporary file beside it, sync it, rename it over, sync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let tmp = path.with_extension("json.tmp");
    let op = |what: &str| format!("{what} {}", tmp.display());
    let mut file = File::create(&tmp).map_err(|e| NetError::io(op("creating"), e))?;
    file.write_all(bytes)
        .map_err(|e| NetError::io(op("writing"), e))?;
    file.sync_all().map_err(|e| NetError::io(op("syncing"), e))?;
    fs::rename(&tmp, path).map_err(|e| NetError::io(format!("renaming over {}", path.display()), e))?;
    let dir = path.parent().expect("state file has a directory");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| NetError::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_after_the_gateway_and_is_idempotent_per_pod() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.244.1.2"));
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.244.1.3"));
        assert_eq!(
            ipam.allocate("a").unwrap(),
            ip("10.244.1.2"),
            "same pod, same address"
        );
        assert_eq!(ipam.allocations().len(), 2);
    }

    #[test]
    fn release_frees_and_reuse_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.0.0.0/29")).unwrap(); // pods .2 to .6
        for uid in ["a", "b", "c"] {
            ipam.allocate(uid).unwrap();
        }
        assert_eq!(ipam.release("a").unwrap(), Some(ip("10.0.0.2")));
        assert_eq!(ipam.release("a").unwrap(), None, "release is idempotent");
        // Round-robin: .5 and .6 come before the released .2.
        assert_eq!(ipam.allocate("d").unwrap(), ip("10.0.0.5"));
        assert_eq!(ipam.allocate("e").unwrap(), ip("10.0.0.6"));
        assert_eq!(ipam.allocate("f").unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn exhaustion_names_the_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.0.0.0/30")).unwrap(); // one pod: .2
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.0.0.2"));
        let err = ipam.allocate("b").unwrap_err();
        assert!(matches!(err, NetError::PoolExhausted { .. }), "{err:?}");
        assert!(err.to_string().contains("10.0.0.0/30"), "{err}");
        assert_eq!(ipam.get("b"), None, "a failed allocation leaves nothing behind");
        ipam.release("a").unwrap();
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn allocations_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cidr = net("10.244.2.0/24");
        {
            let mut ipam = Ipam::open(dir.path(), cidr).unwrap();
            ipam.allocate("a").unwrap();
            ipam.allocate("b").unwrap();
            ipam.allocate("c").unwrap();
            ipam.release("b").unwrap();
        }
        let mut ipam = Ipam::open(dir.path(), cidr).unwrap();
        assert_eq!(ipam.get("a"), Some(ip("10.244.2.2")));
        assert_eq!(ipam.get("b"), None);
        assert_eq!(ipam.get("c"), Some(ip("10.244.2.4")));
        // The round-robin position survives too: no address in use is handed out again.
        assert_eq!(ipam.allocate("d").unwrap(), ip("10.244.2.5"));
        assert!(
            !dir.path().join("ipam.json.tmp").exists(),
            "no temporary file left behind"
        );
    }

    #[test]
    fn retain_live_frees_leaked_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        for uid in ["a", "b", "c"] {
            ipam.allocate(uid).unwrap();
        }
        let live: HashSet<String> = ["b".to_string()].into();
        let freed = ipam.retain_live(&live).unwrap();
        assert_eq!(
            freed,
            vec![
                ("a".to_string(), ip("10.244.1.2")),
                ("c".to_string(), ip("10.244.1.4"))
            ]
        );
        assert_eq!(ipam.allocations().keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(ipam.retain_live(&live).unwrap().is_empty(), "idempotent");
        let reopened = Ipam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        assert_eq!(reopened.allocations().len(), 1, "gc is persisted");
    }

    #[test]
    fn changed_pod_cidr_is_refused_while_pods_hold_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        ipam.allocate("a").unwrap();
        drop(ipam);
        let err = Ipam::open(dir.path(), net("10.244.9.0/24"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.244.1.0/24") && err.contains("10.244.9.0/24"),
            "{err}"
        );
        let mut ipam = Ipam::open(dir.path(), net("10.244.1.0/24")).unwrap();
        ipam.release("a").unwrap();
        drop(ipam);
        let ipam = Ipam::open(dir.path(), net("10.244.9.0/24")).unwrap();
        assert_eq!(
            ipam.pod_cidr(),
            net("10.244.9.0/24"),
            "an empty state follows the new CIDR"
        );
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IPAM_STATE_FILE);
        fs::write(&path, b"{not json").unwrap();
        let err = Ipam::open(dir.path(), net("10.244.1.0/24"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ipam.json"), "{err}");
        let twice = r#"{"pod_cidr":"10.244.1.0/24","last_allocated":null,
                        "allocations":{"a":"10.244.1.2","b":"10.244.1.2"}}"#;
        fs::write(&path, twice).unwrap();
        let err = Ipam::open(dir.path(), net("10.244.1.0/24"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one pod"), "{err}");
        let gateway =
            r#"{"pod_cidr":"10.244.1.0/24","last_allocated":null,"allocations":{"a":"10.244.1.1"}}"#;
        fs::write(&path, gateway).unwrap();
        let err = Ipam::open(dir.path(), net("10.244.1.0/24"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the pod range"), "{err}");
    }
}
