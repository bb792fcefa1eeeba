//! Endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name listing the IPs of the selected pods: Ready ones in `addresses`, the others in
//! `notReadyAddresses` (all in `addresses` with `publishNotReadyAddresses`), with the service's
//! ports resolved per pod (a named `targetPort` is looked up in the pod's container ports; a pod
//! without that port is left out of that port's subset). Pods without an IP, terminal pods and
//! pods being deleted are left out. A pod whose `subdomain` is the service gets its
//! `hostname` in its address (for DNS). Services without a selector keep hand-written
//! Endpoints.

use crate::replicaset::ignore_not_found;
use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::{ClientError, Informer, InformerEvent, ResourceClient};
use berth_proto::corev1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use berth_proto::metav1::ObjectMeta;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The port a service port reaches on `pod` (None if a named port is not there).
fn resolve_port(sp: &berth_proto::corev1::ServicePort, pod: &Pod) -> Option<i32> {
    let Some(tp) = sp.target_port.as_ref().filter(|t| t.value.is_some()) else {
        return Some(sp.port);
    };
    if let Some(n) = tp.as_int() {
        return Some(if n == 0 { sp.port } else { n });
    }
    let name = tp.as_str().unwrap_or_default();
    let proto = if sp.protocol.is_empty() {
        "TCP"
    } else {
        sp.protocol.as_str()
    };
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .find_map(|p| {
            let pp = if p.protocol.is_empty() {
                "TCP"
            } else {
                p.protocol.as_str()
            };
            (p.name == name && pp == proto).then_some(p.container_port)
        })
}

fn pod_ip(p: &Pod) -> &str {
    p.status.as_ref().map_or("", |s| s.pod_ip.as_str())
}

/// (name, port, protocol) of one resolved port.
type PortKey = (String, i32, String);

/// The subsets for `svc` over the candidate pods (already selected): pods grouped by their
/// resolved port lists, addresses sorted by IP.
pub fn subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    for p in pods {
        if pod_ip(p).is_empty() || !pod_active(p) {
            continue;
        }
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .iter()
            .filter_map(|sp| {
                let proto = if sp.protocol.is_empty() {
                    "TCP".to_string()
                } else {
                    sp.protocol.clone()
                };
                resolve_port(sp, p).map(|n| (sp.name.clone(), n, proto))
            })
            .collect();
        if ports.is_empty() && !spec.ports.is_empty() {
            continue;
        }
        let m = meta(p);
        let ps = p.spec.clone().unwrap_or_default();
        // A pod naming this service as its subdomain is reachable by hostname (DNS).
        let svc_name = svc.metadata.as_ref().map_or("", |m| m.name.as_str());
        let hostname = if !ps.hostname.is_empty() && ps.subdomain == svc_name {
            ps.hostname.clone()
        } else {
            String::new()
        };
        let addr = EndpointAddress {
            ip: pod_ip(p).to_string(),
            hostname,
            node_name: p
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(ObjectReference {
                kind: "Pod".into(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                ..Default::default()
            }),
        };
        let g = groups.entry(ports).or_default();
        if pod_ready(p) || spec.publish_not_ready_addresses {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name,
                        port,
                        protocol,
                        app_protocol: None,
                    })
                    .collect(),
            }
        })
        .collect()
}

pub struct EndpointsController {
    pub client: ResourceClient,
    pub services: Arc<Informer<Service>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    pub pods: Arc<Informer<Pod>>,
}

