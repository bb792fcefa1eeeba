//! Defaulting: fills in what Kubernetes fills in when an object is written,
//! so stored objects state their behaviour explicitly. Idempotent: applying
//! it twice changes nothing more. Runs before [`crate::validate`].
//!
//! What is set (only where unset):
//! - every kind: `apiVersion` and `kind`;
//! - pod specs (Pods, and the templates of ReplicaSets and Deployments):
//!   restartPolicy Always, dnsPolicy ClusterFirst, terminationGracePeriodSeconds
//!   30, schedulerName default-scheduler, enableServiceLinks true; a volume
//!   without a source gets emptyDir; secret/configMap volume defaultMode 0644;
//!   containers: imagePullPolicy (Always for an untagged or `:latest` image,
//!   else IfNotPresent), terminationMessagePath /dev/termination-log,
//!   terminationMessagePolicy File, port protocol TCP; probes: timeoutSeconds 1,
//!   periodSeconds 10, successThreshold 1, failureThreshold 3, httpGet path /
//!   and scheme HTTP; env fieldRef apiVersion v1; toleration operator Equal
//!   when a value is given;
//! - Service: type ClusterIP, sessionAffinity None, port protocol TCP,
//!   targetPort = port; NodePort/LoadBalancer: externalTrafficPolicy Cluster;
//!   internalTrafficPolicy Cluster (except ExternalName);
//! - Endpoints: port protocol TCP;
//! - ReplicaSet: replicas 1;
//! - Deployment: replicas 1, strategy RollingUpdate with maxUnavailable and
//!   maxSurge 25%, revisionHistoryLimit 10, progressDeadlineSeconds 600;
//! - Secret: type Opaque; `stringData` folded into `data` (stringData wins)
//!   and cleared.
//!
//! Not here (it needs the server's state): metadata.namespace from the
//! request, uid, resourceVersion, timestamps, generation, cluster IPs.

use crate::appsv1;
use crate::corev1;
use crate::manifest::Object;
use crate::metav1::IntOrString;

/// Applies the defaults of the object's kind.
pub fn apply(obj: &mut Object) {
    obj.set_type_meta();
    match obj {
        Object::Pod(o) => {
            if let Some(s) = &mut o.spec {
                pod_spec(s);
            }
        }
        Object::Service(o) => {
            if let Some(s) = &mut o.spec {
                service_spec(s);
            }
        }
        Object::Endpoints(o) => {
            for s in &mut o.subsets {
                for p in &mut s.ports {
                    default_str(&mut p.protocol, "TCP");
                }
            }
        }
        Object::Secret(o) => secret(o),
        Object::ReplicaSet(o) => {
            if let Some(s) = &mut o.spec {
                s.replicas.get_or_insert(1);
                if let Some(s) = s.template.as_mut().and_then(|t| t.spec.as_mut()) {
                    pod_spec(s);
                }
            }
        }
        Object::Deployment(o) => {
            if let Some(s) = &mut o.spec {
                deployment_spec(s);
            }
        }
        _ => {}
    }
}

fn default_str(field: &mut String, value: &str) {
    if field.is_empty() {
        *field = value.to_string();
    }
}

fn default_zero(field: &mut i32, value: i32) {
    if *field == 0 {
        *field = value;
    }
}

/// Kubernetes' rule: `Always` when the image has no tag or the tag
/// `latest` (a digest counts as pinned), else `IfNotPresent`.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a
    // registry port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Defaults of a pod spec (also used for pod templates).
