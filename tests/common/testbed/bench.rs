//! The distribution benchmark behind `vwnet-testbed bench`: one image published on the
//! publisher host, fetched concurrently by every other host, by vwnet or by a baseline
//! (a central HTTP server, or rsync from the publisher), timed from the moment all transfers
//! are started until each host holds a verified copy.
//!
//! Bytes are read from the kernel's interface counters (so they include every header and
//! every protocol's own overhead, for vwnet and the baselines alike): per host on its own
//! `eth0`, per WAN link on the WAN veth. `network_bytes` is the sum of what every host
//! received, which counts each byte on the wire once.
//!
//! With `update_pct`, every host first gets v1 (untimed: vwnet pulls it; the baselines copy it
//! into place), then the publisher makes v2 with that share of bytes rewritten in 256 KiB runs
//! at random places, and the timed part moves v2 only.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde::Serialize;
use vwnet_node::control::PullSummary;
use vwnet_sim::topology::Topology;

use super::{LinkCounters, Options, Testbed, TestbedError, wait_for};
use crate::images::TestImages;

/// How the image gets to the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// `vwnet pull` on every host: the swarm.
    Vwnet,
    /// `curl` of the whole file from `python3 -m http.server` on the publisher.
    Http,
    /// `rsync` from an rsync daemon on the publisher (delta transfer against the old copy).
    Rsync,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vwnet" => Ok(Strategy::Vwnet),
            "http" => Ok(Strategy::Http),
            "rsync" => Ok(Strategy::Rsync),
            other => Err(format!("unknown strategy `{other}` (vwnet, http, rsync)")),
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The label printed as `topology`.
    pub label: String,
    /// Image size in bytes.
    pub size_bytes: u64,
    /// What moves the image.
    pub strategy: Strategy,
    /// Percent of bytes changed between v1 and v2; `None` for a first distribution.
    pub update_pct: Option<f64>,
    /// Check every host's copy against the original after timing (not timed).
    pub verify: bool,
    /// Where to copy every node's log before teardown, if anywhere.
    pub logs: Option<PathBuf>,
    /// The nodes' `RUST_LOG`, if not the testbed's default.
    pub rust_log: Option<String>,
    /// The `vwnet` binary.
    pub vwnet: PathBuf,
}

/// One host's result.
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    /// Host name.
    pub host: String,
    /// Seconds from the start until this host held its copy.
    pub completed_secs: f64,
    /// Bytes its interface received during the timed part.
    pub bytes_in: u64,
    /// Bytes its interface sent during the timed part.
    pub bytes_out: u64,
    /// What `vwnet --json pull` reported: fetched, per peer and wasted (vwnet runs only).
    pub pull: Option<PullSummary>,
    /// Bytes it fetched and stored from the hosts of each site, by site name (vwnet runs
    /// only): a chunk that came from another site crossed a WAN link for this host.
    pub fetched_from_site: BTreeMap<String, u64>,
}

/// The whole run, as printed by `vwnet-testbed bench --json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The topology label.
    pub topology: String,
    /// Image size.
    pub size_bytes: u64,
    /// What moved the image.
    pub strategy: Strategy,
    /// The update size, for an update run.
    pub update_pct: Option<f64>,
    /// Every host except the publisher.
    pub hosts: Vec<HostResult>,
    /// Bytes over each WAN link (both directions) during the timed part, by `a-b`.
    pub wan_bytes: BTreeMap<String, u64>,
    /// The same per direction: `a-b>` from the first site named to the second, `a-b<` back.
    pub wan_bytes_directed: BTreeMap<String, u64>,
    /// Bytes received by all hosts (the publisher included) during the timed part.
    pub network_bytes: u64,
    /// Seconds until the last host completed.
    pub wall_secs: f64,
    /// Seconds the publisher took to publish the (new) image, before the timed part (vwnet).
    pub publish_secs: Option<f64>,
    /// Whether every copy was compared with the original afterwards.
    pub verified: bool,
    /// Whether link delays were applied (they need the kernel's `sch_netem`).
    pub delay_emulated: bool,
}

const RUN_BYTES: u64 = 256 << 10;
const HTTP_PORT: u16 = 8000;
const RSYNC_PORT: u16 = 873;

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> TestbedError {
    move |source| TestbedError::Io { context, source }
}

