//! Running a scenario and writing its results: CSV tables and SVG plots.
//!
//! Files written to the output directory:
//! - `summary.csv`: one row per (strategy, pullers): makespan, median, WAN bytes, run cost.
//! - `hosts.csv`: per-host start and completion times and bytes in/out.
//! - `links.csv`: bytes carried per link (host up/down/disk, directed WAN links).
//! - `migration.csv` when the scenario has a `[migration]` table.
//! - `cdf.svg`, `time_to_n.svg`, `wan_bytes.svg`, `sweep.svg`, `migration.svg`.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::image::{ImageModel, pieces};
use crate::scenario::{Migration, Scenario, ScenarioError};
use crate::sim::{Payload, RunError, RunResult, Sim, Strategy};

/// Why writing results failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The scenario could not be prepared.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A run could not be set up.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Building the piece table failed.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Outcome of a hot/cold migration estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationResult {
    /// `hot` or `cold`.
    pub mode: &'static str,
    /// Seconds the workspace is unavailable.
    pub downtime: f64,
    /// Bytes moved between the sites.
    pub bytes: u64,
}

/// Everything a scenario run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The image numbers used.
    pub image: ImageModel,
    /// One result per (pullers, strategy).
    pub runs: Vec<(usize, RunResult)>,
    /// Migration estimates, if asked for.
    pub migration: Vec<MigrationResult>,
    /// S/B: image size over the pullers' slowest downlink, seconds.
    pub s_over_b: Option<f64>,
}

/// Builds the payload (whole size and piece tables) of an image.
pub fn payload(image: &ImageModel, piece: u64) -> Result<Payload, ReportError> {
    let distinct = image.distinct_chunks();
    let avg_chunk =
        distinct.iter().map(|c| u64::from(c.len)).sum::<u64>() / distinct.len().max(1) as u64;
    Ok(Payload {
        whole_bytes: image.size,
        avg_chunk,
        table: pieces(&distinct, piece)?.table,
        delta_table: pieces(&image.delta_chunks(), piece)?.table,
    })
}

/// Runs every strategy (and sweep point) of a scenario. `progress(label, total, done)`.
pub fn run_scenario(
    sc: &Scenario,
    scratch: &Path,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Outcome, ReportError> {
    let image = sc.image_model(scratch)?;
    let payload = payload(&image, sc.swarm.piece)?;
    let total_pullers = sc.topology.host_count() as usize - 1;
    let points: Vec<Option<usize>> = if sc.sweep.is_empty() {
        vec![sc.workload.pullers]
    } else {
        sc.sweep.iter().map(|&n| Some(n)).collect()
    };
    let mut runs = Vec::new();
    for p in points {
        let mut workload = sc.workload.clone();
        workload.pullers = p;
        let n = p.unwrap_or(total_pullers);
        for &st in &sc.strategies {
            let label = format!("{} n={n}", st.name());
            let sim = Sim::new(&sc.topology, st, &payload, &workload, &sc.swarm, sc.seed)?;
            let r = sim.run(&mut |done| progress(&label, n as u64, done));
            progress(&label, n as u64, n as u64);
            runs.push((n, r));
        }
    }
    let migration = match &sc.migration {
        Some(m) => migrate(sc, m, &image),
        None => Vec::new(),
    };
    let s_over_b = slowest_downlink(sc).map(|b| image.size as f64 / b);
    Ok(Outcome {
        image,
        runs,
        migration,
        s_over_b,
    })
}

fn slowest_downlink(sc: &Scenario) -> Option<f64> {
    sc.topology
        .sites
        .iter()
        .filter_map(|s| s.link.downlink_bps.or(s.link.uplink_bps))
        .map(|b| b as f64 / 8.0)
        .reduce(f64::min)
}

/// Hot vs cold move of one workspace whose disk is `image` (the destination holds the base
/// version, as a vwnet node that ran the workspace's family before would).
fn migrate(sc: &Scenario, m: &Migration, image: &ImageModel) -> Vec<MigrationResult> {
    let topo = &sc.topology;
    let hosts = topo.hosts();
    let site_of = |name: &str| {
        hosts
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| topo.site_index(&h.site))
    };
    let (Some(a), Some(b)) = (site_of(&m.from), site_of(&m.to)) else {
        return Vec::new();
    };
    // One flow on an idle network: rate = the path's bottleneck, time = RTT + bytes / rate.
    let mut caps: Vec<f64> = Vec::new();
    let mut delay = 0.0;
    caps.extend(topo.sites[a].link.uplink_bps.map(|x| x as f64 / 8.0));
    caps.extend(topo.sites[b].link.downlink_bps.map(|x| x as f64 / 8.0));
    caps.extend(topo.sites[b].link.disk_bps.map(|x| x as f64 / 8.0));
    delay += topo.sites[a].link.delay.as_secs_f64() + topo.sites[b].link.delay.as_secs_f64();
    if let Some(route) = topo.route(&topo.sites[a].name, &topo.sites[b].name) {
        for wi in route {
            caps.extend(topo.wans[wi].rate_bps.map(|x| x as f64 / 8.0));
            delay += topo.wans[wi].delay.as_secs_f64();
        }
    }
    let rate = caps.into_iter().fold(f64::INFINITY, f64::min);
    let transfer = |bytes: u64| 2.0 * delay + bytes as f64 / rate;
    let disk = if image.base.is_empty() {
        image.distinct_bytes()
    } else {
        image.delta_bytes()
    };
    let save = m.memory as f64 / m.save_rate;
    vec![
        MigrationResult {
            mode: "cold",
            downtime: m.shutdown + transfer(disk) + m.boot,
            bytes: disk,
        },
        MigrationResult {
            mode: "hot",
            downtime: save + transfer(disk + m.memory) + save,
            bytes: disk + m.memory,
        },
    ]
}

fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:.3}"))
}

fn median(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// Writes the CSV files and plots of an outcome into `out`.
pub fn write_outputs(sc: &Scenario, o: &Outcome, out: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write {
        path: out.display().to_string(),
        source,
    })?;
    let mut summary = String::from(
        "strategy,pullers,completed,makespan_s,median_s,wan_bytes,bytes_in_total,wall_s,events,flows,peak_flows,requests,endgame_requests,cancels,timeouts,busy,duplicate_bytes,cancelled_bytes\n",
    );
    let mut hosts =
        String::from("strategy,pullers,host,site,started_s,completed_s,bytes_in,bytes_out\n");
    let mut links = String::from("strategy,pullers,link,bytes\n");
    for (n, r) in &o.runs {
        let done = r.sorted_completions();
        let _ = writeln!(
            summary,
            "{},{n},{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{}",
            r.strategy.name(),
            done.len(),
            fmt_opt(r.makespan()),
            fmt_opt(median(&done)),
            r.wan_bytes,
            r.hosts.iter().map(|h| h.bytes_in).sum::<u64>(),
            r.wall.as_secs_f64(),
            r.events,
            r.flows,
            r.peak_flows,
            r.downloader.requests,
            r.downloader.endgame_requests,
            r.downloader.cancels,
            r.downloader.timeouts,
            r.downloader.busy,
            r.downloader.duplicate_bytes,
            r.cancelled_bytes
        );
        for h in &r.hosts {
            let _ = writeln!(
                hosts,
                "{},{n},{},{},{:.3},{},{},{}",
                r.strategy.name(),
                h.host,
                h.site,
                h.started,
                fmt_opt(h.completed),
                h.bytes_in,
                h.bytes_out
            );
        }
        for (name, b) in &r.links {
            if *b > 0 {
                let _ = writeln!(links, "{},{n},{name},{b}", r.strategy.name());
            }
        }
    }
    write(&out.join("summary.csv"), &summary)?;
    write(&out.join("hosts.csv"), &hosts)?;
    write(&out.join("links.csv"), &links)?;
    if !o.migration.is_empty() {
        let mut m = String::from("mode,downtime_s,bytes\n");
        for r in &o.migration {
            let _ = writeln!(m, "{},{:.3},{}", r.mode, r.downtime, r.bytes);
        }
        write(&out.join("migration.csv"), &m)?;
        plot_migration(&out.join("migration.svg"), &sc.name, &o.migration)?;
    }
    // CDF, time-to-N and WAN bytes for the largest run of each strategy.
    let largest = o.runs.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let last: Vec<&RunResult> = o
        .runs
        .iter()
        .filter(|(n, _)| *n == largest)
        .map(|(_, r)| r)
        .collect();
    plot_cdf(&out.join("cdf.svg"), &sc.name, &last)?;
    plot_time_to_n(&out.join("time_to_n.svg"), &sc.name, &last, o.s_over_b)?;
    plot_wan(&out.join("wan_bytes.svg"), &sc.name, &last)?;
    if !sc.sweep.is_empty() {
        plot_sweep(&out.join("sweep.svg"), &sc.name, &o.runs, o.s_over_b)?;
    }
    Ok(())
}

