//! Garbage collector: ownerReferences honoured.
//!
//! - An object whose ownerReferences all point at owners that do not exist (by uid: an owner
//!   re-created under the same name is another owner) is deleted in the background; references
//!   to missing owners next to live ones are removed. "Missing" is decided on the cache and
//!   then confirmed with a read from the server, so an owner the cache has not caught up with
//!   is never taken for gone.
//! - An owner marked for deletion with the finalizer `foregroundDeletion` gets its dependents
//!   deleted first; the finalizer is removed (and the owner goes) once none is left.
//! - An owner marked for deletion with the finalizer `orphan` gets its ownerReference removed
//!   from every dependent, then the finalizer.
//!
//! Keys are `Kind|namespace/name`. Owners of kinds the collector does not watch are assumed to
//! exist (it never deletes what it cannot check).

use crate::replicaset::ignore_not_found;
use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::{ClientError, Informer, InformerEvent, Resource, ResourceClient};
use berth_proto::apiv1::{DeleteOptions, Preconditions};
use berth_proto::metav1::ObjectMeta;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Re-check of an owner waiting in foreground deletion for its dependents to go.
pub const FOREGROUND_RECHECK: Duration = Duration::from_secs(1);

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'a>>;

/// One watched kind, type-erased: its cache and the few calls the collector makes.
pub trait Store: Send + Sync {
    fn kind(&self) -> &'static str;
    fn cached(&self, key: &str) -> Option<ObjectMeta>;
    fn metas(&self) -> Vec<ObjectMeta>;
    /// The cached objects that list `owner_uid` among their owners.
    fn dependents(&self, owner_uid: &str) -> Vec<ObjectMeta>;
    fn synced(&self) -> bool;
    /// The uid of the live object (None if absent), read from the server.
    fn live_uid<'a>(
        &'a self,
        c: &'a ResourceClient,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Option<String>>;
    /// Rewrites the cached object's metadata with `f` (compare-and-swap on the cached version).
    fn edit<'a>(
        &'a self,
        c: &'a ResourceClient,
        key: &'a str,
        f: Box<dyn FnOnce(&mut ObjectMeta) + Send + 'a>,
    ) -> BoxFut<'a, ()>;
    fn delete<'a>(&'a self, c: &'a ResourceClient, m: &'a ObjectMeta, policy: &'a str) -> BoxFut<'a, ()>;
}

/// Name of the informer index of objects by the uids of their owners.
pub const OWNER_UID_INDEX: &str = "gc-owner-uid";

pub struct Typed<T: Resource> {
    kind: &'static str,
    informer: Arc<Informer<T>>,
}

impl<T: Resource> Typed<T> {
    /// Wraps a cache and registers the owner-uid index on it.
    pub fn new(kind: &'static str, informer: Arc<Informer<T>>) -> Typed<T> {
        informer.add_index(
            OWNER_UID_INDEX,
            Arc::new(|o: &T| {
                o.meta()
                    .map(|m| m.owner_references.iter().map(|r| r.uid.clone()).collect())
                    .unwrap_or_default()
            }),
        );
        Typed { kind, informer }
    }
}

impl<T: Resource> Store for Typed<T> {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn cached(&self, key: &str) -> Option<ObjectMeta> {
        self.informer.get(key).map(|o| meta(&o))
    }
    fn metas(&self) -> Vec<ObjectMeta> {
        self.informer.list().iter().map(meta).collect()
    }
    fn dependents(&self, owner_uid: &str) -> Vec<ObjectMeta> {
        self.informer
            .by_index(OWNER_UID_INDEX, owner_uid)
            .iter()
            .map(meta)
            .collect()
    }
    fn synced(&self) -> bool {
        self.informer.has_synced()
    }
    fn live_uid<'a>(
        &'a self,
        c: &'a ResourceClient,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Option<String>> {
        Box::pin(async move { Ok(ignore_not_found(c.get::<T>(ns, name).await)?.map(|o| uid(&o))) })
    }
    fn edit<'a>(
        &'a self,
        c: &'a ResourceClient,
        key: &'a str,
        f: Box<dyn FnOnce(&mut ObjectMeta) + Send + 'a>,
    ) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let Some(o) = self.informer.get(key) else {
                return Ok(());
            };
            let next = edit_meta(&o, f);
            ignore_not_found(c.update(&next).await)?;
            Ok(())
        })
    }
    fn delete<'a>(&'a self, c: &'a ResourceClient, m: &'a ObjectMeta, policy: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let opts = DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: Some(m.uid.clone()),
                    resource_version: None,
                }),
                propagation_policy: policy.into(),
                ..Default::default()
            };
            ignore_not_found(c.delete::<T>(&m.namespace, &m.name, opts).await)?;
            Ok(())
        })
    }
}

/// `Kind|namespace/name`.
pub fn gc_key(kind: &str, m: &ObjectMeta) -> String {
    format!("{kind}|{}", join_key(&m.namespace, &m.name))
}

pub struct GarbageCollector {
    pub client: ResourceClient,
    /// By kind.
    pub stores: BTreeMap<&'static str, Arc<dyn Store>>,
}