fn host_err(host: &str, message: String) -> TestbedError {
    TestbedError::Host {
        host: host.to_owned(),
        message,
    }
}

fn check(host: &str, what: &str, out: Output) -> Result<Output, TestbedError> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(host_err(
            host,
            format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// BLAKE3 of a file.
pub fn file_hash(path: &Path) -> Result<blake3::Hash, TestbedError> {
    let mut file = File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_err(format!("read {}", path.display())))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Counters of every host and WAN end, to diff around the timed part.
struct Snapshot {
    hosts: BTreeMap<String, LinkCounters>,
    wans: BTreeMap<String, (LinkCounters, LinkCounters)>,
}

fn snapshot(tb: &Testbed) -> Result<Snapshot, TestbedError> {
    let mut hosts = BTreeMap::new();
    for h in tb.host_names() {
        hosts.insert(h.clone(), tb.host_counters(&h)?);
    }
    let mut wans = BTreeMap::new();
    for w in &tb.plan().wans {
        let a = tb.wan_counters(&w.sites[0], &w.sites[1])?;
        let b = tb.wan_counters(&w.sites[1], &w.sites[0])?;
        wans.insert(w.label(), (a, b));
    }
    Ok(Snapshot { hosts, wans })
}

/// Runs one benchmark on a fresh testbed of `topology`.
pub fn run(topology: &Topology, config: &BenchConfig) -> Result<BenchReport, TestbedError> {
    let mut options = Options::new(&config.vwnet);
    options.logs_on_panic = false;
    if let Some(filter) = &config.rust_log {
        options.rust_log.clone_from(filter);
    }
    let mut tb = Testbed::create(topology, options)?;
    let images_dir = tb.dir().join("images");
    fs::create_dir_all(&images_dir).map_err(io_err("create the image directory".into()))?;
    let images = TestImages::in_dir(&images_dir).map_err(io_err("image directory".into()))?;
    let v1 = images
        .random("v1.raw", config.size_bytes, 1)
        .map_err(io_err("write v1".into()))?;
    let v2 = match config.update_pct {
        Some(pct) => Some(
            images
                .modified_in_place(&v1, "v2.raw", pct / 100.0, RUN_BYTES, 2)
                .map_err(io_err("write v2".into()))?,
        ),
        None => None,
    };
    let target = v2.clone().unwrap_or_else(|| v1.clone());
    let pullers: Vec<String> = tb
        .host_names()
        .into_iter()
        .filter(|h| h != tb.publisher())
        .collect();

    let mut publish_secs = None;
    let mut target_disk = String::new();
    let (started, finished) = match config.strategy {
        Strategy::Vwnet => {
            let (ws, disk, secs) = vwnet_prepare(&mut tb, &pullers, &v1, v2.as_deref())?;
            publish_secs = secs;
            target_disk = disk;
            let arg = if v2.is_some() { format!("{ws}@2") } else { ws };
            let before = snapshot(&tb)?;
            let start = Instant::now();
            let done = run_all(
                &pullers,
                |h| tb.vwnet(h, &["--json", "pull", &arg]),
                "vwnet pull",
            )?;
            (before, (start, done))
        }
        Strategy::Http => {
            let url = http_prepare(&mut tb, &pullers, &target)?;
            let before = snapshot(&tb)?;
            let start = Instant::now();
            let done = run_all(
                &pullers,
                |h| {
                    let dest = tb.home(h).join("img.raw");
                    let dest = dest.to_string_lossy();
                    tb.exec(h, "curl", &["-sS", "--fail", "-o", &dest, &url])
                },
                "curl",
            )?;
            (before, (start, done))
        }
        Strategy::Rsync => {
            let url = rsync_prepare(&mut tb, &pullers, &v1, v2.is_some(), &target)?;
            let before = snapshot(&tb)?;
            let start = Instant::now();
            let done = run_all(
                &pullers,
                |h| {
                    let dest = tb.home(h).join("img.raw");
                    let dest = dest.to_string_lossy();
                    tb.exec(h, "rsync", &["-I", "--stats", &url, &dest])
                },
                "rsync",
            )?;
            (before, (start, done))
        }
    };
    let (start, done) = finished;
    let is_vwnet = config.strategy == Strategy::Vwnet;
    let site_of_peer = if is_vwnet {
        sites_by_peer_id(&tb)?
    } else {
        BTreeMap::new()
    };
    let after = snapshot(&tb)?;

    if config.verify {
        verify_copies(&tb, config.strategy, &pullers, &target, &target_disk)?;
    }

    let mut hosts = Vec::new();
    for (host, (at, out)) in pullers.iter().zip(&done) {
        let c = after.hosts[host].since(started.hosts[host]);
        let pull: Option<PullSummary> = if is_vwnet {
            Some(
                serde_json::from_slice(&out.stdout)
                    .map_err(|e| host_err(host, format!("vwnet pull printed no summary: {e}")))?,
            )
        } else {
            None
        };
        let mut fetched_from_site = BTreeMap::new();
        for (peer, bytes) in pull.iter().flat_map(|p| &p.per_peer) {
            let site = site_of_peer.get(peer).map_or("unknown", String::as_str);
            *fetched_from_site.entry(site.to_owned()).or_default() += bytes;
        }
        hosts.push(HostResult {
            host: host.clone(),
            completed_secs: at.duration_since(start).as_secs_f64(),
            bytes_in: c.rx_bytes,
            bytes_out: c.tx_bytes,
            pull,
            fetched_from_site,
        });
    }
    let network_bytes = after
        .hosts
        .iter()
        .map(|(h, c)| c.since(started.hosts[h]).rx_bytes)
        .sum();
    let wan_bytes = after
        .wans
        .iter()
        .map(|(label, (a, b))| {
            let (a0, b0) = started.wans[label];
            (label.clone(), a.since(a0).tx_bytes + b.since(b0).tx_bytes)
        })
        .collect();
    let wan_bytes_directed = after
        .wans
        .iter()
        .flat_map(|(label, (a, b))| {
            let (a0, b0) = started.wans[label];
            [
                (format!("{label}>"), a.since(a0).tx_bytes),
                (format!("{label}<"), b.since(b0).tx_bytes),
            ]
        })
        .collect();
    let wall_secs = hosts.iter().map(|h| h.completed_secs).fold(0.0, f64::max);
    if let Some(dir) = &config.logs {
        copy_logs(&tb, dir)?;
    }
    tb.teardown()?;
    Ok(BenchReport {
        topology: config.label.clone(),
        size_bytes: config.size_bytes,
        strategy: config.strategy,
        update_pct: config.update_pct,
        hosts,
        wan_bytes,
        wan_bytes_directed,
        network_bytes,
        wall_secs,
        publish_secs,
        verified: config.verify,
        delay_emulated: super::net::netem_available(),
    })
}

/// Runs `job(host)` for every host at once; returns when each finished, in host order.
fn run_all(
    hosts: &[String],
    job: impl Fn(&str) -> Result<Output, TestbedError> + Sync,
    what: &str,
) -> Result<Vec<(Instant, Output)>, TestbedError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|h| {
                let job = &job;
                s.spawn(move || {
                    let out = job(h)?;
                    let at = Instant::now();
                    Ok::<_, TestbedError>((at, check(h, what, out)?))
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(hosts)
            .map(|(handle, h)| {
                handle
                    .join()
                    .map_err(|_| host_err(h, format!("{what} thread panicked")))?
            })
            .collect()
    })
}

/// Copies every host's node log to `dir/<host>.log`.
fn copy_logs(tb: &Testbed, dir: &Path) -> Result<(), TestbedError> {
    fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    for host in tb.host_names() {
        let to = dir.join(format!("{host}.log"));
        fs::copy(tb.log_path(&host), &to).map_err(io_err(format!("copy the log of {host}")))?;
    }
    Ok(())
}

/// The site of every host's node, by peer id.
fn sites_by_peer_id(tb: &Testbed) -> Result<BTreeMap<String, String>, TestbedError> {
    tb.host_names()
        .into_iter()
        .map(|h| Ok((tb.peer_id(&h)?, tb.host(&h)?.site.clone())))
        .collect()
}

/// Makes a key and a v1 description on the publisher; returns the description path.
pub fn make_description(tb: &Testbed, host: &str, name: &str) -> Result<PathBuf, TestbedError> {
    check(host, "vwnet key new", tb.vwnet(host, &["key", "new"])?)?;
    let desc = tb.home(host).join(format!("{name}.toml"));
    let path = desc.to_string_lossy().into_owned();
    check(
        host,
        "vwnet desc new",
        tb.vwnet(host, &["desc", "new", "-o", &path])?,
    )?;
    let text = fs::read_to_string(&desc).map_err(io_err(format!("read {path}")))?;
    fs::write(
        &desc,
        text.replace("\"my-workspace\"", &format!("\"{name}\"")),
    )
    .map_err(io_err(format!("write {path}")))?;
    Ok(desc)
}

/// Publishes `image` with `desc` on `host`; returns (workspace id, disk image id).
pub fn publish(
    tb: &Testbed,
    host: &str,
    desc: &Path,
    image: &Path,
) -> Result<(String, String), TestbedError> {
    let v = tb.vwnet_json(
        host,
        &[
            "publish",
            "--desc",
            &desc.to_string_lossy(),
            "--image",
            &image.to_string_lossy(),
        ],
    )?;
    match (v["workspace"].as_str(), v["disk"].as_str()) {
        (Some(ws), Some(disk)) => Ok((ws.to_owned(), disk.to_owned())),
        _ => Err(host_err(host, format!("publish answered {v}"))),
    }
}

/// Whether `host` lists workspace `ws` at `version` (or any version with `None`).
pub fn knows(tb: &Testbed, host: &str, ws: &str, version: Option<u64>) -> bool {
    tb.vwnet_json(host, &["ls", "--remote"])
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|w| w["workspace"] == ws)
                .map(|w| version.is_none_or(|want| w["version"] == want))
        })
        .unwrap_or(false)
}

