//! `berth apply -f` and `berth create -f`: every document on its own (one Apply or Create
//! call each, so a failed document leaves nothing behind), results printed per document as
//! kubectl does, a non-zero exit when any failed.

use super::manifests::{self, Doc};
use super::{client_error_text, object_ref, AlreadyPrinted, Ctx, Target};
use berth_client::ClientError;
use berth_proto::defaults;
use berth_proto::manifest::Object;

/// The field manager the CLI applies as.
pub const FIELD_MANAGER: &str = "berth-cli";

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Manifest file, directory of .yaml/.yml/.json files, or - for stdin (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Descend into subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// Which write a document gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Create,
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    run(args, Mode::Apply).await
}

pub async fn create(args: ApplyArgs) -> anyhow::Result<()> {
    run(args, Mode::Create).await
}

async fn run(args: ApplyArgs, mode: Mode) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.target)?;
    let docs = manifests::read_documents(&args.files, args.recursive)?;
    let mut failed = 0usize;
    for doc in docs {
        match write_one(&ctx, &doc, mode).await {
            Ok(line) => println!("{line}"),
            Err(text) => {
                eprintln!("{text}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(AlreadyPrinted.into());
    }
    Ok(())
}

/// Writes one document; the line to print, or the error to print.
async fn write_one(ctx: &Ctx, doc: &Doc, mode: Mode) -> Result<String, String> {
    let mut obj = doc.object.clone().map_err(|e| format!("error: {e}"))?;
    ctx.place(&mut obj)
        .map_err(|e| format!("error: {}: {e}", doc.place()))?;
    let what = object_ref(&obj);
    match mode {
        Mode::Create => {
            ctx.client
                .create_object("", obj)
                .await
                .map_err(|e| when(&e, "creating", doc))?;
            Ok(format!("{what} created"))
        }
        Mode::Apply => {
            let verb = apply_object(ctx, obj)
                .await
                .map_err(|e| when(&e, "applying", doc))?;
            Ok(format!("{what} {verb}"))
        }
    }
}

/// Applies; says whether the object was `created`, `configured` or `unchanged` (an apply
/// that changes nothing keeps the resourceVersion).
async fn apply_object(ctx: &Ctx, mut obj: Object) -> Result<&'static str, ClientError> {
    // The server defaults what it stores, but decides whether the spec changed (generation,
    // and so whether anything is written) before defaulting the applied object: sending it
    // defaulted makes re-applying an unchanged manifest write nothing, as kubectl's
    // "unchanged" means.
    defaults::apply(&mut obj);
    let rt = obj.resource_type();
    let before = match ctx
        .client
        .get_object(rt.plural, obj.namespace(), obj.name())
        .await
    {
        Ok(o) => Some(o),
        Err(ClientError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let after = ctx.client.apply_object(obj, FIELD_MANAGER, false).await?;
    Ok(match before {
        None => "created",
        Some(b) if rv(&b) == rv(&after) => "unchanged",
        Some(_) => "configured",
    })
}

fn rv(o: &Object) -> &str {
    o.metadata().map_or("", |m| m.resource_version.as_str())
}

/// `Error from server (AlreadyExists): error when creating "f.yaml document 1 (Pod web)": ...`
fn when(e: &ClientError, verb: &str, doc: &Doc) -> String {
    let text = client_error_text(e);
    match text.split_once("): ") {
        Some((head, msg)) if head.starts_with("Error from server (") => {
            format!("{head}): error when {verb} \"{}\": {msg}", doc.place())
        }
        _ => format!("error: when {verb} \"{}\": {text}", doc.place()),
    }
}
