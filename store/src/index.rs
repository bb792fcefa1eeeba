//! The in-memory key index: from each user key to the revisions of its versions.
//!
//! As in etcd, values live only in RocksDB (keyed by revision); the index answers "which
//! revision holds key K as of revision R" and carries the live version's metadata so that
//! puts and compares need no disk read. It is rebuilt on open by one scan of the versions.

use crate::codec::Rev;
use crate::{KeyValue, LeaseId};

/// Metadata of a key's live version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LiveMeta {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: LeaseId,
}

impl LiveMeta {
    pub fn of(kv: &KeyValue) -> LiveMeta {
        LiveMeta {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// Every stored version of one key, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyHistory {
    /// Revisions of the stored versions; `true` marks a tombstone (a delete).
    revs: Vec<(Rev, bool)>,
    /// The live version, `None` when the key is currently deleted.
    live: Option<LiveMeta>,
}

impl KeyHistory {
    pub fn live(&self) -> Option<LiveMeta> {
        self.live
    }

    /// The revision of the version visible at store revision `main`, if the key existed then.
    pub fn visible_at(&self, main: i64) -> Option<Rev> {
        let n = self.revs.partition_point(|(rev, _)| rev.main <= main);
        match n.checked_sub(1).map(|i| self.revs[i]) {
            Some((rev, false)) => Some(rev),
            _ => None,
        }
    }

    pub fn record_put(&mut self, rev: Rev, meta: LiveMeta) {
        debug_assert!(self.revs.last().is_none_or(|(last, _)| *last < rev));
        self.revs.push((rev, false));
        self.live = Some(meta);
    }

    pub fn record_delete(&mut self, rev: Rev) {
        debug_assert!(self.revs.last().is_none_or(|(last, _)| *last < rev));
        self.revs.push((rev, true));
        self.live = None;
    }

    /// Drops every version superseded at or before `at`: of the versions <= `at` only the
    /// newest stays, and not even that one if it is a tombstone. Pushes the dropped revisions
    /// to `dropped`; returns whether the history is now empty (the key can be forgotten).
    pub fn compact(&mut self, at: i64, dropped: &mut Vec<Rev>) -> bool {
        let n = self.revs.partition_point(|(rev, _)| rev.main <= at);
        let keep_newest = n > 0 && !self.revs[n - 1].1;
        let drop_count = if keep_newest { n - 1 } else { n };
        dropped.extend(self.revs.drain(..drop_count).map(|(rev, _)| rev));
        self.revs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rev: i64) -> LiveMeta {
        LiveMeta {
            create_revision: 2,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn visibility_and_compaction() {
        let mut h = KeyHistory::default();
        h.record_put(Rev::new(2, 0), meta(2));
        h.record_put(Rev::new(3, 0), meta(3));
        h.record_delete(Rev::new(4, 1));
        h.record_put(Rev::new(6, 0), meta(6));
        assert_eq!(h.visible_at(1), None);
        assert_eq!(h.visible_at(2), Some(Rev::new(2, 0)));
        assert_eq!(h.visible_at(4), None);
        assert_eq!(h.visible_at(5), None);
        assert_eq!(h.visible_at(9), Some(Rev::new(6, 0)));

        let mut dropped = Vec::new();
        assert!(!h.compact(3, &mut dropped));
        assert_eq!(dropped, vec![Rev::new(2, 0)]);
        assert_eq!(h.visible_at(3), Some(Rev::new(3, 0)));

        dropped.clear();
        assert!(!h.compact(5, &mut dropped));
        assert_eq!(dropped, vec![Rev::new(3, 0), Rev::new(4, 1)]);
        assert_eq!(h.visible_at(6), Some(Rev::new(6, 0)));

        h.record_delete(Rev::new(7, 0));
        dropped.clear();
        assert!(h.compact(7, &mut dropped));
        assert_eq!(dropped, vec![Rev::new(6, 0), Rev::new(7, 0)]);
    }
}
