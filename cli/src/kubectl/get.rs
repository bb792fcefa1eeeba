//! `berth get`: objects of one or more kinds as kubectl's tables, YAML, JSON or names, and
//! `-w` to keep printing them as they change.

use super::printers::{self, column_widths, render_row, render_table};
use super::{kind_ref, object_ref, resource_type, AlreadyPrinted, Ctx, Reported, Target};
use berth_client::{ClientError, ListParams, WatchEvent};
use berth_proto::manifest::{self, Object, ResourceType};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub target: Target,
    /// KIND [NAME...], KIND/NAME..., or KIND,KIND (po,svc).
    #[arg(required = true)]
    pub args: Vec<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Label selector (app=web,tier!=db).
    #[arg(short = 'l', long = "selector", default_value = "")]
    pub selector: String,
    /// Field selector (metadata.name=web,status.phase=Running).
    #[arg(long = "field-selector", default_value = "")]
    pub field_selector: String,
    /// Output format: wide, yaml, json or name (default: a table).
    #[arg(short = 'o', long = "output", default_value = "")]
    pub output: String,
    /// After listing, print changes as they happen.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Print only the changes, not the current objects first.
    #[arg(long)]
    pub watch_only: bool,
    /// No header line in tables.
    #[arg(long)]
    pub no_headers: bool,
    /// A LABELS column at the end of tables.
    #[arg(long)]
    pub show_labels: bool,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

pub fn parse_output(s: &str) -> anyhow::Result<Output> {
    Ok(match s {
        "" | "table" => Output::Table,
        "wide" => Output::Wide,
        "yaml" => Output::Yaml,
        "json" => Output::Json,
        "name" => Output::Name,
        other => {
            return Err(Reported(format!(
                "error: unable to match a printer suitable for the output format \"{other}\", \
                 allowed formats are: json,name,wide,yaml"
            ))
            .into())
        }
    })
}

