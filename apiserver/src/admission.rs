//! Admission rules of the Resources service, as pure functions: LimitRange defaults and
//! constraints on Pods, and ResourceQuota arithmetic (what an object consumes, whether a change
//! fits a quota, the quota's new `status.used`). The service reads the LimitRanges and
//! ResourceQuotas of the namespace and makes the quota updates part of the SAME store
//! transaction as the object's write (see `resources.rs`), so that concurrent writes can never
//! together exceed a quota. Quantities are [`berth_proto::quantity::Quantity`] (milli-units).

use berth_proto::corev1::{self, LimitRange, Pod, ResourceQuota};
use berth_proto::manifest::{Object, ResourceType, RESOURCE_TYPES};
use berth_proto::quantity::Quantity;
use std::collections::BTreeMap;

/// Resource name to quantity.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Compute resources a bare name in a quota stands for (`cpu` = `requests.cpu`).
const BARE_COMPUTE: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

fn parse_list(m: &BTreeMap<String, String>) -> ResourceList {
    // Stored objects were validated, so every quantity parses; a bad one counts as absent.
    m.iter()
        .filter_map(|(k, v)| Quantity::parse(v).ok().map(|q| (k.clone(), q)))
        .collect()
}

fn format_list(l: &ResourceList) -> BTreeMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

/// A quantity of `milli` thousandths, saturating at what a quantity holds.
fn from_milli(milli: i128) -> Quantity {
    Quantity::from_milli(i64::try_from(milli).unwrap_or(if milli < 0 { i64::MIN } else { i64::MAX }))
}

fn add(a: Quantity, b: Quantity) -> Quantity {
    from_milli(a.milli_value() + b.milli_value())
}

fn sub(a: Quantity, b: Quantity) -> Quantity {
    from_milli(a.milli_value() - b.milli_value())
}

/// `a + b`, key by key.
pub fn sum(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let e = out.entry(k.clone()).or_default();
        *e = add(*e, *v);
    }
    out
}

/// `a - b`, key by key (keys of either).
pub fn diff(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let e = out.entry(k.clone()).or_default();
        *e = sub(*e, *v);
    }
    out
}

// ------------------------------------------------------------------ LimitRange

/// A rule broken, with the field it is about (`spec.containers[0].resources.limits.cpu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

