//! The backup file format: a store image framed so that etcd tools accept the stream.
//!
//! etcdctl's `snapshot save` insists that a snapshot is a whole number of 512-byte pages
//! followed by a SHA-256 digest (a bbolt file's shape). So a backup is: magic, the image
//! length (u64 BE), the image, zero padding to a 512-byte boundary, then the SHA-256 of
//! everything before it.

use crate::{Result, StoreError};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"BERTHBK1";
const PAGE_BYTES: usize = 512;
const DIGEST_BYTES: usize = 32;
const HEADER_BYTES: usize = MAGIC.len() + 8;

/// Frames a store image (from [`crate::Store::snapshot`]) as a backup.
pub fn encode_backup(image: &[u8]) -> Vec<u8> {
    let body = HEADER_BYTES + image.len();
    let padded = body.div_ceil(PAGE_BYTES) * PAGE_BYTES;
    let mut out = Vec::with_capacity(padded + DIGEST_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(image.len() as u64).to_be_bytes());
    out.extend_from_slice(image);
    out.resize(padded, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Checks a backup's digest and framing and returns the store image inside.
pub fn decode_backup(backup: &[u8]) -> Result<&[u8]> {
    let bad = |m: &str| StoreError::InvalidSnapshot(format!("backup: {m}"));
    if backup.len() < HEADER_BYTES + DIGEST_BYTES || !(backup.len() - DIGEST_BYTES).is_multiple_of(PAGE_BYTES)
    {
        return Err(bad("truncated or not a Berth backup"));
    }
    let (body, digest) = backup.split_at(backup.len() - DIGEST_BYTES);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad("digest mismatch: the file is corrupt or truncated"));
    }
    if &body[..MAGIC.len()] != MAGIC {
        return Err(bad("not a Berth backup (bad magic)"));
    }
    let len = u64::from_be_bytes(body[MAGIC.len()..HEADER_BYTES].try_into().expect("8 bytes")) as usize;
    body.get(HEADER_BYTES..HEADER_BYTES + len)
        .ok_or_else(|| bad("image length exceeds the file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_has_etcds_shape() {
        for len in [0, 1, 495, 496, 497, 5000] {
            let image: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let b = encode_backup(&image);
            assert_eq!(b.len() % PAGE_BYTES, DIGEST_BYTES, "etcdctl's checksum rule");
            assert_eq!(decode_backup(&b).unwrap(), &image[..]);
        }
    }

    #[test]
    fn corruption_is_refused() {
        let mut b = encode_backup(b"image");
        b[20] ^= 1;
        assert!(decode_backup(&b)
            .unwrap_err()
            .to_string()
            .contains("digest mismatch"));
        assert!(decode_backup(&b[..100]).is_err());
        assert!(decode_backup(b"").is_err());
    }
}
