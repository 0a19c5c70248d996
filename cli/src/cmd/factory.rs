//! `vwnet create`, `extend`, `pin`, `unpin`: the factory and the workspace lifetime.
//!
//! The CLI builds and signs every new description with the user's key (the node never holds
//! it); the node decides whether its policy lets the signer do it.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use vwnet_node::control::{Request, Response};
use vwnet_protocol::description::{State, clone_as};
use vwnet_protocol::ids::{PeerIdentity, WorkspaceId};
use vwnet_protocol::signed::{
    Delegation, DelegationScope, SignedAttributeCertificate, SignedDelegation, SignedDescription,
    VerifiedDescription,
};
use vwnet_protocol::time::{Span, Timestamp};

use crate::cmd::node::call;
use crate::cmd::ws::ingest;
use crate::context::Context;

/// Flags of `vwnet create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The new workspace's description (TOML). With `--from`, only its name, owner, owner_name
    /// and lifeCycle are used; everything else is the source's.
    #[arg(long, value_name = "DESC.toml")]
    desc: PathBuf,
    /// Clone this workspace (id, unique id prefix, or name): new id, same images, no bytes
    /// copied.
    #[arg(long, value_name = "WS", conflicts_with_all = ["image", "memory_state"])]
    from: Option<String>,
    /// The disk image file (without `--from`, unless the description names images the node
    /// already holds).
    #[arg(long, value_name = "DISK")]
    image: Option<PathBuf>,
    /// The saved memory state of a hot workspace.
    #[arg(long, value_name = "STATE", requires = "image")]
    memory_state: Option<PathBuf>,
    /// An attribute certificate to present to the node's policy (repeatable).
    #[arg(long = "attr-cert", value_name = "FILE")]
    attr_certs: Vec<PathBuf>,
}

/// Flags of `vwnet extend`.
#[derive(Debug, Args)]
pub(crate) struct ExtendArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
    /// How much longer it lives: added to its expiry, or to now if it has expired (e.g. `30d`).
    #[arg(long, value_name = "DURATION")]
    by: Span,
    /// The owner's delegation to this home's key (`vwnet delegate`), when a manager extends.
    #[arg(long, value_name = "FILE")]
    delegation: Option<PathBuf>,
    /// An attribute certificate a manager presents to the node's policy (repeatable).
    #[arg(long = "attr-cert", value_name = "FILE")]
    attr_certs: Vec<PathBuf>,
}

/// Flags of `vwnet delegate`.
#[derive(Debug, Args)]
pub(crate) struct DelegateArgs {
    /// The manager's public identity (64 hex digits).
    #[arg(long, value_name = "IDENTITY")]
    to: PeerIdentity,
    /// Limit the delegation to this workspace id [default: every workspace this key owns].
    #[arg(long, value_name = "WS_ID")]
    workspace: Option<WorkspaceId>,
    /// How long the delegation is valid, from now.
    #[arg(long, default_value = "30days", value_name = "DURATION")]
    valid: Span,
    /// Where to write the signed delegation.
    #[arg(short, long, value_name = "OUT")]
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

/// Flags of `vwnet pin` and `vwnet unpin`.
#[derive(Debug, Args)]
pub(crate) struct PinArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
}

/// Fetches the node's signed copy of `workspace` and verifies it here.
fn fetch(ctx: &Context, workspace: &str, now: Timestamp) -> anyhow::Result<VerifiedDescription> {
    let (signed, delegation) = match call(
        ctx,
        Request::Signed {
            workspace: workspace.to_owned(),
        },
        |_| {},
    )? {
        Response::Signed { signed, delegation } => (signed, delegation),
        other => bail!("unexpected answer from the node: {other:?}"),
    };
    let signed = SignedDescription::from_bytes(&signed).context("the node's description")?;
    let delegation = delegation
        .as_deref()
        .map(SignedDelegation::from_bytes)
        .transpose()
        .context("the node's delegation")?;
    // Verified here, not trusted from the node: what we derive from it is signed with our key.
    signed
        .verify(delegation.as_ref(), now)
        .context("the node's description does not verify")
}

