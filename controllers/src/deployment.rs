//! Deployment controller: rolls a Deployment's pod template out through ReplicaSets.
//!
//! Each distinct template gets a ReplicaSet `<deployment>-<pod-template-hash>` (the hash of the
//! template, [`pod_template_hash`]), labelled and selected by `pod-template-hash` so the
//! ReplicaSets' pods never overlap. The ReplicaSet with the Deployment's template is the "new"
//! one; it carries revision `max(old revisions) + 1` in `deployment.kubernetes.io/revision`
//! (so a rollback to an old template moves that ReplicaSet to the newest revision). RollingUpdate
//! scales the new one up within `replicas + maxSurge` ([`scale_up_new`]) and old ones down while
//! at least `replicas - maxUnavailable` pods stay available ([`scale_down_old`]); Recreate scales
//! old ones to zero and waits for their pods to go before scaling up the new one. Old
//! ReplicaSets at zero beyond `revisionHistoryLimit` are deleted once the rollout completes.
//! Counts of available pods are `min(status.availableReplicas, spec.replicas)` per ReplicaSet, so
//! a ReplicaSet status that has not caught up with a scale-down never lets the Deployment count
//! pods that are about to go.

use crate::replicaset::{ignore_not_found, POD_TEMPLATE_HASH_LABEL};
use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::leader::Clock;
use berth_client::{ClientError, Informer, InformerEvent, ResourceClient};
use berth_proto::apiv1::DeleteOptions;
use berth_proto::appsv1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use berth_proto::corev1::PodTemplateSpec;
use berth_proto::metav1::{IntOrString, LabelSelector, ObjectMeta};
use berth_proto::selector::Selector;
use std::sync::Arc;
use std::time::Duration;

/// Annotation with the revision of a ReplicaSet (and of its Deployment).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Annotations with the Deployment's replicas (and replicas + maxSurge) when the controller last
/// sized a ReplicaSet: a Deployment whose replicas differ from them is being scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// Annotation `berth rollout history` shows as CHANGE-CAUSE.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// Longest wait before re-checking a rollout that is not complete (progress deadline).
pub const PROGRESS_RECHECK_MAX: Duration = Duration::from_secs(10);
/// Alphabet of generated name suffixes and template hashes (no vowels, no look-alikes), as
/// Kubernetes'.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of a template: FNV-1a (32 bit) of its JSON form and the collision
/// count, written as Kubernetes writes it (the decimal digits mapped onto a safe alphabet).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut t = template.clone();
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    let mut bytes = serde_json::to_vec(&t).expect("templates serialize");
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.to_string()
        .bytes()
        .map(|d| SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Templates equal but for the pod-template-hash label.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        let m = t.metadata.get_or_insert_with(Default::default);
        m.labels.remove(POD_TEMPLATE_HASH_LABEL);
        t
    };
    strip(a) == strip(b)
}

/// An int or a percentage of `total`, rounded up or down (Kubernetes'
/// GetScaledValueFromIntOrPercent).
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> Result<i32, String> {
    let Some(v) = v else { return Ok(0) };
    if let Some(i) = v.as_int() {
        return Ok(i);
    }
    let s = v.to_string();
    let p: i64 = s
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{s:?} is neither an integer nor a percentage"))?;
    let prod = p * i64::from(total);
    let v = if round_up {
        (prod + 99).div_euclid(100)
    } else {
        prod.div_euclid(100)
    };
    Ok(v as i32)
}

/// (maxSurge, maxUnavailable) as pod counts: surge rounds up, unavailable down; both zero would
/// block a rollout, so unavailable becomes 1 then (Kubernetes' ResolveFenceposts).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let surge = scaled_value(max_surge, desired, true).map_err(|e| format!("maxSurge: {e}"))?;
    let unavailable =
        scaled_value(max_unavailable, desired, false).map_err(|e| format!("maxUnavailable: {e}"))?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// The new ReplicaSet's next size in a rolling update: grow within `desired + max_surge` pods
/// across all ReplicaSets (`all_replicas` is the sum of their spec.replicas).
pub fn scale_up_new(desired: i32, new_replicas: i32, all_replicas: i32, max_surge: i32) -> i32 {
    if new_replicas >= desired {
        return desired;
    }
    let max_total = desired + max_surge;
    if all_replicas >= max_total {
        return new_replicas;
    }
    new_replicas + (max_total - all_replicas).min(desired - new_replicas)
}

/// spec.replicas and available pods of one ReplicaSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsCounts {
    pub replicas: i32,
    pub available: i32,
}

