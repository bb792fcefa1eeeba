//! The durable high-water mark: a small file in the data dir, outside RocksDB, recording the
//! last log id and the vote this member has acknowledged as durable. After each WAL sync the
//! group-commit thread hands the synced state to the mark thread, which rewrites the mark (one
//! small `pwrite` + `fdatasync`, overlapping the next WAL sync) and only then answers that
//! sync's waiters (see `log_store::Marker`); on start the member compares what RocksDB recovered with it and
//! refuses to start when the recovered Raft state is behind (JEPSEN.md, bug 2).
//!
//! Why a separate file: RocksDB's default WAL recovery (point in time) silently stops at the
//! first damaged record, so a WAL that lost its tail (a disk fault) reopens without error and
//! the member would forget entries and votes it acknowledged — which breaks Raft's safety.
//! The alternatives do not fit. `WALRecoveryMode::AbsoluteConsistency` refuses a torn tail that
//! was never acknowledged, and a plain crash can leave one (RocksDB writes a batch larger than
//! its buffer in several `write()` calls, Linux stops a `write()` at a page boundary when a
//! fatal signal is pending, and a power loss keeps any prefix); yet it opens a WAL cut exactly at
//! a record boundary, or missing a whole file, without a word. Checked with rocksdb 0.24: a WAL
//! holding a synced put and an unsynced 3 MiB put, cut mid-record, fails to open with
//! "Corruption: truncated record body"; cut right after the synced put it opens and the
//! 3 MiB put is silently gone. `track_and_verify_wals_in_manifest` tracks only closed WALs,
//! never the live one (its documentation says so), which is where the loss happens.
//!
//! Invariant: at every instant, the state durable in the WAL is at or above the mark on disk,
//! component by component (log id, vote). An increase is written after the WAL sync that made
//! it durable; a decrease (a conflicting suffix truncated, which openraft does without waiting
//! for a sync) is written *before* the WAL sync. A crash in between therefore leaves the mark
//! at or below what the WAL holds, and a plain crash (kill -9) never makes a member refuse.
//! The one exception is a power loss in the middle of a sync that keeps a truncation but not
//! the append after it: the member then refuses although it lost nothing acknowledged, which
//! is the safe side (it is rejoined empty).
//!
//! File layout: two slots of [`SLOT_BYTES`], written alternately, each `MAGIC | seq u64 |
//! len u32 | bincode(Mark) | fnv1a64`; the valid slot with the higher `seq` wins, so a torn
//! write of one slot leaves the other. The file never changes size after creation, so
//! `fdatasync` has no metadata to write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RaftError;
use crate::types::{fnv1a, LogId, Vote};

/// The mark's file name in the data dir.
pub(crate) const DURABLE_FILE: &str = "raft_durable";
/// Bytes of one slot; a `Mark` takes well under 100.
const SLOT_BYTES: usize = 512;
const MAGIC: &[u8; 8] = b"BRTHDUR1";
/// MAGIC + seq + len.
const HEADER_BYTES: usize = 8 + 8 + 4;

/// What a member has acknowledged as durable (or, read back from the log, what it holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub last_log_id: Option<LogId>,
    pub vote: Option<Vote>,
}

fn vote_at_least(have: Option<Vote>, need: Option<Vote>) -> bool {
    match (have, need) {
        (_, None) => true,
        (None, Some(_)) => false,
        // Votes are partially ordered (`PartialOrd`); whatever is not at or above the
        // acknowledged vote is a lost vote.
        (Some(h), Some(n)) => h >= n,
    }
}

fn min_vote(a: Option<Vote>, b: Option<Vote>) -> Option<Vote> {
    match (a, b) {
        (Some(x), Some(y)) if x <= y => Some(x),
        (Some(x), Some(y)) if y <= x => Some(y),
        // Incomparable or absent: no claim at all is the safe lower bound.
        _ => None,
    }
}

impl Mark {
    /// Whether this (recovered) state holds everything `acked` promised.
    pub(crate) fn covers(&self, acked: &Mark) -> bool {
        self.last_log_id >= acked.last_log_id && vote_at_least(self.vote, acked.vote)
    }

