//! Typed CRUD and resuming watches over Berth's `Resources` service, with failover across
//! server addresses (a call moves to another server only when one is unreachable, never after
//! a definite answer).

use crate::etcd::{is_unreachable, ClientError, RESPONSE_BYTES_MAX};
use crate::servers::Servers;
use berth_proto::apiv1::{self, resources_client::ResourcesClient, watch_event::EventType};
use berth_proto::manifest::Object;
use berth_proto::{appsv1, coordinationv1, corev1, istiov1, metav1, networkingv1};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Pause before reopening a watch on the next server after every server failed once.
pub const WATCH_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// A kind the client can read and write as its own Rust type.
pub trait Resource: Sized + Clone + Send + Sync + 'static {
    /// Plural resource name on the wire (`pods`).
    const RESOURCE: &'static str;
    fn into_object(self) -> Object;
    fn from_object(o: Object) -> Result<Self, ClientError>;
    fn meta(&self) -> Option<&metav1::ObjectMeta>;
}

macro_rules! resources {
    ($($variant:ident => $ty:path, $plural:literal;)*) => {$(
        impl Resource for $ty {
            const RESOURCE: &'static str = $plural;
            fn into_object(self) -> Object {
                Object::$variant(self)
            }
            fn from_object(o: Object) -> Result<Self, ClientError> {
                match o {
                    Object::$variant(x) => Ok(x),
                    other => Err(ClientError::Decode(format!(
                        "expected {}, got {}", stringify!($variant), other.kind_name()
                    ))),
                }
            }
            fn meta(&self) -> Option<&metav1::ObjectMeta> {
                self.metadata.as_ref()
            }
        }
    )*};
}

resources! {
    Namespace => corev1::Namespace, "namespaces";
    Pod => corev1::Pod, "pods";
    Node => corev1::Node, "nodes";
    Service => corev1::Service, "services";
    Endpoints => corev1::Endpoints, "endpoints";
    ConfigMap => corev1::ConfigMap, "configmaps";
    Secret => corev1::Secret, "secrets";
    ReplicaSet => appsv1::ReplicaSet, "replicasets";
    Deployment => appsv1::Deployment, "deployments";
    ResourceQuota => corev1::ResourceQuota, "resourcequotas";
    LimitRange => corev1::LimitRange, "limitranges";
    Lease => coordinationv1::Lease, "leases";
    Event => corev1::Event, "events";
    Ingress => networkingv1::Ingress, "ingresses";
    VirtualService => istiov1::VirtualService, "virtualservices";
    DestinationRule => istiov1::DestinationRule, "destinationrules";
    Gateway => istiov1::Gateway, "gateways";
}

/// `metadata.resourceVersion` of a typed object ("" if unset).
pub fn resource_version<T: Resource>(o: &T) -> &str {
    o.meta().map_or("", |m| m.resource_version.as_str())
}

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Page size; 0 means all.
    pub limit: i64,
    pub continue_token: String,
    /// "" = most recent; otherwise the revision to list at or watch from.
    pub resource_version: String,
}

impl ListParams {
    fn to_wire(&self, bookmarks: bool) -> apiv1::ListOptions {
        apiv1::ListOptions {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            limit: self.limit,
            continue_token: self.continue_token.clone(),
            resource_version: self.resource_version.clone(),
            allow_watch_bookmarks: bookmarks,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList<T> {
    pub items: Vec<T>,
    /// The revision the list was read at: watch from here.
    pub resource_version: String,
    /// Non-empty when more pages follow.
    pub continue_token: String,
}

/// A typed watch event.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    /// The object's last state.
    Deleted(T),
    /// Progress: the watch has seen everything up to this resourceVersion.
    Bookmark(String),
}

/// A pod to bind: where it is and the resourceVersion it was seen at (unbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
}

/// Why a pod was left out of a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRejectReason {
    /// Its resourceVersion is stale.
    Conflict,
    AlreadyBound,
    NotFound,
    Deleting,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRejected {
    pub namespace: String,
    pub name: String,
    pub reason: BindRejectReason,
    pub message: String,
}

/// What a [`ResourceClient::bind`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct BindOutcome {
    /// True: every pod not rejected is bound (in `pods`). False: nothing was written.
    pub bound: bool,
    /// Bound: the node allocation key's new revision. Not bound: its current one; when that
    /// differs from the revision given, another bind to the node happened since, and a view
    /// that includes every bind up to this revision may try again with it.
    pub node_alloc_revision: i64,
    pub pods: Vec<corev1::Pod>,
    pub rejected: Vec<BindRejected>,
}

