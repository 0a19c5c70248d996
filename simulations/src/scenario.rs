//! Scenario files: a topology, an image, strategies and a workload, as TOML.
//!
//! ```toml
//! name = "deploy-two-sites"
//! topology = "../topologies/two-sites.toml"   # relative to this file
//! strategies = ["central", "single", "swarm", "swarm-warm"]
//! seed = 1
//! [image]                                      # exactly one source
//! generate = { size = "64MiB", rewrite = 0.05, insert = "64KiB", zero = 0.1, seed = 7 }
//! # manifest = "v2.manifest"   base = "v1.manifest"     (chunker manifest files)
//! # synthetic = { size = "4GiB", chunk = "64KiB", shared = 0.9 }
//! [swarm]
//! piece = "1MiB"            # 0 = schedule single chunks, like the node
//! neighbours = 32
//! # Overrides of the node's downloader settings (absent: the node's own, from
//! # `vwnet_node::pull::downloader_config`): max_requests_per_peer, request_timeout,
//! # max_request_bytes, max_bytes_per_peer, endgame_copies, backoff_base (also the pause
//! # after a Busy refusal).
//! announce_every = "500ms"  # the pull loop's tick (node: 500 ms)
//! announce_budget = 8.0     # announcements per second per receiver (absent: the node's
//!                           # pull::announce_interval, 8; 0 = every tick)
//! site_aware = true         # label peers by site as the node does (false: site-blind)
//! upload_slots = 64         # responses a host sends at once, more are refused Busy (the
//!                           # node's max_concurrent_uploads; 0 = unlimited)
//! commit_every = "250ms"    # a puller's commits; it announces only committed chunks (the
//!                           # node's pull::COMMIT_EVERY; 0 = at once)
//! [workload]
//! pullers = 100             # or sweep = [1, 10, 100]
//! arrivals_per_sec = 2.0    # Poisson arrivals; absent = flash crowd at t = 0
//! [migration]               # optional: hot vs cold move of one workspace
//! from = "a2"
//! to = "b1"
//! memory = "4GiB"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::image::{
    GenerateSpec, ImageError, ImageModel, chunk_to_manifest, generate_pair, read_manifest,
};
use crate::sim::{Arrivals, Churn, LimitOverrides, Strategy, SwarmParams, Workload};
use crate::topology::{Topology, TopologyError, parse_delay, parse_rate};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed TOML or an unknown field.
    #[error("invalid scenario TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// A field has an unusable value.
    #[error("invalid scenario field `{field}`: {reason}")]
    Field {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The topology file is bad.
    #[error("topology: {0}")]
    Topology(#[from] TopologyError),
    /// The image could not be built.
    #[error("image: {0}")]
    Image(#[from] ImageError),
}

fn bad(field: &str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses a byte size: `4GiB`, `64KiB`, `1MB`, `512B`, or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("`{t}` is not a size"))?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("`{t}`: unknown size unit `{u}`")),
    };
    let b = v * mult;
    if !b.is_finite() || !(0.0..=1e15).contains(&b) {
        return Err(format!("`{t}` is out of range"));
    }
    Ok(b.round() as u64)
}

