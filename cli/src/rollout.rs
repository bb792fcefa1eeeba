//! `berth rollout status|history|undo|restart deployment/NAME`, over the client crate.

use crate::ServerArgs;
use anyhow::{bail, Context};
use berth_client::leader::{Clock, SystemClock};
use berth_client::{ClientError, ListParams, ResourceClient};
use berth_controllers::deployment::{revision, rollout_status, same_template, CHANGE_CAUSE_ANNOTATION};
use berth_controllers::replicaset::POD_TEMPLATE_HASH_LABEL;
use berth_controllers::util::{controller_ref, rfc3339_secs};
use berth_proto::appsv1::{Deployment, ReplicaSet};
use std::time::{Duration, Instant};

/// How often `rollout status` re-reads the Deployment.
const STATUS_POLL: Duration = Duration::from_millis(200);
/// Pod template annotation `rollout restart` sets (as kubectl does).
const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// deployment/NAME
    pub target: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Subcommand)]
pub enum RolloutCmd {
    /// Follow a rollout until it completes.
    Status {
        #[command(flatten)]
        t: Target,
        /// Give up after this many milliseconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
    },
    /// The revisions of a Deployment.
    History {
        #[command(flatten)]
        t: Target,
    },
    /// Roll back to the previous revision (or --to-revision).
    Undo {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Replace every pod, by stamping the template with the time.
    Restart {
        #[command(flatten)]
        t: Target,
    },
}

/// The Deployment name of `deployment/NAME` (also `deploy/`, `deployments/`).
fn deployment_name(target: &str) -> anyhow::Result<&str> {
    match target.split_once('/') {
        Some(("deployment" | "deployments" | "deploy" | "deployment.apps", name)) if !name.is_empty() => {
            Ok(name)
        }
        _ => bail!("{target:?}: expected deployment/NAME (only Deployments have rollouts)"),
    }
}

fn client(s: &ServerArgs) -> anyhow::Result<ResourceClient> {
    Ok(ResourceClient::new(
        &s.servers,
        Duration::from_millis(s.request_timeout_ms),
    )?)
}

pub async fn run(cmd: RolloutCmd) -> anyhow::Result<()> {
    match cmd {
        RolloutCmd::Status { t, timeout_ms } => status(&t, timeout_ms).await,
        RolloutCmd::History { t } => history(&t).await,
        RolloutCmd::Undo { t, to_revision } => undo(&t, to_revision).await,
        RolloutCmd::Restart { t } => restart(&t).await,
    }
}

async fn status(t: &Target, timeout_ms: u64) -> anyhow::Result<()> {
    let name = deployment_name(&t.target)?;
    let c = client(&t.server)?;
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let d: Deployment = c
            .get(&t.namespace, name)
            .await
            .with_context(|| format!("deployment {name:?} in namespace {:?}", t.namespace))?;
        let (msg, done) = rollout_status(&d).map_err(|e| anyhow::anyhow!(e))?;
        if msg != last {
            println!("{msg}");
            last = msg;
        }
        if done {
            return Ok(());
        }
        if timeout_ms > 0 && start.elapsed() > Duration::from_millis(timeout_ms) {
            bail!("timed out waiting for the rollout of deployment {name:?}");
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

/// The Deployment's ReplicaSets, by revision.
async fn owned_replicasets(c: &ResourceClient, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
    let m = d.metadata.clone().unwrap_or_default();
    let mut v: Vec<ReplicaSet> = c
        .list_all::<ReplicaSet>(&m.namespace, &ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .as_ref()
                .and_then(controller_ref)
                .is_some_and(|r| r.uid == m.uid)
        })
        .collect();
    v.sort_by_key(revision);
    Ok(v)
}

async fn history(t: &Target) -> anyhow::Result<()> {
    let name = deployment_name(&t.target)?;
    let c = client(&t.server)?;
    let d: Deployment = c.get(&t.namespace, name).await?;
    println!("deployment.apps/{name}");
    println!("REVISION  CHANGE-CAUSE");
    for rs in owned_replicasets(&c, &d).await? {
        let cause = rs
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.get(CHANGE_CAUSE_ANNOTATION).cloned())
            .unwrap_or_else(|| "<none>".into());
        println!("{:<10}{}", revision(&rs), cause);
    }
    Ok(())
}

/// Re-reads and updates the Deployment with `f` until the write is not a lost race.
async fn update_deployment(
    c: &ResourceClient,
    ns: &str,
    name: &str,
    mut f: impl FnMut(&mut Deployment),
) -> anyhow::Result<()> {
    loop {
        let mut d: Deployment = c.get(ns, name).await?;
        f(&mut d);
        match c.update(&d).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn undo(t: &Target, to_revision: i64) -> anyhow::Result<()> {
    let name = deployment_name(&t.target)?;
    let c = client(&t.server)?;
    let d: Deployment = c.get(&t.namespace, name).await?;
    let rss = owned_replicasets(&c, &d).await?;
    let target = if to_revision > 0 {
        rss.iter().find(|rs| revision(rs) == to_revision)
    } else {
        // The previous revision: the second-highest.
        rss.iter().rev().nth(1)
    };
    let Some(rs) = target else {
        if to_revision > 0 {
            bail!("unable to find the specified revision {to_revision}");
        }
        bail!("no rollout history found for deployment {name:?}");
    };
    let mut template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(m) = template.metadata.as_mut() {
        m.labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    let current = d
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if same_template(&current, &template) {
        println!(
            "deployment.apps/{name} skipped rollback (current template already matches revision {})",
            revision(rs)
        );
        return Ok(());
    }
    update_deployment(&c, &t.namespace, name, |d| {
        d.spec.get_or_insert_with(Default::default).template = Some(template.clone());
    })
    .await?;
    println!("deployment.apps/{name} rolled back");
    Ok(())
}

async fn restart(t: &Target) -> anyhow::Result<()> {
    let name = deployment_name(&t.target)?;
    let c = client(&t.server)?;
    let now = rfc3339_secs(SystemClock.now_micros());
    update_deployment(&c, &t.namespace, name, |d| {
        let tm = d
            .spec
            .get_or_insert_with(Default::default)
            .template
            .get_or_insert_with(Default::default)
            .metadata
            .get_or_insert_with(Default::default);
        tm.annotations.insert(RESTARTED_AT_ANNOTATION.into(), now.clone());
    })
    .await?;
    println!("deployment.apps/{name} restarted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_deployments_only() {
        assert_eq!(deployment_name("deployment/web").unwrap(), "web");
        assert_eq!(deployment_name("deploy/web").unwrap(), "web");
        assert!(deployment_name("web").is_err());
        assert!(deployment_name("pod/web")
            .unwrap_err()
            .to_string()
            .contains("deployment/NAME"));
        assert!(deployment_name("deployment/").is_err());
    }
}
