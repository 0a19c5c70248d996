//! `vwnet deploy`, `start`, `stop`, `pause`, `unpause`, `save`, `undeploy`, `migrate`,
//! `ws-state`: a workspace's life on the running node's hypervisor.
//!
//! The node never holds the user's key: `undeploy --publish` and `migrate` get the next
//! description version from the node as an unsigned draft, sign it here with the user's key
//! and hand the signed bytes back.

use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use vwnet_node::control::{Request, Response};
use vwnet_node::manager::api::{ManageRequest, ManageResponse, UndeployDraft, WorkspaceState};
use vwnet_protocol::description::Description;
use vwnet_protocol::signed::SignedDescription;

use crate::cmd::image::{human_bytes, progress_bar};
use crate::cmd::node::call;
use crate::context::Context;

/// Flags of `vwnet deploy`.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// Workspace id, unique id prefix, or name, optionally with `@VERSION`.
    workspace: String,
    /// The hypervisor URI expected (the node's own, set by `node run --hypervisor`).
    #[arg(long, value_name = "URI")]
    uri: Option<String>,
}

/// The workspace argument of the lifecycle commands.
#[derive(Debug, Args)]
pub(crate) struct WsArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
}

/// Flags of `vwnet stop`.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
    /// Pull the plug at once instead of asking the guest to power off.
    #[arg(long)]
    force: bool,
}

/// Flags of `vwnet undeploy`.
#[derive(Debug, Args)]
pub(crate) struct UndeployArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
    /// Publish the changed disk (and saved memory state) as the next version first.
    #[arg(long)]
    publish: bool,
}

/// Flags of `vwnet migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Workspace id, unique id prefix, or name.
    workspace: String,
    /// The destination node's peer id.
    #[arg(long, value_name = "PEER")]
    to: String,
}

