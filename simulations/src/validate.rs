//! Validation against the netns testbed: the same topology file, predicted and measured.
//!
//! For each case the simulator predicts the vwnet swarm's completion times with chunk-level
//! scheduling (pieces = chunks, the node's own table) for a random image of `size_mib`, and the
//! testbed (`vwnet-testbed bench TOPOLOGY --size-mib S --json`, whose JSON report is
//! `vwnet_tests::testbed::bench::BenchReport`) measures them. The calibration constants
//! ([`Calibration`]: per-request server delay, verify throughput, the pull's fixed set-up and
//! finish time) are the same for every case; nothing is tuned per case. The fixed costs are
//! measured by `vwnet-sim calibrate` on the pair topology at sizes no case uses (see the
//! README). The prediction models the links the testbed built: without the kernel's
//! `sch_netem` the testbed applies no delays, and neither does the prediction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::image::ImageModel;
use crate::report::payload;
use crate::sim::{Sim, Strategy, SwarmParams, Workload};
use crate::topology::{Topology, TopologyError};

/// One validation case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Topology file.
    pub topology: PathBuf,
    /// Image size in MiB.
    pub size_mib: u64,
}

/// The committed cases: small enough for the testbed, varied in shape.
pub fn default_cases(dir: &Path) -> Vec<Case> {
    [
        ("validate-pair.toml", 64),
        ("validate-star4.toml", 32),
        ("validate-lan8.toml", 64),
        ("validate-slow-up.toml", 32),
        ("validate-two-sites.toml", 32),
        ("validate-latency.toml", 32),
    ]
    .into_iter()
    .map(|(f, s)| Case {
        topology: dir.join(f),
        size_mib: s,
    })
    .collect()
}

/// What the testbed reports for one host (extra fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct MeasuredHost {
    /// Host name.
    pub host: String,
    /// Seconds from the start of all pulls to this host's completion.
    pub completed_secs: f64,
    /// What `vwnet --json pull` reported (absent for baselines).
    #[serde(default)]
    pub pull: Option<MeasuredPull>,
}

/// The part of `vwnet pull`'s summary calibration reads.
#[derive(Debug, Clone, Deserialize)]
pub struct MeasuredPull {
    /// Milliseconds the node spent in the pull, from after resolving the description to the
    /// end (so `completed_secs` minus this is the client's start, the request and the reply).
    pub millis: u64,
}

/// The testbed's JSON object.
#[derive(Debug, Clone, Deserialize)]
pub struct Measured {
    /// Per-host results (publisher excluded).
    pub hosts: Vec<MeasuredHost>,
    /// Whether the testbed applied the topology's link delays (absent: assumed applied).
    #[serde(default)]
    pub delay_emulated: Option<bool>,
}

/// Why a case could not be validated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// The topology is bad.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The simulation could not be set up.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// The simulation could not be set up.
    #[error(transparent)]
    Run(#[from] crate::sim::RunError),
}

/// Predicted per-host completion seconds for a case, host name order, on the links the
/// testbed builds ([`testbed_topology`]; `delays: false` for a testbed without `sch_netem`).
pub fn predict(
    case: &Case,
    calibration: &Calibration,
    delays: bool,
) -> Result<Vec<(String, f64)>, ValidateError> {
    let topo = Topology::load(&case.topology)?;
    let topo = testbed_topology(topo, delays, calibration.payload_share);
    let swarm = &validation_params(calibration);
    let image = ImageModel::synthetic(case.size_mib << 20, 64 * 1024, 0.0, 1);
    let payload = payload(&image, swarm.piece)?;
    let workload = Workload::default();
    let sim = Sim::new(&topo, Strategy::Swarm, &payload, &workload, swarm, 1)?;
    let r = sim.run(&mut |_| {});
    Ok(r.hosts
        .into_iter()
        .map(|h| (h.host, h.completed.unwrap_or(f64::INFINITY)))
        .collect())
}

/// The node's costs the model does not derive, the same for every case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Per-request server delay, seconds.
    pub request_overhead: f64,
    /// Verify-and-store throughput, bytes/s (`None`: instantaneous).
    pub verify_rate: Option<f64>,
    /// The pull's fixed cost before its first request, seconds ([`SwarmParams::pull_setup`]).
    pub pull_setup: f64,
    /// The pull's fixed cost after its last chunk, seconds ([`SwarmParams::pull_finish`]).
    pub pull_finish: f64,
    /// Image bytes per byte the testbed's shaper counts (TCP/IP and Ethernet headers, libp2p
    /// framing): the payload a link of rate R carries is R × this.
    pub payload_share: f64,
}

