//! `vwnet node`: run the node daemon, and ask a running one for its status or to stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use vwnet_node::config::{ConfigFile, Limits, NodeConfig};
use vwnet_node::control::client::ControlClient;
use vwnet_node::control::{Request, Response};

use crate::context::Context;

/// Node subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Run the node in the foreground until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Show the running node's identity, addresses and peers.
    Status,
    /// Ask the running node to shut down cleanly.
    Stop,
    /// Write an image held by the running node's store to a file.
    Export {
        /// The image id (manifest hash, full hex).
        image: String,
        /// Destination file (replaced).
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Flags of `vwnet node run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Listen multiaddr (repeatable) [default: all interfaces, random TCP and QUIC ports].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Peer to join through (repeatable), e.g. /ip4/10.0.0.1/tcp/4001/p2p/12D3...
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Name of this node's site (shown to peers).
    #[arg(long)]
    site: Option<String>,
    /// TOML config file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Turn off mDNS discovery on the local link.
    #[arg(long)]
    no_mdns: bool,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Upload rate limit in bytes per second.
    #[arg(long, value_name = "BYTES")]
    upload_limit: Option<u64>,
    /// Download rate limit in bytes per second.
    #[arg(long, value_name = "BYTES")]
    download_limit: Option<u64>,
    /// Chunk requests served at the same time.
    #[arg(long, value_name = "N")]
    max_uploads: Option<usize>,
    /// Fault injection for tests: serve corrupted chunks (a malicious peer).
    #[arg(long, hide = true)]
    fault_corrupt_uploads: bool,
    /// Hypervisor connection URI held for the node's lifetime [default: test:///default].
    #[arg(long, value_name = "URI")]
    hypervisor: Option<String>,
    /// Access policy (TOML) for create, publish, deploy, manage [default: anyone publishes;
    /// this home's user key, the node key and a workspace's owner create, deploy, manage].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Largest minimum RAM (MiB) of a workspace created or deployed here.
    #[arg(long, value_name = "MIB")]
    max_ram_mib: Option<u64>,
    /// Largest disk footprint (bytes) of a workspace created or deployed here.
    #[arg(long, value_name = "BYTES")]
    max_disk_bytes: Option<u64>,
    /// Most workspaces created (or deployed) here at once.
    #[arg(long, value_name = "N")]
    max_workspaces: Option<u64>,
}

impl RunArgs {
    /// Validates the flags (and the config file) into a node configuration.
    fn into_config(self, home: &Path) -> anyhow::Result<NodeConfig> {
        let mut limits = Limits {
            upload_bytes_per_sec: self.upload_limit,
            download_bytes_per_sec: self.download_limit,
            ..Limits::default()
        };
        if let Some(n) = self.max_uploads {
            limits.max_concurrent_uploads = n;
        }
        let mut builder = NodeConfig::builder(home)
            .site(self.site)
            .mdns(!self.no_mdns)
            .metrics(self.metrics)
            .limits(limits)
            .fault_corrupt_uploads(self.fault_corrupt_uploads)
            .hypervisor(self.hypervisor)
            .policy_file(self.policy)
            .resource_limits(vwnet_node::policy::ResourceLimits {
                max_ram_mib: self.max_ram_mib,
                max_disk_bytes: self.max_disk_bytes,
                max_workspaces: self.max_workspaces,
            });
        for addr in self.listen {
            builder = builder.listen(addr);
        }
        for addr in self.bootstrap {
            builder = builder.bootstrap(addr);
        }
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            builder = builder.apply_file(ConfigFile::parse(path, &text)?);
        }
        Ok(builder.build()?)
    }
}

/// Sends one request to the running node; progress records go to `progress`.
pub(crate) fn call(
    ctx: &Context,
    request: Request,
    progress: impl FnMut(&Response),
) -> anyhow::Result<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let socket = ctx.home.join(vwnet_node::config::CONTROL_SOCKET);
    runtime.block_on(async {
        let mut client = ControlClient::connect(&socket).await?;
        match client.call(&request, progress).await? {
            Response::Error(e) => bail!("{e}"),
            other => Ok(other),
        }
    })
}

fn unexpected(r: &Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the node: {r:?}")
}

/// Installs the log subscriber: `RUST_LOG` wins, else `info`; logs go to stderr.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a node subcommand.
pub(crate) fn run(cmd: NodeCommand, ctx: &Context) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Run(args) => {
            let config = (*args).into_config(&ctx.home)?;
            init_logs();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(vwnet_node::daemon::run(config))?;
            Ok(())
        }
        NodeCommand::Status => {
            let r = call(ctx, Request::Status, |_| {})?;
            let Response::Status(status) = r else {
                return Err(unexpected(&r));
            };
            ctx.report(&status, |s| {
                let mut out = format!(
                    "peer id:    {}\nidentity:   {}\nworkspaces: {}\npulls:      {}\nlisten:\n",
                    s.peer_id, s.identity, s.workspaces, s.pulls_in_progress
                );
                for a in &s.listen {
                    out.push_str(&format!("  {a}/p2p/{}\n", s.peer_id));
                }
                out.push_str(&format!("peers ({}):\n", s.peers.len()));
                for p in &s.peers {
                    out.push_str(&format!("  {} {}\n", p.peer_id, p.addr));
                }
                out
            })
        }
        NodeCommand::Stop => {
            call(ctx, Request::Shutdown, |_| {})?;
            ctx.report(&serde_json::json!({ "ok": true }), |_| {
                "node stopping".into()
            })
        }
        NodeCommand::Export { image, out } => {
            let image = image
                .parse()
                .with_context(|| format!("{image}: not an image id"))?;
            let path = std::path::absolute(&out)
                .with_context(|| format!("{}: bad path", out.display()))?;
            call(
                ctx,
                Request::Export {
                    image,
                    path: path.clone(),
                },
                |_| {},
            )?;
            ctx.report(&serde_json::json!({ "ok": true, "path": path }), |_| {
                format!("exported to {}", path.display())
            })
        }
    }
}