    /// The component-wise lower bound of two marks.
    pub(crate) fn min(&self, other: &Mark) -> Mark {
        Mark {
            last_log_id: self.last_log_id.min(other.last_log_id),
            vote: min_vote(self.vote, other.vote),
        }
    }
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.last_log_id {
            Some(l) => write!(f, "last log id {l}")?,
            None => f.write_str("no log")?,
        }
        match &self.vote {
            Some(v) => write!(f, ", vote {v}"),
            None => f.write_str(", no vote"),
        }
    }
}

fn encode_slot(seq: u64, mark: &Mark) -> io::Result<Vec<u8>> {
    let body = bincode::serialize(mark).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(SLOT_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    // Crash on a broken invariant: a Mark is a few dozen bytes.
    assert!(out.len() <= SLOT_BYTES, "durable mark of {} bytes", out.len());
    out.resize(SLOT_BYTES, 0);
    Ok(out)
}

fn decode_slot(slot: &[u8]) -> Option<(u64, Mark)> {
    if slot.len() < HEADER_BYTES || &slot[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    let end = HEADER_BYTES.checked_add(len)?;
    let sum_end = end.checked_add(8)?;
    if sum_end > slot.len() {
        return None;
    }
    let sum = u64::from_le_bytes(slot[end..sum_end].try_into().ok()?);
    if fnv1a(&slot[..end]) != sum {
        return None;
    }
    let mark = bincode::deserialize(&slot[HEADER_BYTES..end]).ok()?;
    Some((seq, mark))
}

/// The open mark file; owned by the group-commit thread once the member runs.
pub(crate) struct DurableFile {
    file: File,
    path: PathBuf,
    seq: u64,
    written: Mark,
}

impl std::fmt::Debug for DurableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableFile")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("written", &self.written)
            .finish()
    }
}

/// What opening the mark file found.
pub(crate) enum Opened {
    /// No file: a data dir made before this check existed, or a new one.
    Missing,
    /// The file and the mark it holds.
    Found(DurableFile),
}

impl DurableFile {
    /// Opens the mark file in `data_dir`. Both slots unreadable is an error (the file is
    /// damaged, so what was acknowledged is unknown).
    pub(crate) fn open(data_dir: &Path) -> io::Result<Opened> {
        let path = data_dir.join(DURABLE_FILE);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; 2 * SLOT_BYTES];
        let n = read_up_to(&file, &mut buf)?;
        let best = buf[..n]
            .chunks(SLOT_BYTES)
            .filter_map(decode_slot)
            .max_by_key(|(seq, _)| *seq);
        match best {
            Some((seq, written)) => Ok(Opened::Found(DurableFile {
                file,
                path,
                seq,
                written,
            })),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no intact slot (the file is damaged)", path.display()),
            )),
        }
    }

    /// Creates the mark file holding `mark` (written to a temporary file, synced, renamed,
    /// and the directory synced, so it either exists whole or not at all).
    pub(crate) fn create(data_dir: &Path, mark: Mark) -> io::Result<DurableFile> {
        let path = data_dir.join(DURABLE_FILE);
        let tmp = data_dir.join(format!("{DURABLE_FILE}.tmp"));
        let mut image = encode_slot(1, &mark)?;
        image.extend_from_slice(&encode_slot(0, &mark)?);
        {
            let f = File::create(&tmp)?;
            f.write_all_at(&image, 0)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()?;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok(DurableFile {
            file,
            path,
            seq: 1,
            written: mark,
        })
    }

    /// The mark last written.
    pub(crate) fn mark(&self) -> Mark {
        self.written
    }

    /// Writes `mark` durably into the older slot; nothing when it is what the file holds.
    pub(crate) fn record(&mut self, mark: Mark) -> io::Result<()> {
        if mark == self.written {
            return Ok(());
        }
        let seq = self.seq + 1;
        let slot = encode_slot(seq, &mark)?;
        let offset = (seq % 2) * SLOT_BYTES as u64;
        self.file.write_all_at(&slot, offset)?;
        self.file.sync_data()?;
        self.seq = seq;
        self.written = mark;
        Ok(())
    }
}

