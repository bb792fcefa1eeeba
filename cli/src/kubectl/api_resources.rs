//! `berth api-resources`: the kinds this build serves, as kubectl's table.

use super::printers::render_table;
use berth_proto::manifest::{ResourceType, RESOURCE_TYPES};

#[derive(clap::Args, Debug)]
pub struct ApiResourcesArgs {
    /// Only namespaced (true) or only cluster-scoped (false) kinds.
    #[arg(long)]
    pub namespaced: Option<bool>,
    /// No header line.
    #[arg(long)]
    pub no_headers: bool,
    /// `name`: only the resource names.
    #[arg(short = 'o', long = "output", default_value = "")]
    pub output: String,
}

/// Resource types as kubectl orders them: core group first, then by group, then by name.
pub fn sorted(namespaced: Option<bool>) -> Vec<&'static ResourceType> {
    let mut v: Vec<&ResourceType> = RESOURCE_TYPES
        .iter()
        .filter(|t| namespaced.is_none_or(|n| t.namespaced == n))
        .collect();
    v.sort_by_key(|t| (!t.group.is_empty(), t.group, t.plural));
    v
}

/// The NAME SHORTNAMES APIVERSION NAMESPACED KIND table.
pub fn table(types: &[&ResourceType], no_headers: bool) -> String {
    let headers: Vec<String> = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = types
        .iter()
        .map(|t| {
            vec![
                t.plural.to_string(),
                t.short_names.join(","),
                t.api_version.to_string(),
                t.namespaced.to_string(),
                t.kind.to_string(),
            ]
        })
        .collect();
    render_table(&headers, &rows, no_headers)
}

pub fn run(a: ApiResourcesArgs) -> anyhow::Result<()> {
    let types = sorted(a.namespaced);
    match a.output.as_str() {
        "" | "wide" => print!("{}", table(&types, a.no_headers)),
        "name" => types.iter().for_each(|t| {
            if t.group.is_empty() {
                println!("{}", t.plural);
            } else {
                println!("{}.{}", t.plural, t.group);
            }
        }),
        other => anyhow::bail!("--output {other:?} is not supported (use name or wide)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows() {
        let t = table(&sorted(None), false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
        );
        assert_eq!(lines.len(), RESOURCE_TYPES.len() + 1);
        assert!(lines[1].starts_with("configmaps "), "{t}");
        let deploy = lines.iter().find(|l| l.starts_with("deployments")).unwrap();
        assert_eq!(
            deploy.split_whitespace().collect::<Vec<_>>(),
            ["deployments", "deploy", "apps/v1", "true", "Deployment"]
        );
        assert!(sorted(Some(false)).iter().all(|t| !t.namespaced));
        assert_eq!(
            sorted(Some(false)).iter().map(|t| t.plural).collect::<Vec<_>>(),
            ["namespaces", "nodes"]
        );
    }
}
