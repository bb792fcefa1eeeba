//! `berth describe`: an object as kubectl's multi-section text, with the Events whose
//! involvedObject is that object. The text is built by pure functions ([`describe_text`]).

use super::printers::{self, age, labels_string, selector_string, NONE};
use super::{resource_type, AlreadyPrinted, Ctx, Target};
use berth_client::{ClientError, ListParams};
use berth_proto::corev1::{self, Container, Event};
use berth_proto::manifest::Object;
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub target: Target,
    /// The kind (pods, po, Pod, deployments.apps, ...).
    pub kind: String,
    /// Names; none describes every object of the kind (in the namespace, matching -l).
    pub names: Vec<String>,
    /// Label selector, when no names are given.
    #[arg(short = 'l', long = "selector", default_value = "")]
    pub selector: String,
}

pub async fn run(a: DescribeArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&a.target)?;
    let rt = resource_type(&a.kind)?;
    let ns = ctx.ns_for(rt).to_string();
    let mut objs = Vec::new();
    let mut failed = false;
    if a.names.is_empty() {
        let params = ListParams {
            label_selector: a.selector.clone(),
            ..Default::default()
        };
        objs = ctx.client.list_all_objects(rt.plural, &ns, &params).await?.items;
        if objs.is_empty() {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        }
    }
    for n in &a.names {
        match ctx.client.get_object(rt.plural, &ns, n).await {
            Ok(o) => objs.push(o),
            Err(e @ ClientError::NotFound(_)) => {
                eprintln!("{}", super::client_error_text(&e));
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let now = super::get::now_s();
    for (i, obj) in objs.iter().enumerate() {
        let events = events_for(&ctx, obj).await?;
        let endpoints = match obj {
            Object::Service(_) => ctx
                .client
                .get_object("endpoints", obj.namespace(), obj.name())
                .await
                .ok(),
            _ => None,
        };
        if i > 0 {
            println!("\n");
        }
        print!("{}", describe_text(obj, &events, endpoints.as_ref(), now));
    }
    if failed {
        return Err(AlreadyPrinted.into());
    }
    Ok(())
}

/// The Events about `obj` (by involvedObject kind and name, and uid when both have one),
/// oldest first.
async fn events_for(ctx: &Ctx, obj: &Object) -> anyhow::Result<Vec<Event>> {
    let params = ListParams {
        field_selector: format!(
            "involvedObject.kind={},involvedObject.name={}",
            obj.kind_name(),
            obj.name()
        ),
        ..Default::default()
    };
    let uid = obj.metadata().map_or("", |m| m.uid.as_str());
    let list = ctx
        .client
        .list_all_objects("events", obj.namespace(), &params)
        .await?;
    let mut events: Vec<Event> = list
        .items
        .into_iter()
        .filter_map(|o| match o {
            Object::Event(e) => Some(e),
            _ => None,
        })
        .filter(|e| {
            let io_uid = e.involved_object.as_ref().map_or("", |io| io.uid.as_str());
            io_uid.is_empty() || uid.is_empty() || io_uid == uid
        })
        .collect();
    events.sort_by_key(|e| {
        let m = e.metadata.clone().unwrap_or_default();
        printers::parse_rfc3339(&printers::event_last_seen(e, &m)).unwrap_or(0)
    });
    Ok(events)
}

/// One line of a describe text, at a nesting level.
enum Line {
    /// `Key:  value` (the value column aligned per level).
    Kv(String, String),
    /// Free text.
    Raw(String),
    /// A further value of the `Kv` line above (more labels), under its value.
    More(String),
}

/// Lines of `Key: value` at nesting levels, aligned per level like kubectl's describers.
#[derive(Default)]
struct Text {
    lines: Vec<(usize, Line)>,
}

impl Text {
    fn kv(&mut self, level: usize, key: &str, value: impl Into<String>) {
        self.lines
            .push((level, Line::Kv(format!("{key}:"), value.into())));
    }

    fn raw(&mut self, level: usize, text: impl Into<String>) {
        self.lines.push((level, Line::Raw(text.into())));
    }

    /// A map as `k=v` lines, the first on the key's line (`<none>` when empty).
    fn map(&mut self, level: usize, key: &str, m: &BTreeMap<String, String>) {
        if m.is_empty() {
            self.kv(level, key, NONE);
            return;
        }
        for (i, (k, v)) in m.iter().enumerate() {
            if i == 0 {
                self.kv(level, key, format!("{k}={v}"));
            } else {
                self.lines.push((level, Line::More(format!("{k}={v}"))));
            }
        }
    }

    fn render(&self) -> String {
        let mut width: BTreeMap<usize, usize> = BTreeMap::new();
        for (level, line) in &self.lines {
            if let Line::Kv(key, _) = line {
                let w = width.entry(*level).or_default();
                *w = (*w).max(key.len());
            }
        }
        let mut out = String::new();
        for (level, line) in &self.lines {
            let indent = "  ".repeat(*level);
            let w = width.get(level).copied().unwrap_or(0) + 2;
            match line {
                Line::Kv(key, value) if value.is_empty() => out.push_str(&format!("{indent}{key}\n")),
                Line::Kv(key, value) => out.push_str(&format!("{indent}{key:w$}{value}\n")),
                Line::Raw(text) => out.push_str(&format!("{indent}{text}\n")),
                Line::More(value) => out.push_str(&format!("{indent}{:w$}{value}\n", "")),
            }
        }
        out
    }
}

/// The describe text of `obj`.
pub fn describe_text(obj: &Object, events: &[Event], endpoints: Option<&Object>, now_s: i64) -> String {
    let meta = obj.metadata().cloned().unwrap_or_default();
    let mut t = Text::default();
    t.kv(0, "Name", meta.name.clone());
    if obj.resource_type().namespaced {
        t.kv(0, "Namespace", meta.namespace.clone());
    }
    t.map(0, "Labels", &meta.labels);
    t.map(0, "Annotations", &meta.annotations);
    t.kv(0, "CreationTimestamp", meta.creation_timestamp.clone());
    if !meta.deletion_timestamp.is_empty() {
        t.kv(0, "DeletionTimestamp", meta.deletion_timestamp.clone());
    }
    if !meta.finalizers.is_empty() {
        t.kv(0, "Finalizers", format!("{:?}", meta.finalizers));
    }
    if let Some(c) = meta.owner_references.iter().find(|o| o.controller == Some(true)) {
        t.kv(0, "Controlled By", format!("{}/{}", c.kind, c.name));
    }
    match obj {
        Object::Pod(p) => pod(&mut t, p),
        Object::Deployment(d) => deployment(&mut t, d),
        Object::ReplicaSet(r) => replica_set(&mut t, r),
        Object::Service(s) => service(&mut t, s, endpoints),
        Object::Node(n) => node(&mut t, n),
        Object::Namespace(n) => {
            let phase = n.status.as_ref().map_or("", |s| s.phase.as_str());
            t.kv(0, "Status", if phase.is_empty() { "Active" } else { phase });
        }
        Object::ConfigMap(c) => {
            t.raw(0, "\nData\n====");
            for (k, v) in &c.data {
                t.raw(0, format!("{k}:\n----\n{v}\n"));
            }
            t.raw(0, "\nBinaryData\n====");
            for (k, v) in &c.binary_data {
                t.raw(0, format!("{k}: {} bytes", v.len()));
            }
        }
        Object::Secret(s) => {
            t.kv(0, "Type", if s.r#type.is_empty() { "Opaque" } else { &s.r#type });
            t.raw(0, "\nData\n====");
            for (k, v) in &s.data {
                t.raw(0, format!("{k}:  {} bytes", v.len()));
            }
        }
        _ => generic(&mut t, obj),
    }
    let mut out = t.render();
    out.push_str(&events_text(events, now_s));
    out
}

fn pod(t: &mut Text, p: &corev1::Pod) {
    let spec = p.spec.clone().unwrap_or_default();
    let st = p.status.clone().unwrap_or_default();
    t.kv(
        0,
        "Node",
        if spec.node_name.is_empty() {
            NONE
        } else {
            &spec.node_name
        },
    );
    if !st.start_time.is_empty() {
        t.kv(0, "Start Time", st.start_time.clone());
    }
    t.kv(0, "Status", printers::pod_status(p));
    t.kv(0, "IP", st.pod_ip.clone());
    t.kv(0, "Containers", "");
    for c in &spec.containers {
        let cs = st.container_statuses.iter().find(|s| s.name == c.name);
        container(t, 1, c, cs);
    }
    if !st.conditions.is_empty() {
        t.kv(0, "Conditions", "");
        t.raw(1, "Type              Status");
        for c in &st.conditions {
            t.raw(1, format!("{:<17} {}", c.r#type, c.status));
        }
    }
    t.map(0, "Node-Selectors", &spec.node_selector);
}

/// A container's section, its name at `level`.
fn container(t: &mut Text, level: usize, c: &Container, cs: Option<&corev1::ContainerStatus>) {
    t.kv(level, &c.name, "");
    let level = level + 1;
    t.kv(level, "Image", c.image.clone());
    let ports: Vec<String> = c
        .ports
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() { "TCP" } else { &p.protocol };
            format!("{}/{proto}", p.container_port)
        })
        .collect();
    t.kv(
        level,
        "Port",
        if ports.is_empty() {
            NONE.into()
        } else {
            ports.join(", ")
        },
    );
    if !c.command.is_empty() {
        t.kv(level, "Command", c.command.join(" "));
    }
    if !c.args.is_empty() {
        t.kv(level, "Args", c.args.join(" "));
    }
    if let Some(cs) = cs {
        let state = cs.state.clone().unwrap_or_default();
        let s = if state.running.is_some() {
            "Running".to_string()
        } else if let Some(w) = &state.waiting {
            format!("Waiting ({})", w.reason)
        } else if let Some(x) = &state.terminated {
            format!("Terminated ({}, exit code {})", x.reason, x.exit_code)
        } else {
            "Waiting".to_string()
        };
        t.kv(level, "State", s);
        t.kv(level, "Ready", cs.ready.to_string());
        t.kv(level, "Restart Count", cs.restart_count.to_string());
    }
    let env: BTreeMap<String, String> = c.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    t.map(level, "Environment", &env);
}

fn template(t: &mut Text, tmpl: Option<&corev1::PodTemplateSpec>) {
    let Some(tmpl) = tmpl else { return };
    t.kv(0, "Pod Template", "");
    let labels = tmpl
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    t.map(1, "Labels", &labels);
    t.kv(1, "Containers", "");
    for c in tmpl.spec.as_ref().map_or(&[][..], |s| &s.containers) {
        container(t, 2, c, None);
    }
}

fn deployment(t: &mut Text, d: &berth_proto::appsv1::Deployment) {
    let spec = d.spec.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    t.kv(0, "Selector", selector_string(spec.selector.as_ref()));
    t.kv(
        0,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            spec.replicas.unwrap_or(1),
            st.updated_replicas,
            st.replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
    );
    let strategy = spec.strategy.clone().unwrap_or_default();
    t.kv(0, "StrategyType", strategy.r#type.clone());
    t.kv(0, "MinReadySeconds", spec.min_ready_seconds.to_string());
    if let Some(ru) = &strategy.rolling_update {
        let f = |v: &Option<berth_proto::metav1::IntOrString>| {
            v.as_ref().map_or(String::new(), |x| x.to_string())
        };
        t.kv(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                f(&ru.max_unavailable),
                f(&ru.max_surge)
            ),
        );
    }
    template(t, spec.template.as_ref());
}

fn replica_set(t: &mut Text, r: &berth_proto::appsv1::ReplicaSet) {
    let spec = r.spec.clone().unwrap_or_default();
    let st = r.status.clone().unwrap_or_default();
    t.kv(0, "Selector", selector_string(spec.selector.as_ref()));
    t.kv(
        0,
        "Replicas",
        format!("{} current / {} desired", st.replicas, spec.replicas.unwrap_or(1)),
    );
    template(t, spec.template.as_ref());
}

fn service(t: &mut Text, s: &corev1::Service, endpoints: Option<&Object>) {
    let spec = s.spec.clone().unwrap_or_default();
    t.kv(
        0,
        "Selector",
        if spec.selector.is_empty() {
            NONE.into()
        } else {
            labels_string(&spec.selector)
        },
    );
    t.kv(
        0,
        "Type",
        if spec.r#type.is_empty() {
            "ClusterIP"
        } else {
            &spec.r#type
        },
    );
    t.kv(
        0,
        "IP",
        if spec.cluster_ip.is_empty() {
            NONE
        } else {
            &spec.cluster_ip
        },
    );
    for p in &spec.ports {
        let proto = if p.protocol.is_empty() { "TCP" } else { &p.protocol };
        let name = if p.name.is_empty() { "<unset>" } else { &p.name };
        t.kv(0, "Port", format!("{name}  {}/{proto}", p.port));
        let target = p
            .target_port
            .as_ref()
            .map_or(p.port.to_string(), |x| x.to_string());
        t.kv(0, "TargetPort", format!("{target}/{proto}"));
        if p.node_port != 0 {
            t.kv(0, "NodePort", format!("{name}  {}/{proto}", p.node_port));
        }
    }
    let eps = match endpoints {
        Some(Object::Endpoints(e)) => printers::endpoints_string(e),
        _ => NONE.into(),
    };
    t.kv(0, "Endpoints", eps);
    t.kv(
        0,
        "Session Affinity",
        if spec.session_affinity.is_empty() {
            "None"
        } else {
            &spec.session_affinity
        },
    );
}

fn node(t: &mut Text, n: &corev1::Node) {
    let st = n.status.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    t.kv(0, "Unschedulable", spec.unschedulable.to_string());
    t.kv(0, "Conditions", "");
    t.raw(1, "Type              Status  Reason");
    for c in &st.conditions {
        t.raw(1, format!("{:<17} {:<7} {}", c.r#type, c.status, c.reason));
    }
    t.kv(0, "Addresses", "");
    for a in &st.addresses {
        t.kv(1, &a.r#type, a.address.clone());
    }
    t.map(0, "Capacity", &st.capacity);
    t.map(0, "Allocatable", &st.allocatable);
    if let Some(i) = &st.node_info {
        t.kv(0, "System Info", "");
        t.kv(1, "Kernel Version", i.kernel_version.clone());
        t.kv(1, "OS Image", i.os_image.clone());
        t.kv(1, "Architecture", i.architecture.clone());
        t.kv(1, "Kubelet Version", i.kubelet_version.clone());
    }
}

/// Kinds without their own describer: the rest of the object (spec and status) as
/// indented YAML.
fn generic(t: &mut Text, obj: &Object) {
    let mut v = obj.to_json_value();
    if let Some(m) = v.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            m.remove(k);
        }
        for (k, val) in m.iter() {
            let yaml = serde_yaml_ng::to_string(val).expect("a JSON value serializes to YAML");
            t.kv(0, &title(k), "");
            for line in yaml.lines() {
                t.raw(1, line.to_string());
            }
        }
    }
}

/// `spec` -> `Spec`, `involvedObject` -> `Involved Object`.
fn title(k: &str) -> String {
    let mut out = String::new();
    for (i, c) in k.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The Events section: a table of type, reason, age, source and message, or `<none>`.
pub fn events_text(events: &[Event], now_s: i64) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let headers: Vec<String> = ["Type", "Reason", "Age", "From", "Message"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let under: Vec<String> = headers.iter().map(|h| "-".repeat(h.len())).collect();
    let mut rows = vec![under];
    for e in events {
        let m = e.metadata.clone().unwrap_or_default();
        let from = if !e.reporting_component.is_empty() {
            e.reporting_component.clone()
        } else {
            e.source.as_ref().map_or(String::new(), |s| s.component.clone())
        };
        let mut a = age(&printers::event_last_seen(e, &m), now_s);
        if e.count > 1 {
            let first = if e.first_timestamp.is_empty() {
                &m.creation_timestamp
            } else {
                &e.first_timestamp
            };
            a = format!("{a} (x{} over {})", e.count, age(first, now_s));
        }
        rows.push(vec![
            e.r#type.clone(),
            e.reason.clone(),
            a,
            from,
            e.message.clone(),
        ]);
    }
    let table = printers::render_table(&headers, &rows, false);
    let mut out = "Events:\n".to_string();
    for line in table.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::manifest;

    #[test]
    fn pod_with_events() {
        let pod = manifest::parse_one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default, labels: {app: web, tier: front}, \
             creationTimestamp: '2023-11-14T22:13:15Z'}\n\
             spec: {nodeName: n1, containers: [{name: nginx, image: nginx:1.25, ports: [{containerPort: 80}]}]}\n\
             status: {phase: Running, podIP: 10.1.0.5, containerStatuses: [{name: nginx, ready: true, state: {running: {}}}]}\n",
        )
        .unwrap();
        let ev = |reason: &str, count: i32| {
            let Object::Event(e) = manifest::parse_one(&format!(
                "apiVersion: v1\nkind: Event\nmetadata: {{name: e}}\ninvolvedObject: {{kind: Pod, name: web}}\n\
                 type: Normal\nreason: {reason}\nmessage: did {reason}\nsource: {{component: kubelet}}\n\
                 count: {count}\nfirstTimestamp: '2023-11-14T22:03:20Z'\nlastTimestamp: '2023-11-14T22:13:10Z'\n"
            ))
            .unwrap() else {
                unreachable!()
            };
            e
        };
        let text = describe_text(&pod, &[ev("Pulled", 1), ev("Started", 3)], None, 1_700_000_000);
        let want = "\
Name:               web
Namespace:          default
Labels:             app=web
                    tier=front
Annotations:        <none>
CreationTimestamp:  2023-11-14T22:13:15Z
Node:               n1
Status:             Running
IP:                 10.1.0.5
Containers:
  nginx:
    Image:          nginx:1.25
    Port:           80/TCP
    State:          Running
    Ready:          true
    Restart Count:  0
    Environment:    <none>
Node-Selectors:     <none>
Events:
  Type     Reason    Age                 From      Message
  ----     ------    ---                 ----      -------
  Normal   Pulled    10s                 kubelet   did Pulled
  Normal   Started   10s (x3 over 10m)   kubelet   did Started
";
        assert_eq!(text, want);
        assert_eq!(events_text(&[], 0), "Events:  <none>\n");
    }

    #[test]
    fn generic_kinds_show_their_spec() {
        let vs = manifest::parse_one(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\n\
             spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}\n",
        )
        .unwrap();
        let text = describe_text(&vs, &[], None, 0);
        assert!(text.contains("Spec:\n  hosts:\n  - reviews\n"), "{text}");
        assert!(text.ends_with("Events:  <none>\n"), "{text}");
        assert_eq!(title("involvedObject"), "Involved Object");
    }
}
