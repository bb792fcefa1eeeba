//! `berth delete`: by kind and names, by `-f` manifests, by `-l` selector or `--all`; with
//! `--wait` (the default, as kubectl) it polls until each object is gone.

use super::get::parse_targets;
use super::{client_error_text, kind_ref, manifests, parse_duration, AlreadyPrinted, Ctx, Target};
use berth_client::{ClientError, ListParams};
use berth_proto::apiv1::DeleteOptions;
use berth_proto::manifest::ResourceType;
use std::time::{Duration, Instant};

/// How often `--wait` asks whether a deleted object is gone.
pub const DELETE_WAIT_POLL: Duration = Duration::from_millis(200);

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub target: Target,
    /// KIND NAME..., KIND/NAME..., or KIND with -l/--all.
    pub args: Vec<String>,
    /// Delete what these manifests name (file, directory or -).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Descend into subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete the objects of the kind matching this label selector.
    #[arg(short = 'l', long = "selector", default_value = "")]
    pub selector: String,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Seconds the object gets to terminate (-1: the object's own default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub wait: bool,
    /// How long --wait waits (0s: no limit), e.g. 30s, 2m.
    #[arg(long, default_value = "0s")]
    pub timeout: String,
    /// A missing object is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// One object to delete.
struct Victim {
    rt: &'static ResourceType,
    namespace: String,
    name: String,
}

pub async fn run(a: DeleteArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&a.target)?;
    let timeout = parse_duration(&a.timeout).map_err(anyhow::Error::msg)?;
    let (victims, mut failed) = victims(&ctx, &a).await?;
    let options = DeleteOptions {
        grace_period_seconds: (a.grace_period >= 0).then_some(a.grace_period),
        ..Default::default()
    };
    let mut deleted = Vec::new();
    for v in victims {
        match ctx
            .client
            .delete_object(v.rt.plural, &v.namespace, &v.name, options.clone())
            .await
        {
            Ok((obj, _pending)) => {
                println!("{} \"{}\" deleted", kind_ref(v.rt), v.name);
                let uid = obj.and_then(|o| o.metadata().map(|m| m.uid.clone()));
                deleted.push((v, uid.unwrap_or_default()));
            }
            Err(ClientError::NotFound(_)) if a.ignore_not_found => {}
            Err(e @ ClientError::NotFound(_)) => {
                eprintln!("{}", client_error_text(&e));
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if a.wait {
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        for (v, uid) in &deleted {
            wait_gone(&ctx, v, uid, deadline).await?;
        }
    }
    if failed {
        return Err(AlreadyPrinted.into());
    }
    Ok(())
}

/// What the arguments name; `true` when some of it was bad (already reported).
async fn victims(ctx: &Ctx, a: &DeleteArgs) -> anyhow::Result<(Vec<Victim>, bool)> {
    let mut out = Vec::new();
    let mut failed = false;
    if !a.files.is_empty() {
        if !a.args.is_empty() {
            anyhow::bail!("cannot use -f together with KIND NAME arguments");
        }
        for doc in manifests::read_documents(&a.files, a.recursive)? {
            let placed = doc.object.clone().and_then(|mut o| ctx.place(&mut o).map(|()| o));
            match placed {
                Ok(o) => out.push(Victim {
                    rt: o.resource_type(),
                    namespace: o.namespace().to_string(),
                    name: o.name().to_string(),
                }),
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                }
            }
        }
        return Ok((out, failed));
    }
    if a.args.is_empty() {
        anyhow::bail!("you must provide one or more resources by argument or filename (-f)");
    }
    for (rt, names) in parse_targets(&a.args)? {
        let ns = ctx.ns_for(rt).to_string();
        let names = if names.is_empty() {
            if a.selector.is_empty() && !a.all {
                anyhow::bail!(
                    "resource(s) were provided, but no name was specified (use -l or --all to delete by selector)"
                );
            }
            let params = ListParams {
                label_selector: a.selector.clone(),
                ..Default::default()
            };
            let list = ctx.client.list_all_objects(rt.plural, &ns, &params).await?;
            if list.items.is_empty() {
                eprintln!("No resources found");
            }
            list.items.iter().map(|o| o.name().to_string()).collect()
        } else if !a.selector.is_empty() || a.all {
            anyhow::bail!("name cannot be provided when a selector or --all is specified");
        } else {
            names
        };
        out.extend(names.into_iter().map(|name| Victim {
            rt,
            namespace: ns.clone(),
            name,
        }));
    }
    Ok((out, failed))
}

/// Polls until the object is gone (or replaced by one with another uid).
async fn wait_gone(ctx: &Ctx, v: &Victim, uid: &str, deadline: Option<Instant>) -> anyhow::Result<()> {
    loop {
        match ctx.client.get_object(v.rt.plural, &v.namespace, &v.name).await {
            Err(ClientError::NotFound(_)) => return Ok(()),
            Ok(o) if !uid.is_empty() && o.metadata().is_some_and(|m| m.uid != uid) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            anyhow::bail!(
                "timed out waiting for the condition on {}/{}",
                v.rt.plural,
                v.name
            );
        }
        tokio::time::sleep(DELETE_WAIT_POLL).await;
    }
}
