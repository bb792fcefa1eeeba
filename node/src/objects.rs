//! The ConfigMaps and Secrets the node's pods reference, and nothing else: one informer per
//! referenced object (field selector `metadata.name=<name>` in the pod's namespace), shared
//! by the pods that reference it and stopped when the last one lets go. A change pokes the
//! referencing pods' workers through the agent's channel.

use berth_client::informer::InformerEvent;
use berth_client::{Informer, ListParams, Resource, ResourceClient};
use berth_proto::corev1::{ConfigMap, Pod, Secret};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
}

/// (kind, namespace, name).
pub type Key = (Kind, String, String);

/// The objects a pod references (env, envFrom, volumes; projected volumes too).
pub fn references(pod: &Pod) -> BTreeSet<Key> {
    let ns = pod
        .metadata
        .as_ref()
        .map(|m| m.namespace.clone())
        .unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut add = |k: Kind, n: &str| {
        if !n.is_empty() {
            out.insert((k, ns.clone(), n.to_string()));
        }
    };
    for c in spec.init_containers.iter().chain(&spec.containers) {
        for f in &c.env_from {
            if let Some(r) = &f.config_map_ref {
                add(Kind::ConfigMap, &r.name);
            }
            if let Some(r) = &f.secret_ref {
                add(Kind::Secret, &r.name);
            }
        }
        for e in &c.env {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.config_map_key_ref {
                    add(Kind::ConfigMap, &r.name);
                }
                if let Some(r) = &v.secret_key_ref {
                    add(Kind::Secret, &r.name);
                }
            }
        }
    }
    for v in &spec.volumes {
        if let Some(c) = &v.config_map {
            add(Kind::ConfigMap, &c.name);
        }
        if let Some(s) = &v.secret {
            add(Kind::Secret, &s.secret_name);
        }
        if let Some(p) = &v.projected {
            for s in &p.sources {
                if let Some(c) = &s.config_map {
                    add(Kind::ConfigMap, &c.name);
                }
                if let Some(x) = &s.secret {
                    add(Kind::Secret, &x.name);
                }
            }
        }
    }
    out
}

enum Watched {
    ConfigMap(Informer<ConfigMap>),
    Secret(Informer<Secret>),
}

struct Entry {
    watched: Watched,
    users: BTreeSet<String>,
    forward: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The informer has not loaded yet: wait rather than report "not found".
    NotSynced,
    Absent,
    Data(BTreeMap<String, Vec<u8>>),
}

#[derive(Clone)]
pub struct ObjectCache {
    client: ResourceClient,
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
    /// Pod uids to poke when an object they reference changes.
    poke: mpsc::UnboundedSender<String>,
}

impl ObjectCache {
    pub fn new(client: ResourceClient, poke: mpsc::UnboundedSender<String>) -> ObjectCache {
        ObjectCache {
            client,
            entries: Arc::new(Mutex::new(HashMap::new())),
            poke,
        }
    }

    /// Makes the cache hold exactly the objects `pod` references, for pod `uid`.
    pub fn track(&self, uid: &str, pod: &Pod) {
        let wanted = references(pod);
        let mut entries = self.entries.lock().unwrap();
        for key in &wanted {
            if let Some(e) = entries.get_mut(key) {
                e.users.insert(uid.to_string());
                continue;
            }
            let e = self.start(key, uid);
            entries.insert(key.clone(), e);
        }
        entries.retain(|k, e| {
            if !wanted.contains(k) {
                e.users.remove(uid);
            }
            !e.users.is_empty()
        });
    }

    /// Drops every reference of pod `uid`.
    pub fn release(&self, uid: &str) {
        self.entries.lock().unwrap().retain(|_, e| {
            e.users.remove(uid);
            !e.users.is_empty()
        });
    }