/// Reads attribute certificates, checking that each is one, as bytes for the node.
fn read_certs(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| {
            let bytes =
                std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            SignedAttributeCertificate::from_bytes(&bytes)
                .with_context(|| format!("{}: not an attribute certificate", p.display()))?;
            Ok(bytes)
        })
        .collect()
}

/// `vwnet create`.
pub(crate) fn create(args: CreateArgs, ctx: &Context) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let (base, identity) = crate::cmd::ws::read_own_description(
        &args.desc,
        ctx,
        "the creator owns the new workspace",
    )?;
    let certs = read_certs(&args.attr_certs)?;
    let mut desc = match &args.from {
        Some(from) => {
            let source = fetch(ctx, from, now)?;
            let source = source.record();
            let mut clone = clone_as(source, &base.name, now);
            clone.owner = base.owner;
            clone.owner_name = base.owner_name.clone();
            clone.life_cycle = base.life_cycle;
            // A clone is a new workspace at rest: never "running" somewhere already.
            if clone.state == State::Running {
                clone.state = State::Shutdown;
            }
            clone
        }
        None => {
            let mut desc = base;
            if desc.version != 1 || desc.previous.is_some() {
                bail!(
                    "{}: create makes version 1 of a new workspace (this is version {})",
                    args.desc.display(),
                    desc.version
                );
            }
            if let Some(image) = &args.image {
                desc.image.disk = Some(ingest(ctx, image)?);
                desc.image.memory_state = match &args.memory_state {
                    Some(state) => Some(ingest(ctx, state)?),
                    None => None,
                };
            } else if desc.image.disk.is_none() && desc.image.memory_state.is_none() {
                bail!(
                    "{}: names no image: give --image DISK or --from WS",
                    args.desc.display()
                );
            }
            desc
        }
    };
    // As in `publish`: with no authority named, the creating node grants this workspace's
    // locks, said in the signed text so that every node can check who may grant.
    if desc.lock_authorities.is_empty() {
        desc.lock_authorities
            .push(crate::cmd::lock::node_identity(ctx)?);
    }
    desc.validate()
        .with_context(|| args.desc.display().to_string())?;
    let signed = SignedDescription::sign(&identity, &desc).context("signing the description")?;
    match call(
        ctx,
        Request::Create {
            signed: signed.to_bytes(),
            certs,
        },
        |_| {},
    )? {
        Response::Published { workspace, version } => ctx.report(
            &serde_json::json!({
                "workspace": workspace.to_string(),
                "version": version,
                "name": desc.name,
                "cloned_from": desc.cloned_from.map(|l| l.workspace.to_string()),
                "disk": desc.image.disk.map(|i| i.id.to_string()),
                "memory_state": desc.image.memory_state.map(|i| i.id.to_string()),
                "expires_at": desc.expires_at().map(|t| t.to_string()),
            }),
            |_| workspace.to_string(),
        ),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// The lifeCycle that makes a workspace created at `created` end `by` after `max(end, now)`.
fn extended_life(created: Timestamp, end: Timestamp, now: Timestamp, by: Span) -> Span {
    end.max(now).saturating_add(by).saturating_since(created)
}

/// `vwnet extend`.
pub(crate) fn extend(args: ExtendArgs, ctx: &Context) -> anyhow::Result<()> {
    let now = Timestamp::now();
    if args.by.as_secs() == 0 {
        bail!("--by must be a positive duration");
    }
    let held = fetch(ctx, &args.workspace, now)?;
    let held = held.record();
    let identity = ctx.load_identity()?;
    let delegation = match &args.delegation {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let signed = SignedDelegation::from_bytes(&bytes)
                .with_context(|| format!("{}: not a delegation", path.display()))?;
            // Checked here for a clear message; the node checks it again.
            let verified = signed
                .verify(now)
                .with_context(|| format!("{}: invalid delegation", path.display()))?;
            let d: &Delegation = &verified;
            if d.delegator != held.owner || d.delegate != identity.public() {
                bail!(
                    "{}: delegates from {} to {}, but the owner is {} and this home's key is {}",
                    path.display(),
                    d.delegator.short(),
                    d.delegate.short(),
                    held.owner.short(),
                    identity.public().short()
                );
            }
            Some(bytes)
        }
        None if held.owner != identity.public() => bail!(
            "workspace {}: only its owner {} can extend it, or a manager with the owner's \
             delegation (--delegation); this home's key is {}",
            held.id.short(),
            held.owner.short(),
            identity.public().short()
        ),
        None => None,
    };
    let certs = read_certs(&args.attr_certs)?;
    let Some(end) = held.expires_at() else {
        bail!(
            "workspace {}: has no lifeCycle limit; there is nothing to extend",
            held.id.short()
        );
    };
    let mut next = held.next_version(now);
    next.life_cycle = Some(extended_life(held.creation_time, end, now, args.by));
    next.validate()
        .with_context(|| format!("workspace {}", held.id.short()))?;
    let signed = SignedDescription::sign(&identity, &next).context("signing the description")?;
    match call(
        ctx,
        Request::Extend {
            signed: signed.to_bytes(),
            delegation,
            certs,
        },
        |_| {},
    )? {
        Response::Published { workspace, version } => {
            let expires = next.expires_at();
            ctx.report(
                &serde_json::json!({
                    "workspace": workspace.to_string(),
                    "version": version,
                    "expires_at": expires.map(|t| t.to_string()),
                }),
                |_| {
                    format!(
                        "extended {} to version {version}; expires at {}",
                        workspace.short(),
                        expires.map_or_else(|| "never".to_owned(), |t| t.to_string())
                    )
                },
            )
        }
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `vwnet delegate`: the owner lets a manager key sign (renew) their workspaces.
pub(crate) fn delegate(args: DelegateArgs, ctx: &Context) -> anyhow::Result<()> {
    crate::fsutil::check_overwrite(&args.out, args.force)?;
    let identity = ctx.load_identity()?;
    let now = Timestamp::now();
    let delegation = Delegation {
        delegator: identity.public(),
        delegate: args.to,
        scope: args.workspace.map_or(
            DelegationScope::PublishAll,
            DelegationScope::PublishWorkspace,
        ),
        not_before: now,
        not_after: now.saturating_add(args.valid),
    };
    let signed =
        SignedDelegation::sign(&identity, &delegation).context("signing the delegation")?;
    crate::fsutil::write_atomic(&args.out, &signed.to_bytes(), 0o644)?;
    ctx.report(
        &serde_json::json!({
            "delegator": delegation.delegator.to_string(),
            "delegate": delegation.delegate.to_string(),
            "workspace": args.workspace.map(|w| w.to_string()),
            "not_after": delegation.not_after.to_string(),
            "file": args.out.display().to_string(),
        }),
        |_| {
            format!(
                "delegated to {} until {} ({})",
                delegation.delegate.short(),
                delegation.not_after,
                args.out.display()
            )
        },
    )
}

/// `vwnet pin` (`pinned`) and `vwnet unpin`.
pub(crate) fn pin(args: PinArgs, pinned: bool, ctx: &Context) -> anyhow::Result<()> {
    match call(
        ctx,
        Request::Pin {
            workspace: args.workspace,
            pinned,
        },
        |_| {},
    )? {
        Response::Pinned { workspace, pinned } => ctx.report(
            &serde_json::json!({ "workspace": workspace.to_string(), "pinned": pinned }),
            |_| {
                format!(
                    "{} {}",
                    workspace.short(),
                    if pinned { "pinned" } else { "unpinned" }
                )
            },
        ),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_counts_from_the_expiry_or_from_now_if_expired() {
        let t = Timestamp::from_unix_secs;
        // Live: end 200 + 50 → lifeCycle 250 - 100.
        assert_eq!(
            extended_life(t(100), t(200), t(150), Span::from_secs(50)).as_secs(),
            150
        );
        // Expired at 200, now 300: 300 + 50 - 100.
        assert_eq!(
            extended_life(t(100), t(200), t(300), Span::from_secs(50)).as_secs(),
            250
        );
    }
}
