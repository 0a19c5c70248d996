//! `vwnet publish`, `ls`, `inspect`, `pull`: workspaces on the network, through the running node.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use vwnet_node::control::{Request, Response, WorkspaceSummary};
use vwnet_protocol::description::{Description, ImageRef};
use vwnet_protocol::signed::SignedDescription;

use crate::cmd::image::{human_bytes, progress_bar};
use crate::cmd::node::call;
use crate::context::Context;

/// Flags of `vwnet publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The description (TOML); its image references are filled in from the ingested files.
    #[arg(long, value_name = "DESC.toml")]
    desc: PathBuf,
    /// The disk image file.
    #[arg(long, value_name = "DISK")]
    image: PathBuf,
    /// The saved memory state of a hot workspace.
    #[arg(long, value_name = "STATE")]
    memory_state: Option<PathBuf>,
}

/// Flags of `vwnet ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Include workspaces learned from peers that this node holds nothing of.
    #[arg(long)]
    remote: bool,
}

/// Flags of `vwnet inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
}

/// Flags of `vwnet pull`.
#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// Workspace id, unique id prefix, or name, optionally with `@VERSION`.
    workspace: String,
}

/// Asks the running node to ingest `file` into its store.
pub(crate) fn ingest(ctx: &Context, file: &Path) -> anyhow::Result<ImageRef> {
    let path =
        std::path::absolute(file).with_context(|| format!("{}: bad path", file.display()))?;
    if !path.is_file() {
        bail!("{}: not a file", path.display());
    }
    match call(ctx, Request::Ingest { path }, |_| {})? {
        Response::Ingested { image, size } => Ok(ImageRef { id: image, size }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `vwnet publish`.
pub(crate) fn publish(args: PublishArgs, ctx: &Context) -> anyhow::Result<()> {
    let (mut desc, identity) = read_own_description(&args.desc, ctx, "only the owner can publish")?;
    // Naming no lock authority means "the publishing node": write that node in, so that the
    // signed description tells every node who may grant its locks.
    if desc.lock_authorities.is_empty() {
        desc.lock_authorities
            .push(crate::cmd::lock::node_identity(ctx)?);
    }
    desc.image.disk = Some(ingest(ctx, &args.image)?);
    desc.image.memory_state = match &args.memory_state {
        Some(state) => Some(ingest(ctx, state)?),
        None => None,
    };
    desc.validate()
        .with_context(|| args.desc.display().to_string())?;
    let signed = SignedDescription::sign(&identity, &desc).context("signing the description")?;
    match call(
        ctx,
        Request::Publish {
            signed: signed.to_bytes(),
        },
        |_| {},
    )? {
        Response::Published { workspace, version } => ctx.report(
            &serde_json::json!({
                "workspace": workspace.to_string(),
                "version": version,
                "disk": desc.image.disk.map(|i| i.id.to_string()),
                "memory_state": desc.image.memory_state.map(|i| i.id.to_string()),
            }),
            |_| workspace.to_string(),
        ),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `  EXPIRED at T`, `  expires T`, plus `  pinned`: what `ls` and `inspect` say of a lifetime.
fn lifetime_note(s: &WorkspaceSummary) -> String {
    let mut note = match s.expires_at {
        Some(at) if s.expired => format!("  EXPIRED at {at}"),
        Some(at) => format!("  expires {at}"),
        None => String::new(),
    };
    if s.pinned {
        note.push_str("  pinned");
    }
    note
}

fn summary_line(s: &WorkspaceSummary) -> String {
    let held = if s.size == 0 {
        100.0
    } else {
        s.local_bytes as f64 * 100.0 / s.size as f64
    };
    format!(
        "{}  {:<20} v{:<4} {:>10}  {:>5.1}% local  owner {}{}{}{}",
        s.workspace.short(),
        s.name,
        s.version,
        human_bytes(s.size),
        held,
        &s.owner[..8.min(s.owner.len())],
        if s.published_here {
            "  (published here)"
        } else {
            ""
        },
        s.live_state
            .as_ref()
            .map(|state| format!("  [{state} here]"))
            .unwrap_or_default(),
        lifetime_note(s)
    )
}

/// `vwnet ls`.
pub(crate) fn ls(args: LsArgs, ctx: &Context) -> anyhow::Result<()> {
    match call(
        ctx,
        Request::List {
            remote: args.remote,
        },
        |_| {},
    )? {
        Response::List(list) => ctx.report(&list, |l| {
            l.iter().map(summary_line).collect::<Vec<_>>().join("\n")
        }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `vwnet inspect`.
pub(crate) fn inspect(args: InspectArgs, ctx: &Context) -> anyhow::Result<()> {
    match call(
        ctx,
        Request::Inspect {
            workspace: args.workspace,
        },
        |_| {},
    )? {
        Response::Inspect(detail) => ctx.report(&detail, |d| {
            let mut out = format!(
                "{}\nsignature: {} by {}\n",
                summary_line(&d.summary),
                d.signature,
                d.signer
            );
            match &d.lock {
                Some(l) => out.push_str(&format!("{}\n", crate::cmd::lock::describe(l))),
                None => out.push_str("lock: no lock record known\n"),
            }
            for image in &d.images {
                out.push_str(&format!(
                    "image {} ({}): {} provider(s)\n",
                    image.image,
                    human_bytes(image.size),
                    image.providers.len()
                ));
                for p in &image.providers {
                    out.push_str(&format!("  {p}\n"));
                }
            }
            out.push('\n');
            out.push_str(&d.description_toml);
            out
        }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `vwnet pull`.
pub(crate) fn pull(args: PullArgs, ctx: &Context) -> anyhow::Result<()> {
    let (workspace, version) = split_version(&args.workspace)?;
    let bar = progress_bar(ctx, None, "pulling");
    let response = call(ctx, Request::Pull { workspace, version }, |r| {
        if let (Some(bar), Response::Progress(p)) = (&bar, r) {
            bar.set_length(p.total);
            bar.set_position(p.done);
            bar.set_message(format!("pulling from {} peer(s)", p.peers));
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match response? {
        Response::Pulled(summary) => ctx.report(&summary, |s| {
            let duplicate = match s.overhead.bytes_duplicate {
                0 => String::new(),
                n => format!(" ({} received twice)", human_bytes(n)),
            };
            format!(
                "pulled {} v{}: {} fetched{duplicate}, {} already local, {:.1} s, {} peer(s)",
                s.workspace.short(),
                s.version,
                human_bytes(s.bytes_fetched),
                human_bytes(s.bytes_local),
                s.millis as f64 / 1000.0,
                s.per_peer.len()
            )
        }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// Reads the description at `path` and this home's key, refusing a description that another
/// key owns (`why` ends the message: what only the owner may do).
pub(crate) fn read_own_description(
    path: &Path,
    ctx: &Context,
    why: &str,
) -> anyhow::Result<(Description, vwnet_protocol::identity::Identity)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let desc = Description::from_toml_str(&text).with_context(|| path.display().to_string())?;
    let identity = ctx.load_identity()?;
    if desc.owner != identity.public() {
        bail!(
            "{}: owner is {}, but this home's key is {} ({why})",
            path.display(),
            desc.owner.short(),
            identity.public().short()
        );
    }
    Ok((desc, identity))
}

/// Splits `WS[@VERSION]` into the workspace and the version, if one is given.
pub(crate) fn split_version(arg: &str) -> anyhow::Result<(String, Option<u64>)> {
    match arg.split_once('@') {
        Some((ws, v)) => {
            let version = v
                .parse::<u64>()
                .with_context(|| format!("{v}: not a version number"))?;
            Ok((ws.to_owned(), Some(version)))
        }
        None => Ok((arg.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_and_version_split_at_the_at_sign() {
        assert_eq!(split_version("ab12").unwrap(), ("ab12".to_owned(), None));
        assert_eq!(
            split_version("ab12@3").unwrap(),
            ("ab12".to_owned(), Some(3))
        );
        let err = split_version("ab12@three").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "three: not a version number: invalid digit found in string"
        );
    }
}
