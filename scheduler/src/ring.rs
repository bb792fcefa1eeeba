//! Rendezvous (highest random weight) hashing: which live instance owns a pod. Every instance
//! computes the same owner from the same set of live instances, and when one leaves only its
//! pods move.

/// FNV-1a over the bytes, then a SplitMix64 finalizer so that similar inputs spread.
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The instance that owns `uid` among `live` (None when none is live).
pub fn owner<'a>(uid: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|i| (hash64(&[uid.as_bytes(), i.as_bytes()]), i.as_str()))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_stable_balanced_and_move_minimally() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = ["a", "c"].iter().map(|s| s.to_string()).collect();
        let mut counts = std::collections::HashMap::new();
        for i in 0..3000 {
            let uid = format!("uid-{i}");
            let o3 = owner(&uid, &three).unwrap();
            *counts.entry(o3).or_insert(0) += 1;
            let o2 = owner(&uid, &two).unwrap();
            // Only b's pods move when b leaves.
            if o3 != "b" {
                assert_eq!(o2, o3, "{uid}");
            }
            assert_eq!(owner(&uid, &three), Some(o3));
        }
        for (i, c) in counts {
            assert!((800..1200).contains(&c), "{i} owns {c} of 3000");
        }
        assert_eq!(owner("x", &[]), None);
    }
}