/// The next spec.replicas of each old ReplicaSet (oldest first) in a rolling update: first
/// shed their unavailable pods within the room left (`all - minAvailable - new unavailable`),
/// then available ones while more than `desired - max_unavailable` stay available
/// (Kubernetes' reconcileOldReplicaSets).
pub fn scale_down_old(desired: i32, max_unavailable: i32, new: RsCounts, old: &[RsCounts]) -> Vec<i32> {
    let avail = |c: &RsCounts| c.available.min(c.replicas).max(0);
    let mut next: Vec<i32> = old.iter().map(|c| c.replicas).collect();
    let all: i32 = new.replicas + next.iter().sum::<i32>();
    let min_available = desired - max_unavailable;
    let new_unavailable = new.replicas - avail(&new);
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return next;
    }
    let mut cleaned = 0;
    for (i, c) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = c.replicas - avail(c);
        if c.replicas == 0 || unhealthy <= 0 {
            continue;
        }
        let n = unhealthy.min(max_scaled_down - cleaned);
        next[i] -= n;
        cleaned += n;
    }
    let available: i32 = avail(&new) + old.iter().map(avail).sum::<i32>();
    if available <= min_available {
        return next;
    }
    let mut to_scale = available - min_available;
    for r in next.iter_mut() {
        if to_scale == 0 {
            break;
        }
        let n = (*r).min(to_scale);
        *r -= n;
        to_scale -= n;
    }
    next
}

/// One active ReplicaSet for proportional scaling: spec.replicas and its max-replicas
/// annotation (the Deployment's replicas + maxSurge when it was last sized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsShare {
    pub replicas: i32,
    pub annotated_max: Option<i32>,
}

/// New sizes of the active ReplicaSets when a Deployment is resized mid-rollout: the
/// difference between `desired + max_surge` and their sum is shared in proportion to their
/// sizes (each scaled by `(desired + max_surge) / annotated max`, `fallback_max` when not
/// annotated), the rounding leftover to the first one (Kubernetes' proportional scaling; the
/// caller orders them largest first, newer first when growing, older first when shrinking).
pub fn proportional_sizes(desired: i32, max_surge: i32, fallback_max: i32, rss: &[RsShare]) -> Vec<i32> {
    let allowed = desired + max_surge;
    let to_add = allowed - rss.iter().map(|r| r.replicas).sum::<i32>();
    let mut out: Vec<i32> = rss.iter().map(|r| r.replicas).collect();
    if to_add == 0 || rss.is_empty() {
        return out;
    }
    let mut added = 0;
    for (i, r) in rss.iter().enumerate() {
        if r.replicas == 0 || added == to_add {
            continue;
        }
        let fraction = if desired == 0 {
            -r.replicas
        } else {
            let max = r.annotated_max.unwrap_or(fallback_max).max(1);
            ((f64::from(r.replicas) * f64::from(allowed)) / f64::from(max)).round() as i32 - r.replicas
        };
        let left = to_add - added;
        let share = if to_add > 0 {
            fraction.min(left)
        } else {
            fraction.max(left)
        };
        out[i] += share;
        added += share;
    }
    out[0] = (out[0] + to_add - added).max(0);
    out
}

fn revision_of(m: &ObjectMeta) -> i64 {
    m.annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn counts(rs: &ReplicaSet) -> RsCounts {
    RsCounts {
        replicas: replicas_of(rs),
        available: rs.status.as_ref().map_or(0, |s| s.available_replicas),
    }
}

/// A Deployment's replicas, maxSurge and maxUnavailable in pods.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    desired: i32,
    surge: i32,
    unavailable: i32,
}

/// Whether an active ReplicaSet was sized for another replica count than `desired` (the
/// Deployment was resized since).
fn scaling_event(desired: i32, new_rs: &ReplicaSet, old: &[ReplicaSet]) -> bool {
    std::iter::once(new_rs)
        .chain(old.iter())
        .filter(|rs| replicas_of(rs) > 0)
        .any(|rs| {
            meta(rs)
                .annotations
                .get(DESIRED_REPLICAS_ANNOTATION)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != desired)
        })
}

pub struct DeploymentController {
    pub client: ResourceClient,
    pub deployments: Arc<Informer<Deployment>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub clock: Arc<dyn Clock>,
}

/// Keys of Deployments a ReplicaSet event concerns: its controller, or (orphans) the
/// Deployments that select it.
pub fn replicaset_event_keys(
    ev: &InformerEvent<ReplicaSet>,
    deployments: &Informer<Deployment>,
) -> Vec<String> {
    let rss: Vec<&ReplicaSet> = match ev {
        InformerEvent::Added(r) | InformerEvent::Deleted(r) => vec![r],
        InformerEvent::Updated { old, new } => vec![old, new],
    };
    let mut keys = Vec::new();
    for rs in rss {
        let m = meta(rs);
        match controller_ref(&m) {
            Some(r) if r.kind == "Deployment" => keys.push(join_key(&m.namespace, &r.name)),
            Some(_) => {}
            None => keys.extend(
                deployments
                    .by_namespace(&m.namespace)
                    .iter()
                    .filter(|d| selector_of(d).is_ok_and(|s| !s.is_empty() && s.matches(&m.labels)))
                    .map(key_of),
            ),
        }
    }
    keys.dedup();
    keys
}

