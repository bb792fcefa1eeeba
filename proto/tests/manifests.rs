//! Real-world manifests (Kubernetes and Istio examples under
//! `../shared/testdata/manifests/`) and hand-written bad ones, through the
//! whole manifest path: parse, validate, default, protobuf round trip,
//! serialize back.

use berth_proto::manifest::{self, Object, ResourceType};
use berth_proto::{apiv1, defaults, validate};
use prost::Message;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn manifests_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/manifests");
    assert!(
        dir.is_dir(),
        "test manifests missing: expected {} (the shared testdata beside the repo)",
        dir.display()
    );
    dir
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
}

/// Numbers compared by value (`100` and `100.0` are the same percentage).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        other => other.clone(),
    }
}

/// Parse -> validate -> protobuf -> YAML -> parse, and the spec survives.
fn round_trip(label: &str, original: &Value, obj: &Object) {
    validate::validate(obj).unwrap_or_else(|e| panic!("{label}: invalid: {e}"));

    // Protobuf: the stored form, and the gRPC envelope.
    let t = obj.resource_type();
    let decoded = t.decode(&obj.encode_to_vec()).unwrap();
    assert_eq!(&decoded, obj, "{label}: protobuf round trip");
    let wire = apiv1::Object::from(obj.clone()).encode_to_vec();
    let envelope = apiv1::Object::decode(wire.as_slice()).unwrap();
    assert_eq!(Object::try_from(envelope).unwrap(), *obj, "{label}: envelope");

    // YAML and JSON back.
    let yaml = manifest::to_yaml(std::slice::from_ref(&decoded));
    let again = manifest::parse_one(&yaml).unwrap_or_else(|e| panic!("{label}: {e}\n{yaml}"));
    assert_eq!(&again, obj, "{label}: YAML round trip\n{yaml}");
    let json = manifest::to_json(&decoded);
    assert_eq!(
        &manifest::parse_one(&json).unwrap(),
        obj,
        "{label}: JSON round trip"
    );

    // Nothing lost or added, defaults not applied: the re-serialized document
    // equals the original (as JSON values, null members dropped).
    let mut original = original.clone();
    manifest::strip_nulls(&mut original);
    assert_eq!(
        normalize(&obj.to_json_value()),
        normalize(&original),
        "{label}: re-serialized document differs from the original"
    );

    // Defaulted, it is still valid, and defaulting is idempotent.
    let mut d = obj.clone();
    defaults::apply(&mut d);
    validate::validate(&d).unwrap_or_else(|e| panic!("{label}: invalid after defaulting: {e}"));
    let once = d.clone();
    defaults::apply(&mut d);
    assert_eq!(d, once, "{label}: defaulting twice");
}

#[test]
fn shared_manifests_apply_unchanged() {
    let mut files = Vec::new();
    walk(&manifests_dir(), &mut files);
    assert!(!files.is_empty(), "no manifests found");
    let mut supported = 0;
    let mut rejected = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let docs = manifest::parse_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (i, doc) in docs {
            let label = format!("{} document {i}", file.display());
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            match ResourceType::for_kind(&api_version, &kind) {
                Ok(_) => {
                    let obj = Object::from_value(doc.clone()).unwrap_or_else(|e| panic!("{label}: {e}"));
                    round_trip(&label, &doc, &obj);
                    supported += 1;
                }
                Err(_) => {
                    let err = Object::from_value(doc.clone()).unwrap_err().to_string();
                    assert!(
                        err.contains(&kind) && err.contains(&api_version),
                        "{label}: the error must name kind and apiVersion: {err}"
                    );
                    // The whole-stream parser fails on it, naming the document.
                    let whole = manifest::parse(&text).unwrap_err().to_string();
                    assert!(whole.contains(&format!("document {i}")), "{whole}");
                    rejected.push(format!("{kind} ({api_version})"));
                }
            }
        }
    }
    assert!(supported >= 50, "only {supported} supported documents found");
    assert_eq!(
        rejected,
        vec!["ServiceEntry (networking.istio.io/v1)".to_string()],
        "unexpected set of unsupported documents"
    );
}

