//! etcd's key-range convention, shared by range, delete-range, compares and watches.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Bounds in the form `BTreeMap::range` takes.
type KeyBounds<'k> = (Bound<&'k [u8]>, Bound<&'k [u8]>);

/// `range_end` empty: only `key`; `range_end == [0]`: every key >= `key`; otherwise the
/// half-open interval [key, range_end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    Single(&'a [u8]),
    From(&'a [u8]),
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::From(key) => k >= key,
            KeyRange::Between(key, end) => k >= key && k < end,
        }
    }

    /// The entries of `map` inside the range, in key order.
    pub fn iter<'m, V>(
        &self,
        map: &'m BTreeMap<Vec<u8>, V>,
    ) -> impl Iterator<Item = (&'m Vec<u8>, &'m V)> + 'm {
        let bounds: Option<KeyBounds<'_>> = match *self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
            // BTreeMap::range panics on an inverted interval; an inverted range is just empty.
            KeyRange::Between(key, end) if key < end => Some((Bound::Included(key), Bound::Excluded(end))),
            KeyRange::Between(..) => None,
        };
        bounds.map(|b| map.range::<[u8], _>(b)).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        assert!(KeyRange::new(b"a", &[0]).contains(b"zzz"));
        assert!(KeyRange::new(&[0], &[0]).contains(b"\x00"));
        assert!(KeyRange::new(b"a", b"b").contains(b"azz"));
        assert!(!KeyRange::new(b"a", b"b").contains(b"b"));
        let map: BTreeMap<Vec<u8>, ()> = [(b"a".to_vec(), ()), (b"b".to_vec(), ())].into();
        assert_eq!(KeyRange::new(b"b", b"a").iter(&map).count(), 0);
        assert_eq!(KeyRange::new(b"a", &[0]).iter(&map).count(), 2);
        assert_eq!(KeyRange::new(b"b", b"").iter(&map).count(), 1);
    }
}
