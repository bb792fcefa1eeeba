//! Snapshot images and the state hash.
//!
//! An image is every entry of the store's column families, read from one RocksDB snapshot so
//! it is a consistent point in time (marker included):
//! `magic (8) | format version (u32 BE) | bincode(Image) | SHA-256 of everything before (32)`.

use rocksdb::{IteratorMode, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, CF_KV, CF_LEASE, CF_META, STORE_CFS};
use crate::state::{cf, State};
use crate::{Result, StoreError};

const SNAPSHOT_MAGIC: &[u8; 8] = b"BERTHSNP";
/// Version of the image layout; restore rejects any other.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 4;
const CHECKSUM_LEN: usize = 32;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The entries of each store column family, in [`STORE_CFS`] order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Image {
    cfs: Vec<(String, Entries)>,
}

impl Image {
    pub fn capture(db: &DB) -> Result<Image> {
        let snap = db.snapshot();
        let mut cfs = Vec::new();
        for name in STORE_CFS {
            let entries = snap
                .iterator_cf(cf(db, name), IteratorMode::Start)
                .map(|item| item.map(|(k, v)| (k.into_vec(), v.into_vec())))
                .collect::<Result<Entries, rocksdb::Error>>()?;
            cfs.push((name.to_string(), entries));
        }
        Ok(Image { cfs })
    }

    pub fn entries(&self, name: &str) -> &[(Vec<u8>, Vec<u8>)] {
        self.cfs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.as_slice())
            .unwrap_or_default()
    }

    fn meta(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries(CF_META)
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The in-memory state this image describes; fails on anything inconsistent, so that a
    /// bad image is rejected before it touches the database.
    pub fn to_state(&self) -> Result<State> {
        let names: Vec<&str> = self.cfs.iter().map(|(n, _)| n.as_str()).collect();
        if names != STORE_CFS {
            return Err(StoreError::Corrupt(format!("column families {names:?}")));
        }
        let format = self.meta(codec::META_FORMAT_VERSION).map(|v| v.to_vec());
        if format != Some(codec::STORE_FORMAT_VERSION.to_be_bytes().to_vec()) {
            return Err(StoreError::Corrupt(format!("store format {format:?}")));
        }
        let counter = |key: &[u8]| -> Result<i64> {
            let bytes = self
                .meta(key)
                .ok_or_else(|| StoreError::Corrupt("missing counter".into()))?;
            codec::decode_i64(bytes, "counter")
        };
        State::rebuild(
            counter(codec::META_REVISION)?,
            counter(codec::META_COMPACT_REVISION)?,
            self.entries(CF_KV).iter().map(as_pair),
            self.entries(CF_LEASE).iter().map(as_pair),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&codec::encode(self));
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Checks magic, version and checksum before decoding anything.
    pub fn decode(bytes: &[u8]) -> Result<Image> {
        let invalid = |why: &str| StoreError::InvalidSnapshot(why.to_string());
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(invalid("too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(invalid("checksum mismatch"));
        }
        if &body[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(invalid("not a berth-store snapshot"));
        }
        let version = u32::from_be_bytes(
            body[SNAPSHOT_MAGIC.len()..HEADER_LEN]
                .try_into()
                .expect("4 bytes"),
        );
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(invalid(&format!("format version {version}")));
        }
        bincode::deserialize(&body[HEADER_LEN..]).map_err(|e| invalid(&e.to_string()))
    }
}

fn as_pair((k, v): &(Vec<u8>, Vec<u8>)) -> Result<(&[u8], &[u8])> {
    Ok((k.as_slice(), v.as_slice()))
}

/// A hash of the MVCC state: counters, every stored version and every lease (not the applied
/// marker, which is Raft's business). Read from one RocksDB snapshot.
pub(crate) fn hash(db: &DB) -> Result<u64> {
    let snap = db.snapshot();
    let mut h = Sha256::new();
    for key in [codec::META_REVISION, codec::META_COMPACT_REVISION] {
        let value = snap.get_cf(cf(db, CF_META), key)?.unwrap_or_default();
        feed(&mut h, key, &value);
    }
    for name in [CF_KV, CF_LEASE] {
        h.update(name.as_bytes());
        for item in snap.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, v) = item?;
            feed(&mut h, &k, &v);
        }
    }
    let digest = h.finalize();
    Ok(u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")))
}

/// Length-prefixed, so different entry boundaries cannot hash alike.
fn feed(h: &mut Sha256, key: &[u8], value: &[u8]) {
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update((value.len() as u64).to_be_bytes());
    h.update(value);
}
