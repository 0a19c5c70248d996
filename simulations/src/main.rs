//! `vwnet-sim`: run simulation scenarios and validate the model against the netns testbed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vwnet_sim::report::{run_scenario, summary_table, write_outputs};
use vwnet_sim::scenario::Scenario;
use vwnet_sim::topology::Topology;
use vwnet_sim::validate::{
    Calibration, Case, Measured, default_cases, fit_line, parse_measured, predict, pull_phases,
    rel_err, secs_per_mib,
};

#[derive(Parser)]
#[command(
    name = "vwnet-sim",
    about = "Flow-level simulator of vwnet distribution costs"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario: CSV and SVG plots go to --out.
    Run {
        /// The scenario TOML.
        scenario: PathBuf,
        /// Output directory (default: simulations/out/<scenario name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Predict the committed validation cases and, with --testbed, measure and compare them.
    Validate {
        /// The `vwnet-testbed` binary (needs root); without it only predictions are printed.
        #[arg(long)]
        testbed: Option<PathBuf>,
        /// The `vwnet` binary the testbed should run.
        #[arg(long)]
        vwnet: Option<PathBuf>,
        /// Directory of the validation topologies.
        #[arg(long, default_value = "simulations/topologies")]
        topologies: PathBuf,
        #[command(flatten)]
        costs: Costs,
        /// The pull's fixed cost before its first request, seconds (measured by `calibrate`).
        #[arg(long, default_value_t = PULL_SETUP)]
        pull_setup: f64,
        /// The pull's fixed cost after its last chunk, seconds (measured by `calibrate`).
        #[arg(long, default_value_t = PULL_FINISH)]
        pull_finish: f64,
        /// Image bytes per byte a link's shaper counts (measured by `calibrate`).
        #[arg(long, default_value_t = PAYLOAD_SHARE)]
        payload_share: f64,
        /// Predict without link delays (as a testbed without `sch_netem` runs); with
        /// --testbed this follows the testbed's report.
        #[arg(long)]
        no_delays: bool,
        /// Allowed relative error.
        #[arg(long, default_value_t = 0.15)]
        tolerance: f64,
    },
    /// Measure the pull's fixed cost: time a lone puller on the testbed at several sizes and
    /// fit measured minus predicted (without fixed costs) against the size.
    Calibrate {
        /// The `vwnet-testbed` binary (needs root).
        #[arg(long)]
        testbed: PathBuf,
        /// The `vwnet` binary the testbed should run.
        #[arg(long)]
        vwnet: Option<PathBuf>,
        /// A topology with one publisher and one puller.
        #[arg(long, default_value = "simulations/topologies/validate-pair.toml")]
        topology: PathBuf,
        /// Image sizes, MiB.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        sizes: Vec<u64>,
        /// Runs per size.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Keep the nodes' logs under this directory (`<size>-<run>/<host>.log`); with them
        /// the fixed cost is split into the node's phases.
        #[arg(long)]
        logs: Option<PathBuf>,
        #[command(flatten)]
        costs: Costs,
    },
}

/// The per-request and per-byte costs, the same for every case.
#[derive(clap::Args)]
struct Costs {
    /// Per-request server delay in seconds (calibration, same for every case).
    #[arg(long, default_value_t = 0.002)]
    request_overhead: f64,
    /// Receiver verify-and-store throughput, MB/s (calibration; 0 = instant).
    #[arg(long, default_value_t = 400.0)]
    verify_mb_s: f64,
}

impl Costs {
    fn calibration(&self, pull_setup: f64, pull_finish: f64, payload_share: f64) -> Calibration {
        Calibration {
            request_overhead: self.request_overhead,
            verify_rate: (self.verify_mb_s > 0.0).then_some(self.verify_mb_s * 1e6),
            pull_setup,
            pull_finish,
            payload_share,
        }
    }
}

