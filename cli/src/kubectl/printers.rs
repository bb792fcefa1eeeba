//! Pure formatting for `get` and `describe`: kubectl's ages, table columns per kind, and
//! tab-aligned tables. Time comes in as an argument (`now_s`, seconds since the epoch), so
//! every function here is deterministic and table-tested.

use berth_proto::manifest::{Object, ResourceType};
use berth_proto::metav1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// kubectl's tabwriter: columns at least this wide...
const COLUMN_WIDTH_MIN: usize = 6;
/// ...and this many spaces after the widest cell.
const COLUMN_PADDING: usize = 3;
/// Endpoints listed in the ENDPOINTS column before "+ N more...".
const ENDPOINTS_SHOWN_MAX: usize = 3;

/// What stands in an empty cell.
pub const NONE: &str = "<none>";

/// A duration as kubectl prints ages (`duration.HumanDuration`): `45s`, `3m10s`, `25m`,
/// `5h3m`, `20h`, `2d4h`, `30d`, `2y10d`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-27T07:06:36Z`, fractions and
/// offsets accepted); None if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let o = num(rest_range(s, rest, 1..3))? * 3600 + num(rest_range(s, rest, 4..6))? * 60;
            if rest.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// The range `r` of the suffix `rest` of `s`, as a range of `s`.
fn rest_range(s: &str, rest: &str, r: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let base = s.len() - rest.len();
    base + r.start..base + r.end
}

/// The AGE of a timestamp at `now_s`; `<unknown>` when there is none.
pub fn age(timestamp: &str, now_s: i64) -> String {
    match parse_rfc3339(timestamp) {
        Some(t) => human_duration(now_s - t),
        None => "<unknown>".into(),
    }
}

/// Rows aligned like kubectl's tabwriter: every column but the last padded to its widest
/// cell plus three spaces (at least six wide).
pub fn render_table(headers: &[String], rows: &[Vec<String>], no_headers: bool) -> String {
    let widths = column_widths(headers, rows);
    let mut out = String::new();
    if !no_headers {
        out.push_str(&render_row(headers, &widths));
    }
    for r in rows {
        out.push_str(&render_row(r, &widths));
    }
    out
}

/// The width of each column (cell plus padding) for `headers` and `rows`.
pub fn column_widths(headers: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    widths
        .into_iter()
        .map(|w| (w + COLUMN_PADDING).max(COLUMN_WIDTH_MIN))
        .collect()
}

/// One line, cells padded to `widths` (the last cell is not padded).
pub fn render_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count()).max(COLUMN_PADDING);
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.push('\n');
    line
}

/// `a=b,c=d`, or `<none>`.
pub fn labels_string(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return NONE.into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A label selector as kubectl prints it: `app=web,tier in (a,b)`, or `<none>`.
pub fn selector_string(s: Option<&LabelSelector>) -> String {
    let Some(s) = s else { return NONE.into() };
    let mut parts: Vec<String> = s.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &s.match_expressions {
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, e.values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, e.values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {op} ({})", e.key, e.values.join(",")),
        });
    }
    if parts.is_empty() {
        NONE.into()
    } else {
        parts.join(",")
    }
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        NONE.into()
    } else {
        s.into()
    }
}

/// `["a","b"]`, as kubectl prints list-valued custom columns.
fn json_list(v: &[String]) -> String {
    if v.is_empty() {
        return NONE.into();
    }
    serde_json::to_string(v).expect("strings serialize")
}