/// A human-readable table of the summary (what `vwnet-sim run` prints).
pub fn summary_table(o: &Outcome) -> String {
    let mut s = format!(
        "image: {} ({} B whole, {} B distinct, {} B new vs base)\n",
        o.image.source,
        o.image.size,
        o.image.distinct_bytes(),
        if o.image.base.is_empty() {
            o.image.distinct_bytes()
        } else {
            o.image.delta_bytes()
        },
    );
    if let Some(sb) = o.s_over_b {
        let _ = writeln!(s, "S/B (slowest downlink): {sb:.1} s");
    }
    let _ = writeln!(
        s,
        "{:<11} {:>7} {:>12} {:>12} {:>14} {:>8}",
        "strategy", "pullers", "median_s", "makespan_s", "wan_MiB", "wall_s"
    );
    for (n, r) in &o.runs {
        let done = r.sorted_completions();
        let _ = writeln!(
            s,
            "{:<11} {:>7} {:>12} {:>12} {:>14.1} {:>8.2}",
            r.strategy.name(),
            n,
            median(&done).map_or("-".into(), |x| format!("{x:.1}")),
            r.makespan().map_or("never".into(), |x| format!("{x:.1}")),
            r.wan_bytes as f64 / 1048576.0,
            r.wall.as_secs_f64()
        );
    }
    for m in &o.migration {
        let _ = writeln!(
            s,
            "migration {:<4}: downtime {:.1} s, {:.1} MiB moved",
            m.mode,
            m.downtime,
            m.bytes as f64 / 1048576.0
        );
    }
    s
}

fn color(st: Strategy) -> RGBColor {
    match st {
        Strategy::Install => RGBColor(120, 120, 120),
        Strategy::Central => RGBColor(214, 39, 40),
        Strategy::Single => RGBColor(255, 127, 14),
        Strategy::Swarm => RGBColor(31, 119, 180),
        Strategy::SwarmWarm => RGBColor(44, 160, 44),
    }
}

fn perr(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Plot {
        path: path.display().to_string(),
        reason,
    }
}