/// Waits until every host lists `ws` (at `version`) and is connected to at least one peer.
pub fn wait_known(
    tb: &Testbed,
    hosts: &[String],
    ws: &str,
    version: Option<u64>,
) -> Result<(), TestbedError> {
    for h in hosts {
        wait_for(
            Duration::from_secs(120),
            &format!("{h} to learn workspace {ws}"),
            || (knows(tb, h, ws, version) && tb.peer_count(h).ok()? > 0).then_some(()),
        )?;
    }
    Ok(())
}

fn vwnet_prepare(
    tb: &mut Testbed,
    pullers: &[String],
    v1: &Path,
    v2: Option<&Path>,
) -> Result<(String, String, Option<f64>), TestbedError> {
    tb.start_nodes(|_| Vec::new())?;
    let publisher = tb.publisher().to_owned();
    let desc = make_description(tb, &publisher, "bench")?;
    let t = Instant::now();
    let (ws, mut disk) = publish(tb, &publisher, &desc, v1)?;
    let mut publish_secs = Some(t.elapsed().as_secs_f64());
    wait_known(tb, pullers, &ws, None)?;
    // Let the overlay fill in (Kademlia walks after bootstrap) so that the pull starts with
    // the peers a long-running swarm would have; bounded, and not part of the timing.
    let want = pullers.len().min(8);
    let _ = wait_for(Duration::from_secs(30), "peers to connect", || {
        pullers
            .iter()
            .all(|h| tb.peer_count(h).is_ok_and(|n| n >= want))
            .then_some(())
    });
    if let Some(v2) = v2 {
        run_all(
            pullers,
            |h| tb.vwnet(h, &["--json", "pull", &ws]),
            "vwnet pull v1",
        )?;
        let desc2 = tb.home(&publisher).join("bench-v2.toml");
        let out = tb.vwnet(
            &publisher,
            &[
                "desc",
                "refine",
                &desc.to_string_lossy(),
                "--set",
                "hardware.ram.max=1024",
                "-o",
                &desc2.to_string_lossy(),
            ],
        )?;
        check(&publisher, "vwnet desc refine", out)?;
        let t = Instant::now();
        disk = publish(tb, &publisher, &desc2, v2)?.1;
        publish_secs = Some(t.elapsed().as_secs_f64());
        wait_known(tb, pullers, &ws, Some(2))?;
    }
    Ok((ws, disk, publish_secs))
}

