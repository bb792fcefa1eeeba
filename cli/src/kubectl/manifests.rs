//! `-f FILE|DIR|-` and `-R`: manifest texts from files, directories and stdin, split into
//! documents, each parsed on its own so that one bad document does not stop the others.

use anyhow::Context;
use berth_proto::manifest::{self, Object};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The label of manifests read from standard input.
pub const STDIN_LABEL: &str = "STDIN";
/// Extensions of manifest files read from a directory.
const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// One document of a manifest source.
pub struct Doc {
    /// `path/to/file.yaml` or `STDIN`.
    pub source: String,
    /// 1-based index in its source; 0 when the whole source failed.
    pub index: usize,
    /// The object, or why the document is not one (naming source, document, kind/name and
    /// field path).
    pub object: Result<Object, String>,
}

impl Doc {
    /// `file.yaml document 2 (Deployment web)`: where this document is, for messages.
    pub fn place(&self) -> String {
        match &self.object {
            Ok(o) => format!(
                "{} document {} ({} {})",
                self.source,
                self.index,
                o.kind_name(),
                o.name()
            ),
            Err(_) => format!("{} document {}", self.source, self.index),
        }
    }
}

/// Every source `-f` names, in order, as (label, text). Directories give their manifest files
/// (sorted by name), descending into subdirectories with `recursive`.
pub fn read_sources(files: &[String], recursive: bool) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading manifests from stdin")?;
            out.push((STDIN_LABEL.to_string(), text));
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            let mut paths = Vec::new();
            walk(path, recursive, &mut paths).with_context(|| format!("reading directory {f}"))?;
            for p in paths {
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                out.push((p.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::Error::new(super::Reported(format!(
                    "error: the path \"{f}\" cannot be read: {e}"
                )))
            })?;
            out.push((f.clone(), text));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                walk(&p, recursive, out)?;
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// The documents of one source. A text that is not YAML/JSON at all is one failed document.
pub fn documents(source: &str, text: &str) -> Vec<Doc> {
    let docs = match manifest::parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            return vec![Doc {
                source: source.to_string(),
                index: e.document.unwrap_or(0),
                object: Err(format!("{source}: {e}")),
            }]
        }
    };
    docs.into_iter()
        .map(|(index, value)| Doc {
            source: source.to_string(),
            index,
            object: Object::from_value(value).map_err(|e| {
                let e = manifest::ManifestError {
                    document: Some(index),
                    ..e
                };
                format!("{source}: {e}")
            }),
        })
        .collect()
}

/// Every document of every source `-f` names.
pub fn read_documents(files: &[String], recursive: bool) -> anyhow::Result<Vec<Doc>> {
    if files.is_empty() {
        anyhow::bail!("must specify -f (a file, a directory, or - for stdin)");
    }
    Ok(read_sources(files, recursive)?
        .iter()
        .flat_map(|(label, text)| documents(label, text))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_document_on_its_own() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {x: [1]}\n---\n\
                    apiVersion: v1\nkind: Frobnicator\nmetadata: {name: c}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicass: 1}\n";
        let docs = documents("m.yaml", text);
        let got: Vec<(usize, Result<String, String>)> = docs
            .iter()
            .map(|d| {
                (
                    d.index,
                    d.object
                        .as_ref()
                        .map(|o| o.name().to_string())
                        .map_err(Clone::clone),
                )
            })
            .collect();
        assert_eq!(got[0], (1, Ok("a".to_string())));
        let (i, e) = &got[1];
        assert_eq!(*i, 2);
        let e = e.as_ref().unwrap_err();
        assert!(e.starts_with("m.yaml: document 2 (ConfigMap b): data.x: "), "{e}");
        assert_eq!(
            got[2].1.as_ref().unwrap_err(),
            "m.yaml: document 3 (Frobnicator c): unsupported kind Frobnicator (apiVersion \"v1\")"
        );
        assert_eq!(
            got[3].1.as_ref().unwrap_err(),
            "m.yaml: document 4 (Deployment d): spec.replicass: unknown field"
        );
        assert_eq!(docs[0].place(), "m.yaml document 1 (ConfigMap a)");
    }

    #[test]
    fn unreadable_text_is_one_failed_document() {
        let docs = documents("STDIN", "a: [\n");
        assert_eq!(docs.len(), 1);
        let e = docs[0].object.as_ref().err().unwrap();
        assert!(e.starts_with("STDIN: document 1: invalid YAML"), "{e}");
    }

    #[test]
    fn directories_by_extension_and_recursion() {
        let d = tempfile::tempdir().unwrap();
        let cm = |n: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}}}\n");
        std::fs::write(d.path().join("b.yaml"), cm("b")).unwrap();
        std::fs::write(
            d.path().join("a.json"),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/c.yml"), cm("c")).unwrap();
        let dir = d.path().display().to_string();
        let names = |recursive| -> Vec<String> {
            read_documents(std::slice::from_ref(&dir), recursive)
                .unwrap()
                .into_iter()
                .map(|d| d.object.unwrap().name().to_string())
                .collect()
        };
        assert_eq!(names(false), ["a", "b"]);
        assert_eq!(names(true), ["a", "b", "c"]);
    }
}
