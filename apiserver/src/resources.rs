//! The `Resources` service (`berth.api.v1`): typed Kubernetes-style objects on the replicated
//! store, through [`berth_raft::RaftHandle`] only.
//!
//! Every write is ONE store transaction with compares, so concurrent writers on any member
//! never lose an update:
//! - Create: `create_revision == 0` on the object's key (else AlreadyExists) and, for namespaced
//!   kinds, `mod_revision ==` the revision of the Namespace object that was read and found
//!   present and not terminating (NamespaceLifecycle, checked atomically with the write).
//! - Update, UpdateStatus, Delete and deletion marks: `mod_revision ==` the revision read (a
//!   compare-and-swap; a lost race is Aborted with Kubernetes' "the object has been modified").
//!
//! Stored values are the kind's own message, encoded, without `metadata.resourceVersion`;
//! reads set it to the key's mod revision.
//!
//! Merge rules. Update takes the request's object, but keeps from the stored one: `status`,
//! `metadata.uid` (a different uid is Invalid), `creationTimestamp`, `deletionTimestamp`,
//! `deletionGracePeriodSeconds`; `generation` is bumped when anything outside metadata and status
//! changes. UpdateStatus takes the stored object and replaces only its `status`. Apply creates
//! the object when absent; otherwise it is an Update to the request's object with the stored
//! resourceVersion as precondition (so the same merge rule: status, uid and timestamps stay as
//! stored), except that finalizers and ownerReferences the applied object leaves empty are kept
//! as stored. Field managers and `force` are accepted but not tracked yet: otherwise the applied
//! object replaces the stored spec and metadata as a whole. An update that changes nothing
//! writes nothing.
//!
//! Patch: the stored object's JSON form (Kubernetes field names) is patched with a JSON merge
//! patch (RFC 7386) or JSON Patch (RFC 6902, see [`crate::patch`]), read back strictly (an
//! ill-typed result is Invalid naming the field path), then merged, defaulted, validated and
//! compare-and-swapped exactly as an Update (or, for the `status` subresource, UpdateStatus).
//! A lost race is retried on the fresh object, unless the patch states
//! `metadata.resourceVersion`, which then is a precondition. Strategic merge patch merges lists
//! by Kubernetes' merge keys for the common fields (see [`crate::patch`]).
//!
//! Delete: objects with finalizers, and scheduled Pods with a grace period, get
//! `deletionTimestamp` (and `deletionGracePeriodSeconds`) instead of going; the rest are removed
//! at once (unscheduled pods too, as in Kubernetes). propagationPolicy Foreground adds the
//! finalizer `foregroundDeletion`, Orphan adds `orphan` (each replacing the other), so the
//! object stays marked until the garbage collector removes them; Background (the default)
//! deletes at once. An update that removes the last finalizer of an object marked with no
//! grace period left deletes it.
//!
//! Watch: a store watch on the kind's key prefix, with previous values (so DELETED carries the
//! deleted object, and selectors see objects leave and enter). Each stream has a bounded queue
//! ([`WATCH_EVENT_QUEUE_LEN`]); a client that does not read for [`SLOW_CLIENT_TIMEOUT`] while
//! it is full is cut off with RESOURCE_EXHAUSTED instead of growing memory.
//!
//! WatchMany: many watches on one stream, read from a per-kind event window decoded once for
//! all of them (`feed.rs`); a watch is a filter and a cursor, an event is encoded once per stream
//! (`watch_many.rs`). Unlike Watch it answers a resourceVersion older than the window with
//! Expired even when the store still has that history.

mod binding;
pub mod proxy;

use crate::error::ApiError;
use crate::kv::unreachable_result;
use crate::patch::Patch;
use crate::Shared;
use berth_proto::apiv1::{self, resources_server::Resources, watch_event::EventType};
use berth_proto::manifest::{Object, ResourceType, RESOURCE_TYPES};
use berth_proto::selector::{FieldSelector, Selector};
use berth_proto::{defaults, metav1, prefix_range_end, validate};
use berth_store::{
    Command, CommandResult, Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, KeyValue,
    PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseOp, StoreError, TxnRequest, TxnResponse,
    WatchMessage,
};
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Watch events queued per Watch stream.
pub const WATCH_EVENT_QUEUE_LEN: usize = 1024;
/// How long a watch waits for room in a full queue before cutting the client off.
pub const SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a watch that allows bookmarks asks the store for progress.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// Attempts of a write whose compare failed for a reason the server can retry (the namespace
/// changed between its check and a create; another writer won an unconditional update).
const WRITE_ATTEMPTS: usize = 5;
/// Attempts of a patch without a resourceVersion whose compare-and-swap keeps losing to other
/// writers of the same object (each lost round means another writer progressed).
const PATCH_ATTEMPTS: usize = 16;
/// Characters of a generateName suffix (Kubernetes' alphabet: no vowels, no look-alikes).
const NAME_SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const NAME_SUFFIX_LEN: usize = 5;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub struct ResourcesService {
    pub(crate) shared: Arc<Shared>,
}

mod feed;
mod watch_many;
mod write;

pub(crate) use feed::Feeds;
pub use feed::{WATCH_WINDOW_EVENTS_DEFAULT, WATCH_WINDOW_PRELOAD_REVISIONS};
pub use watch_many::{WATCHES_PER_STREAM_MAX, WATCH_MANY_QUEUE_LEN};

// ------------------------------------------------------------------ store access

impl ResourcesService {
    async fn propose_txn(&self, txn: TxnRequest) -> Result<TxnResponse> {
        let res = self.shared.raft.propose(Command::Txn(txn)).await;
        self.shared.metrics.proposal(matches!(res, Ok(Ok(_))));
        match res?? {
            CommandResult::Txn(r) => Ok(r),
            other => unreachable_result("Txn", other),
        }
    }

    async fn linearizable(&self) -> Result<()> {
        Ok(self.shared.raft.read_linearizable().await?)
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        Ok(self.shared.raft.store().range(req)?)
    }

