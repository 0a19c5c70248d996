//! `vwnet-sim`: run simulation scenarios and validate the model against the netns testbed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vwnet_sim::report::{run_scenario, summary_table, write_outputs};
use vwnet_sim::scenario::Scenario;
use vwnet_sim::validate::{
    Case, default_cases, parse_measured, predict, rel_err, validation_params,
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
        /// Per-request server delay in seconds (calibration, same for every case).
        #[arg(long, default_value_t = 0.002)]
        request_overhead: f64,
        /// Receiver verify-and-store throughput, MB/s (calibration; 0 = instant).
        #[arg(long, default_value_t = 400.0)]
        verify_mb_s: f64,
        /// Allowed relative error.
        #[arg(long, default_value_t = 0.15)]
        tolerance: f64,
    },
}

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
            request_overhead,
            verify_mb_s,
            tolerance,
        } => {
            let verify = (verify_mb_s > 0.0).then_some(verify_mb_s * 1e6);
            let params = validation_params(request_overhead, verify);
            let cases = default_cases(&topologies);
            println!(
                "{:<28} {:>6} {:>12} {:>12} {:>8}",
                "topology", "MiB", "predicted_s", "measured_s", "error"
            );
            let mut failed = 0;
            for case in &cases {
                let predicted = predict(case, &params)
                    .with_context(|| format!("predicting {}", case.topology.display()))?;
                let p_max = predicted.iter().map(|p| p.1).fold(0.0, f64::max);
                let name = case
                    .topology
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Some(tb) = &testbed else {
                    println!(
                        "{name:<28} {:>6} {p_max:>12.2} {:>12} {:>8}",
                        case.size_mib, "-", "-"
                    );
                    continue;
                };
                let measured = measure(tb, vwnet.as_ref(), case)?;
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
            if failed > 0 {
                bail!(
                    "{failed} of {} cases outside ±{:.0}%",
                    cases.len(),
                    tolerance * 100.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn measure(
    testbed: &PathBuf,
    vwnet: Option<&PathBuf>,
    case: &Case,
) -> anyhow::Result<vwnet_sim::validate::Measured> {
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