pub fn pod_spec(s: &mut corev1::PodSpec) {
    default_str(&mut s.restart_policy, "Always");
    default_str(&mut s.dns_policy, "ClusterFirst");
    default_str(&mut s.scheduler_name, "default-scheduler");
    s.termination_grace_period_seconds.get_or_insert(30);
    s.enable_service_links.get_or_insert(true);
    if s.service_account_name.is_empty() && !s.service_account.is_empty() {
        s.service_account_name = s.service_account.clone();
    }
    for v in &mut s.volumes {
        let has_source = v.host_path.is_some()
            || v.empty_dir.is_some()
            || v.secret.is_some()
            || v.config_map.is_some()
            || v.persistent_volume_claim.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some();
        if !has_source {
            v.empty_dir = Some(Default::default());
        }
        if let Some(sec) = &mut v.secret {
            sec.default_mode.get_or_insert(0o644);
        }
        if let Some(cm) = &mut v.config_map {
            cm.default_mode.get_or_insert(0o644);
        }
        if let Some(d) = &mut v.downward_api {
            d.default_mode.get_or_insert(0o644);
        }
        if let Some(p) = &mut v.projected {
            p.default_mode.get_or_insert(0o644);
        }
    }
    for c in s.init_containers.iter_mut().chain(s.containers.iter_mut()) {
        container(c);
    }
    for t in &mut s.tolerations {
        if t.operator.is_empty() && !t.key.is_empty() {
            t.operator = "Equal".to_string();
        }
    }
}

fn container(c: &mut corev1::Container) {
    if c.image_pull_policy.is_empty() {
        c.image_pull_policy = image_pull_policy(&c.image).to_string();
    }
    default_str(&mut c.termination_message_path, "/dev/termination-log");
    default_str(&mut c.termination_message_policy, "File");
    for p in &mut c.ports {
        default_str(&mut p.protocol, "TCP");
    }
    for pr in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_zero(&mut pr.timeout_seconds, 1);
        default_zero(&mut pr.period_seconds, 10);
        default_zero(&mut pr.success_threshold, 1);
        default_zero(&mut pr.failure_threshold, 3);
        if let Some(h) = &mut pr.http_get {
            default_str(&mut h.path, "/");
            default_str(&mut h.scheme, "HTTP");
        }
    }
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = &mut h.http_get {
                default_str(&mut g.path, "/");
                default_str(&mut g.scheme, "HTTP");
            }
        }
    }
    for e in &mut c.env {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_str(&mut f.api_version, "v1");
        }
    }
}

fn service_spec(s: &mut corev1::ServiceSpec) {
    default_str(&mut s.r#type, "ClusterIP");
    default_str(&mut s.session_affinity, "None");
    if s.r#type != "ExternalName" {
        for p in &mut s.ports {
            default_str(&mut p.protocol, "TCP");
            if p.target_port.as_ref().is_none_or(|t| t.value.is_none()) {
                p.target_port = Some(IntOrString::int(p.port));
            }
        }
        if s.internal_traffic_policy.is_none() {
            s.internal_traffic_policy = Some("Cluster".to_string());
        }
    }
    if matches!(s.r#type.as_str(), "NodePort" | "LoadBalancer") {
        default_str(&mut s.external_traffic_policy, "Cluster");
    }
}

fn deployment_spec(s: &mut appsv1::DeploymentSpec) {
    s.replicas.get_or_insert(1);
    s.revision_history_limit.get_or_insert(10);
    s.progress_deadline_seconds.get_or_insert(600);
    let st = s.strategy.get_or_insert_with(Default::default);
    default_str(&mut st.r#type, "RollingUpdate");
    if st.r#type == "RollingUpdate" {
        let ru = st.rolling_update.get_or_insert_with(Default::default);
        for f in [&mut ru.max_unavailable, &mut ru.max_surge] {
            if f.as_ref().is_none_or(|v| v.value.is_none()) {
                *f = Some(IntOrString::string("25%"));
            }
        }
    }
    if let Some(s) = s.template.as_mut().and_then(|t| t.spec.as_mut()) {
        pod_spec(s);
    }
}