/// Keys of Services a pod event concerns: those in its namespace selecting it before or after.
pub fn pod_event_keys(ev: &InformerEvent<Pod>, services: &Informer<Service>) -> Vec<String> {
    let pods: Vec<&Pod> = match ev {
        InformerEvent::Added(p) | InformerEvent::Deleted(p) => vec![p],
        InformerEvent::Updated { old, new } => vec![old, new],
    };
    let mut keys = Vec::new();
    for p in pods {
        let m = meta(p);
        for s in services.by_namespace(&m.namespace) {
            if selects(&s, &m.labels) {
                keys.push(key_of(&s));
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

fn selects(svc: &Service, labels: &BTreeMap<String, String>) -> bool {
    let sel = svc.spec.as_ref().map(|s| &s.selector);
    sel.is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let existing = self.endpoints.get(key);
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: its Endpoints go too.
            if existing.is_some() {
                ignore_not_found(
                    self.client
                        .delete::<Endpoints>(ns, name, Default::default())
                        .await,
                )?;
            }
            return Ok(Action::AwaitChange);
        };
        if svc.spec.as_ref().is_none_or(|s| s.selector.is_empty()) {
            return Ok(Action::AwaitChange);
        }
        let pods: Vec<Pod> = self
            .pods
            .by_namespace(ns)
            .into_iter()
            .filter(|p| selects(&svc, &meta(p).labels))
            .collect();
        let want = subsets(&svc, &pods);
        let labels = meta(&svc).labels;
        match existing {
            Some(ep) if ep.subsets == want && meta(&ep).labels == labels => {}
            Some(ep) => {
                let mut next = ep.clone();
                next.subsets = want;
                next.metadata.get_or_insert_with(Default::default).labels = labels;
                self.client.update(&next).await?;
            }
            None => {
                let ep = Endpoints {
                    api_version: "v1".into(),
                    kind: "Endpoints".into(),
                    metadata: Some(ObjectMeta {
                        name: name.into(),
                        namespace: ns.into(),
                        labels,
                        ..Default::default()
                    }),
                    subsets: want,
                };
                match self.client.create(ns, &ep).await {
                    // Cache lag: the next event for it reconciles again.
                    Ok(_) | Err(ClientError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Action::AwaitChange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use berth_proto::metav1::IntOrString;

    fn pod(name: &str, ip: &str, ready: bool, ports: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "d".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: ports
                        .iter()
                        .map(|(n, p)| ContainerPort {
                            name: n.to_string(),
                            container_port: *p,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.into(),
                phase: "Running".into(),
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn svc(ports: Vec<ServicePort>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports,
                selector: [("app".to_string(), "x".to_string())].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ips(a: &[EndpointAddress]) -> Vec<&str> {
        a.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses_with_resolved_ports() {
        let s = svc(vec![ServicePort {
            name: "web".into(),
            port: 80,
            target_port: Some(IntOrString::string("http")),
            ..Default::default()
        }]);
        let pods = vec![
            pod("b", "10.0.0.2", true, &[("http", 8080)]),
            pod("a", "10.0.0.1", true, &[("http", 8080)]),
            pod("c", "10.0.0.3", false, &[("http", 8080)]),
            pod("other-port", "10.0.0.4", true, &[("http", 9090)]),
            pod("no-port", "10.0.0.5", true, &[]),
            pod("no-ip", "", true, &[("http", 8080)]),
        ];
        let subs = subsets(&s, &pods);
        assert_eq!(subs.len(), 2);
        assert_eq!(ips(&subs[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&subs[0].not_ready_addresses), ["10.0.0.3"]);
        assert_eq!(subs[0].ports[0].port, 8080);
        assert_eq!(subs[0].ports[0].name, "web");
        assert_eq!(ips(&subs[1].addresses), ["10.0.0.4"]);
        assert_eq!(subs[1].ports[0].port, 9090);
        assert_eq!(subs[0].addresses[0].target_ref.as_ref().unwrap().name, "a");
        assert_eq!(subs[0].addresses[0].hostname, "");
    }

    #[test]
    fn pods_in_the_service_subdomain_get_hostnames() {
        let mut s = svc(vec![ServicePort {
            port: 80,
            ..Default::default()
        }]);
        s.metadata = Some(ObjectMeta {
            name: "db".into(),
            ..Default::default()
        });
        let mut p = pod("db-0", "10.0.0.1", true, &[]);
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = "db-0".into();
        spec.subdomain = "db".into();
        let mut q = pod("other", "10.0.0.2", true, &[]);
        q.spec.as_mut().unwrap().hostname = "other".into();
        let subs = subsets(&s, &[p, q]);
        let names: Vec<&str> = subs[0].addresses.iter().map(|a| a.hostname.as_str()).collect();
        assert_eq!(names, ["db-0", ""]);
    }

    #[test]
    fn numeric_and_missing_target_ports() {
        let s = svc(vec![
            ServicePort {
                port: 80,
                target_port: Some(IntOrString::int(8080)),
                ..Default::default()
            },
            ServicePort {
                port: 53,
                protocol: "UDP".into(),
                ..Default::default()
            },
        ]);
        let subs = subsets(&s, &[pod("a", "10.0.0.1", true, &[])]);
        let ports: Vec<(i32, &str)> = subs[0]
            .ports
            .iter()
            .map(|p| (p.port, p.protocol.as_str()))
            .collect();
        assert_eq!(ports, [(8080, "TCP"), (53, "UDP")]);
    }
}