    /// How many objects are watched (tests, metrics).
    pub fn watched(&self) -> Vec<Key> {
        let mut v: Vec<Key> = self.entries.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    fn start(&self, key: &Key, uid: &str) -> Entry {
        let (kind, ns, name) = key;
        tracing::info!(?kind, namespace = %ns, name = %name, "watching a referenced object");
        let params = ListParams {
            field_selector: format!("metadata.name={name}"),
            ..ListParams::default()
        };
        let users = BTreeSet::from([uid.to_string()]);
        let entries = self.entries.clone();
        let poke = self.poke.clone();
        let key2 = key.clone();
        match kind {
            Kind::ConfigMap => {
                let (inf, rx) = Informer::<ConfigMap>::start(self.client.clone(), ns, params);
                Entry {
                    watched: Watched::ConfigMap(inf),
                    users,
                    forward: tokio::spawn(forward(rx, key2, entries, poke)),
                }
            }
            Kind::Secret => {
                let (inf, rx) = Informer::<Secret>::start(self.client.clone(), ns, params);
                Entry {
                    watched: Watched::Secret(inf),
                    users,
                    forward: tokio::spawn(forward(rx, key2, entries, poke)),
                }
            }
        }
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Lookup {
        let entries = self.entries.lock().unwrap();
        let Some(e) = entries.get(&(kind, ns.to_string(), name.to_string())) else {
            return Lookup::NotSynced;
        };
        let key = format!("{ns}/{name}");
        match &e.watched {
            Watched::ConfigMap(i) if !i.has_synced() => Lookup::NotSynced,
            Watched::Secret(i) if !i.has_synced() => Lookup::NotSynced,
            Watched::ConfigMap(i) => i.get(&key).map_or(Lookup::Absent, |c| {
                let mut d: BTreeMap<String, Vec<u8>> =
                    c.data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                d.extend(c.binary_data);
                Lookup::Data(d)
            }),
            Watched::Secret(i) => i.get(&key).map_or(Lookup::Absent, |s| {
                let mut d: BTreeMap<String, Vec<u8>> = s.data.into_iter().collect();
                d.extend(s.string_data.into_iter().map(|(k, v)| (k, v.into_bytes())));
                Lookup::Data(d)
            }),
        }
    }

    /// Whether every object `pod` references has been loaded.
    pub fn synced_for(&self, pod: &Pod) -> bool {
        references(pod)
            .iter()
            .all(|(k, ns, n)| self.get(*k, ns, n) != Lookup::NotSynced)
    }
}

async fn forward<T: Resource>(
    mut rx: mpsc::Receiver<InformerEvent<T>>,
    key: Key,
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
    poke: mpsc::UnboundedSender<String>,
) {
    while rx.recv().await.is_some() {
        let users: Vec<String> = entries
            .lock()
            .unwrap()
            .get(&key)
            .map(|e| e.users.iter().cloned().collect())
            .unwrap_or_default();
        for u in users {
            let _ = poke.send(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::*;

    #[test]
    fn references_of_a_pod() {
        let pod: Pod = serde_yaml_like(
            r#"{"metadata":{"name":"p","namespace":"ns"},"spec":{
              "initContainers":[{"name":"i","image":"x","envFrom":[{"secretRef":{"name":"s1"}}]}],
              "containers":[{"name":"c","image":"x","env":[
                 {"name":"A","valueFrom":{"configMapKeyRef":{"name":"cm1","key":"k"}}},
                 {"name":"B","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}]}],
              "volumes":[{"name":"v","secret":{"secretName":"s2"}},{"name":"w","configMap":{"name":"cm1"}},
                         {"name":"e","emptyDir":{}}]}}"#,
        );
        let r: Vec<Key> = references(&pod).into_iter().collect();
        let k = |kind, n: &str| (kind, "ns".to_string(), n.to_string());
        assert_eq!(
            r,
            vec![
                k(Kind::ConfigMap, "cm1"),
                k(Kind::Secret, "s1"),
                k(Kind::Secret, "s2")
            ]
        );
    }

    fn serde_yaml_like(s: &str) -> Pod {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn no_references_no_watch() {
        let pod = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        assert!(references(&pod).is_empty());
    }
}
