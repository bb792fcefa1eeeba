//! Typed CRUD and resuming watches over Berth's `Resources` service, with failover across
//! server addresses (a call moves to another server only when one is unreachable, never after
//! a definite answer).

use crate::etcd::{is_unreachable, ClientError, RESPONSE_BYTES_MAX};
use crate::servers::{Call, Servers};
use crate::watch_many::WatchMany;
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
    pub(crate) fn to_wire(&self, bookmarks: bool) -> apiv1::ListOptions {
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

/// How a patch is read and what it patches.
#[derive(Debug, Clone, Copy)]
pub struct PatchParams {
    pub patch_type: apiv1::PatchType,
    /// Patch the status subresource only.
    pub status: bool,
    pub dry_run: bool,
}

impl PatchParams {
    /// A JSON merge patch (RFC 7386) of spec and metadata.
    pub fn merge() -> PatchParams {
        PatchParams {
            patch_type: apiv1::PatchType::Merge,
            status: false,
            dry_run: false,
        }
    }

    /// A JSON Patch (RFC 6902) of spec and metadata.
    pub fn json() -> PatchParams {
        PatchParams {
            patch_type: apiv1::PatchType::Json,
            ..PatchParams::merge()
        }
    }

    /// A Kubernetes strategic merge patch of spec and metadata (lists merged by merge key).
    pub fn strategic() -> PatchParams {
        PatchParams {
            patch_type: apiv1::PatchType::StrategicMerge,
            ..PatchParams::merge()
        }
    }

    /// The same patch, of the status subresource.
    pub fn status(self) -> PatchParams {
        PatchParams { status: true, ..self }
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
    async fn failover<R, F, Fut>(&self, kind: Call, mut call: F) -> Result<R, ClientError>
    where
        F: FnMut(ResourcesClient<Channel>) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        self.inner.servers.failover(kind, |ch| call(Self::rpc(ch))).await
    }

    /// One unary call with failover of its `kind`; `req` is cloned per attempt.
    async fn unary<Q, R, F, Fut>(&self, kind: Call, req: Q, call: F) -> Result<R, ClientError>
    where
        Q: Clone,
        F: Fn(ResourcesClient<Channel>, Q) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        self.failover(kind, |c| call(c, req.clone())).await
    }

    fn untyped(o: apiv1::Object) -> Result<Object, ClientError> {
        Object::try_from(o).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn typed<T: Resource>(o: apiv1::Object) -> Result<T, ClientError> {
        T::from_object(Self::untyped(o)?)
    }

    pub async fn create<T: Resource>(&self, ns: &str, obj: &T) -> Result<T, ClientError> {
        T::from_object(self.create_object(ns, obj.clone().into_object()).await?)
    }

    /// Creates the Namespace `name` unless it exists (components create the system namespaces
    /// they work in: `kube-system`, `kube-node-lease`).
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ClientError> {
        let ns = corev1::Namespace {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            metadata: Some(metav1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self.create("", &ns).await {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn get<T: Resource>(&self, ns: &str, name: &str) -> Result<T, ClientError> {
        T::from_object(self.get_object(T::RESOURCE, ns, name).await?)
    }

    /// One page (all items when `limit` is 0); `ns` "" means all namespaces.
    pub async fn list<T: Resource>(
        &self,
        ns: &str,
        params: &ListParams,
    ) -> Result<ObjectList<T>, ClientError> {
        typed_list(self.list_objects(T::RESOURCE, ns, params).await?)
    }

    /// Every page of a list, read at the first page's revision.
    pub async fn list_all<T: Resource>(
        &self,
        ns: &str,
        params: &ListParams,
    ) -> Result<ObjectList<T>, ClientError> {
        typed_list(self.list_all_objects(T::RESOURCE, ns, params).await?)
    }

    /// Replaces spec and metadata; a set resourceVersion is a precondition (Conflict).
    pub async fn update<T: Resource>(&self, obj: &T) -> Result<T, ClientError> {
        T::from_object(self.update_object(obj.clone().into_object()).await?)
    }

    /// Replaces the status only.
    pub async fn update_status<T: Resource>(&self, obj: &T) -> Result<T, ClientError> {
        let req = apiv1::UpdateRequest {
            object: Some(obj.clone().into_object().into()),
            dry_run: false,
        };
        let o = self
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.update_status(r).await?.into_inner())
            })
            .await?;
        Self::typed(o)
    }

    /// Patches the object (`patch` is UTF-8 JSON in Kubernetes field names): a JSON merge patch
    /// (RFC 7386) or JSON Patch (RFC 6902) as `params` says, of spec and metadata or, with
    /// `params.status`, of the status only. A patch stating metadata.resourceVersion makes it a
    /// precondition (`Conflict` when stale); otherwise the server retries lost races itself.
    pub async fn patch<T: Resource>(
        &self,
        ns: &str,
        name: &str,
        params: &PatchParams,
        patch: &[u8],
    ) -> Result<T, ClientError> {
        let req = apiv1::PatchRequest {
            resource: T::RESOURCE.into(),
            namespace: ns.into(),
            name: name.into(),
            patch_type: params.patch_type as i32,
            patch: patch.to_vec(),
            dry_run: params.dry_run,
            subresource: if params.status {
                "status".into()
            } else {
                String::new()
            },
        };
        let o = self
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.patch(r).await?.into_inner())
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
        let (obj, pending) = self.delete_object(T::RESOURCE, ns, name, options).await?;
        Ok((obj.map(T::from_object).transpose()?, pending))
    }

    /// Creates the object or updates it to what `obj` states.
    pub async fn apply<T: Resource>(
        &self,
        obj: &T,
        field_manager: &str,
        force: bool,
    ) -> Result<T, ClientError> {
        let o = self
            .apply_object(obj.clone().into_object(), field_manager, force)
            .await?;
        T::from_object(o)
    }

    // The same calls for objects of any kind, the resource named by its plural
    // (`ResourceType::plural`): for callers that learn the kind at run time (the CLI).

    /// Creates an object of any kind; `ns` "" means the object's own (or `default`).
    pub async fn create_object(&self, ns: &str, obj: Object) -> Result<Object, ClientError> {
        let req = apiv1::CreateRequest {
            object: Some(obj.into()),
            namespace: ns.to_string(),
            dry_run: false,
        };
        let o = self
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.create(r).await?.into_inner())
            })
            .await?;
        Self::untyped(o)
    }

    /// Reads one object of `resource` (a plural: `pods`).
    pub async fn get_object(&self, resource: &str, ns: &str, name: &str) -> Result<Object, ClientError> {
        let req = apiv1::GetRequest {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        let o = self
            .unary(Call::Idempotent, req, |mut c, r| async move {
                Ok(c.get(r).await?.into_inner())
            })
            .await?;
        Self::untyped(o)
    }

    /// One page of objects of `resource`; `ns` "" means all namespaces.
    pub async fn list_objects(
        &self,
        resource: &str,
        ns: &str,
        params: &ListParams,
    ) -> Result<ObjectList<Object>, ClientError> {
        let req = apiv1::ListRequest {
            resource: resource.into(),
            namespace: ns.into(),
            options: Some(params.to_wire(false)),
        };
        let resp = self
            .unary(Call::Idempotent, req, |mut c, r| async move {
                Ok(c.list(r).await?.into_inner())
            })
            .await?;
        let meta = resp.metadata.unwrap_or_default();
        Ok(ObjectList {
            items: resp
                .items
                .into_iter()
                .map(Self::untyped)
                .collect::<Result<_, _>>()?,
            resource_version: meta.resource_version,
            continue_token: meta.continue_token,
        })
    }

    /// Every page of a list of `resource`, read at the first page's revision.
    pub async fn list_all_objects(
        &self,
        resource: &str,
        ns: &str,
        params: &ListParams,
    ) -> Result<ObjectList<Object>, ClientError> {
        let mut p = params.clone();
        let mut page = self.list_objects(resource, ns, &p).await?;
        let mut items = std::mem::take(&mut page.items);
        while !page.continue_token.is_empty() {
            p.continue_token = page.continue_token.clone();
            page = self.list_objects(resource, ns, &p).await?;
            items.append(&mut page.items);
        }
        Ok(ObjectList {
            items,
            resource_version: page.resource_version,
            continue_token: String::new(),
        })
    }

    /// [`ResourceClient::update`] for an object of any kind.
    pub async fn update_object(&self, obj: Object) -> Result<Object, ClientError> {
        let req = apiv1::UpdateRequest {
            object: Some(obj.into()),
            dry_run: false,
        };
        let o = self
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.update(r).await?.into_inner())
            })
            .await?;
        Self::untyped(o)
    }

    /// [`ResourceClient::delete`] for any resource.
    pub async fn delete_object(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        options: apiv1::DeleteOptions,
    ) -> Result<(Option<Object>, bool), ClientError> {
        let req = apiv1::DeleteRequest {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            options: Some(options),
        };
        let resp = self
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.delete(r).await?.into_inner())
            })
            .await?;
        let obj = resp.object.map(Self::untyped).transpose()?;
        Ok((obj, resp.pending))
    }

    /// [`ResourceClient::apply`] for an object of any kind.
    pub async fn apply_object(
        &self,
        obj: Object,
        field_manager: &str,
        force: bool,
    ) -> Result<Object, ClientError> {
        let req = apiv1::ApplyRequest {
            object: Some(obj.into()),
            field_manager: field_manager.into(),
            force,
            dry_run: false,
        };
        let o = self
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.apply(r).await?.into_inner())
            })
            .await?;
        Self::untyped(o)
    }

    /// [`ResourceClient::watch`] of any resource, yielding objects of any kind.
    pub fn watch_objects(&self, resource: &str, ns: &str, params: &ListParams) -> ResourceWatch<Object> {
        ResourceWatch::new(self.clone(), resource, ns, params, Ok)
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
            .unary(Call::Write, req, |mut c, r| async move {
                Ok(c.bind(r).await?.into_inner())
            })
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
    /// Opens one `WatchMany` stream (many watches, see [`WatchMany`]) on the first server
    /// that answers. It does not reconnect: when it ends, the caller opens another and adds
    /// its watches again from the resourceVersions they reached.
    pub async fn watch_many(&self) -> Result<WatchMany, ClientError> {
        let n = self.inner.servers.len();
        let mut failures = 0;
        loop {
            let idx = (self.inner.servers.current() + failures) % n;
            let (tx, rx) = tokio::sync::mpsc::channel(crate::watch_many::WATCH_MANY_REQUESTS_QUEUED);
            let ch = self.inner.servers.channel(idx);
            match Self::rpc(ch)
                .watch_many(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                Ok(s) => {
                    self.inner.servers.answered(idx);
                    return Ok(WatchMany::new(tx, s.into_inner()));
                }
                Err(s) if is_unreachable(&s) => {
                    failures += 1;
                    if failures.is_multiple_of(n) {
                        tokio::time::sleep(WATCH_RETRY_BACKOFF).await;
                    }
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    pub fn watch<T: Resource>(&self, ns: &str, params: &ListParams) -> ResourceWatch<T> {
        ResourceWatch::new(self.clone(), T::RESOURCE, ns, params, T::from_object)
    }
}

fn typed_list<T: Resource>(l: ObjectList<Object>) -> Result<ObjectList<T>, ClientError> {
    Ok(ObjectList {
        items: l
            .items
            .into_iter()
            .map(T::from_object)
            .collect::<Result<_, _>>()?,
        resource_version: l.resource_version,
        continue_token: l.continue_token,
    })
}

/// A resuming watch; see [`ResourceClient::watch`].
pub struct ResourceWatch<T> {
    client: ResourceClient,
    /// Plural resource name on the wire.
    resource: String,
    /// Turns an event's object into the caller's type.
    decode: fn(Object) -> Result<T, ClientError>,
    ns: String,
    params: ListParams,
    stream: Option<Streaming<apiv1::WatchEvent>>,
    /// Consecutive failed attempts to open or read a stream.
    failures: usize,
}

impl<T> ResourceWatch<T> {
    fn new(
        client: ResourceClient,
        resource: &str,
        ns: &str,
        params: &ListParams,
        decode: fn(Object) -> Result<T, ClientError>,
    ) -> Self {
        ResourceWatch {
            client,
            resource: resource.to_string(),
            decode,
            ns: ns.to_string(),
            params: params.clone(),
            stream: None,
            failures: 0,
        }
    }

    /// The resourceVersion the watch has reached.
    pub fn resource_version(&self) -> &str {
        &self.params.resource_version
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let n = self.client.inner.servers.len();
        loop {
            let idx = (self.client.inner.servers.current() + self.failures) % n;
            let req = apiv1::WatchRequest {
                resource: self.resource.clone(),
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
            let ended = msg.r#type == EventType::Error as i32;
            if ended {
                self.stream = None;
            }
            if !ended && !msg.resource_version.is_empty() {
                self.params.resource_version = msg.resource_version.clone();
            }
            return watch_event(msg, self.decode);
        }
    }
}

/// A wire watch event as the caller's type; an ERROR event is the error it carries
/// (`Expired` for reason "Expired" or code 410: relist).
pub(crate) fn watch_event<T>(
    msg: apiv1::WatchEvent,
    decode: fn(Object) -> Result<T, ClientError>,
) -> Result<WatchEvent<T>, ClientError> {
    let typ = EventType::try_from(msg.r#type).unwrap_or(EventType::Unspecified);
    let obj = |o: Option<apiv1::Object>| decode(ResourceClient::untyped(o.unwrap_or_default())?);
    Ok(match typ {
        EventType::Error => {
            let st = msg.status.unwrap_or_default();
            return Err(if st.reason == "Expired" || st.code == 410 {
                ClientError::Expired(st.message)
            } else {
                ClientError::Watch(format!("{}: {}", st.reason, st.message))
            });
        }
        EventType::Added => WatchEvent::Added(obj(msg.object)?),
        EventType::Modified => WatchEvent::Modified(obj(msg.object)?),
        EventType::Deleted => WatchEvent::Deleted(obj(msg.object)?),
        EventType::Bookmark => WatchEvent::Bookmark(msg.resource_version),
        _ => return Err(ClientError::Watch(format!("unknown event type {}", msg.r#type))),
    })
}