/// Parses the testbed's JSON output.
pub fn parse_measured(json: &str) -> Result<Measured, serde_json::Error> {
    serde_json::from_str(json)
}

/// The swarm parameters validation uses: chunk-level scheduling and the calibrated costs.
pub fn validation_params(c: &Calibration) -> SwarmParams {
    SwarmParams {
        piece: 0,
        neighbours: 4094,
        request_overhead: c.request_overhead,
        verify_rate: c.verify_rate,
        pull_setup: c.pull_setup,
        pull_finish: c.pull_finish,
        ..SwarmParams::default()
    }
}

/// The topology's links as the testbed builds them, in payload terms: every rate (host
/// links and WAN) times `payload_share`, and without `delays` every delay zero.
pub fn testbed_topology(mut topo: Topology, delays: bool, payload_share: f64) -> Topology {
    let scale = |r: &mut Option<u64>| *r = r.map(|bps| (bps as f64 * payload_share).round() as u64);
    for site in &mut topo.sites {
        scale(&mut site.link.uplink_bps);
        scale(&mut site.link.downlink_bps);
        if !delays {
            site.link.delay = Duration::ZERO;
        }
    }
    for wan in &mut topo.wans {
        scale(&mut wan.rate_bps);
        if !delays {
            wan.delay = Duration::ZERO;
        }
    }
    topo
}

/// Seconds one MiB takes on the slowest host link of `topo` (`None`: every link unlimited).
pub fn secs_per_mib(topo: &Topology) -> Option<f64> {
    let slowest = topo
        .sites
        .iter()
        .flat_map(|s| [s.link.uplink_bps, s.link.downlink_bps])
        .flatten()
        .min()?;
    Some((8u64 << 20) as f64 / slowest as f64)
}

/// Relative error of a prediction.
pub fn rel_err(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured.max(1e-9)
}

/// When a node's log says its pull reached each phase, seconds of the day (UTC). From the
/// `info` lines of `node/src/pull.rs`: `pulling` (the manifest is in, the loop starts),
/// `pull scheduling` (the loop ended and the last commit returned), `pull complete` (the store
/// finished the image, `Complete` was announced and the provider record put).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PullPhases {
    /// `pulling`.
    pub loop_start: f64,
    /// `pull scheduling`.
    pub loop_end: f64,
    /// `pull complete`.
    pub complete: f64,
}

/// Finds a pull's phases in a node log (the first pull); `None` if a line is missing.
pub fn pull_phases(log: &str) -> Option<PullPhases> {
    let at = |needle: &str| log.lines().find(|l| l.contains(needle)).and_then(log_time);
    Some(PullPhases {
        loop_start: at("vwnet_node::pull: pulling ")?,
        loop_end: at("vwnet_node::pull: pull scheduling ")?,
        complete: at("vwnet_node::pull: pull complete ")?,
    })
}

