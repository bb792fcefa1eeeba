//! Namespace controller: a deleted Namespace takes everything inside with it.
//!
//! Every live Namespace gets the finalizer `kubernetes` (so a delete marks it instead of
//! removing it while objects remain inside). A Namespace marked for deletion is set to phase
//! `Terminating` (the API server then refuses creations in it), every object of every
//! namespaced kind in it is deleted, and once none is left the finalizer is removed, which
//! completes the Namespace's deletion. Objects are listed from the server, not a cache, so
//! nothing created just before the mark is missed. A Namespace that went without the finalizer
//! (deleted before this controller added it) is swept the same way once it is gone.

use crate::replicaset::ignore_not_found;
use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::{Informer, ListParams, Resource, ResourceClient};
use berth_proto::apiv1::DeleteOptions;
use berth_proto::corev1::Namespace;
use berth_proto::{appsv1, coordinationv1, corev1, istiov1, networkingv1};
use std::sync::Arc;
use std::time::Duration;

/// The finalizer that holds a Namespace until its content is gone.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";
/// Re-check of a terminating Namespace whose objects are still going.
pub const NAMESPACE_RECHECK: Duration = Duration::from_millis(500);

pub struct NamespaceController {
    pub client: ResourceClient,
    pub namespaces: Arc<Informer<Namespace>>,
}

/// Deletes every `T` in `ns`; returns how many are still there (deleted now or going).
async fn purge<T: Resource>(c: &ResourceClient, ns: &str) -> Result<usize, Error> {
    let items = c.list_all::<T>(ns, &ListParams::default()).await?.items;
    for o in &items {
        let m = meta(o);
        if !being_deleted(&m) {
            let opts = DeleteOptions {
                propagation_policy: "Background".into(),
                ..Default::default()
            };
            ignore_not_found(c.delete::<T>(ns, &m.name, opts).await)?;
        }
    }
    Ok(items.len())
}

/// Every namespaced kind, workloads first (so controllers stop recreating what goes next).
async fn purge_all(c: &ResourceClient, ns: &str) -> Result<usize, Error> {
    let mut n = 0;
    n += purge::<appsv1::Deployment>(c, ns).await?;
    n += purge::<appsv1::ReplicaSet>(c, ns).await?;
    n += purge::<corev1::Pod>(c, ns).await?;
    n += purge::<corev1::Service>(c, ns).await?;
    n += purge::<corev1::Endpoints>(c, ns).await?;
    n += purge::<corev1::ConfigMap>(c, ns).await?;
    n += purge::<corev1::Secret>(c, ns).await?;
    n += purge::<corev1::ResourceQuota>(c, ns).await?;
    n += purge::<corev1::LimitRange>(c, ns).await?;
    n += purge::<corev1::Event>(c, ns).await?;
    n += purge::<coordinationv1::Lease>(c, ns).await?;
    n += purge::<networkingv1::Ingress>(c, ns).await?;
    n += purge::<istiov1::VirtualService>(c, ns).await?;
    n += purge::<istiov1::DestinationRule>(c, ns).await?;
    n += purge::<istiov1::Gateway>(c, ns).await?;
    Ok(n)
}

impl NamespaceController {
    /// A Namespace that is gone (for instance deleted before it had the finalizer) may have
    /// left objects behind: delete them. The server refuses creations in a missing namespace,
    /// so once empty it stays empty.
    async fn sweep_deleted(&self, name: &str) -> Result<Action, Error> {
        match self.client.get::<Namespace>("", name).await {
            Err(berth_client::ClientError::NotFound(_)) => {}
            Ok(_) => return Ok(Action::AwaitChange), // the cache is behind; its event follows
            Err(e) => return Err(e.into()),
        }
        let remaining = purge_all(&self.client, name).await?;
        if remaining > 0 {
            tracing::info!(namespace = %name, remaining, "deleting what a deleted namespace left behind");
            return Ok(Action::RequeueAfter(NAMESPACE_RECHECK));
        }
        Ok(Action::AwaitChange)
    }
}

impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(ns) = self.namespaces.get(key) else {
            return self.sweep_deleted(key).await;
        };
        let m = meta(&ns);
        let has_finalizer = m.finalizers.iter().any(|f| f == NAMESPACE_FINALIZER);
        if !being_deleted(&m) {
            if !has_finalizer {
                let next = edit_meta(&ns, |m| m.finalizers.push(NAMESPACE_FINALIZER.into()));
                ignore_not_found(self.client.update(&next).await)?;
            }
            return Ok(Action::AwaitChange);
        }
        if !has_finalizer {
            return Ok(Action::AwaitChange);
        }
        let mut ns = ns;
        if ns.status.as_ref().is_none_or(|s| s.phase != "Terminating") {
            let mut next = ns.clone();
            next.status.get_or_insert_with(Default::default).phase = "Terminating".into();
            ns = self.client.update_status(&next).await?;
        }
        let remaining = purge_all(&self.client, &m.name).await?;
        if remaining > 0 {
            tracing::debug!(namespace = %m.name, remaining, "namespace terminating");
            return Ok(Action::RequeueAfter(NAMESPACE_RECHECK));
        }
        let next = edit_meta(&ns, |m| m.finalizers.retain(|f| f != NAMESPACE_FINALIZER));
        ignore_not_found(self.client.update(&next).await)?;
        tracing::info!(namespace = %m.name, "namespace emptied: finalizer removed");
        Ok(Action::AwaitChange)
    }
}