/// Measured by `vwnet-sim calibrate` (see the README's validation section).
const PULL_SETUP: f64 = 0.027;
/// Measured by `vwnet-sim calibrate` (see the README's validation section).
const PULL_FINISH: f64 = 0.005;
/// Measured by `vwnet-sim calibrate` (see the README's validation section).
const PAYLOAD_SHARE: f64 = 0.951;

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vwnet-sim: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Run { scenario, out } => {
            let sc = Scenario::load(&scenario)?;
            let out = out.unwrap_or_else(|| PathBuf::from("simulations/out").join(&sc.name));
            let scratch = tempfile::tempdir().context("creating a scratch directory")?;
            let bar = if std::io::stderr().is_terminal() {
                let b = ProgressBar::new(0);
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>18} [{bar:40}] {pos}/{len} hosts {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                Some(b)
            } else {
                None
            };
            let outcome = run_scenario(&sc, scratch.path(), &mut |label, total, done| {
                if let Some(b) = &bar {
                    b.set_prefix(label.to_string());
                    b.set_length(total);
                    b.set_position(done);
                }
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            write_outputs(&sc, &outcome, &out)?;
            print!("{}", summary_table(&outcome));
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate {
            testbed,
            vwnet,
            topologies,
            costs,
            pull_setup,
            pull_finish,
            payload_share,
            no_delays,
            tolerance,
        } => {
            let params = costs.calibration(pull_setup, pull_finish, payload_share);
            let cases = default_cases(&topologies);
            println!(
                "{:<28} {:>6} {:>12} {:>12} {:>8}",
                "topology", "MiB", "predicted_s", "measured_s", "error"
            );
            let mut failed = 0;
            let mut flat = false;
            for case in &cases {
                let name = case
                    .topology
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Some(tb) = &testbed else {
                    let predicted = predict(case, &params, !no_delays)
                        .with_context(|| format!("predicting {}", case.topology.display()))?;
                    let p_max = predicted.iter().map(|p| p.1).fold(0.0, f64::max);
                    println!(
                        "{name:<28} {:>6} {p_max:>12.2} {:>12} {:>8}",
                        case.size_mib, "-", "-"
                    );
                    continue;
                };
                let measured = measure(tb, vwnet.as_ref(), case, None)?;
                // Predict the links the testbed built: no delays without `sch_netem`.
                let delays = !no_delays && measured.delay_emulated.unwrap_or(true);
                flat |= !delays;
                let predicted = predict(case, &params, delays)
                    .with_context(|| format!("predicting {}", case.topology.display()))?;
                let p_max = predicted.iter().map(|p| p.1).fold(0.0, f64::max);
                let m_max = measured
                    .hosts
                    .iter()
                    .map(|h| h.completed_secs)
                    .fold(0.0, f64::max);
                let err = rel_err(p_max, m_max);
                let ok = err.abs() <= tolerance;
                if !ok {
                    failed += 1;
                }
                println!(
                    "{name:<28} {:>6} {p_max:>12.2} {m_max:>12.2} {:>+7.1}% {}",
                    case.size_mib,
                    err * 100.0,
                    if ok { "ok" } else { "OUT OF TOLERANCE" }
                );
                for (host, p) in &predicted {
                    if let Some(m) = measured.hosts.iter().find(|h| &h.host == host) {
                        println!(
                            "    {host:<8} predicted {p:>8.2} s  measured {:>8.2} s",
                            m.completed_secs
                        );
                    }
                }
            }
            if testbed.is_none() {
                println!("(predictions only: pass --testbed PATH to measure; it needs root)");
            }
            if flat {
                println!("(the testbed applied no link delays, no sch_netem: predicted without)");
            }
            if failed > 0 {
                bail!(
                    "{failed} of {} cases outside ±{:.0}%",
                    cases.len(),
                    tolerance * 100.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Calibrate {
            testbed,
            vwnet,
            topology,
            sizes,
            runs,
            logs,
            costs,
        } => {
            calibrate(
                &testbed,
                vwnet.as_ref(),
                &topology,
                &sizes,
                runs,
                logs.as_deref(),
                &costs,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Times a lone puller at each size and fits measured minus predicted against the size.
fn calibrate(
    testbed: &Path,
    vwnet: Option<&PathBuf>,
    topology: &Path,
    sizes: &[u64],
    runs: u32,
    logs: Option<&Path>,
    costs: &Costs,
) -> anyhow::Result<()> {
    // Raw: no fixed costs, every link's full rate carries image bytes.
    let params = costs.calibration(0.0, 0.0, 1.0);
    let link_secs = secs_per_mib(&Topology::load(topology)?);
    println!(
        "{:>5} {:>4} {:>10} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "MiB", "run", "measured", "predicted", "residual", "client", "manifest", "loop", "finish"
    );
    let mut points = Vec::new();
    let mut phase_sums = [0.0; 4];
    let mut phase_runs = 0u32;
    for &size in sizes {
        let case = Case {
            topology: topology.to_path_buf(),
            size_mib: size,
        };
        for run in 1..=runs {
            let dir = logs.map(|d| d.join(format!("{size}-{run}")));
            let measured = measure(testbed, vwnet, &case, dir.as_deref())?;
            let delays = measured.delay_emulated.unwrap_or(true);
            let predicted = predict(&case, &params, delays)
                .with_context(|| format!("predicting {}", topology.display()))?;
            let [(host, p)] = predicted.as_slice() else {
                bail!("{} must have exactly one puller", topology.display());
            };
            let Some(m) = measured.hosts.iter().find(|h| &h.host == host) else {
                bail!("the testbed reported no time for {host}");
            };
            let residual = m.completed_secs - p;
            points.push((size as f64, residual));
            // The node's phases (from its log and `vwnet pull`'s own timing), when kept:
            // client = the command's start, resolving and the reply; manifest = up to the
            // loop's first poll; loop = the scheduling loop and its last commit; finish = the
            // store's finish, the Complete announcement and the provider record.
            let phases = dir.as_ref().and_then(|d| {
                let log = std::fs::read_to_string(d.join(format!("{host}.log"))).ok()?;
                let ph = pull_phases(&log)?;
                let millis = m.pull.as_ref()?.millis as f64 / 1000.0;
                Some((
                    m.completed_secs - millis,
                    ph.loop_start - (ph.complete - millis),
                    ph.loop_end - ph.loop_start,
                    ph.complete - ph.loop_end,
                ))
            });
            if let Some(p) = phases {
                phase_runs += 1;
                for (sum, v) in phase_sums.iter_mut().zip([p.0, p.1, p.2, p.3]) {
                    *sum += v;
                }
            }
            let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
            println!(
                "{size:>5} {run:>4} {:>10.3} {p:>11.3} {residual:>+10.3} {:>9} {:>9} {:>9} {:>9}",
                m.completed_secs,
                cell(phases.map(|p| p.0)),
                cell(phases.map(|p| p.1)),
                cell(phases.map(|p| p.2)),
                cell(phases.map(|p| p.3)),
            );
        }
    }
    let Some((a, b)) = fit_line(&points) else {
        println!("(one size only: no fit; pass several --sizes)");
        return Ok(());
    };
    println!(
        "residual = {a:.3} s + {:.2} ms/MiB (least squares over {} runs): fixed cost {a:.3} s",
        b * 1000.0,
        points.len()
    );
    if let Some(t) = link_secs {
        // The extra time per MiB is link time the shaper spent on bytes that are not the
        // image's: the payload share of the link is t / (t + b).
        println!(
            "per MiB: {:.1} ms of link time + {:.2} ms: payload share {:.4}",
            t * 1000.0,
            b * 1000.0,
            t / (t + b)
        );
    }
    if phase_runs > 0 {
        let mean = |i: usize| phase_sums[i] / f64::from(phase_runs);
        println!(
            "phases (mean of {phase_runs} runs): client {:.3} s + manifest {:.3} s before the \
             loop (pull_setup {:.3}), finish {:.3} s after it (pull_finish)",
            mean(0),
            mean(1),
            mean(0) + mean(1),
            mean(3)
        );
    }
    Ok(())
}

fn measure(
    testbed: &Path,
    vwnet: Option<&PathBuf>,
    case: &Case,
    logs: Option<&Path>,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(testbed);
    cmd.arg("bench")
        .arg(&case.topology)
        .arg("--size-mib")
        .arg(case.size_mib.to_string())
        .arg("--strategy")
        .arg("vwnet")
        .arg("--json");
    if let Some(v) = vwnet {
        cmd.arg("--vwnet").arg(v);
    }
    if let Some(dir) = logs {
        cmd.arg("--logs").arg(dir);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", testbed.display()))?;
    if !out.status.success() {
        bail!(
            "{} bench {} failed: {}",
            testbed.display(),
            case.topology.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_measured(&text).with_context(|| format!("parsing the testbed's JSON: {text}"))
}