fn selector_of(d: &Deployment) -> Result<Selector, String> {
    let ls = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    Selector::from_label_selector(&ls)
}

/// What one reconcile did, for the Progressing condition.
#[derive(Default)]
struct Progress {
    created: Option<String>,
    scaled: bool,
}

impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(mut d) = self.deployments.get(key) else {
            return Ok(Action::AwaitChange);
        };
        let m = meta(&d);
        if being_deleted(&m) {
            return Ok(Action::AwaitChange);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let selector = selector_of(&d).map_err(|e| Error::Invalid(format!("{key}: spec.selector: {e}")))?;
        if selector.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let template = spec.template.clone().unwrap_or_default();
        let mut owned = self.claim_replicasets(&d, &selector).await?;
        // Oldest revision first.
        owned.sort_by_key(|rs| (revision_of(&meta(rs)), meta(rs).creation_timestamp));
        let new_idx = owned.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| same_template(t, &template))
        });
        let mut new_rs = new_idx.map(|i| owned.remove(i));
        let old = owned;
        let max_old_revision = old.iter().map(|rs| revision_of(&meta(rs))).max().unwrap_or(0);
        let desired = spec.replicas.unwrap_or(1).max(0);
        let mut progress = Progress::default();

        if !spec.paused {
            new_rs = Some(match new_rs {
                Some(rs) => self.sync_revision(rs, max_old_revision).await?,
                None => {
                    let rs = self.create_new_replicaset(&d, &old, max_old_revision).await?;
                    progress.created = Some(meta(&rs).name);
                    rs
                }
            });
            let new_rs = new_rs.as_ref().expect("set above");
            d = self.annotate_deployment(d, revision_of(&meta(new_rs))).await?;
            let sizes = self.sizes(&d)?;
            let recreate = spec.strategy.as_ref().is_some_and(|s| s.r#type == "Recreate");
            progress.scaled = if recreate {
                self.recreate(&sizes, new_rs, &old).await?
            } else if scaling_event(desired, new_rs, &old) {
                self.scale_proportionally(&d, &sizes, new_rs, &old).await?
            } else {
                self.rolling(&sizes, new_rs, &old).await?
            };
        } else if let Some(new_rs) = new_rs.as_ref() {
            // Paused: no rollout, but a resize still applies (to the current template's sets).
            let recreate = spec.strategy.as_ref().is_some_and(|s| s.r#type == "Recreate");
            if !recreate && scaling_event(desired, new_rs, &old) {
                let sizes = self.sizes(&d)?;
                progress.scaled = self.scale_proportionally(&d, &sizes, new_rs, &old).await?;
            }
        }
        let status = self.status(&d, new_rs.as_ref(), &old, &progress)?;
        let complete = status.updated_replicas == desired
            && status.replicas == desired
            && status.available_replicas == desired;
        if complete && !spec.paused {
            self.cleanup(&d, &old).await?;
        }
        let recheck = self.progress_recheck(&spec, &status);
        if d.status.as_ref() != Some(&status) {
            let mut next = d.clone();
            next.status = Some(status);
            self.client.update_status(&next).await?;
        }
        Ok(if complete {
            Action::AwaitChange
        } else {
            Action::RequeueAfter(recheck)
        })
    }
}

impl DeploymentController {
    /// Adopts matching ReplicaSets without a controller, releases owned ones that no longer
    /// match; returns the owned, matching ones.
    async fn claim_replicasets(&self, d: &Deployment, selector: &Selector) -> Result<Vec<ReplicaSet>, Error> {
        let m = meta(d);
        let mut owned = Vec::new();
        for rs in self.replicasets.by_namespace(&m.namespace) {
            let rm = meta(&rs);
            let matches = selector.matches(&rm.labels);
            match controller_ref(&rm) {
                Some(r) if r.uid == m.uid => {
                    if matches {
                        owned.push(rs);
                    } else if !being_deleted(&rm) {
                        let released = edit_meta(&rs, |rm| rm.owner_references.retain(|r| r.uid != m.uid));
                        ignore_not_found(self.client.update(&released).await)?;
                    }
                }
                None if matches && !being_deleted(&rm) => {
                    let adopted = edit_meta(&rs, |rm| {
                        rm.owner_references.push(owner_ref("apps/v1", "Deployment", &m))
                    });
                    if let Some(rs) = ignore_not_found(self.client.update(&adopted).await)? {
                        owned.push(rs);
                    }
                }
                _ => {}
            }
        }
        Ok(owned)
    }

