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
}