fn secret(o: &mut corev1::Secret) {
    default_str(&mut o.r#type, "Opaque");
    for (k, v) in std::mem::take(&mut o.string_data) {
        o.data.insert(k, v.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    #[test]
    fn pull_policy_by_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("registry.k8s.io/redis:e2e", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v2", "IfNotPresent"),
            ("app@sha256:abcd", "IfNotPresent"),
        ];
        for (image, want) in cases {
            assert_eq!(image_pull_policy(image), want, "{image}");
        }
    }

    fn defaulted(yaml: &str) -> serde_json::Value {
        let mut obj = manifest::parse_one(yaml).unwrap();
        apply(&mut obj);
        let once = obj.clone();
        apply(&mut obj);
        assert_eq!(obj, once, "defaulting is idempotent");
        obj.to_json_value()
    }

    #[test]
    fn table() {
        // (manifest, JSON pointer, expected value)
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: nginx\n    ports: [{containerPort: 80}]\n    readinessProbe: {httpGet: {port: 80}}\n  volumes: [{name: scratch}, {name: s, secret: {secretName: s}}]\n";
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 81, targetPort: http}]}\n";
        let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {containers: [{name: a, image: 'nginx:1.25'}]}\n";
        let deploy_zero = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 0, strategy: {type: Recreate}}\n";
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YQ==}\nstringData: {b: bee, a: override}\n";
        let cases: &[(&str, &str, serde_json::Value)] = &[
            (pod, "/spec/restartPolicy", "Always".into()),
            (pod, "/spec/dnsPolicy", "ClusterFirst".into()),
            (pod, "/spec/terminationGracePeriodSeconds", 30.into()),
            (pod, "/spec/schedulerName", "default-scheduler".into()),
            (pod, "/spec/containers/0/imagePullPolicy", "Always".into()),
            (pod, "/spec/containers/0/ports/0/protocol", "TCP".into()),
            (pod, "/spec/containers/0/readinessProbe/periodSeconds", 10.into()),
            (pod, "/spec/containers/0/readinessProbe/timeoutSeconds", 1.into()),
            (
                pod,
                "/spec/containers/0/readinessProbe/failureThreshold",
                3.into(),
            ),
            (
                pod,
                "/spec/containers/0/readinessProbe/httpGet/scheme",
                "HTTP".into(),
            ),
            (
                pod,
                "/spec/containers/0/terminationMessagePath",
                "/dev/termination-log".into(),
            ),
            (pod, "/spec/volumes/0/emptyDir", serde_json::json!({})),
            (pod, "/spec/volumes/1/secret/defaultMode", 420.into()),
            (svc, "/spec/type", "ClusterIP".into()),
            (svc, "/spec/sessionAffinity", "None".into()),
            (svc, "/spec/ports/0/protocol", "TCP".into()),
            (svc, "/spec/ports/0/targetPort", 80.into()),
            (svc, "/spec/ports/1/targetPort", "http".into()),
            (deploy, "/spec/replicas", 1.into()),
            (deploy, "/spec/strategy/type", "RollingUpdate".into()),
            (deploy, "/spec/strategy/rollingUpdate/maxSurge", "25%".into()),
            (
                deploy,
                "/spec/strategy/rollingUpdate/maxUnavailable",
                "25%".into(),
            ),
            (deploy, "/spec/revisionHistoryLimit", 10.into()),
            (deploy, "/spec/progressDeadlineSeconds", 600.into()),
            (deploy, "/spec/template/spec/restartPolicy", "Always".into()),
            (
                deploy,
                "/spec/template/spec/containers/0/imagePullPolicy",
                "IfNotPresent".into(),
            ),
            (deploy_zero, "/spec/replicas", 0.into()),
            (
                deploy_zero,
                "/spec/strategy",
                serde_json::json!({"type": "Recreate"}),
            ),
            (secret, "/type", "Opaque".into()),
            (
                secret,
                "/data",
                serde_json::json!({"a": "b3ZlcnJpZGU=", "b": "YmVl"}),
            ),
        ];
        for (yaml, pointer, want) in cases {
            let got = defaulted(yaml);
            assert_eq!(got.pointer(pointer), Some(want), "{pointer} in\n{yaml}");
        }
        assert_eq!(defaulted(secret).get("stringData"), None);
    }
}