fn http_prepare(
    tb: &mut Testbed,
    pullers: &[String],
    target: &Path,
) -> Result<String, TestbedError> {
    for h in pullers {
        let home = tb.home(h);
        fs::create_dir_all(&home).map_err(io_err(format!("create {}", home.display())))?;
    }
    let publisher = tb.publisher().to_owned();
    let serve = tb.dir().join("serve");
    fs::create_dir_all(&serve).map_err(io_err("create the served directory".into()))?;
    // A hard link: the server reads the very file, with no copy in the page cache twice.
    fs::hard_link(target, serve.join("img.raw")).map_err(io_err("link the image".into()))?;
    let addr = tb.host(&publisher)?.addr.to_string();
    let port = HTTP_PORT.to_string();
    let serve_s = serve.to_string_lossy().into_owned();
    tb.spawn(
        &publisher,
        "python3",
        &[
            "-m",
            "http.server",
            &port,
            "--bind",
            &addr,
            "--directory",
            &serve_s,
        ],
    )?;
    let url = format!("http://{addr}:{port}/img.raw");
    wait_for(Duration::from_secs(30), "the HTTP server", || {
        tb.exec(
            &publisher,
            "curl",
            &["-sf", "-o", "/dev/null", "-r", "0-0", &url],
        )
        .ok()
        .filter(|o| o.status.success())
        .map(drop)
    })?;
    Ok(url)
}