    /// The key's current value, after a linearizable read.
    async fn read_key(&self, key: &str) -> Result<Option<KeyValue>> {
        self.linearizable().await?;
        let r = self.range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })?;
        Ok(r.kvs.into_iter().next())
    }

    /// The stored object at `key`, or NotFound.
    async fn read_object(
        &self,
        rt: &'static ResourceType,
        key: &str,
        name: &str,
    ) -> Result<(Object, KeyValue)> {
        let kv = self.read_key(key).await?.ok_or_else(|| not_found(rt, name))?;
        Ok((decode(rt, &kv)?, kv))
    }

    /// Puts `obj` (read as `stored`) if its key is still at `mod_revision`, else Conflict;
    /// with the quota accounting of the change in the same Txn.
    async fn cas_put(&self, obj: Object, stored: &Object, mod_revision: i64) -> Result<Object> {
        let (rev, written) = self.write_existing(stored, mod_revision, Some(obj)).await?;
        let mut obj = written.expect("a put writes an object");
        obj.metadata_mut().resource_version = rev.to_string();
        Ok(obj)
    }
}

fn compare(key: &str, target: CompareTarget) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target,
        key: key.as_bytes().to_vec(),
        range_end: vec![],
    }
}

fn put_op(key: &str, obj: &Object) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: stored_bytes(obj),
        ..Default::default()
    })
}

/// The stored form: the kind's message without resourceVersion (that is the key's revision).
fn stored_bytes(obj: &Object) -> Vec<u8> {
    let mut o = obj.clone();
    o.metadata_mut().resource_version.clear();
    o.encode_to_vec()
}

fn decode(rt: &ResourceType, kv: &KeyValue) -> Result<Object> {
    let mut obj = rt.decode(&kv.value).map_err(|e| ApiError::Corrupt {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason: e.to_string(),
    })?;
    obj.metadata_mut().resource_version = kv.mod_revision.to_string();
    Ok(obj)
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::NotFound {
        resource: rt.plural.to_string(),
        name: name.to_string(),
    }
}

fn conflict(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::Conflict {
        resource: rt.plural.to_string(),
        name: name.to_string(),
    }
}

fn expired(requested: i64) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::Compacted { compact_revision } => ApiError::Expired {
            requested,
            compacted: compact_revision,
        },
        e => e.into(),
    }
}

// ------------------------------------------------------------------ request checks

fn resource_type(resource: &str) -> Result<&'static ResourceType> {
    RESOURCE_TYPES
        .iter()
        .find(|t| t.plural == resource)
        .ok_or_else(|| ApiError::InvalidArgument {
            field: "resource",
            reason: format!("unknown resource {resource:?} (expected a lowercase plural such as \"pods\")"),
        })
}

fn object_of(o: Option<apiv1::Object>) -> Result<Object> {
    o.and_then(|o| o.kind).ok_or(ApiError::InvalidArgument {
        field: "object",
        reason: "required (an Object with one kind set)".into(),
    })
}

/// The namespace a request names for a kind: namespaced kinds default to "default",
/// cluster-scoped kinds take none.
fn namespace_for(rt: &ResourceType, ns: &str) -> Result<String> {
    match (rt.namespaced, ns.is_empty()) {
        (true, true) => Ok("default".into()),
        (true, false) => Ok(ns.into()),
        (false, true) => Ok(String::new()),
        (false, false) => Err(ApiError::InvalidArgument {
            field: "metadata.namespace",
            reason: format!(
                "{} is cluster-scoped and takes no namespace (got {ns:?})",
                rt.kind
            ),
        }),
    }
}

/// Sets metadata.namespace from the request's, refusing a mismatch.
fn resolve_namespace(obj: &mut Object, request_ns: &str) -> Result<()> {
    let rt = obj.resource_type();
    let meta = obj.metadata_mut();
    if !request_ns.is_empty() && !meta.namespace.is_empty() && request_ns != meta.namespace {
        return Err(ApiError::InvalidArgument {
            field: "metadata.namespace",
            reason: format!(
                "{:?} does not match the request's namespace {request_ns:?}",
                meta.namespace
            ),
        });
    }
    let ns = if meta.namespace.is_empty() {
        request_ns
    } else {
        &meta.namespace
    };
    meta.namespace = namespace_for(rt, ns)?;
    Ok(())
}

/// Defaults, then validation (Invalid names every field path).
fn admit(obj: &mut Object) -> Result<()> {
    defaults::apply(obj);
    validate::validate(obj)
        .map_err(|e| ApiError::Invalid(e.to_status(obj.resource_type(), obj.name()).message))
}

fn parse_patch(req: &apiv1::PatchRequest) -> Result<Patch> {
    let ty = apiv1::PatchType::try_from(req.patch_type).map_err(|_| ApiError::InvalidArgument {
        field: "patchType",
        reason: format!("unknown patch type {}", req.patch_type),
    })?;
    let parsed = match ty {
        apiv1::PatchType::Unspecified | apiv1::PatchType::Merge => Patch::merge(&req.patch),
        apiv1::PatchType::Json => Patch::json(&req.patch),
        apiv1::PatchType::StrategicMerge => Patch::strategic(&req.patch),
    };
    parsed.map_err(|e| ApiError::Invalid(format!("{}: {}", e.path, e.reason)))
}

fn terminating(ns: &Object) -> bool {
    let marked = ns.metadata().is_some_and(|m| !m.deletion_timestamp.is_empty());
    let phase = match ns {
        Object::Namespace(n) => n.status.as_ref().is_some_and(|s| s.phase == "Terminating"),
        _ => false,
    };
    marked || phase
}

// ------------------------------------------------------------------ server-set fields

/// Fills what the server sets on a new object: name from generateName, uid,
/// creationTimestamp, generation 1; clears what a client may not set.
fn prepare_new(obj: &mut Object) {
    let meta = obj.metadata_mut();
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        meta.name = format!("{}{}", meta.generate_name, name_suffix());
    }
    meta.uid = new_uid();
    meta.creation_timestamp = now_rfc3339();
    meta.generation = 1;
    meta.resource_version.clear();
    meta.deletion_timestamp.clear();
    meta.deletion_grace_period_seconds = None;
    if let Object::Namespace(n) = obj {
        let status = n.status.get_or_insert_with(Default::default);
        if status.phase.is_empty() {
            status.phase = "Active".into();
        }
    }
}

