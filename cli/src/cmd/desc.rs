//! `vwnet desc`: write, check, sign, verify, show, clone, refine and match workspace descriptions.
//!
//! A description file is either TOML (what people write) or a signed envelope (what
//! `desc sign` writes: the canonical bytes, the signer and the signature). Commands that read a
//! description accept both; a signed file is verified before anything is done with it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::Serialize;
use vwnet_protocol::description::{
    self, Description, HostProfile, Refinement, ValidationError, template_for,
};
use vwnet_protocol::ids::WorkspaceId;
use vwnet_protocol::signed::{SignedDelegation, SignedDescription};
use vwnet_protocol::time::Timestamp;

use crate::context::Context;
use crate::fsutil;
use crate::output::Reported;

/// Description subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DescCommand {
    /// Write a commented description template, owned by this home's key.
    New {
        /// Where to write it [default: stdout].
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check that a description parses and is valid.
    Check {
        /// A TOML or signed description.
        file: PathBuf,
    },
    /// Sign a TOML description with this home's key.
    Sign {
        /// The TOML description.
        file: PathBuf,
        /// Where to write the signed description.
        #[arg(short, long, value_name = "OUT")]
        out: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Verify a signed description's signature and signer.
    Verify {
        /// The signed description.
        file: PathBuf,
        /// An owner-signed delegation that lets the signer sign for the owner.
        #[arg(long, value_name = "FILE")]
        delegation: Option<PathBuf>,
    },
    /// Print a description as TOML (a signed one is verified first).
    Show {
        /// A TOML or signed description.
        file: PathBuf,
    },
    /// Make a new workspace from a description: new id and name, same requirements and image.
    Clone {
        /// A TOML or signed description.
        file: PathBuf,
        /// The new workspace's name.
        #[arg(long)]
        name: String,
        /// Where to write the new TOML description.
        #[arg(short, long, value_name = "OUT")]
        out: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Narrow a description's requirements into a new version.
    Refine {
        /// A TOML or signed description.
        file: PathBuf,
        /// A refinement such as `hardware.ram.max=2048` or `software.programs+=blast@2.2`.
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
        /// Where to write the refined TOML description.
        #[arg(short, long, value_name = "OUT")]
        out: PathBuf,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check whether a description can be placed on a host.
    Match {
        /// A TOML or signed description.
        file: PathBuf,
        /// The host profile (TOML: ram_mib, vcpus, disk_free_bytes, hypervisors, networks...).
        #[arg(long, value_name = "HOST.toml")]
        host: PathBuf,
    },
}

/// Runs a description subcommand.
pub(crate) fn run(cmd: DescCommand, ctx: &Context) -> anyhow::Result<()> {
    let now = Timestamp::now();
    match cmd {
        DescCommand::New { out, force } => new(ctx, out.as_deref(), force, now),
        DescCommand::Check { file } => {
            let loaded = load(&file, None, now)?;
            ctx.report(&Summary::of(&loaded), |s| {
                format!("{}: ok\n{}", file.display(), s.text())
            })
        }
        DescCommand::Sign { file, out, force } => {
            fsutil::check_overwrite(&out, force)?;
            let identity = ctx.load_identity()?;
            let desc = read_toml(&file)?;
            if desc.owner != identity.public() {
                bail!(
                    "{}: owner: is {}, but this home's key is {} (sign with the owner's key)",
                    file.display(),
                    desc.owner.short(),
                    identity.public().short()
                );
            }
            let signed = SignedDescription::sign(&identity, &desc)
                .with_context(|| file.display().to_string())?;
            fsutil::write_atomic(&out, &signed.to_bytes(), 0o644)?;
            let loaded = Loaded {
                desc,
                signer: Some(identity.public().to_string()),
            };
            ctx.report(&Summary::of(&loaded), |s| {
                format!(
                    "signed {} -> {}\n{}",
                    file.display(),
                    out.display(),
                    s.text()
                )
            })
        }
        DescCommand::Verify { file, delegation } => {
            let delegation = delegation.as_deref().map(read_delegation).transpose()?;
            let bytes = read_bytes(&file)?;
            if std::str::from_utf8(&bytes).is_ok_and(looks_like_toml) {
                bail!(
                    "{}: not signed (this is a TOML description; sign it first)",
                    file.display()
                );
            }
            let loaded = verify_signed(&file, &bytes, delegation.as_ref(), now)?;
            ctx.report(&Summary::of(&loaded), |s| {
                format!("{}: signature ok\n{}", file.display(), s.text())
            })
        }
        DescCommand::Show { file } => {
            let loaded = load(&file, None, now)?;
            if ctx.json {
                let table = loaded.desc.to_toml_table()?;
                let shown = Shown {
                    signer: loaded.signer.clone(),
                    description: table,
                };
                ctx.report(&shown, |_| String::new())
            } else {
                if let Some(signer) = &loaded.signer {
                    println!("# signature ok: signed by {signer}");
                }
                print!("{}", loaded.desc.to_toml_string()?);
                Ok(())
            }
        }
        DescCommand::Clone {
            file,
            name,
            out,
            force,
        } => {
            fsutil::check_overwrite(&out, force)?;
            let loaded = load(&file, None, now)?;
            let mut clone = description::clone_as(&loaded.desc, &name, now);
            // The clone belongs to whoever makes it; the lineage still names the original.
            if let Ok(identity) = ctx.load_identity() {
                clone.owner = identity.public();
            }
            write_valid_toml(&out, &clone)?;
            ctx.report(
                &Summary::of(&Loaded {
                    desc: clone,
                    signer: None,
                }),
                |s| {
                    format!(
                        "cloned {} -> {}\n{}",
                        file.display(),
                        out.display(),
                        s.text()
                    )
                },
            )
        }
        DescCommand::Refine {
            file,
            set,
            out,
            force,
        } => {
            fsutil::check_overwrite(&out, force)?;
            let refinements = set
                .iter()
                .map(|s| {
                    s.parse::<Refinement>()
                        .with_context(|| format!("--set {s}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let loaded = load(&file, None, now)?;
            let refined = description::refine(&loaded.desc, &refinements, now)
                .with_context(|| file.display().to_string())?;
            write_valid_toml(&out, &refined)?;
            ctx.report(
                &Summary::of(&Loaded {
                    desc: refined,
                    signer: None,
                }),
                |s| {
                    format!(
                        "refined {} -> {}\n{}",
                        file.display(),
                        out.display(),
                        s.text()
                    )
                },
            )
        }
        DescCommand::Match { file, host } => {
            let loaded = load(&file, None, now)?;
            let text = std::fs::read_to_string(&host)
                .with_context(|| format!("{}: cannot read", host.display()))?;
            let profile =
                HostProfile::from_toml_str(&text).with_context(|| host.display().to_string())?;
            match description::select(&loaded.desc, &profile) {
                Ok(placement) => {
                    let report = MatchReport {
                        fits: true,
                        placement: Some(placement),
                        failures: vec![],
                    };
                    ctx.report(&report, |r| format!("fits: {}", placement_text(r)))
                }
                Err(err) => {
                    let failures: Vec<String> =
                        err.failures().iter().map(ToString::to_string).collect();
                    if ctx.json {
                        let report = MatchReport {
                            fits: false,
                            placement: None,
                            failures,
                        };
                        ctx.report(&report, |_| String::new())?;
                        // The JSON said why; the exit code still says "no match".
                        return Err(Reported.into());
                    }
                    bail!(
                        "{}: does not fit {}: {}",
                        file.display(),
                        host.display(),
                        failures.join("; ")
                    )
                }
            }
        }
    }
}

/// `desc new`: the template with a fresh id, this home's key as owner and the current time.
fn new(ctx: &Context, out: Option<&Path>, force: bool, now: Timestamp) -> anyhow::Result<()> {
    let identity = ctx.load_identity().context("the template needs an owner")?;
    let text = template_for(WorkspaceId::random(), identity.public(), now);
    match out {
        Some(path) => {
            fsutil::check_overwrite(path, force)?;
            fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
            if !ctx.json {
                eprintln!("wrote {}", path.display());
            }
            ctx.report(
                &serde_json::json!({ "file": path.display().to_string() }),
                |_| String::new(),
            )
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// A description read from a file, and who signed it if the file was signed (and verified).
struct Loaded {
    desc: Description,
    signer: Option<String>,
}

/// Reads a TOML or signed description; a signed one is verified, and either must be valid.
fn load(
    path: &Path,
    delegation: Option<&SignedDelegation>,
    now: Timestamp,
) -> anyhow::Result<Loaded> {
    let bytes = read_bytes(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if looks_like_toml(text) => {
            let desc = parse_toml(path, text)?;
            Ok(Loaded { desc, signer: None })
        }
        _ => verify_signed(path, &bytes, delegation, now),
    }
}

/// Signed envelopes start with a version byte and carry binary keys and signatures, so they are
/// practically never valid UTF-8 text that is also non-empty TOML-ish; text files are TOML.
fn looks_like_toml(text: &str) -> bool {
    !text.is_empty() && !text.starts_with('\u{1}')
}

fn verify_signed(
    path: &Path,
    bytes: &[u8],
    delegation: Option<&SignedDelegation>,
    now: Timestamp,
) -> anyhow::Result<Loaded> {
    let name = path.display();
    let signed = SignedDescription::from_bytes(bytes)
        .with_context(|| format!("{name}: not a signed description (truncated or damaged?)"))?;
    let verified = signed
        .verify(delegation, now)
        .with_context(|| format!("{name}: signature check failed"))?;
    let signer = verified.signer().to_string();
    let desc = verified.into_record();
    validation(path, desc.validate())?;
    Ok(Loaded {
        desc,
        signer: Some(signer),
    })
}

fn read_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn read_toml(path: &Path) -> anyhow::Result<Description> {
    let bytes = read_bytes(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: not a TOML description (not UTF-8 text)",
            path.display()
        )
    })?;
    parse_toml(path, text)
}

fn parse_toml(path: &Path, text: &str) -> anyhow::Result<Description> {
    let desc = Description::from_toml_str(text).with_context(|| path.display().to_string())?;
    validation(path, desc.validate())?;
    Ok(desc)
}

fn read_delegation(path: &Path) -> anyhow::Result<SignedDelegation> {
    let bytes = read_bytes(path)?;
    SignedDelegation::from_bytes(&bytes)
        .with_context(|| format!("{}: not a delegation", path.display()))
}

/// Turns validation errors into one line: `FILE: path: reason; path: reason`.
fn validation(path: &Path, result: Result<(), ValidationError>) -> anyhow::Result<()> {
    result.map_err(|err| {
        let reasons: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}: {}", path.display(), reasons.join("; "))
    })
}

fn write_valid_toml(out: &Path, desc: &Description) -> anyhow::Result<()> {
    validation(out, desc.validate())?;
    let text = desc
        .to_toml_string()
        .with_context(|| out.display().to_string())?;
    fsutil::write_atomic(out, text.as_bytes(), 0o644)
}

/// The lines `check`, `sign`, `verify`, `clone` and `refine` print about a description.
#[derive(Serialize)]
struct Summary {
    id: String,
    name: String,
    version: u64,
    owner: String,
    category: String,
    state: String,
    digest: String,
    signer: Option<String>,
    expires_at: Option<String>,
    unknown_keys: Vec<String>,
}

impl Summary {
    fn of(loaded: &Loaded) -> Self {
        let d = &loaded.desc;
        Self {
            id: d.id.to_string(),
            name: d.name.clone(),
            version: d.version,
            owner: d.owner.to_string(),
            category: category_text(d),
            state: d.state.as_str().to_string(),
            digest: d.digest().to_string(),
            signer: loaded.signer.clone(),
            expires_at: d.expires_at().map(|t| t.to_string()),
            unknown_keys: d.extension_paths(),
        }
    }

    fn text(&self) -> String {
        let mut s = format!(
            "workspace {} \"{}\" version {}\n  owner    {}\n  category {}, state {}\n  digest   {}",
            self.id, self.name, self.version, self.owner, self.category, self.state, self.digest
        );
        if let Some(signer) = &self.signer {
            s.push_str(&format!("\n  signer   {signer}"));
        }
        if let Some(t) = &self.expires_at {
            s.push_str(&format!("\n  expires  {t}"));
        }
        if !self.unknown_keys.is_empty() {
            s.push_str(&format!(
                "\n  kept unknown keys: {}",
                self.unknown_keys.join(", ")
            ));
        }
        s
    }
}

fn category_text(d: &Description) -> String {
    match &d.category {
        description::Category::Vm { vmm } => format!("vm ({vmm})"),
        other => other.name().to_string(),
    }
}

/// What `desc show --json` prints: the same keys as the TOML.
#[derive(Serialize)]
struct Shown {
    signer: Option<String>,
    description: toml::Table,
}

/// What `desc match` prints.
#[derive(Serialize)]
struct MatchReport {
    fits: bool,
    placement: Option<description::Placement>,
    failures: Vec<String>,
}

fn placement_text(r: &MatchReport) -> String {
    let Some(p) = &r.placement else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(ram) = p.ram_mib {
        parts.push(format!("{ram} MiB RAM"));
    }
    if let Some(vcpus) = p.vcpus {
        parts.push(format!("{vcpus} vCPUs"));
    }
    parts.push(format!("{} bytes of disk", p.disk_bytes));
    if let Some(vmm) = &p.vmm {
        parts.push(format!("on {vmm}"));
    }
    parts.join(", ")
}
