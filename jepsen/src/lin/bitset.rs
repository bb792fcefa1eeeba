//! The set of linearized operations, with an incrementally maintained hash, and a fast hasher
//! for model states.

use std::hash::{BuildHasherDefault, Hasher};

/// A fixed-size bitset whose hash is kept up to date on every change (XOR of one mixed word per
/// set bit), so the cache hashes it in O(1) instead of O(n/64).
#[derive(Clone, Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    hash: u64,
}

impl Bitset {
    pub(crate) fn new(bits: usize) -> Self {
        Bitset {
            words: vec![0; bits.div_ceil(64)],
            hash: 0,
        }
    }

    pub(crate) fn set(&mut self, bit: usize) {
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.words[word] & mask == 0 {
            self.words[word] |= mask;
            self.hash ^= mix(bit as u64);
        }
    }

    pub(crate) fn clear(&mut self, bit: usize) {
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.words[word] & mask != 0 {
            self.words[word] &= !mask;
            self.hash ^= mix(bit as u64);
        }
    }

    pub(crate) fn contains(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1u64 << (bit % 64)) != 0
    }

    /// The hash this set would have with `bit` (not in it) added.
    pub(crate) fn hash_with(&self, bit: usize) -> u64 {
        debug_assert!(!self.contains(bit));
        self.hash ^ mix(bit as u64)
    }

    /// Whether `other` is this set with `bit` (not in it) added.
    pub(crate) fn equals_with(&self, bit: usize, other: &Bitset) -> bool {
        if other.hash != self.hash_with(bit) {
            return false;
        }
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        for (i, (&mine, &theirs)) in self.words.iter().zip(&other.words).enumerate() {
            let expected = if i == word { mine | mask } else { mine };
            if expected != theirs {
                return false;
            }
        }
        true
    }
}

impl PartialEq for Bitset {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.words == other.words
    }
}

impl Eq for Bitset {}

/// SplitMix64's finalizer: spreads one bit index over the whole word.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small multiply-rotate hasher (the "Fx" scheme): not DoS-resistant, which does not matter
/// for a cache keyed by our own search states, and much cheaper than SipHash.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }

    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FastBuildHasher = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn set_and_clear_keep_hash_and_equality_consistent() {
        let mut a = Bitset::new(130);
        let mut b = Bitset::new(130);
        a.set(3);
        a.set(129);
        b.set(129);
        b.set(3);
        assert_eq!(a, b);
        assert!(a.contains(129) && !a.contains(128));
        assert_eq!(a.hash, b.hash);
        a.set(3); // idempotent
        assert_eq!(a, b);
        a.clear(3);
        assert_ne!(a, b);
        a.clear(3);
        b.clear(3);
        assert_eq!(a, b);
        a.clear(129);
        assert_eq!(a, Bitset::new(130));
    }

    #[test]
    fn equals_with_one_more_bit() {
        let mut a = Bitset::new(200);
        a.set(7);
        let mut b = a.clone();
        b.set(150);
        assert!(a.equals_with(150, &b));
        assert!(!a.equals_with(149, &b));
        assert!(!b.equals_with(3, &a));
        assert_eq!(a.hash_with(150), b.hash);
    }

    #[test]
    fn fast_hasher_distinguishes_short_strings() {
        let h = FastBuildHasher::default();
        assert_ne!(h.hash_one("x 1 y"), h.hash_one("x 1 y "));
        assert_ne!(h.hash_one(""), h.hash_one("\0"));
    }
}
