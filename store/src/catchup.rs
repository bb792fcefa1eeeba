//! The background worker that catches unsynced watchers up from stored history.
//!
//! It is a plain thread (not a tokio task) so the store works whether or not it is opened
//! inside a runtime; it never blocks on a watcher: a full queue just waits for the receiver,
//! whose `recv` wakes the worker again.

use rocksdb::{Direction, IteratorMode, DB};

use crate::codec::{self, Rev, CF_KV};
use crate::state::{cf, Reader, State};
use crate::store::Shared;
use crate::watch::{wants, Job, Step};
use crate::{Event, EventKind, Result};

/// Most events in one catch-up message. A revision's events are never split, so a message
/// exceeds this only when a single revision alone does.
pub const CATCHUP_MAX_EVENTS_PER_MESSAGE: usize = 1000;

/// Most stored versions scanned for one watcher per round, so that a far-behind watcher with a
/// narrow filter neither holds the store's read lock for long nor starves the others.
pub const CATCHUP_MAX_VERSIONS_SCANNED: usize = 10_000;

/// Runs until the store shuts the signal down.
pub(crate) fn run(shared: &Shared) {
    while shared.hub.signal.wait() {
        loop {
            match round(shared) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    // The next wake-up (any apply, any receive) retries.
                    tracing::error!(error = %e, "watch catch-up failed");
                    break;
                }
            }
        }
    }
}

/// One chunk for every unsynced watcher with room; true if any of them moved.
fn round(shared: &Shared) -> Result<bool> {
    let mut moved = false;
    for job in shared.hub.jobs() {
        let step = {
            let st = shared.state.read();
            read_step(&st, &shared.db, &job)?
        };
        moved |= shared.hub.resolve(&job, step);
    }
    Ok(moved)
}

/// Reads the next chunk of history `job` needs, ending on a revision boundary.
pub(crate) fn read_step(st: &State, db: &DB, job: &Job) -> Result<Step> {
    if job.next_rev <= st.compact_rev {
        return Ok(Step::Compacted(st.compact_rev));
    }
    if job.next_rev > st.rev {
        return Ok(Step::CaughtUp);
    }
    let reader = Reader::new(db, None);
    let mut events = Vec::new();
    let mut upto = st.rev;
    let mut current_main = job.next_rev - 1;
    let start = Rev::new(job.next_rev, 0).to_key();
    let versions = db.iterator_cf(cf(db, CF_KV), IteratorMode::From(&start, Direction::Forward));
    for (scanned, item) in versions.enumerate() {
        let (key, value) = item?;
        let rev = Rev::from_key(&key)?;
        if rev.main > st.rev {
            break;
        }
        if rev.main != current_main {
            // A revision boundary: the only place a chunk may end.
            if events.len() >= CATCHUP_MAX_EVENTS_PER_MESSAGE || scanned >= CATCHUP_MAX_VERSIONS_SCANNED {
                upto = current_main;
                break;
            }
            current_main = rev.main;
        }
        let stored = codec::decode_stored_kv(&value)?;
        let kind = if stored.tombstone {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        let mut ev = Event {
            kind,
            kv: stored.kv,
            prev_kv: None,
        };
        if !wants(&job.req, &ev) {
            continue;
        }
        if job.req.prev_kv {
            ev.prev_kv = prev_version(st, &reader, &ev)?;
        }
        events.push(ev);
    }
    Ok(Step::Events { events, upto })
}

/// The version of the event's key just before the event (a txn writes a key at most once).
pub(crate) fn prev_version(st: &State, reader: &Reader<'_>, ev: &Event) -> Result<Option<crate::KeyValue>> {
    reader.get_at(st, &ev.kv.key, ev.kv.mod_revision - 1)
}
