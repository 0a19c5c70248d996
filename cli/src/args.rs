//! Command-line arguments: the top-level flags and one subcommand per area.
//!
//! Each area's subcommands are defined next to their implementation in `cmd/`; this file only
//! lists the areas, so adding a command never touches another area's code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd;

/// vwnet: distribute and deploy signed, content-addressed virtual workspaces.
#[derive(Debug, Parser)]
#[command(name = "vwnet", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The node's data directory [default: ~/.vwnet].
    #[arg(long, global = true, env = "VWNET_HOME", value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The command areas.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage this user's signing key.
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// Write, sign, verify, clone, refine and match workspace descriptions.
    #[command(subcommand)]
    Desc(cmd::desc::DescCommand),
    /// Access-control decisions and attribute certificates.
    #[command(subcommand)]
    Acl(cmd::acl::AclCommand),
    /// Add, export, list, verify and compare images in the local chunk store.
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Maintain the local chunk store (gc, stats).
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Run the node daemon, or ask the running node for its status.
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// Ingest image(s), sign a description and announce it on the network (needs a running node).
    Publish(cmd::ws::PublishArgs),
    /// List workspaces known to the running node.
    Ls(cmd::ws::LsArgs),
    /// Show a workspace's description, signature status and providers.
    Inspect(cmd::ws::InspectArgs),
    /// Fetch a workspace's images from the network, verified chunk by chunk.
    Pull(cmd::ws::PullArgs),
    /// Take, release or show a workspace's deploy lock (a lease with a fencing token).
    #[command(subcommand)]
    Lock(cmd::lock::LockCommand),
    /// Deploy a workspace on the node's hypervisor: policy, host match, lock, pull, define.
    Deploy(cmd::manage::DeployArgs),
    /// Boot a deployed workspace (or resume a saved one); refused without a valid lease.
    Start(cmd::manage::WsArgs),
    /// Power a deployed workspace off.
    Stop(cmd::manage::StopArgs),
    /// Pause a running workspace.
    Pause(cmd::manage::WsArgs),
    /// Unpause a paused workspace; refused without a valid lease.
    Unpause(cmd::manage::WsArgs),
    /// Save a workspace's memory state to a file (a hot image); it stops running.
    Save(cmd::manage::WsArgs),
    /// Undefine a deployed workspace and release its lock, optionally publishing it first.
    Undeploy(cmd::manage::UndeployArgs),
    /// Move a deployed workspace to another node: save, publish, undeploy, deploy there.
    Migrate(cmd::manage::MigrateArgs),
    /// Show a workspace's live state on this node.
    WsState(cmd::manage::WsArgs),
    /// Create a workspace (or clone one with --from) if the node's policy allows; sign, publish.
    Create(cmd::factory::CreateArgs),
    /// Renew a workspace's lifeCycle (owner only): publishes a new version.
    Extend(cmd::factory::ExtendArgs),
    /// Keep a workspace's chunks on this node even after it expires.
    Pin(cmd::factory::PinArgs),
    /// Undo `vwnet pin`: an expired workspace's chunks become collectable again.
    Unpin(cmd::factory::PinArgs),
    /// Let a manager key renew (sign new versions of) workspaces this key owns.
    Delegate(cmd::factory::DelegateArgs),
}
