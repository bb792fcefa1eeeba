//! Informer: list + resuming watch of one resource type, keeping a cache consistent with the
//! store, relisting when the watch's revision was compacted, with handlers fed through a bounded
//! channel and indexes by namespace and by registered index functions.

use crate::etcd::ClientError;
use crate::resources::{ListParams, Resource, ResourceClient, WatchEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Capacity of the channel of cache changes handed to the informer's consumer; the informer
/// waits (backpressure) when it is full.
pub const INFORMER_EVENT_QUEUE_LEN: usize = 1024;
/// Pause before relisting after an error other than "expired".
pub const INFORMER_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// A change of the cache.
#[derive(Debug, Clone, PartialEq)]
pub enum InformerEvent<T> {
    Added(T),
    Updated { old: T, new: T },
    Deleted(T),
}

/// An index function: the index values of an object (e.g. a label's value).
pub type IndexFn<T> = Arc<dyn Fn(&T) -> Vec<String> + Send + Sync>;

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn cache_key<T: Resource>(o: &T) -> String {
    let (ns, name) = o
        .meta()
        .map_or(("", ""), |m| (m.namespace.as_str(), m.name.as_str()));
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

/// An index function over one label's value.
pub fn label_index<T: Resource>(label: &str) -> IndexFn<T> {
    let label = label.to_string();
    Arc::new(move |o: &T| {
        o.meta()
            .and_then(|m| m.labels.get(&label))
            .map(|v| vec![v.clone()])
            .unwrap_or_default()
    })
}

struct State<T> {
    cache: RwLock<BTreeMap<String, T>>,
    synced: AtomicBool,
    /// The revision every change up to which has been handed to the channel.
    revision: AtomicI64,
    indexes: RwLock<HashMap<String, IndexFn<T>>>,
}

/// A running informer; dropping it stops it.
pub struct Informer<T: Resource> {
    state: Arc<State<T>>,
    task: JoinHandle<()>,
}

impl<T: Resource> Drop for Informer<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: Resource> Informer<T> {
    /// Starts listing and watching `T` in `ns` ("" = all) with the params' selectors. Cache
    /// changes arrive on the returned channel (drop it if unused: the informer keeps going).
    pub fn start(
        client: ResourceClient,
        ns: &str,
        params: ListParams,
    ) -> (Informer<T>, mpsc::Receiver<InformerEvent<T>>) {
        let state = Arc::new(State {
            cache: RwLock::new(BTreeMap::new()),
            synced: AtomicBool::new(false),
            revision: AtomicI64::new(0),
            indexes: RwLock::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel(INFORMER_EVENT_QUEUE_LEN);
        let task = tokio::spawn(run(client, ns.to_string(), params, state.clone(), tx));
        (Informer { state, task }, rx)
    }

    /// Whether the first list has been loaded into the cache.
    pub fn has_synced(&self) -> bool {
        self.state.synced.load(Ordering::Acquire)
    }

    /// The revision (list, watch events and bookmarks) up to which every cache change has been
    /// sent to the channel: a consumer that has received everything sent before reading this
    /// has seen the store as of it. 0 before the first list.
    pub fn resource_version(&self) -> i64 {
        self.state.revision.load(Ordering::Acquire)
    }

    /// The cached object under `key` (`namespace/name` or `name`).
    pub fn get(&self, key: &str) -> Option<T> {
        self.state.cache.read().unwrap().get(key).cloned()
    }

    /// Every cached object, by key.
    pub fn list(&self) -> Vec<T> {
        self.state.cache.read().unwrap().values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn by_namespace(&self, ns: &str) -> Vec<T> {
        let prefix = format!("{ns}/");
        self.state
            .cache
            .read()
            .unwrap()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Registers an index function under `name`.
    pub fn add_index(&self, name: &str, f: IndexFn<T>) {
        self.state.indexes.write().unwrap().insert(name.to_string(), f);
    }

    /// The cached objects whose index `name` yields `value` (none if no such index).
    pub fn by_index(&self, name: &str, value: &str) -> Vec<T> {
        let Some(f) = self.state.indexes.read().unwrap().get(name).cloned() else {
            return Vec::new();
        };
        self.state
            .cache
            .read()
            .unwrap()
            .values()
            .filter(|o| f(o).iter().any(|v| v == value))
            .cloned()
            .collect()
    }
}

async fn run<T: Resource>(
    client: ResourceClient,
    ns: String,
    params: ListParams,
    state: Arc<State<T>>,
    tx: mpsc::Sender<InformerEvent<T>>,
) {
    loop {
        match list_and_watch(&client, &ns, &params, &state, &tx).await {
            Err(ClientError::Expired(m)) => tracing::debug!("informer {}: relist: {m}", T::RESOURCE),
            Err(e) => {
                tracing::warn!("informer {}: {e}; relisting", T::RESOURCE);
                tokio::time::sleep(INFORMER_RETRY_BACKOFF).await;
            }
            Ok(never) => match never {},
        }
    }
}

/// Lists into the cache (emitting the differences), then applies watch events until the watch
/// fails; it returns only with that error.
async fn list_and_watch<T: Resource>(
    client: &ResourceClient,
    ns: &str,
    params: &ListParams,
    state: &State<T>,
    tx: &mpsc::Sender<InformerEvent<T>>,
) -> Result<std::convert::Infallible, ClientError> {
    let list = client.list_all::<T>(ns, params).await?;
    let fresh: BTreeMap<String, T> = list.items.into_iter().map(|o| (cache_key(&o), o)).collect();
    let changes = {
        let mut cache = state.cache.write().unwrap();
        let old = std::mem::replace(&mut *cache, fresh.clone());
        diff(&old, &fresh)
    };
    state.synced.store(true, Ordering::Release);
    for c in changes {
        let _ = tx.send(c).await;
    }
    advance(state, &list.resource_version);
    let mut w = client.watch::<T>(
        ns,
        &ListParams {
            resource_version: list.resource_version,
            continue_token: String::new(),
            limit: 0,
            ..params.clone()
        },
    );
    loop {
        let change = {
            let ev = w.next().await?;
            let mut cache = state.cache.write().unwrap();
            match ev {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    match cache.insert(cache_key(&o), o.clone()) {
                        Some(old) => InformerEvent::Updated { old, new: o },
                        None => InformerEvent::Added(o),
                    }
                }
                WatchEvent::Deleted(o) => {
                    let last = cache.remove(&cache_key(&o)).unwrap_or(o);
                    InformerEvent::Deleted(last)
                }
                WatchEvent::Bookmark(rv) => {
                    drop(cache);
                    advance(state, &rv);
                    continue;
                }
            }
        };
        let _ = tx.send(change).await;
        advance(state, w.resource_version());
    }
}

/// Records that every change up to `rv` has been sent (revisions only grow).
fn advance<T>(state: &State<T>, rv: &str) {
    if let Ok(r) = rv.parse::<i64>() {
        state.revision.fetch_max(r, Ordering::AcqRel);
    }
}

/// The changes that turn `old` into `new` (by key; an object is updated when its
/// resourceVersion differs).
fn diff<T: Resource>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Vec<InformerEvent<T>> {
    let mut out = Vec::new();
    for (k, o) in old {
        if !new.contains_key(k) {
            out.push(InformerEvent::Deleted(o.clone()));
        }
    }
    for (k, n) in new {
        match old.get(k) {
            None => out.push(InformerEvent::Added(n.clone())),
            Some(o) if crate::resources::resource_version(o) != crate::resources::resource_version(n) => out
                .push(InformerEvent::Updated {
                    old: o.clone(),
                    new: n.clone(),
                }),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::ConfigMap;
    use berth_proto::metav1::ObjectMeta;

    fn cm(ns: &str, name: &str, rv: &str, app: &str) -> ConfigMap {
        ConfigMap {
            metadata: Some(ObjectMeta {
                namespace: ns.into(),
                name: name.into(),
                resource_version: rv.into(),
                labels: [("app".to_string(), app.to_string())].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn keys_and_label_index() {
        assert_eq!(cache_key(&cm("a", "x", "1", "w")), "a/x");
        assert_eq!(cache_key(&cm("", "x", "1", "w")), "x");
        let f = label_index::<ConfigMap>("app");
        assert_eq!(f(&cm("a", "x", "1", "web")), vec!["web".to_string()]);
        assert!(label_index::<ConfigMap>("tier")(&cm("a", "x", "1", "web")).is_empty());
    }

    #[test]
    fn relist_diff_emits_adds_updates_deletes() {
        let m = |v: Vec<ConfigMap>| -> BTreeMap<String, ConfigMap> {
            v.into_iter().map(|o| (cache_key(&o), o)).collect()
        };
        let old = m(vec![
            cm("a", "gone", "1", "w"),
            cm("a", "same", "2", "w"),
            cm("a", "chg", "3", "w"),
        ]);
        let new = m(vec![
            cm("a", "same", "2", "w"),
            cm("a", "chg", "5", "w"),
            cm("a", "new", "6", "w"),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.len(), 3);
        assert!(matches!(&d[0], InformerEvent::Deleted(o) if cache_key(o) == "a/gone"));
        assert!(matches!(&d[1], InformerEvent::Updated { new, .. } if cache_key(new) == "a/chg"));
        assert!(matches!(&d[2], InformerEvent::Added(o) if cache_key(o) == "a/new"));
    }
}
