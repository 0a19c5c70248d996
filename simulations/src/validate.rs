//! Validation against the netns testbed: the same topology file, predicted and measured.
//!
//! For each case the simulator predicts the vwnet swarm's completion times with chunk-level
//! scheduling (pieces = chunks, the node's own table) for a random image of `size_mib`, and the
//! testbed (`vwnet-testbed bench TOPOLOGY --size-mib S --json`, whose JSON report is
//! `vwnet_tests::testbed::bench::BenchReport`) measures them. The calibration constants (per-request server
//! delay, verify throughput) are the same for every case; nothing is tuned per case.

use std::path::{Path, PathBuf};

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
}

/// The testbed's JSON object.
#[derive(Debug, Clone, Deserialize)]
pub struct Measured {
    /// Per-host results (publisher excluded).
    pub hosts: Vec<MeasuredHost>,
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

/// Predicted per-host completion seconds for a case, host name order.
pub fn predict(case: &Case, swarm: &SwarmParams) -> Result<Vec<(String, f64)>, ValidateError> {
    let topo = Topology::load(&case.topology)?;
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

/// Parses the testbed's JSON output.
pub fn parse_measured(json: &str) -> Result<Measured, serde_json::Error> {
    serde_json::from_str(json)
}

/// The swarm parameters validation uses: chunk-level scheduling and the calibrated delays.
pub fn validation_params(request_overhead: f64, verify_rate: Option<f64>) -> SwarmParams {
    SwarmParams {
        piece: 0,
        neighbours: 4094,
        request_overhead,
        verify_rate,
        ..SwarmParams::default()
    }
}

/// Relative error of a prediction.
pub fn rel_err(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured.max(1e-9)
}