fn read_up_to(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What to do with a member that must not serve.
pub(crate) fn rejoin_advice(data_dir: &Path) -> String {
    format!(
        "Starting could make it forget acknowledged log entries or votes, so it refuses. Remove \
         this member from the cluster (etcdctl member remove <id>), delete {} and rejoin it \
         with an empty data dir (--join)",
        data_dir.display()
    )
}

/// The error of a member whose recovered state is behind its durable mark: where, what was
/// expected and found, and what to do.
pub(crate) fn behind_error(data_dir: &Path, acked: &Mark, found: &Mark) -> RaftError {
    RaftError::StateBehind(format!(
        "data dir {}: the Raft state recovered from the database ({found}) is behind what this \
         member had acknowledged as durable ({acked}); its write-ahead log lost records (disk \
         fault?). {}",
        data_dir.display(),
        rejoin_advice(data_dir)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn mark(term: u64, index: u64, vote_term: u64, committed: bool) -> Mark {
        let mut vote = Vote::new(vote_term, 1);
        if committed {
            vote.commit();
        }
        Mark {
            last_log_id: Some(log_id(term, index)),
            vote: Some(vote),
        }
    }

    #[test]
    fn covers_compares_log_and_vote() {
        let acked = mark(2, 10, 2, true);
        assert!(acked.covers(&acked));
        assert!(mark(2, 11, 2, true).covers(&acked));
        assert!(
            mark(3, 5, 3, false).covers(&mark(2, 10, 2, false)),
            "higher term wins"
        );
        assert!(!mark(2, 9, 2, true).covers(&acked), "lost log tail");
        assert!(!mark(2, 10, 1, true).covers(&acked), "lost vote");
        assert!(!mark(2, 10, 2, false).covers(&acked), "lost vote commitment");
        assert!(!Mark::default().covers(&acked), "lost everything");
        // openraft's advanced leader ids order candidates of one term by node id: a vote may
        // only move up that order, so a vote for a lower candidate of the term is a lost vote.
        let lower_candidate = Mark {
            vote: Some(Vote::new(2, 0)),
            ..acked
        };
        assert!(
            !lower_candidate.covers(&mark(2, 10, 2, false)),
            "lower candidate of the term"
        );
        assert!(acked.covers(&Mark::default()));
    }

    #[test]
    fn min_is_a_lower_bound_of_both() {
        let a = mark(2, 10, 3, false);
        let b = mark(3, 4, 2, true);
        let m = a.min(&b);
        assert!(a.covers(&m) && b.covers(&m));
        assert_eq!(m.last_log_id, Some(log_id(2, 10)));
    }

    #[test]
    fn the_newest_intact_slot_wins_and_a_torn_one_is_ignored() {
        let dir = tempfile::TempDir::new().unwrap();
        assert!(matches!(DurableFile::open(dir.path()).unwrap(), Opened::Missing));
        let mut f = DurableFile::create(dir.path(), Mark::default()).unwrap();
        f.record(mark(1, 5, 1, true)).unwrap();
        f.record(mark(1, 9, 1, true)).unwrap();
        let Opened::Found(g) = DurableFile::open(dir.path()).unwrap() else {
            panic!("missing")
        };
        assert_eq!(g.mark(), mark(1, 9, 1, true));

        // Tear the newest slot: the previous mark is read back.
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(DURABLE_FILE))
            .unwrap();
        file.write_all_at(&[0xee; 16], (g.seq % 2) * SLOT_BYTES as u64 + 20)
            .unwrap();
        let Opened::Found(h) = DurableFile::open(dir.path()).unwrap() else {
            panic!("missing")
        };
        assert_eq!(h.mark(), mark(1, 5, 1, true));

        // Both torn: an error, never "nothing was acknowledged".
        file.write_all_at(&[0xee; 16], (h.seq % 2) * SLOT_BYTES as u64 + 20)
            .unwrap();
        assert!(DurableFile::open(dir.path()).is_err());
    }
}
