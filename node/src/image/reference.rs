//! Image references normalized as Docker does: `busybox:1.36` is
//! `docker.io/library/busybox:1.36`, a missing tag is `latest`, a digest is kept.

use crate::Error;

/// Registry assumed for references that name none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Path prefix of official images on the default registry.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Longest reference accepted.
pub const REFERENCE_LEN_MAX: usize = 255;

/// Normalizes `r` to `domain/path[:tag][@digest]` (tag `latest` when neither is given).
pub fn normalize(r: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::InvalidReference(format!("{r:?}: {why}"));
    if r.is_empty() || r.len() > REFERENCE_LEN_MAX {
        return Err(bad("empty or too long"));
    }
    if r.chars().any(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    let (name_tag, digest) = match r.split_once('@') {
        Some((n, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("digest must be sha256:<hex>"))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("digest must be sha256 with 64 hex digits"));
            }
            (n, Some(d))
        }
        None => (r, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(bad("invalid tag"));
        }
    }
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(bad("invalid repository name"));
    }
    let (domain, path) = split_domain(name);
    if path
        .chars()
        .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)))
    {
        return Err(bad("repository names are lowercase letters, digits and . _ - /"));
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// Splits a repository name into registry domain and path, as Docker decides: the first
/// component is a domain when it has a '.' or ':' or is `localhost`.
fn split_domain(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            let domain = if first == "index.docker.io" {
                DEFAULT_DOMAIN
            } else {
                first
            };
            let path = if domain == DEFAULT_DOMAIN && !rest.contains('/') {
                format!("{OFFICIAL_REPO_PREFIX}{rest}")
            } else {
                rest.to_string()
            };
            (domain.to_string(), path)
        }
        Some(_) => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        None => (
            DEFAULT_DOMAIN.to_string(),
            format!("{OFFICIAL_REPO_PREFIX}{name}"),
        ),
    }
}

/// A normalized reference taken apart: what a registry request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, ...
    pub domain: String,
    /// The repository path inside the registry (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Parts {
    /// What a manifest request names: the digest when there is one, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

/// Splits a reference (normalized first, so any accepted form works).
pub fn parts(r: &str) -> Result<Parts, Error> {
    let n = normalize(r)?;
    let (name_tag, digest) = match n.split_once('@') {
        Some((a, d)) => (a.to_string(), Some(d.to_string())),
        None => (n.clone(), None),
    };
    let last_slash = name_tag.rfind('/').expect("normalized references have a domain");
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            name_tag[..last_slash + i].to_string(),
            Some(name_tag[last_slash + i + 1..].to_string()),
        ),
        None => (name_tag.clone(), None),
    };
    let (domain, repository) = name.split_once('/').expect("normalized references have a domain");
    Ok(Parts {
        domain: domain.into(),
        repository: repository.into(),
        tag,
        digest,
    })
}

/// The short form users type, for display (`docker.io/library/busybox:1.36` -> `busybox:1.36`).
pub fn familiar(normalized: &str) -> &str {
    let s = normalized.strip_prefix("docker.io/").unwrap_or(normalized);
    s.strip_prefix(OFFICIAL_REPO_PREFIX).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
            ("foo/bar", "docker.io/foo/bar:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x/y:v1", "localhost:5000/x/y:v1"),
            ("quay.io/a/b:1.0-rc.1", "quay.io/a/b:1.0-rc.1"),
            ("ghcr.io/a/b:V1", "ghcr.io/a/b:V1"),
        ];
        for (i, want) in cases {
            assert_eq!(normalize(i).unwrap(), want, "{i}");
        }
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&format!("busybox@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            normalize(&format!("busybox:1@{d}")).unwrap(),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn rejects_bad_references() {
        for r in [
            "",
            "Busybox",
            "a b",
            "busybox:",
            "busybox:-x",
            "a//b",
            "/a",
            "x@sha256:12",
            "x@md5:aa",
        ] {
            assert!(normalize(r).is_err(), "{r:?} accepted");
        }
    }

    #[test]
    fn parts_of_references() {
        let p = parts("localhost:5000/x/y:v1").unwrap();
        assert_eq!(
            (p.domain.as_str(), p.repository.as_str(), p.tag.as_deref()),
            ("localhost:5000", "x/y", Some("v1"))
        );
        assert_eq!(p.manifest_ref(), "v1");
        let d = format!("sha256:{}", "b".repeat(64));
        let p = parts(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(
            (p.domain.as_str(), p.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(p.manifest_ref(), d);
        assert_eq!(parts("busybox").unwrap().manifest_ref(), "latest");
    }

    #[test]
    fn familiar_names() {
        assert_eq!(familiar("docker.io/library/busybox:1.36"), "busybox:1.36");
        assert_eq!(familiar("docker.io/foo/bar:latest"), "foo/bar:latest");
        assert_eq!(familiar("quay.io/a:1"), "quay.io/a:1");
    }
}
