//! A multi-host testbed in Linux network namespaces, built from a topology file.
//!
//! [`Testbed::create`] turns a [`Topology`] into namespaces, bridges, veth links and `tc`
//! shaping (see [`net`] for the layout and address plan), then [`Testbed::start_nodes`] runs
//! one `vwnet node run` per host inside its namespace, each with its own home, listening on its
//! namespace address and bootstrapped to the publisher. Commands run on hosts with
//! [`Testbed::exec`]/[`Testbed::spawn`]; the node CLI talks to each node over its control
//! socket ([`Testbed::vwnet_json`]). Logs and byte counters are collected per host.
//!
//! Teardown is guaranteed by ownership: dropping the [`Testbed`] (normal return, error, panic)
//! kills every process in its namespaces and deletes them; [`cleanup::install_signal_handler`]
//! does the same on SIGINT/SIGTERM; and [`cleanup::cleanup`] (`vwnet-testbed cleanup`) removes
//! what a SIGKILLed run left, found by its name prefix. Creating a testbed first removes stale
//! runs of dead processes.
//!
//! Needs root and iproute2. Uses only addresses it creates inside its own namespaces.
//!
//! - [`net`]: the plan (names, addresses, routes, shaping) and applying it.
//! - [`cleanup`]: run ids, removal, the signal handler.
//! - [`bench`]: the distribution benchmark behind `vwnet-testbed bench`.

pub mod bench;
pub mod cleanup;
pub mod net;
mod sys;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
pub use sys::{LinkCounters, is_root, netns_list};
use vwnet_sim::topology::{Topology, TopologyError};

use net::{HostPlan, NetPlan, Shape};

/// Why a testbed operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestbedError {
    /// Not running as root.
    #[error(
        "the netns testbed needs root (network namespaces, tc); run as root, or set \
         VWNET_SKIP_NETNS=1 to skip the netns tests"
    )]
    NotRoot,
    /// A system command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: std::io::Error,
    },
    /// The topology file is invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The topology is valid but beyond what the testbed can build.
    #[error("topology not supported by the testbed: {0}")]
    Unsupported(String),
    /// The `vwnet` binary was not found.
    #[error(
        "no vwnet binary found next to this executable; build it (cargo build -p vwnet) or set \
         VWNET_BIN"
    )]
    NoVwnet,
    /// No such host in this testbed.
    #[error("unknown host `{0}`")]
    UnknownHost(String),
    /// A condition did not hold in time.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// File system work failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A node or a command on a host misbehaved.
    #[error("host {host}: {message}")]
    Host {
        /// The host.
        host: String,
        /// What went wrong.
        message: String,
    },
}

/// How a testbed runs its nodes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `vwnet` binary.
    pub vwnet: PathBuf,
    /// `RUST_LOG` of every node.
    pub rust_log: String,
    /// Print the tail of each node's log when the testbed is dropped during a panic.
    pub logs_on_panic: bool,
}

impl Options {
    /// Options running `vwnet` at `path` with info logs.
    pub fn new(vwnet: impl Into<PathBuf>) -> Self {
        Options {
            vwnet: vwnet.into(),
            rust_log: "info,libp2p=warn".into(),
            logs_on_panic: true,
        }
    }
}

/// Polls `cond` every 50 ms until it returns `Some`, or fails naming `what` after `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T, TestbedError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TestbedError::Timeout {
                what: what.to_owned(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node process on one host.
struct NodeProc {
    child: Option<Child>,
    home: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

/// A running testbed; dropping it removes everything it created.
pub struct Testbed {
    plan: NetPlan,
    topology: Topology,
    options: Options,
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<String, NodeProc>,
    helpers: Vec<(String, Child)>,
    torn_down: bool,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("run", &self.plan.run)
            .field("hosts", &self.plan.hosts.len())
            .finish_non_exhaustive()
    }
}

fn next_run_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}{}-{}",
        cleanup::PREFIX,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

impl Testbed {
    /// Builds the network of `topology` (no nodes yet). Stale runs of dead processes are
    /// removed first; whatever was created is removed again if building fails.
    pub fn create(topology: &Topology, options: Options) -> Result<Self, TestbedError> {
        if !is_root() {
            return Err(TestbedError::NotRoot);
        }
        cleanup::cleanup(false)?;
        let delays = topology.sites.iter().any(|s| !s.link.delay.is_zero())
            || topology.wans.iter().any(|w| !w.delay.is_zero());
        if delays && !net::netem_available() {
            eprintln!(
                "vwnet testbed: this kernel has no sch_netem, so link delays are not emulated \
                 (rates and loss are)"
            );
        }
        let run = next_run_id();
        let plan = NetPlan::new(&run, topology)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{run}-"))
            .tempdir()
            .map_err(|source| TestbedError::Io {
                context: "create the run directory".into(),
                source,
            })?;
        cleanup::register(&run, dir.path());
        // From here on, Drop removes whatever part of the plan exists.
        let tb = Testbed {
            plan,
            topology: topology.clone(),
            options,
            dir: Some(dir),
            nodes: BTreeMap::new(),
            helpers: Vec::new(),
            torn_down: false,
        };
        tb.plan.apply()?;
        Ok(tb)
    }