#[test]
fn service_entry_is_rejected_clearly() {
    let text = std::fs::read_to_string(
        manifests_dir().join("istio/samples/bookinfo/networking/egress-rule-google-apis.yaml"),
    )
    .unwrap();
    let err = manifest::parse(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document 1 (ServiceEntry googleapis): unsupported kind ServiceEntry \
         (apiVersion \"networking.istio.io/v1\")"
    );
}

#[test]
fn replication_controller_is_rejected() {
    let text = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: redis-master\nspec:\n  replicas: 1\n";
    let err = manifest::parse(text).unwrap_err().to_string();
    assert_eq!(
        err,
        "document 1 (ReplicationController redis-master): unsupported kind \
         ReplicationController (apiVersion \"v1\")"
    );
}

#[test]
fn known_kind_in_old_api_version_is_rejected() {
    let text = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: web}\n";
    let err = manifest::parse(text).unwrap_err().to_string();
    assert_eq!(
        err,
        "document 1 (Deployment web): unsupported apiVersion \"extensions/v1beta1\" \
         for kind Deployment (supported: apps/v1)"
    );
}

const BLOCK: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
          name: http
        resources:
          requests:
            cpu: 250m
            memory: 64Mi
        readinessProbe:
          httpGet:
            path: /
            port: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: http
"#;

const FLOW: &str = r#"
{apiVersion: apps/v1, kind: Deployment, metadata: {name: web, labels: {app: web}},
 spec: {replicas: 2, selector: {matchLabels: {app: web}},
   template: {metadata: {labels: {app: web}},
     spec: {containers: [{name: nginx, image: "nginx:1.25",
       ports: [{containerPort: 80, name: http}],
       resources: {requests: {cpu: 250m, memory: 64Mi}},
       readinessProbe: {httpGet: {path: /, port: http}}}]}}}}
---
{apiVersion: v1, kind: Service, metadata: {name: web},
 spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}}
"#;

#[test]
fn flow_style_equals_block_style() {
    let block = manifest::parse(BLOCK).unwrap();
    let flow = manifest::parse(FLOW).unwrap();
    assert_eq!(block.len(), 2);
    assert_eq!(block, flow);
    for (i, (obj, (_, doc))) in flow
        .iter()
        .zip(manifest::parse_documents(FLOW).unwrap())
        .enumerate()
    {
        round_trip(&format!("flow document {}", i + 1), &doc, obj);
    }
}

#[test]
fn json_stream_and_list() {
    let json = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}
{"apiVersion":"v1","kind":"List","items":[
  {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dev"}},
  {"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"password":"aHVudGVyMg=="}}]}"#;
    let objs = manifest::parse(json).unwrap();
    assert_eq!(objs.len(), 3);
    assert_eq!(objs[0].key(), "/registry/configmaps//a");
    assert_eq!(objs[1].key(), "/registry/namespaces/dev");
    let Object::Secret(s) = &objs[2] else {
        panic!("not a secret")
    };
    assert_eq!(s.data["password"], b"hunter2");
    // Secret data goes back out as base64.
    assert!(manifest::to_yaml(&objs[2..]).contains("password: aHVudGVyMg=="));
    let list: Value = serde_json::from_str(&manifest::to_json_list(&objs)).unwrap();
    assert_eq!(list["items"][1]["metadata"]["name"], "dev");
}

#[test]
fn output_looks_like_kubectl() {
    let mut objs = manifest::parse(BLOCK).unwrap();
    objs[1].metadata_mut().namespace = "default".into();
    let yaml = manifest::to_yaml(&objs[1..]);
    assert_eq!(
        yaml,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\nspec:\n  \
         ports:\n  - port: 80\n    targetPort: http\n  selector:\n    app: web\n"
    );
}

/// Each bad manifest, and the one error it must produce (exact text).
#[test]
fn bad_manifests_name_the_field() {
    let pod = |spec: &str| format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{spec}");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("---\n{}", BLOCK.replace("        image: nginx:1.25\n", "        image: nginx:1.25\n        imagePullPolicyy: Always\n")),
            "document 1 (Deployment web): spec.template.spec.containers[0].imagePullPolicyy: unknown field",
        ),
        (
            format!("{BLOCK}---\n{}", pod("  containers:\n  - name: a\n    image: x\n    ports:\n    - containerPort: eighty\n")),
            "document 3 (Pod p): spec.containers[0].ports[0].containerPort: invalid type: string \"eighty\", expected i32",
        ),
        (
            pod("  containers: {name: a}\n"),
            "document 1 (Pod p): spec.containers: invalid type: map, expected a sequence",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}], selector: {app: 1}}\n".to_string(),
            "document 1 (Service s): spec.selector.app: invalid type: integer `1`, expected a string",
        ),
        (
            "apiVersion: v1\nmetadata: {name: x}\n".to_string(),
            "document 1 (x): kind: required field is missing (or not a string)",
        ),
        (
            "kind: Pod\nmetadata: {name: x}\n".to_string(),
            "document 1 (Pod x): apiVersion: required field is missing (or not a string)",
        ),
        (
            "- just\n- a list\n".to_string(),
            "document 1: expected an object, found a list",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n".to_string(),
            "",
        ),
    ];
    for (text, want) in cases {
        let err = manifest::parse(&text).unwrap_err().to_string();
        if want.is_empty() {
            assert!(err.starts_with("document 1: invalid YAML:"), "{err}");
        } else {
            assert_eq!(err, want, "for\n{text}");
        }
    }
}

