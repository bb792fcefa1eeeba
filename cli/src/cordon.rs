//! `berth cordon NODE` / `berth uncordon NODE`: set or clear a Node's spec.unschedulable.

use crate::ServerArgs;
use anyhow::{bail, Context};
use berth_client::{ClientError, ResourceClient};
use berth_proto::corev1::Node;
use std::time::Duration;

/// Read-modify-write attempts when another writer changes the Node meanwhile.
const UPDATE_ATTEMPTS: usize = 5;

#[derive(clap::Args, Clone, Debug)]
pub struct CordonArgs {
    /// The node's name.
    pub node: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(a: CordonArgs, unschedulable: bool) -> anyhow::Result<()> {
    let client = ResourceClient::new(
        &a.server.servers,
        Duration::from_millis(a.server.request_timeout_ms),
    )?;
    let verb = if unschedulable { "cordoned" } else { "uncordoned" };
    for _ in 0..UPDATE_ATTEMPTS {
        let mut node = client
            .get::<Node>("", &a.node)
            .await
            .with_context(|| format!("node {:?}", a.node))?;
        let spec = node.spec.get_or_insert_with(Default::default);
        if spec.unschedulable == unschedulable {
            println!("node/{} already {verb}", a.node);
            return Ok(());
        }
        spec.unschedulable = unschedulable;
        // The resourceVersion read is the update's precondition.
        match client.update(&node).await {
            Ok(_) => {
                println!("node/{} {verb}", a.node);
                return Ok(());
            }
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(e).with_context(|| format!("updating node {:?}", a.node)),
        }
    }
    bail!("node {:?} kept changing; try again", a.node)
}
