//! The kubectl-like verbs (`apply`, `create`, `get`, `describe`, `delete`, `label`,
//! `annotate`, `api-resources`) over `berth_client::ResourceClient`.
//!
//! Each verb lives in its own module and takes its clap arguments; this module holds what
//! they share: the server and namespace flags, the client, resolving what users type to a
//! resource type, reading manifests from files, directories and stdin, and kubectl's error
//! wording. Output formatting is pure (`printers`) and unit-tested; the verbs are tested
//! through the real binary against real servers (`cli/tests/kubectl.rs`).

pub mod api_resources;
pub mod apply;
pub mod delete;
pub mod describe;
pub mod get;
pub mod label;
pub mod logs;
pub mod manifests;
pub mod printers;

use crate::ServerArgs;
use berth_client::{ClientError, ResourceClient};
use berth_proto::manifest::{Object, ResourceType};
use std::time::Duration;

/// The namespace of objects that state none when `-n` is not given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Server and namespace flags of every namespaced verb.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The namespace; objects that state none go there (default: "default").
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Option<String>,
}

/// What a verb needs: the client and the namespace it works in.
pub struct Ctx {
    pub client: ResourceClient,
    /// `-n`, or `default`.
    pub namespace: String,
    /// Whether `-n` was given: then a manifest stating another namespace is an error.
    pub namespace_given: bool,
}

impl Ctx {
    pub fn new(t: &Target) -> anyhow::Result<Ctx> {
        let client = ResourceClient::new(
            &t.server.servers,
            Duration::from_millis(t.server.request_timeout_ms),
        )?;
        Ok(Ctx {
            client,
            namespace: t.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            namespace_given: t.namespace.is_some(),
        })
    }

    /// The namespace to ask `rt` in: "" for cluster-scoped kinds.
    pub fn ns_for(&self, rt: &ResourceType) -> &str {
        if rt.namespaced {
            &self.namespace
        } else {
            ""
        }
    }

    /// Puts a manifest's object in the namespace to use (kubectl's rules): `-n` for objects
    /// that state none; an object stating another namespace than a given `-n` is an error.
    pub fn place(&self, obj: &mut Object) -> Result<(), String> {
        place_in_namespace(obj, &self.namespace, self.namespace_given)
    }
}

/// See [`Ctx::place`].
pub fn place_in_namespace(obj: &mut Object, namespace: &str, given: bool) -> Result<(), String> {
    if !obj.resource_type().namespaced {
        return Ok(());
    }
    let stated = obj.namespace().to_string();
    if stated.is_empty() {
        obj.metadata_mut().namespace = namespace.to_string();
    } else if given && stated != namespace {
        return Err(format!(
            "the namespace from the provided object \"{stated}\" does not match the namespace \
             \"{namespace}\". You must pass '--namespace={stated}' to perform this operation."
        ));
    }
    Ok(())
}

/// The resource type a user means by `name`: plural, singular, short name or Kind, any case,
/// optionally qualified by group (`deploy.apps`) or version and group (`deployments.v1.apps`).
pub fn lookup(name: &str) -> Option<&'static ResourceType> {
    if let Some(t) = ResourceType::lookup(name) {
        return Some(t);
    }
    let (short, qualifier) = name.split_once('.')?;
    let t = ResourceType::lookup(short)?;
    let group_matches = |g: &str| !t.group.is_empty() && g.eq_ignore_ascii_case(t.group);
    let version = t.api_version.rsplit('/').next().unwrap_or(t.api_version);
    let with_version = qualifier
        .split_once('.')
        .is_some_and(|(v, g)| v.eq_ignore_ascii_case(version) && group_matches(g));
    (group_matches(qualifier) || with_version).then_some(t)
}

/// [`lookup`], or kubectl's error for a name that is no resource type.
pub fn resource_type(name: &str) -> anyhow::Result<&'static ResourceType> {
    lookup(name).ok_or_else(|| {
        anyhow::Error::new(Reported(format!(
            "error: the server doesn't have a resource type \"{name}\""
        )))
    })
}

/// `pod`, `deployment.apps`, `virtualservice.networking.istio.io`: how kubectl names a kind
/// in `kind/name` output.
pub fn kind_ref(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.singular.to_string()
    } else {
        format!("{}.{}", rt.singular, rt.group)
    }
}

/// `pod/web`.
pub fn object_ref(obj: &Object) -> String {
    format!("{}/{}", kind_ref(obj.resource_type()), obj.name())
}

/// An error whose text is already in its final form (printed as is).
#[derive(Debug)]
pub struct Reported(pub String);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reported {}

/// A failure already printed (e.g. some documents of an apply): exit non-zero silently.
#[derive(Debug)]
pub struct AlreadyPrinted;

impl std::fmt::Display for AlreadyPrinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed (reported above)")
    }
}

impl std::error::Error for AlreadyPrinted {}