/// Manifests that parse but fail validation, and an expected error each.
#[test]
fn invalid_objects_name_the_field() {
    let deploy = |container: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - {container}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            deploy("{name: a}"),
            "spec.template.spec.containers[0].image: Required value",
        ),
        (
            deploy("{name: a, image: x, resources: {limits: {memory: 1Gb}}}"),
            "spec.template.spec.containers[0].resources.limits[memory]: Invalid value: \"1Gb\": quantity \"1Gb\" has an unknown suffix",
        ),
        (
            deploy("{name: a, image: x, resources: {requests: {cpu: '2'}, limits: {cpu: 500m}}}"),
            "spec.template.spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 500m",
        ),
        (
            deploy("{name: A_b, image: x}"),
            "spec.template.spec.containers[0].name: Invalid value: \"A_b\": a lowercase RFC 1123 label",
        ),
        (
            deploy("{name: a, image: x, ports: [{containerPort: 70000}]}"),
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            deploy("{name: a, image: x, volumeMounts: [{name: data, mountPath: /data}]}"),
            "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
        ),
        (
            deploy("{name: a, image: x, imagePullPolicy: Sometimes}"),
            "spec.template.spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
        ),
        (
            deploy("{name: a, image: x}\n      - {name: a, image: y}"),
            "spec.template.spec.containers[1].name: Duplicate value: \"a\"",
        ),
        (
            deploy("{name: a, image: x}").replace("metadata: {labels: {app: web}}", "metadata: {labels: {app: api}}"),
            "spec.template.metadata.labels: Invalid value: \"app=api\": `selector` does not match template `labels`",
        ),
        (
            deploy("{name: a, image: x}").replace("name: web}", "name: Web}"),
            "metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain",
        ),
        (
            deploy("{name: a, image: x}").replace("name: web}", "name: web, labels: {'bad key': x}}"),
            "metadata.labels: Invalid value: \"bad key\": name part must consist of",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web.svc}\nspec: {ports: [{port: 80}]}\n".to_string(),
            "metadata.name: Invalid value: \"web.svc\": a lowercase RFC 1123 label",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 81}]}\n".to_string(),
            "spec.ports[0].name: Required value",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: dev, namespace: other}\n".to_string(),
            "metadata.namespace: Forbidden: not allowed on this type",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: reviews}}]\n".to_string(),
            "spec.http[0].match[0].uri: Invalid value: \"\": must specify exactly one of `exact`, `prefix` or `regex`",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    timeout: 10 seconds\n".to_string(),
            "spec.http[0].timeout: Invalid value: \"10 seconds\": invalid duration",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]\n".to_string(),
            "spec.servers[0].tls: Required value: server must have TLS settings for HTTPS protocol",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules: [{http: {paths: [{path: /, backend: {service: {name: s, port: {number: 80}}}}]}}]\n".to_string(),
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        ),
        (
            "apiVersion: v1\nkind: LimitRange\nmetadata: {name: l}\nspec: {limits: [{type: Container, min: {cpu: '1'}, max: {cpu: 500m}}]}\n".to_string(),
            "spec.limits[0].min[cpu]: Invalid value: \"1\": min value 1 is greater than max value 500m",
        ),
    ];
    for (text, want) in cases {
        let obj = manifest::parse_one(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let err = validate::validate(&obj).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?}\ngot  {err:?}\nfor\n{text}");
    }
}