    /// Gives the new ReplicaSet the newest revision (it may be an old template rolled back
    /// to).
    async fn sync_revision(&self, rs: ReplicaSet, max_old: i64) -> Result<ReplicaSet, Error> {
        let rev = revision_of(&meta(&rs));
        let rs = if rev <= max_old {
            let want = (max_old + 1).to_string();
            let next = edit_meta(&rs, |m| {
                m.annotations.insert(REVISION_ANNOTATION.into(), want);
            });
            self.client.update(&next).await?
        } else {
            rs
        };
        Ok(rs)
    }

    /// The Deployment with the revision annotation of its new ReplicaSet (as stored after).
    async fn annotate_deployment(&self, d: Deployment, revision: i64) -> Result<Deployment, Error> {
        let want = revision.to_string();
        if meta(&d).annotations.get(REVISION_ANNOTATION) == Some(&want) {
            return Ok(d);
        }
        let next = edit_meta(&d, |m| {
            m.annotations.insert(REVISION_ANNOTATION.into(), want);
        });
        Ok(self.client.update(&next).await?)
    }

    async fn create_new_replicaset(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
        max_old: i64,
    ) -> Result<ReplicaSet, Error> {
        let m = meta(d);
        let spec = d.spec.clone().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = spec.template.clone().unwrap_or_default();
        let hash = pod_template_hash(&template, collision_count);
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone().unwrap_or_default();
        selector
            .match_labels
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let desired = spec.replicas.unwrap_or(1).max(0);
        let old_total: i32 = old.iter().map(replicas_of).sum();
        let replicas = match spec
            .strategy
            .as_ref()
            .map_or("RollingUpdate", |s| s.r#type.as_str())
        {
            "Recreate" if old_total > 0 => 0,
            "Recreate" => desired,
            _ => {
                let ru = spec
                    .strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.clone())
                    .unwrap_or_default();
                let (surge, _) =
                    resolve_fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), desired).map_err(
                        |e| Error::Invalid(format!("{}: spec.strategy.rollingUpdate.{e}", m.name)),
                    )?;
                scale_up_new(desired, 0, old_total, surge)
            }
        };
        let mut labels = template
            .metadata
            .as_ref()
            .map(|t| t.labels.clone())
            .unwrap_or_default();
        labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert(REVISION_ANNOTATION.to_string(), (max_old + 1).to_string());
        let sizes = self.sizes(d)?;
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.to_string(), sizes.desired.to_string());
        annotations.insert(
            MAX_REPLICAS_ANNOTATION.to_string(),
            (sizes.desired + sizes.surge).to_string(),
        );
        if let Some(c) = m.annotations.get(CHANGE_CAUSE_ANNOTATION) {
            annotations.insert(CHANGE_CAUSE_ANNOTATION.to_string(), c.clone());
        }
        let rs = ReplicaSet {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            metadata: Some(ObjectMeta {
                name: format!("{}-{}", m.name, hash),
                namespace: m.namespace.clone(),
                labels,
                annotations,
                owner_references: vec![owner_ref("apps/v1", "Deployment", &m)],
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector: Some(selector),
                template: Some(template.clone()),
            }),
            status: None,
        };
        match self.client.create(&m.namespace, &rs).await {
            Ok(rs) => {
                tracing::info!(deployment = %m.name, replicaset = %meta(&rs).name, "created new replica set");
                Ok(rs)
            }
            Err(ClientError::AlreadyExists(_)) => {
                let existing: ReplicaSet = self.client.get(&m.namespace, &meta(&rs).name).await?;
                let ours = controller_ref(&meta(&existing)).is_some_and(|r| r.uid == m.uid);
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| same_template(t, &template));
                if !(ours && same) {
                    // A hash collision: the next hash includes a bumped collision count.
                    let mut next = d.clone();
                    let st = next.status.get_or_insert_with(Default::default);
                    st.collision_count = Some(collision_count.unwrap_or(0) + 1);
                    self.client.update_status(&next).await?;
                }
                Err(Error::Invalid(format!(
                    "replica set {} exists already; retrying",
                    meta(&rs).name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The Deployment's replicas, surge and unavailability in pods (Recreate: no surge).
    fn sizes(&self, d: &Deployment) -> Result<Sizes, Error> {
        let spec = d.spec.clone().unwrap_or_default();
        let desired = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.strategy.unwrap_or_default();
        if strategy.r#type == "Recreate" {
            return Ok(Sizes {
                desired,
                surge: 0,
                unavailable: desired,
            });
        }
        let ru = strategy.rolling_update.unwrap_or_default();
        let (surge, unavailable) =
            resolve_fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), desired)
                .map_err(|e| Error::Invalid(format!("{}: spec.strategy.rollingUpdate.{e}", meta(d).name)))?;
        Ok(Sizes {
            desired,
            surge,
            unavailable,
        })
    }

    /// Sets spec.replicas and the replicas annotations; writes only when the size differs
    /// (annotations alone stay stale until the next resize: that is how a later change of the
    /// Deployment's replicas shows as a scaling event).
    async fn scale(&self, rs: &ReplicaSet, replicas: i32, sizes: &Sizes) -> Result<bool, Error> {
        if replicas_of(rs) == replicas {
            return Ok(false);
        }
        let mut next = edit_meta(rs, |m| {
            m.annotations
                .insert(DESIRED_REPLICAS_ANNOTATION.into(), sizes.desired.to_string());
            m.annotations.insert(
                MAX_REPLICAS_ANNOTATION.into(),
                (sizes.desired + sizes.surge).to_string(),
            );
        });
        next.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        self.client.update(&next).await?;
        tracing::debug!(replicaset = %meta(rs).name, from = replicas_of(rs), to = replicas, "scaled");
        Ok(true)
    }

    async fn rolling(&self, sizes: &Sizes, new_rs: &ReplicaSet, old: &[ReplicaSet]) -> Result<bool, Error> {
        let desired = sizes.desired;
        let all: i32 = replicas_of(new_rs) + old.iter().map(replicas_of).sum::<i32>();
        let new_size = if replicas_of(new_rs) > desired {
            desired
        } else {
            scale_up_new(desired, replicas_of(new_rs), all, sizes.surge)
        };
        let mut scaled = self.scale(new_rs, new_size, sizes).await?;
        let new_counts = RsCounts {
            replicas: new_size,
            available: counts(new_rs).available,
        };
        let old_counts: Vec<RsCounts> = old.iter().map(counts).collect();
        let next = scale_down_old(desired, sizes.unavailable, new_counts, &old_counts);
        for (rs, size) in old.iter().zip(next) {
            scaled |= self.scale(rs, size, sizes).await?;
        }
        Ok(scaled)
    }

    /// The Deployment was resized: with one active ReplicaSet (or none) that one (or the new
    /// one) takes the new size; when the new one is saturated the old ones go to zero;
    /// otherwise the change is shared in proportion ([`proportional_sizes`]).
    async fn scale_proportionally(
        &self,
        d: &Deployment,
        sizes: &Sizes,
        new_rs: &ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<bool, Error> {
        let mut active: Vec<&ReplicaSet> = std::iter::once(new_rs)
            .chain(old.iter())
            .filter(|rs| replicas_of(rs) > 0)
            .collect();
        if active.len() <= 1 {
            let target = active.first().copied().unwrap_or(new_rs);
            return self.scale(target, sizes.desired, sizes).await;
        }
        let new_saturated = replicas_of(new_rs) == sizes.desired
            && new_rs
                .status
                .as_ref()
                .is_some_and(|s| s.available_replicas == sizes.desired);
        if new_saturated {
            let mut scaled = false;
            for rs in old {
                scaled |= self.scale(rs, 0, sizes).await?;
            }
            return Ok(scaled);
        }
        let total: i32 = active.iter().map(|rs| replicas_of(rs)).sum();
        let growing = sizes.desired + sizes.surge > total;
        // Largest first; ties: newer first when growing, older first when shrinking.
        active.sort_by_key(|rs| {
            let rev = revision_of(&meta(*rs));
            (
                std::cmp::Reverse(replicas_of(rs)),
                if growing { -rev } else { rev },
            )
        });
        let shares: Vec<RsShare> = active
            .iter()
            .map(|rs| RsShare {
                replicas: replicas_of(rs),
                annotated_max: meta(*rs)
                    .annotations
                    .get(MAX_REPLICAS_ANNOTATION)
                    .and_then(|v| v.parse().ok()),
            })
            .collect();
        let fallback = d.status.as_ref().map_or(total, |s| s.replicas).max(1);
        let next = proportional_sizes(sizes.desired, sizes.surge, fallback, &shares);
        let mut scaled = false;
        for (rs, size) in active.iter().zip(next) {
            scaled |= self.scale(rs, size, sizes).await?;
        }
        tracing::info!(deployment = %meta(d).name, replicas = sizes.desired, "scaled proportionally");
        Ok(scaled)
    }

    async fn recreate(&self, sizes: &Sizes, new_rs: &ReplicaSet, old: &[ReplicaSet]) -> Result<bool, Error> {
        let mut scaled = false;
        for rs in old {
            scaled |= self.scale(rs, 0, sizes).await?;
        }
        let old_pods: i32 = old
            .iter()
            .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
            .sum();
        if scaled || old_pods > 0 {
            return Ok(scaled);
        }
        self.scale(new_rs, sizes.desired, sizes).await
    }

    /// When to look again at a rollout in progress: when its progress deadline passes (from
    /// the Progressing condition's last update), at most [`PROGRESS_RECHECK_MAX`] from now.
    fn progress_recheck(
        &self,
        spec: &berth_proto::appsv1::DeploymentSpec,
        status: &DeploymentStatus,
    ) -> Duration {
        let deadline_s = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
        let last = status
            .conditions
            .iter()
            .find(|c| c.r#type == "Progressing" && c.status == "True")
            .and_then(|c| parse_time(&c.last_update_time));
        let Some(last) = last else {
            return PROGRESS_RECHECK_MAX;
        };
        // Condition times have whole seconds: one more second makes sure the deadline passed.
        let due = last + (deadline_s + 1) * 1_000_000;
        let wait = (due - self.clock.now_micros()).max(0) as u64;
        Duration::from_micros(wait).clamp(Duration::from_millis(100), PROGRESS_RECHECK_MAX)
    }

    /// Deletes old ReplicaSets at zero beyond revisionHistoryLimit, oldest first.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let idle: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| {
                replicas_of(rs) == 0
                    && rs.status.as_ref().map_or(0, |s| s.replicas) == 0
                    && !being_deleted(&meta(*rs))
            })
            .collect();
        let surplus = idle.len().saturating_sub(limit);
        for rs in idle.into_iter().take(surplus) {
            let m = meta(rs);
            let opts = DeleteOptions {
                propagation_policy: "Background".into(),
                ..Default::default()
            };
            ignore_not_found(
                self.client
                    .delete::<ReplicaSet>(&m.namespace, &m.name, opts)
                    .await,
            )?;
            tracing::info!(deployment = %meta(d).name, replicaset = %m.name, "deleted old replica set");
        }
        Ok(())
    }

    fn status(
        &self,
        d: &Deployment,
        new_rs: Option<&ReplicaSet>,
        old: &[ReplicaSet],
        progress: &Progress,
    ) -> Result<DeploymentStatus, Error> {
        let spec = d.spec.clone().unwrap_or_default();
        let desired = spec.replicas.unwrap_or(1).max(0);
        let all: Vec<&ReplicaSet> = new_rs.into_iter().chain(old.iter()).collect();
        let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
        let total_spec: i32 = all.iter().map(|rs| replicas_of(rs)).sum();
        let available: i32 = all.iter().map(|rs| st(rs).available_replicas).sum();
        let prev = d.status.clone().unwrap_or_default();
        let mut s = DeploymentStatus {
            observed_generation: meta(d).generation,
            replicas: all.iter().map(|rs| st(rs).replicas).sum(),
            updated_replicas: new_rs.map_or(0, |rs| st(rs).replicas),
            ready_replicas: all.iter().map(|rs| st(rs).ready_replicas).sum(),
            available_replicas: available,
            unavailable_replicas: (total_spec - available).max(0),
            conditions: prev.conditions.clone(),
            collision_count: prev.collision_count,
        };
        let now = self.clock.now_micros();
        let now_s = rfc3339_secs(now);
        let max_unavailable = match spec.strategy.as_ref() {
            Some(st) if st.r#type == "RollingUpdate" => {
                let ru = st.rolling_update.clone().unwrap_or_default();
                resolve_fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), desired)
                    .map_err(|e| {
                        Error::Invalid(format!("{}: spec.strategy.rollingUpdate.{e}", meta(d).name))
                    })?
                    .1
            }
            _ => 0,
        };
        let (a_status, a_reason, a_msg) = if available >= desired - max_unavailable {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(
            &mut s.conditions,
            "Available",
            a_status,
            a_reason,
            a_msg,
            &now_s,
            false,
        );

        // The new ReplicaSet's failure to create pods (quota, ...) shows on the Deployment.
        let failure = new_rs.and_then(|rs| rs.status.as_ref()).and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.r#type == "ReplicaFailure" && c.status == "True")
        });
        match failure {
            Some(f) => set_condition(
                &mut s.conditions,
                "ReplicaFailure",
                "True",
                &f.reason,
                &f.message,
                &now_s,
                false,
            ),
            None => s.conditions.retain(|c| c.r#type != "ReplicaFailure"),
        }
        let rs_name = new_rs.map(|rs| meta(rs).name).unwrap_or_default();
        let complete =
            s.updated_replicas == desired && s.replicas == desired && s.available_replicas == desired;
        let changed = (
            prev.replicas,
            prev.updated_replicas,
            prev.available_replicas,
            prev.ready_replicas,
        ) != (
            s.replicas,
            s.updated_replicas,
            s.available_replicas,
            s.ready_replicas,
        );
        if spec.paused {
            set_condition(
                &mut s.conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                &now_s,
                false,
            );
        } else if complete {
            let msg = format!("ReplicaSet \"{rs_name}\" has successfully progressed.");
            set_condition(
                &mut s.conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &msg,
                &now_s,
                false,
            );
        } else if let Some(created) = &progress.created {
            let msg = format!("Created new replica set \"{created}\"");
            set_condition(
                &mut s.conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                &msg,
                &now_s,
                true,
            );
        } else if progress.scaled || changed {
            let msg = format!("ReplicaSet \"{rs_name}\" is progressing.");
            set_condition(
                &mut s.conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &msg,
                &now_s,
                true,
            );
        } else {
            let deadline_s = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
            let last = s
                .conditions
                .iter()
                .find(|c| c.r#type == "Progressing")
                .and_then(|c| parse_time(&c.last_update_time));
            if last.is_some_and(|t| t + deadline_s * 1_000_000 < now) {
                let msg = format!("ReplicaSet \"{rs_name}\" has timed out progressing.");
                set_condition(
                    &mut s.conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &msg,
                    &now_s,
                    false,
                );
            }
        }
        Ok(s)
    }
}