/// The column headers of `rt`'s table (NAME first, except for events).
pub fn columns(rt: &ResourceType, wide: bool) -> Vec<&'static str> {
    let (base, extra): (&[&str], &[&str]) = match rt.kind {
        "Pod" => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        ),
        "Deployment" => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "ReplicaSet" => (
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "Service" => (
            &["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
            &["SELECTOR"],
        ),
        "Node" => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        "Namespace" => (&["NAME", "STATUS", "AGE"], &[]),
        "ConfigMap" => (&["NAME", "DATA", "AGE"], &[]),
        "Secret" => (&["NAME", "TYPE", "DATA", "AGE"], &[]),
        "Endpoints" => (&["NAME", "ENDPOINTS", "AGE"], &[]),
        "Lease" => (&["NAME", "HOLDER", "AGE"], &[]),
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        "Ingress" => (&["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], &[]),
        "VirtualService" => (&["NAME", "GATEWAYS", "HOSTS", "AGE"], &[]),
        "DestinationRule" => (&["NAME", "HOST", "AGE"], &[]),
        "LimitRange" => (&["NAME", "CREATED AT"], &[]),
        "ResourceQuota" => (&["NAME", "AGE", "REQUEST", "LIMIT"], &[]),
        _ => (&["NAME", "AGE"], &[]),
    };
    let mut cols = base.to_vec();
    if wide {
        cols.extend_from_slice(extra);
    }
    cols
}

/// The cells of one object's row, matching [`columns`] of its kind.
pub fn cells(obj: &Object, now_s: i64, wide: bool) -> Vec<String> {
    let meta = obj.metadata().cloned().unwrap_or_default();
    let name = meta.name.clone();
    let age = age(&meta.creation_timestamp, now_s);
    let (mut base, extra): (Vec<String>, Vec<String>) = match obj {
        Object::Pod(p) => pod_cells(p, &meta, age, now_s),
        Object::Deployment(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            let st = d.status.clone().unwrap_or_default();
            let desired = spec.replicas.unwrap_or(1);
            let base = vec![
                name,
                format!("{}/{desired}", st.ready_replicas),
                st.updated_replicas.to_string(),
                st.available_replicas.to_string(),
                age,
            ];
            let tmpl = spec.template.and_then(|t| t.spec).unwrap_or_default();
            (
                base,
                containers_images_selector(&tmpl.containers, spec.selector.as_ref()),
            )
        }
        Object::ReplicaSet(r) => {
            let spec = r.spec.clone().unwrap_or_default();
            let st = r.status.clone().unwrap_or_default();
            let base = vec![
                name,
                spec.replicas.unwrap_or(1).to_string(),
                st.replicas.to_string(),
                st.ready_replicas.to_string(),
                age,
            ];
            let tmpl = spec.template.and_then(|t| t.spec).unwrap_or_default();
            (
                base,
                containers_images_selector(&tmpl.containers, spec.selector.as_ref()),
            )
        }
        Object::Service(s) => {
            let spec = s.spec.clone().unwrap_or_default();
            let typ = if spec.r#type.is_empty() {
                "ClusterIP"
            } else {
                &spec.r#type
            };
            let base = vec![
                name,
                typ.to_string(),
                or_none(&spec.cluster_ip),
                service_external_ip(s),
                service_ports(&spec.ports),
                age,
            ];
            let sel = if spec.selector.is_empty() {
                NONE.into()
            } else {
                labels_string(&spec.selector)
            };
            (base, vec![sel])
        }
        Object::Node(n) => node_cells(n, &meta, age),
        Object::Namespace(ns) => {
            let phase = ns.status.as_ref().map_or("", |s| s.phase.as_str());
            let phase = if phase.is_empty() { "Active" } else { phase };
            (vec![name, phase.into(), age], vec![])
        }
        Object::ConfigMap(c) => (
            vec![name, (c.data.len() + c.binary_data.len()).to_string(), age],
            vec![],
        ),
        Object::Secret(s) => {
            let typ = if s.r#type.is_empty() { "Opaque" } else { &s.r#type };
            let n = s.data.len() + s.string_data.keys().filter(|k| !s.data.contains_key(*k)).count();
            (vec![name, typ.into(), n.to_string(), age], vec![])
        }
        Object::Endpoints(e) => (vec![name, endpoints_string(e), age], vec![]),
        Object::Lease(l) => {
            let holder = l
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            (vec![name, holder, age], vec![])
        }
        Object::Event(e) => (event_cells(e, &meta, now_s), vec![]),
        Object::Ingress(i) => (ingress_cells(i, name, age), vec![]),
        Object::VirtualService(v) => {
            let spec = v.spec.clone().unwrap_or_default();
            (
                vec![name, json_list(&spec.gateways), json_list(&spec.hosts), age],
                vec![],
            )
        }
        Object::DestinationRule(d) => {
            let host = d.spec.as_ref().map_or("", |s| s.host.as_str());
            (vec![name, host.into(), age], vec![])
        }
        Object::LimitRange(_) => (vec![name, meta.creation_timestamp.clone()], vec![]),
        Object::ResourceQuota(q) => {
            let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
            let used = q.status.as_ref().map(|s| s.used.clone()).unwrap_or_default();
            let (requests, limits) = quota_usage(&hard, &used);
            (vec![name, age, requests, limits], vec![])
        }
        _ => (vec![name, age], vec![]),
    };
    if wide {
        base.extend(extra);
    }
    base
}

fn pod_cells(
    p: &berth_proto::corev1::Pod,
    meta: &ObjectMeta,
    age: String,
    now_s: i64,
) -> (Vec<String>, Vec<String>) {
    let spec = p.spec.clone().unwrap_or_default();
    let st = p.status.clone().unwrap_or_default();
    let ready = st.container_statuses.iter().filter(|c| c.ready).count();
    let restarts: i64 = st
        .container_statuses
        .iter()
        .map(|c| i64::from(c.restart_count))
        .sum();
    // kubectl adds when the last restart was: the latest finish of a previous run.
    let last_restart = st
        .container_statuses
        .iter()
        .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref())
        .filter_map(|t| parse_rfc3339(&t.finished_at))
        .max();
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now_s - t)),
        _ => restarts.to_string(),
    };
    let base = vec![
        meta.name.clone(),
        format!("{ready}/{}", spec.containers.len()),
        pod_status(p),
        restarts,
        age,
    ];
    let gates = if spec.readiness_gates.is_empty() {
        NONE.to_string()
    } else {
        let met = spec
            .readiness_gates
            .iter()
            .filter(|g| {
                st.conditions
                    .iter()
                    .any(|c| c.r#type == g.condition_type && c.status == "True")
            })
            .count();
        format!("{met}/{}", spec.readiness_gates.len())
    };
    let extra = vec![
        or_none(&st.pod_ip),
        or_none(&spec.node_name),
        or_none(&st.nominated_node_name),
        gates,
    ];
    (base, extra)
}