#[test]
fn validation_errors_as_status() {
    let obj = manifest::parse_one(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: -1, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}}, spec: {containers: [{name: a, image: x}]}}}\n",
    )
    .unwrap();
    let status = validate::validate(&obj)
        .unwrap_err()
        .to_status(obj.resource_type(), "web");
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(
        status.message,
        "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    let cause = &status.details.unwrap().causes[0];
    assert_eq!(
        (cause.field.as_str(), cause.reason.as_str()),
        ("spec.replicas", "Invalid value")
    );
}

#[test]
fn quantities_accept_numbers() {
    let text = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q}\nspec: {hard: {pods: 10, cpu: 1.5, memory: 1Gi}}\n";
    let Object::ResourceQuota(q) = manifest::parse_one(text).unwrap() else {
        panic!()
    };
    let hard = &q.spec.unwrap().hard;
    assert_eq!(hard["pods"], "10");
    assert_eq!(hard["cpu"], "1.5");
    assert_eq!(hard["memory"], "1Gi");
}

#[test]
fn resource_names_and_keys() {
    for (name, plural) in [
        ("po", "pods"),
        ("Pods", "pods"),
        ("deploy", "deployments"),
        ("deployments.apps", "deployments"),
        ("svc", "services"),
        ("ns", "namespaces"),
        ("no", "nodes"),
        ("cm", "configmaps"),
        ("rs", "replicasets"),
        ("ep", "endpoints"),
        ("quota", "resourcequotas"),
        ("limits", "limitranges"),
        ("ing", "ingresses"),
        ("vs", "virtualservices"),
        ("dr", "destinationrules"),
        ("gw", "gateways"),
        ("gateways.networking.istio.io", "gateways"),
        ("VirtualService", "virtualservices"),
        ("lease", "leases"),
        ("ev", "events"),
    ] {
        assert_eq!(
            ResourceType::lookup(name).map(|t| t.plural),
            Some(plural),
            "{name}"
        );
    }
    assert_eq!(ResourceType::lookup("serviceentries"), None);
    let pods = ResourceType::lookup("pods").unwrap();
    assert_eq!(pods.key("default", "web"), "/registry/pods/default/web");
    assert_eq!(pods.key_prefix("default"), "/registry/pods/default/");
    assert_eq!(pods.key_prefix(""), "/registry/pods/");
    let nodes = ResourceType::lookup("nodes").unwrap();
    assert!(!nodes.namespaced);
    assert_eq!(nodes.key("ignored", "n1"), "/registry/nodes/n1");
    // Every kind round-trips through its oneof and its table entry.
    for t in manifest::RESOURCE_TYPES {
        let obj = t.decode(&[]).unwrap();
        assert_eq!(obj.resource_type(), t);
        assert_eq!(obj.type_meta(), (t.api_version, t.kind));
    }
}

#[test]
fn replicas_zero_differs_from_unset() {
    let with = |r: &str| {
        let text = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {{{r}}}\n");
        let Object::Deployment(d) = manifest::parse_one(&text).unwrap() else {
            panic!()
        };
        d.spec.unwrap().replicas
    };
    assert_eq!(with("replicas: 0"), Some(0));
    assert_eq!(with(""), None);
    let zero = manifest::parse_one(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 0}\n",
    )
    .unwrap();
    let back = zero.resource_type().decode(&zero.encode_to_vec()).unwrap();
    assert_eq!(back, zero);
    assert!(manifest::to_yaml(&[back]).contains("replicas: 0"));
}