fn plot_cdf(path: &Path, title: &str, runs: &[&RunResult]) -> Result<(), ReportError> {
    let e = perr(path);
    let xmax = runs
        .iter()
        .flat_map(|r| r.sorted_completions())
        .fold(1.0f64, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: completion-time CDF"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..xmax, 0.0..1.0)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("fraction of hosts done")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for r in runs {
        let done = r.sorted_completions();
        let n = r.hosts.len().max(1) as f64;
        let mut pts = vec![(0.0, 0.0)];
        for (i, &t) in done.iter().enumerate() {
            pts.push((t, i as f64 / n));
            pts.push((t, (i + 1) as f64 / n));
        }
        let c = color(r.strategy);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(r.strategy.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

fn plot_time_to_n(
    path: &Path,
    title: &str,
    runs: &[&RunResult],
    s_over_b: Option<f64>,
) -> Result<(), ReportError> {
    let e = perr(path);
    let nmax = runs.iter().map(|r| r.hosts.len()).max().unwrap_or(1).max(1) as f64;
    let tmax = runs
        .iter()
        .flat_map(|r| r.sorted_completions())
        .fold(s_over_b.unwrap_or(1.0), f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: time until N hosts have the image"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..nmax, 0.0..tmax)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("N hosts")
        .y_desc("seconds")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for r in runs {
        let pts: Vec<(f64, f64)> = r
            .sorted_completions()
            .into_iter()
            .enumerate()
            .map(|(i, t)| ((i + 1) as f64, t))
            .collect();
        let c = color(r.strategy);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(r.strategy.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    if let Some(sb) = s_over_b {
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, sb), (nmax, sb)],
                BLACK.stroke_width(1),
            ))
            .map_err(|x| e(x.to_string()))?
            .label("S/B")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

fn bars(
    path: &Path,
    caption: &str,
    ylabel: &str,
    items: &[(String, f64, RGBColor)],
) -> Result<(), ReportError> {
    let e = perr(path);
    let ymax = items.iter().map(|i| i.1).fold(1e-9, f64::max) * 1.15;
    let n = items.len().max(1);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..ymax)
        .map_err(|x| e(x.to_string()))?;
    let names: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(ylabel)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, (_, v, c))| {
            Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], c.filled())
        }))
        .map_err(|x| e(x.to_string()))?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, (_, v, _))| {
            Text::new(
                format!("{v:.1}"),
                (i as f64 + 0.35, *v + ymax * 0.02),
                ("sans-serif", 14),
            )
        }))
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

fn plot_wan(path: &Path, title: &str, runs: &[&RunResult]) -> Result<(), ReportError> {
    let items: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.strategy.name().to_string(),
                r.wan_bytes as f64 / 1048576.0,
                color(r.strategy),
            )
        })
        .collect();
    bars(
        path,
        &format!("{title}: WAN bytes per strategy"),
        "MiB over WAN links",
        &items,
    )
}

fn plot_migration(path: &Path, title: &str, m: &[MigrationResult]) -> Result<(), ReportError> {
    let mut items = Vec::new();
    for r in m {
        let c = if r.mode == "hot" {
            RGBColor(214, 39, 40)
        } else {
            RGBColor(31, 119, 180)
        };
        items.push((format!("{} downtime (s)", r.mode), r.downtime, c));
    }
    for r in m {
        let c = if r.mode == "hot" {
            RGBColor(240, 150, 150)
        } else {
            RGBColor(150, 190, 230)
        };
        items.push((
            format!("{} GiB moved x100", r.mode),
            r.bytes as f64 / 1073741824.0 * 100.0,
            c,
        ));
    }
    bars(
        path,
        &format!("{title}: migration hot vs cold"),
        "seconds | GiB x100",
        &items,
    )
}

fn plot_sweep(
    path: &Path,
    title: &str,
    runs: &[(usize, RunResult)],
    s_over_b: Option<f64>,
) -> Result<(), ReportError> {
    let e = perr(path);
    let nmax = runs.iter().map(|(n, _)| *n).max().unwrap_or(1).max(2) as f64;
    let tmax = runs
        .iter()
        .filter_map(|(_, r)| r.makespan())
        .fold(1.0f64, f64::max)
        * 2.0;
    let tmin = runs
        .iter()
        .filter_map(|(_, r)| r.makespan())
        .fold(s_over_b.unwrap_or(f64::INFINITY), f64::min)
        .max(1e-3)
        / 2.0;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: time until all N hosts are ready"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..nmax * 1.5).log_scale(), (tmin..tmax).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("N hosts (log)")
        .y_desc("seconds (log)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let mut strategies: Vec<Strategy> = runs.iter().map(|(_, r)| r.strategy).collect();
    strategies.sort();
    strategies.dedup();
    for st in strategies {
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .filter(|(_, r)| r.strategy == st)
            .filter_map(|(n, r)| r.makespan().map(|m| (*n as f64, m)))
            .collect();
        let c = color(st);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(st.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(|x| e(x.to_string()))?;
    }
    if let Some(sb) = s_over_b {
        chart
            .draw_series(LineSeries::new(
                vec![(1.0, sb), (nmax * 1.5, sb)],
                BLACK.stroke_width(1),
            ))
            .map_err(|x| e(x.to_string()))?
            .label("S/B")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
