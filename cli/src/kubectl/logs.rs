//! `berth logs POD` and `berth exec POD -- CMD`: through the API server's Proxy to the pod's
//! node agent.

use super::Target;
use berth_client::ProxyClient;
use berth_proto::agentv1::{ExecRequest, LogsRequest};
use futures::StreamExt;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: Target,
    pub pod: String,
    /// The container (required when the pod has several).
    #[arg(short = 'c', long = "container")]
    pub container: Option<String>,
    /// Keep streaming what the container writes, until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The container's previous instance (before its last restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub target: Target,
    pub pod: String,
    /// The container (required when the pod has several).
    #[arg(short = 'c', long = "container")]
    pub container: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn client(t: &Target) -> anyhow::Result<ProxyClient> {
    Ok(ProxyClient::new(
        &t.server.servers,
        Duration::from_millis(t.server.request_timeout_ms),
    )?)
}

fn namespace(t: &Target) -> String {
    t.namespace
        .clone()
        .unwrap_or_else(|| super::DEFAULT_NAMESPACE.into())
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let req = LogsRequest {
        namespace: namespace(&a.target),
        pod: a.pod.clone(),
        pod_uid: String::new(),
        container: a.container.clone().unwrap_or_default(),
        follow: a.follow,
        previous: a.previous,
        tail_lines: (a.tail >= 0).then_some(a.tail),
    };
    let mut stream = Box::pin(client(&a.target)?.logs(req).await?);
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        // Followed output shows as it comes.
        out.flush()?;
    }
    Ok(())
}

/// Prints the command's output; its exit code becomes this process's.
pub async fn exec(a: ExecArgs) -> anyhow::Result<()> {
    let req = ExecRequest {
        namespace: namespace(&a.target),
        pod: a.pod.clone(),
        pod_uid: String::new(),
        container: a.container.clone().unwrap_or_default(),
        command: a.command.clone(),
    };
    let r = client(&a.target)?.exec(req).await?;
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&r.stderr)?;
    if r.truncated {
        eprintln!(
            "(output cut at {} bytes per stream)",
            berth_client::agent::EXEC_OUTPUT_BYTES_MAX
        );
    }
    if r.exit_code != 0 {
        std::process::exit(r.exit_code);
    }
    Ok(())
}