    /// The run id; every namespace name starts with it.
    pub fn run_id(&self) -> &str {
        &self.plan.run
    }

    /// The network plan.
    pub fn plan(&self) -> &NetPlan {
        &self.plan
    }

    /// The topology this testbed was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The scratch directory (node homes and logs).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// The publisher host's name.
    pub fn publisher(&self) -> &str {
        &self.topology.publisher
    }

    /// Names of all hosts, site by site.
    pub fn host_names(&self) -> Vec<String> {
        self.plan.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// The plan of host `name`.
    pub fn host(&self, name: &str) -> Result<&HostPlan, TestbedError> {
        self.plan
            .hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| TestbedError::UnknownHost(name.to_owned()))
    }

    /// The home directory of host `name`'s node.
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// The node log file of host `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
    }

    /// The node log of host `name` so far.
    pub fn log_text(&self, name: &str) -> String {
        fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Starts a node on `host` with `extra` flags and waits until it answers. Unless it is the
    /// publisher, it bootstraps to the publisher's node, which must be running.
    pub fn start_node(&mut self, host: &str, extra: &[String]) -> Result<(), TestbedError> {
        self.start_node_nowait(host, extra)?;
        self.wait_node_ready(host)
    }

    /// Starts the publisher, then every other host (all at once), each with `extra(host)` flags,
    /// and waits until all of them answer.
    pub fn start_nodes(
        &mut self,
        mut extra: impl FnMut(&str) -> Vec<String>,
    ) -> Result<(), TestbedError> {
        let publisher = self.publisher().to_owned();
        self.start_node(&publisher, &extra(&publisher))?;
        let others: Vec<String> = self
            .host_names()
            .into_iter()
            .filter(|h| *h != publisher)
            .collect();
        // Spawn everyone first and wait afterwards: start-up is mostly waiting on disk and keys.
        for host in &others {
            let flags = extra(host);
            self.start_node_nowait(host, &flags)?;
        }
        for host in &others {
            self.wait_node_ready(host)?;
        }
        Ok(())
    }

    fn start_node_nowait(&mut self, host: &str, extra: &[String]) -> Result<(), TestbedError> {
        let plan = self.host(host)?.clone();
        let mut args = vec![
            "node".to_owned(),
            "run".into(),
            "--listen".into(),
            plan.listen_multiaddr(),
            "--no-mdns".into(),
            "--site".into(),
            plan.site.clone(),
        ];
        if host != self.publisher() {
            args.push("--bootstrap".into());
            args.push(self.node_addr(self.publisher())?);
        }
        args.extend(extra.iter().cloned());
        let home = self.home(host);
        fs::create_dir_all(&home).map_err(|source| TestbedError::Io {
            context: format!("create {}", home.display()),
            source,
        })?;
        self.nodes.insert(
            host.to_owned(),
            NodeProc {
                child: None,
                home,
                log: self.log_path(host),
                args,
            },
        );
        self.spawn_node(host)
    }

    /// Starts host `name`'s node again with the flags it had (after [`Testbed::kill_node`]).
    pub fn restart_node(&mut self, host: &str) -> Result<(), TestbedError> {
        self.spawn_node(host)?;
        self.wait_node_ready(host)
    }

    fn spawn_node(&mut self, host: &str) -> Result<(), TestbedError> {
        let ns = self.host(host)?.ns.clone();
        let vwnet = self.options.vwnet.clone();
        let rust_log = self.options.rust_log.clone();
        let node = self
            .nodes
            .get_mut(host)
            .ok_or_else(|| TestbedError::UnknownHost(host.to_owned()))?;
        if node.child.is_some() {
            return Err(TestbedError::Host {
                host: host.to_owned(),
                message: "node already running".into(),
            });
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|source| TestbedError::Io {
                context: format!("open {}", node.log.display()),
                source,
            })?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(&vwnet)
            .arg("--home")
            .arg(&node.home)
            .args(&node.args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // `ip netns exec` execs the node, so this child is the node itself.
        let child = cmd.spawn().map_err(|source| TestbedError::Spawn {
            command: format!("ip netns exec {ns} vwnet node run"),
            source,
        })?;
        node.child = Some(child);
        Ok(())
    }

    fn wait_node_ready(&mut self, host: &str) -> Result<(), TestbedError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.vwnet(host, &["--json", "node", "status"])?;
            if out.status.success() {
                return Ok(());
            }
            let node = self
                .nodes
                .get_mut(host)
                .ok_or_else(|| TestbedError::UnknownHost(host.to_owned()))?;
            let exited = match node.child.as_mut() {
                Some(c) => c.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                node.child = None;
                return Err(TestbedError::Host {
                    host: host.to_owned(),
                    message: format!(
                        "node exited during start-up ({status}):\n{}",
                        tail(&self.log_text(host), 20)
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: format!("the node on {host} to answer"),
                    secs: 60,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills host `name`'s node with SIGKILL (no cleanup at all) and reaps it.
    pub fn kill_node(&mut self, host: &str) -> Result<(), TestbedError> {
        let node = self
            .nodes
            .get_mut(host)
            .ok_or_else(|| TestbedError::UnknownHost(host.to_owned()))?;
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// The pid of host `name`'s node, if it runs.
    pub fn node_pid(&self, host: &str) -> Option<u32> {
        self.nodes.get(host)?.child.as_ref().map(Child::id)
    }

    /// Runs `vwnet --home <host home> ARGS` from this namespace: the CLI reaches the node over
    /// its control socket (a file), so no network is involved.
    pub fn vwnet(&self, host: &str, args: &[&str]) -> Result<Output, TestbedError> {
        self.host(host)?;
        Command::new(&self.options.vwnet)
            .arg("--home")
            .arg(self.home(host))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TestbedError::Spawn {
                command: format!("vwnet {}", args.join(" ")),
                source,
            })
    }

    /// Runs `vwnet --json ARGS` against host `name`'s node and parses its answer.
    pub fn vwnet_json(&self, host: &str, args: &[&str]) -> Result<Value, TestbedError> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.vwnet(host, &all)?;
        if !out.status.success() {
            return Err(TestbedError::Host {
                host: host.to_owned(),
                message: format!(
                    "vwnet {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| TestbedError::Host {
            host: host.to_owned(),
            message: format!("vwnet {}: bad JSON ({e})", args.join(" ")),
        })
    }

    /// A dialable address of host `name`'s node: `/ip4/10.77.x.y/tcp/4001/p2p/<peer id>`.
    pub fn node_addr(&self, host: &str) -> Result<String, TestbedError> {
        let plan = self.host(host)?;
        let status = self.vwnet_json(host, &["node", "status"])?;
        let peer = status["peer_id"]
            .as_str()
            .ok_or_else(|| TestbedError::Host {
                host: host.to_owned(),
                message: format!("node status without a peer id: {status}"),
            })?;
        Ok(format!("{}/p2p/{peer}", plan.listen_multiaddr()))
    }

    /// The number of peers host `name`'s node is connected to.
    pub fn peer_count(&self, host: &str) -> Result<usize, TestbedError> {
        let status = self.vwnet_json(host, &["node", "status"])?;
        Ok(status["peers"].as_array().map_or(0, Vec::len))
    }

    /// The libp2p peer id of host `host`'s node.
    pub fn peer_id(&self, host: &str) -> Result<String, TestbedError> {
        let status = self.vwnet_json(host, &["node", "status"])?;
        status["peer_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| TestbedError::UnknownHost(format!("{host} (no peer id in its status)")))
    }

    /// A command to run inside host `name`'s namespace (`ip netns exec <ns> PROGRAM`).
    pub fn command(&self, host: &str, program: &str) -> Result<Command, TestbedError> {
        let ns = &self.host(host)?.ns;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program])
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs `PROGRAM ARGS` on host `name` and returns its output.
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> Result<Output, TestbedError> {
        self.command(host, program)?
            .args(args)
            .output()
            .map_err(|source| TestbedError::Spawn {
                command: format!("{program} {} on {host}", args.join(" ")),
                source,
            })
    }

    /// Starts `PROGRAM ARGS` on host `name` in the background (stdout and stderr to
    /// `<dir>/<host>-<program>.log`); it is killed at teardown. Returns its pid.
    pub fn spawn(&mut self, host: &str, program: &str, args: &[&str]) -> Result<u32, TestbedError> {
        let base = Path::new(program)
            .file_name()
            .map_or_else(|| "cmd".into(), |n| n.to_string_lossy().into_owned());
        let log_path = self.dir().join(format!("{host}-{base}.log"));
        let open = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|source| TestbedError::Io {
                    context: format!("open {}", log_path.display()),
                    source,
                })
        };
        let child = self
            .command(host, program)?
            .args(args)
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                command: format!("{program} {} on {host}", args.join(" ")),
                source,
            })?;
        let pid = child.id();
        self.helpers.push((host.to_owned(), child));
        Ok(pid)
    }

    /// Byte counters of host `name`'s own interface (rx: downloaded, tx: uploaded).
    pub fn host_counters(&self, host: &str) -> Result<LinkCounters, TestbedError> {
        sys::counters(&self.host(host)?.ns, HostPlan::DEV)
    }

    fn wan(&self, a: &str, b: &str) -> Result<(&net::WanPlan, usize), TestbedError> {
        self.plan
            .wans
            .iter()
            .find_map(|w| {
                if w.sites == [a, b] {
                    Some((w, 0))
                } else if w.sites == [b, a] {
                    Some((w, 1))
                } else {
                    None
                }
            })
            .ok_or_else(|| TestbedError::Unsupported(format!("no WAN link between {a} and {b}")))
    }

    /// Byte counters of the WAN link between sites `a` and `b`, at `a`'s end: tx is `a -> b`,
    /// rx is `b -> a`.
    pub fn wan_counters(&self, a: &str, b: &str) -> Result<LinkCounters, TestbedError> {
        let (w, end) = self.wan(a, b)?;
        sys::counters(&w.ns[end], &w.dev[end])
    }

    /// Cuts the WAN link between `a` and `b` (both directions drop every packet) or restores
    /// its shaping from the topology.
    pub fn set_wan_cut(&self, a: &str, b: &str, cut: bool) -> Result<(), TestbedError> {
        let (w, _) = self.wan(a, b)?;
        let shape = if cut { Shape::CUT } else { w.shape };
        for end in 0..2 {
            shape.apply(&w.ns[end], &w.dev[end])?;
        }
        Ok(())
    }

    /// Replaces the shaping of host `name`'s link: `up` on its egress, `down` towards it.
    pub fn set_host_shape(&self, host: &str, up: Shape, down: Shape) -> Result<(), TestbedError> {
        let plan = self.host(host)?;
        let site = self
            .plan
            .site(&plan.site)
            .ok_or_else(|| TestbedError::UnknownHost(host.to_owned()))?;
        up.apply(&plan.ns, HostPlan::DEV)?;
        down.apply(&site.ns, &plan.site_dev)
    }

    /// Kills every process, deletes every namespace and the scratch directory. Idempotent.
    pub fn teardown(&mut self) -> Result<(), TestbedError> {
        if self.torn_down {
            return Ok(());
        }
        for node in self.nodes.values_mut() {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for (_, child) in &mut self.helpers {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.helpers.clear();
        // Anything else started inside the namespaces (by a test, with `command`) dies here.
        cleanup::remove_run(&self.plan.run)?;
        cleanup::unregister(&self.plan.run);
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            dir.close().map_err(|source| TestbedError::Io {
                context: format!("remove {}", path.display()),
                source,
            })?;
        }
        self.torn_down = true;
        Ok(())
    }

    /// Keeps the scratch directory (homes, logs) after teardown; returns its path.
    pub fn keep_dir(&mut self) -> Option<PathBuf> {
        self.dir.take().map(tempfile::TempDir::keep)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() && self.options.logs_on_panic {
            for name in self.nodes.keys() {
                eprintln!(
                    "---- {name} node log (last 30 lines) ----\n{}",
                    tail(&self.log_text(name), 30)
                );
            }
        }
        if let Err(e) = self.teardown() {
            eprintln!("testbed {}: teardown failed: {e}", self.plan.run);
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Finds the `vwnet` binary: `$VWNET_BIN`, else next to the running executable (cargo puts
/// test binaries in `target/<profile>/deps/` and `vwnet` in `target/<profile>/`).
pub fn find_vwnet() -> Result<PathBuf, TestbedError> {
    if let Some(p) = std::env::var_os("VWNET_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|source| TestbedError::Io {
        context: "locate the running executable".into(),
        source,
    })?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("vwnet");
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent();
    }
    Err(TestbedError::NoVwnet)
}

/// For tests: whether the netns tests can run. Not root: `Ok(false)` when `VWNET_SKIP_NETNS=1`
/// (the caller skips and says so), else [`TestbedError::NotRoot`], so that a CI without root
/// fails loudly instead of passing vacuously.
pub fn netns_available() -> Result<bool, TestbedError> {
    if is_root() {
        return Ok(true);
    }
    if std::env::var("VWNET_SKIP_NETNS").is_ok_and(|v| v == "1") {
        eprintln!("skipping a netns test: not root and VWNET_SKIP_NETNS=1");
        return Ok(false);
    }
    Err(TestbedError::NotRoot)
}