/// What to get: each resource type with the names asked for (none: list them all).
pub type Targets = Vec<(&'static ResourceType, Vec<String>)>;

/// Reads `KIND [NAME...]`, `KIND/NAME...` and `KIND,KIND [NAME...]`.
pub fn parse_targets(args: &[String]) -> anyhow::Result<Targets> {
    let Some(first) = args.first() else {
        anyhow::bail!("you must specify the type of resource to get");
    };
    let mut out: Targets = Vec::new();
    if first.contains('/') {
        for a in args {
            let Some((kind, name)) = a.split_once('/') else {
                anyhow::bail!(
                    "there is no need to specify a resource type as a separate argument when \
                     passing arguments in resource/name form (e.g. 'berth get pod/web')"
                );
            };
            let rt = resource_type(kind)?;
            match out.iter_mut().find(|(t, _)| std::ptr::eq(*t, rt)) {
                Some((_, names)) => names.push(name.to_string()),
                None => out.push((rt, vec![name.to_string()])),
            }
        }
        return Ok(out);
    }
    for kind in first.split(',').filter(|k| !k.is_empty()) {
        let rt = resource_type(kind)?;
        if !out.iter().any(|(t, _)| std::ptr::eq(*t, rt)) {
            out.push((rt, args[1..].to_vec()));
        }
    }
    Ok(out)
}

pub fn now_s() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// How tables are laid out for one `get`.
#[derive(Clone, Copy)]
pub struct TableOpts {
    pub wide: bool,
    pub namespace_column: bool,
    pub show_labels: bool,
    /// Names as `kind/name` (several kinds in one `get`).
    pub kind_prefix: bool,
}

/// The headers of `rt`'s table with the NAMESPACE and LABELS columns as asked.
pub fn table_headers(rt: &ResourceType, o: TableOpts) -> Vec<String> {
    let mut h: Vec<String> = Vec::new();
    if o.namespace_column && rt.namespaced {
        h.push("NAMESPACE".into());
    }
    h.extend(printers::columns(rt, o.wide).into_iter().map(String::from));
    if o.show_labels {
        h.push("LABELS".into());
    }
    h
}

/// One object's row, matching [`table_headers`].
pub fn table_row(obj: &Object, now_s: i64, o: TableOpts) -> Vec<String> {
    let rt = obj.resource_type();
    let mut cells = printers::cells(obj, now_s, o.wide);
    if o.kind_prefix && printers::columns(rt, false)[0] == "NAME" {
        cells[0] = format!("{}/{}", kind_ref(rt), cells[0]);
    }
    let mut row = Vec::new();
    if o.namespace_column && rt.namespaced {
        row.push(obj.namespace().to_string());
    }
    row.extend(cells);
    if o.show_labels {
        let empty = Default::default();
        row.push(printers::labels_string(
            obj.metadata().map_or(&empty, |m| &m.labels),
        ));
    }
    row
}

/// YAML of one object, or of a `v1` `List` of several (as kubectl prints them).
pub fn yaml_of(objs: &[Object], single: bool) -> String {
    if single && objs.len() == 1 {
        return manifest::to_yaml(objs);
    }
    serde_yaml_ng::to_string(&list_value(objs)).expect("a JSON value serializes to YAML")
}

/// JSON of one object, or of a `v1` `List` of several.
pub fn json_of(objs: &[Object], single: bool) -> String {
    if single && objs.len() == 1 {
        return manifest::to_json(&objs[0]);
    }
    serde_json::to_string_pretty(&list_value(objs)).expect("a JSON value serializes")
}

fn list_value(objs: &[Object]) -> Value {
    let items: Vec<Value> = objs.iter().map(Object::to_json_value).collect();
    serde_json::json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

pub async fn run(a: GetArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&a.target)?;
    let output = parse_output(&a.output)?;
    let targets = parse_targets(&a.args)?;
    let named = targets.iter().any(|(_, n)| !n.is_empty());
    if named && !a.selector.is_empty() {
        anyhow::bail!("name cannot be provided when a selector is specified");
    }
    if a.watch || a.watch_only {
        return watch(&ctx, &a, output, &targets).await;
    }
    let mut failed = false;
    let mut groups: Vec<(&'static ResourceType, Vec<Object>)> = Vec::new();
    for (rt, names) in &targets {
        let (objs, ok) = fetch(&ctx, &a, rt, names).await?;
        failed |= !ok;
        groups.push((rt, objs));
    }
    let single = targets.len() == 1 && targets[0].1.len() == 1;
    print_groups(&ctx, &a, output, &groups, single, named);
    if failed {
        return Err(AlreadyPrinted.into());
    }
    Ok(())
}

fn list_params(a: &GetArgs) -> ListParams {
    ListParams {
        label_selector: a.selector.clone(),
        field_selector: a.field_selector.clone(),
        ..Default::default()
    }
}

fn list_ns<'a>(ctx: &'a Ctx, a: &GetArgs, rt: &ResourceType) -> &'a str {
    if a.all_namespaces {
        ""
    } else {
        ctx.ns_for(rt)
    }
}