fn rsync_prepare(
    tb: &mut Testbed,
    pullers: &[String],
    v1: &Path,
    update: bool,
    target: &Path,
) -> Result<String, TestbedError> {
    let publisher = tb.publisher().to_owned();
    let serve = tb.dir().join("serve");
    fs::create_dir_all(&serve).map_err(io_err("create the served directory".into()))?;
    fs::hard_link(target, serve.join("img.raw")).map_err(io_err("link the image".into()))?;
    if update {
        // Every host holds v1 already, under the name rsync will update.
        for h in pullers {
            let home = tb.home(h);
            fs::create_dir_all(&home).map_err(io_err(format!("create {}", home.display())))?;
            fs::copy(v1, home.join("img.raw")).map_err(io_err("copy v1".into()))?;
        }
    } else {
        for h in pullers {
            let home = tb.home(h);
            fs::create_dir_all(&home).map_err(io_err(format!("create {}", home.display())))?;
        }
    }
    let addr = tb.host(&publisher)?.addr.to_string();
    let conf = tb.dir().join("rsyncd.conf");
    let log = tb.dir().join("rsyncd.log");
    fs::write(
        &conf,
        format!(
            // No reverse DNS: there is no resolver here, and each lookup would stall 5 s.
            "uid = root\ngid = root\nuse chroot = no\nmax connections = 0\n\
             reverse lookup = no\nlog file = {}\n[vw]\npath = {}\nread only = yes\n",
            log.display(),
            serve.display()
        ),
    )
    .map_err(io_err("write rsyncd.conf".into()))?;
    let port = RSYNC_PORT.to_string();
    let conf_arg = format!("--config={}", conf.display());
    let addr_arg = format!("--address={addr}");
    let port_arg = format!("--port={port}");
    tb.spawn(
        &publisher,
        "rsync",
        &["--daemon", "--no-detach", &conf_arg, &addr_arg, &port_arg],
    )?;
    let base = format!("rsync://{addr}:{port}/vw/");
    wait_for(Duration::from_secs(30), "the rsync daemon", || {
        tb.exec(&publisher, "rsync", &[&base])
            .ok()
            .filter(|o| o.status.success())
            .map(drop)
    })?;
    Ok(format!("{base}img.raw"))
}

fn verify_copies(
    tb: &Testbed,
    strategy: Strategy,
    pullers: &[String],
    target: &Path,
    disk: &str,
) -> Result<(), TestbedError> {
    let want = file_hash(target)?;
    for h in pullers {
        let copy = tb.home(h).join("img.raw");
        if strategy == Strategy::Vwnet {
            let out = copy.to_string_lossy().into_owned();
            tb.vwnet_json(h, &["node", "export", disk, "--out", &out])?;
        }
        let got = file_hash(&copy)?;
        let _ = fs::remove_file(&copy);
        if got != want {
            return Err(host_err(
                h,
                format!("copy differs from the original ({got} != {want})"),
            ));
        }
    }
    Ok(())
}
