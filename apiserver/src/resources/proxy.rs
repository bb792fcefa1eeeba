//! The `Proxy` service (`berth.agent.v1`): logs, exec and image import by pod or node name,
//! streamed through to the node agent that runs the pod (the API server's pods/log,
//! pods/exec and node proxy subresources in Kubernetes).
//!
//! The pod is read linearizably, its container chosen by Kubernetes' rules (the only one, or
//! the one named), its node's agent found at the Node's InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, and dialed through `berth_client` (where TLS
//! will go). Streams are not buffered here: log chunks go from the agent's stream to the
//! caller's with HTTP/2 flow control on both, and an image upload to several nodes holds at
//! most [`IMAGE_FANOUT_QUEUE_LEN`] chunks per node (the slowest agent paces the upload).

use super::ResourcesService;
use crate::error::ApiError;
use berth_client::agent::{connect_agent, IMAGE_FANOUT_QUEUE_LEN};
use berth_proto::agentv1::{
    node_agent_client::NodeAgentClient, proxy_server::Proxy, ExecRequest, ExecResponse, ImageChunk, LogChunk,
    LogsRequest, NodeImport, ProxyImportResponse,
};
use berth_proto::apiv1;
use berth_proto::corev1::{Node, Pod};
use berth_proto::manifest::Object;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Time for an agent call to start answering (exec adds its own run time, see the client crate).
pub const AGENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ProxyService {
    pub(crate) resources: ResourcesService,
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

impl ProxyService {
    async fn pod(&self, namespace: &str, name: &str) -> Result<Pod, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("pod name is required"));
        }
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let req = apiv1::GetRequest {
            resource: "pods".into(),
            namespace: ns.into(),
            name: name.into(),
        };
        match self.resources.get_object(req).await? {
            Object::Pod(p) => Ok(p),
            _ => Err(ApiError::Invalid(format!("pods {name:?}: stored object is not a Pod")).into()),
        }
    }

    async fn node(&self, name: &str) -> Result<Node, Status> {
        let req = apiv1::GetRequest {
            resource: "nodes".into(),
            namespace: String::new(),
            name: name.into(),
        };
        match self.resources.get_object(req).await? {
            Object::Node(n) => Ok(n),
            _ => Err(ApiError::Invalid(format!("nodes {name:?}: stored object is not a Node")).into()),
        }
    }

    async fn ready_nodes(&self) -> Result<Vec<Node>, Status> {
        let req = apiv1::ListRequest {
            resource: "nodes".into(),
            ..Default::default()
        };
        let list = self.resources.list_objects(req).await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| match o.kind {
                Some(Object::Node(n)) if node_ready(&n) => Some(n),
                _ => None,
            })
            .collect())
    }

    /// The pod's node's agent, for `container` (chosen by [`container_of`]).
    async fn agent_for_pod(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
    ) -> Result<(Pod, String, NodeAgentClient<Channel>), Status> {
        let pod = self.pod(namespace, name).await?;
        let container = container_of(&pod, container)?;
        let node_name = pod.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
        if node_name.is_empty() {
            return Err(Status::failed_precondition(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let node = self.node(&node_name).await.map_err(|e| match e.code() {
            tonic::Code::NotFound => {
                Status::failed_precondition(format!("node {node_name:?} of pod {name} is not registered"))
            }
            _ => e,
        })?;
        Ok((pod, container, connect(&node).await?))
    }
}

fn node_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn name_of(n: &Node) -> String {
    n.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

/// `host:port` of the node's agent: its InternalIP and kubelet endpoint port.
pub fn agent_addr(n: &Node) -> Result<String, Status> {
    let name = name_of(n);
    let st = n.status.clone().unwrap_or_default();
    let port = st
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map_or(0, |e| e.port);
    if !(1..=65535).contains(&port) {
        return Err(Status::failed_precondition(format!(
            "node {name} has no agent endpoint (status.daemonEndpoints.kubeletEndpoint.Port is not set)"
        )));
    }
    let ip = st
        .addresses
        .iter()
        .find(|a| a.r#type == "InternalIP")
        .and_then(|a| a.address.parse::<std::net::IpAddr>().ok())
        .ok_or_else(|| Status::failed_precondition(format!("node {name} has no InternalIP address")))?;
    Ok(std::net::SocketAddr::new(ip, port as u16).to_string())
}

async fn connect(n: &Node) -> Result<NodeAgentClient<Channel>, Status> {
    let addr = agent_addr(n)?;
    connect_agent(&addr, AGENT_REQUEST_TIMEOUT)
        .await
        .map_err(|e| Status::unavailable(format!("node {}: cannot reach its agent: {e}", name_of(n))))
}

/// The container a request means: the named one (a container or an init container of the
/// pod), or the pod's only container. Kubernetes' messages.
pub fn container_of(pod: &Pod, requested: &str) -> Result<String, Status> {
    let name = pod.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let inits: Vec<&str> = spec.init_containers.iter().map(|c| c.name.as_str()).collect();
    if requested.is_empty() {
        return match names.as_slice() {
            [only] => Ok(only.to_string()),
            _ => {
                let mut m = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                );
                if !inits.is_empty() {
                    m.push_str(&format!(" or one of the init containers: [{}]", inits.join(" ")));
                }
                Err(Status::invalid_argument(m))
            }
        };
    }
    if names.contains(&requested) || inits.contains(&requested) {
        Ok(requested.to_string())
    } else {
        Err(Status::invalid_argument(format!(
            "container {requested} is not valid for pod {name}"
        )))
    }
}

/// Kubernetes' answer for the log of a container that never ran: `container "c" in pod "p" is
/// waiting to start: REASON`. A container that ran before (waiting to restart) has a log.
pub fn never_started(pod: &Pod, container: &str) -> Option<Status> {
    let st = pod.status.as_ref()?;
    let cs = st
        .container_statuses
        .iter()
        .chain(&st.init_container_statuses)
        .find(|c| c.name == container)?;
    let waiting = cs.state.as_ref()?.waiting.as_ref()?;
    let ran_before = cs.restart_count > 0 || cs.last_state.as_ref().is_some_and(|l| l.terminated.is_some());
    if ran_before {
        return None;
    }
    let name = pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default();
    Some(Status::failed_precondition(format!(
        "container {container:?} in pod {name:?} is waiting to start: {}",
        waiting.reason
    )))
}

fn uid_of(p: &Pod) -> String {
    p.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default()
}

fn phase_of(p: &Pod) -> String {
    p.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default()
}

/// One node's share of an image upload.
struct Upload {
    node: String,
    chunks: Option<mpsc::Sender<ImageChunk>>,
    call: Option<tokio::task::JoinHandle<Result<Vec<berth_proto::agentv1::ImportedImage>, Status>>>,
    error: String,
}

impl Upload {
    async fn start(n: &Node) -> Upload {
        let node = name_of(n);
        let mut agent = match connect(n).await {
            Ok(a) => a,
            Err(e) => {
                return Upload {
                    node,
                    chunks: None,
                    call: None,
                    error: e.message().to_string(),
                }
            }
        };
        let (tx, rx) = mpsc::channel(IMAGE_FANOUT_QUEUE_LEN);
        let call = tokio::spawn(async move {
            agent
                .import_image(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner().images)
        });
        Upload {
            node,
            chunks: Some(tx),
            call: Some(call),
            error: String::new(),
        }
    }

    async fn finish(mut self) -> NodeImport {
        self.chunks = None;
        let mut images = Vec::new();
        if let Some(call) = self.call.take() {
            match call.await {
                Ok(Ok(i)) => images = i,
                Ok(Err(s)) => self.error = format!("{}: {}", self.node, s.message()),
                Err(e) => self.error = format!("{}: {e}", self.node),
            }
        }
        NodeImport {
            node: self.node,
            images,
            error: self.error,
        }
    }
}

#[tonic::async_trait]
impl Proxy for ProxyService {
    type PodLogsStream = LogStream;

    async fn pod_logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let _t = self.resources.shared.metrics.time("Proxy.PodLogs");
        let mut r = req.into_inner();
        let (pod, container, mut agent) = self.agent_for_pod(&r.namespace, &r.pod, &r.container).await?;
        if let Some(e) = never_started(&pod, &container).filter(|_| !r.previous) {
            return Err(e);
        }
        r.namespace = pod
            .metadata
            .as_ref()
            .map(|m| m.namespace.clone())
            .unwrap_or_default();
        r.pod_uid = uid_of(&pod);
        r.container = container;
        let stream = agent.logs(r).await?.into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn pod_exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let _t = self.resources.shared.metrics.time("Proxy.PodExec");
        let mut r = req.into_inner();
        if r.command.is_empty() {
            return Err(Status::invalid_argument(
                "you must specify at least one command for the container",
            ));
        }
        let (pod, container, mut agent) = self.agent_for_pod(&r.namespace, &r.pod, &r.container).await?;
        let phase = phase_of(&pod);
        if phase == "Succeeded" || phase == "Failed" {
            return Err(Status::failed_precondition(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
        r.namespace = pod
            .metadata
            .as_ref()
            .map(|m| m.namespace.clone())
            .unwrap_or_default();
        r.pod_uid = uid_of(&pod);
        r.container = container;
        Ok(Response::new(agent.exec(r).await?.into_inner()))
    }

    async fn import_image(
        &self,
        req: Request<Streaming<ImageChunk>>,
    ) -> Result<Response<ProxyImportResponse>, Status> {
        let _t = self.resources.shared.metrics.time("Proxy.ImportImage");
        let mut chunks = req.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty image upload"))??;
        let nodes = if first.node.is_empty() {
            let ready = self.ready_nodes().await?;
            if ready.is_empty() {
                return Err(Status::failed_precondition(
                    "no Ready node to import the image into",
                ));
            }
            ready
        } else {
            vec![self.node(&first.node).await?]
        };
        let mut uploads = Vec::with_capacity(nodes.len());
        for n in &nodes {
            uploads.push(Upload::start(n).await);
        }
        let mut next = Some(first);
        while let Some(chunk) = next {
            for u in uploads.iter_mut() {
                if let Some(tx) = &u.chunks {
                    if tx.send(chunk.clone()).await.is_err() {
                        // That agent's call ended early; its answer says why.
                        u.chunks = None;
                    }
                }
            }
            next = match chunks.next().await.transpose() {
                Ok(c) => c,
                Err(e) => {
                    // The upload broke: cancel the agents' calls, so none imports a torso.
                    for u in &uploads {
                        if let Some(c) = &u.call {
                            c.abort();
                        }
                    }
                    return Err(e);
                }
            };
        }
        let mut out = Vec::with_capacity(uploads.len());
        for u in uploads {
            out.push(u.finish().await);
        }
        Ok(Response::new(ProxyImportResponse { nodes: out }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::{
        Container, DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus, PodSpec,
    };
    use berth_proto::metav1::ObjectMeta;

    fn pod(containers: &[&str], inits: &[&str]) -> Pod {
        let c = |n: &&str| Container {
            name: n.to_string(),
            ..Default::default()
        };
        Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: containers.iter().map(c).collect(),
                init_containers: inits.iter().map(c).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_is_the_only_one_or_named() {
        assert_eq!(container_of(&pod(&["a"], &[]), "").unwrap(), "a");
        assert_eq!(container_of(&pod(&["a", "b"], &["i"]), "i").unwrap(), "i");
        let e = container_of(&pod(&["a", "b"], &[]), "").unwrap_err();
        assert_eq!(
            e.message(),
            "a container name must be specified for pod web, choose one of: [a b]"
        );
        let e = container_of(&pod(&["a", "b"], &["i"]), "").unwrap_err();
        assert!(
            e.message().ends_with(" or one of the init containers: [i]"),
            "{}",
            e.message()
        );
        let e = container_of(&pod(&["a"], &[]), "z").unwrap_err();
        assert_eq!(e.message(), "container z is not valid for pod web");
    }

    #[test]
    fn agent_address_from_internal_ip_and_kubelet_port() {
        let node = |port: i32, ip: &str| Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: vec![NodeAddress {
                    r#type: "InternalIP".into(),
                    address: ip.into(),
                }],
                daemon_endpoints: Some(NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint { port }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(agent_addr(&node(10250, "10.0.0.7")).unwrap(), "10.0.0.7:10250");
        assert_eq!(agent_addr(&node(10250, "fd00::7")).unwrap(), "[fd00::7]:10250");
        assert!(agent_addr(&node(0, "10.0.0.7"))
            .unwrap_err()
            .message()
            .contains("node n1 has no agent endpoint"));
        assert!(agent_addr(&node(10250, ""))
            .unwrap_err()
            .message()
            .contains("no InternalIP"));
    }
}