/// A client of the `Resources` service over one or more servers.
#[derive(Clone)]
pub struct ResourceClient {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Servers,
}

impl ResourceClient {
    pub fn new(addrs: &[String], request_timeout: Duration) -> Result<Self, ClientError> {
        Ok(ResourceClient {
            inner: Arc::new(Inner {
                servers: Servers::new(addrs, request_timeout)?,
            }),
        })
    }

    fn rpc(ch: Channel) -> ResourcesClient<Channel> {
        ResourcesClient::new(ch).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Runs `call` on the servers with the crate's failover rule.
    async fn failover<R, F, Fut>(&self, mut call: F) -> Result<R, ClientError>
    where
        F: FnMut(ResourcesClient<Channel>) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        self.inner.servers.failover(|ch| call(Self::rpc(ch))).await
    }

    /// One unary call with failover; `req` is cloned per attempt.
    async fn unary<Q, R, F, Fut>(&self, req: Q, call: F) -> Result<R, ClientError>
    where
        Q: Clone,
        F: Fn(ResourcesClient<Channel>, Q) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        self.failover(|c| call(c, req.clone())).await
    }

    fn typed<T: Resource>(o: apiv1::Object) -> Result<T, ClientError> {
        let o = Object::try_from(o).map_err(|e| ClientError::Decode(e.to_string()))?;
        T::from_object(o)
    }

    pub async fn create<T: Resource>(&self, ns: &str, obj: &T) -> Result<T, ClientError> {
        let req = apiv1::CreateRequest {
            object: Some(obj.clone().into_object().into()),
            namespace: ns.to_string(),
            dry_run: false,
        };
        let o = self
            .unary(req, |mut c, r| async move { Ok(c.create(r).await?.into_inner()) })
            .await?;
        Self::typed(o)
    }

    pub async fn get<T: Resource>(&self, ns: &str, name: &str) -> Result<T, ClientError> {
        let req = apiv1::GetRequest {
            resource: T::RESOURCE.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        let o = self
            .unary(req, |mut c, r| async move { Ok(c.get(r).await?.into_inner()) })
            .await?;
        Self::typed(o)
    }

    /// One page (all items when `limit` is 0); `ns` "" means all namespaces.
    pub async fn list<T: Resource>(
        &self,
        ns: &str,
        params: &ListParams,
    ) -> Result<ObjectList<T>, ClientError> {
        let req = apiv1::ListRequest {
            resource: T::RESOURCE.into(),
            namespace: ns.into(),
            options: Some(params.to_wire(false)),
        };
        let resp = self
            .unary(req, |mut c, r| async move { Ok(c.list(r).await?.into_inner()) })
            .await?;
        let meta = resp.metadata.unwrap_or_default();
        Ok(ObjectList {
            items: resp
                .items
                .into_iter()
                .map(Self::typed)
                .collect::<Result<_, _>>()?,
            resource_version: meta.resource_version,
            continue_token: meta.continue_token,
        })
    }

    /// Every page of a list, read at the first page's revision.
    pub async fn list_all<T: Resource>(
        &self,
        ns: &str,
        params: &ListParams,
    ) -> Result<ObjectList<T>, ClientError> {
        let mut p = params.clone();
        let mut page = self.list::<T>(ns, &p).await?;
        let mut items = std::mem::take(&mut page.items);
        while !page.continue_token.is_empty() {
            p.continue_token = page.continue_token.clone();
            page = self.list::<T>(ns, &p).await?;
            items.append(&mut page.items);
        }
        Ok(ObjectList {
            items,
            resource_version: page.resource_version,
            continue_token: String::new(),
        })
    }

    /// Replaces spec and metadata; a set resourceVersion is a precondition (Conflict).
    pub async fn update<T: Resource>(&self, obj: &T) -> Result<T, ClientError> {
        let req = apiv1::UpdateRequest {
            object: Some(obj.clone().into_object().into()),
            dry_run: false,
        };
        let o = self
            .unary(req, |mut c, r| async move { Ok(c.update(r).await?.into_inner()) })
            .await?;
        Self::typed(o)
    }

    /// Replaces the status only.
    pub async fn update_status<T: Resource>(&self, obj: &T) -> Result<T, ClientError> {
        let req = apiv1::UpdateRequest {
            object: Some(obj.clone().into_object().into()),
            dry_run: false,
        };
        let o = self
            .unary(req, |mut c, r| async move {
                Ok(c.update_status(r).await?.into_inner())
            })
            .await?;
        Self::typed(o)
    }

    /// Deletes; returns the object as last stored and whether its deletion is still pending.
    pub async fn delete<T: Resource>(
        &self,
        ns: &str,
        name: &str,
        options: apiv1::DeleteOptions,
    ) -> Result<(Option<T>, bool), ClientError> {
        let req = apiv1::DeleteRequest {
            resource: T::RESOURCE.into(),
            namespace: ns.into(),
            name: name.into(),
            options: Some(options),
        };
        let resp = self
            .unary(req, |mut c, r| async move { Ok(c.delete(r).await?.into_inner()) })
            .await?;
        let obj = resp.object.map(Self::typed).transpose()?;
        Ok((obj, resp.pending))
    }

    /// Creates the object or updates it to what `obj` states.
    pub async fn apply<T: Resource>(
        &self,
        obj: &T,
        field_manager: &str,
        force: bool,
    ) -> Result<T, ClientError> {
        let req = apiv1::ApplyRequest {
            object: Some(obj.clone().into_object().into()),
            field_manager: field_manager.into(),
            force,
            dry_run: false,
        };
        let o = self
            .unary(req, |mut c, r| async move { Ok(c.apply(r).await?.into_inner()) })
            .await?;
        Self::typed(o)
    }

    /// Binds `pods` to `node` in one transaction, if the node's allocation key is still at
    /// `node_alloc_revision` (0: never bound to). Pods that cannot be bound are answered in
    /// `rejected`; a missing node is `NotFound`.
    pub async fn bind(
        &self,
        node: &str,
        node_alloc_revision: i64,
        pods: &[PodRef],
    ) -> Result<BindOutcome, ClientError> {
        let req = apiv1::BindRequest {
            node_name: node.into(),
            node_alloc_revision,
            pods: pods
                .iter()
                .map(|p| apiv1::PodRevision {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    resource_version: p.resource_version.clone(),
                })
                .collect(),
        };
        let resp = self
            .unary(req, |mut c, r| async move { Ok(c.bind(r).await?.into_inner()) })
            .await?;
        let rejected = resp
            .rejected
            .into_iter()
            .map(|r| BindRejected {
                reason: match r.reason.as_str() {
                    "Conflict" => BindRejectReason::Conflict,
                    "AlreadyBound" => BindRejectReason::AlreadyBound,
                    "NotFound" => BindRejectReason::NotFound,
                    "Deleting" => BindRejectReason::Deleting,
                    other => BindRejectReason::Other(other.to_string()),
                },
                namespace: r.namespace,
                name: r.name,
                message: r.message,
            })
            .collect();
        Ok(BindOutcome {
            bound: resp.bound,
            node_alloc_revision: resp.node_alloc_revision,
            pods: resp.pods.into_iter().map(Self::typed).collect::<Result<_, _>>()?,
            rejected,
        })
    }

    /// A watch from `params.resource_version` that reconnects to any server after a failure
    /// and resumes from the last resourceVersion seen (events and bookmarks). Give it the
    /// resourceVersion of a list: a watch from "" resumes from "" only until its first event.
    pub fn watch<T: Resource>(&self, ns: &str, params: &ListParams) -> ResourceWatch<T> {
        ResourceWatch {
            client: self.clone(),
            ns: ns.to_string(),
            params: params.clone(),
            stream: None,
            failures: 0,
            _t: std::marker::PhantomData,
        }
    }
}

