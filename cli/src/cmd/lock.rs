//! `vwnet lock acquire|release|show WS`: a workspace's deploy lock, through the running node.
//!
//! Deploying takes the lock itself; these commands expose the lock alone, for operators
//! (who holds it, until when) and for tests of the lock protocol.

use anyhow::bail;
use clap::Subcommand;
use vwnet_node::control::{LockInfo, Request, Response};

use crate::cmd::node::call;
use crate::context::Context;

/// Lock subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Take the workspace's deploy lock; the node keeps renewing it until `release`.
    Acquire {
        /// Workspace id, unique id prefix, or name.
        workspace: String,
    },
    /// Give the lock back (the node stops renewing and tells the authorities).
    Release {
        /// Workspace id, unique id prefix, or name.
        workspace: String,
    },
    /// Show who holds the lock, with which token, until when.
    Show {
        /// Workspace id, unique id prefix, or name.
        workspace: String,
    },
}

/// One readable line about a lock.
pub(crate) fn describe(l: &LockInfo) -> String {
    let mut out = format!(
        "lock {}: {} by {} (token {}, v{}) until {}, signed by authority {}",
        l.workspace.short(),
        l.state,
        &l.holder[..8.min(l.holder.len())],
        l.token,
        l.description_version,
        l.expires_at,
        &l.authority[..8.min(l.authority.len())],
    );
    if let Some(here) = &l.this_node {
        out.push_str(&format!("; this node's lease: {here}"));
    }
    out
}

/// Runs a lock subcommand.
pub(crate) fn run(cmd: LockCommand, ctx: &Context) -> anyhow::Result<()> {
    let request = match cmd {
        LockCommand::Acquire { workspace } => Request::LockAcquire { workspace },
        LockCommand::Release { workspace } => Request::LockRelease { workspace },
        LockCommand::Show { workspace } => Request::LockShow { workspace },
    };
    match call(ctx, request, |_| {})? {
        Response::Lock(info) => ctx.report(&info, |i| match i {
            Some(l) => describe(l),
            None => "no lock record known".to_owned(),
        }),
        Response::Done => ctx.report(&serde_json::json!({ "released": true }), |_| {
            "released".to_owned()
        }),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// The running node's identity: the lock authority filled into descriptions that name none.
pub(crate) fn node_identity(ctx: &Context) -> anyhow::Result<vwnet_protocol::ids::PeerIdentity> {
    match call(ctx, Request::Status, |_| {})? {
        Response::Status(status) => status
            .identity
            .parse()
            .map_err(|e| anyhow::anyhow!("the node's identity {:?}: {e}", status.identity)),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}