/// Seconds since the Unix epoch (UTC) of a `tracing` line starting `2026-11-27T01:13:24.122923Z`
/// (the whole date counts, so phases on both sides of midnight keep their order).
fn log_time(line: &str) -> Option<f64> {
    let (date, clock) = line
        .split_whitespace()
        .next()?
        .strip_suffix('Z')?
        .split_once('T')?;
    let mut ymd = date.split('-').map(str::parse::<i64>);
    let (y, mo, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let mut parts = clock.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(days_from_civil(y, mo, d)? as f64 * 86_400.0 + h * 3600.0 + m * 60.0 + s)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Least-squares line `y = a + b x`; `None` with fewer than two distinct `x`.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if points.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_phases_come_from_the_info_lines() {
        let log = "\
2026-11-27T01:13:23.374667Z  INFO vwnet_node::daemon: listening addr=/ip4/10.77.0.2/tcp/4001
2026-11-27T01:13:24.122923Z  INFO vwnet_node::pull: pulling image=e9fc14f4 want=1048576 local=0
2026-11-27T01:13:24.122974Z DEBUG vwnet_node::pull: pull stalled: waiting for sources chunks=12
2026-11-27T01:13:24.242506Z  INFO vwnet_node::pull: pull scheduling image=e9fc14f4 wanted=1048576
2026-11-27T01:13:24.268687Z  INFO vwnet_node::pull: pull complete ws=afb73675 fetched=1048576
";
        let p = pull_phases(log).expect("all three lines");
        // 2026-11-27 is day 20,784 of the epoch.
        let at = 20_784.0 * 86_400.0 + 3600.0 + 13.0 * 60.0;
        assert!((p.loop_start - (at + 24.122923)).abs() < 1e-6);
        assert!((p.loop_end - p.loop_start - 0.119583).abs() < 1e-6);
        assert!((p.complete - p.loop_end - 0.026181).abs() < 1e-6);
        assert_eq!(
            pull_phases(&log.replace("pull complete", "pull failed")),
            None
        );
    }

    #[test]
    fn pull_phases_keep_their_order_across_midnight() {
        let log = "\
2026-12-31T23:59:59.900000Z  INFO vwnet_node::pull: pulling image=e9fc14f4 want=1048576 local=0
2027-01-01T00:00:00.050000Z  INFO vwnet_node::pull: pull scheduling image=e9fc14f4 wanted=1048576
2027-01-01T00:00:00.075000Z  INFO vwnet_node::pull: pull complete ws=afb73675 fetched=1048576
";
        let p = pull_phases(log).expect("all three lines");
        assert!((p.loop_end - p.loop_start - 0.15).abs() < 1e-6, "{p:?}");
        assert!((p.complete - p.loop_end - 0.025).abs() < 1e-6, "{p:?}");
        assert_eq!(log_time("1970-01-01T00:00:01.5Z  INFO x"), Some(1.5));
        assert_eq!(
            log_time("1970-13-01T00:00:01.5Z  INFO x"),
            None,
            "no 13th month"
        );
        assert_eq!(
            log_time("INFO 1970-01-01T00:00:01.5Z"),
            None,
            "not a line's start"
        );
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
    }

    #[test]
    fn fit_line_recovers_a_line_and_refuses_one_point() {
        let pts: Vec<(f64, f64)> = [1.0, 8.0, 32.0]
            .iter()
            .map(|&x| (x, 0.2 + 0.01 * x))
            .collect();
        let (a, b) = fit_line(&pts).expect("three sizes");
        assert!((a - 0.2).abs() < 1e-9 && (b - 0.01).abs() < 1e-9);
        assert_eq!(fit_line(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn testbed_topology_scales_rates_and_drops_delays_only_when_asked() {
        let topo = Topology::from_toml(
            "[defaults]\nuplink = \"20mbit\"\ndelay = \"25ms\"\n[[site]]\nname = \"a\"\nhosts = 2\n\
             [[site]]\nname = \"b\"\nhosts = 1\n[[wan]]\nsites = [\"a\", \"b\"]\ndelay = \"20ms\"\n",
        )
        .expect("valid topology");
        let flat = testbed_topology(topo.clone(), false, 1.0);
        assert!(flat.sites.iter().all(|s| s.link.delay == Duration::ZERO));
        assert!(flat.wans.iter().all(|w| w.delay == Duration::ZERO));
        assert_eq!(flat.sites[0].link.uplink_bps, topo.sites[0].link.uplink_bps);
        let payload = testbed_topology(topo.clone(), true, 0.95);
        assert_eq!(payload.sites[0].link.uplink_bps, Some(19_000_000));
        assert_eq!(
            payload.sites[0].link.downlink_bps, None,
            "unlimited stays unlimited"
        );
        assert_eq!(payload.wans[0].delay, topo.wans[0].delay);
        assert_eq!(secs_per_mib(&payload), Some((8u64 << 20) as f64 / 19e6));
    }

    #[test]
    fn fixed_costs_add_to_a_lone_pullers_completion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pair.toml");
        std::fs::write(
            &path,
            "[defaults]\nuplink = \"100mbit\"\ndownlink = \"100mbit\"\ndelay = \"1ms\"\n\
             [[site]]\nname = \"a\"\nhosts = 2\n",
        )
        .expect("write topology");
        let case = Case {
            topology: path,
            size_mib: 4,
        };
        let mut c = Calibration {
            request_overhead: 0.002,
            verify_rate: Some(400e6),
            pull_setup: 0.0,
            pull_finish: 0.0,
            payload_share: 1.0,
        };
        let base = predict(&case, &c, true).expect("predict")[0].1;
        c.pull_setup = 0.15;
        c.pull_finish = 0.05;
        let with = predict(&case, &c, true).expect("predict")[0].1;
        // One puller, one source: nothing else depends on when it starts or finishes.
        assert!((with - base - 0.2).abs() < 1e-6, "{base} -> {with}");
        let flat = predict(&case, &c, false).expect("predict")[0].1;
        assert!(flat < with, "no delay cannot be slower: {flat} vs {with}");
        c.payload_share = 0.5;
        let half = predict(&case, &c, true).expect("predict")[0].1;
        // 4 MiB at 100 Mbit/s is 0.34 s of link time: half the payload rate adds about that.
        assert!(half - with > 0.3 && half - with < 0.4, "{with} -> {half}");
    }
}