/// Sets a condition; lastTransitionTime changes with the status, lastUpdateTime with the
/// reason or message (or always when `touch`).
fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    touch: bool,
) {
    match conds.iter_mut().find(|c| c.r#type == ty) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.into();
            }
            if touch || c.status != status || c.reason != reason || c.message != message {
                c.last_update_time = now.into();
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conds.push(DeploymentCondition {
            r#type: ty.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_update_time: now.into(),
            last_transition_time: now.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ios(s: &str) -> IntOrString {
        match s.parse::<i32>() {
            Ok(i) => IntOrString::int(i),
            Err(_) => IntOrString::string(s),
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let f = |s: &str, u: &str, n| resolve_fenceposts(Some(&ios(s)), Some(&ios(u)), n).unwrap();
        assert_eq!(f("25%", "25%", 10), (3, 2));
        assert_eq!(f("25%", "25%", 3), (1, 0));
        assert_eq!(f("25%", "25%", 1), (1, 0));
        assert_eq!(f("1", "1", 3), (1, 1));
        assert_eq!(f("0", "0", 3), (0, 1), "both zero would never progress");
        assert_eq!(
            f("0%", "10%", 5),
            (0, 1),
            "10% of 5 rounds down to 0, then fencepost"
        );
        assert_eq!(f("50%", "0", 5), (3, 0));
        assert!(resolve_fenceposts(Some(&ios("x%")), None, 3)
            .unwrap_err()
            .contains("maxSurge"));
    }

    #[test]
    fn scale_up_stays_within_surge() {
        // 3 desired, surge 1: old has 3, new 0 -> new 1 (4 total).
        assert_eq!(scale_up_new(3, 0, 3, 1), 1);
        // Already at max total: no growth.
        assert_eq!(scale_up_new(3, 1, 4, 1), 1);
        // Old scaled down to 2: new may grow to 2.
        assert_eq!(scale_up_new(3, 1, 3, 1), 2);
        // Never beyond desired.
        assert_eq!(scale_up_new(3, 2, 2, 5), 3);
        assert_eq!(scale_up_new(3, 5, 5, 1), 3);
    }

    #[test]
    fn scale_down_keeps_min_available() {
        let c = |replicas, available| RsCounts { replicas, available };
        // 3 desired, maxUnavailable 1: old 3 available, new 1 not yet available -> old to 2.
        assert_eq!(scale_down_old(3, 1, c(1, 0), &[c(3, 3)]), vec![2]);
        // maxUnavailable 0: nothing until the new pod is available.
        assert_eq!(scale_down_old(3, 0, c(1, 0), &[c(3, 3)]), vec![3]);
        assert_eq!(scale_down_old(3, 0, c(1, 1), &[c(3, 3)]), vec![2]);
        // Unhealthy old pods go first, within the room left.
        assert_eq!(scale_down_old(3, 0, c(1, 1), &[c(3, 1)]), vec![2]);
        // A status that lags a scale-down counts no more than spec.replicas.
        assert_eq!(scale_down_old(3, 1, c(2, 0), &[c(2, 3)]), vec![2]);
        // Oldest first across several old sets.
        assert_eq!(scale_down_old(4, 1, c(2, 2), &[c(1, 1), c(2, 2)]), vec![0, 1]);
    }

    #[test]
    fn resizing_mid_rollout_shares_the_change_in_proportion() {
        let sh = |replicas, max| RsShare {
            replicas,
            annotated_max: Some(max),
        };
        // 10 -> 20 replicas (surge 3 -> 5): sets of 8 and 5 (max 13) grow to 15 and 10 (25).
        assert_eq!(
            proportional_sizes(20, 5, 13, &[sh(8, 13), sh(5, 13)]),
            vec![15, 10]
        );
        // Down to 5 (surge 2): 8 and 5 shrink to about 4 and 3.
        assert_eq!(proportional_sizes(5, 2, 13, &[sh(8, 13), sh(5, 13)]), vec![4, 3]);
        // To zero: everything goes.
        assert_eq!(proportional_sizes(0, 0, 13, &[sh(8, 13), sh(5, 13)]), vec![0, 0]);
        // Rounding leftovers go to the first.
        assert_eq!(
            proportional_sizes(4, 0, 3, &[sh(2, 3), sh(1, 3)])
                .iter()
                .sum::<i32>(),
            4
        );
        // Without annotations the fallback (current total) is the base.
        let none = |replicas| RsShare {
            replicas,
            annotated_max: None,
        };
        assert_eq!(proportional_sizes(6, 0, 3, &[none(2), none(1)]), vec![4, 2]);
    }

    #[test]
    fn template_hash_is_stable_ignores_its_label_and_changes_with_the_template() {
        let mut t = PodTemplateSpec::default();
        t.metadata
            .get_or_insert_with(Default::default)
            .labels
            .insert("app".into(), "a".into());
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t.clone(), None));
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        let mut labelled = t.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(POD_TEMPLATE_HASH_LABEL.into(), h.clone());
        assert_eq!(pod_template_hash(&labelled, None), h);
        assert!(same_template(&t, &labelled));
        assert_ne!(pod_template_hash(&t, Some(1)), h);
        let mut other = t.clone();
        other
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "b".into());
        assert_ne!(pod_template_hash(&other, None), h);
        assert!(!same_template(&t, &other));
    }
}

/// What `rollout status` says about a Deployment, and whether the rollout is done (Kubernetes'
/// DeploymentStatusViewer wording); an error when the progress deadline was exceeded.
pub fn rollout_status(d: &Deployment) -> Result<(String, bool), String> {
    let m = meta(d);
    let name = &m.name;
    let st = d.status.clone().unwrap_or_default();
    if m.generation > st.observed_generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let timed_out = st
        .conditions
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "ProgressDeadlineExceeded");
    if timed_out {
        return Err(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if st.updated_replicas < desired {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {desired} new replicas have been updated...",
                st.updated_replicas
            ),
            false,
        ));
    }
    if st.replicas > st.updated_replicas {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                st.replicas - st.updated_replicas
            ),
            false,
        ));
    }
    if st.available_replicas < st.updated_replicas {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                st.available_replicas, st.updated_replicas
            ),
            false,
        ));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

