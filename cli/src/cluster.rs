//! `berth cluster members|remove`.

use crate::ServerArgs;
use anyhow::bail;
use berth_client::EtcdClient;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum ClusterCmd {
    /// List members: name, id, peer and client address, role, applied index.
    Members {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a member, by name or id (hex as `etcdctl member list` shows it, or decimal).
    Remove {
        member: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn client(s: &ServerArgs) -> anyhow::Result<EtcdClient> {
    Ok(EtcdClient::new(
        &s.servers,
        Duration::from_millis(s.request_timeout_ms),
    )?)
}

fn strip(urls: &[String]) -> String {
    urls.iter()
        .map(|u| u.trim_start_matches("http://").trim_start_matches("https://"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Members { server } => members(&server).await,
        ClusterCmd::Remove { member, server } => remove(&server, &member).await,
    }
}

async fn members(s: &ServerArgs) -> anyhow::Result<()> {
    let c = client(s)?;
    let list = c.member_list().await?;
    let status = c.status().await?;
    let leader = status.leader;
    println!(
        "{:<12} {:<18} {:<22} {:<22} {:<9} {:>8}",
        "NAME", "ID", "PEER", "CLIENT", "ROLE", "APPLIED"
    );
    for m in list.members {
        let role = if m.is_learner {
            "learner"
        } else if m.id == leader {
            "leader"
        } else {
            "follower"
        };
        // The applied index is each member's own: ask it directly (blank if unreachable).
        let applied = match applied_of(s, &m.client_ur_ls).await {
            Some(a) => a.to_string(),
            None => "-".into(),
        };
        println!(
            "{:<12} {:<18} {:<22} {:<22} {:<9} {:>8}",
            m.name,
            format!("{:x}", m.id),
            strip(&m.peer_ur_ls),
            strip(&m.client_ur_ls),
            role,
            applied
        );
    }
    Ok(())
}

async fn applied_of(s: &ServerArgs, client_urls: &[String]) -> Option<u64> {
    let addr = strip(client_urls.get(..1)?);
    let c = EtcdClient::new(&[addr], Duration::from_millis(s.request_timeout_ms)).ok()?;
    c.status_of(0).await.ok().map(|st| st.raft_applied_index)
}

async fn remove(s: &ServerArgs, member: &str) -> anyhow::Result<()> {
    let c = client(s)?;
    let list = c.member_list().await?;
    let by_name = list.members.iter().find(|m| m.name == member);
    let by_id = list.members.iter().find(|m| {
        u64::from_str_radix(member, 16).ok() == Some(m.id) || member.parse::<u64>().ok() == Some(m.id)
    });
    let Some(m) = by_name.or(by_id) else {
        bail!("no member named or with id {member:?} (see `berth cluster members`)");
    };
    c.member_remove(m.id).await?;
    println!("removed member {} ({:x})", m.name, m.id);
    Ok(())
}
