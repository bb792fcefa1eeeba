//! On-disk layout: column family names, meta keys and the encodings of stored records.
//!
//! Layout (after etcd's design): the versions column family maps a revision
//! (main u64 BE, sub u32 BE) to one version of one key, so history is ordered by revision and a
//! watcher catches up with one forward scan; the meta column family holds the store's counters
//! and the caller's applied marker; the lease column family maps a lease id to its record.

use serde::{Deserialize, Serialize};

use crate::{KeyValue, Lease, LeaseId, Result, StoreError};

/// Column family of key versions, keyed by revision.
pub(crate) const CF_KV: &str = "store_kv";
/// Column family of the store's counters and the applied marker.
pub(crate) const CF_META: &str = "store_meta";
/// Column family of lease records, keyed by lease id.
pub(crate) const CF_LEASE: &str = "store_lease";
/// Every column family the store owns, in a fixed order (snapshots and hashes follow it).
pub(crate) const STORE_CFS: [&str; 3] = [CF_KV, CF_META, CF_LEASE];

pub(crate) const META_REVISION: &[u8] = b"revision";
pub(crate) const META_COMPACT_REVISION: &[u8] = b"compact_revision";
pub(crate) const META_APPLIED_MARKER: &[u8] = b"applied_marker";
pub(crate) const META_FORMAT_VERSION: &[u8] = b"format_version";

/// Version of the on-disk layout; bump it when a stored encoding changes.
pub(crate) const STORE_FORMAT_VERSION: u32 = 1;

/// The revision of a fresh store, as in etcd.
pub(crate) const INITIAL_REVISION: i64 = 1;

/// Length of an encoded [`Rev`].
pub(crate) const REV_KEY_LEN: usize = 12;

/// One write's position in history: the store revision (`main`) and the write's index inside
/// that revision (`sub`), since a txn or a delete-range writes several keys in one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub fn new(main: i64, sub: i64) -> Rev {
        Rev { main, sub }
    }

    /// Big-endian, so RocksDB's byte order is revision order (revisions are never negative).
    pub fn to_key(self) -> [u8; REV_KEY_LEN] {
        let mut out = [0u8; REV_KEY_LEN];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&(self.sub as u32).to_be_bytes());
        out
    }

    pub fn from_key(bytes: &[u8]) -> Result<Rev> {
        if bytes.len() != REV_KEY_LEN {
            return Err(StoreError::Corrupt(format!(
                "revision key of {} bytes",
                bytes.len()
            )));
        }
        let main = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let sub = u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes"));
        Ok(Rev::new(main as i64, i64::from(sub)))
    }
}

/// One stored version of a key. A tombstone records a delete: `kv` then holds only the key
/// and the deleting revision as `mod_revision`, exactly the shape of a delete event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredKv {
    pub kv: KeyValue,
    pub tombstone: bool,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("bincode serialization into memory cannot fail")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn decode_stored_kv(bytes: &[u8]) -> Result<StoredKv> {
    decode(bytes, "stored key version")
}

/// Lease ids are signed; flipping the sign bit makes the big-endian bytes sort like the ids.
pub(crate) fn lease_key(id: LeaseId) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn decode_lease(bytes: &[u8]) -> Result<Lease> {
    decode(bytes, "lease record")
}

pub(crate) fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn decode_i64(bytes: &[u8], what: &str) -> Result<i64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {} bytes", bytes.len())))?;
    Ok(i64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_keys_sort_like_revisions() {
        let a = Rev::new(2, 7).to_key();
        let b = Rev::new(3, 0).to_key();
        let c = Rev::new(256, 1).to_key();
        assert!(a < b && b < c);
        assert_eq!(Rev::from_key(&c).unwrap(), Rev::new(256, 1));
    }

    #[test]
    fn lease_keys_sort_like_ids() {
        assert!(lease_key(-5) < lease_key(0));
        assert!(lease_key(0) < lease_key(7));
        assert!(lease_key(7) < lease_key(i64::MAX));
    }
}
