//! `vwnet-testbed`: bring a topology up in network namespaces, run the distribution benchmark
//! on it, or remove what a crashed run left behind. Needs root.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use vwnet_sim::topology::Topology;
use vwnet_tests::testbed::bench::{self, BenchConfig, Strategy};
use vwnet_tests::testbed::{Options, Testbed, cleanup, find_vwnet};

/// Multi-host vwnet testbed in Linux network namespaces.
#[derive(Debug, Parser)]
#[command(name = "vwnet-testbed", version)]
struct Cli {
    /// Print JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the topology, start a node per host, print where everything is, and hold it
    /// until SIGINT or SIGTERM (then remove it all).
    Up {
        /// Topology file (TOML).
        topology: PathBuf,
        /// Do not start nodes, only the network.
        #[arg(long)]
        no_nodes: bool,
        /// The vwnet binary [default: next to this one].
        #[arg(long, value_name = "PATH")]
        vwnet: Option<PathBuf>,
    },
    /// Publish one image and time its distribution to every other host.
    Bench {
        /// Topology file (TOML).
        topology: PathBuf,
        /// Image size in MiB.
        #[arg(long, value_name = "S")]
        size_mib: u64,
        /// vwnet, http (central server) or rsync.
        #[arg(long, default_value = "vwnet")]
        strategy: Strategy,
        /// Distribute an update changing this percent of v1's bytes, instead of a first copy.
        #[arg(long, value_name = "PCT")]
        update_pct: Option<f64>,
        /// Skip comparing every host's copy with the original afterwards.
        #[arg(long)]
        no_verify: bool,
        /// The vwnet binary [default: next to this one].
        #[arg(long, value_name = "PATH")]
        vwnet: Option<PathBuf>,
        /// Copy every node's log into this directory before the testbed is torn down (the
        /// nodes log at `RUST_LOG` if set, else info).
        #[arg(long, value_name = "DIR")]
        logs: Option<PathBuf>,
    },
    /// Remove namespaces, processes and scratch directories of runs whose process died.
    Cleanup {
        /// Remove every testbed run, even ones still in progress.
        #[arg(long)]
        all: bool,
    },
}

fn load(path: &PathBuf) -> anyhow::Result<Topology> {
    Topology::load(path).with_context(|| format!("{}", path.display()))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("vwnet-testbed: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    cleanup::install_signal_handler()?;
    match cli.command {
        Cmd::Up {
            topology,
            no_nodes,
            vwnet,
        } => {
            let topo = load(&topology)?;
            // Without nodes the binary is never run, so a missing one is no error.
            let vwnet = match (vwnet, no_nodes) {
                (Some(p), _) => p,
                (None, false) => find_vwnet()?,
                (None, true) => find_vwnet().unwrap_or_else(|_| PathBuf::from("vwnet")),
            };
            let mut tb = Testbed::create(&topo, Options::new(vwnet))?;
            if !no_nodes {
                tb.start_nodes(|_| Vec::new())?;
            }
            let hosts: Vec<_> = tb
                .plan()
                .hosts
                .iter()
                .map(|h| serde_json::json!({"host": h.name, "netns": h.ns, "addr": h.addr.to_string()}))
                .collect();
            let info = serde_json::json!({
                "run": tb.run_id(),
                "dir": tb.dir(),
                "hosts": hosts,
            });
            if cli.json {
                println!("{info}");
            } else {
                println!(
                    "testbed {} up ({} hosts), scratch dir {}; SIGINT or SIGTERM removes it",
                    tb.run_id(),
                    hosts.len(),
                    tb.dir().display()
                );
            }
            std::io::stdout().flush()?;
            // The signal handler tears the testbed down and exits the process.
            loop {
                std::thread::park();
            }
        }
        Cmd::Bench {
            topology,
            size_mib,
            strategy,
            update_pct,
            no_verify,
            vwnet,
            logs,
        } => {
            let topo = load(&topology)?;
            if size_mib == 0 {
                bail!("--size-mib must be at least 1");
            }
            if let Some(p) = update_pct
                && !(p > 0.0 && p <= 100.0)
            {
                bail!("--update-pct must be in (0, 100]");
            }
            let config = BenchConfig {
                label: topo.label().to_owned(),
                size_bytes: size_mib << 20,
                strategy,
                update_pct,
                verify: !no_verify,
                logs,
                rust_log: std::env::var("RUST_LOG").ok(),
                vwnet: match (vwnet, strategy) {
                    (Some(p), _) => p,
                    (None, Strategy::Vwnet) => find_vwnet()?,
                    // The baselines never run it.
                    (None, _) => find_vwnet().unwrap_or_else(|_| PathBuf::from("vwnet")),
                },
            };
            let report = bench::run(&topo, &config)?;
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "{} {:?}: {} hosts, all done in {:.1} s, {} bytes received in total",
                    report.topology,
                    report.strategy,
                    report.hosts.len(),
                    report.wall_secs,
                    report.network_bytes
                );
                for (link, bytes) in &report.wan_bytes {
                    println!("  WAN {link}: {bytes} bytes");
                }
            }
            Ok(())
        }
        Cmd::Cleanup { all } => {
            let report = cleanup::cleanup(all)?;
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "removed {} run(s), {} namespace(s), {} directory(ies)",
                    report.runs.len(),
                    report.namespaces,
                    report.dirs.len()
                );
            }
            Ok(())
        }
    }
}
