//! Seeding a new member's data dir from a backup of another cluster's store.

use crate::error::RaftError;
use crate::log_store::{LOG_CF, META_CF};
use berth_store::{Store, StoreConfig, WATCH_QUEUE_LEN_DEFAULT};
use std::path::Path;

/// Marks a data dir seeded from a backup and not yet part of any cluster.
pub(crate) const SEEDED_FILE: &str = "seeded";

/// Creates `data_dir` holding the store image `image` and no Raft state: the member then
/// founds a new cluster with `--initial-cluster` (its log starts afresh, the data carries
/// over, revisions continue from the image's). Refuses an existing `data_dir`.
pub fn seed_data_dir(data_dir: &Path, image: &[u8]) -> Result<(), RaftError> {
    if data_dir.exists() {
        return Err(RaftError::Config(format!(
            "data dir {} already exists",
            data_dir.display()
        )));
    }
    let io = |e: std::io::Error| RaftError::Storage(format!("{}: {e}", data_dir.display()));
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let seeded = (|| {
        let store = Store::open(StoreConfig {
            path: data_dir.join("db"),
            extra_column_families: vec![LOG_CF.to_string(), META_CF.to_string()],
            watch_queue_len: WATCH_QUEUE_LEN_DEFAULT,
        })
        .map_err(RaftError::from)?;
        store.restore(image)?;
        // The image's marker names the old cluster's log; the new log starts empty.
        store.clear_applied_marker()?;
        Ok::<_, RaftError>(())
    })()
    .and_then(|()| {
        std::fs::write(
            data_dir.join(SEEDED_FILE),
            b"seeded from a backup; founds a new cluster\n",
        )
        .map_err(|e| RaftError::Storage(format!("{}: {e}", data_dir.display())))
    });
    if let Err(e) = seeded {
        // Leave nothing half-made behind: a later attempt must find no data dir.
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(e);
    }
    Ok(())
}