/// The objects asked for; with names, each missing one is reported and `false` returned.
async fn fetch(
    ctx: &Ctx,
    a: &GetArgs,
    rt: &'static ResourceType,
    names: &[String],
) -> anyhow::Result<(Vec<Object>, bool)> {
    if names.is_empty() {
        let list = ctx
            .client
            .list_all_objects(rt.plural, list_ns(ctx, a, rt), &list_params(a))
            .await?;
        return Ok((list.items, true));
    }
    let mut objs = Vec::new();
    let mut ok = true;
    for n in names {
        match ctx.client.get_object(rt.plural, ctx.ns_for(rt), n).await {
            Ok(o) => objs.push(o),
            Err(e @ ClientError::NotFound(_)) => {
                eprintln!("{}", super::client_error_text(&e));
                ok = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((objs, ok))
}

fn table_opts(a: &GetArgs, output: Output, kinds: usize) -> TableOpts {
    TableOpts {
        wide: output == Output::Wide,
        namespace_column: a.all_namespaces,
        show_labels: a.show_labels,
        kind_prefix: kinds > 1,
    }
}

fn print_groups(
    ctx: &Ctx,
    a: &GetArgs,
    output: Output,
    groups: &[(&'static ResourceType, Vec<Object>)],
    single: bool,
    named: bool,
) {
    let all: Vec<Object> = groups.iter().flat_map(|(_, o)| o.iter().cloned()).collect();
    if named && all.is_empty() {
        return;
    }
    match output {
        Output::Yaml => print!("{}", yaml_of(&all, single)),
        Output::Json => println!("{}", json_of(&all, single)),
        Output::Name => all.iter().for_each(|o| println!("{}", object_ref(o))),
        Output::Table | Output::Wide => {
            if all.is_empty() {
                // Names asked for that are missing were reported one by one.
                if !named {
                    eprintln!("{}", no_resources(ctx, a, groups.first().map(|g| g.0)));
                }
                return;
            }
            let opts = table_opts(a, output, groups.len());
            let now = now_s();
            let mut first = true;
            for (rt, objs) in groups.iter().filter(|(_, o)| !o.is_empty()) {
                if !first {
                    println!();
                }
                first = false;
                let rows: Vec<Vec<String>> = objs.iter().map(|o| table_row(o, now, opts)).collect();
                print!("{}", render_table(&table_headers(rt, opts), &rows, a.no_headers));
            }
        }
    }
}

fn no_resources(ctx: &Ctx, a: &GetArgs, rt: Option<&ResourceType>) -> String {
    if a.all_namespaces || rt.is_some_and(|t| !t.namespaced) {
        "No resources found".into()
    } else {
        format!("No resources found in {} namespace.", ctx.namespace)
    }
}

/// `get -w`: the list, then every change, until killed.
async fn watch(ctx: &Ctx, a: &GetArgs, output: Output, targets: &Targets) -> anyhow::Result<()> {
    let [(rt, names)] = targets.as_slice() else {
        anyhow::bail!("watch is only supported on individual resources and resource collections, but {} resource types were given", targets.len());
    };
    let mut params = list_params(a);
    match names.as_slice() {
        [] => {}
        [name] => {
            let by_name = format!("metadata.name={name}");
            params.field_selector = if params.field_selector.is_empty() {
                by_name
            } else {
                format!("{},{by_name}", params.field_selector)
            };
        }
        _ => anyhow::bail!("watch is only supported on individual resources and resource collections"),
    }
    let ns = list_ns(ctx, a, rt);
    let opts = table_opts(a, output, 1);
    let headers = table_headers(rt, opts);
    let mut header_printed = a.no_headers;
    // Column widths come from the first listing; later rows are padded to them.
    let mut widths: Option<Vec<usize>> = None;
    loop {
        let list = ctx.client.list_all_objects(rt.plural, ns, &params).await?;
        let now = now_s();
        let rows: Vec<Vec<String>> = list.items.iter().map(|o| table_row(o, now, opts)).collect();
        let widths = widths
            .get_or_insert_with(|| column_widths(&headers, &rows))
            .clone();
        match output {
            _ if a.watch_only => {}
            Output::Table | Output::Wide if list.items.is_empty() && !header_printed => {
                eprintln!("{}", no_resources(ctx, a, Some(rt)));
            }
            Output::Table | Output::Wide => {
                print_rows(&headers, &rows, &widths, &mut header_printed);
            }
            _ => list.items.iter().for_each(|o| print_watched(o, output)),
        }
        let params = ListParams {
            resource_version: list.resource_version.clone(),
            ..params.clone()
        };
        let mut w = ctx.client.watch_objects(rt.plural, ns, &params);
        loop {
            let obj = match w.next().await {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => o,
                Ok(WatchEvent::Bookmark(_)) => continue,
                Err(ClientError::Expired(_)) => break,
                Err(e) => return Err(e.into()),
            };
            match output {
                Output::Table | Output::Wide => {
                    let row = table_row(&obj, now_s(), opts);
                    print_rows(&headers, &[row], &widths, &mut header_printed);
                }
                _ => print_watched(&obj, output),
            }
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        // The watch's start was compacted away: list again (the header is not repeated) and
        // go on from there.
    }
}

/// Rows of a watched table, preceded by the header the first time.
fn print_rows(headers: &[String], rows: &[Vec<String>], widths: &[usize], header_printed: &mut bool) {
    if !*header_printed {
        print!("{}", render_row(headers, widths));
        *header_printed = true;
    }
    for r in rows {
        print!("{}", render_row(r, widths));
    }
}

fn print_watched(o: &Object, output: Output) {
    match output {
        Output::Yaml => print!("---\n{}", manifest::to_yaml(std::slice::from_ref(o))),
        Output::Json => println!("{}", manifest::to_json(o)),
        _ => println!("{}", object_ref(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn shown(t: &Targets) -> Vec<(String, Vec<String>)> {
        t.iter()
            .map(|(rt, n)| (rt.plural.to_string(), n.clone()))
            .collect()
    }

    #[test]
    fn targets() {
        for (input, want) in [
            (vec!["po"], vec![("pods", vec![])]),
            (vec!["pods", "a", "b"], vec![("pods", vec!["a", "b"])]),
            (vec!["po,svc"], vec![("pods", vec![]), ("services", vec![])]),
            (
                vec!["po,svc", "x"],
                vec![("pods", vec!["x"]), ("services", vec!["x"])],
            ),
            (
                vec!["pod/a", "svc/b", "po/c"],
                vec![("pods", vec!["a", "c"]), ("services", vec!["b"])],
            ),
            (vec!["deployments.apps"], vec![("deployments", vec![])]),
            (vec!["Deployment", "web"], vec![("deployments", vec!["web"])]),
        ] {
            let want: Vec<(String, Vec<String>)> =
                want.into_iter().map(|(p, n)| (p.to_string(), args(&n))).collect();
            assert_eq!(shown(&parse_targets(&args(&input)).unwrap()), want, "{input:?}");
        }
        assert!(parse_targets(&args(&["pod/a", "b"])).is_err());
        let e = parse_targets(&args(&["foo"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error: the server doesn't have a resource type \"foo\""
        );
    }

    #[test]
    fn outputs() {
        for (s, want) in [
            ("", Output::Table),
            ("wide", Output::Wide),
            ("yaml", Output::Yaml),
            ("json", Output::Json),
            ("name", Output::Name),
        ] {
            assert_eq!(parse_output(s).unwrap(), want);
        }
        assert!(parse_output("jsonpath").is_err());
    }

    #[test]
    fn rows_with_namespace_labels_and_kind() {
        let o = manifest::parse_one(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: prod, labels: {a: b}, \
             creationTimestamp: '2023-11-14T22:13:15Z'}\n",
        )
        .unwrap();
        let opts = TableOpts {
            wide: false,
            namespace_column: true,
            show_labels: true,
            kind_prefix: true,
        };
        assert_eq!(
            table_headers(o.resource_type(), opts),
            args(&["NAMESPACE", "NAME", "DATA", "AGE", "LABELS"])
        );
        assert_eq!(
            table_row(&o, 1_700_000_000, opts),
            args(&["prod", "configmap/c", "0", "5s", "a=b"])
        );
        let yaml = yaml_of(&[o.clone(), o.clone()], false);
        assert!(yaml.starts_with("apiVersion: v1\nitems:\n"), "{yaml}");
        assert!(yaml.contains("kind: List\n"), "{yaml}");
        assert_eq!(
            yaml_of(std::slice::from_ref(&o), true),
            manifest::to_yaml(std::slice::from_ref(&o))
        );
    }
}