/// The STATUS column of a pod, as kubectl derives it: the pod's reason or phase, overridden
/// by a container's waiting or terminated reason, `Terminating` once deletion was requested.
pub fn pod_status(p: &berth_proto::corev1::Pod) -> String {
    let st = p.status.clone().unwrap_or_default();
    let mut reason = if !st.reason.is_empty() {
        st.reason.clone()
    } else if !st.phase.is_empty() {
        st.phase.clone()
    } else {
        "Pending".into()
    };
    for c in st.container_statuses.iter().rev() {
        let Some(state) = &c.state else { continue };
        if let Some(w) = state.waiting.as_ref().filter(|w| !w.reason.is_empty()) {
            reason = w.reason.clone();
        } else if let Some(t) = &state.terminated {
            reason = if !t.reason.is_empty() {
                t.reason.clone()
            } else if t.signal != 0 {
                format!("Signal:{}", t.signal)
            } else {
                format!("ExitCode:{}", t.exit_code)
            };
        }
    }
    let deleting = p
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    if deleting && st.reason != "NodeLost" {
        reason = "Terminating".into();
    }
    reason
}

fn containers_images_selector(
    containers: &[berth_proto::corev1::Container],
    selector: Option<&LabelSelector>,
) -> Vec<String> {
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers.iter().map(|c| c.image.as_str()).collect();
    vec![names.join(","), images.join(","), selector_string(selector)]
}

