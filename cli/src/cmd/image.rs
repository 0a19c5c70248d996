//! `vwnet image`: add images to the local chunk store, export, list, verify and compare them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use vwnet_chunker::{IngestOptions, Store, ingest};
use vwnet_protocol::ids::ImageId;

use crate::context::Context;

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Chunk an image file (raw or qcow2, or `-` for stdin) into the store and print its id.
    Add {
        /// The image file, or `-` to read stdin.
        file: PathBuf,
        /// Convert the image to raw with `qemu-img convert` first (raw dedups better than qcow2).
        #[arg(long)]
        raw: bool,
    },
    /// Write a stored image to a file, byte-identical, with holes where it has zeros.
    Export {
        /// Image id (or a unique prefix of at least 4 hex digits).
        image: String,
        /// Output file (written to a temporary file and renamed; nothing is written on error).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// List the images in the store.
    Ls,
    /// Re-hash stored chunks (all, or one image's), quarantining corrupt ones.
    Verify {
        /// Only this image (id or unique prefix).
        image: Option<String>,
    },
    /// Show shared and differing bytes between two images.
    Diff {
        /// First image (id or unique prefix).
        a: String,
        /// Second image (id or unique prefix).
        b: String,
    },
}

/// Opens the chunk store under the home directory, creating it if needed.
pub(crate) fn open_store(ctx: &Context) -> anyhow::Result<Store> {
    let dir = ctx.ensure_home()?.join("store");
    Store::open(&dir).with_context(|| format!("{}: cannot open the chunk store", dir.display()))
}

/// Resolves a full image id or a unique prefix of one among the stored images.
pub(crate) fn resolve(store: &Store, text: &str) -> anyhow::Result<ImageId> {
    if let Ok(id) = text.parse::<ImageId>() {
        return Ok(id);
    }
    let prefix = text.to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{text}: not an image id (64 hex digits, or a prefix of at least 4)");
    }
    let matches: Vec<ImageId> = store
        .images()?
        .into_iter()
        .map(|i| i.id)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match matches.as_slice() {
        [id] => Ok(*id),
        [] => bail!("{text}: no such image in the store"),
        _ => bail!("{text}: ambiguous prefix ({} images match)", matches.len()),
    }
}

/// A progress bar on stderr, only when it is a terminal and output is not JSON.
pub(crate) fn progress_bar(ctx: &Context, total: Option<u64>, what: &str) -> Option<ProgressBar> {
    if ctx.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    Some(bar)
}

/// Human-readable byte count.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Runs an image subcommand.
pub(crate) fn run(cmd: ImageCommand, ctx: &Context) -> anyhow::Result<()> {
    let store = open_store(ctx)?;
    match cmd {
        ImageCommand::Add { file, raw } => add(ctx, &store, &file, raw),
        ImageCommand::Export {
            image,
            output,
            force,
        } => {
            let id = resolve(&store, &image)?;
            crate::fsutil::check_overwrite(&output, force)?;
            let bar = progress_bar(ctx, None, "export");
            let report = store
                .export(&id, &output, &mut |done, total| {
                    if let Some(b) = &bar {
                        b.set_length(total);
                        b.set_position(done);
                    }
                })
                .with_context(|| format!("exporting {id} to {}", output.display()))?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            ctx.report(&report, |r| {
                format!(
                    "exported {} to {} ({}, {} as holes)",
                    r.image,
                    output.display(),
                    human_bytes(r.size),
                    human_bytes(r.hole_bytes)
                )
            })
        }
        ImageCommand::Ls => {
            let images = store.images()?;
            ctx.report(&images, |list| {
                let mut out = format!(
                    "{:<64}  {:>10}  {:>8}  {:<10}  {}\n",
                    "IMAGE", "SIZE", "CHUNKS", "STATE", "PINNED"
                );
                for i in list {
                    out.push_str(&format!(
                        "{}  {:>10}  {:>8}  {:<10}  {}\n",
                        i.id,
                        human_bytes(i.size),
                        i.chunks,
                        if i.complete { "complete" } else { "incomplete" },
                        if i.pinned { "yes" } else { "no" }
                    ));
                }
                out
            })
        }
        ImageCommand::Verify { image } => {
            let id = image.map(|t| resolve(&store, &t)).transpose()?;
            let bar = progress_bar(ctx, None, "verify");
            let report = store.verify(id.as_ref(), &mut |done, total| {
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                }
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            ctx.report(&report, |r| {
                let mut out = format!(
                    "checked {} chunks ({})\n",
                    r.checked_chunks,
                    human_bytes(r.checked_bytes)
                );
                for c in &r.corrupt {
                    let users: Vec<String> = c.images.iter().map(|i| i.short()).collect();
                    out.push_str(&format!(
                        "corrupt chunk {} ({}), used by [{}], quarantined\n",
                        c.hash,
                        c.reason,
                        users.join(", ")
                    ));
                }
                for i in r.images.iter().filter(|i| !i.complete) {
                    out.push_str(&format!(
                        "image {} incomplete: {} chunks missing\n",
                        i.id, i.missing_chunks
                    ));
                }
                if r.is_clean() {
                    out.push_str("ok\n");
                }
                out
            })?;
            if !report.is_clean() {
                bail!(
                    "verify found {} corrupt chunks and {} incomplete images",
                    report.corrupt.len(),
                    report.images.iter().filter(|i| !i.complete).count()
                );
            }
            Ok(())
        }
        ImageCommand::Diff { a, b } => {
            let (a, b) = (resolve(&store, &a)?, resolve(&store, &b)?);
            let d = store.diff(&a, &b)?;
            ctx.report(&d, |d| {
                format!(
                    "a {} ({})\nb {} ({})\nshared: {} ({} chunks)\nonly in a: {} ({} chunks)\nonly in b: {} ({} chunks)",
                    d.a,
                    human_bytes(d.size_a),
                    d.b,
                    human_bytes(d.size_b),
                    human_bytes(d.shared_bytes),
                    d.shared_chunks,
                    human_bytes(d.only_a_bytes),
                    d.only_a_chunks,
                    human_bytes(d.only_b_bytes),
                    d.only_b_chunks
                )
            })
        }
    }
}

fn add(ctx: &Context, store: &Store, file: &Path, raw: bool) -> anyhow::Result<()> {
    let opts = IngestOptions::default();
    let stdin = file.as_os_str() == "-";
    if stdin && raw {
        bail!("--raw needs a file, not stdin (qemu-img cannot convert a stream)");
    }
    let converted = if raw {
        Some(
            ingest::convert_to_raw(file, &store.tmp_dir())
                .with_context(|| format!("{}: cannot convert to raw", file.display()))?,
        )
    } else {
        None
    };
    let bar = progress_bar(ctx, None, "add");
    let mut progress = |done: u64, total: Option<u64>| {
        if let Some(b) = &bar {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(done);
        }
    };
    let report = if stdin {
        store.ingest_reader(std::io::stdin().lock(), &opts, &mut progress)
    } else {
        let path = converted.as_deref().unwrap_or(file);
        store.ingest_file(path, &opts, &mut progress)
    }
    .with_context(|| format!("{}: cannot add image", file.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    ctx.report(&report, |r| {
        format!(
            "{}\nsize {}, {} chunks; new {} ({} chunks), already stored {}, zero {}",
            r.image,
            human_bytes(r.size),
            r.chunks,
            human_bytes(r.new_bytes),
            r.new_chunks,
            human_bytes(r.existing_bytes),
            human_bytes(r.zero_bytes)
        )
    })
}