/// A LimitRange item with Kubernetes' defaulting of the item itself: a missing default limit
/// is the max, a missing default request is the default limit, else the min.
fn effective_container_defaults(
    item: &corev1::LimitRangeItem,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut default = item.default.clone();
    for (k, v) in &item.max {
        default.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut default_request = item.default_request.clone();
    for (k, v) in &default {
        default_request.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &item.min {
        default_request.entry(k.clone()).or_insert_with(|| v.clone());
    }
    (default, default_request)
}

fn items<'a>(ranges: &'a [LimitRange], ty: &'a str) -> impl Iterator<Item = &'a corev1::LimitRangeItem> {
    ranges
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .flat_map(|s| s.limits.iter())
        .filter(move |i| i.r#type == ty)
}

fn containers_mut(spec: &mut corev1::PodSpec) -> impl Iterator<Item = &mut corev1::Container> {
    spec.init_containers.iter_mut().chain(spec.containers.iter_mut())
}

/// Kubernetes' pod defaulting: a container that states a limit but no request for a resource
/// requests its limit. Runs before LimitRange defaults.
pub fn default_requests_from_limits(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else { return };
    for c in containers_mut(spec) {
        if let Some(r) = c.resources.as_mut() {
            for (k, v) in &r.limits {
                r.requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// Container defaults of every `Container` item: limits and requests a container does not set.
pub fn apply_limit_range_defaults(pod: &mut Pod, ranges: &[LimitRange]) {
    let Some(spec) = pod.spec.as_mut() else { return };
    for item in items(ranges, "Container") {
        let (default, default_request) = effective_container_defaults(item);
        for c in containers_mut(spec) {
            let r = c.resources.get_or_insert_with(Default::default);
            for (k, v) in &default {
                r.limits.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &default_request {
                r.requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// Requests (or limits) of the containers, with the path of each container's resources.
fn container_resources(pod: &Pod) -> Vec<(String, String, ResourceList, ResourceList)> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let list = |field: &str, cs: &[corev1::Container]| {
        cs.iter()
            .enumerate()
            .map(|(i, c)| {
                let r = c.resources.clone().unwrap_or_default();
                (
                    format!("spec.{field}[{i}].resources"),
                    c.name.clone(),
                    parse_list(&r.requests),
                    parse_list(&r.limits),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut out = list("initContainers", &spec.init_containers);
    out.extend(list("containers", &spec.containers));
    out
}

/// Checks one (requests, limits) pair against one item's min, max and ratio.
fn check_item(
    item: &corev1::LimitRangeItem,
    scope: &str,
    path: &str,
    requests: &ResourceList,
    limits: &ResourceList,
    out: &mut Vec<Violation>,
) {
    let mut v = |field: &str, k: &str, message: String| {
        out.push(Violation {
            path: format!("{path}.{field}.{k}"),
            message,
        })
    };
    for (k, min) in parse_list(&item.min) {
        let min_s = &item.min[&k];
        match requests.get(&k) {
            None => v(
                "requests",
                &k,
                format!("minimum {k} usage per {scope} is {min_s}, but no request is specified"),
            ),
            Some(r) if *r < min => v(
                "requests",
                &k,
                format!("minimum {k} usage per {scope} is {min_s}, but request is {r}"),
            ),
            _ => {}
        }
        if let Some(l) = limits.get(&k).filter(|l| **l < min) {
            v(
                "limits",
                &k,
                format!("minimum {k} usage per {scope} is {min_s}, but limit is {l}"),
            );
        }
    }
    for (k, max) in parse_list(&item.max) {
        let max_s = &item.max[&k];
        match limits.get(&k) {
            None => v(
                "limits",
                &k,
                format!("maximum {k} usage per {scope} is {max_s}, but no limit is specified"),
            ),
            Some(l) if *l > max => v(
                "limits",
                &k,
                format!("maximum {k} usage per {scope} is {max_s}, but limit is {l}"),
            ),
            _ => {}
        }
        if let Some(r) = requests.get(&k).filter(|r| **r > max) {
            v(
                "requests",
                &k,
                format!("maximum {k} usage per {scope} is {max_s}, but request is {r}"),
            );
        }
    }
    for (k, ratio) in parse_list(&item.max_limit_request_ratio) {
        let ratio_s = &item.max_limit_request_ratio[&k];
        let (Some(l), Some(r)) = (limits.get(&k), requests.get(&k).filter(|r| r.milli_value() > 0)) else {
            v(
                "limits",
                &k,
                format!(
                    "{k} max limit to request ratio per {scope} is {ratio_s}, but no request or no limit is specified"
                ),
            );
            continue;
        };
        // limit / request > ratio, in integers: limit * 1000 > ratio_milli * request.
        if l.milli_value() * 1000 > ratio.milli_value() * r.milli_value() {
            let provided = l.milli_value() as f64 / r.milli_value() as f64;
            v(
                "limits",
                &k,
                format!("{k} max limit to request ratio per {scope} is {ratio_s}, but provided ratio is {provided:.6}"),
            );
        }
    }
}

/// A pod's total of one kind of resource list: the containers' sum, or the largest init
/// container's when that is more (they run one at a time, before the others). A resource
/// counts only if every container states it.
fn pod_total(per_container: &[(bool, ResourceList)]) -> ResourceList {
    let mut names: Vec<&String> = per_container.iter().flat_map(|(_, l)| l.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = ResourceList::new();
    for k in names {
        if per_container.iter().any(|(_, l)| !l.contains_key(k)) {
            continue;
        }
        let sum_main: i128 = per_container
            .iter()
            .filter(|(init, _)| !init)
            .map(|(_, l)| l[k].milli_value())
            .sum();
        let max_init = per_container
            .iter()
            .filter(|(init, _)| *init)
            .map(|(_, l)| l[k].milli_value())
            .max()
            .unwrap_or(0);
        out.insert(k.clone(), from_milli(sum_main.max(max_init)));
    }
    out
}

/// Every min/max/ratio rule of the namespace's LimitRanges the pod breaks.
pub fn check_limit_ranges(pod: &Pod, ranges: &[LimitRange]) -> Vec<Violation> {
    let mut out = Vec::new();
    let cs = container_resources(pod);
    for item in items(ranges, "Container") {
        for (path, _, requests, limits) in &cs {
            check_item(item, "Container", path, requests, limits, &mut out);
        }
    }
    let mut pod_items = items(ranges, "Pod").peekable();
    if pod_items.peek().is_some() {
        let init = |p: &str| p.starts_with("spec.initContainers");
        let reqs: Vec<_> = cs.iter().map(|(p, _, r, _)| (init(p), r.clone())).collect();
        let lims: Vec<_> = cs.iter().map(|(p, _, _, l)| (init(p), l.clone())).collect();
        let (requests, limits) = (pod_total(&reqs), pod_total(&lims));
        for item in pod_items {
            check_item(
                item,
                "Pod",
                "spec.containers[*].resources",
                &requests,
                &limits,
                &mut out,
            );
        }
    }
    out
}

// ------------------------------------------------------------------ ResourceQuota

/// Why a quota refuses a write: Kubernetes' message after `is forbidden: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

/// The resource type a `count/<resource>[.<group>]` name counts.
fn counted_type(name: &str) -> Option<&'static ResourceType> {
    let r = name.strip_prefix("count/")?;
    RESOURCE_TYPES
        .iter()
        .find(|t| t.plural == r || (!t.group.is_empty() && r == format!("{}.{}", t.plural, t.group)))
}

/// The kinds (plural resource names) a quota's `hard` names need counting over.
pub fn tracked_resources(hard: &BTreeMap<String, String>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = hard
        .keys()
        .filter_map(|k| match k.as_str() {
            "pods" => Some("pods"),
            "services" | "services.loadbalancers" | "services.nodeports" => Some("services"),
            "configmaps" => Some("configmaps"),
            "secrets" => Some("secrets"),
            "resourcequotas" => Some("resourcequotas"),
            k if k.starts_with("requests.") || k.starts_with("limits.") || BARE_COMPUTE.contains(&k) => {
                Some("pods")
            }
            k => counted_type(k).map(|t| t.plural),
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// What an object consumes of every quota-able resource: its `count/<resource>`, the legacy
/// object counts, and for pods that have not terminated, the pod count and the containers'
/// requests and limits (`requests.cpu`, bare `cpu` = requests, `limits.cpu`, ...).
pub fn usage(obj: &Object) -> ResourceList {
    let rt = obj.resource_type();
    let one = Quantity::from_units(1);
    let mut u = ResourceList::new();
    let count = if rt.group.is_empty() {
        format!("count/{}", rt.plural)
    } else {
        format!("count/{}.{}", rt.plural, rt.group)
    };
    u.insert(count, one);
    match obj {
        Object::Pod(p) if !is_terminal(p) => {
            u.insert("pods".into(), one);
            let cs = container_resources(p);
            let init = |path: &str| path.starts_with("spec.initContainers");
            let reqs: Vec<_> = cs.iter().map(|(p, _, r, _)| (init(p), r.clone())).collect();
            let lims: Vec<_> = cs.iter().map(|(p, _, _, l)| (init(p), l.clone())).collect();
            for (k, v) in pod_sum(&reqs) {
                if BARE_COMPUTE.contains(&k.as_str()) {
                    u.insert(k.clone(), v);
                }
                u.insert(format!("requests.{k}"), v);
            }
            for (k, v) in pod_sum(&lims) {
                u.insert(format!("limits.{k}"), v);
            }
        }
        Object::Pod(_) => {}
        Object::Service(s) => {
            u.insert("services".into(), one);
            let ty = s.spec.as_ref().map_or("", |s| s.r#type.as_str());
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one);
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                let ports = s.spec.as_ref().map_or(0, |s| s.ports.len());
                u.insert("services.nodeports".into(), Quantity::from_units(ports as i64));
            }
        }
        Object::ConfigMap(_) => {
            u.insert("configmaps".into(), one);
        }
        Object::Secret(_) => {
            u.insert("secrets".into(), one);
        }
        Object::ResourceQuota(_) => {
            u.insert("resourcequotas".into(), one);
        }
        _ => {}
    }
    u
}

/// A pod's total per resource for quota usage: the containers' sum (a container that does not
/// state a resource adds 0), or the largest init container's when that is more.
fn pod_sum(per_container: &[(bool, ResourceList)]) -> ResourceList {
    let mut out = ResourceList::new();
    let mut init_max = ResourceList::new();
    for (init, l) in per_container {
        for (k, v) in l {
            if *init {
                let e = init_max.entry(k.clone()).or_default();
                *e = (*e).max(*v);
            } else {
                let e = out.entry(k.clone()).or_default();
                *e = add(*e, *v);
            }
        }
    }
    for (k, v) in init_max {
        let e = out.entry(k).or_default();
        *e = (*e).max(v);
    }
    out
}

/// Whether the quota's scopes select the object. Scoped quotas select only pods (as in
/// Kubernetes); scopes: Terminating / NotTerminating (activeDeadlineSeconds set or not),
/// BestEffort / NotBestEffort (no requests or limits at all), PriorityClass (via
/// scopeSelector: In, NotIn, Exists, DoesNotExist on priorityClassName).
pub fn selects(quota: &ResourceQuota, obj: &Object) -> bool {
    let spec = quota.spec.clone().unwrap_or_default();
    let exprs = spec
        .scope_selector
        .as_ref()
        .map_or(&[][..], |s| &s.match_expressions[..]);
    if spec.scopes.is_empty() && exprs.is_empty() {
        return true;
    }
    let Object::Pod(pod) = obj else { return false };
    let ps = pod.spec.clone().unwrap_or_default();
    let best_effort = ps.containers.iter().chain(&ps.init_containers).all(|c| {
        c.resources
            .as_ref()
            .is_none_or(|r| r.requests.is_empty() && r.limits.is_empty())
    });
    let scope = |s: &str| match s {
        "Terminating" => ps.active_deadline_seconds.is_some(),
        "NotTerminating" => ps.active_deadline_seconds.is_none(),
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "PriorityClass" => !ps.priority_class_name.is_empty(),
        _ => false,
    };
    let expr = |e: &corev1::ScopedResourceSelectorRequirement| {
        if e.scope_name != "PriorityClass" {
            return scope(&e.scope_name) == (e.operator != "DoesNotExist");
        }
        let pc = &ps.priority_class_name;
        match e.operator.as_str() {
            "In" => e.values.contains(pc),
            "NotIn" => !e.values.contains(pc),
            "Exists" => !pc.is_empty(),
            "DoesNotExist" => pc.is_empty(),
            _ => false,
        }
    };
    spec.scopes.iter().all(|s| scope(s)) && exprs.iter().all(expr)
}

/// Compute resources a pod must state in every container when a quota limits them (the
/// Kubernetes rule): `requests.cpu` (or bare `cpu`) needs requests.cpu, `limits.cpu` needs
/// limits.cpu. Checked after LimitRange defaults.
fn missing_compute(hard: &BTreeMap<String, String>, pod: &Pod) -> Option<String> {
    let mut needs: Vec<(String, Vec<String>)> = Vec::new();
    for k in hard.keys() {
        let (field, res) = if let Some(r) = k.strip_prefix("requests.") {
            ("requests", r)
        } else if let Some(r) = k.strip_prefix("limits.") {
            ("limits", r)
        } else if BARE_COMPUTE.contains(&k.as_str()) {
            ("requests", k.as_str())
        } else {
            continue;
        };
        let name = format!("{field}.{res}");
        let missing: Vec<String> = container_resources(pod)
            .into_iter()
            .filter(|(_, _, reqs, lims)| {
                let l = if field == "requests" { reqs } else { lims };
                !l.contains_key(res)
            })
            .map(|(_, c, _, _)| c)
            .collect();
        if !missing.is_empty() && !needs.iter().any(|(n, _)| *n == name) {
            needs.push((name, missing));
        }
    }
    needs.sort();
    (!needs.is_empty()).then(|| {
        needs
            .iter()
            .map(|(n, cs)| format!("{n} for: {}", cs.join(",")))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn quota_name(q: &ResourceQuota) -> &str {
    q.metadata.as_ref().map_or("", |m| m.name.as_str())
}

fn used_of(q: &ResourceQuota) -> ResourceList {
    q.status.as_ref().map(|s| parse_list(&s.used)).unwrap_or_default()
}

fn hard_of(q: &ResourceQuota) -> (BTreeMap<String, String>, ResourceList) {
    let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
    let parsed = parse_list(&hard);
    (hard, parsed)
}

fn pretty(l: &ResourceList, names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n}={}", l.get(n).copied().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The quota after a write that changes usage from `old` to `new` (either absent): `None` when
/// the quota does not track anything the write changes. An increase beyond `hard` is a Denial
/// with Kubernetes' message; decreases always pass (and never go below zero).
pub fn charge(
    quota: &ResourceQuota,
    old: Option<&Object>,
    new: Option<&Object>,
) -> Result<Option<ResourceQuota>, Denial> {
    let take = |o: Option<&Object>| o.filter(|o| selects(quota, o)).map(usage).unwrap_or_default();
    let (hard_raw, hard) = hard_of(quota);
    let delta: ResourceList = diff(&take(new), &take(old))
        .into_iter()
        .filter(|(k, v)| hard.contains_key(k) && v.milli_value() != 0)
        .collect();
    let name = quota_name(quota);
    if let (Some(Object::Pod(p)), None) = (new, old) {
        if selects(quota, new.expect("matched")) {
            if let Some(missing) = missing_compute(&hard_raw, p) {
                return Err(Denial(format!("failed quota: {name}: must specify {missing}")));
            }
        }
    }
    if delta.is_empty() {
        return Ok(None);
    }
    let used = used_of(quota);
    let next = sum(&used, &delta);
    let exceeded: Vec<String> = delta
        .iter()
        .filter(|(k, v)| v.milli_value() > 0 && next[*k] > hard[*k])
        .map(|(k, _)| k.clone())
        .collect();
    if !exceeded.is_empty() {
        return Err(Denial(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&delta, &exceeded),
            pretty(&used, &exceeded),
            pretty(&hard, &exceeded)
        )));
    }
    let mut q = quota.clone();
    let status = q.status.get_or_insert_with(Default::default);
    status.hard = hard_raw;
    for (k, v) in next {
        if hard.contains_key(&k) {
            let v = v.max(Quantity::default());
            status.used.insert(k, v.to_string());
        }
    }
    Ok(Some(q))
}

/// The quota with `status.hard` = `spec.hard` and `status.used` recomputed from the objects
/// it tracks (every key of `hard`, zero when nothing uses it).
pub fn recompute<'a>(quota: &ResourceQuota, objects: impl IntoIterator<Item = &'a Object>) -> ResourceQuota {
    let (hard_raw, hard) = hard_of(quota);
    let mut used: ResourceList = hard.keys().map(|k| (k.clone(), Quantity::default())).collect();
    for o in objects.into_iter().filter(|o| selects(quota, o)) {
        for (k, v) in usage(o) {
            if let Some(e) = used.get_mut(&k) {
                *e = add(*e, v);
            }
        }
    }
    let mut q = quota.clone();
    q.status = Some(corev1::ResourceQuotaStatus {
        hard: hard_raw,
        used: format_list(&used),
    });
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::manifest;

    fn pod(yaml_resources: &[&str]) -> Pod {
        let containers: String = yaml_resources
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  - name: c{i}\n    image: x\n    resources: {r}\n"))
            .collect();
        let y =
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}");
        match manifest::parse_one(&y).unwrap() {
            Object::Pod(p) => p,
            _ => unreachable!(),
        }
    }

    fn limit_range(items: &str) -> LimitRange {
        let y =
            format!("apiVersion: v1\nkind: LimitRange\nmetadata: {{name: lr}}\nspec:\n  limits: {items}\n");
        match manifest::parse_one(&y).unwrap() {
            Object::LimitRange(l) => l,
            _ => unreachable!(),
        }
    }

    fn quota(hard: &str, used: &str) -> ResourceQuota {
        let y = format!(
            "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: q}}\nspec: {{hard: {hard}}}\nstatus: {{used: {used}}}\n"
        );
        match manifest::parse_one(&y).unwrap() {
            Object::ResourceQuota(q) => q,
            _ => unreachable!(),
        }
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn limit_range_defaults_fill_what_containers_leave_out() {
        let lr = limit_range(
            "[{type: Container, default: {cpu: 500m, memory: 256Mi}, defaultRequest: {cpu: 100m}}]",
        );
        let mut p = pod(&["{}", "{limits: {cpu: '1'}, requests: {cpu: 200m}}"]);
        apply_limit_range_defaults(&mut p, &[lr]);
        let r = |i: usize| p.spec.as_ref().unwrap().containers[i].resources.clone().unwrap();
        assert_eq!(r(0).limits["cpu"], "500m");
        assert_eq!(r(0).limits["memory"], "256Mi");
        assert_eq!(r(0).requests["cpu"], "100m");
        // A default limit without a default request defaults the request too.
        assert_eq!(r(0).requests["memory"], "256Mi");
        assert_eq!(r(1).limits["cpu"], "1");
        assert_eq!(r(1).requests["cpu"], "200m");
    }

    #[test]
    fn requests_default_to_limits() {
        let mut p = pod(&["{limits: {cpu: '1'}}"]);
        default_requests_from_limits(&mut p);
        let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
        assert_eq!(r.requests["cpu"], "1");
    }

    #[test]
    fn max_defaults_the_limit_and_min_the_request() {
        let lr = limit_range("[{type: Container, max: {cpu: '2'}, min: {memory: 64Mi}}]");
        let mut p = pod(&["{}"]);
        apply_limit_range_defaults(&mut p, std::slice::from_ref(&lr));
        let r = p.spec.as_ref().unwrap().containers[0].resources.clone().unwrap();
        assert_eq!(r.limits["cpu"], "2");
        assert_eq!(r.requests["cpu"], "2");
        assert_eq!(r.requests["memory"], "64Mi");
        assert!(check_limit_ranges(&p, &[lr]).is_empty());
    }

    #[test]
    fn limit_range_violations_name_the_field() {
        let lr = limit_range(
            "[{type: Container, max: {cpu: '1'}, min: {cpu: 100m}, maxLimitRequestRatio: {cpu: '4'}}]",
        );
        let p = pod(&["{limits: {cpu: '2'}, requests: {cpu: 50m}}"]);
        let v = check_limit_ranges(&p, std::slice::from_ref(&lr));
        let paths: Vec<_> = v.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.containers[0].resources.requests.cpu",
                "spec.containers[0].resources.limits.cpu",
                "spec.containers[0].resources.limits.cpu"
            ],
            "{v:?}"
        );
        assert_eq!(
            v[1].message,
            "maximum cpu usage per Container is 1, but limit is 2"
        );
        assert!(v[2].message.contains("provided ratio is 40"), "{v:?}");
        // Exactly at the bounds passes; the ratio 4 exactly passes.
        let ok = pod(&["{limits: {cpu: '1'}, requests: {cpu: 250m}}"]);
        assert!(check_limit_ranges(&ok, std::slice::from_ref(&lr)).is_empty());
        let no_limit = pod(&["{requests: {cpu: 250m}}"]);
        let v = check_limit_ranges(&no_limit, &[lr]);
        assert!(v[0].message.contains("no limit is specified"), "{v:?}");
    }

    #[test]
    fn pod_limit_ranges_check_the_sum() {
        let lr = limit_range("[{type: Pod, max: {memory: 1Gi}}]");
        let p = pod(&["{limits: {memory: 600Mi}}", "{limits: {memory: 600Mi}}"]);
        let v = check_limit_ranges(&p, std::slice::from_ref(&lr));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].path, "spec.containers[*].resources.limits.memory");
        assert!(check_limit_ranges(&pod(&["{limits: {memory: 600Mi}}"]), &[lr]).is_empty());
    }

    #[test]
    fn pod_usage_sums_containers_and_takes_the_largest_init_container() {
        let mut p = pod(&[
            "{requests: {cpu: 250m, memory: 1Gi}, limits: {cpu: 500m}}",
            "{requests: {cpu: 250m}}",
        ]);
        let u = usage(&Object::Pod(p.clone()));
        assert_eq!(u["pods"], q("1"));
        assert_eq!(u["count/pods"], q("1"));
        assert_eq!(u["requests.cpu"], q("500m"));
        assert_eq!(u["cpu"], q("500m"));
        assert_eq!(u["requests.memory"], q("1Gi"));
        assert_eq!(u["memory"], q("1Gi"));
        assert_eq!(u["limits.cpu"], q("500m"));
        let mut init = p.spec.as_ref().unwrap().containers[0].clone();
        init.name = "init".into();
        init.resources
            .as_mut()
            .unwrap()
            .requests
            .insert("cpu".into(), "2".into());
        p.spec.as_mut().unwrap().init_containers.push(init);
        assert_eq!(usage(&Object::Pod(p.clone()))["requests.cpu"], q("2"));
        p.status = Some(corev1::PodStatus {
            phase: "Succeeded".into(),
            ..Default::default()
        });
        let done = usage(&Object::Pod(p));
        assert!(
            !done.contains_key("pods") && !done.contains_key("requests.cpu"),
            "{done:?}"
        );
        assert_eq!(done["count/pods"], q("1"));
    }

    #[test]
    fn charges_release_and_exceed() {
        let qt = quota(
            "{pods: '2', requests.cpu: '1'}",
            "{pods: '1', requests.cpu: 600m}",
        );
        let small = Object::Pod(pod(&["{requests: {cpu: 300m}}"]));
        let charged = charge(&qt, None, Some(&small)).unwrap().unwrap();
        let st = charged.status.clone().unwrap();
        assert_eq!(st.used["pods"], "2");
        assert_eq!(st.used["requests.cpu"], "900m");
        assert_eq!(st.hard["pods"], "2");
        // The next pod exceeds both; the message names only what is exceeded.
        let e = charge(&charged, None, Some(&small)).unwrap_err();
        assert_eq!(
            e.0,
            "exceeded quota: q, requested: pods=1,requests.cpu=300m, used: pods=2,requests.cpu=900m, limited: pods=2,requests.cpu=1"
        );
        let big = Object::Pod(pod(&["{requests: {cpu: 500m}}"]));
        let e = charge(&qt, None, Some(&big)).unwrap_err();
        assert_eq!(
            e.0,
            "exceeded quota: q, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
        );
        // Deletes release, never below zero.
        let released = charge(&charged, Some(&small), None).unwrap().unwrap();
        assert_eq!(released.status.unwrap().used["requests.cpu"], "600m");
        let empty = quota("{pods: '2'}", "{}");
        let r = charge(&empty, Some(&small), None).unwrap().unwrap();
        assert_eq!(r.status.unwrap().used["pods"], "0");
        // Objects the quota does not track leave it alone.
        let cm = manifest::parse_one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").unwrap();
        assert!(charge(&qt, None, Some(&cm)).unwrap().is_none());
        let counted = quota(
            "{count/configmaps: '1', configmaps: '5'}",
            "{count/configmaps: '1'}",
        );
        assert!(charge(&counted, None, Some(&cm))
            .unwrap_err()
            .0
            .contains("count/configmaps=1"));
    }

    #[test]
    fn compute_quotas_require_the_resources() {
        let qt = quota("{requests.cpu: '4', limits.memory: 4Gi}", "{}");
        let e = charge(
            &qt,
            None,
            Some(&Object::Pod(pod(&["{requests: {cpu: 1}}", "{}"]))),
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "failed quota: q: must specify limits.memory for: c0,c1; requests.cpu for: c1"
        );
        let ok = Object::Pod(pod(&["{requests: {cpu: 1}, limits: {memory: 1Gi}}"]));
        assert!(charge(&qt, None, Some(&ok)).unwrap().is_some());
    }

    #[test]
    fn scopes_select_pods() {
        let mut best_effort = quota("{pods: '1'}", "{}");
        best_effort.spec.as_mut().unwrap().scopes = vec!["BestEffort".into()];
        let be = Object::Pod(pod(&["{}"]));
        let burstable = Object::Pod(pod(&["{requests: {cpu: 1}}"]));
        assert!(selects(&best_effort, &be));
        assert!(!selects(&best_effort, &burstable));
        assert!(charge(&best_effort, None, Some(&burstable)).unwrap().is_none());
        let cm = manifest::parse_one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").unwrap();
        assert!(!selects(&best_effort, &cm));
    }

    #[test]
    fn recompute_counts_what_hard_names() {
        let qt = quota("{pods: '5', requests.cpu: '4', secrets: '3'}", "{pods: '9'}");
        let a = Object::Pod(pod(&["{requests: {cpu: 1}}"]));
        let b = Object::Pod(pod(&["{requests: {cpu: 500m}}"]));
        let r = recompute(&qt, [&a, &b]);
        let st = r.status.unwrap();
        assert_eq!(st.used["pods"], "2");
        assert_eq!(st.used["requests.cpu"], "1500m");
        assert_eq!(st.used["secrets"], "0");
        assert_eq!(st.hard["pods"], "5");
        assert_eq!(tracked_resources(&qt.spec.unwrap().hard), ["pods", "secrets"]);
        let mut h = BTreeMap::new();
        h.insert("count/deployments.apps".to_string(), "1".to_string());
        assert_eq!(tracked_resources(&h), ["deployments"]);
    }
}