fn service_external_ip(s: &berth_proto::corev1::Service) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let lb: Vec<String> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .map(|lb| {
            lb.ingress
                .iter()
                .map(|i| {
                    if i.ip.is_empty() {
                        i.hostname.clone()
                    } else {
                        i.ip.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    match spec.r#type.as_str() {
        "ExternalName" => or_none(&spec.external_name),
        "LoadBalancer" => {
            let mut all = lb;
            all.extend(spec.external_ips.iter().cloned());
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        _ if !spec.external_ips.is_empty() => spec.external_ips.join(","),
        _ => NONE.into(),
    }
}

/// `80/TCP,443:30443/TCP`, or `<none>`.
pub fn service_ports(ports: &[berth_proto::corev1::ServicePort]) -> String {
    if ports.is_empty() {
        return NONE.into();
    }
    ports
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() { "TCP" } else { &p.protocol };
            if p.node_port != 0 {
                format!("{}:{}/{proto}", p.port, p.node_port)
            } else {
                format!("{}/{proto}", p.port)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn node_cells(n: &berth_proto::corev1::Node, meta: &ObjectMeta, age: String) -> (Vec<String>, Vec<String>) {
    let st = n.status.clone().unwrap_or_default();
    let mut status = match st.conditions.iter().find(|c| c.r#type == "Ready") {
        Some(c) if c.status == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.spec.as_ref().is_some_and(|s| s.unschedulable) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = meta
        .labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    let info = st.node_info.clone().unwrap_or_default();
    let addr = |t: &str| {
        or_none(
            st.addresses
                .iter()
                .find(|a| a.r#type == t)
                .map_or("", |a| a.address.as_str()),
        )
    };
    let base = vec![
        meta.name.clone(),
        status,
        if roles.is_empty() {
            NONE.into()
        } else {
            roles.join(",")
        },
        age,
        info.kubelet_version.clone(),
    ];
    let extra = vec![
        addr("InternalIP"),
        addr("ExternalIP"),
        or_none(&info.os_image),
        or_none(&info.kernel_version),
        or_none(&info.container_runtime_version),
    ];
    (base, extra)
}

/// A quota's REQUEST and LIMIT cells: `pods: 1/10, requests.cpu: 0/1` (used/hard; `limits.*`
/// resources in the second).
pub fn quota_usage(hard: &BTreeMap<String, String>, used: &BTreeMap<String, String>) -> (String, String) {
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for (res, h) in hard {
        let u = used.get(res).map_or("0", String::as_str);
        let cell = format!("{res}: {u}/{h}");
        if res.starts_with("limits.") {
            limits.push(cell);
        } else {
            requests.push(cell);
        }
    }
    (requests.join(", "), limits.join(", "))
}

/// `10.0.0.1:80,10.0.0.2:80 + 1 more...`, or `<none>`.
pub fn endpoints_string(e: &berth_proto::corev1::Endpoints) -> String {
    let mut all = Vec::new();
    for s in &e.subsets {
        for a in &s.addresses {
            if s.ports.is_empty() {
                all.push(a.ip.clone());
            }
            for p in &s.ports {
                all.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    if all.is_empty() {
        return NONE.into();
    }
    let more = all.len().saturating_sub(ENDPOINTS_SHOWN_MAX);
    let shown = all[..all.len().min(ENDPOINTS_SHOWN_MAX)].join(",");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

/// When an event was last seen: lastTimestamp, else eventTime, else its creation.
pub fn event_last_seen(e: &berth_proto::corev1::Event, meta: &ObjectMeta) -> String {
    [&e.last_timestamp, &e.event_time, &meta.creation_timestamp]
        .into_iter()
        .find(|t| !t.is_empty())
        .cloned()
        .unwrap_or_default()
}

fn event_cells(e: &berth_proto::corev1::Event, meta: &ObjectMeta, now_s: i64) -> Vec<String> {
    let io = e.involved_object.clone().unwrap_or_default();
    vec![
        age(&event_last_seen(e, meta), now_s),
        e.r#type.clone(),
        e.reason.clone(),
        format!("{}/{}", io.kind.to_ascii_lowercase(), io.name),
        e.message.clone(),
    ]
}

fn ingress_cells(i: &berth_proto::networkingv1::Ingress, name: String, age: String) -> Vec<String> {
    let spec = i.spec.clone().unwrap_or_default();
    let hosts: Vec<&str> = spec
        .rules
        .iter()
        .map(|r| if r.host.is_empty() { "*" } else { r.host.as_str() })
        .collect();
    let addrs: Vec<String> = i
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|lb| {
            lb.ingress
                .iter()
                .map(|x| {
                    if x.ip.is_empty() {
                        x.hostname.clone()
                    } else {
                        x.ip.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        name,
        or_none(spec.ingress_class_name.as_deref().unwrap_or("")),
        if hosts.is_empty() {
            "*".into()
        } else {
            hosts.join(",")
        },
        addrs.join(","),
        if spec.tls.is_empty() {
            "80".into()
        } else {
            "80, 443".into()
        },
        age,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::manifest;

    #[test]
    fn human_durations_like_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (190, "3m10s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 3 * 60, "5h3m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (52 * 3600, "2d4h"),
            (8 * 86_400, "8d"),
            (400 * 86_400, "400d"),
            (730 * 86_400, "2y"),
            (740 * 86_400, "2y10d"),
            (9 * 365 * 86_400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn rfc3339_times() {
        for (s, want) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000)),
            ("2000-02-29T00:00:00Z", Some(951_782_400)),
            ("2023-11-14T22:13:20.123456Z", Some(1_700_000_000)),
            ("2023-11-14T23:13:20+01:00", Some(1_700_000_000)),
            ("2023-11-14T21:13:20-01:00", Some(1_700_000_000)),
            ("", None),
            ("2023-11-14 22:13:20Z", None),
            ("2023-13-14T22:13:20Z", None),
            ("2023-11-14T22:13:20", None),
            ("yyyy-11-14T22:13:20Z", None),
        ] {
            assert_eq!(parse_rfc3339(s), want, "{s:?}");
        }
        assert_eq!(age("2023-11-14T22:13:20Z", 1_700_000_000 + 52 * 3600), "2d4h");
        assert_eq!(age("", 0), "<unknown>");
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tables_align_like_tabwriter() {
        for (headers, rows, no_headers, want) in [
            (
                vec!["NAME", "READY", "AGE"],
                vec![vec!["web", "1/1", "5s"]],
                false,
                "NAME   READY   AGE\nweb    1/1     5s\n",
            ),
            (
                vec!["NAME", "AGE"],
                vec![vec!["a-long-name", "5s"], vec!["b", "3m"]],
                false,
                "NAME          AGE\na-long-name   5s\nb             3m\n",
            ),
            (vec!["NAME", "AGE"], vec![vec!["a", "5s"]], true, "a      5s\n"),
        ] {
            let rows: Vec<Vec<String>> = rows.iter().map(|r| strings(r)).collect();
            assert_eq!(render_table(&strings(&headers), &rows, no_headers), want);
        }
    }

    const NOW: i64 = 1_700_000_000;

    fn obj(yaml: &str) -> Object {
        manifest::parse_one(yaml).unwrap()
    }

    #[test]
    fn rows_per_kind() {
        let created = "creationTimestamp: '2023-11-14T22:13:15Z'";
        for (yaml, wide, want_cols, want) in [
            (
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, {created}}}\n\
                     spec: {{nodeName: n1, containers: [{{name: a, image: x}}, {{name: b, image: y}}]}}\n\
                     status: {{phase: Running, podIP: 10.1.0.5, containerStatuses: [\
                     {{name: a, ready: true, restartCount: 2}}, \
                     {{name: b, ready: false, restartCount: 1, state: {{waiting: {{reason: CrashLoopBackOff}}}}, \
                     lastState: {{terminated: {{exitCode: 1, finishedAt: '2023-11-14T22:10:00Z'}}}}}}]}}"
                ),
                true,
                "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
                vec!["web", "1/2", "CrashLoopBackOff", "3 (3m20s ago)", "5s", "10.1.0.5", "n1", "<none>", "<none>"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, {created}, deletionTimestamp: '2023-11-14T22:13:19Z'}}\n\
                     spec: {{containers: [{{name: a, image: x}}]}}"
                ),
                false,
                "NAME READY STATUS RESTARTS AGE",
                vec!["p", "0/1", "Terminating", "0", "5s"],
            ),
            (
                format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, {created}}}\n\
                     spec: {{replicas: 3, selector: {{matchLabels: {{app: d}}}}, template: {{spec: {{containers: [{{name: c, image: nginx}}]}}}}}}\n\
                     status: {{readyReplicas: 2, updatedReplicas: 3, availableReplicas: 2}}"
                ),
                true,
                "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
                vec!["d", "2/3", "3", "2", "5s", "c", "nginx", "app=d"],
            ),
            (
                format!(
                    "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: r, {created}}}\n\
                     spec: {{replicas: 2, selector: {{matchLabels: {{app: d}}}}}}\nstatus: {{replicas: 2, readyReplicas: 1}}"
                ),
                false,
                "NAME DESIRED CURRENT READY AGE",
                vec!["r", "2", "2", "1", "5s"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: s, {created}}}\n\
                     spec: {{type: NodePort, clusterIP: 10.96.0.10, selector: {{app: s}}, \
                     ports: [{{port: 80, nodePort: 30080}}, {{port: 53, protocol: UDP}}]}}"
                ),
                true,
                "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR",
                vec!["s", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP,53/UDP", "5s", "app=s"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, {created}}}\nspec: {{type: LoadBalancer, ports: [{{port: 443}}]}}"
                ),
                false,
                "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
                vec!["lb", "LoadBalancer", "<none>", "<pending>", "443/TCP", "5s"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Node\nmetadata: {{name: n1, {created}, labels: {{node-role.kubernetes.io/control-plane: ''}}}}\n\
                     spec: {{unschedulable: true}}\nstatus: {{conditions: [{{type: Ready, status: 'True'}}], \
                     nodeInfo: {{kubeletVersion: v0.1.0}}, addresses: [{{type: InternalIP, address: 10.0.0.1}}]}}"
                ),
                true,
                "NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME",
                vec![
                    "n1", "Ready,SchedulingDisabled", "control-plane", "5s", "v0.1.0", "10.0.0.1", "<none>",
                    "<none>", "<none>", "<none>",
                ],
            ),
            (
                format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: prod, {created}}}"),
                false,
                "NAME STATUS AGE",
                vec!["prod", "Active", "5s"],
            ),
            (
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, {created}}}\ndata: {{a: '1', b: '2'}}"),
                false,
                "NAME DATA AGE",
                vec!["c", "2", "5s"],
            ),
            (
                format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s, {created}}}\ndata: {{a: YQ==}}"),
                false,
                "NAME TYPE DATA AGE",
                vec!["s", "Opaque", "1", "5s"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: e, {created}}}\n\
                     subsets: [{{addresses: [{{ip: 10.0.0.1}}, {{ip: 10.0.0.2}}, {{ip: 10.0.0.3}}, {{ip: 10.0.0.4}}], ports: [{{port: 80}}]}}]"
                ),
                false,
                "NAME ENDPOINTS AGE",
                vec!["e", "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more...", "5s"],
            ),
            (
                format!(
                    "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: l, {created}}}\nspec: {{holderIdentity: s1}}"
                ),
                false,
                "NAME HOLDER AGE",
                vec!["l", "s1", "5s"],
            ),
            (
                "apiVersion: v1\nkind: Event\nmetadata: {name: e1}\ninvolvedObject: {kind: Pod, name: web}\n\
                 reason: Scheduled\nmessage: assigned\ntype: Normal\nlastTimestamp: '2023-11-14T22:10:00Z'"
                    .to_string(),
                false,
                "LAST SEEN TYPE REASON OBJECT MESSAGE",
                vec!["3m20s", "Normal", "Scheduled", "pod/web", "assigned"],
            ),
            (
                format!(
                    "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, {created}}}\n\
                     spec: {{ingressClassName: nginx, rules: [{{host: a.example}}, {{}}]}}"
                ),
                false,
                "NAME CLASS HOSTS ADDRESS PORTS AGE",
                vec!["i", "nginx", "a.example,*", "", "80", "5s"],
            ),
            (
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v, {created}}}\n\
                     spec: {{hosts: ['*'], gateways: [bookinfo-gateway]}}"
                ),
                false,
                "NAME GATEWAYS HOSTS AGE",
                vec!["v", r#"["bookinfo-gateway"]"#, r#"["*"]"#, "5s"],
            ),
            (
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d, {created}}}\nspec: {{host: reviews}}"
                ),
                false,
                "NAME HOST AGE",
                vec!["d", "reviews", "5s"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: q, {created}}}\n\
                     spec: {{hard: {{pods: '10', requests.cpu: '1', limits.memory: 2Gi}}}}\nstatus: {{used: {{pods: '3'}}}}"
                ),
                false,
                "NAME AGE REQUEST LIMIT",
                vec!["q", "5s", "pods: 3/10, requests.cpu: 0/1", "limits.memory: 0/2Gi"],
            ),
            (
                format!("apiVersion: v1\nkind: LimitRange\nmetadata: {{name: l, {created}}}"),
                false,
                "NAME CREATED AT",
                vec!["l", "2023-11-14T22:13:15Z"],
            ),
            (
                format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g, {created}}}"),
                true,
                "NAME AGE",
                vec!["g", "5s"],
            ),
        ] {
            let o = obj(&yaml);
            let cols = columns(o.resource_type(), wide).join(" ");
            assert_eq!(cols, want_cols, "{yaml}");
            let got = cells(&o, NOW, wide);
            assert_eq!(got, strings(&want), "{yaml}");
            assert_eq!(got.len(), columns(o.resource_type(), wide).len(), "{yaml}");
        }
    }

    #[test]
    fn selectors_and_labels() {
        let mut ls = LabelSelector::default();
        assert_eq!(selector_string(None), "<none>");
        assert_eq!(selector_string(Some(&ls)), "<none>");
        ls.match_labels.insert("app".into(), "web".into());
        ls.match_expressions
            .push(berth_proto::metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: vec!["a".into(), "b".into()],
            });
        assert_eq!(selector_string(Some(&ls)), "app=web,tier in (a,b)");
        assert_eq!(labels_string(&BTreeMap::new()), "<none>");
        assert_eq!(labels_string(&ls.match_labels), "app=web");
    }
}
