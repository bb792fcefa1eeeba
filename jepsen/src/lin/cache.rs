//! The search cache: the set of (linearized set, model state) pairs already explored.
//!
//! A small open-addressing table keyed by a 64-bit hash, so that a candidate "current set plus
//! one operation" can be looked up without building it: the bitset is cloned only when the
//! pair is new. (This is also much cheaper than a generic hash set in unoptimized builds, which
//! is where the tests run.)

use std::hash::{BuildHasher, Hash};

use super::bitset::{Bitset, FastBuildHasher};

const EMPTY: u32 = u32::MAX;

pub(crate) struct Cache<S> {
    /// Power-of-two table of indexes into `entries` (`EMPTY` if free).
    slots: Vec<u32>,
    hashes: Vec<u64>,
    entries: Vec<(Bitset, S)>,
}

impl<S: Eq + Hash + Clone> Cache<S> {
    pub(crate) fn new() -> Self {
        Cache {
            slots: vec![EMPTY; 1024],
            hashes: Vec::new(),
            entries: Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts (`linearized` with `bit` set, `state`) unless it is present; true if inserted.
    pub(crate) fn insert_with(&mut self, linearized: &Bitset, bit: usize, state: &S) -> bool {
        let hash = combine(
            linearized.hash_with(bit),
            FastBuildHasher::default().hash_one(state),
        );
        let mask = self.slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        while self.slots[slot] != EMPTY {
            let index = self.slots[slot] as usize;
            let (bits, seen) = &self.entries[index];
            if self.hashes[index] == hash && linearized.equals_with(bit, bits) && seen == state {
                return false;
            }
            slot = (slot + 1) & mask;
        }
        let mut bits = linearized.clone();
        bits.set(bit);
        self.slots[slot] = u32::try_from(self.entries.len()).expect("fewer than 2^32 cache entries");
        self.hashes.push(hash);
        self.entries.push((bits, state.clone()));
        if self.entries.len() * 2 > self.slots.len() {
            self.grow();
        }
        true
    }

    fn grow(&mut self) {
        let len = self.slots.len() * 2;
        let mask = len - 1;
        self.slots = vec![EMPTY; len];
        for (index, &hash) in self.hashes.iter().enumerate() {
            let mut slot = (hash as usize) & mask;
            while self.slots[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = index as u32;
        }
    }
}

fn combine(bits: u64, state: u64) -> u64 {
    (bits ^ state.rotate_left(29))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_each_pair_once_and_survives_growth() {
        let mut cache = Cache::new();
        let mut bits = Bitset::new(5000);
        for bit in 0..3000 {
            assert!(cache.insert_with(&bits, bit, &(bit % 7)));
            assert!(!cache.insert_with(&bits, bit, &(bit % 7)));
            assert!(cache.insert_with(&bits, bit, &(bit % 7 + 100)));
            bits.set(bit);
        }
        assert_eq!(cache.len(), 6000);
        let mut replay = Bitset::new(5000);
        for bit in 0..3000 {
            assert!(!cache.insert_with(&replay, bit, &(bit % 7)));
            replay.set(bit);
        }
    }
}
