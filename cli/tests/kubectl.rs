//! The kubectl-like verbs of the real `berth` binary against real `berth server` processes:
//! apply/create (file, directory with -R, stdin, multi-document files with bad documents),
//! get in every output format with selectors and -w, label/annotate, delete (--wait, -l,
//! --all, -f, grace periods), describe with events, api-resources, namespace rules, and
//! every example manifest applied and read back with `get -o yaml`.

mod common;
use berth_client::ResourceClient;
use berth_proto::manifest::{self, Object, ResourceType};
use berth_proto::{defaults, metav1};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A one-member cluster whose `default` namespace exists, and a client for checks.
async fn cluster() -> (Cluster, ResourceClient) {
    // Control loops would add finalizers and status to what these tests read back.
    let c = Cluster::start(1, &["--no-controllers", "--no-scheduler"]).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
    eventually("namespace default", || {
        let rc = rc.clone();
        async move { rc.get_object("namespaces", "", "default").await.ok() }
    })
    .await;
    (c, rc)
}

/// `berth ARGS` with BERTH_SERVER pointing at the cluster (and `input` on stdin).
fn berth_in(c: &Cluster, args: &[&str], input: Option<&str>) -> Output {
    let mut cmd = Command::new(berth_bin());
    cmd.args(args)
        .env("BERTH_SERVER", c.endpoints())
        .env("BERTH_LOG", "warn")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn berth");
    if let Some(text) = input {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn berth(c: &Cluster, args: &[&str]) -> Output {
    berth_in(c, args, None)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command that must succeed; its stdout.
fn ok(c: &Cluster, args: &[&str]) -> String {
    let out = berth(c, args);
    assert!(
        out.status.success(),
        "berth {args:?} failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command that must fail; (stdout, stderr).
fn fails(c: &Cluster, args: &[&str]) -> (String, String) {
    let out = berth(c, args);
    assert!(
        !out.status.success(),
        "berth {args:?} succeeded:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// The whitespace-separated cells of each line.
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

fn pod_yaml(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n\
         spec:\n  containers:\n  - name: c\n    image: nginx:1.25\n"
    )
}

const MULTI: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers: [{name: nginx, image: nginx:1.25}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {x: [1]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: Bad_Name}
data: {x: y}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_files_directories_stdin_and_bad_documents() {
    let (c, rc) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "multi.yaml", MULTI);

    // Every good document is applied; each bad one is reported with file, index, kind/name
    // and field path, leaves nothing behind, and makes the exit status non-zero.
    let (out, err) = fails(&c, &["apply", "-f", &file]);
    assert_eq!(
        out,
        "pod/web created\nservice/web created\ndeployment.apps/web created\n"
    );
    let errs: Vec<&str> = err.lines().collect();
    assert_eq!(errs.len(), 2, "{err}");
    assert!(
        errs[0].starts_with(&format!(
            "error: {file}: document 2 (ConfigMap cfg): data.x: invalid type"
        )),
        "{err}"
    );
    assert!(
        errs[1].starts_with(&format!(
            "Error from server (Invalid): error when applying \"{file} document 4 (ConfigMap Bad_Name)\": "
        )),
        "{err}"
    );
    assert!(errs[1].contains("metadata.name"), "{err}");
    for name in ["cfg", "Bad_Name"] {
        assert!(rc.get_object("configmaps", "default", name).await.is_err());
    }
    assert!(rc.get_object("deployments", "default", "web").await.is_ok());

    // Again: unchanged; after an edit: configured.
    let good = write(
        dir.path(),
        "good.yaml",
        &MULTI
            .split("---\n")
            .enumerate()
            .filter(|(i, _)| ![1, 3].contains(i))
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
            .join("---\n"),
    );
    assert_eq!(
        ok(&c, &["apply", "-f", &good]),
        "pod/web unchanged\nservice/web unchanged\ndeployment.apps/web unchanged\n"
    );
    let edited = write(
        dir.path(),
        "edited.yaml",
        &std::fs::read_to_string(&good)
            .unwrap()
            .replace("replicas: 2", "replicas: 3"),
    );
    assert_eq!(
        ok(&c, &["apply", "-f", &edited]),
        "pod/web unchanged\nservice/web unchanged\ndeployment.apps/web configured\n"
    );

    // A directory: its manifest files in name order; -R descends.
    let tree = dir.path().join("tree");
    write(
        &tree,
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    write(
        &tree,
        "b.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}"#,
    );
    write(&tree, "README.md", "not a manifest");
    write(
        &tree,
        "sub/c.yml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    let tree = tree.display().to_string();
    assert_eq!(
        ok(&c, &["apply", "-f", &tree]),
        "configmap/a created\nconfigmap/b created\n"
    );
    assert_eq!(
        ok(&c, &["apply", "-R", "-f", &tree]),
        "configmap/a unchanged\nconfigmap/b unchanged\nconfigmap/c created\n"
    );

    // Stdin, JSON stream of two objects.
    let json = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s1"}}
{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}, "stringData": {"k": "v"}}"#;
    let out = berth_in(&c, &["apply", "-f", "-"], Some(json));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "configmap/s1 created\nsecret/s2 created\n");
    // Broken YAML on stdin: one error naming STDIN.
    let out = berth_in(&c, &["apply", "-f", "-"], Some("a: [\n"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: STDIN: document 1: invalid YAML"),
        "{}",
        text(&out.stderr)
    );

    // create: AlreadyExists for what exists, created for what does not.
    let (out, err) = fails(&c, &["create", "-f", &tree, "-R"]);
    assert_eq!(out, "");
    assert!(
        err.contains("Error from server (AlreadyExists): error when creating")
            && err.contains("configmaps \"a\" already exists"),
        "{err}"
    );
    let one = write(
        dir.path(),
        "new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fresh}\n",
    );
    assert_eq!(ok(&c, &["create", "-f", &one]), "configmap/fresh created\n");

    // A missing file.
    let (_, err) = fails(&c, &["apply", "-f", "/nonexistent/bc-x.yaml"]);
    assert!(
        err.starts_with("error: the path \"/nonexistent/bc-x.yaml\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_in_every_format_with_selectors() {
    let (c, _rc) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ns = write(
        dir.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n",
    );
    ok(&c, &["apply", "-f", &ns]);
    let a = write(dir.path(), "a.yaml", &pod_yaml("a", "app: web, tier: front"));
    let b = write(dir.path(), "b.yaml", &pod_yaml("b", "app: db"));
    ok(&c, &["apply", "-f", &a, "-f", &b]);
    ok(&c, &["apply", "-n", "prod", "-f", &a]);
    let cm = write(
        dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: v}\n",
    );
    ok(&c, &["apply", "-f", &cm]);

    // Table.
    let t = cells(&ok(&c, &["get", "pods"]));
    assert_eq!(t[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(t.len(), 3);
    assert_eq!(t[1][..4], ["a", "0/1", "Pending", "0"]);
    assert_eq!(t[2][0], "b");
    let age = &t[1][4];
    assert!(
        age.ends_with('s') && age[..age.len() - 1].parse::<u32>().is_ok(),
        "AGE {age}"
    );
    // Wide.
    let wide = ok(&c, &["get", "po", "-o", "wide"]);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("AGE   IP       NODE     NOMINATED NODE   READINESS GATES"),
        "{wide}"
    );
    assert_eq!(cells(&wide)[1][5..], ["<none>", "<none>", "<none>", "<none>"]);
    // All namespaces.
    let t = cells(&ok(&c, &["get", "pods", "-A"]));
    assert_eq!(t[0][..2], ["NAMESPACE", "NAME"]);
    let rows: Vec<(&str, &str)> = t[1..].iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(rows, [("default", "a"), ("default", "b"), ("prod", "a")]);
    // -n.
    assert_eq!(
        cells(&ok(&c, &["get", "pods", "-n", "prod", "--no-headers"]))[0][0],
        "a"
    );
    assert_eq!(
        cells(&ok(&c, &["get", "pods", "-n", "prod", "--no-headers"])).len(),
        1
    );
    // Labels, selectors.
    let t = cells(&ok(&c, &["get", "pods", "--show-labels"]));
    assert_eq!(t[0].last().unwrap(), "LABELS");
    assert_eq!(t[1].last().unwrap(), "app=web,tier=front");
    assert_eq!(ok(&c, &["get", "pods", "-l", "app=web", "-o", "name"]), "pod/a\n");
    assert_eq!(
        ok(&c, &["get", "pods", "-l", "app in (web,db)", "-o", "name"]),
        "pod/a\npod/b\n"
    );
    assert_eq!(
        ok(
            &c,
            &["get", "pods", "--field-selector", "metadata.name=b", "-o", "name"]
        ),
        "pod/b\n"
    );
    assert_eq!(
        ok(
            &c,
            &[
                "get",
                "pods",
                "-A",
                "--field-selector",
                "metadata.namespace!=default",
                "-o",
                "name"
            ]
        ),
        "pod/a\n"
    );
    let (_, err) = fails(&c, &["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(
        err.starts_with("Error from server (Invalid): ") && err.contains("spec.bogus"),
        "{err}"
    );
    let empty = berth(&c, &["get", "pods", "-l", "app=none"]);
    assert!(empty.status.success());
    assert_eq!(text(&empty.stdout), "");
    assert_eq!(text(&empty.stderr), "No resources found in default namespace.\n");

    // YAML: one object, or a List.
    let y = ok(&c, &["get", "pod", "a", "-o", "yaml"]);
    let obj = manifest::parse_one(&y).unwrap();
    assert_eq!(
        (obj.kind_name(), obj.name(), obj.namespace()),
        ("Pod", "a", "default")
    );
    assert!(!obj.metadata().unwrap().uid.is_empty());
    let y = ok(&c, &["get", "pods", "-o", "yaml"]);
    assert!(y.starts_with("apiVersion: v1\nitems:\n"), "{y}");
    let names: Vec<String> = manifest::parse(&y)
        .unwrap()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // JSON: one object, or a List.
    let j: Value = serde_json::from_str(&ok(&c, &["get", "pods/b", "-o", "json"])).unwrap();
    assert_eq!(j["metadata"]["name"], "b");
    assert_eq!(j["kind"], "Pod");
    let j: Value = serde_json::from_str(&ok(&c, &["get", "po", "-o", "json", "-A"])).unwrap();
    assert_eq!(j["kind"], "List");
    assert_eq!(j["items"].as_array().unwrap().len(), 3);
    // Name; several kinds; kind/name; group-qualified and Kind names.
    assert_eq!(
        ok(&c, &["get", "po,cm", "-o", "name"]),
        "pod/a\npod/b\nconfigmap/cfg\n"
    );
    let t = ok(&c, &["get", "po,cm"]);
    let blocks: Vec<&str> = t.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{t}");
    assert!(blocks[0].lines().nth(1).unwrap().starts_with("pod/a "), "{t}");
    assert_eq!(cells(blocks[1])[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(cells(blocks[1])[1][..2], ["configmap/cfg", "1"]);
    assert_eq!(
        ok(&c, &["get", "pod/a", "configmap/cfg", "-o", "name"]),
        "pod/a\nconfigmap/cfg\n"
    );
    assert_eq!(
        ok(&c, &["get", "ConfigMap", "cfg", "-o", "name"]),
        "configmap/cfg\n"
    );
    assert_eq!(ok(&c, &["get", "ns", "--no-headers"]).lines().count(), 2);
    assert_eq!(
        cells(&ok(&c, &["get", "namespaces"]))[0],
        ["NAME", "STATUS", "AGE"]
    );
    assert_eq!(
        cells(&ok(&c, &["get", "deployments.apps", "-A", "-o", "name"])).len(),
        0
    );

    // Errors in kubectl's words.
    let (_, err) = fails(&c, &["get", "foo"]);
    assert_eq!(err, "error: the server doesn't have a resource type \"foo\"\n");
    let (out, err) = fails(&c, &["get", "pods", "x"]);
    assert_eq!(out, "");
    assert_eq!(err, "Error from server (NotFound): pods \"x\" not found\n");
    // A found and a missing one: the found one printed, exit non-zero.
    let (out, err) = fails(&c, &["get", "pods", "a", "x", "-o", "name"]);
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("pod/a\n", "Error from server (NotFound): pods \"x\" not found\n")
    );
    let (_, err) = fails(&c, &["get", "pods", "-o", "jsonpath"]);
    assert!(err.contains("unable to match a printer"), "{err}");
    // --server flag instead of the environment.
    let out = Command::new(berth_bin())
        .args(["get", "po", "-o", "name", "--server"])
        .arg(c.endpoints())
        .env_remove("BERTH_SERVER")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "pod/a\npod/b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_rows_as_changes_arrive() {
    let (c, _rc) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", &pod_yaml("a", "app: web"));
    ok(&c, &["apply", "-f", &a]);

    let mut child = Command::new(berth_bin())
        .args(["get", "pods", "-w", "-l", "app=web"])
        .env("BERTH_SERVER", c.endpoints())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(DEADLINE).expect("a line of the watch in time");
    let first = next();
    assert!(first.starts_with("NAME "), "{first}");
    assert_eq!(cells(&next())[0][..3], ["a", "0/1", "Pending"]);

    // Added, modified, and a pod that leaves the selector, deleted.
    let b = write(dir.path(), "b.yaml", &pod_yaml("b", "app: web"));
    ok(&c, &["apply", "-f", &b]);
    assert_eq!(cells(&next())[0][0], "b");
    ok(&c, &["label", "pod", "a", "x=y"]);
    assert_eq!(cells(&next())[0][0], "a");
    ok(&c, &["delete", "pod", "b"]);
    assert_eq!(cells(&next())[0][0], "b");
    let other = write(dir.path(), "o.yaml", &pod_yaml("other", "app: db"));
    ok(&c, &["apply", "-f", &other]);
    ok(&c, &["label", "pod", "a", "x=z", "--overwrite"]);
    assert_eq!(cells(&next())[0][0], "a", "pods outside the selector do not show");

    // Killed by the PID we started.
    child.kill().unwrap();
    child.wait().unwrap();

    // --watch-only: changes only. The watch starts some time after the command does, so
    // change the object until a line arrives.
    let mut child = Command::new(berth_bin())
        .args(["get", "pods", "--watch-only", "-o", "name"])
        .env("BERTH_SERVER", c.endpoints())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut round = 0;
    let line = loop {
        assert!(std::time::Instant::now() < deadline, "no line from --watch-only");
        round += 1;
        ok(
            &c,
            &[
                "annotate",
                "pod",
                "other",
                &format!("round={round}"),
                "--overwrite",
            ],
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
    };
    assert_eq!(line, "pod/other", "only changes, not the existing pods first");
    child.kill().unwrap();
    child.wait().unwrap();

    // -o name with a watch on one object.
    let mut child = Command::new(berth_bin())
        .args(["get", "pod", "a", "-w", "-o", "name"])
        .env("BERTH_SERVER", c.endpoints())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "pod/a");
    ok(&c, &["annotate", "pod", "other", "k=v"]);
    ok(&c, &["annotate", "pod", "a", "k=v"]);
    assert_eq!(lines.next().unwrap().unwrap(), "pod/a");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_annotate_describe_and_delete() {
    let (c, rc) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", &pod_yaml("web", "app: web"));
    ok(&c, &["apply", "-f", &a]);

    // label/annotate: set, refuse to overwrite, overwrite, remove, no-op.
    assert_eq!(
        ok(&c, &["label", "pods", "web", "tier=front", "env=prod"]),
        "pod/web labeled\n"
    );
    let (_, err) = fails(&c, &["label", "po", "web", "tier=back"]);
    assert_eq!(
        err,
        "error: 'tier' already has a value (front), and --overwrite is false\n"
    );
    assert_eq!(
        ok(&c, &["label", "pod/web", "tier=back", "--overwrite"]),
        "pod/web labeled\n"
    );
    assert_eq!(ok(&c, &["label", "po", "web", "env-"]), "pod/web labeled\n");
    assert_eq!(ok(&c, &["label", "po", "web", "env-"]), "pod/web not labeled\n");
    let got = rc.get_object("pods", "default", "web").await.unwrap();
    let labels = &got.metadata().unwrap().labels;
    assert_eq!(
        labels,
        &BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "back".to_string())
        ])
    );
    assert_eq!(
        ok(&c, &["annotate", "po", "web", "example.com/note=hello world"]),
        "pod/web annotated\n"
    );
    let got = rc.get_object("pods", "default", "web").await.unwrap();
    assert_eq!(
        got.metadata().unwrap().annotations["example.com/note"],
        "hello world"
    );
    // Concurrent writers on one object: whoever loses a resourceVersion race re-reads and
    // redoes its change, so every label lands and none is lost.
    let writers: Vec<_> = (0..6)
        .map(|i| {
            Command::new(berth_bin())
                .args(["label", "po", "web", &format!("w{i}=x")])
                .env("BERTH_SERVER", c.endpoints())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let labels = meta(&rc.get_object("pods", "default", "web").await.unwrap()).labels;
    for i in 0..6 {
        assert_eq!(
            labels.get(&format!("w{i}")).map(String::as_str),
            Some("x"),
            "{labels:?}"
        );
    }
    // By selector, and --all.
    for (n, app) in [("s1", "sel"), ("s2", "sel"), ("s3", "other")] {
        let f = write(
            dir.path(),
            &format!("{n}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, labels: {{app: {app}}}}}\n"),
        );
        ok(&c, &["apply", "-f", &f]);
    }
    assert_eq!(
        ok(&c, &["label", "cm", "-l", "app=sel", "team=x"]),
        "configmap/s1 labeled\nconfigmap/s2 labeled\n"
    );
    assert_eq!(
        ok(&c, &["get", "cm", "-l", "team=x", "-o", "name"]),
        "configmap/s1\nconfigmap/s2\n"
    );
    assert_eq!(
        ok(&c, &["annotate", "cm", "--all", "note=y"]),
        "configmap/s1 annotated\nconfigmap/s2 annotated\nconfigmap/s3 annotated\n"
    );
    let (_, err) = fails(&c, &["label", "cm", "team=x"]);
    assert!(err.contains("must be specified"), "{err}");
    ok(&c, &["delete", "cm", "--all"]);
    let (_, err) = fails(&c, &["label", "po", "nope", "a=b"]);
    assert_eq!(err, "Error from server (NotFound): pods \"nope\" not found\n");

    // describe, with the events about the object (and not others').
    let uid = got.metadata().unwrap().uid.clone();
    for (name, obj_name, reason) in [("e1", "web", "Scheduled"), ("e2", "other", "Pulled")] {
        let ev = format!(
            "apiVersion: v1\nkind: Event\nmetadata: {{name: {name}}}\n\
             involvedObject: {{kind: Pod, name: {obj_name}, namespace: default, uid: '{uid}'}}\n\
             reason: {reason}\nmessage: {reason} it\ntype: Normal\nsource: {{component: bc-test}}\n"
        );
        let f = write(dir.path(), &format!("{name}.yaml"), &ev);
        ok(&c, &["apply", "-f", &f]);
    }
    let t = ok(&c, &["get", "ev", "--field-selector", "involvedObject.name=web"]);
    let t = cells(&t);
    assert_eq!(t[0], ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    assert_eq!(t.len(), 2);
    assert_eq!(t[1][1..], ["Normal", "Scheduled", "pod/web", "Scheduled", "it"]);
    let d = ok(&c, &["describe", "pod", "web"]);
    let lines: Vec<&str> = d.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["Name:", "web"]);
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["Namespace:", "default"]
    );
    assert!(
        d.contains("Labels:             app=web\n                    tier=back\n"),
        "{d}"
    );
    assert!(
        d.contains("Annotations:        example.com/note=hello world\n"),
        "{d}"
    );
    assert!(d.contains("Status:             Pending\n"), "{d}");
    assert!(d.contains("Containers:\n  c:\n    Image:"), "{d}");
    let events = &d[d.find("Events:").expect("an Events section")..];
    let ev = cells(events);
    assert_eq!(ev[1], ["Type", "Reason", "Age", "From", "Message"]);
    assert_eq!(ev.len(), 4, "{events}");
    assert_eq!(ev[3][..2], ["Normal", "Scheduled"]);
    assert_eq!(ev[3][3..], ["bc-test", "Scheduled", "it"]);
    let (_, err) = fails(&c, &["describe", "po", "nope"]);
    assert_eq!(err, "Error from server (NotFound): pods \"nope\" not found\n");
    let d = ok(&c, &["describe", "ns", "default"]);
    assert!(d.contains("Status:") && d.ends_with("Events:  <none>\n"), "{d}");

    // delete --wait: a finalizer keeps the object; the wait ends when it goes.
    let fin = write(
        dir.path(),
        "fin.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, finalizers: [example.com/keep]}\n",
    );
    ok(&c, &["apply", "-f", &fin]);
    let (out, err) = fails(&c, &["delete", "cm", "kept", "--timeout", "1s"]);
    assert_eq!(out, "configmap \"kept\" deleted\n");
    assert_eq!(
        err,
        "error: timed out waiting for the condition on configmaps/kept\n"
    );
    let mut waiting = Command::new(berth_bin())
        .args(["delete", "cm", "kept", "--wait"])
        .env("BERTH_SERVER", c.endpoints())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once its delete call has been answered (the line), the waiter polls; release the object.
    let mut waiter_out = BufReader::new(waiting.stdout.take().unwrap());
    let mut line = String::new();
    waiter_out.read_line(&mut line).unwrap();
    assert_eq!(line, "configmap \"kept\" deleted\n");
    assert!(rc.get_object("configmaps", "default", "kept").await.is_ok());
    let mut kept = rc.get_object("configmaps", "default", "kept").await.unwrap();
    kept.metadata_mut().finalizers.clear();
    rc.update_object(kept).await.unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(rc.get_object("configmaps", "default", "kept").await.is_err());

    // A pod on a node waits its grace period (Terminating) unless --grace-period=0.
    let bound = write(
        dir.path(),
        "bound.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bound}\nspec: {nodeName: n1, containers: [{name: c, image: x}]}\n",
    );
    ok(&c, &["apply", "-f", &bound]);
    assert_eq!(
        ok(&c, &["delete", "po", "bound", "--wait=false"]),
        "pod \"bound\" deleted\n"
    );
    assert_eq!(
        cells(&ok(&c, &["get", "po", "bound", "--no-headers"]))[0][2],
        "Terminating"
    );
    assert_eq!(
        ok(&c, &["delete", "po", "bound", "--grace-period=0"]),
        "pod \"bound\" deleted\n"
    );
    assert!(rc.get_object("pods", "default", "bound").await.is_err());

    // -l, --all, -f, not found.
    for n in ["x1", "x2", "y1"] {
        let app = if n.starts_with('x') { "x" } else { "y" };
        let f = write(
            dir.path(),
            &format!("{n}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, labels: {{app: {app}}}}}\n"),
        );
        ok(&c, &["apply", "-f", &f]);
    }
    assert_eq!(
        ok(&c, &["delete", "cm", "-l", "app=x"]),
        "configmap \"x1\" deleted\nconfigmap \"x2\" deleted\n"
    );
    let (_, err) = fails(&c, &["delete", "cm"]);
    assert!(err.contains("no name was specified"), "{err}");
    assert_eq!(ok(&c, &["delete", "-f", &a]), "pod \"web\" deleted\n");
    assert_eq!(ok(&c, &["delete", "cm", "--all"]), "configmap \"y1\" deleted\n");
    let (_, err) = fails(&c, &["delete", "pod", "web"]);
    assert_eq!(err, "Error from server (NotFound): pods \"web\" not found\n");
    ok(&c, &["delete", "pod", "web", "--ignore-not-found"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_from_flags_and_manifests() {
    let (c, rc) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let ns = write(
        dir.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
    );
    assert_eq!(
        ok(&c, &["apply", "-f", &ns]),
        "namespace/a created\nnamespace/b created\n"
    );
    let in_a = write(
        dir.path(),
        "in-a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: a}\n",
    );
    let (out, err) = fails(&c, &["apply", "-n", "b", "-f", &in_a]);
    assert_eq!(out, "");
    assert!(
        err.ends_with(
            ": the namespace from the provided object \"a\" does not match the namespace \"b\". \
             You must pass '--namespace=a' to perform this operation.\n"
        ),
        "{err}"
    );
    assert!(err.contains("document 1 (ConfigMap c1)"), "{err}");
    assert!(rc.get_object("configmaps", "a", "c1").await.is_err());
    assert!(rc.get_object("configmaps", "b", "c1").await.is_err());
    let (_, err) = fails(&c, &["create", "--namespace=b", "-f", &in_a]);
    assert!(err.contains("does not match the namespace \"b\""), "{err}");
    let (_, err) = fails(&c, &["delete", "-n", "b", "-f", &in_a]);
    assert!(err.contains("does not match the namespace \"b\""), "{err}");

    // The stated namespace without -n, or with a matching one.
    assert_eq!(ok(&c, &["apply", "-f", &in_a]), "configmap/c1 created\n");
    assert_eq!(
        ok(&c, &["apply", "-n", "a", "-f", &in_a]),
        "configmap/c1 unchanged\n"
    );
    // No namespace stated: -n, else default.
    let plain = write(
        dir.path(),
        "plain.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c2}\n",
    );
    ok(&c, &["apply", "-n", "b", "-f", &plain]);
    ok(&c, &["apply", "-f", &plain]);
    assert!(rc.get_object("configmaps", "b", "c2").await.is_ok());
    assert!(rc.get_object("configmaps", "default", "c2").await.is_ok());
    assert_eq!(ok(&c, &["get", "cm", "-n", "a", "-o", "name"]), "configmap/c1\n");
    assert_eq!(ok(&c, &["get", "cm", "-o", "name"]), "configmap/c2\n");
    let t = cells(&ok(&c, &["get", "cm", "--all-namespaces"]));
    let rows: Vec<(&str, &str)> = t[1..].iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(rows, [("a", "c1"), ("b", "c2"), ("default", "c2")]);
    // Cluster-scoped kinds ignore -n.
    assert_eq!(
        ok(&c, &["get", "ns", "a", "-n", "b", "-o", "name"]),
        "namespace/a\n"
    );
    // A namespace that does not exist.
    let (_, err) = fails(&c, &["apply", "-n", "nowhere", "-f", &plain]);
    assert!(
        err.contains("Error from server (NotFound)") && err.contains("namespaces \"nowhere\""),
        "{err}"
    );
    assert_eq!(
        ok(&c, &["label", "cm", "c2", "-n", "b", "k=v"]),
        "configmap/c2 labeled\n"
    );
    assert!(rc
        .get_object("configmaps", "default", "c2")
        .await
        .unwrap()
        .metadata()
        .unwrap()
        .labels
        .is_empty());

    // No server there: kubectl's words, non-zero exit; with a second address, failover.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = Command::new(berth_bin())
        .args(["get", "cm", "-n", "a", "-o", "name", "--server", &dead])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("Unable to connect to the server: "),
        "{}",
        text(&out.stderr)
    );
    let both = format!("{dead},{}", c.endpoints());
    let out = Command::new(berth_bin())
        .args(["get", "cm", "-n", "a", "-o", "name", "--server", &both])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "configmap/c1\n", "{}", text(&out.stderr));

    // api-resources.
    let t = cells(&ok(&c, &["api-resources"]));
    assert_eq!(t[0], ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
    assert!(t.contains(
        &["deployments", "deploy", "apps/v1", "true", "Deployment"]
            .map(String::from)
            .to_vec()
    ));
    assert!(t.contains(
        &[
            "virtualservices",
            "vs",
            "networking.istio.io/v1",
            "true",
            "VirtualService"
        ]
        .map(String::from)
        .to_vec()
    ));
    assert!(t.contains(
        &["namespaces", "ns", "v1", "false", "Namespace"]
            .map(String::from)
            .to_vec()
    ));
    assert_eq!(t.len(), manifest::RESOURCE_TYPES.len() + 1);
}

fn meta(o: &Object) -> metav1::ObjectMeta {
    o.metadata().cloned().unwrap_or_default()
}

/// Every example manifest through the binary: `apply -f FILE` (unchanged files), then
/// `get KIND NAME -o yaml` shows the spec the manifest states (with the server's defaults);
/// documents of unsupported kinds are rejected by name and the rest of their file applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_manifest_round_trips_through_the_cli() {
    let (c, _rc) = cluster().await;
    let files = example_manifests();
    // Namespaces the examples live in, first.
    let mut namespaces = BTreeSet::new();
    for f in &files {
        for (_, v) in manifest::parse_documents(&std::fs::read_to_string(f).unwrap()).unwrap() {
            if let Some(ns) = v["metadata"]["namespace"].as_str() {
                namespaces.insert(ns.to_string());
            }
        }
    }
    for ns in namespaces.iter().filter(|n| *n != "default") {
        let out = berth_in(
            &c,
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
            )),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let mut checked = 0;
    let mut rejected = Vec::new();
    for f in &files {
        let path = f.display().to_string();
        let docs = manifest::parse_documents(&std::fs::read_to_string(f).unwrap()).unwrap();
        let unsupported: Vec<(usize, String, String)> = docs
            .iter()
            .filter(|(_, v)| {
                ResourceType::for_kind(
                    v["apiVersion"].as_str().unwrap_or(""),
                    v["kind"].as_str().unwrap_or(""),
                )
                .is_err()
            })
            .map(|(i, v)| {
                (
                    *i,
                    v["kind"].as_str().unwrap_or("").to_string(),
                    v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let supported = docs.len() - unsupported.len();
        let out = berth(&c, &["apply", "-f", &path]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if unsupported.is_empty() {
            assert!(out.status.success(), "{path}: {stderr}");
        } else {
            assert!(
                !out.status.success(),
                "{path} has unsupported kinds, yet apply succeeded"
            );
            for (i, kind, name) in &unsupported {
                let want = format!("error: {path}: document {i} ({kind} {name}): unsupported kind {kind}");
                assert!(stderr.contains(&want), "{path}: {stderr}");
                rejected.push(format!("{kind} {name}"));
            }
        }
        // The last document of each object in the file is what the server holds now.
        let mut last: BTreeMap<(String, String, String), Object> = BTreeMap::new();
        for (_, v) in docs {
            if let Ok(o) = Object::from_value(v) {
                let key = (
                    o.resource_type().plural.to_string(),
                    o.namespace().to_string(),
                    o.name().to_string(),
                );
                last.insert(key, o);
            }
        }
        assert_eq!(
            stdout.lines().count(),
            supported,
            "{path}: one line per applied document:\n{stdout}"
        );
        for ((plural, ns, name), expected) in last {
            let ns = if ns.is_empty() { "default".to_string() } else { ns };
            let y = ok(&c, &["get", &plural, &name, "-n", &ns, "-o", "yaml"]);
            let got = manifest::parse_one(&y).unwrap_or_else(|e| panic!("{path}: {plural}/{name}: {e}\n{y}"));
            let mut expected = expected;
            defaults::apply(&mut expected);
            with_allocated_cluster_ip(&got, &mut expected);
            assert_eq!(
                body(&got),
                body(&expected),
                "{path}: {plural}/{name}: spec changed on the way"
            );
            assert_eq!(
                meta(&got).labels,
                meta(&expected).labels,
                "{path}: {plural}/{name}: labels"
            );
            assert_eq!(
                meta(&got).annotations,
                meta(&expected).annotations,
                "{path}: {plural}/{name}: annotations"
            );
            // What `get -o yaml` prints applies back as it is, changing nothing.
            let back = berth_in(&c, &["apply", "-f", "-"], Some(&y));
            assert!(
                back.status.success(),
                "{path}: {plural}/{name}: {}",
                text(&back.stderr)
            );
            assert!(
                text(&back.stdout).ends_with(&format!("/{name} unchanged\n")),
                "{path}: {}",
                text(&back.stdout)
            );
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} objects checked");

    // The tables of these kinds, across namespaces.
    for (kind, header) in [
        ("deploy", "NAMESPACE NAME READY UP-TO-DATE AVAILABLE AGE"),
        ("svc", "NAMESPACE NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE"),
        ("ing", "NAMESPACE NAME CLASS HOSTS ADDRESS PORTS AGE"),
        ("vs", "NAMESPACE NAME GATEWAYS HOSTS AGE"),
        ("dr", "NAMESPACE NAME HOST AGE"),
        ("gw", "NAMESPACE NAME AGE"),
    ] {
        let t = ok(&c, &["get", kind, "-A"]);
        let first = t
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(first, header, "{kind}:\n{t}");
        assert!(t.lines().count() > 1, "{kind}: no rows");
    }
    let vs = ok(&c, &["get", "vs", "bookinfo", "--no-headers"]);
    assert_eq!(
        cells(&vs)[0][..3],
        ["bookinfo", r#"["bookinfo-gateway"]"#, r#"["*"]"#]
    );
    let svc = cells(&ok(&c, &["get", "svc", "frontend", "--no-headers"]));
    assert_eq!(svc[0][..2], ["frontend", "NodePort"]);
    assert_eq!(rejected, ["ServiceEntry googleapis"]);
}