/// Parses a duration: the topology units plus `min` and `h`.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    for (suffix, mult) in [("min", 60.0), ("h", 3600.0)] {
        if let Some(num) = t.strip_suffix(suffix)
            && let Ok(v) = num.trim().parse::<f64>()
            && v.is_finite()
            && v >= 0.0
        {
            return Ok(v * mult);
        }
    }
    parse_delay(t).map(|d| d.as_secs_f64())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerate {
    size: String,
    #[serde(default)]
    rewrite: f64,
    insert: Option<String>,
    #[serde(default)]
    zero: f64,
    #[serde(default)]
    seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSynthetic {
    size: String,
    chunk: Option<String>,
    #[serde(default)]
    shared: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    generate: Option<RawGenerate>,
    manifest: Option<String>,
    base: Option<String>,
    synthetic: Option<RawSynthetic>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwarm {
    piece: Option<String>,
    neighbours: Option<usize>,
    announce_every: Option<String>,
    announce_budget: Option<f64>,
    request_overhead: Option<String>,
    verify_rate: Option<String>,
    max_requests_per_peer: Option<u32>,
    request_timeout: Option<String>,
    max_request_bytes: Option<String>,
    max_bytes_per_peer: Option<String>,
    endgame_copies: Option<u8>,
    backoff_base: Option<String>,
    site_aware: Option<bool>,
    upload_slots: Option<usize>,
    commit_every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    pullers: Option<usize>,
    sweep: Option<Vec<usize>>,
    arrivals_per_sec: Option<f64>,
    churn_online: Option<String>,
    churn_offline: Option<String>,
    start_overhead: Option<String>,
    install_time: Option<String>,
    rate_quantum: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    from: String,
    to: String,
    memory: String,
    save_rate: Option<String>,
    boot: Option<String>,
    shutdown: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    topology: String,
    strategies: Vec<String>,
    #[serde(default)]
    seed: u64,
    image: RawImage,
    #[serde(default)]
    swarm: RawSwarm,
    #[serde(default)]
    workload: RawWorkload,
    migration: Option<RawMigration>,
}

/// A hot-versus-cold migration of one workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// Memory state bytes of the hot workspace.
    pub memory: u64,
    /// Bytes per second at which memory state is saved and restored.
    pub save_rate: f64,
    /// Seconds a cold workspace takes to boot.
    pub boot: f64,
    /// Seconds a cold workspace takes to shut down.
    pub shutdown: f64,
}

/// Where the image comes from (resolved lazily: generating images takes a while).
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// Generate v1/v2 files and chunk them with the chunker.
    Generate(GenerateSpec),
    /// Read chunker manifest files.
    Manifests {
        /// The image to distribute.
        current: PathBuf,
        /// The version hosts hold already.
        base: Option<PathBuf>,
    },
    /// A synthetic chunk list.
    Synthetic {
        /// Size in bytes.
        size: u64,
        /// Average chunk length.
        chunk: u32,
        /// Fraction shared with the base version.
        shared: f64,
    },
}

/// A loaded scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Label.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The network.
    pub topology: Topology,
    /// The topology file.
    pub topology_path: PathBuf,
    /// Strategies to compare.
    pub strategies: Vec<Strategy>,
    /// Seed of every random choice.
    pub seed: u64,
    /// The image.
    pub image: ImageSource,
    /// Swarm model parameters.
    pub swarm: SwarmParams,
    /// The workload.
    pub workload: Workload,
    /// Puller counts to sweep (empty: one run with `workload.pullers`).
    pub sweep: Vec<usize>,
    /// Optional migration study.
    pub migration: Option<Migration>,
}

fn dur(field: &str, v: &Option<String>, default: f64) -> Result<f64, ScenarioError> {
    match v {
        Some(s) => parse_duration(s).map_err(|e| bad(field, e)),
        None => Ok(default),
    }
}