/// A resuming watch; see [`ResourceClient::watch`].
pub struct ResourceWatch<T> {
    client: ResourceClient,
    ns: String,
    params: ListParams,
    stream: Option<Streaming<apiv1::WatchEvent>>,
    /// Consecutive failed attempts to open or read a stream.
    failures: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Resource> ResourceWatch<T> {
    /// The resourceVersion the watch has reached.
    pub fn resource_version(&self) -> &str {
        &self.params.resource_version
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let n = self.client.inner.servers.len();
        loop {
            let idx = (self.client.inner.servers.current() + self.failures) % n;
            let req = apiv1::WatchRequest {
                resource: T::RESOURCE.into(),
                namespace: self.ns.clone(),
                options: Some(self.params.to_wire(true)),
            };
            let ch = self.client.inner.servers.channel(idx);
            match ResourceClient::rpc(ch).watch(req).await {
                Ok(s) => {
                    self.client.inner.servers.answered(idx);
                    self.stream = Some(s.into_inner());
                    return Ok(());
                }
                Err(s) if is_unreachable(&s) => self.backoff(&s).await,
                Err(s) => return Err(s.into()),
            }
        }
    }

    async fn backoff(&mut self, s: &Status) {
        tracing::debug!(error = %s, "watch: server unreachable, trying the next one");
        self.failures += 1;
        if self.failures.is_multiple_of(self.client.inner.servers.len()) {
            tokio::time::sleep(WATCH_RETRY_BACKOFF).await;
        }
    }

    /// The next event. Errors are definite (`Expired` means relist); unreachable servers are
    /// retried forever.
    pub async fn next(&mut self) -> Result<WatchEvent<T>, ClientError> {
        loop {
            if self.stream.is_none() {
                self.open().await?;
            }
            let stream = self.stream.as_mut().expect("opened");
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.stream = None;
                    self.failures += 1;
                    continue;
                }
                Err(s) if is_unreachable(&s) => {
                    self.stream = None;
                    self.backoff(&s).await;
                    continue;
                }
                Err(s) => {
                    self.stream = None;
                    return Err(s.into());
                }
            };
            self.failures = 0;
            let typ = EventType::try_from(msg.r#type).unwrap_or(EventType::Unspecified);
            if typ == EventType::Error {
                self.stream = None;
                let st = msg.status.unwrap_or_default();
                return Err(if st.reason == "Expired" || st.code == 410 {
                    ClientError::Expired(st.message)
                } else {
                    ClientError::Watch(format!("{}: {}", st.reason, st.message))
                });
            }
            if !msg.resource_version.is_empty() {
                self.params.resource_version = msg.resource_version.clone();
            }
            let obj = || -> Result<T, ClientError> {
                ResourceClient::typed(msg.object.clone().unwrap_or_default())
            };
            return Ok(match typ {
                EventType::Added => WatchEvent::Added(obj()?),
                EventType::Modified => WatchEvent::Modified(obj()?),
                EventType::Deleted => WatchEvent::Deleted(obj()?),
                EventType::Bookmark => WatchEvent::Bookmark(msg.resource_version),
                _ => return Err(ClientError::Watch(format!("unknown event type {}", msg.r#type))),
            });
        }
    }
}
