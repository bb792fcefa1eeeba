//! Small pure helpers shared by the controllers: keys, owner references, pod state, times.

use berth_client::leader::format_micro_time;
use berth_client::Resource;
use berth_proto::corev1::Pod;
use berth_proto::metav1::{ObjectMeta, OwnerReference};

pub use berth_client::informer::cache_key as key_of;

/// (namespace, name) of a key; namespace "" for cluster-scoped keys.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The key of `name` in `ns` ("name" when `ns` is empty).
pub fn join_key(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    }
}

pub fn meta<T: Resource>(o: &T) -> ObjectMeta {
    o.meta().cloned().unwrap_or_default()
}

pub fn uid<T: Resource>(o: &T) -> String {
    o.meta().map(|m| m.uid.clone()).unwrap_or_default()
}

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references.iter().find(|r| r.controller == Some(true))
}

pub fn being_deleted(m: &ObjectMeta) -> bool {
    !m.deletion_timestamp.is_empty()
}

/// A controller owner reference to `owner` (apiVersion, kind as given).
pub fn owner_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `obj` with its metadata changed by `f` (through the `Object` oneof, which has a mutable
/// accessor for every kind).
pub fn edit_meta<T: Resource>(obj: &T, f: impl FnOnce(&mut ObjectMeta)) -> T {
    let mut o = obj.clone().into_object();
    f(o.metadata_mut());
    T::from_object(o).expect("same kind")
}

/// Succeeded or Failed: the pod's containers will not run again.
pub fn pod_terminal(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// Counted by its controller: not terminal, not being deleted.
pub fn pod_active(p: &Pod) -> bool {
    !pod_terminal(p) && !being_deleted(&meta(p))
}

/// The pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    pod_condition(p, "Ready").is_some_and(|(s, _)| s == "True")
}

/// (status, lastTransitionTime) of a pod condition.
pub fn pod_condition(p: &Pod, ty: &str) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == ty)
        .map(|c| (c.status.clone(), c.last_transition_time.clone()))
}

/// Ready, and Ready for at least `min_ready_seconds` at `now_micros` (Kubernetes'
/// "available"); a Ready condition without a parseable time counts from long ago.
pub fn pod_available(p: &Pod, min_ready_seconds: i32, now_micros: i64) -> bool {
    if !pod_ready(p) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod_condition(p, "Ready")
        .and_then(|(_, t)| berth_client::leader::parse_micro_time(&t))
        .unwrap_or(i64::MIN / 2);
    since + i64::from(min_ready_seconds) * 1_000_000 <= now_micros
}

/// RFC 3339 with whole seconds, as Kubernetes writes condition times.
pub fn rfc3339_secs(micros: i64) -> String {
    let s = format_micro_time(micros.div_euclid(1_000_000) * 1_000_000);
    s.replace(".000000Z", "Z")
}

/// RFC 3339 time to microseconds since the epoch (None if unparseable).
pub fn parse_time(t: &str) -> Option<i64> {
    berth_client::leader::parse_micro_time(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_join() {
        assert_eq!(split_key("ns/a"), ("ns", "a"));
        assert_eq!(split_key("node1"), ("", "node1"));
        assert_eq!(join_key("", "n"), "n");
        assert_eq!(join_key("d", "n"), "d/n");
        assert_eq!(rfc3339_secs(1_714_557_600_123_456), "2024-05-01T10:00:00Z");
    }
}
