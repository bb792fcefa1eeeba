//! `berth snapshot save|restore`: consistent backups of the store, as etcd's.
//!
//! The backup format is `berth_store::encode_backup` (the same bytes the Maintenance.Snapshot
//! stream sends, so `etcdctl snapshot save` makes a file this restores).

use crate::ServerArgs;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum SnapshotCmd {
    /// Stream a consistent backup from a server into FILE.
    Save {
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Seed a new member's data dir from a backup. Restore the same file on every founding
    /// member, then start them with the same --initial-cluster.
    Restore {
        file: PathBuf,
        /// The new member's data dir; must not exist yet.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// How long streaming a backup may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn run(cmd: SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Save { file, server } => save(&server, &file).await,
        SnapshotCmd::Restore { file, data_dir } => restore(&file, &data_dir),
    }
}

async fn save(s: &ServerArgs, file: &Path) -> anyhow::Result<()> {
    // Snapshots can be large: the per-request timeout is raised for the stream.
    let client = berth_client::EtcdClient::new(&s.servers, SNAPSHOT_TIMEOUT)?;
    let blob = client.snapshot().await?;
    berth_store::decode_backup(&blob)?;
    let tmp = file.with_extension("part");
    std::fs::write(&tmp, &blob).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file)?;
    println!("Snapshot saved at {} ({} bytes)", file.display(), blob.len());
    Ok(())
}

fn restore(file: &Path, data_dir: &Path) -> anyhow::Result<()> {
    if data_dir.exists() {
        bail!(
            "--data-dir {} already exists; restore seeds a new member",
            data_dir.display()
        );
    }
    let blob = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let image = berth_store::decode_backup(&blob)?;
    berth_raft::seed_data_dir(data_dir, image)?;
    println!("restored {} into {}", file.display(), data_dir.display());
    Ok(())
}
