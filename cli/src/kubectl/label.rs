//! `berth label` and `berth annotate`: read the object, change its labels or annotations,
//! write it back with its resourceVersion as precondition; on a conflict (someone wrote in
//! between) read again and redo, a bounded number of times.

use super::get::parse_targets;
use super::{object_ref, Ctx, Reported, Target};
use berth_client::{ClientError, ListParams};
use berth_proto::manifest::Object;
use std::collections::BTreeMap;

/// Read-modify-write rounds before giving up on a key that keeps changing under us.
pub const UPDATE_ATTEMPTS_MAX: usize = 8;

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    #[command(flatten)]
    pub target: Target,
    /// KIND NAME... (or KIND/NAME...) then changes: key=value sets, key- removes.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Replace values that are already set.
    #[arg(long)]
    pub overwrite: bool,
    /// Change the objects of the kind matching this label selector (instead of names).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Change every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
}

/// One requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Remove(String),
}

/// Labels or annotations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Labels,
    Annotations,
}

impl Field {
    fn done(self) -> &'static str {
        match self {
            Field::Labels => "labeled",
            Field::Annotations => "annotated",
        }
    }
}

fn is_change(a: &str) -> bool {
    a.contains('=') || (a.ends_with('-') && a.len() > 1)
}

/// Splits `KIND NAME... k=v k-` into the object arguments and the changes.
pub fn split_args(args: &[String]) -> anyhow::Result<(Vec<String>, Vec<Change>)> {
    let first_change = args.iter().position(|a| is_change(a)).unwrap_or(args.len());
    let (objs, changes) = args.split_at(first_change);
    if changes.is_empty() {
        anyhow::bail!("at least one change is required (key=value or key-)");
    }
    let changes = changes
        .iter()
        .map(|c| {
            if let Some((k, v)) = c.split_once('=') {
                if k.is_empty() {
                    anyhow::bail!("invalid change {c:?}: empty key");
                }
                Ok(Change::Set(k.to_string(), v.to_string()))
            } else if let Some(k) = c.strip_suffix('-').filter(|k| !k.is_empty()) {
                Ok(Change::Remove(k.to_string()))
            } else {
                anyhow::bail!("invalid change {c:?}: expected key=value or key-")
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((objs.to_vec(), changes))
}

/// Applies `changes` to `map`; whether anything changed. Without `overwrite`, a key that
/// already has another value is an error (kubectl's wording).
pub fn apply_changes(
    map: &mut BTreeMap<String, String>,
    changes: &[Change],
    overwrite: bool,
) -> Result<bool, String> {
    let mut changed = false;
    for c in changes {
        match c {
            Change::Set(k, v) => match map.get(k) {
                Some(old) if old == v => {}
                Some(old) if !overwrite => {
                    return Err(format!(
                        "'{k}' already has a value ({old}), and --overwrite is false"
                    ))
                }
                _ => {
                    map.insert(k.clone(), v.clone());
                    changed = true;
                }
            },
            Change::Remove(k) => changed |= map.remove(k).is_some(),
        }
    }
    Ok(changed)
}

pub async fn label(a: LabelArgs) -> anyhow::Result<()> {
    run(a, Field::Labels).await
}

pub async fn annotate(a: LabelArgs) -> anyhow::Result<()> {
    run(a, Field::Annotations).await
}

async fn run(a: LabelArgs, field: Field) -> anyhow::Result<()> {
    let ctx = Ctx::new(&a.target)?;
    let (objs, changes) = split_args(&a.args)?;
    let by_selector = a.selector.is_some() || a.all;
    for (rt, names) in parse_targets(&objs)? {
        let names = match (names.is_empty(), by_selector) {
            (false, false) => names,
            (true, true) => {
                let params = ListParams {
                    label_selector: a.selector.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let list = ctx
                    .client
                    .list_all_objects(rt.plural, ctx.ns_for(rt), &params)
                    .await?;
                list.items.iter().map(|o| o.name().to_string()).collect()
            }
            (false, true) => anyhow::bail!("name cannot be provided when a selector or --all is specified"),
            (true, false) => anyhow::bail!(
                "one or more resources must be specified as <resource> <name> or <resource>/<name> \
                 (or with -l/--all)"
            ),
        };
        for name in names {
            let obj_ref = format!("{}/{name}", super::kind_ref(rt));
            let changed = change(
                &ctx,
                rt.plural,
                ctx.ns_for(rt),
                &name,
                field,
                &changes,
                a.overwrite,
            )
            .await?;
            match changed {
                Some(o) => println!("{} {}", object_ref(&o), field.done()),
                None => println!("{obj_ref} not {}", field.done()),
            }
        }
    }
    Ok(())
}

/// Read, change, write with the read resourceVersion; again on Conflict. The object as
/// written, or None when there was nothing to change.
async fn change(
    ctx: &Ctx,
    resource: &str,
    ns: &str,
    name: &str,
    field: Field,
    changes: &[Change],
    overwrite: bool,
) -> anyhow::Result<Option<Object>> {
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let mut obj = ctx.client.get_object(resource, ns, name).await?;
        let meta = obj.metadata_mut();
        let map = match field {
            Field::Labels => &mut meta.labels,
            Field::Annotations => &mut meta.annotations,
        };
        let changed = apply_changes(map, changes, overwrite).map_err(|e| Reported(format!("error: {e}")))?;
        if !changed {
            return Ok(None);
        }
        match ctx.client.update_object(obj).await {
            Ok(o) => return Ok(Some(o)),
            Err(ClientError::Conflict(_)) => {
                tracing::debug!(resource, name, "conflicting update, reading again");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "{resource} \"{name}\" kept changing: gave up after {UPDATE_ATTEMPTS_MAX} conflicting updates"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_objects_from_changes() {
        let (objs, changes) = split_args(&s(&["po", "web", "a=b", "c-", "d="])).unwrap();
        assert_eq!(objs, s(&["po", "web"]));
        assert_eq!(
            changes,
            [
                Change::Set("a".into(), "b".into()),
                Change::Remove("c".into()),
                Change::Set("d".into(), "".into())
            ]
        );
        let (objs, _) = split_args(&s(&["pod/web", "app.kubernetes.io/name=x"])).unwrap();
        assert_eq!(objs, s(&["pod/web"]));
        assert!(split_args(&s(&["po", "web"])).is_err());
        assert!(split_args(&s(&["po", "web", "=x"])).is_err());
    }

    #[test]
    fn changes_and_overwrite() {
        let base: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        for (changes, overwrite, want) in [
            (
                vec![Change::Set("b".into(), "2".into())],
                false,
                Ok((true, "a=1,b=2")),
            ),
            (
                vec![Change::Set("a".into(), "1".into())],
                false,
                Ok((false, "a=1")),
            ),
            (
                vec![Change::Set("a".into(), "2".into())],
                false,
                Err("'a' already has a value (1), and --overwrite is false"),
            ),
            (vec![Change::Set("a".into(), "2".into())], true, Ok((true, "a=2"))),
            (vec![Change::Remove("a".into())], false, Ok((true, ""))),
            (vec![Change::Remove("zz".into())], false, Ok((false, "a=1"))),
        ] {
            let mut m = base.clone();
            let got = apply_changes(&mut m, &changes, overwrite).map(|c| {
                let s: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (c, s.join(","))
            });
            let want = want.map(|(c, s)| (c, s.to_string())).map_err(str::to_string);
            assert_eq!(got, want, "{changes:?} {overwrite}");
        }
    }
}