fn name_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..NAME_SUFFIX_LEN)
        .map(|_| NAME_SUFFIX_ALPHABET[rng.gen_range(0..NAME_SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// A random (version 4) UUID.
fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-05-01T10:00:00Z`).
fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ------------------------------------------------------------------ merge rules (JSON level)

fn json_map(obj: &Object) -> serde_json::Map<String, Value> {
    match obj.to_json_value() {
        Value::Object(m) => m,
        other => unreachable!("objects serialize as JSON objects, got {other}"),
    }
}

/// `obj` with the `status` of `from` (or none when `from` has none).
fn with_status_of(obj: &Object, from: &Object) -> Result<Object> {
    let mut m = json_map(obj);
    match json_map(from).remove("status") {
        Some(s) => m.insert("status".into(), s),
        None => m.remove("status"),
    };
    Object::from_value(Value::Object(m)).map_err(|e| ApiError::Invalid(e.to_string()))
}

/// Everything but metadata and status: what a generation counts changes of.
fn body(obj: &Object) -> serde_json::Map<String, Value> {
    let mut m = json_map(obj);
    m.remove("metadata");
    m.remove("status");
    m
}

/// The object an Update stores: the request's, with server-owned fields from `stored`.
fn merge_update(stored: &Object, new: &Object) -> Result<Object> {
    let old = stored.metadata().cloned().unwrap_or_default();
    let uid = &new.metadata().map_or("", |m| m.uid.as_str()).to_string();
    if !uid.is_empty() && *uid != old.uid {
        return Err(ApiError::Invalid(format!(
            "{} \"{}\" is invalid: metadata.uid: Invalid value: {uid:?}: field is immutable",
            stored.kind_name(),
            stored.name()
        )));
    }
    let mut next = with_status_of(new, stored)?;
    keep_cluster_ip(stored, &mut next)?;
    let bump = body(stored) != body(&next);
    let meta = next.metadata_mut();
    meta.uid = old.uid;
    meta.creation_timestamp = old.creation_timestamp;
    meta.deletion_timestamp = old.deletion_timestamp;
    meta.deletion_grace_period_seconds = old.deletion_grace_period_seconds;
    meta.generation = old.generation + i64::from(bump);
    meta.resource_version.clear();
    Ok(next)
}

/// A Service's ClusterIP is immutable: an update that leaves it out keeps the allocated one
/// (as an apply of the same manifest again must); one that names another is Invalid.
fn keep_cluster_ip(stored: &Object, next: &mut Object) -> Result<()> {
    let (Object::Service(old), Object::Service(new)) = (stored, next) else {
        return Ok(());
    };
    let Some(old_spec) = old.spec.as_ref() else {
        return Ok(());
    };
    let spec = new.spec.get_or_insert_with(Default::default);
    if spec.r#type == "ExternalName" {
        // An ExternalName service has no address; the one held is released by the write.
        spec.cluster_ip.clear();
        spec.cluster_ips.clear();
        return Ok(());
    }
    if old_spec.cluster_ip.is_empty() || old_spec.r#type == "ExternalName" {
        return Ok(());
    }
    if spec.cluster_ip.is_empty() {
        spec.cluster_ip = old_spec.cluster_ip.clone();
        if spec.cluster_ips.is_empty() {
            spec.cluster_ips = old_spec.cluster_ips.clone();
        }
        return Ok(());
    }
    if spec.cluster_ip != old_spec.cluster_ip {
        return Err(ApiError::Invalid(format!(
            "Service \"{}\" is invalid: spec.clusterIP: Invalid value: {:?}: field is immutable",
            stored.name(),
            spec.cluster_ip
        )));
    }
    Ok(())
}

/// Apply: finalizers and ownerReferences the applied object does not state stay as stored
/// (controllers set them; a manifest rarely does).
fn keep_controller_metadata(mut obj: Object, stored: &Object) -> Object {
    let Some(old) = stored.metadata() else { return obj };
    let meta = obj.metadata_mut();
    if meta.finalizers.is_empty() {
        meta.finalizers = old.finalizers.clone();
    }
    if meta.owner_references.is_empty() {
        meta.owner_references = old.owner_references.clone();
    }
    obj
}

/// An update's resourceVersion precondition: empty means unconditional.
fn check_resource_version(obj: &Object, kv: &KeyValue) -> Result<()> {
    let rv = obj.metadata().map_or("", |m| m.resource_version.as_str());
    if rv.is_empty() || rv == kv.mod_revision.to_string() {
        Ok(())
    } else {
        Err(conflict(obj.resource_type(), obj.name()))
    }
}

// ------------------------------------------------------------------ operations

/// What an update replaces: spec and metadata (Update) or status (UpdateStatus).
#[derive(Clone, Copy, Debug)]
enum Part {
    Spec,
    Status,
}

impl ResourcesService {
    /// Create (also used by Apply and at startup for the `default` namespace): defaults,
    /// validation, LimitRange admission, then one Txn with the namespace and quota compares
    /// and the quota charges.
    pub(crate) async fn create_object(
        &self,
        mut obj: Object,
        request_ns: &str,
        dry_run: bool,
    ) -> Result<Object> {
        resolve_namespace(&mut obj, request_ns)?;
        prepare_new(&mut obj);
        admit(&mut obj)?;
        let key = obj.key();
        for _ in 0..write::CONTENDED_WRITE_ATTEMPTS {
            // The namespace read is linearizable; the LimitRange and quota reads after it are
            // local, and the Txn's compares catch whatever changed since.
            let ns_guard = self.namespace_guard(&obj).await?;
            let mut candidate = obj.clone();
            self.admit_limit_ranges(&mut candidate)?;
            if dry_run {
                self.quota_check_only(&key, &candidate)?;
                return Ok(candidate);
            }
            let outcome = self
                .write_once(
                    &key,
                    write::Expect::Absent,
                    ns_guard.into_iter().collect(),
                    None,
                    Some(candidate),
                )
                .await?;
            match outcome {
                write::Outcome::Written(rev, written) => {
                    let mut written = *written.expect("a create writes an object");
                    written.metadata_mut().resource_version = rev.to_string();
                    return Ok(written);
                }
                write::Outcome::Lost => {
                    return Err(ApiError::AlreadyExists {
                        resource: obj.resource_type().plural.into(),
                        name: obj.name().into(),
                    })
                }
                // The namespace or a quota changed between the reads and the write.
                write::Outcome::Raced => {}
            }
        }
        Err(conflict(obj.resource_type(), obj.name()))
    }

    /// NamespaceLifecycle: a namespaced object's Namespace must exist and not be terminating;
    /// the returned compare makes the write fail if the Namespace changes meanwhile.
    async fn namespace_guard(&self, obj: &Object) -> Result<Option<Compare>> {
        let rt = obj.resource_type();
        if !rt.namespaced {
            return Ok(None);
        }
        let ns = obj.namespace();
        let nst = &RESOURCE_TYPES[0];
        let key = nst.key("", ns);
        let kv = self.read_key(&key).await?.ok_or_else(|| not_found(nst, ns))?;
        if terminating(&decode(nst, &kv)?) {
            return Err(ApiError::Forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.plural,
                obj.name()
            )));
        }
        Ok(Some(compare(&key, CompareTarget::ModRevision(kv.mod_revision))))
    }

    async fn get_object(&self, req: apiv1::GetRequest) -> Result<Object> {
        let rt = resource_type(&req.resource)?;
        let ns = namespace_for(rt, &req.namespace)?;
        Ok(self.read_object(rt, &rt.key(&ns, &req.name), &req.name).await?.0)
    }

    /// Update or UpdateStatus. Without a resourceVersion the update is unconditional: a race
    /// lost to another writer is retried on the fresh object (as Kubernetes' GuaranteedUpdate).
    async fn update_object(&self, mut obj: Object, part: Part, dry_run: bool) -> Result<Object> {
        resolve_namespace(&mut obj, "")?;
        let unconditional = obj.metadata().is_none_or(|m| m.resource_version.is_empty());
        let mut attempt = 1;
        loop {
            match self.update_once(&obj, part, dry_run).await {
                Err(ApiError::Conflict { .. }) if unconditional && attempt < WRITE_ATTEMPTS => attempt += 1,
                r => return r,
            }
        }
    }

    async fn update_once(&self, obj: &Object, part: Part, dry_run: bool) -> Result<Object> {
        let rt = obj.resource_type();
        let (stored, kv) = self.read_object(rt, &obj.key(), obj.name()).await?;
        check_resource_version(obj, &kv)?;
        let mut next = match part {
            Part::Spec => merge_update(&stored, obj)?,
            Part::Status => with_status_of(&stored, obj)?,
        };
        admit(&mut next)?;
        self.write_if_changed(next, stored, &kv, dry_run).await
    }

    async fn write_if_changed(
        &self,
        next: Object,
        stored: Object,
        kv: &KeyValue,
        dry_run: bool,
    ) -> Result<Object> {
        if stored_bytes(&next) == kv.value {
            return Ok(stored);
        }
        if dry_run {
            return Ok(next);
        }
        if deletion_complete(&next) {
            self.remove(&next, kv).await?;
            return Ok(next);
        }
        self.cas_put(next, &stored, kv.mod_revision).await
    }

    /// Create when absent, else an Update whose precondition is the stored resourceVersion
    /// (or the request's, when it names one); a create or update race lost is retried.
    async fn apply_object(&self, mut obj: Object, dry_run: bool) -> Result<Object> {
        resolve_namespace(&mut obj, "")?;
        let mut attempt = 1;
        loop {
            let r = match self.read_key(&obj.key()).await? {
                None => self.create_object(obj.clone(), "", dry_run).await,
                Some(kv) => {
                    let applied = keep_controller_metadata(obj.clone(), &decode(obj.resource_type(), &kv)?);
                    self.update_object(applied, Part::Spec, dry_run).await
                }
            };
            match r {
                Err(ApiError::AlreadyExists { .. }) if attempt < WRITE_ATTEMPTS => attempt += 1,
                r => return r,
            }
        }
    }

    /// Patch: read, patch the JSON form, default, validate, compare-and-swap. A race lost to
    /// another writer is retried on the fresh object unless the patch states a resourceVersion.
    async fn patch_object(&self, req: apiv1::PatchRequest) -> Result<Object> {
        let rt = resource_type(&req.resource)?;
        let ns = namespace_for(rt, &req.namespace)?;
        let patch = parse_patch(&req)?;
        let part = match req.subresource.as_str() {
            "" => Part::Spec,
            "status" => Part::Status,
            other => {
                return Err(ApiError::InvalidArgument {
                    field: "subresource",
                    reason: format!("{other:?}: must be \"\" or \"status\""),
                })
            }
        };
        let key = rt.key(&ns, &req.name);
        let retry = !patch.sets_resource_version();
        let mut attempt = 1;
        loop {
            match self
                .patch_once(rt, &key, &req.name, &patch, part, req.dry_run)
                .await
            {
                Err(ApiError::Conflict { .. }) if retry && attempt < PATCH_ATTEMPTS => attempt += 1,
                r => return r,
            }
        }
    }

    async fn patch_once(
        &self,
        rt: &'static ResourceType,
        key: &str,
        name: &str,
        patch: &Patch,
        part: Part,
        dry_run: bool,
    ) -> Result<Object> {
        let (stored, kv) = self.read_object(rt, key, name).await?;
        let invalid = |path: &str, reason: &str| {
            ApiError::Invalid(format!("{} \"{name}\" is invalid: {path}: {reason}", rt.kind))
        };
        let json = patch
            .apply(stored.to_json_value())
            .map_err(|e| invalid(&e.path, &e.reason))?;
        let patched = Object::from_value(json).map_err(|e| invalid(&e.path, &e.message))?;
        if patched.resource_type().kind != rt.kind {
            return Err(invalid("kind", "may not be changed"));
        }
        if patched.name() != stored.name() {
            return Err(invalid("metadata.name", "field is immutable"));
        }
        if patched.namespace() != stored.namespace() {
            return Err(invalid("metadata.namespace", "field is immutable"));
        }
        check_resource_version(&patched, &kv)?;
        let mut next = match part {
            Part::Spec => merge_update(&stored, &patched)?,
            Part::Status => with_status_of(&stored, &patched)?,
        };
        admit(&mut next)?;
        self.write_if_changed(next, stored, &kv, dry_run).await
    }

    async fn delete_object(&self, req: apiv1::DeleteRequest) -> Result<apiv1::DeleteResponse> {
        let rt = resource_type(&req.resource)?;
        let ns = namespace_for(rt, &req.namespace)?;
        let opts = req.options.unwrap_or_default();
        let finalizer = propagation_finalizer(&opts.propagation_policy)?;
        let (stored, kv) = self.read_object(rt, &rt.key(&ns, &req.name), &req.name).await?;
        check_preconditions(&stored, opts.preconditions.as_ref())?;
        let grace = grace_period(&stored, opts.grace_period_seconds);
        let has_finalizers = stored.metadata().is_some_and(|m| !m.finalizers.is_empty());
        if has_finalizers || grace > 0 || finalizer.is_some() {
            let obj = self
                .mark_deleted(stored, &kv, grace, finalizer, opts.dry_run)
                .await?;
            return Ok(delete_response(obj, true));
        }
        if !opts.dry_run {
            self.remove(&stored, &kv).await?;
        }
        Ok(delete_response(stored, false))
    }

    /// Sets deletionTimestamp (once) and the grace period, and the propagation policy's
    /// finalizer (replacing the other policy's); the object stays.
    async fn mark_deleted(
        &self,
        stored: Object,
        kv: &KeyValue,
        grace: i64,
        finalizer: Option<&str>,
        dry_run: bool,
    ) -> Result<Object> {
        let mut next = stored.clone();
        let meta = next.metadata_mut();
        if meta.deletion_timestamp.is_empty() {
            meta.deletion_timestamp = now_rfc3339();
            meta.deletion_grace_period_seconds = Some(grace);
        }
        if let Some(f) = finalizer {
            meta.finalizers
                .retain(|x| !(POLICY_FINALIZERS.contains(&x.as_str()) && x != f));
            if !meta.finalizers.iter().any(|x| x == f) {
                meta.finalizers.push(f.to_string());
            }
        }
        if next == stored {
            return Ok(stored);
        }
        if dry_run {
            return Ok(next);
        }
        self.cas_put(next, &stored, kv.mod_revision).await
    }

    /// Deletes the object if its key is still at the revision read, releasing its quota usage
    /// in the same Txn.
    async fn remove(&self, stored: &Object, kv: &KeyValue) -> Result<()> {
        self.write_existing(stored, kv.mod_revision, None).await.map(drop)
    }
}

/// An object marked for deletion whose last finalizer is gone and that has no grace period
/// left to wait: the write that got it there deletes it instead (as in Kubernetes).
fn deletion_complete(obj: &Object) -> bool {
    obj.metadata().is_some_and(|m| {
        !m.deletion_timestamp.is_empty()
            && m.finalizers.is_empty()
            && m.deletion_grace_period_seconds.unwrap_or(0) == 0
    })
}

fn delete_response(obj: Object, pending: bool) -> apiv1::DeleteResponse {
    apiv1::DeleteResponse {
        object: Some(obj.into()),
        pending,
    }
}

use berth_proto::finalizers::{FOREGROUND_DELETION, ORPHAN};
/// The finalizers that carry a deletion's propagation policy to the garbage collector.
const POLICY_FINALIZERS: [&str; 2] = [FOREGROUND_DELETION, ORPHAN];

/// The finalizer a propagationPolicy adds, as Kubernetes: Foreground keeps the owner (marked)
/// until the garbage collector has deleted its blocking dependents; Orphan until it has removed
/// the owner's ownerReferences from the dependents; Background (the default) deletes the owner
/// now and leaves the dependents to the collector.
fn propagation_finalizer(p: &str) -> Result<Option<&'static str>> {
    match p {
        "" | "Background" => Ok(None),
        "Foreground" => Ok(Some(FOREGROUND_DELETION)),
        "Orphan" => Ok(Some(ORPHAN)),
        other => Err(ApiError::InvalidArgument {
            field: "options.propagationPolicy",
            reason: format!("{other:?}: must be Orphan, Background or Foreground"),
        }),
    }
}

fn check_preconditions(stored: &Object, p: Option<&apiv1::Preconditions>) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    let meta = stored.metadata().cloned().unwrap_or_default();
    if let Some(uid) = p.uid.as_deref().filter(|u| *u != meta.uid) {
        return Err(ApiError::Precondition(format!(
            "UID in precondition: {uid}, UID in object meta: {}",
            meta.uid
        )));
    }
    if let Some(rv) = p
        .resource_version
        .as_deref()
        .filter(|r| *r != meta.resource_version)
    {
        return Err(ApiError::Precondition(format!(
            "ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            meta.resource_version
        )));
    }
    Ok(())
}

/// Seconds a deletion waits: Pods bound to a node get the request's or their own
/// terminationGracePeriodSeconds (default 30); everything else, and unscheduled pods, 0.
fn grace_period(obj: &Object, requested: Option<i64>) -> i64 {
    let Object::Pod(pod) = obj else { return 0 };
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.node_name.is_empty() {
        return 0;
    }
    requested
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0)
}

// ------------------------------------------------------------------ list

/// What a List or Watch keeps: label and field selectors.
struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    fn new(rt: &ResourceType, opts: &apiv1::ListOptions) -> Result<Filter> {
        let labels = Selector::parse(&opts.label_selector).map_err(|reason| ApiError::InvalidArgument {
            field: "labelSelector",
            reason,
        })?;
        let fields =
            FieldSelector::parse(&opts.field_selector).map_err(|reason| ApiError::InvalidArgument {
                field: "fieldSelector",
                reason,
            })?;
        fields
            .check_fields(rt.kind)
            .map_err(|reason| ApiError::InvalidArgument {
                field: "fieldSelector",
                reason,
            })?;
        Ok(Filter { labels, fields })
    }

    fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, obj: &Object) -> bool {
        let empty = Default::default();
        let labels = obj.metadata().map_or(&empty, |m| &m.labels);
        self.labels.matches(labels) && self.fields.matches(obj)
    }
}

fn parse_revision(field: &'static str, s: &str) -> Result<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::InvalidArgument {
            field,
            reason: format!("{s:?} is not a resource version"),
        })
}

/// A continue token: `<revision>/<last key>`.
fn continue_token(revision: i64, last_key: &[u8]) -> String {
    format!("{revision}/{}", String::from_utf8_lossy(last_key))
}

/// (revision, first key) of the page after the one `token` ended.
fn parse_continue(token: &str, prefix: &str) -> Result<(i64, Vec<u8>)> {
    let bad = || ApiError::InvalidArgument {
        field: "continue",
        reason: "not a continue token of this list".into(),
    };
    let (rev, key) = token.split_once('/').ok_or_else(bad)?;
    let rev = rev.parse::<i64>().map_err(|_| bad())?;
    if !key.starts_with(prefix) {
        return Err(bad());
    }
    let mut start = format!("/{key}").into_bytes();
    start.push(0);
    Ok((rev, start))
}

impl ResourcesService {
    async fn list_objects(&self, req: apiv1::ListRequest) -> Result<apiv1::ListResponse> {
        let rt = resource_type(&req.resource)?;
        let opts = req.options.unwrap_or_default();
        let filter = Filter::new(rt, &opts)?;
        let prefix = rt.key_prefix(&req.namespace);
        let (rev, start) = list_start(&opts, &prefix)?;
        if rev == 0 {
            self.linearizable().await?;
        }
        let resp = self
            .shared
            .raft
            .store()
            .range(&RangeRequest {
                key: start,
                range_end: prefix_range_end(prefix.as_bytes()),
                limit: opts.limit.max(0),
                revision: rev,
                ..Default::default()
            })
            .map_err(expired(rev))?;
        let list_rev = if rev == 0 { resp.revision } else { rev };
        page(rt, &filter, &resp, list_rev)
    }
}

/// (revision to read at, 0 = now; first key) of a List: its continue token's, or its own.
fn list_start(opts: &apiv1::ListOptions, prefix: &str) -> Result<(i64, Vec<u8>)> {
    if !opts.continue_token.is_empty() {
        return parse_continue(&opts.continue_token, prefix.trim_start_matches('/'));
    }
    let rev = match opts.resource_version.as_str() {
        "" | "0" => 0,
        rv => parse_revision("resourceVersion", rv)?,
    };
    Ok((rev, prefix.as_bytes().to_vec()))
}

/// One page: the matching objects, and a continue token when the range had more keys.
fn page(
    rt: &ResourceType,
    filter: &Filter,
    resp: &RangeResponse,
    list_rev: i64,
) -> Result<apiv1::ListResponse> {
    let next = match resp.kvs.last() {
        Some(kv) if resp.more => continue_token(list_rev, kv.key.strip_prefix(b"/").unwrap_or(&kv.key)),
        _ => String::new(),
    };
    let mut items = Vec::new();
    for kv in &resp.kvs {
        let obj = decode(rt, kv)?;
        if filter.matches(&obj) {
            items.push(obj.into());
        }
    }
    Ok(apiv1::ListResponse {
        items,
        metadata: Some(metav1::ListMeta {
            resource_version: list_rev.to_string(),
            continue_token: next,
            remaining_item_count: None,
        }),
    })
}

// ------------------------------------------------------------------ watch

type WatchItem = Result<apiv1::WatchEvent, Status>;
/// Events are queued boxed: a queue slot then costs a pointer, not the size of the largest
/// kind's message (the Object oneof holds it inline, ~2 KB), which with 32-slot queue blocks
/// would keep ~60 KB per watcher resident once the slots have been used.
type EventSender = mpsc::Sender<Box<apiv1::WatchEvent>>;

/// A watch ready to run: the initial ADDED events, then the store watcher.
struct WatchPlan {
    rt: &'static ResourceType,
    filter: Filter,
    initial: Vec<apiv1::WatchEvent>,
    watcher: berth_store::Watcher,
    bookmarks: bool,
}

fn event(ty: EventType, obj: Option<Object>, revision: i64) -> apiv1::WatchEvent {
    apiv1::WatchEvent {
        r#type: ty as i32,
        object: obj.map(Into::into),
        status: None,
        resource_version: revision.to_string(),
    }
}

/// Which object a watcher with some selectors sees of one change, and as what.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
enum Seen {
    /// The object after the change, as ADDED or MODIFIED.
    New(EventType),
    /// The object before the change, as DELETED (it was deleted or stopped matching).
    OldDeleted,
}

/// Classifies a change (`version` is the key's version after a put, `new` the object after
/// it, None for a delete; `old` the object before it) through `filter`: objects that stop
/// matching are DELETED, those that start matching ADDED. `old` is only looked at when the
/// filter selects something, or for deletes.
fn classify(filter: &Filter, version: i64, new: Option<&Object>, old: Option<&Object>) -> Option<Seen> {
    let put_type = |added: bool| {
        if added {
            EventType::Added
        } else {
            EventType::Modified
        }
    };
    if filter.is_everything() && new.is_some() {
        return Some(Seen::New(put_type(version == 1)));
    }
    let old_matched = old.is_some_and(|o| filter.matches(o));
    match new {
        Some(n) if filter.matches(n) => Some(Seen::New(put_type(
            version == 1 || (old.is_some() && !old_matched),
        ))),
        _ if old_matched => Some(Seen::OldDeleted),
        _ => None,
    }
}

/// The object a DELETED event carries: the last state, at the deleting revision.
fn deleted_at(mut old: Object, rev: i64) -> Object {
    old.metadata_mut().resource_version = rev.to_string();
    old
}

/// A store event as the watcher sees it through its selectors (see [`classify`]).
fn translate(
    rt: &ResourceType,
    filter: &Filter,
    ev: &berth_store::Event,
) -> Result<Option<apiv1::WatchEvent>> {
    let rev = ev.kv.mod_revision;
    let new = match ev.kind {
        EventKind::Put => Some(decode(rt, &ev.kv)?),
        EventKind::Delete => None,
    };
    // Without selectors a put needs no previous object (every object matches): decoding it
    // for each of many watchers of a busy prefix would double the work of the fan-out.
    let old = if filter.is_everything() && new.is_some() {
        None
    } else {
        ev.prev_kv.as_ref().map(|kv| decode(rt, kv)).transpose()?
    };
    Ok(
        match classify(filter, ev.kv.version, new.as_ref(), old.as_ref()) {
            Some(Seen::New(ty)) => Some(event(ty, new, rev)),
            Some(Seen::OldDeleted) => {
                let o = old.expect("classified as deleted implies an old object");
                Some(event(EventType::Deleted, Some(deleted_at(o, rev)), rev))
            }
            None => None,
        },
    )
}

impl ResourcesService {
    async fn plan_watch(&self, req: apiv1::WatchRequest) -> Result<WatchPlan> {
        let rt = resource_type(&req.resource)?;
        let opts = req.options.unwrap_or_default();
        let filter = Filter::new(rt, &opts)?;
        let prefix = rt.key_prefix(&req.namespace);
        let (mut initial, from) = match opts.resource_version.as_str() {
            "" | "0" => self.initial_events(rt, &filter, &prefix).await?,
            rv => (Vec::new(), parse_revision("resourceVersion", rv)?),
        };
        if opts.allow_watch_bookmarks && !initial.is_empty() {
            // Tells the client the revision the initial ADDED events were read at.
            initial.push(event(EventType::Bookmark, None, from));
        }
        let watcher = self
            .shared
            .raft
            .store()
            .watch(berth_store::WatchRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_range_end(prefix.as_bytes()),
                start_revision: from + 1,
                prev_kv: true,
                ..Default::default()
            })
            .map_err(expired(from))?;
        Ok(WatchPlan {
            rt,
            filter,
            initial,
            watcher,
            bookmarks: opts.allow_watch_bookmarks,
        })
    }

    /// ADDED for every current matching object, and the revision they were read at.
    async fn initial_events(
        &self,
        rt: &ResourceType,
        filter: &Filter,
        prefix: &str,
    ) -> Result<(Vec<apiv1::WatchEvent>, i64)> {
        self.linearizable().await?;
        let resp = self.range(&RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_range_end(prefix.as_bytes()),
            ..Default::default()
        })?;
        let mut events = Vec::new();
        for kv in &resp.kvs {
            let obj = decode(rt, kv)?;
            if filter.matches(&obj) {
                events.push(event(EventType::Added, Some(obj), kv.mod_revision));
            }
        }
        Ok((events, resp.revision))
    }
}

/// Queues one event; Ok(false) once the client has gone; SlowClient when the queue stayed full
/// for [`SLOW_CLIENT_TIMEOUT`].
async fn send(tx: &EventSender, ev: apiv1::WatchEvent) -> Result<bool> {
    send_within(tx, ev, SLOW_CLIENT_TIMEOUT).await
}

async fn send_within<T>(tx: &mpsc::Sender<Box<T>>, ev: T, patience: Duration) -> Result<bool> {
    match tokio::time::timeout(patience, tx.send(Box::new(ev))).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => Err(ApiError::SlowClient(tx.max_capacity())),
    }
}

/// Runs a watch until the client goes or it fails; a failure ends the stream with its status
/// (after the events already queued).
async fn run_watch(shared: Arc<Shared>, plan: WatchPlan, tx: EventSender, end: oneshot::Sender<Status>) {
    if let Err(e) = forward(&shared, plan, &tx).await {
        let _ = end.send(e.into());
    }
}

async fn forward(shared: &Shared, plan: WatchPlan, tx: &EventSender) -> Result<()> {
    let WatchPlan {
        rt,
        filter,
        initial,
        mut watcher,
        bookmarks,
    } = plan;
    for ev in initial {
        if !send(tx, ev).await? {
            return Ok(());
        }
    }
    // The first bookmark comes after a random half to whole interval: watches opened together
    // (an informer fleet, a benchmark) then do not all ask for progress in the same instant.
    let first = BOOKMARK_INTERVAL.mul_f64(0.5 + rand::random::<f64>() / 2.0);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first, BOOKMARK_INTERVAL);
    let mut seen = 0;
    loop {
        let msg = tokio::select! {
            m = watcher.recv() => match m { Some(m) => m, None => return Ok(()) },
            _ = ticker.tick(), if bookmarks => {
                shared.raft.store().request_progress(watcher.id);
                continue;
            }
            _ = tx.closed() => return Ok(()),
        };
        let events = match msg {
            WatchMessage::Events { revision, events } => {
                seen = revision;
                events
                    .iter()
                    .map(|e| translate(rt, &filter, e))
                    .filter_map(Result::transpose)
                    .collect::<Result<Vec<_>>>()?
            }
            WatchMessage::Progress { revision } if bookmarks => {
                vec![event(EventType::Bookmark, None, revision)]
            }
            WatchMessage::Progress { .. } => continue,
            WatchMessage::Compacted { compact_revision } => {
                return Err(ApiError::Expired {
                    requested: seen,
                    compacted: compact_revision,
                })
            }
        };
        for ev in events {
            if !send(tx, ev).await? {
                return Ok(());
            }
        }
    }
}

// ------------------------------------------------------------------ the gRPC service

/// Creates the `default` Namespace unless it exists, retrying until the cluster can take the
/// write (run in the background at startup; idempotent on every member).
pub(crate) async fn ensure_default_namespace(shared: Arc<Shared>) {
    let svc = ResourcesService { shared };
    let ns = Object::Namespace(berth_proto::corev1::Namespace {
        metadata: Some(metav1::ObjectMeta {
            name: "default".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    loop {
        match svc.create_object(ns.clone(), "", false).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => return,
            Err(e) => tracing::debug!(error = %e, "creating namespace default; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

type WatchEventStream = Pin<Box<dyn Stream<Item = WatchItem> + Send + 'static>>;

#[tonic::async_trait]
impl Resources for ResourcesService {
    async fn create(&self, req: Request<apiv1::CreateRequest>) -> Result<Response<apiv1::Object>, Status> {
        let _t = self.shared.metrics.time("Resources.Create");
        let req = req.into_inner();
        let obj = self
            .create_object(object_of(req.object)?, &req.namespace, req.dry_run)
            .await?;
        Ok(Response::new(obj.into()))
    }

    async fn get(&self, req: Request<apiv1::GetRequest>) -> Result<Response<apiv1::Object>, Status> {
        let _t = self.shared.metrics.time("Resources.Get");
        Ok(Response::new(self.get_object(req.into_inner()).await?.into()))
    }

    async fn list(&self, req: Request<apiv1::ListRequest>) -> Result<Response<apiv1::ListResponse>, Status> {
        let _t = self.shared.metrics.time("Resources.List");
        Ok(Response::new(self.list_objects(req.into_inner()).await?))
    }

    async fn update(&self, req: Request<apiv1::UpdateRequest>) -> Result<Response<apiv1::Object>, Status> {
        let _t = self.shared.metrics.time("Resources.Update");
        let req = req.into_inner();
        let obj = self
            .update_object(object_of(req.object)?, Part::Spec, req.dry_run)
            .await?;
        Ok(Response::new(obj.into()))
    }

    async fn update_status(
        &self,
        req: Request<apiv1::UpdateRequest>,
    ) -> Result<Response<apiv1::Object>, Status> {
        let _t = self.shared.metrics.time("Resources.UpdateStatus");
        let req = req.into_inner();
        let obj = self
            .update_object(object_of(req.object)?, Part::Status, req.dry_run)
            .await?;
        Ok(Response::new(obj.into()))
    }

    async fn patch(&self, req: Request<apiv1::PatchRequest>) -> Result<Response<apiv1::Object>, Status> {
        let _t = self.shared.metrics.time("Resources.Patch");
        Ok(Response::new(self.patch_object(req.into_inner()).await?.into()))
    }

    async fn delete(
        &self,
        req: Request<apiv1::DeleteRequest>,
    ) -> Result<Response<apiv1::DeleteResponse>, Status> {
        let _t = self.shared.metrics.time("Resources.Delete");
        Ok(Response::new(self.delete_object(req.into_inner()).await?))
    }

    type WatchStream = WatchEventStream;

    async fn watch(&self, req: Request<apiv1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let plan = self.plan_watch(req.into_inner()).await?;
        let (tx, rx) = mpsc::channel(WATCH_EVENT_QUEUE_LEN);
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        tokio::spawn(run_watch(self.shared.clone(), plan, tx, end_tx));
        let tail = futures::stream::once(end_rx).filter_map(|r| futures::future::ready(r.ok().map(Err)));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|ev| Ok(*ev)).chain(tail),
        )))
    }

    type WatchManyStream =
        Pin<Box<dyn Stream<Item = Result<apiv1::WatchManyResponse, Status>> + Send + 'static>>;

    async fn watch_many(
        &self,
        req: Request<tonic::Streaming<apiv1::WatchManyRequest>>,
    ) -> Result<Response<Self::WatchManyStream>, Status> {
        let (tx, rx) = mpsc::channel(WATCH_MANY_QUEUE_LEN);
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        tokio::spawn(watch_many::run(self.shared.clone(), req.into_inner(), tx, end_tx));
        let tail = futures::stream::once(end_rx).filter_map(|r| futures::future::ready(r.ok().map(Err)));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|r| Ok(*r)).chain(tail),
        )))
    }

    async fn apply(&self, req: Request<apiv1::ApplyRequest>) -> Result<Response<apiv1::Object>, Status> {
        let _t = self.shared.metrics.time("Resources.Apply");
        let req = req.into_inner();
        let obj = self.apply_object(object_of(req.object)?, req.dry_run).await?;
        Ok(Response::new(obj.into()))
    }

    async fn bind(&self, req: Request<apiv1::BindRequest>) -> Result<Response<apiv1::BindResponse>, Status> {
        let _t = self.shared.metrics.time("Resources.Bind");
        Ok(Response::new(self.bind_pods(req.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        validate::rfc3339(&now_rfc3339()).unwrap();
    }

    #[test]
    fn uids_are_v4() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let tok = continue_token(42, b"registry/pods/default/web");
        let (rev, start) = parse_continue(&tok, "registry/pods/").unwrap();
        assert_eq!(rev, 42);
        assert_eq!(start, b"/registry/pods/default/web\0".to_vec());
        assert!(parse_continue(&tok, "registry/services/").is_err());
    }

    fn pod_kv(app: &str, version: i64, mod_revision: i64) -> KeyValue {
        let mut pod = Object::Pod(Default::default());
        pod.metadata_mut().name = "p".into();
        pod.metadata_mut().labels.insert("app".into(), app.into());
        KeyValue {
            key: b"/registry/pods/default/p".to_vec(),
            create_revision: mod_revision - version + 1,
            mod_revision,
            version,
            value: stored_bytes(&pod),
            lease: 0,
        }
    }

    /// Selectors see objects enter (ADDED) and leave (DELETED) the watched set.
    #[test]
    fn watch_events_follow_the_selector() {
        let rt = resource_type("pods").unwrap();
        let opts = apiv1::ListOptions {
            label_selector: "app=web".into(),
            ..Default::default()
        };
        let filter = Filter::new(rt, &opts).unwrap();
        let put = |kv: KeyValue, prev: Option<KeyValue>| berth_store::Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        };
        let ty = |ev: Option<apiv1::WatchEvent>| {
            ev.map(|e| (EventType::try_from(e.r#type).unwrap(), e.resource_version))
        };
        let t = |ev| ty(translate(rt, &filter, &ev).unwrap());
        assert_eq!(
            t(put(pod_kv("web", 1, 5), None)),
            Some((EventType::Added, "5".into()))
        );
        let modified = put(pod_kv("web", 2, 6), Some(pod_kv("web", 1, 5)));
        assert_eq!(t(modified), Some((EventType::Modified, "6".into())));
        let left = put(pod_kv("db", 3, 7), Some(pod_kv("web", 2, 6)));
        assert_eq!(t(left), Some((EventType::Deleted, "7".into())));
        let entered = put(pod_kv("web", 4, 8), Some(pod_kv("db", 3, 7)));
        assert_eq!(t(entered), Some((EventType::Added, "8".into())));
        assert_eq!(t(put(pod_kv("db", 1, 9), None)), None);
        let deleted = berth_store::Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: b"/registry/pods/default/p".to_vec(),
                mod_revision: 10,
                ..Default::default()
            },
            prev_kv: Some(pod_kv("web", 4, 8)),
        };
        let ev = translate(rt, &filter, &deleted).unwrap().unwrap();
        assert_eq!(EventType::try_from(ev.r#type).unwrap(), EventType::Deleted);
        let obj = Object::try_from(ev.object.unwrap()).unwrap();
        assert_eq!(
            (obj.name(), obj.metadata().unwrap().resource_version.as_str()),
            ("p", "10")
        );
    }

    /// A full queue that is not read cuts the client off instead of growing; a gone client
    /// just ends the watch.
    #[tokio::test]
    async fn slow_watch_clients_are_cut_off() {
        let (tx, mut rx) = mpsc::channel(2);
        let ev = || event(EventType::Bookmark, None, 1);
        let patience = Duration::from_millis(20);
        assert!(send_within(&tx, ev(), patience).await.unwrap());
        assert!(send_within(&tx, ev(), patience).await.unwrap());
        let err = send_within(&tx, ev(), patience).await.unwrap_err();
        assert!(matches!(err, ApiError::SlowClient(2)), "{err}");
        assert_eq!(Status::from(err).code(), tonic::Code::ResourceExhausted);
        rx.close();
        while rx.recv().await.is_some() {}
        assert!(!send_within(&tx, ev(), patience).await.unwrap());
    }

    #[test]
    fn namespaces_resolve() {
        let pods = resource_type("pods").unwrap();
        let nodes = resource_type("nodes").unwrap();
        assert_eq!(namespace_for(pods, "").unwrap(), "default");
        assert_eq!(namespace_for(nodes, "").unwrap(), "");
        assert!(namespace_for(nodes, "x").is_err());
        assert!(resource_type("pod").is_err());
    }
}