/// The revision of a ReplicaSet (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    revision_of(&meta(rs))
}

#[cfg(test)]
mod rollout_status_tests {
    use super::*;

    #[test]
    fn messages_follow_kubectl() {
        let mut d = Deployment {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                generation: 2,
                ..Default::default()
            }),
            spec: Some(Default::default()),
            status: Some(DeploymentStatus {
                observed_generation: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        d.spec.as_mut().unwrap().replicas = Some(3);
        assert_eq!(
            rollout_status(&d).unwrap().0,
            "Waiting for deployment spec update to be observed..."
        );
        let st = d.status.as_mut().unwrap();
        st.observed_generation = 2;
        st.replicas = 4;
        st.updated_replicas = 3;
        st.available_replicas = 1;
        assert_eq!(
            rollout_status(&d).unwrap().0,
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        d.status.as_mut().unwrap().replicas = 3;
        assert_eq!(
            rollout_status(&d).unwrap(),
            (
                "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available..."
                    .into(),
                false
            )
        );
        d.status.as_mut().unwrap().available_replicas = 3;
        assert_eq!(
            rollout_status(&d).unwrap(),
            ("deployment \"web\" successfully rolled out".into(), true)
        );
        d.status.as_mut().unwrap().conditions.push(DeploymentCondition {
            r#type: "Progressing".into(),
            reason: "ProgressDeadlineExceeded".into(),
            ..Default::default()
        });
        assert!(rollout_status(&d).unwrap_err().contains("progress deadline"));
    }
}