/// kubectl's wording of a server's answer: `Error from server (NotFound): pods "x" not found`.
pub fn client_error_text(e: &ClientError) -> String {
    match e {
        ClientError::NotFound(m) => format!("Error from server (NotFound): {m}"),
        ClientError::AlreadyExists(m) => format!("Error from server (AlreadyExists): {m}"),
        ClientError::Conflict(m) => format!("Error from server (Conflict): {m}"),
        ClientError::Invalid { message } => format!("Error from server (Invalid): {message}"),
        ClientError::Expired(m) => format!("Error from server (Expired): {m}"),
        ClientError::Status(s) => format!("Error from server ({:?}): {}", s.code(), s.message()),
        ClientError::Unavailable(m) => format!("Unable to connect to the server: {m}"),
        // Not retried elsewhere: the user reads back (get) to see whether it took effect.
        ClientError::Indeterminate(m) => {
            format!("Error: the request may or may not have been applied (no answer from the server): {m}")
        }
        other => format!("error: {other}"),
    }
}

/// The text to print for an error that ends a verb.
pub fn error_text(e: &anyhow::Error) -> Option<String> {
    if e.downcast_ref::<AlreadyPrinted>().is_some() {
        return None;
    }
    if let Some(r) = e.downcast_ref::<Reported>() {
        return Some(r.0.clone());
    }
    if let Some(c) = e.downcast_ref::<ClientError>() {
        return Some(client_error_text(c));
    }
    Some(format!("error: {e:#}"))
}

/// Runs a verb; prints its error kubectl's way and exits 1 on failure.
pub async fn run<F: std::future::Future<Output = anyhow::Result<()>>>(verb: F) -> anyhow::Result<()> {
    if let Err(e) = verb.await {
        // exit() runs no destructors: what was printed must be out first.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if let Some(text) = error_text(&e) {
            eprintln!("{text}");
        }
        std::process::exit(1);
    }
    Ok(())
}

/// Parses a duration flag: `30s`, `2m`, `1h`, `500ms`, `1m30s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 30s, 2m, 1h30m, 500ms)");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let d = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += d;
        rest = &rest[unit..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::manifest;

    #[test]
    fn durations() {
        for (s, want) in [
            ("30s", Some(30_000)),
            ("2m", Some(120_000)),
            ("1h30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("0s", Some(0)),
            ("45", Some(45_000)),
            ("", None),
            ("5x", None),
            ("m", None),
        ] {
            assert_eq!(
                parse_duration(s).ok().map(|d| d.as_millis() as u64),
                want,
                "{s:?}"
            );
        }
    }

    #[test]
    fn namespace_placement() {
        let pod = |ns: &str| {
            manifest::parse_one(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: '{ns}'}}\n"
            ))
            .unwrap()
        };
        // (stated, -n, given) -> Ok(namespace) or the error's start.
        for (stated, ns, given, want) in [
            ("", "default", false, Ok("default")),
            ("", "b", true, Ok("b")),
            ("a", "default", false, Ok("a")),
            ("a", "a", true, Ok("a")),
            ("a", "b", true, Err("the namespace from the provided object \"a\" does not match the namespace \"b\". You must pass '--namespace=a' to perform this operation.")),
        ] {
            let mut o = pod(stated);
            let got = place_in_namespace(&mut o, ns, given).map(|()| o.namespace().to_string());
            assert_eq!(got, want.map(str::to_string).map_err(str::to_string), "{stated} {ns} {given}");
        }
        let mut nsobj =
            manifest::parse_one("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n").unwrap();
        place_in_namespace(&mut nsobj, "b", true).unwrap();
        assert_eq!(
            nsobj.namespace(),
            "",
            "cluster-scoped objects stay without a namespace"
        );
    }

    #[test]
    fn kind_refs() {
        for (name, want) in [
            ("po", "pod"),
            ("deployments.apps", "deployment.apps"),
            ("VS", "virtualservice.networking.istio.io"),
            ("ns", "namespace"),
            ("deploy.apps", "deployment.apps"),
            ("Deployment.apps", "deployment.apps"),
            ("deployments.v1.apps", "deployment.apps"),
            ("gw.networking.istio.io", "gateway.networking.istio.io"),
            ("leases.coordination.k8s.io", "lease.coordination.k8s.io"),
            ("QUOTA", "resourcequota"),
            ("limits", "limitrange"),
        ] {
            assert_eq!(kind_ref(resource_type(name).unwrap()), want);
        }
        for bad in [
            "foo",
            "deploy.core",
            "pods.apps",
            "deployments.v2.apps",
            "po.",
            "deployments.v1",
        ] {
            assert!(lookup(bad).is_none(), "{bad}");
        }
        let e = resource_type("foo").unwrap_err();
        assert_eq!(
            error_text(&e).unwrap(),
            "error: the server doesn't have a resource type \"foo\""
        );
    }

    #[test]
    fn server_errors_in_kubectl_words() {
        let e = anyhow::Error::new(ClientError::NotFound("pods \"x\" not found".into()));
        assert_eq!(
            error_text(&e).unwrap(),
            "Error from server (NotFound): pods \"x\" not found"
        );
        assert_eq!(error_text(&anyhow::Error::new(AlreadyPrinted)), None);
    }
}
