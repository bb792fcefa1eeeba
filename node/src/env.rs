//! A container's environment and command line as Kubernetes builds them: image env, then
//! envFrom (prefixed keys), then env (value, configMapKeyRef, secretKeyRef, fieldRef), later
//! entries replacing earlier ones; `$(VAR)` in values, command and args expands to variables
//! defined before it (`$$` escapes a `$`; an unknown `$(VAR)` stays as written).
//! Pure: objects come in through [`Sources`].

use berth_proto::corev1::{Container, Pod};
use std::collections::BTreeMap;

/// What env resolution reads: referenced objects' data and the pod's runtime facts.
pub trait Sources {
    /// A ConfigMap's data (binaryData included) in the pod's namespace, None when absent.
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    /// A Secret's data (stringData merged), None when absent.
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    fn pod_ip(&self) -> String;
    fn host_ip(&self) -> String;
}

/// A reference that could not be resolved (a missing non-optional object or key): the
/// container waits with reason CreateContainerConfigError and this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError(pub String);

/// Expands `$(VAR)` references in `s` from `vars`.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = s[i + 2..].find(')') {
                        let name = &s[i + 2..i + 2 + end];
                        match vars(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&s[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = s[i..].chars().next().expect("inside the string");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A pod field for `fieldRef`.
fn field(pod: &Pod, path: &str, src: &dyn Sources) -> Result<String, EnvError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name,
        "metadata.namespace" => meta.namespace,
        "metadata.uid" => meta.uid,
        "spec.nodeName" => spec.node_name,
        "spec.serviceAccountName" => spec.service_account_name,
        "status.podIP" => src.pod_ip(),
        "status.hostIP" => src.host_ip(),
        _ => {
            if let Some(k) = bracket("metadata.labels['") {
                meta.labels.get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations['") {
                meta.annotations.get(&k).cloned().unwrap_or_default()
            } else {
                return Err(EnvError(format!("fieldRef {path:?} is not supported")));
            }
        }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The container's environment, in order (image env first).
pub fn build_env(
    pod: &Pod,
    c: &Container,
    image_env: &[String],
    src: &dyn Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set =
        |vars: &mut Vec<(String, String)>, k: String, v: String| match vars.iter_mut().find(|(n, _)| *n == k)
        {
            Some(e) => e.1 = v,
            None => vars.push((k, v)),
        };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut vars, k.to_string(), v.to_string());
    }
    for from in &c.env_from {
        let (data, optional, what) = if let Some(r) = &from.config_map_ref {
            (
                src.config_map(&r.name),
                r.optional.unwrap_or(false),
                format!("configmap {:?}", r.name),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                src.secret(&r.name),
                r.optional.unwrap_or(false),
                format!("secret {:?}", r.name),
            )
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    set(&mut vars, format!("{}{k}", from.prefix), text(&v));
                }
            }
            None if optional => {}
            None => return Err(EnvError(format!("{what} not found"))),
        }
    }
    for e in &c.env {
        let value = match &e.value_from {
            None => {
                let lookup = |n: &str| vars.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                expand(&e.value, &lookup)
            }
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field(pod, &f.field_path, src)?
                } else if let Some(r) = &from.config_map_key_ref {
                    match key_of(src.config_map(&r.name), &r.key, r.optional, "configmap", &r.name)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match key_of(src.secret(&r.name), &r.key, r.optional, "secret", &r.name)? {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(EnvError(format!(
                        "env {:?}: resourceFieldRef is not supported",
                        e.name
                    )));
                }
            }
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// A key of referenced data; None when optional and missing (the variable is left out).
fn key_of(
    data: Option<BTreeMap<String, Vec<u8>>>,
    key: &str,
    optional: Option<bool>,
    kind: &str,
    name: &str,
) -> Result<Option<String>, EnvError> {
    match data.as_ref().and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(text(v))),
        None if optional.unwrap_or(false) => Ok(None),
        None if data.is_none() => Err(EnvError(format!("{kind} {name:?} not found"))),
        None => Err(EnvError(format!("couldn't find key {key} in {kind} {name:?}"))),
    }
}