impl GarbageCollector {
    /// Every cached object that lists `owner_uid` among its owners, with its kind.
    fn dependents(&self, owner_uid: &str) -> Vec<(Arc<dyn Store>, ObjectMeta)> {
        self.stores
            .values()
            .flat_map(|s| s.dependents(owner_uid).into_iter().map(move |m| (s.clone(), m)))
            .collect()
    }

    /// Keys for an event of `kind`: the object itself; when it is deleted, its dependents
    /// (they may be orphans now) and its owners (one may wait for it in foreground deletion).
    pub fn event_keys<T: Resource>(&self, kind: &str, ev: &InformerEvent<T>) -> Vec<String> {
        match ev {
            InformerEvent::Added(o) | InformerEvent::Updated { new: o, .. } => vec![gc_key(kind, &meta(o))],
            InformerEvent::Deleted(o) => {
                let m = meta(o);
                let mut keys: Vec<String> = self
                    .dependents(&m.uid)
                    .into_iter()
                    .map(|(s, d)| gc_key(s.kind(), &d))
                    .collect();
                for r in &m.owner_references {
                    if let Some(s) = self.stores.get(r.kind.as_str()) {
                        let owner = ObjectMeta {
                            name: r.name.clone(),
                            namespace: if self.namespaced(s.kind()) {
                                m.namespace.clone()
                            } else {
                                String::new()
                            },
                            ..Default::default()
                        };
                        keys.push(gc_key(s.kind(), &owner));
                    }
                }
                keys
            }
        }
    }

    fn namespaced(&self, kind: &str) -> bool {
        !matches!(kind, "Node" | "Namespace")
    }

    /// Whether the owner named by `r` (from a dependent in `ns`) exists with that uid.
    async fn owner_exists(&self, r: &berth_proto::metav1::OwnerReference, ns: &str) -> Result<bool, Error> {
        let Some(store) = self.stores.get(r.kind.as_str()) else {
            return Ok(true);
        };
        let ns = if self.namespaced(&r.kind) { ns } else { "" };
        if store
            .cached(&join_key(ns, &r.name))
            .is_some_and(|m| m.uid == r.uid)
        {
            return Ok(true);
        }
        Ok(store.live_uid(&self.client, ns, &r.name).await?.as_deref() == Some(r.uid.as_str()))
    }

    async fn finish_foreground(
        &self,
        store: &Arc<dyn Store>,
        key: &str,
        m: &ObjectMeta,
    ) -> Result<Action, Error> {
        let deps = self.dependents(&m.uid);
        if deps.is_empty() {
            store
                .edit(
                    &self.client,
                    key,
                    Box::new(|m| m.finalizers.retain(|f| f != FOREGROUND_FINALIZER)),
                )
                .await?;
            tracing::info!(owner = %key, "dependents gone: foreground deletion finished");
            return Ok(Action::AwaitChange);
        }
        for (s, d) in &deps {
            if !being_deleted(d) {
                s.delete(&self.client, d, "Foreground").await?;
            }
        }
        Ok(Action::RequeueAfter(FOREGROUND_RECHECK))
    }

    async fn finish_orphan(
        &self,
        store: &Arc<dyn Store>,
        key: &str,
        m: &ObjectMeta,
    ) -> Result<Action, Error> {
        for (s, d) in self.dependents(&m.uid) {
            let owner_uid = m.uid.clone();
            let dkey = join_key(&d.namespace, &d.name);
            s.edit(
                &self.client,
                &dkey,
                Box::new(move |dm| dm.owner_references.retain(|r| r.uid != owner_uid)),
            )
            .await?;
        }
        store
            .edit(
                &self.client,
                key,
                Box::new(|m| m.finalizers.retain(|f| f != ORPHAN_FINALIZER)),
            )
            .await?;
        tracing::info!(owner = %key, "dependents orphaned");
        Ok(Action::AwaitChange)
    }
}

impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    async fn reconcile(&self, gkey: &str) -> Result<Action, Error> {
        let Some((kind, key)) = gkey.split_once('|') else {
            return Err(Error::Invalid(format!(
                "garbage collector key {gkey:?} has no kind"
            )));
        };
        let Some(store) = self.stores.get(kind).cloned() else {
            return Ok(Action::AwaitChange);
        };
        let Some(m) = store.cached(key) else {
            return Ok(Action::AwaitChange);
        };
        if being_deleted(&m) {
            if m.finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
                return self.finish_orphan(&store, key, &m).await;
            }
            if m.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
                return self.finish_foreground(&store, key, &m).await;
            }
            return Ok(Action::AwaitChange);
        }
        if m.owner_references.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let mut missing = Vec::new();
        for r in &m.owner_references {
            if !self.owner_exists(r, &m.namespace).await? {
                missing.push(r.uid.clone());
            }
        }
        if missing.len() == m.owner_references.len() {
            store.delete(&self.client, &m, "Background").await?;
            tracing::info!(object = %gkey, "owners gone: deleted");
        } else if !missing.is_empty() {
            store
                .edit(
                    &self.client,
                    key,
                    Box::new(move |m| m.owner_references.retain(|r| !missing.contains(&r.uid))),
                )
                .await?;
        }
        Ok(Action::AwaitChange)
    }
}