impl Scenario {
    /// Reads a scenario file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fallback = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        Self::from_toml(&text, dir, &fallback)
    }

    /// Parses a scenario; `dir` resolves relative paths, `fallback_name` labels it if unnamed.
    pub fn from_toml(text: &str, dir: &Path, fallback_name: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text)?;
        let topology_path = dir.join(&raw.topology);
        let topology = Topology::load(&topology_path)?;
        let mut strategies = Vec::new();
        for s in &raw.strategies {
            let st = Strategy::parse(s).ok_or_else(|| {
                bad(
                    "strategies",
                    format!("unknown `{s}` (install, central, single, swarm, swarm-warm)"),
                )
            })?;
            if !strategies.contains(&st) {
                strategies.push(st);
            }
        }
        if strategies.is_empty() {
            return Err(bad("strategies", "name at least one"));
        }
        let sources = [
            raw.image.generate.is_some(),
            raw.image.manifest.is_some(),
            raw.image.synthetic.is_some(),
        ];
        if sources.iter().filter(|&&b| b).count() != 1 {
            return Err(bad(
                "image",
                "give exactly one of generate, manifest, synthetic",
            ));
        }
        let image = if let Some(g) = &raw.image.generate {
            let size = parse_size(&g.size).map_err(|e| bad("image.generate.size", e))?;
            if size == 0 {
                return Err(bad("image.generate.size", "must be > 0"));
            }
            for (f, v) in [("rewrite", g.rewrite), ("zero", g.zero)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad(&format!("image.generate.{f}"), "must be in 0..=1"));
                }
            }
            ImageSource::Generate(GenerateSpec {
                size,
                rewrite: g.rewrite,
                insert: match &g.insert {
                    Some(s) => parse_size(s).map_err(|e| bad("image.generate.insert", e))?,
                    None => 0,
                },
                zero: g.zero,
                seed: g.seed,
            })
        } else if let Some(m) = &raw.image.manifest {
            ImageSource::Manifests {
                current: dir.join(m),
                base: raw.image.base.as_ref().map(|b| dir.join(b)),
            }
        } else if let Some(s) = &raw.image.synthetic {
            let size = parse_size(&s.size).map_err(|e| bad("image.synthetic.size", e))?;
            let chunk = match &s.chunk {
                Some(c) => parse_size(c).map_err(|e| bad("image.synthetic.chunk", e))?,
                None => 64 * 1024,
            };
            if size == 0 || chunk == 0 || chunk > vwnet_protocol::limits::MAX_CHUNK_LEN as u64 {
                return Err(bad(
                    "image.synthetic",
                    "size and chunk must be > 0, chunk <= the chunk limit",
                ));
            }
            if !(0.0..=1.0).contains(&s.shared) {
                return Err(bad("image.synthetic.shared", "must be in 0..=1"));
            }
            ImageSource::Synthetic {
                size,
                chunk: chunk as u32,
                shared: s.shared,
            }
        } else {
            return Err(bad("image", "no source"));
        };
        let rs = &raw.swarm;
        let mut limits = LimitOverrides::default();
        if let Some(n) = rs.max_requests_per_peer {
            if n == 0 {
                return Err(bad("swarm.max_requests_per_peer", "must be > 0"));
            }
            limits.max_requests_per_peer = Some(n);
        }
        if let Some(t) = &rs.request_timeout {
            let t = parse_duration(t).map_err(|e| bad("swarm.request_timeout", e))?;
            if t <= 0.0 {
                return Err(bad("swarm.request_timeout", "must be > 0"));
            }
            limits.request_timeout = Some(t);
        }
        if let Some(t) = &rs.backoff_base {
            let t = parse_duration(t).map_err(|e| bad("swarm.backoff_base", e))?;
            if t <= 0.0 {
                return Err(bad("swarm.backoff_base", "must be > 0"));
            }
            limits.backoff_base = Some(t);
        }
        let size = |field: &str, v: &Option<String>| -> Result<Option<u64>, ScenarioError> {
            match v {
                None => Ok(None),
                Some(t) => match parse_size(t).map_err(|e| bad(field, e))? {
                    0 => Err(bad(field, "must be > 0")),
                    n => Ok(Some(n)),
                },
            }
        };
        limits.max_request_bytes = size("swarm.max_request_bytes", &rs.max_request_bytes)?;
        limits.max_bytes_per_peer = size("swarm.max_bytes_per_peer", &rs.max_bytes_per_peer)?;
        if let Some(c) = rs.endgame_copies {
            if !(1..=8).contains(&c) {
                return Err(bad("swarm.endgame_copies", "must be in 1..=8"));
            }
            limits.endgame_copies = Some(c);
        }
        let defaults = SwarmParams::default();
        let swarm = SwarmParams {
            piece: match &rs.piece {
                Some(p) => parse_size(p).map_err(|e| bad("swarm.piece", e))?,
                None => defaults.piece,
            },
            neighbours: rs.neighbours.unwrap_or(defaults.neighbours).max(1),
            announce_every: dur(
                "swarm.announce_every",
                &rs.announce_every,
                defaults.announce_every,
            )?,
            announce_budget: rs.announce_budget.or(defaults.announce_budget),
            request_overhead: dur("swarm.request_overhead", &rs.request_overhead, 0.0)?,
            verify_rate: match &rs.verify_rate {
                Some(r) => parse_rate(r)
                    .map_err(|e| bad("swarm.verify_rate", e))?
                    .map(|bps| bps as f64 / 8.0),
                None => None,
            },
            limits,
            site_aware: rs.site_aware.unwrap_or(defaults.site_aware),
            upload_slots: rs.upload_slots.unwrap_or(defaults.upload_slots),
            commit_every: dur(
                "swarm.commit_every",
                &rs.commit_every,
                defaults.commit_every,
            )?,
            pull_setup: defaults.pull_setup,
            pull_finish: defaults.pull_finish,
        };
        if swarm.announce_every <= 0.0 {
            return Err(bad("swarm.announce_every", "must be > 0"));
        }
        if swarm
            .announce_budget
            .is_some_and(|b| !(b.is_finite() && b >= 0.0))
        {
            return Err(bad("swarm.announce_budget", "must be >= 0"));
        }
        let w = &raw.workload;
        let churn = match (&w.churn_online, &w.churn_offline) {
            (None, None) => None,
            (Some(on), Some(off)) => Some(Churn {
                mean_online: parse_duration(on).map_err(|e| bad("workload.churn_online", e))?,
                mean_offline: parse_duration(off).map_err(|e| bad("workload.churn_offline", e))?,
            }),
            _ => {
                return Err(bad(
                    "workload",
                    "churn_online and churn_offline go together",
                ));
            }
        };
        if churn.is_some_and(|c| c.mean_online <= 0.0 || c.mean_offline <= 0.0) {
            return Err(bad("workload.churn_online", "churn means must be > 0"));
        }
        let arrivals = match w.arrivals_per_sec {
            None => Arrivals::Together,
            Some(r) if r.is_finite() && r > 0.0 => Arrivals::Poisson(r),
            Some(r) => return Err(bad("workload.arrivals_per_sec", format!("{r} is not > 0"))),
        };
        let workload = Workload {
            pullers: w.pullers,
            arrivals,
            churn,
            start_overhead: dur("workload.start_overhead", &w.start_overhead, 0.0)?,
            install_time: dur("workload.install_time", &w.install_time, 0.0)?,
            rate_quantum: dur("workload.rate_quantum", &w.rate_quantum, 0.0)?,
        };
        let sweep = w.sweep.clone().unwrap_or_default();
        let hosts = topology.host_count() as usize;
        for &n in sweep.iter().chain(w.pullers.iter()) {
            if n == 0 || n >= hosts {
                return Err(bad(
                    "workload",
                    format!(
                        "{n} pullers: the topology has {} hosts besides the publisher",
                        hosts - 1
                    ),
                ));
            }
        }
        let migration = match &raw.migration {
            None => None,
            Some(m) => {
                let names: Vec<String> = topology.hosts().into_iter().map(|h| h.name).collect();
                for (f, h) in [("migration.from", &m.from), ("migration.to", &m.to)] {
                    if !names.contains(h) {
                        return Err(bad(f, format!("no host `{h}`")));
                    }
                }
                Some(Migration {
                    from: m.from.clone(),
                    to: m.to.clone(),
                    memory: parse_size(&m.memory).map_err(|e| bad("migration.memory", e))?,
                    save_rate: match &m.save_rate {
                        Some(r) => parse_rate(r)
                            .map_err(|e| bad("migration.save_rate", e))?
                            .map_or(f64::INFINITY, |b| b as f64 / 8.0),
                        None => 1e9,
                    },
                    boot: dur("migration.boot", &m.boot, 30.0)?,
                    shutdown: dur("migration.shutdown", &m.shutdown, 10.0)?,
                })
            }
        };
        Ok(Scenario {
            name: raw.name.unwrap_or_else(|| fallback_name.to_string()),
            description: raw.description.unwrap_or_default(),
            topology,
            topology_path,
            strategies,
            seed: raw.seed,
            image,
            swarm,
            workload,
            sweep,
            migration,
        })
    }

    /// Builds the image model; generated images are written to and chunked in `scratch`.
    pub fn image_model(&self, scratch: &Path) -> Result<ImageModel, ScenarioError> {
        Ok(match &self.image {
            ImageSource::Generate(spec) => {
                let (v1, v2) = generate_pair(scratch, spec)?;
                let m1 = chunk_to_manifest(&v1)?;
                let m2 = chunk_to_manifest(&v2)?;
                ImageModel::from_manifests(
                    &m2,
                    Some(&m1),
                    format!(
                        "generated {} B (rewrite {}, insert {} B, zero {}) chunked by vwnet-chunker",
                        spec.size, spec.rewrite, spec.insert, spec.zero
                    ),
                )
            }
            ImageSource::Manifests { current, base } => {
                let m = read_manifest(current)?;
                let b = base.as_deref().map(read_manifest).transpose()?;
                ImageModel::from_manifests(
                    &m,
                    b.as_ref(),
                    format!("manifest {}", current.display()),
                )
            }
            ImageSource::Synthetic {
                size,
                chunk,
                shared,
            } => ImageModel::synthetic(*size, *chunk, *shared, self.seed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("17"), Ok(17));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(parse_duration("45min"), Ok(2700.0));
        assert_eq!(parse_duration("2h"), Ok(7200.0));
        assert_eq!(parse_duration("250ms"), Ok(0.25));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn scenario_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.toml"),
            "[[site]]\nname = \"a\"\nhosts = 4\n",
        )
        .unwrap();
        let ok = "topology = \"t.toml\"\nstrategies = [\"swarm\"]\n[image]\nsynthetic = { size = \"8MiB\" }\n";
        let s = Scenario::from_toml(ok, dir.path(), "x").unwrap();
        assert_eq!(s.name, "x");
        assert_eq!(s.topology.host_count(), 4);
        let e = Scenario::from_toml(&ok.replace("swarm\"", "bittorrent\""), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("strategies"), "{e}");
        let e = Scenario::from_toml(&format!("{ok}[workload]\npullers = 4\n"), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workload"), "{e}");
        let e = Scenario::from_toml(&format!("{ok}[swarm]\npeice = \"1MiB\"\n"), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("peice"), "{e}");
        let e = Scenario::from_toml(
            &format!("{ok}[swarm]\nannounce_budget = -1.0\n"),
            dir.path(),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("swarm.announce_budget"), "{e}");
        let s = Scenario::from_toml(
            &format!(
                "{ok}[swarm]\nupload_slots = 4\nannounce_budget = 0.0\nbackoff_base = \"100ms\"\n\
                 commit_every = \"0ms\"\n"
            ),
            dir.path(),
            "x",
        )
        .unwrap();
        assert_eq!(
            (
                s.swarm.upload_slots,
                s.swarm.announce_budget,
                s.swarm.commit_every
            ),
            (4, Some(0.0), 0.0)
        );
        assert_eq!(s.swarm.limits.backoff_base, Some(0.1));
        let s = Scenario::from_toml(ok, dir.path(), "x").unwrap();
        assert_eq!(
            (s.swarm.upload_slots, s.swarm.commit_every),
            (
                vwnet_node::config::Limits::default().max_concurrent_uploads,
                vwnet_node::pull::COMMIT_EVERY.as_secs_f64()
            ),
            "the node's max_concurrent_uploads and commit period"
        );
        let e = Scenario::from_toml(&ok.replace("t.toml", "missing.toml"), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