/// The process's argv: command (else the image's entrypoint) then args (else the image's cmd,
/// only when the container gives no command), `$(VAR)` expanded from `env`.
pub fn command_line(
    c: &Container,
    entrypoint: &[String],
    image_cmd: &[String],
    env: &[(String, String)],
) -> Vec<String> {
    let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let (cmd, args): (Vec<String>, Vec<String>) = match (c.command.is_empty(), c.args.is_empty()) {
        (true, true) => (entrypoint.to_vec(), image_cmd.to_vec()),
        (true, false) => (entrypoint.to_vec(), c.args.clone()),
        (false, _) => (c.command.clone(), c.args.clone()),
    };
    let expand_all = |v: Vec<String>| -> Vec<String> { v.iter().map(|s| expand(s, &lookup)).collect() };
    let mut argv = if c.command.is_empty() {
        cmd
    } else {
        expand_all(cmd)
    };
    argv.extend(if c.args.is_empty() { args } else { expand_all(args) });
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::*;
    use berth_proto::metav1::ObjectMeta;

    struct Src;
    impl Sources for Src {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "cm")
                .then(|| BTreeMap::from([("color".into(), b"blue".to_vec()), ("size".into(), b"9".to_vec())]))
        }
        fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "s").then(|| BTreeMap::from([("password".into(), b"hunter2".to_vec())]))
        }
        fn pod_ip(&self) -> String {
            "10.0.0.5".into()
        }
        fn host_ip(&self) -> String {
            "192.168.1.2".into()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "prod".into(),
                labels: [("app".to_string(), "w".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
            value_from: None,
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: String::new(),
            value_from: Some(src),
        }
    }

    fn field_ref(p: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: "v1".into(),
                field_path: p.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn expansion_rules() {
        let vars = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$$-$", &vars), "x-$(B)-$(A)-$-$");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("é$(A)é", &vars), "éxé");
    }

    #[test]
    fn env_in_order_with_every_source() {
        let c = Container {
            env_from: vec![
                EnvFromSource {
                    prefix: "CM_".into(),
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cm".into(),
                        optional: None,
                    }),
                    secret_ref: None,
                },
                EnvFromSource {
                    prefix: String::new(),
                    config_map_ref: None,
                    secret_ref: Some(SecretEnvSource {
                        name: "missing".into(),
                        optional: Some(true),
                    }),
                },
            ],
            env: vec![
                env("PATH", "/bin"),
                from("NAME", field_ref("metadata.name")),
                from("NS", field_ref("metadata.namespace")),
                from("NODE", field_ref("spec.nodeName")),
                from("IP", field_ref("status.podIP")),
                from("APP", field_ref("metadata.labels['app']")),
                from(
                    "PW",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "GONE",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cm".into(),
                            key: "nope".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    },
                ),
                env("GREETING", "$(NAME) in $(NS) is $(CM_color), $(UNDEFINED)"),
            ],
            ..Default::default()
        };
        let got = build_env(&pod(), &c, &["PATH=/usr/bin".into(), "HOME=/root".into()], &Src).unwrap();
        let want: Vec<(String, String)> = [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("CM_color", "blue"),
            ("CM_size", "9"),
            ("NAME", "web"),
            ("NS", "prod"),
            ("NODE", "n1"),
            ("IP", "10.0.0.5"),
            ("APP", "w"),
            ("PW", "hunter2"),
            ("GREETING", "web in prod is blue, $(UNDEFINED)"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn missing_references_are_errors_unless_optional() {
        let mut c = Container {
            env: vec![from(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cm".into(),
                        key: "nope".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        let e = build_env(&pod(), &c, &[], &Src).unwrap_err();
        assert!(e.0.contains("couldn't find key nope"), "{e:?}");
        c.env = vec![from(
            "X",
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "absent".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            },
        )];
        assert!(build_env(&pod(), &c, &[], &Src)
            .unwrap_err()
            .0
            .contains("not found"));
        c.env = vec![from("X", field_ref("status.phase"))];
        assert!(build_env(&pod(), &c, &[], &Src).is_err());
    }

    #[test]
    fn command_and_args_against_the_image() {
        let ep = vec!["/entry".to_string()];
        let cmd = vec!["serve".to_string()];
        let env = vec![("N".to_string(), "3".to_string())];
        let c = |command: &[&str], args: &[&str]| Container {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            command_line(&c(&[], &[]), &ep, &cmd, &env),
            vec!["/entry", "serve"]
        );
        assert_eq!(
            command_line(&c(&[], &["x$(N)"]), &ep, &cmd, &env),
            vec!["/entry", "x3"]
        );
        assert_eq!(
            command_line(&c(&["sh", "-c"], &[]), &ep, &cmd, &env),
            vec!["sh", "-c"]
        );
        assert_eq!(
            command_line(&c(&["echo", "$(N)"], &["$$(N)", "$(M)"]), &ep, &cmd, &env),
            vec!["echo", "3", "$(N)", "$(M)"]
        );
    }
}