/// Sends a manager request, drawing progress, and returns the manager's answer.
fn manage(ctx: &Context, request: ManageRequest, what: &str) -> anyhow::Result<ManageResponse> {
    let bar = progress_bar(ctx, None, what);
    let response = call(ctx, Request::Manage(request), |r| {
        if let Some(bar) = &bar {
            match r {
                Response::Progress(p) => {
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                    bar.set_message(format!("pulling from {} peer(s)", p.peers));
                }
                Response::Step(s) => bar.set_message(format!("{}: {} ms", s.step, s.millis)),
                _ => {}
            }
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match response? {
        Response::Manage(r) => Ok(r),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

fn state_line(s: &WorkspaceState) -> String {
    let mut line = format!(
        "{} {} v{}: {}",
        s.workspace.short(),
        s.name,
        s.version,
        s.state
    );
    match (&s.domain, &s.domain_state) {
        (Some(domain), Some(ds)) => {
            line.push_str(&format!(" (domain {domain}: {ds}"));
            if s.saved {
                line.push_str(", memory saved");
            }
            line.push(')');
        }
        _ => line.push_str(" (not deployed on this node)"),
    }
    line
}

fn expect_state(r: ManageResponse) -> anyhow::Result<WorkspaceState> {
    match r {
        ManageResponse::State(s) => Ok(s),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `vwnet deploy`.
pub(crate) fn deploy(args: DeployArgs, ctx: &Context) -> anyhow::Result<()> {
    let (workspace, version) = crate::cmd::ws::split_version(&args.workspace)?;
    let request = ManageRequest::Deploy {
        workspace,
        version,
        uri: args.uri,
    };
    match manage(ctx, request, "deploying")? {
        ManageResponse::Deployed(r) => ctx.report(&r, |r| {
            format!(
                "{}\n{} {} MiB, {} vCPU(s), fencing token {}; pulled {} ({} local) in {} ms, materialised {} in {} ms, {} in {} ms; total {} ms",
                state_line(&r.state),
                if r.hot { "restored (hot)" } else { "defined (cold)" },
                r.memory_mib,
                r.vcpus,
                r.fencing_token,
                human_bytes(r.pull.bytes_fetched),
                human_bytes(r.pull.bytes_local),
                r.pull_millis,
                human_bytes(r.materialised_bytes),
                r.materialise_millis,
                if r.hot { "restore" } else { "define" },
                r.define_millis,
                r.total_millis
            )
        }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `vwnet start`, `stop`, `pause`, `unpause`, `ws-state`.
pub(crate) fn lifecycle(request: ManageRequest, ctx: &Context) -> anyhow::Result<()> {
    let state = expect_state(manage(ctx, request, "working")?)?;
    ctx.report(&state, state_line)
}

/// `vwnet start`.
pub(crate) fn start(args: WsArgs, ctx: &Context) -> anyhow::Result<()> {
    lifecycle(
        ManageRequest::Start {
            workspace: args.workspace,
        },
        ctx,
    )
}

/// `vwnet stop`.
pub(crate) fn stop(args: StopArgs, ctx: &Context) -> anyhow::Result<()> {
    lifecycle(
        ManageRequest::Stop {
            workspace: args.workspace,
            force: args.force,
        },
        ctx,
    )
}

/// `vwnet pause`.
pub(crate) fn pause(args: WsArgs, ctx: &Context) -> anyhow::Result<()> {
    lifecycle(
        ManageRequest::Pause {
            workspace: args.workspace,
        },
        ctx,
    )
}

/// `vwnet unpause`.
pub(crate) fn unpause(args: WsArgs, ctx: &Context) -> anyhow::Result<()> {
    lifecycle(
        ManageRequest::Unpause {
            workspace: args.workspace,
        },
        ctx,
    )
}

/// `vwnet ws-state`.
pub(crate) fn ws_state(args: WsArgs, ctx: &Context) -> anyhow::Result<()> {
    lifecycle(
        ManageRequest::State {
            workspace: args.workspace,
        },
        ctx,
    )
}

/// `vwnet save`.
pub(crate) fn save(args: WsArgs, ctx: &Context) -> anyhow::Result<()> {
    match manage(
        ctx,
        ManageRequest::Save {
            workspace: args.workspace,
        },
        "saving",
    )? {
        ManageResponse::Saved(r) => ctx.report(&r, |r| {
            format!(
                "{}\nmemory state {} ({}) in {} ms",
                state_line(&r.state),
                r.path.display(),
                human_bytes(r.bytes),
                r.millis
            )
        }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// What `undeploy --publish` did, step by step.
#[derive(Debug, Serialize)]
struct Undeployed {
    workspace: String,
    published: Option<u64>,
    state: Option<String>,
    new_bytes: Option<u64>,
    ingest_millis: Option<u64>,
    undeploy_millis: u64,
}

/// Gets the draft of the next version, signs it with the user's key, and undeploys with it.
fn publish_and_undeploy(
    ctx: &Context,
    workspace: &str,
    migrate_to: Option<&str>,
) -> anyhow::Result<(Undeployed, Description)> {
    let draft: UndeployDraft = match manage(
        ctx,
        ManageRequest::PrepareUndeploy {
            workspace: workspace.to_owned(),
            migrate_to: migrate_to.map(str::to_owned),
        },
        "ingesting",
    )? {
        ManageResponse::Draft(d) => d,
        other => bail!("unexpected answer from the node: {other:?}"),
    };
    let next = Description::from_canonical_bytes(&draft.description)
        .context("the node's draft of the next version")?;
    let identity = ctx.load_identity()?;
    if next.owner != identity.public() {
        bail!(
            "workspace {}: owner is {}, but this home's key is {} (only the owner can publish)",
            next.id.short(),
            next.owner.short(),
            identity.public().short()
        );
    }
    let signed = SignedDescription::sign(&identity, &next).context("signing the next version")?;
    let done = match manage(
        ctx,
        ManageRequest::Undeploy {
            workspace: workspace.to_owned(),
            signed: Some(signed.to_bytes()),
        },
        "undeploying",
    )? {
        ManageResponse::Undeployed(r) => r,
        other => bail!("unexpected answer from the node: {other:?}"),
    };
    Ok((
        Undeployed {
            workspace: done.workspace.to_string(),
            published: done.published,
            state: Some(next.state.as_str().to_owned()),
            new_bytes: Some(draft.new_bytes),
            ingest_millis: Some(draft.millis),
            undeploy_millis: done.millis,
        },
        next,
    ))
}

fn undeployed_line(u: &Undeployed) -> String {
    match u.published {
        Some(v) => format!(
            "undeployed {}; published v{v} ({}), {} new in {} ms",
            u.workspace,
            u.state.as_deref().unwrap_or("?"),
            human_bytes(u.new_bytes.unwrap_or(0)),
            u.ingest_millis.unwrap_or(0)
        ),
        None => format!("undeployed {}", u.workspace),
    }
}

/// `vwnet undeploy`.
pub(crate) fn undeploy(args: UndeployArgs, ctx: &Context) -> anyhow::Result<()> {
    let report = if args.publish {
        publish_and_undeploy(ctx, &args.workspace, None)?.0
    } else {
        match manage(
            ctx,
            ManageRequest::Undeploy {
                workspace: args.workspace,
                signed: None,
            },
            "undeploying",
        )? {
            ManageResponse::Undeployed(r) => Undeployed {
                workspace: r.workspace.to_string(),
                published: None,
                state: None,
                new_bytes: None,
                ingest_millis: None,
                undeploy_millis: r.millis,
            },
            other => bail!("unexpected answer from the node: {other:?}"),
        }
    };
    ctx.report(&report, undeployed_line)
}

/// What `vwnet migrate` did.
#[derive(Debug, Serialize)]
struct Migrated {
    workspace: String,
    version: u64,
    to: String,
    state: String,
    /// Bytes the destination fetched (what moved over the network for the images).
    bytes_moved: u64,
    /// Bytes the destination already held.
    bytes_local: u64,
    /// Bytes of new chunks the source's ingest produced.
    new_bytes: u64,
    save_millis: Option<u64>,
    publish_millis: u64,
    remote_deploy_millis: u64,
    total_millis: u64,
}

/// `vwnet migrate`: save (if it runs), publish and undeploy here, then the destination deploys
/// and resumes it.
pub(crate) fn migrate(args: MigrateArgs, ctx: &Context) -> anyhow::Result<()> {
    let started = Instant::now();
    let state = expect_state(manage(
        ctx,
        ManageRequest::State {
            workspace: args.workspace.clone(),
        },
        "checking",
    )?)?;
    if !state.deployed {
        bail!(
            "workspace {} is not deployed on this node (deploy it, or deploy it on {} directly)",
            state.workspace.short(),
            args.to
        );
    }
    let workspace = state.workspace.to_string();
    let active =
        matches!(state.domain_state.as_deref(), Some(s) if s != "shutoff" && s != "undefined");
    let save_millis = if active {
        match manage(
            ctx,
            ManageRequest::Save {
                workspace: workspace.clone(),
            },
            "saving",
        )? {
            ManageResponse::Saved(r) => Some(r.millis),
            other => bail!("unexpected answer from the node: {other:?}"),
        }
    } else {
        None
    };
    let t = Instant::now();
    let (undeployed, _) = publish_and_undeploy(ctx, &workspace, Some(&args.to))?;
    let publish_millis = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    let report = match manage(
        ctx,
        ManageRequest::Migrate {
            workspace: workspace.clone(),
            to: args.to.clone(),
        },
        "migrating",
    )? {
        ManageResponse::Migrated(r) => r,
        other => bail!("unexpected answer from the node: {other:?}"),
    };
    let out = Migrated {
        workspace,
        version: report.version,
        to: report.to,
        state: report.state,
        bytes_moved: report.bytes_fetched,
        bytes_local: report.bytes_local,
        new_bytes: undeployed.new_bytes.unwrap_or(0),
        save_millis,
        publish_millis,
        remote_deploy_millis: report.deploy_millis,
        total_millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    ctx.report(&out, |m| {
        format!(
            "migrated {} v{} to {}: {} there; {} moved ({} already there); save {} ms, publish {} ms, remote deploy {} ms, total {} ms",
            &m.workspace[..8.min(m.workspace.len())],
            m.version,
            m.to,
            m.state,
            human_bytes(m.bytes_moved),
            human_bytes(m.bytes_local),
            m.save_millis.unwrap_or(0),
            m.publish_millis,
            m.remote_deploy_millis,
            m.total_millis
        )
    })
}
